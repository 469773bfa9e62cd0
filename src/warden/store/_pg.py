"""One PostgreSQL connection for a small fleet store (approvals, tokens): transactions, errors.

Tables of namespace ``N`` are named ``N_<table>`` and created (if absent) on the
first connection, inside a transaction holding the store's advisory lock: two
replicas starting at once cannot both run ``CREATE TABLE IF NOT EXISTS`` (which
can fail on the catalog's unique index when it races).

Any error from the database, a refused or lost connection above all, becomes
:class:`StoreUnavailable`; the connection is then dropped, and the next call
connects again. Errors of the store's own (``ApprovalStateError``, ...) raised
inside a transaction roll it back and pass through unchanged.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, TypeVar

from warden.errors import ConfigurationError, WardenError
from warden.store._config import _NAMESPACE

if TYPE_CHECKING:
    from psycopg import sql

__all__ = ["Database", "StoreUnavailable", "lock_key"]

_T = TypeVar("_T")
_CONNECT_DEFAULTS: Final = {
    # an unreachable server must surface as an error (a deny, a refused token), not a hang
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
    # a replica that froze inside a transaction must not hold a request's row or lock for long
    "options": "-c lock_timeout=5s -c idle_in_transaction_session_timeout=30s",
}


class StoreUnavailable(WardenError, ConnectionError):
    """A fleet store on PostgreSQL did not answer, or answered with an error.

    A ``ConnectionError`` (an ``OSError``), so that callers treating an
    unreachable store as a 503 or a deny catch it with the other I/O errors.
    """


def lock_key(*parts: str) -> int:
    """An advisory lock key: the first 8 bytes of the SHA-256 of ``parts``, as a signed bigint."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise ConfigurationError(
            "WARDEN_DATABASE_URL is set but psycopg is not installed (pip install 'warden[fleet]')"
        ) from None
    return psycopg


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def redacted(url: str) -> str:
    """``url`` without its password, for messages."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = (f"{parts.username}@" if parts.username else "") + (parts.hostname or "")
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


class Database:
    """One lazily opened connection, shared by a store's threads one transaction at a time.

    ``names`` are the namespace's tables and indexes, written ``{name}`` in the
    queries given to :meth:`q`; ``ddl`` creates them.
    """

    def __init__(
        self,
        url: str,
        namespace: str,
        *,
        what: str,
        names: Sequence[str],
        ddl: Sequence[str],
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"namespace `{namespace}` must be 1-31 lower-case letters, digits or `_`, "
                "starting with a letter"
            )
        self._pg = _psycopg()
        self.url = url
        self.namespace = namespace
        self.what = what
        self.name = f"{redacted(url)} (namespace {namespace})"
        try:
            given = self._pg.conninfo.conninfo_to_dict(url)
        except self._pg.Error as exc:
            raise ConfigurationError(
                f"{self.name}: not a PostgreSQL URL ({one_line(exc)})"
            ) from None
        self._options = {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}
        self._options.setdefault("application_name", f"warden-{what}")
        self._names = {n: self._pg.sql.Identifier(f"{namespace}_{n}") for n in names}
        self._ddl = tuple(ddl)
        self._schema_key = lock_key("warden.schema", what, namespace)
        self._lock = threading.Lock()
        self._conn: Any = None
        self._ready = False
        self._closed = False

    def q(self, text: str) -> sql.Composed:
        """``text`` with each ``{name}`` replaced by the namespace's identifier for it."""
        query: sql.Composed = self._pg.sql.SQL(text).format(**self._names)
        return query

    def run(self, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)`` in one transaction; StoreUnavailable if the database fails.

        A connection that was idle and turns out dead (the server restarted) is
        replaced and ``fn`` tried once more. Should the first attempt's commit
        have landed after all, the second finds its effect (a request already
        used or decided) and fails closed: an approval is never used twice.
        """
        pg = self._pg
        with self._lock:
            for attempt in (0, 1):
                reused = self._conn is not None
                try:
                    conn = self._connection()
                except pg.Error as exc:
                    self._drop()
                    raise StoreUnavailable(f"{self.name}: {one_line(exc)}") from None
                try:
                    with conn.transaction():
                        return fn(conn)
                except pg.Error as exc:
                    broken = conn.closed or conn.broken
                    self._drop()
                    if broken and reused and attempt == 0 and _never_reached(exc, pg):
                        continue
                    raise StoreUnavailable(f"{self.name}: {one_line(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _connection(self) -> Any:
        if self._closed:
            raise StoreUnavailable(f"{self.name}: the {self.what} store is closed")
        if self._conn is not None and not self._conn.closed and not self._conn.broken:
            return self._conn
        self._drop()
        conn = self._pg.connect(self.url, autocommit=True, **self._options)
        try:
            if not self._ready:
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._schema_key,))
                    for ddl in self._ddl:
                        conn.execute(self.q(ddl))
                self._ready = True
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._drop()


def _never_reached(exc: BaseException, pg: Any) -> bool:
    """Whether ``exc`` says the statement never reached a live server (safe to run again)."""
    if isinstance(exc, pg.OperationalError):
        text = str(exc).lower()
        return "connection" in text and ("closed" in text or "lost" in text or "reset" in text)
    return isinstance(exc, pg.InterfaceError)
