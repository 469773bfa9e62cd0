"""Kills and ring ceilings, on disk and in memory (docs/runtime.md, "Kill switch", "Rings").

``RuntimeState`` keeps both in ``$WARDEN_HOME/runtime.db`` (SQLite, WAL,
synchronous=FULL) and in memory. The decision path reads the memory: a kill
check is three set or dict lookups. Writes go to disk first, then to memory,
so a process that restarts refuses what it refused before.

Other processes' writes are picked up by ``refresh()``: decisions call it at
most once per ``refresh_interval``, and one watcher thread per process calls
it for every live RuntimeState, so that kills from elsewhere (``warden kill``)
also cancel calls in flight when no decision is being made.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden.errors import RuntimeStateError

__all__ = ["Kill", "RingCeiling", "RuntimeState", "default_runtime_path"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS kills (
    scope TEXT NOT NULL CHECK (scope IN ('agent', 'session', 'all')),
    target TEXT NOT NULL,
    reason TEXT NOT NULL,
    killed_by TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (scope, target)
);
CREATE TABLE IF NOT EXISTS ring_ceilings (
    agent TEXT PRIMARY KEY,
    ring INTEGER NOT NULL CHECK (ring BETWEEN 0 AND 3),
    reason TEXT NOT NULL,
    set_by TEXT NOT NULL,
    at REAL NOT NULL
);
"""
MAX_TEXT: Final = 1024
SCHEMA_VERSION: Final = 1


def default_runtime_path() -> Path:
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "runtime.db"


@dataclass(frozen=True, slots=True)
class Kill:
    """An active kill: ``scope`` is agent, session or all; ``target`` is "" for all."""

    scope: str
    target: str
    reason: str
    by: str
    at: float

    def describe(self) -> str:
        return f"killed: {self.reason} (by {self.by})"

    def to_dict(self) -> dict[str, object]:
        """The JSON form `warden kill --list` and `warden status` print."""
        return {
            "scope": self.scope,
            "target": self.target or None,
            "reason": self.reason,
            "by": self.by,
            "at": self.at,
        }


@dataclass(frozen=True, slots=True)
class RingCeiling:
    """The least privileged ring an agent is held to until an operator changes it."""

    agent: str
    ring: int
    reason: str
    by: str
    at: float

    def to_dict(self) -> dict[str, object]:
        """The JSON form `warden ring list` and `warden status` print."""
        return {
            "agent": self.agent,
            "ring": self.ring,
            "reason": self.reason,
            "by": self.by,
            "at": self.at,
        }


class RuntimeState(Closing):
    """The kill switch and ring ceilings of one warden home. Thread-safe."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        refresh_interval: float = 0.1,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else default_runtime_path()
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: dict[str, Kill] = {}
        self._sessions: dict[str, Kill] = {}
        self._all: Kill | None = None
        self._ceilings: dict[str, RingCeiling] = {}
        self._announced: set[Kill] = set()
        self._listeners: list[Callable[[list[Kill]], None]] = []
        self.version = 0
        self._closed = False
        self._db = open_store(
            self.path, _SCHEMA, SCHEMA_VERSION, "runtime state", RuntimeStateError
        )
        try:
            self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._db.close()
            raise RuntimeStateError(f"{self.path}: cannot open the runtime state: {exc}") from None
        self._load()
        self._next_check = time.monotonic() + refresh_interval
        _watcher.add(self)

    # --- the decision path ---------------------------------------------------------------

    def killed(self, agent: object, session: object) -> Kill | None:
        """The kill that stops this agent or session, or None. O(1)."""
        if time.monotonic() >= self._next_check:
            self.refresh()
        if self._all is not None:
            return self._all
        if type(agent) is str:
            hit = self._agents.get(agent)
            if hit is not None:
                return hit
        if type(session) is str:
            return self._sessions.get(session)
        return None

    def ceiling(self, agent: object) -> int | None:
        """The ring ``agent`` is held to, or None (as of the last refresh: call after killed)."""
        found = self._ceilings.get(agent) if type(agent) is str else None
        return None if found is None else found.ring

    # --- writes --------------------------------------------------------------------------

    def kill(self, scope: str, target: str | None, reason: str, by: str) -> Kill:
        """Record a kill; returns it once it is on disk. ``target`` is ignored for ``all``.

        The kill takes effect in memory first, so decisions deny it from the start
        of this call; if writing it to disk fails, it stays in effect here and
        RuntimeStateError says it was not persisted.
        """
        if scope not in ("agent", "session", "all"):
            raise RuntimeStateError(f"a kill targets an agent, a session or all, not {scope!r}")
        name = "" if scope == "all" else _text(target, "target")
        record = Kill(scope, name, _text(reason, "reason"), _text(by, "by"), self._clock())
        with self._lock:
            if scope == "all":
                self._all = record
            elif scope == "agent":
                self._agents = {**self._agents, name: record}
            else:
                self._sessions = {**self._sessions, name: record}
        self._write(
            "INSERT OR REPLACE INTO kills VALUES (?, ?, ?, ?, ?)",
            (scope, name, record.reason, record.by, record.at),
        )
        return record

    def restore(self, scope: str, target: str | None) -> bool:
        """Lift a kill; False when there was none."""
        name = "" if scope == "all" else _text(target, "target")
        return self._write("DELETE FROM kills WHERE scope = ? AND target = ?", (scope, name)) > 0

    def set_ceiling(self, agent: str, ring: int, reason: str, by: str) -> RingCeiling:
        """Hold ``agent`` to ``ring`` (0 lifts any demotion in effect)."""
        if type(ring) is not int or not 0 <= ring <= 3:
            raise RuntimeStateError(f"a ring is an integer from 0 to 3, not {ring!r}")
        record = RingCeiling(
            _text(agent, "agent"), ring, _text(reason, "reason"), _text(by, "by"), self._clock()
        )
        self._write(
            "INSERT OR REPLACE INTO ring_ceilings VALUES (?, ?, ?, ?, ?)",
            (record.agent, ring, record.reason, record.by, record.at),
        )
        return record

    def demote(self, agent: str, reason: str, by: str = "warden") -> RingCeiling | None:
        """Hold ``agent`` to ring 3, unless it already is; the new ceiling, or None."""
        current = self._ceilings.get(agent)
        if current is not None and current.ring == 3:
            return None
        return self.set_ceiling(agent, 3, reason, by)

    def _write(self, sql: str, params: tuple[object, ...]) -> int:
        try:
            with write_transaction(self._db, self._lock) as db:
                count = db.execute(sql, params).rowcount
        except sqlite3.Error as exc:
            raise RuntimeStateError(f"{self.path}: cannot write the runtime state: {exc}") from None
        self._load()
        return int(count)

    # --- reading the file ----------------------------------------------------------------

    def refresh(self) -> bool:
        """Load other processes' changes, if any; True when something changed."""
        self._next_check = time.monotonic() + self.refresh_interval
        if self._closed:
            raise RuntimeStateError(f"{self.path}: the runtime state is closed")
        if not self._lock.acquire(blocking=False):
            return False  # a writer holds it and reloads when done
        try:
            dv = self._db.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error as exc:
            self._next_check = 0.0  # keep failing closed until it can be read again
            raise RuntimeStateError(f"{self.path}: cannot read the runtime state: {exc}") from None
        finally:
            self._lock.release()
        if dv == self._data_version:
            return False
        self._load()
        return True

    def _load(self) -> None:
        with self._lock:
            try:
                self._data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
                rows = self._db.execute("SELECT scope, target, reason, killed_by, at FROM kills")
                kills = [Kill(*r) for r in rows]
                rings = self._db.execute(
                    "SELECT agent, ring, reason, set_by, at FROM ring_ceilings"
                ).fetchall()
            except sqlite3.Error as exc:
                self._next_check = 0.0
                raise RuntimeStateError(
                    f"{self.path}: cannot read the runtime state: {exc}"
                ) from None
            before = set(self._announced)
            self._agents = {k.target: k for k in kills if k.scope == "agent"}
            self._sessions = {k.target: k for k in kills if k.scope == "session"}
            self._all = next((k for k in kills if k.scope == "all"), None)
            self._ceilings = {r[0]: RingCeiling(*r) for r in rings}
            self.version += 1
            new = [k for k in kills if k not in before]
            self._announced = set(kills)
            listeners = list(self._listeners)
        if new:
            for listener in listeners:
                listener(new)

    def on_kill(self, listener: Callable[[list[Kill]], None]) -> None:
        """Call ``listener`` with the kills that appear (from this process or another)."""
        with self._lock:
            self._listeners.append(listener)

    def kills(self) -> list[Kill]:
        self.refresh()
        out = [*self._agents.values(), *self._sessions.values()]
        if self._all is not None:
            out.append(self._all)
        return sorted(out, key=lambda k: k.at)

    def ceilings(self) -> list[RingCeiling]:
        self.refresh()
        return sorted(self._ceilings.values(), key=lambda c: c.at)

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    def __repr__(self) -> str:
        return f"RuntimeState({str(self.path)!r})"


def _text(value: object, what: str) -> str:
    if type(value) is not str or not value.strip():
        raise RuntimeStateError(f"`{what}` must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise RuntimeStateError(f"`{what}` is longer than {MAX_TEXT} characters")
    return value


class _Watcher:
    """One daemon thread per process: refreshes every live RuntimeState periodically."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self._states: weakref.WeakSet[RuntimeState] = weakref.WeakSet()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, state: RuntimeState) -> None:
        with self._lock:
            self._states.add(state)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="warden-runtime-watcher", daemon=True
                )
                self._thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            with self._lock:
                states = list(self._states)
            for state in states:
                if state._closed or time.monotonic() < state._next_check:
                    continue
                # A failure shows on the decision path (fail closed); keep watching.
                with contextlib.suppress(RuntimeStateError):
                    state.refresh()


_watcher = _Watcher()
