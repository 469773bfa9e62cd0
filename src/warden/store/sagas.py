"""The saga log on PostgreSQL, shared by every replica of a fleet (docs/fleet.md).

The same engine as the SQLite ``SagaStore`` (warden/runtime/saga.py): the same
states, idempotency keys, leases, compensations in reverse order and recovery,
on three tables ``N_sagas``, ``N_steps`` and ``N_events`` with the SQLite log's
columns. A saga begun on one replica is recovered (compensated) by another
once its holder's heartbeat is older than the lease, or once it let go.

**Concurrency.** Each engine transaction is one PostgreSQL transaction. Where
SQLite's ``BEGIN IMMEDIATE`` locks the whole file, this store locks the saga's
row: every write made by a holder reads the row ``FOR UPDATE`` to check its
lease token, and claiming an abandoned saga reads it ``FOR UPDATE SKIP
LOCKED``, so replicas racing to recover one saga never both take it: the one
that waits skips it, and a later look finds it held by a live lease.

**Failure.** Any database error raises ``SagaError``: no step runs unless it
was first recorded ``started``.
"""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Final

from warden.errors import SagaError
from warden.runtime.saga import DEFAULT_LEASE, SagaStore
from warden.store._pg import Database, StoreUnavailable, one_line

if TYPE_CHECKING:
    from warden.governor import Governor
    from warden.runtime.inflight import InFlight

__all__ = ["PostgresSagaStore"]

_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {sagas} (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "key TEXT UNIQUE, state TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL, "
    "updated_at DOUBLE PRECISION NOT NULL, error TEXT, compensation_error TEXT, "
    "agent TEXT NOT NULL, holder_node TEXT, holder_pid INTEGER, holder_start TEXT, "
    "holder_token TEXT, heartbeat DOUBLE PRECISION)",
    "CREATE INDEX IF NOT EXISTS {sagas_state} ON {sagas} (state, created_at)",
    "CREATE TABLE IF NOT EXISTS {steps} (saga_id TEXT NOT NULL, idx INTEGER NOT NULL, "
    "action TEXT NOT NULL, args TEXT NOT NULL, compensate TEXT, compensate_args TEXT, "
    "state TEXT NOT NULL, result TEXT, error TEXT, decision_id TEXT, "
    "attempts INTEGER NOT NULL, started_at DOUBLE PRECISION, finished_at DOUBLE PRECISION, "
    "compensated_at DOUBLE PRECISION, PRIMARY KEY (saga_id, idx))",
    "CREATE TABLE IF NOT EXISTS {events} (seq BIGSERIAL PRIMARY KEY, saga_id TEXT NOT NULL, "
    "step INTEGER, state TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, detail TEXT)",
    "CREATE INDEX IF NOT EXISTS {events_saga} ON {events} (saga_id, seq)",
)
_NAMES: Final = ("sagas", "sagas_state", "steps", "events", "events_saga")
_TABLES: Final = re.compile(r"\b(sagas|steps|events)\b")


class _Translating:
    """A psycopg connection taking the engine's SQLite-dialect queries (``?``, bare tables)."""

    def __init__(self, conn: Any, namespace: str, cache: dict[str, str]) -> None:
        self._conn = conn
        self._namespace = namespace
        self._cache = cache

    def execute(self, sql: str, parameters: Any = (), /) -> Any:
        query = self._cache.get(sql)
        if query is None:
            # the namespace is checked by Database: lower-case letters, digits and `_`
            query = _TABLES.sub(lambda m: f"{self._namespace}_{m.group(1)}", sql)
            query = query.replace("%", "%%").replace("?", "%s")
            self._cache[sql] = query
        return self._conn.execute(query, tuple(parameters))


class PostgresSagaStore(SagaStore):
    """The saga log of one fleet namespace (a ``SagaBackend``). Thread-safe.

    Takes the arguments of ``SagaStore`` but a database URL and namespace for
    its path. Connects on first use; every read and write that cannot reach
    the database raises SagaError.
    """

    _row_lock: ClassVar[str] = " FOR UPDATE"
    _claim_lock: ClassVar[str] = " FOR UPDATE SKIP LOCKED"

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        actions: Mapping[str, Callable[..., Any]] | None = None,
        governor: Governor | None = None,
        retries: int = 3,
        backoff: float = 0.05,
        lease: float = DEFAULT_LEASE,
        inflight: InFlight | None = None,
        recover: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        self._namespace = namespace
        self._queries: dict[str, str] = {}
        super().__init__(
            None,
            actions=actions,
            governor=governor,
            retries=retries,
            backoff=backoff,
            lease=lease,
            inflight=inflight,
            recover=recover,
            clock=clock,
        )

    def _open(self) -> Database:
        db = Database(self._url, self._namespace, what="sagas", names=_NAMES, ddl=_DDL)
        self.name = db.name
        return db

    def __repr__(self) -> str:
        return f"PostgresSagaStore({self.name!r})"

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Any]:
        if self._closed:
            raise SagaError(f"{self.name}: the saga log is closed")
        with self._transaction("write") as conn:
            yield conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Any]:
        if self._closed:
            raise SagaError(f"{self.name}: the saga log is closed")
        with self._transaction("read") as conn:
            yield conn

    @contextlib.contextmanager
    def _transaction(self, doing: str) -> Iterator[Any]:
        """One transaction on the store's connection, one thread at a time; SagaError on failure."""
        db: Database = self._db
        pg = db._pg
        with self._lock:
            try:
                conn = db._connection()
            except (pg.Error, StoreUnavailable) as exc:
                db._drop()
                raise SagaError(
                    f"{self.name}: cannot {doing} the saga log: {one_line(exc)}"
                ) from None
            try:
                with conn.transaction():
                    yield _Translating(conn, self._namespace, self._queries)
            except pg.Error as exc:
                db._drop()
                raise SagaError(
                    f"{self.name}: cannot {doing} the saga log: {one_line(exc)}"
                ) from None
