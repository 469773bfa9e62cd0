"""Saga actions for the tests, and a worker that runs a saga in its own process.

Every action records itself in an effects file (SQLite), as a remote system
that honours idempotency keys would: ``calls`` gets a row for every call,
``effects`` one row per key (a repeated key changes nothing). Tests count both.

Usage: ``python saga_worker.py HOME EFFECTS SCENARIO``

- ``crash-after-step2``: steps 1 and 2 are recorded done, then the process
  exits before step 3.
- ``crash-in-step2``: step 2 takes effect, then the process exits before the
  step returns (the log still says ``started``).
- ``crash-in-undo2``: steps 1 and 2 are done, step 3 fails, and the
  compensation of step 2 takes effect, then the process exits before it is
  recorded.
- ``hold``: step 1, then print ``HELD <saga id>`` and wait for a line on
  stdin, then step 2; print ``completed`` or the error's class and message.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class Effects:
    """The outside world the saga acts on; each call opens its own connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        with self._db() as db:
            db.executescript(
                "CREATE TABLE IF NOT EXISTS calls "
                "(seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, key TEXT, pid INTEGER);"
                "CREATE TABLE IF NOT EXISTS effects (key TEXT PRIMARY KEY, name TEXT);"
            )

    def _db(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30.0)

    def record(self, name: str, key: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT INTO calls (name, key, pid) VALUES (?, ?, ?)", (name, key, os.getpid())
            )
            db.execute("INSERT OR IGNORE INTO effects (key, name) VALUES (?, ?)", (key, name))

    def calls(self) -> list[tuple[str, str]]:
        with self._db() as db:
            return db.execute("SELECT name, key FROM calls ORDER BY seq").fetchall()

    def effects(self) -> dict[str, str]:
        with self._db() as db:
            return dict(db.execute("SELECT key, name FROM effects").fetchall())


def actions(effects: Effects, crash: str | None = None) -> dict[str, Callable[..., Any]]:
    """The registry: reserve/release, charge/refund, ship/unship and failing ones.

    ``crash`` names an action that exits the process right after its effect.
    """

    def make(name: str) -> Callable[..., Any]:
        def act(idempotency_key: str, **args: Any) -> dict[str, Any]:
            effects.record(name, idempotency_key)
            if name == crash:
                os._exit(1)
            return {"done": name, "key": idempotency_key, "args": args}

        return act

    def decline(idempotency_key: str, **args: Any) -> None:
        effects.record("decline", idempotency_key)
        raise RuntimeError("card declined")

    def broken(idempotency_key: str, **args: Any) -> None:
        effects.record("broken", idempotency_key)
        raise ConnectionError("ledger unreachable")

    registry = {n: make(n) for n in ("reserve", "release", "charge", "refund", "ship", "unship")}
    registry["decline"] = decline
    registry["broken"] = broken
    return registry


def main() -> int:
    sys.path.insert(0, str(ROOT / "src"))
    from warden.runtime.saga import SagaStore

    home, effects_path, scenario = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    effects = Effects(effects_path)
    crash = {"crash-in-step2": "charge", "crash-in-undo2": "refund"}.get(scenario)
    store = SagaStore(home / "sagas.db", actions=actions(effects, crash), recover=False)
    with store.begin("checkout", key=f"order-{scenario}") as saga:
        print(f"BEGUN {saga.id}", flush=True)
        saga.step("reserve", {"sku": "A1"}, compensate="release")
        if scenario == "hold":
            print(f"HELD {saga.id}", flush=True)
            sys.stdin.readline()
            try:
                saga.step("charge", {"amount": 30}, compensate="refund")
            except Exception as exc:
                print(f"{type(exc).__name__}: {exc}", flush=True)
                raise
        else:
            saga.step("charge", {"amount": 30}, compensate="refund")
        if scenario == "crash-after-step2":
            os._exit(1)
        saga.step("decline" if scenario == "crash-in-undo2" else "ship", {"to": "Oslo"})
    print("completed", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
