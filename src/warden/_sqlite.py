"""SQLite helpers shared by the embedded stores (approvals, audit, trust, runtime, sagas)."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["connect", "open_store", "write_transaction"]


def connect(path: Path, timeout: float = 30.0) -> sqlite3.Connection:
    """Open (creating) a database in WAL mode with full fsync, for manual transactions.

    Switching a new file to WAL does not wait on SQLite's busy timeout: when
    several processes create the same file at once, one of them can get
    "database is locked" at once. That switch is retried here until ``timeout``.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout)
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        try:
            db.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                db.close()
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
    db.execute("PRAGMA synchronous=FULL")
    return db


@contextmanager
def write_transaction(db: sqlite3.Connection, lock: threading.Lock) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` (``ROLLBACK`` on any exception), one thread at a time.

    IMMEDIATE takes the write lock up front, so read-then-write sequences in the
    block are atomic across processes sharing the file.
    """
    with lock:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")


def open_store(
    path: Path, schema: str, version: int, what: str, error: type[Exception]
) -> sqlite3.Connection:
    """Open a store's file, creating ``schema`` in it; ``error`` names what went wrong.

    A file whose ``user_version`` is neither 0 (new) nor ``version`` belongs to
    another release of warden and is refused.
    """
    try:
        db = connect(path)
    except (OSError, sqlite3.Error) as exc:
        raise error(f"{path}: cannot open the {what}: {exc}") from None
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found not in (0, version):
            raise error(
                f"{path}: {what} has schema version {found}; this warden reads version {version}"
            )
        db.executescript(schema)
        db.execute(f"PRAGMA user_version={version}")
    except sqlite3.Error as exc:
        db.close()
        raise error(f"{path}: cannot open the {what}: {exc}") from None
    except BaseException:
        db.close()
        raise
    return db
