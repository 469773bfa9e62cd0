"""Bearer tokens of the decision service: stored as SHA-256 only, with subject and scopes.

A token is ``wdn_`` and 32 random bytes in unpadded base64url (43 characters),
shown once when it is made. The store keeps its SHA-256, the subject it acts
as, its scopes and whether it was revoked, in ``tokens.db`` under the home
(SQLite, WAL), so that ``warden serve token ...`` in another process and
every server on the same home share it.

Lookups are served from memory: each one asks SQLite only whether the file
changed since the last load (``PRAGMA data_version``, no I/O), so a token
revoked from another process is refused by the next request.

In fleet mode (``WARDEN_DATABASE_URL`` set) ``open_token_store`` gives
``warden.store.PostgresTokenStore`` instead, shared by every replica; both are
a ``TokenBackend``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, runtime_checkable

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden.errors import ConfigurationError

if TYPE_CHECKING:
    from warden.store import FleetConfig

__all__ = [
    "PREFIX",
    "SCOPES",
    "Token",
    "TokenBackend",
    "TokenStore",
    "open_token_store",
    "token_hash",
]

PREFIX: Final = "wdn_"
SCOPES: Final = ("decide", "read", "approve", "operate")
"""What a token may do: `decide` actions, `read` approvals and the audit log,
`approve` or deny requests, `operate` the kill switch."""

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    scopes TEXT NOT NULL,
    created_at REAL NOT NULL,
    created_by TEXT NOT NULL,
    revoked_at REAL
);
"""
_SCHEMA_VERSION: Final = 1
_SUBJECT: Final = re.compile(r"[^\x00-\x1f\x7f]{1,256}")
_TOKEN: Final = re.compile(r"wdn_[A-Za-z0-9_-]{43}")
_ID_CHARS: Final = 12


def token_hash(token: str) -> str:
    """The stored form of a token: the hex SHA-256 of its text."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Token:
    """A stored token (never its secret). ``id`` is the first 12 hex digits of its hash."""

    id: str
    subject: str
    scopes: frozenset[str]
    created_at: float
    created_by: str
    revoked_at: float | None

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "subject": self.subject,
            "scopes": sorted(self.scopes),
            "created_at": self.created_at,
            "created_by": self.created_by,
            "revoked_at": self.revoked_at,
        }


def parse_scopes(text: str | Iterable[str]) -> frozenset[str]:
    """Scopes from ``decide,read`` (or a list); ConfigurationError naming an unknown one."""
    items = text.split(",") if isinstance(text, str) else list(text)
    scopes = frozenset(s.strip() for s in items if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown:
        raise ConfigurationError(f"unknown scope `{unknown[0]}` (known: {', '.join(SCOPES)})")
    if not scopes:
        raise ConfigurationError(f"a token needs at least one scope ({', '.join(SCOPES)})")
    return scopes


@runtime_checkable
class TokenBackend(Protocol):
    """What ``warden serve`` and ``warden serve token`` use of a token store.

    ``authenticate`` answers None for a token it cannot vouch for, including
    while its store cannot be reached (fail closed), or raises.
    """

    def new(self, subject: str, scopes: str | Iterable[str], *, by: str) -> tuple[str, Token]: ...

    def revoke(self, token_id: str) -> Token: ...

    def authenticate(self, presented: str) -> Token | None: ...

    def close(self) -> None: ...

    def list(self, *, revoked: bool = False) -> list[Token]: ...


def open_token_store(
    home: str | os.PathLike[str], config: FleetConfig | None = None
) -> TokenBackend:
    """The token store the environment names: PostgreSQL or ``home/tokens.db``.

    PostgreSQL when ``WARDEN_DATABASE_URL`` is set (namespace from
    ``WARDEN_FLEET_NAMESPACE``); ``config`` defaults to ``FleetConfig.from_env()``.
    """
    if config is None:
        from warden.store import FleetConfig

        config = FleetConfig.from_env()
    if config.database_url is not None:
        from warden.store.tokens import PostgresTokenStore

        return PostgresTokenStore(config.database_url, config.namespace)
    return TokenStore.for_home(home)


def mint(subject: str, scopes: str | Iterable[str], by: str, now: float) -> tuple[str, str, Token]:
    """A new token for ``subject``: its text (shown once, never stored), its hash and record."""
    if not isinstance(subject, str) or not _SUBJECT.fullmatch(subject) or not subject.strip():
        raise ConfigurationError(
            "a token's subject must be 1-256 characters without control characters"
        )
    granted = parse_scopes(scopes)
    text = PREFIX + base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("=")
    digest = token_hash(text)
    return text, digest, Token(digest[:_ID_CHARS], subject, granted, now, by, None)


class TokenStore(Closing):
    """The tokens of one warden home (``tokens.db``). Thread-safe."""

    def __init__(
        self, path: str | os.PathLike[str], *, clock: Callable[[], float] = time.time
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._db = open_store(
            self.path, _SCHEMA, _SCHEMA_VERSION, "token store", ConfigurationError
        )
        # by the first 16 hex digits of the hash; the full hash is compared in constant time
        self._live: dict[str, tuple[str, Token]] = {}
        self._version = -1

    @classmethod
    def for_home(cls, home: str | os.PathLike[str]) -> TokenStore:
        return cls(Path(home) / "tokens.db")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def new(self, subject: str, scopes: str | Iterable[str], *, by: str) -> tuple[str, Token]:
        """Make a token for ``subject``; return its text (shown once, never stored) and record."""
        text, digest, token = mint(subject, scopes, by, self._clock())
        try:
            with write_transaction(self._db, self._lock) as db:
                db.execute(
                    "INSERT INTO tokens (id, hash, subject, scopes, created_at, created_by) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        token.id,
                        digest,
                        subject,
                        ",".join(sorted(token.scopes)),
                        token.created_at,
                        by,
                    ),
                )
                self._version = -1  # our own commits do not change our data_version
        except sqlite3.Error as exc:
            raise ConfigurationError(f"{self.path}: cannot store the token: {exc}") from None
        return text, token

    def list(self, *, revoked: bool = False) -> list[Token]:
        """Tokens, oldest first; revoked ones too with ``revoked``."""
        query = "SELECT id, subject, scopes, created_at, created_by, revoked_at FROM tokens"
        if not revoked:
            query += " WHERE revoked_at IS NULL"
        with self._lock:
            rows = self._db.execute(query + " ORDER BY created_at, id").fetchall()
        return [_token(r) for r in rows]

    def revoke(self, token_id: str) -> Token:
        """Revoke the token with this id (or id prefix of 6+ digits); ConfigurationError if none."""
        if not re.fullmatch(r"[0-9a-f]{6,64}", token_id or ""):
            raise ConfigurationError(f"`{token_id}` is not a token id (hex digits, 6 or more)")
        with write_transaction(self._db, self._lock) as db:
            rows = db.execute(
                "SELECT id, subject, scopes, created_at, created_by, revoked_at FROM tokens "
                "WHERE id LIKE ? || '%'",
                (token_id[:_ID_CHARS],),
            ).fetchall()
            if not rows:
                raise ConfigurationError(f"no token `{token_id}`")
            if len(rows) > 1:
                raise ConfigurationError(f"`{token_id}` names {len(rows)} tokens; give more digits")
            found = _token(rows[0])
            if found.revoked_at is not None:
                raise ConfigurationError(f"token `{found.id}` is already revoked")
            now = self._clock()
            db.execute("UPDATE tokens SET revoked_at = ? WHERE id = ?", (now, found.id))
            self._version = -1
        return Token(found.id, found.subject, found.scopes, found.created_at, found.created_by, now)

    def authenticate(self, presented: str) -> Token | None:
        """The live token whose text is ``presented``, or None (unknown, revoked, malformed)."""
        if not _TOKEN.fullmatch(presented):
            return None
        digest = token_hash(presented)
        self._reload_if_changed()
        entry = self._live.get(digest[:16])
        if entry is None or not hmac.compare_digest(entry[0], digest):
            return None
        return entry[1]

    def _reload_if_changed(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA data_version").fetchone()[0]
            if version == self._version:
                return
            rows = self._db.execute(
                "SELECT id, subject, scopes, created_at, created_by, revoked_at, hash "
                "FROM tokens WHERE revoked_at IS NULL"
            ).fetchall()
            self._live = {str(r[6])[:16]: (str(r[6]), _token(r)) for r in rows}
            self._version = version


def _token(r: tuple[Any, ...]) -> Token:
    return Token(
        id=str(r[0]),
        subject=str(r[1]),
        scopes=frozenset(str(r[2]).split(",")),
        created_at=float(r[3]),
        created_by=str(r[4]),
        revoked_at=None if r[5] is None else float(r[5]),
    )
