"""The audit log on PostgreSQL, spooled to a local SQLite file while the database is away.

docs/fleet.md ("The audit log on PostgreSQL") is the specification; records, the
tree, checkpoints and verification are docs/audit.md's, unchanged, so
``verify_log``, the proofs and ``warden audit`` work on either backend.

Tables of namespace ``N`` (created if absent, under the namespace's advisory lock):

- ``N_records(seq, leaf, data, batch)``, ``N_nodes(level, idx, hash)``,
  ``N_checkpoints(size, note)``, ``N_meta(key, value)``: as the SQLite store's
  ``entries``, ``nodes``, ``checkpoints`` and ``meta``;
- ``N_batches(id, first_seq, count, digest, root, uid)``: the group commits the
  verifier checks, each with a unique ``uid`` that makes shipping a spooled
  batch idempotent.

**One sequence.** ``append_batch`` is one transaction holding
``pg_advisory_xact_lock(K)``, where K is a stable 64-bit hash of the namespace:
it reads the size, numbers the records, writes them, their completed Merkle
nodes and the batch row, and commits (``synchronous_commit`` as the server has
it: on by default). Writers on any number of hosts interleave whole batches.

**The spool.** When PostgreSQL cannot be reached (a connection or server-side
operational error), the batch goes to ``audit-spool.db`` beside the log's path
(WAL, ``synchronous=FULL``) before ``append_batch`` returns; it then has no seq
yet, and ``append_batch`` returns ``(-1, size last seen)``. From then on, until
the spool is empty again, every batch of this process goes to the spool, so
that its records keep their order. A shipper thread drains the spool oldest
first, each spooled batch in its own transaction: it skips a batch whose uid is
already in ``N_batches`` (a crash between the commit and the delete) and deletes
it from the spool only after the commit. Records whose bytes cannot be written
to the spool raise AuditError. Reads see PostgreSQL only: while records are
spooled, ``size()`` and the tree do not count them; ``pending()`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import msgspec
import rfc8785

from warden._sqlite import open_store, write_transaction
from warden.audit._events import canonical
from warden.audit._merkle import (
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    root_from_nodes,
)
from warden.audit._store import Batch
from warden.errors import AuditError, ConfigurationError
from warden.store._config import _NAMESPACE
from warden.store._pg import _psycopg, lock_key, one_line, redacted

if TYPE_CHECKING:
    from psycopg import sql

__all__ = ["PostgresAuditStore", "advisory_key"]

SCHEMA_VERSION: Final = "1"
SPOOL_VERSION: Final = 1
_T = TypeVar("_T")
_ZERO: Final = bytes(32)
_CONNECT_DEFAULTS: Final = {
    # a dead or unreachable server must surface as an error, not as a writer hung for minutes
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "10",
    "keepalives_interval": "5",
    "keepalives_count": "3",
    "tcp_user_timeout": "15000",
    "application_name": "warden-audit",
    # a replica that froze (or whose host died) inside a batch must not hold the namespace's
    # lock for the server's TCP keepalive time: its session ends, and a writer that waits
    # too long on the lock spools instead
    "options": "-c lock_timeout=10s -c idle_in_transaction_session_timeout=30s",
}
_SPOOL_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS spool (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    namespace TEXT NOT NULL,
    uid TEXT NOT NULL UNIQUE,
    count INTEGER NOT NULL,
    records BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spool_namespace ON spool (namespace, n);
"""
_TABLES: Final = ("records", "nodes", "batches", "checkpoints", "meta")
_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {records} (seq BIGINT PRIMARY KEY, leaf BYTEA NOT NULL, "
    "data BYTEA NOT NULL, batch BIGINT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {nodes} (level INTEGER NOT NULL, idx BIGINT NOT NULL, "
    "hash BYTEA NOT NULL, PRIMARY KEY (level, idx))",
    "CREATE TABLE IF NOT EXISTS {batches} (id BIGINT PRIMARY KEY, first_seq BIGINT NOT NULL, "
    "count INTEGER NOT NULL, digest BYTEA NOT NULL, root BYTEA NOT NULL, uid TEXT NOT NULL UNIQUE)",
    "CREATE TABLE IF NOT EXISTS {checkpoints} (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)
_decode_spooled = msgspec.json.Decoder(list[dict[str, Any]]).decode


def advisory_key(namespace: str) -> int:
    """The namespace's advisory lock key (``lock_key("warden.audit", namespace)``)."""
    return lock_key("warden.audit", namespace)


class _Unreachable(Exception):
    """PostgreSQL did not answer (connection refused, lost, or an operational error)."""


class PostgresAuditStore:
    """The audit log of one namespace on PostgreSQL (an ``AuditBackend``).

    ``path`` is the log's local anchor (default ``$WARDEN_HOME/audit.db``): the
    verifier looks for ``audit-key.pub`` beside it, and the spool is
    ``<stem>-spool.db`` beside it. ``readonly`` opens an existing log for
    reading only (no tables, spool or shipper are created); a namespace without
    a log then raises AuditError. A writable store needs the database at open.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        path: str | os.PathLike[str] | None = None,
        readonly: bool = False,
        retry_interval: float = 0.05,
        retry_max: float = 1.0,
        drain_timeout: float = 5.0,
    ) -> None:
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"namespace `{namespace}` must be 1-31 lower-case letters, digits or `_`, "
                "starting with a letter"
            )
        self._pg = _psycopg()
        self._sql = self._pg.sql
        if path is None:
            path = Path(os.environ.get("WARDEN_HOME") or ".warden") / "audit.db"
        self.path = Path(path)
        self.spool_path = self.path.with_name(self.path.stem + "-spool.db")
        self.url = url
        self.namespace = namespace
        self.name = f"{redacted(url)} (namespace {namespace})"
        self.readonly = readonly
        self.retry_interval = retry_interval
        self.retry_max = retry_max
        self.drain_timeout = drain_timeout
        self._key = advisory_key(namespace)
        self._t = {t: self._sql.Identifier(f"{namespace}_{t}") for t in _TABLES}
        self._options = self._connect_options(url)
        self._read_lock = threading.Lock()
        self._write_lock = threading.Lock()  # append_batch: spool-or-commit, in order
        self._commit_lock = threading.Lock()  # the write connection and the frontier cache
        self._conns: dict[str, Any] = {}
        self._local = threading.local()  # .conn: this thread's snapshot connection, if any
        self._frontier: CompactRange | None = None
        self._known_size = 0
        self._closed = False
        self._closing = False
        self._spooling = False
        self._ship_error: BaseException | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._spool: sqlite3.Connection | None = None
        self._spool_lock = threading.Lock()
        self._shipper: threading.Thread | None = None
        try:
            if readonly:
                self._read(self._check_exists)
            else:
                self._write(self._create)
                self._spool = open_store(
                    self.spool_path, _SPOOL_SCHEMA, SPOOL_VERSION, "audit spool", AuditError
                )
                self._spooling = self._spool_oldest() is not None
                self._shipper = threading.Thread(
                    target=self._ship_loop, name="warden-audit-shipper", daemon=True
                )
                self._shipper.start()
        except BaseException:
            self._close_connections()
            raise

    # --- connections ------------------------------------------------------------------------

    def _connect_options(self, url: str) -> dict[str, str]:
        try:
            given = self._pg.conninfo.conninfo_to_dict(url)
        except self._pg.Error as exc:
            raise ConfigurationError(
                f"{self.name}: not a PostgreSQL URL ({one_line(exc)})"
            ) from None
        return {k: v for k, v in _CONNECT_DEFAULTS.items() if k not in given}

    def _connection(self, slot: str) -> Any:
        """The open connection of ``slot`` (read, write, ship), reconnecting a broken one."""
        if self._closed:
            raise AuditError(f"{self.name}: the audit store is closed")
        conn = self._conns.get(slot)
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if conn is not None:
            conn.close()
        conn = self._pg.connect(self.url, autocommit=True, **self._options)
        if self.readonly:
            conn.execute("SET default_transaction_read_only = on")
        self._conns[slot] = conn
        return conn

    def _drop(self, slot: str) -> None:
        conn = self._conns.pop(slot, None)
        if conn is not None:
            conn.close()

    def _transient(self, exc: BaseException, slot: str) -> bool:
        """Whether ``exc`` means the database could not be reached (as opposed to refused us).

        Operational errors (connection lost or refused, lock timeout, disk full,
        shutdown), a connection that broke, and a read-only server (a standby
        after a failover) all pass; a missing table or a constraint does not.
        """
        pg = self._pg
        if isinstance(exc, (pg.OperationalError, pg.InterfaceError)):
            return True
        if isinstance(exc, pg.errors.ReadOnlySqlTransaction):
            return True
        conn = self._conns.get(slot)
        return conn is not None and (conn.closed or conn.broken)

    def _read(self, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)`` on the read connection; one retry on a fresh one if it was stale.

        Inside :meth:`snapshot`, on this thread's snapshot connection (never retried).
        """
        snap = getattr(self._local, "conn", None)
        if snap is not None:
            try:
                return fn(snap)
            except self._pg.Error as exc:
                raise AuditError(f"{self.name}: {one_line(exc)}") from None
        with self._read_lock:
            for attempt in (0, 1):
                fresh = "read" not in self._conns
                try:
                    return fn(self._connection("read"))
                except self._pg.Error as exc:
                    if self._transient(exc, "read"):
                        self._drop("read")
                        if attempt == 0 and not fresh:
                            continue  # an idle connection the server dropped: try a new one
                    raise AuditError(f"{self.name}: {one_line(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """Reads by this thread inside the block see one state of the log, however it grows.

        One REPEATABLE READ, read-only transaction on a connection of its own:
        ``verify_log`` uses it, so that batches committed by other writers while it
        streams cannot look like a torn batch or a node beyond the tree.
        """
        if getattr(self._local, "conn", None) is not None:
            yield  # already in one
            return
        try:
            conn = self._pg.connect(self.url, autocommit=True, **self._options)
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        except self._pg.Error as exc:
            raise AuditError(f"{self.name}: {one_line(exc)}") from None
        self._local.conn = conn
        try:
            yield
        finally:
            self._local.conn = None
            conn.close()

    def _write(self, fn: Callable[[Any], _T]) -> _T:
        """``fn(connection)`` on the write connection (metadata and checkpoints)."""
        if self.readonly:
            raise AuditError(f"{self.name}: opened read-only")
        with self._commit_lock:
            try:
                return fn(self._connection("write"))
            except self._pg.Error as exc:
                if self._transient(exc, "write"):
                    self._drop("write")
                raise AuditError(f"{self.name}: {one_line(exc)}") from None

    def _q(self, text: str) -> sql.Composed:
        """``text`` with ``{records}``, ``{nodes}``, ... replaced by the namespace's tables."""
        query: sql.Composed = self._sql.SQL(text).format(**self._t)
        return query

    def _check_exists(self, conn: Any) -> None:
        row = conn.execute(
            "SELECT to_regclass(%s), to_regclass(%s), to_regclass(%s)",
            (f"{self.namespace}_meta", f"{self.namespace}_records", f"{self.namespace}_batches"),
        ).fetchone()
        if row is None or None in row:
            raise AuditError(f"{self.name}: no audit log here")
        self._check_version(conn)

    def _check_version(self, conn: Any) -> None:
        row = conn.execute(
            self._q("SELECT value FROM {meta} WHERE key = 'schema_version'")
        ).fetchone()
        if row is not None and row[0] != SCHEMA_VERSION:
            raise AuditError(
                f"{self.name}: audit schema version {row[0]}; this warden reads version "
                f"{SCHEMA_VERSION}"
            )

    def _create(self, conn: Any) -> None:
        with conn.transaction():
            # concurrent CREATE TABLE IF NOT EXISTS can fail on the catalog's unique index
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
            for ddl in _DDL:
                conn.execute(self._q(ddl))
            self._check_version(conn)
            if conn.execute(self._q("SELECT 1 FROM {meta} WHERE key = 'log_id'")).fetchone():
                return
            log_id = secrets.token_hex(8)
            conn.execute(
                self._q("INSERT INTO {meta} (key, value) VALUES (%s, %s), (%s, %s), (%s, %s)"),
                ("schema_version", SCHEMA_VERSION, "log_id", log_id, "origin", f"warden/{log_id}"),
            )

    # --- metadata ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        row = self._read(
            lambda c: c.execute(
                self._q("SELECT value FROM {meta} WHERE key = %s"), (key,)
            ).fetchone()
        )
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self._write(
            lambda c: c.execute(
                self._q(
                    "INSERT INTO {meta} (key, value) VALUES (%s, %s) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
                ),
                (key, value),
            )
        )

    @property
    def origin(self) -> str:
        origin = self.meta("origin")
        if origin is None:
            raise AuditError(f"{self.name}: the log has no origin")
        return origin

    # --- writing ----------------------------------------------------------------------------

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], safe: Sequence[bool] | None = None
    ) -> tuple[int, int]:
        """Commit ``records`` as one batch; return (first seq, new size). Durable on return.

        When PostgreSQL cannot be reached the batch is spooled instead and the
        result is ``(-1, the size last seen)``: its records get their seqs when
        the shipper commits them.
        """
        if self.readonly:
            raise AuditError(f"{self.name}: opened read-only")
        if not records:
            size = self.size()
            return size, size
        with self._write_lock:
            if self._closed or self._closing:
                raise AuditError(f"{self.name}: the audit store is closed")
            if self._ship_error is not None:
                raise AuditError(
                    f"{self.name}: the spool cannot be shipped: {one_line(self._ship_error)}"
                )
            uid = secrets.token_hex(16)
            if not self._spooling:
                try:
                    with self._commit_lock:
                        done = self._commit("write", records, safe, uid, check=False)
                    if done is not None:  # always: only a checked commit can skip its batch
                        return done
                except _Unreachable:
                    pass  # the commit may have landed: the shipper checks the uid first
            self._spool_batch(uid, records, safe)
            self._spooling = True
            self._wake.set()
            return -1, self._known_size

    def _commit(
        self,
        slot: str,
        records: Sequence[Mapping[str, Any]],
        safe: Sequence[bool] | None,
        uid: str,
        *,
        check: bool,
    ) -> tuple[int, int] | None:
        """One batch, one transaction, under the advisory lock; None if ``uid`` is already in.

        Raises _Unreachable when the database cannot be reached, AuditError when it
        refuses the batch. Caller holds ``_commit_lock``.
        """
        try:
            conn = self._connection(slot)
            result = self._insert(conn, records, safe, uid, check)
        except self._pg.Error as exc:
            self._frontier = None
            if self._transient(exc, slot):
                self._drop(slot)
                raise _Unreachable(one_line(exc)) from None
            raise AuditError(f"{self.name}: {one_line(exc)}") from None
        except BaseException:
            self._frontier = None
            raise
        return result

    def _insert(
        self,
        conn: Any,
        records: Sequence[Mapping[str, Any]],
        safe: Sequence[bool] | None,
        uid: str,
        check: bool,
    ) -> tuple[int, int] | None:
        q = self._q
        with conn.transaction():
            # the lock is its own statement: in READ COMMITTED each later statement then
            # sees every batch committed before the lock was granted
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._key,))
            if (
                check
                and conn.execute(q("SELECT 1 FROM {batches} WHERE uid = %s"), (uid,)).fetchone()
            ):
                return None
            row = conn.execute(
                q("SELECT (SELECT max(seq) FROM {records}), (SELECT max(id) FROM {batches})")
            ).fetchone()
            first = 0 if row[0] is None else int(row[0]) + 1
            batch_id = 0 if row[1] is None else int(row[1]) + 1
            cr = self._frontier
            self._frontier = None
            if cr is None or cr.size != first:  # another writer appended since: reload the edge
                cr = self._with_nodes(conn, lambda get: CompactRange.from_nodes(first, get))
            rows = []
            nodes: list[tuple[int, int, bytes]] = []
            digest = hashlib.sha256()
            for i, rec in enumerate(records):
                seq = first + i
                fast = bool(safe and safe[i])
                # the writer's own records are fresh dicts: set seq in place (no copy)
                full = rec if fast and isinstance(rec, dict) else {**rec}
                full["seq"] = seq
                data = canonical(full, safe=fast)
                leaf = leaf_hash(data)
                digest.update(leaf)
                rows.append((seq, leaf, data, batch_id))
                nodes.extend(cr.append(leaf))
            size = first + len(records)
            with conn.cursor() as cur:
                with cur.copy(q("COPY {records} (seq, leaf, data, batch) FROM STDIN")) as copy:
                    for r in rows:
                        copy.write_row(r)
                if nodes:
                    with cur.copy(q("COPY {nodes} (level, idx, hash) FROM STDIN")) as copy:
                        for n in nodes:
                            copy.write_row(n)
                cur.execute(
                    q(
                        "INSERT INTO {batches} (id, first_seq, count, digest, root, uid) "
                        "VALUES (%s, %s, %s, %s, %s, %s)"
                    ),
                    (batch_id, first, len(records), digest.digest(), cr.root(), uid),
                )
        self._frontier = cr
        self._known_size = size
        return first, size

    def add_checkpoint(self, size: int, note: str) -> None:
        self._write(
            lambda c: c.execute(
                self._q(
                    "INSERT INTO {checkpoints} (size, note) VALUES (%s, %s) "
                    "ON CONFLICT (size) DO UPDATE SET note = excluded.note"
                ),
                (size, note),
            )
        )

    # --- the spool and the shipper ----------------------------------------------------------

    def _spool_batch(
        self, uid: str, records: Sequence[Mapping[str, Any]], safe: Sequence[bool] | None
    ) -> None:
        """Write one batch durably to the spool (its records as JCS, without seq)."""
        parts = []
        for i, rec in enumerate(records):
            fast = bool(safe and safe[i])
            parts.append(canonical({k: v for k, v in rec.items() if k != "seq"}, safe=fast))
        blob = b"[" + b",".join(parts) + b"]"
        spool = self._spool
        if spool is None:
            raise AuditError(f"{self.name}: no spool")
        try:
            with write_transaction(spool, self._spool_lock) as db:
                db.execute(
                    "INSERT INTO spool (namespace, uid, count, records) VALUES (?, ?, ?, ?)",
                    (self.namespace, uid, len(records), blob),
                )
        except (sqlite3.Error, OSError) as exc:
            raise AuditError(
                f"{self.spool_path}: PostgreSQL is unreachable and the spool cannot be "
                f"written ({one_line(exc)})"
            ) from None

    def _spool_oldest(self) -> tuple[int, str, bytes] | None:
        spool = self._spool
        if spool is None:
            return None
        try:
            with self._spool_lock:
                row = spool.execute(
                    "SELECT n, uid, records FROM spool WHERE namespace = ? ORDER BY n LIMIT 1",
                    (self.namespace,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"{self.spool_path}: cannot read the spool ({exc})") from None
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]))

    def pending(self) -> int:
        """How many records wait in the spool for this namespace (not yet in ``size()``)."""
        spool = self._spool
        if spool is None:
            return 0
        try:
            with self._spool_lock:
                row = spool.execute(
                    "SELECT COALESCE(SUM(count), 0) FROM spool WHERE namespace = ?",
                    (self.namespace,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise AuditError(f"{self.spool_path}: cannot read the spool ({exc})") from None
        return int(row[0])

    @property
    def spooling(self) -> bool:
        """True while this process sends its batches to the spool."""
        return self._spooling

    @property
    def ship_error(self) -> BaseException | None:
        """Why the shipper cannot ship (the database refused a spooled batch), or None."""
        return self._ship_error

    def _ship_one(self) -> None:
        """Ship the oldest spooled batch, or leave spooling mode when there is none."""
        row = self._spool_oldest()
        if row is None:
            with self._write_lock:  # no batch can be spooled between this check and the flag
                if self._spool_oldest() is None:
                    self._spooling = False
            return
        n, uid, blob = row
        try:
            records = _decode_spooled(blob)
        except msgspec.DecodeError as exc:
            raise AuditError(f"{self.spool_path}: spooled batch {n} is damaged ({exc})") from None
        with self._commit_lock:
            self._commit("ship", records, None, uid, check=True)
        spool = self._spool
        if spool is None:
            return
        try:
            with write_transaction(spool, self._spool_lock) as db:
                db.execute("DELETE FROM spool WHERE n = ?", (n,))
        except sqlite3.Error as exc:
            raise AuditError(f"{self.spool_path}: cannot update the spool ({exc})") from None

    def _ship_loop(self) -> None:
        delay = self.retry_interval
        deadline: float | None = None
        while True:
            if self._closing:
                if not self._spooling:
                    return
                if deadline is None:
                    deadline = time.monotonic() + self.drain_timeout
                if time.monotonic() >= deadline:
                    return
            if not self._spooling:
                self._wake.wait(1.0)
                self._wake.clear()
                continue
            try:
                self._ship_one()
                delay = self.retry_interval
                self._ship_error = None
                continue
            except _Unreachable:
                pass
            except Exception as exc:  # noqa: BLE001 - the next append reports it (and fails)
                self._ship_error = exc
            self._stop.wait(delay)
            delay = min(delay * 2, self.retry_max)

    # --- reading ----------------------------------------------------------------------------

    def size(self) -> int:
        """The number of records in PostgreSQL (spooled ones are not counted: see pending)."""
        row = self._read(lambda c: c.execute(self._q("SELECT max(seq) FROM {records}")).fetchone())
        size = 0 if row is None or row[0] is None else int(row[0]) + 1
        self._known_size = max(self._known_size, size)
        return size

    def _fetch(self, conn: Any, wanted: Sequence[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        leaves = [i for level, i in wanted if level == 0]
        inner = [(level, i) for level, i in wanted if level > 0]
        if not wanted:
            return {}
        rows = conn.execute(
            self._q(
                "SELECT 0, seq, leaf FROM {records} WHERE seq = ANY(%s::bigint[]) UNION ALL "
                "SELECT level, idx, hash FROM {nodes} WHERE (level, idx) IN "
                "(SELECT * FROM unnest(%s::int[], %s::bigint[]))"
            ),
            (leaves, [lv for lv, _ in inner], [i for _, i in inner]),
        ).fetchall()
        return {(int(lv), int(i)): bytes(h) for lv, i, h in rows}

    def _with_nodes(self, conn: Any, fn: Callable[[Callable[[int, int], bytes]], _T]) -> _T:
        """``fn(get_node)`` with every node it reads fetched in one query.

        Which nodes a proof or root reads depends on sizes and indices only, never on
        the hashes: a first run with placeholder hashes lists them.
        """
        wanted: list[tuple[int, int]] = []

        def probe(level: int, idx: int) -> bytes:
            wanted.append((level, idx))
            return _ZERO

        fn(probe)
        found = self._fetch(conn, wanted)

        def get(level: int, idx: int) -> bytes:
            h = found.get((level, idx))
            if h is None:
                raise AuditError(f"{self.name}: missing Merkle node ({level}, {idx})")
            return h

        return fn(get)

    def get_node(self, level: int, idx: int) -> bytes:
        """The stored perfect-subtree hash (level 0: leaf hashes); AuditError if absent."""
        found = self._read(lambda c: self._fetch(c, [(level, idx)]))
        h = found.get((level, idx))
        if h is None:
            raise AuditError(f"{self.name}: missing Merkle node ({level}, {idx})")
        return h

    def root(self, size: int | None = None) -> bytes:
        """The tree root at ``size`` (default: now), from O(log n) stored nodes in one query."""
        n = self.size() if size is None else size
        return self._read(lambda c: self._with_nodes(c, lambda get: root_from_nodes(n, get)))

    def record(self, seq: int) -> bytes:
        row = self._read(
            lambda c: c.execute(
                self._q("SELECT data FROM {records} WHERE seq = %s"), (seq,)
            ).fetchone()
        )
        if row is None:
            raise AuditError(f"no audit record {seq}")
        return bytes(row[0])

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        n = self.size() if size is None else size
        return self._read(lambda c: self._with_nodes(c, lambda g: inclusion_proof(index, n, g)))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        n = self.size() if new_size is None else new_size
        return self._read(
            lambda c: self._with_nodes(c, lambda g: consistency_proof(old_size, n, g))
        )

    def _rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._read(
            lambda c: c.execute(self._q(query), params).fetchall()
        )
        return rows

    def scan_chunks(
        self, start: int = 0, chunk: int = 8192
    ) -> Iterator[list[tuple[int, bytes, bytes, int]]]:
        """Lists of (seq, leaf, data, batch) rows in seq order (never the whole log at once)."""
        nxt = start
        while True:
            rows = self._rows(
                "SELECT seq, leaf, data, batch FROM {records} WHERE seq >= %s ORDER BY seq "
                "LIMIT %s",
                (nxt, chunk),
            )
            if not rows:
                return
            yield [(int(s), bytes(lf), bytes(d), int(b)) for s, lf, d, b in rows]
            nxt = int(rows[-1][0]) + 1

    def scan(self, start: int = 0, chunk: int = 8192) -> Iterator[tuple[int, bytes, bytes, int]]:
        """(seq, leaf, data, batch) in seq order, read in chunks."""
        for rows in self.scan_chunks(start, chunk):
            yield from rows

    def node_rows(self, level: int, start: int, limit: int) -> list[tuple[int, bytes]]:
        """Stored nodes of one level (>= 1) from index ``start``, in index order."""
        rows = self._rows(
            "SELECT idx, hash FROM {nodes} WHERE level = %s AND idx >= %s ORDER BY idx LIMIT %s",
            (level, start, limit),
        )
        return [(int(i), bytes(h)) for i, h in rows]

    def batches(self) -> Iterator[Batch]:
        nxt = 0
        while True:
            rows = self._rows(
                "SELECT id, first_seq, count, digest, root FROM {batches} WHERE id >= %s "
                "ORDER BY id LIMIT 4096",
                (nxt,),
            )
            if not rows:
                return
            for r in rows:
                yield int(r[0]), int(r[1]), int(r[2]), bytes(r[3]), bytes(r[4])
            nxt = int(rows[-1][0]) + 1

    def checkpoints(self) -> list[tuple[int, str]]:
        rows = self._rows("SELECT size, note FROM {checkpoints} ORDER BY size", ())
        return [(int(s), str(n)) for s, n in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        rows = self._rows("SELECT size, note FROM {checkpoints} ORDER BY size DESC LIMIT 1", ())
        return None if not rows else (int(rows[0][0]), str(rows[0][1]))

    def select_records(
        self,
        *,
        record_type: str | None = None,
        agent: str | None = None,
        session: str | None = None,
        tool: str | None = None,
        effect: str | None = None,
        since: str | None = None,
        newest: bool = False,
        chunk: int = 512,
    ) -> Iterator[tuple[int, bytes]]:
        """(seq, record bytes) of the records whose fields equal the given values.

        The semantics of ``AuditStore.select_records``. The equality filters are
        narrowed in SQL by the JCS form of their value occurring in the record's
        bytes (true of every record warden wrote); the exact test runs here on the
        decoded record. A record that is not valid JSON matches no filter.
        """
        given = {
            "type": record_type,
            "agent": agent,
            "session": session,
            "tool": tool,
            "effect": effect,
        }
        wanted = {k: v for k, v in given.items() if v is not None}
        needles = [n for n in map(_needle, wanted.values()) if n is not None]
        where = "seq < %s" if newest else "seq > %s"
        where += " AND position(%s::bytea IN data) > 0" * len(needles)
        query = (
            f"SELECT seq, data FROM {{records}} WHERE {where} "
            f"ORDER BY seq {'DESC' if newest else 'ASC'} LIMIT %s"
        )
        filtering = bool(wanted) or since is not None
        cursor = self.size() if newest else -1
        while True:
            rows = self._rows(query, (cursor, *needles, chunk))
            for seq, data in rows:
                raw = bytes(data)
                if not filtering or _matches(raw, wanted, since):
                    yield int(seq), raw
            if len(rows) < chunk:
                return
            cursor = int(rows[-1][0])

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the shipper (after up to ``drain_timeout`` s of draining) and disconnect.

        Records still spooled stay in the spool; the next writable store opened on
        it ships them.
        """
        with self._write_lock:
            if self._closed or self._closing:
                return
            self._closing = True
        self._wake.set()
        if self._shipper is not None:
            self._shipper.join(self.drain_timeout + 30)
        self._stop.set()
        self._close_connections()

    def _close_connections(self) -> None:
        self._closed = True
        self._stop.set()
        self._wake.set()
        with self._read_lock, self._commit_lock:
            for slot in list(self._conns):
                self._drop(slot)
        if self._spool is not None:
            with self._spool_lock:
                self._spool.close()


def _needle(value: str) -> bytes | None:
    """The JCS bytes of a string value (None if it has none, as a lone surrogate)."""
    try:
        return bytes(rfc8785.dumps(value))
    except (TypeError, ValueError, UnicodeError, rfc8785.CanonicalizationError):
        return None


def _text_of(rec: dict[str, Any], *keys: str) -> str | None:
    value: Any = rec
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value if isinstance(value, str) else None


def _matches(data: bytes, wanted: dict[str, str], since: str | None) -> bool:
    """Whether a record passes the filters of ``AuditStore.select_records`` (its _FILTERS)."""
    try:
        rec = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return False
    if not isinstance(rec, dict):
        return False
    for name, value in wanted.items():
        if name == "agent":
            who = rec.get("agent")
            found = _text_of(who, "id") if isinstance(who, dict) else _text_of(rec, "agent")
        elif name == "tool":
            # COALESCE(action.tool, tool): a JSON null or a missing action.tool falls through
            action = rec.get("action")
            inner = action.get("tool") if isinstance(action, dict) else None
            either = inner if inner is not None else rec.get("tool")
            found = either if isinstance(either, str) else None
        elif name == "effect":
            found = _text_of(rec, "decision", "effect")
        else:
            found = _text_of(rec, name)
        if found != value:
            return False
    if since is not None:
        stamp = _text_of(rec, "time")
        if stamp is None or stamp < since:
            return False
    return True
