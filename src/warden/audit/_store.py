"""The audit store protocol, and the embedded store: records, nodes, batches, checkpoints in SQLite.

``AuditBackend`` names what the log, the verifier, the proofs and ``warden
audit`` use of a store. ``AuditStore`` (here, SQLite) and
``warden.store.PostgresAuditStore`` (docs/fleet.md) implement it;
``open_backend`` picks one from the environment.

Layout and invariants are specified in docs/audit.md ("Storage"). All writes
go through :meth:`AuditStore.append_batch`, one ``BEGIN IMMEDIATE`` transaction
per batch, so any number of threads and processes sharing the file see one
gap-free sequence.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

from warden._sqlite import connect, write_transaction
from warden.audit._events import canonical
from warden.audit._merkle import (
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_from_nodes,
)
from warden.errors import AuditError, ConfigurationError, LogIntegrityError

__all__ = ["SCHEMA_VERSION", "AuditBackend", "AuditStore", "Batch", "open_backend"]

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS entries (
    seq INTEGER PRIMARY KEY,
    leaf BLOB NOT NULL,
    data BLOB NOT NULL,
    batch INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS nodes (
    level INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    hash BLOB NOT NULL,
    PRIMARY KEY (level, idx)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    first_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    digest BLOB NOT NULL,
    root BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    size INTEGER PRIMARY KEY,
    note TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


def _blob(value: object, what: str) -> bytes:
    """A stored BLOB, or LogIntegrityError (never ``bytes(<int>)``: that allocates n zeros)."""
    if type(value) is not bytes:
        raise LogIntegrityError(f"{what}: stored value is a {type(value).__name__}, not bytes")
    return value


def _int(value: object, what: str) -> int:
    if type(value) is not int:
        raise LogIntegrityError(f"{what}: stored value is a {type(value).__name__}, not an integer")
    return value


Batch = tuple[int, int, int, bytes, bytes]
"""A batch row: (id, first_seq, count, digest, root)."""


@runtime_checkable
class AuditBackend(Protocol):
    """What ``AuditLog``, ``verify_log``, the proofs and ``warden audit`` need of a store.

    Reads raise AuditError when the store cannot be read. Node reads follow
    ``warden.audit._merkle``: level 0 is the leaf hashes, level L >= 1 the
    perfect subtree over leaves ``[idx * 2**L, (idx + 1) * 2**L)``.
    """

    @property
    def path(self) -> Path:
        """The log's local anchor: ``audit-key.pub`` is looked for beside it."""
        ...

    @property
    def origin(self) -> str:
        """The checkpoint origin, ``warden/<log id>``."""
        ...

    def meta(self, key: str) -> str | None: ...

    def set_meta(self, key: str, value: str) -> None: ...

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], safe: Sequence[bool] | None = None
    ) -> tuple[int, int]:
        """Make ``records`` durable as one batch; return (first seq, size after it).

        A backend that accepted the batch durably without placing it in the log
        yet (the PostgreSQL spool) returns a first seq of -1 and the size it last saw.
        """
        ...

    def add_checkpoint(self, size: int, note: str) -> None: ...

    def size(self) -> int: ...

    def get_node(self, level: int, idx: int) -> bytes: ...

    def root(self, size: int | None = None) -> bytes: ...

    def record(self, seq: int) -> bytes: ...

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]: ...

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]: ...

    def scan_chunks(
        self, start: int = 0, chunk: int = 8192
    ) -> Iterator[list[tuple[int, bytes, bytes, int]]]: ...

    def scan(
        self, start: int = 0, chunk: int = 8192
    ) -> Iterator[tuple[int, bytes, bytes, int]]: ...

    def node_rows(self, level: int, start: int, limit: int) -> list[tuple[int, bytes]]: ...

    def batches(self) -> Iterator[Batch]: ...

    def checkpoints(self) -> list[tuple[int, str]]: ...

    def latest_checkpoint(self) -> tuple[int, str] | None: ...

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
    ) -> Iterator[tuple[int, bytes]]: ...

    def close(self) -> None: ...


def open_backend(path: str | os.PathLike[str], *, readonly: bool = False) -> AuditBackend:
    """The log at ``path``, or, when ``WARDEN_DATABASE_URL`` is set, the fleet's on PostgreSQL.

    With PostgreSQL, ``path`` stays the local anchor (key files, spool) and
    ``WARDEN_FLEET_NAMESPACE`` names the tables. ConfigurationError for a URL
    that does not parse or a missing driver.
    """
    # imported here: the fleet layer sits above the audit log, and embedded mode needs none of it
    from warden.store._config import FleetConfig

    config = FleetConfig.from_env()
    if config.database_url is None:
        return AuditStore(path, readonly=readonly)
    try:
        from warden.store.postgres_audit import PostgresAuditStore
    except ImportError as exc:  # pragma: no cover - the fleet extra is not installed
        raise ConfigurationError(
            f"WARDEN_DATABASE_URL is set but the PostgreSQL driver is missing ({exc}); "
            "install warden[fleet]"
        ) from None
    return PostgresAuditStore(config.database_url, config.namespace, path=path, readonly=readonly)


class AuditStore:
    """SQLite access for one audit log file.

    ``readonly`` opens an existing file without creating anything (for
    verification): a missing or foreign file raises AuditError.
    """

    def __init__(self, path: str | os.PathLike[str], *, readonly: bool = False) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            if readonly:
                if not self.path.is_file():
                    raise AuditError(f"{self.path}: no audit log here")
                # as_uri percent-encodes `#`, `?` and `%`, which a plain `file:` URI
                # would read as the fragment, the query or an escape
                uri = self.path.absolute().as_uri() + "?mode=ro"
                self._db = sqlite3.connect(
                    uri, uri=True, isolation_level=None, check_same_thread=False, timeout=30.0
                )
                self._check_schema()
            else:
                self._db = connect(self.path)
                version = self._db.execute("PRAGMA user_version").fetchone()[0]
                if version not in (0, SCHEMA_VERSION):
                    raise AuditError(
                        f"{self.path}: audit schema version {version}; this warden "
                        f"reads version {SCHEMA_VERSION}"
                    )
                self._db.executescript(_SCHEMA)
                self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self._init_meta()
        except sqlite3.DatabaseError as exc:
            raise AuditError(f"{self.path}: not a readable audit log ({exc})") from None

    def _check_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise AuditError(f"{self.path}: not a warden audit log (schema version {version})")

    def _init_meta(self) -> None:
        with write_transaction(self._db, self._lock) as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'log_id'").fetchone()
            if row is None:
                log_id = secrets.token_hex(8)
                db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("log_id", log_id), ("origin", f"warden/{log_id}")],
                )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- metadata ---------------------------------------------------------------------------

    def meta(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    @property
    def origin(self) -> str:
        origin = self.meta("origin")
        if origin is None:
            raise AuditError(f"{self.path}: the log has no origin")
        return origin

    # --- writing ----------------------------------------------------------------------------

    def append_batch(
        self, records: Sequence[Mapping[str, Any]], safe: Sequence[bool] | None = None
    ) -> tuple[int, int]:
        """Commit ``records`` as one batch; return (first seq, new size). Durable on return.

        ``safe[i]`` marks records already known to be fast-path JSON (see ``canonical``).
        """
        if not records:
            return self.size(), self.size()
        with write_transaction(self._db, self._lock) as db:
            row = db.execute("SELECT MAX(seq) FROM entries").fetchone()
            first = 0 if row[0] is None else int(row[0]) + 1
            batch_id = int(
                db.execute("SELECT COALESCE(MAX(id), -1) + 1 FROM batches").fetchone()[0]
            )
            cache: dict[tuple[int, int], bytes] = {}

            def get_node(level: int, idx: int) -> bytes:
                found = cache.get((level, idx))
                if found is not None:
                    return found
                if level == 0:
                    r = db.execute("SELECT leaf FROM entries WHERE seq = ?", (idx,)).fetchone()
                else:
                    r = db.execute(
                        "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, idx)
                    ).fetchone()
                if r is None:
                    raise AuditError(f"{self.path}: missing Merkle node ({level}, {idx})")
                value = _blob(r[0], f"node ({level}, {idx})")
                cache[(level, idx)] = value
                return value

            rows = []
            nodes = []
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
                cache[(0, seq)] = leaf
                level, idx, h = 0, seq, leaf
                while idx & 1:
                    h = node_hash(get_node(level, idx - 1), h)
                    level += 1
                    idx >>= 1
                    cache[(level, idx)] = h
                    nodes.append((level, idx, h))
            size = first + len(records)
            db.executemany("INSERT INTO entries (seq, leaf, data, batch) VALUES (?, ?, ?, ?)", rows)
            if nodes:
                db.executemany("INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)", nodes)
            root = root_from_nodes(size, get_node)
            db.execute(
                "INSERT INTO batches (id, first_seq, count, digest, root) VALUES (?, ?, ?, ?, ?)",
                (batch_id, first, len(records), digest.digest(), root),
            )
        return first, size

    def add_checkpoint(self, size: int, note: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO checkpoints (size, note) VALUES (?, ?)", (size, note)
            )

    # --- reading ----------------------------------------------------------------------------

    def size(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT MAX(seq) FROM entries").fetchone()
        return 0 if row[0] is None else int(row[0]) + 1

    def get_node(self, level: int, idx: int) -> bytes:
        """The stored perfect-subtree hash (level 0: leaf hashes); AuditError if absent."""
        with self._lock:
            if level == 0:
                r = self._db.execute("SELECT leaf FROM entries WHERE seq = ?", (idx,)).fetchone()
            else:
                r = self._db.execute(
                    "SELECT hash FROM nodes WHERE level = ? AND idx = ?", (level, idx)
                ).fetchone()
        if r is None:
            raise AuditError(f"{self.path}: missing Merkle node ({level}, {idx})")
        return _blob(r[0], f"node ({level}, {idx})")

    def root(self, size: int | None = None) -> bytes:
        """The tree root at ``size`` (default: now), from O(log n) stored nodes."""
        n = self.size() if size is None else size
        return root_from_nodes(n, self.get_node)

    def record(self, seq: int) -> bytes:
        with self._lock:
            r = self._db.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()
        if r is None:
            raise AuditError(f"no audit record {seq}")
        return _blob(r[0], f"entry {seq}")

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        n = self.size() if size is None else size
        return inclusion_proof(index, n, self.get_node)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        n = self.size() if new_size is None else new_size
        return consistency_proof(old_size, n, self.get_node)

    def scan_chunks(
        self, start: int = 0, chunk: int = 8192
    ) -> Iterator[list[tuple[int, bytes, bytes, int]]]:
        """Lists of (seq, leaf, data, batch) rows in seq order (never the whole log at once)."""
        nxt = start
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT seq, leaf, data, batch FROM entries WHERE seq >= ? ORDER BY seq "
                    "LIMIT ?",
                    (nxt, chunk),
                ).fetchall()
            if not rows:
                return
            yield rows
            nxt = rows[-1][0] + 1

    def scan(self, start: int = 0, chunk: int = 8192) -> Iterator[tuple[int, bytes, bytes, int]]:
        """(seq, leaf, data, batch) in seq order, read in chunks."""
        for rows in self.scan_chunks(start, chunk):
            yield from rows

    def node_rows(self, level: int, start: int, limit: int) -> list[tuple[int, bytes]]:
        """Stored nodes of one level (>= 1) from index ``start``, in index order."""
        with self._lock:
            rows = self._db.execute(
                "SELECT idx, hash FROM nodes WHERE level = ? AND idx >= ? ORDER BY idx LIMIT ?",
                (level, start, limit),
            ).fetchall()
        return [(_int(i, "node"), _blob(h, f"node ({level}, {i})")) for i, h in rows]

    def batches(self) -> Iterator[Batch]:
        nxt = 0
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, first_seq, count, digest, root FROM batches WHERE id >= ? "
                    "ORDER BY id LIMIT 4096",
                    (nxt,),
                ).fetchall()
            if not rows:
                return
            for r in rows:
                what = f"batch {r[0]}"
                yield (
                    _int(r[0], what),
                    _int(r[1], what),
                    _int(r[2], what),
                    _blob(r[3], what),
                    _blob(r[4], what),
                )
            nxt = int(rows[-1][0]) + 1

    def checkpoints(self) -> list[tuple[int, str]]:
        with self._lock:
            rows = self._db.execute("SELECT size, note FROM checkpoints ORDER BY size").fetchall()
        return [(int(s), str(n)) for s, n in rows]

    def latest_checkpoint(self) -> tuple[int, str] | None:
        with self._lock:
            r = self._db.execute(
                "SELECT size, note FROM checkpoints ORDER BY size DESC LIMIT 1"
            ).fetchone()
        return None if r is None else (int(r[0]), str(r[1]))

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

        Oldest first, or newest first with ``newest``; read in chunks, never the
        whole log. ``agent`` is the agent id (``agent.id`` in a decision, ``agent``
        in an outcome), ``tool`` is ``action.tool`` or ``tool``, ``effect`` is
        ``decision.effect`` (so only decisions have one), ``since`` an RFC 3339 UTC
        time compared as text (record times are fixed-width UTC). The SQL is made
        of the constant fragments in ``_FILTERS`` only; every value is a bound
        parameter. A record that is not valid JSON matches no filter.
        """
        given = {
            "type": record_type,
            "agent": agent,
            "session": session,
            "tool": tool,
            "effect": effect,
            "since": since,
        }
        terms = [_FILTERS[name] for name, value in given.items() if value is not None]
        params = [value for value in given.values() if value is not None]
        where = "seq < ?" if newest else "seq > ?"
        if terms:
            where += f" AND CASE WHEN json_valid({_TEXT}) THEN {' AND '.join(terms)} ELSE 0 END"
        sql = (
            f"SELECT seq, data FROM entries WHERE {where} "
            f"ORDER BY seq {'DESC' if newest else 'ASC'} LIMIT ?"
        )
        cursor = self.size() if newest else -1
        while True:
            with self._lock:
                rows = self._db.execute(sql, (cursor, *params, chunk)).fetchall()
            for seq, data in rows:
                yield int(seq), data if isinstance(data, bytes) else str(data).encode()
            if len(rows) < chunk:
                return
            cursor = int(rows[-1][0])


_TEXT: Final = "CAST(data AS TEXT)"
_FILTERS: Final = {
    "type": f"json_extract({_TEXT}, '$.type') = ?",
    "agent": (
        f"(CASE json_type({_TEXT}, '$.agent') WHEN 'object' "
        f"THEN json_extract({_TEXT}, '$.agent.id') ELSE json_extract({_TEXT}, '$.agent') END) = ?"
    ),
    "session": f"json_extract({_TEXT}, '$.session') = ?",
    "tool": (
        f"COALESCE(json_extract({_TEXT}, '$.action.tool'), json_extract({_TEXT}, '$.tool')) = ?"
    ),
    "effect": f"json_extract({_TEXT}, '$.decision.effect') = ?",
    "since": f"json_extract({_TEXT}, '$.time') >= ?",
}
"""SQL conditions over one stored record, for :meth:`AuditStore.select_records`."""
