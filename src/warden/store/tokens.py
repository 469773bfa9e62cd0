"""The decision service's bearer tokens on PostgreSQL, shared by every `warden serve` replica.

The same records as the SQLite ``TokenStore`` (warden/server/_tokens.py): a
token's SHA-256 (never its text), subject, scopes, who made it and when, and
when it was revoked. One table, ``N_tokens``.

**Lookups** are served from memory, so that authenticating a request never waits
on the network on the event loop: a background thread reloads the live tokens
every ``refresh`` seconds (250 ms by default). A token revoked on any replica is
refused by the others within one refresh. A snapshot older than ``max_age``
seconds (1 s: PostgreSQL has not answered for that long) is not trusted: every
token is refused until a reload succeeds. A revoke or a new token in this
process updates its own snapshot at once.
"""

from __future__ import annotations

import hmac
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from warden._closing import Closing
from warden.errors import ConfigurationError
from warden.server._tokens import (
    _ID_CHARS,
    _TOKEN,
    Token,
    _token,
    mint,
    token_hash,
)
from warden.store._pg import Database, StoreUnavailable

__all__ = ["PostgresTokenStore"]

_log = logging.getLogger("warden.server")
_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {tokens} (id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, "
    "subject TEXT NOT NULL, scopes TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "created_by TEXT NOT NULL, revoked_at DOUBLE PRECISION)",
)
_FIELDS: Final = "id, subject, scopes, created_at, created_by, revoked_at"


class PostgresTokenStore(Closing):
    """The tokens of one fleet namespace (a ``TokenBackend``). Thread-safe."""

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        clock: Callable[[], float] = time.time,
        refresh: float = 0.25,
        max_age: float = 1.0,
    ) -> None:
        self._db = Database(url, namespace, what="tokens", names=("tokens",), ddl=_DDL)
        self.name = self._db.name
        self._clock = clock
        self.refresh = refresh
        self.max_age = max_age
        self._lock = threading.Lock()
        # by the first 16 hex digits of the hash; the full hash is compared in constant time
        self._live: dict[str, tuple[str, Token]] = {}
        self._loaded_at = float("-inf")  # time.monotonic() of the last successful reload
        self._reloader: threading.Thread | None = None
        self._stop = threading.Event()
        self._down = False  # logged once per outage
        self._changes = 0  # local new/revoke count: a reload that overlapped one is discarded

    def close(self) -> None:
        self._stop.set()
        if self._reloader is not None and self._reloader is not threading.current_thread():
            self._reloader.join(5)
        self._db.close()

    def new(self, subject: str, scopes: str | Iterable[str], *, by: str) -> tuple[str, Token]:
        """Make a token for ``subject``; return its text (shown once, never stored) and record."""
        text, digest, token = mint(subject, scopes, by, self._clock())
        try:
            self._db.run(
                lambda c: c.execute(
                    self._db.q(
                        "INSERT INTO {tokens} (id, hash, subject, scopes, created_at, created_by) "
                        "VALUES (%s, %s, %s, %s, %s, %s)"
                    ),
                    (
                        token.id,
                        digest,
                        subject,
                        ",".join(sorted(token.scopes)),
                        token.created_at,
                        by,
                    ),
                )
            )
        except StoreUnavailable as exc:
            raise ConfigurationError(f"cannot store the token: {exc}") from None
        with self._lock:
            self._live[digest[:16]] = (digest, token)
            self._changes += 1
        return text, token

    def list(self, *, revoked: bool = False) -> list[Token]:
        """Tokens, oldest first; revoked ones too with ``revoked``. StoreUnavailable if down."""
        query = f"SELECT {_FIELDS} FROM {{tokens}}"
        if not revoked:
            query += " WHERE revoked_at IS NULL"
        select = self._db.q(query + " ORDER BY created_at, id")
        rows: list[tuple[Any, ...]] = self._db.run(lambda c: c.execute(select).fetchall())
        return [_token(r) for r in rows]

    def revoke(self, token_id: str) -> Token:
        """Revoke the token with this id (or id prefix of 6+ digits); ConfigurationError if none."""
        if not re.fullmatch(r"[0-9a-f]{6,64}", token_id or ""):
            raise ConfigurationError(f"`{token_id}` is not a token id (hex digits, 6 or more)")
        now = self._clock()

        def tx(conn: Any) -> Token:
            rows = conn.execute(
                self._db.q(f"SELECT {_FIELDS} FROM {{tokens}} WHERE id LIKE %s || '%%' FOR UPDATE"),
                (token_id[:_ID_CHARS],),
            ).fetchall()
            if not rows:
                raise ConfigurationError(f"no token `{token_id}`")
            if len(rows) > 1:
                raise ConfigurationError(f"`{token_id}` names {len(rows)} tokens; give more digits")
            found = _token(rows[0])
            if found.revoked_at is not None:
                raise ConfigurationError(f"token `{found.id}` is already revoked")
            conn.execute(
                self._db.q("UPDATE {tokens} SET revoked_at = %s WHERE id = %s"), (now, found.id)
            )
            return Token(
                found.id, found.subject, found.scopes, found.created_at, found.created_by, now
            )

        try:
            revoked = self._db.run(tx)
        except StoreUnavailable as exc:
            raise ConfigurationError(f"cannot revoke the token: {exc}") from None
        with self._lock:
            self._live = {k: v for k, v in self._live.items() if v[1].id != revoked.id}
            self._changes += 1
        return revoked

    def authenticate(self, presented: str) -> Token | None:
        """The live token whose text is ``presented``, or None (unknown, revoked, malformed).

        Raises StoreUnavailable while the snapshot is older than ``max_age``
        (PostgreSQL away): fail closed, and the service answers 503 rather than
        calling a good token unknown. Never waits on the database, except for the
        first lookup.
        """
        if not _TOKEN.fullmatch(presented):
            return None
        if self._reloader is None:
            self._start()
        with self._lock:
            fresh = time.monotonic() - self._loaded_at <= self.max_age
            entry = self._live.get(token_hash(presented)[:16]) if fresh else None
        if not fresh:
            if not self._down:
                self._down = True
                _log.warning("%s: token store not answering: refusing every token", self.name)
            raise StoreUnavailable(f"{self.name}: the token store has not answered for a while")
        if entry is None or not hmac.compare_digest(entry[0], token_hash(presented)):
            return None
        return entry[1]

    def _start(self) -> None:
        with self._lock:
            if self._reloader is not None:
                return
            self._reloader = threading.Thread(
                target=self._reload_loop, name="warden-token-reload", daemon=True
            )
        self._reload()  # the first lookup answers from a loaded snapshot
        self._reloader.start()

    def _reload_loop(self) -> None:
        while not self._stop.wait(self.refresh):
            self._reload()

    def _reload(self) -> None:
        select = self._db.q(f"SELECT {_FIELDS}, hash FROM {{tokens}} WHERE revoked_at IS NULL")
        with self._lock:
            changes = self._changes
        try:
            rows: list[tuple[Any, ...]] = self._db.run(lambda c: c.execute(select).fetchall())
        except StoreUnavailable:
            return  # the snapshot ages; past max_age every token is refused
        live = {str(r[6])[:16]: (str(r[6]), _token(r)) for r in rows}
        with self._lock:
            if changes != self._changes:
                return  # read before a local revoke committed: the next reload sees it
            self._live = live
            self._loaded_at = time.monotonic()
        if self._down:
            self._down = False
            _log.warning("%s: token store answering again", self.name)
