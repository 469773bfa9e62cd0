"""Labels that outlive a session: values written through a `stores` tool (docs/flows.md)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden.errors import FlowError

__all__ = ["FlowStore"]

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS labels (
    key TEXT PRIMARY KEY,
    labels TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
_CHUNK: Final = 500


class FlowStore(Closing):
    """A SQLite file mapping value keys to the labels they were stored with."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = open_store(path, _SCHEMA, SCHEMA_VERSION, "flow store", FlowError)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def remember(self, items: Mapping[str, frozenset[str]], now: float) -> None:
        """Add ``items``' labels to what each key already has."""
        if not items:
            return
        try:
            with write_transaction(self._db, self._lock) as db:
                keys = list(items)
                known = self._fetch(db, keys)
                db.executemany(
                    "INSERT INTO labels (key, labels, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET labels = excluded.labels, "
                    "updated_at = excluded.updated_at",
                    [
                        (k, "\n".join(sorted(items[k] | known.get(k, frozenset()))), now)
                        for k in keys
                    ],
                )
        except sqlite3.Error as exc:
            raise FlowError(f"{self.path}: cannot write the flow store: {exc}") from None

    def lookup(self, keys: list[str]) -> dict[str, frozenset[str]]:
        """The stored labels of those ``keys`` that have any."""
        try:
            with self._lock:
                return self._fetch(self._db, keys)
        except sqlite3.Error as exc:
            raise FlowError(f"{self.path}: cannot read the flow store: {exc}") from None

    @staticmethod
    def _fetch(db: sqlite3.Connection, keys: list[str]) -> dict[str, frozenset[str]]:
        out: dict[str, frozenset[str]] = {}
        for i in range(0, len(keys), _CHUNK):
            chunk = keys[i : i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for key, labels in db.execute(
                f"SELECT key, labels FROM labels WHERE key IN ({marks})", chunk
            ):
                out[key] = frozenset(labels.split("\n"))
        return out
