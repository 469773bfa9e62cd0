"""The SRE status store: what `warden status` shows from another process (docs/sre.md).

Breaker transitions and alerts are written as they happen; SLO snapshots at
most once a second. The file is a view for operators, not evidence (the audit
log is), so it is written with ``synchronous=NORMAL``: a crash may lose the
last second of it, never the audit records.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from warden._sqlite import open_store

__all__ = ["StatusStore", "default_status_path", "read_status"]

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS breakers (
    breaker TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL, since REAL NOT NULL,
    reason TEXT NOT NULL, PRIMARY KEY (breaker, key)
);
CREATE TABLE IF NOT EXISTS alerts (
    kind TEXT NOT NULL, name TEXT NOT NULL, key TEXT NOT NULL, state TEXT NOT NULL,
    at REAL NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (kind, name, key)
);
CREATE TABLE IF NOT EXISTS slos (
    slo TEXT NOT NULL, key TEXT NOT NULL, status TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (slo, key)
);
"""


def default_status_path() -> Path:
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "sre.db"


class StatusStore:
    """Writes the SRE layer's visible state; every method swallows nothing, callers decide."""

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else default_status_path()
        self._db = open_store(self.path, _SCHEMA, SCHEMA_VERSION, "SRE status store", OSError)
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._lock = threading.Lock()
        self._last_snapshot = 0.0

    def breaker(self, breaker: str, key: str, state: str, since: float, reason: str) -> None:
        self._run(
            "INSERT OR REPLACE INTO breakers VALUES (?, ?, ?, ?, ?)",
            (breaker, key, state, since, reason),
        )

    def alert(self, kind: str, name: str, key: str, state: str, detail: dict[str, Any]) -> None:
        self._run(
            "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?)",
            (kind, name, key, state, time.time(), json.dumps(detail, default=str)),
        )

    def slos_due(self) -> bool:
        """True at most once a second: time for another SLO snapshot."""
        now = time.monotonic()
        if now - self._last_snapshot < 1.0:
            return False
        self._last_snapshot = now
        return True

    def slos(self, rows: Iterable[dict[str, Any]]) -> None:
        """Write SLO status snapshots (callers throttle with ``slos_due``)."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                for row in rows:
                    self._db.execute(
                        "INSERT OR REPLACE INTO slos VALUES (?, ?, ?, ?)",
                        (row["slo"], row["key"], json.dumps(row, default=str), time.time()),
                    )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _run(self, sql: str, params: tuple[Any, ...]) -> None:
        with self._lock:
            self._db.execute(sql, params)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def read_status(path: str | os.PathLike[str]) -> dict[str, list[dict[str, Any]]]:
    """The stored status (read-only): breakers not closed, firing alerts, SLO snapshots."""
    uri = Path(path).absolute().as_uri() + "?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=5.0)
    try:
        breakers = [
            {"breaker": r[0], "key": r[1], "state": r[2], "since": r[3], "reason": r[4]}
            for r in db.execute(
                "SELECT breaker, key, state, since, reason FROM breakers "
                "WHERE state != 'closed' ORDER BY since"
            )
        ]
        alerts = [
            {"kind": r[0], "name": r[1], "key": r[2], "at": r[3], **json.loads(r[4])}
            for r in db.execute(
                "SELECT kind, name, key, at, detail FROM alerts WHERE state = 'firing' ORDER BY at"
            )
        ]
        slos = [json.loads(r[0]) for r in db.execute("SELECT status FROM slos ORDER BY slo, key")]
    finally:
        db.close()
    return {"breakers": breakers, "alerts": alerts, "slos": slos}
