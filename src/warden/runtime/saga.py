"""Durable sagas: workflows whose completed steps are undone when a later one fails.

The spec is docs/runtime.md, "Sagas". States::

    saga   running ──► completed
              │
              └──► compensating ──► compensated
                        │
                        └──► failed         a compensation kept failing: an operator must act

    step   started ──► done ──► compensating ──► compensated
              │  │                  ▲
              │  └──────────────────┘          uncertain (crash, kill): it may have taken effect
              └──► error                       it raised, or was refused before it ran

Steps are numbered from 1. Step ``i`` of saga ``s`` is called with
``idempotency_key="s:i"`` and its compensation with ``"s:i:undo"``, every
time, in every process. A transition is committed (``synchronous=FULL``) only
after the call returns, and every UPDATE names the state it leaves, so a step
or compensation is never recorded done twice: a crash between a call and its
record re-runs the call with the same key. Every transition also appends a
row to ``events``, the saga's history.

Only the steps that are ``done``, and a step still ``started`` (a crash or a
kill left its effect unknown), are compensated, newest first; a step without
a compensation stays ``done`` (a ``started`` one becomes ``error``). A
compensation that raises is retried up to ``retries`` times (``backoff``,
doubling); if it still fails the saga is ``failed`` and the older steps are
left alone, because undoing them while a newer step stands would break the
reverse order.

**Lease.** A saga that a process is running has a holder: the node (host
name, boot id and PID namespace), the PID and its start time, a random token
and a heartbeat, refreshed every ``lease / 4`` seconds by a thread. Another
process treats the saga as abandoned, and recovers it, when the holder is
released, when the heartbeat is older than ``lease`` seconds, or when the
holder is on this node and its PID is gone (or is a zombie, or is another
process that reused the PID). Claiming a saga swaps the token in one
``BEGIN IMMEDIATE`` transaction, and every transition checks the token, so a
holder that loses its lease (it stalled past ``lease``) cannot record
anything afterwards: it gets SagaError.

**Governance.** With ``governor=``, each step is checked first as
``Action(tool=<step name>, args=<args>)`` in the Governor's current session
(``with gov.session(...)``: its id and agent; with none, the session is the
saga id), with ``context.saga`` = ``{id, name, step}``.
A refused step never runs: it is logged straight as ``error``, the saga
compensates, and ActionDenied or ApprovalRequired is raised. A step runs
inside the in-flight registry (``inflight=``, else ``governor.runtime.inflight``
when the Governor has one), so a kill cancels it: it stays ``started`` (its
effect is unknown), is compensated, and ActionKilled is raised.
Compensations are neither checked nor tracked in flight, so neither a policy
nor a kill can block an undo; each call is recorded as an outcome against
the decision that allowed the step it undoes.

**Idempotent begin.** ``begin(name, key=k)`` with a key already used: a saga
still running elsewhere raises SagaError; an abandoned one is recovered
first; a ``completed`` one is *replayed* (each ``step`` returns the recorded
result of the same step without calling anything); a ``compensated`` or
``failed`` one raises SagaError, because the key's outcome is settled.
"""

from __future__ import annotations

import builtins
import contextlib
import functools
import json
import math
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal, Protocol, cast, runtime_checkable

import msgspec
import rfc8785

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden.action import Action, Decision, Effect
from warden.errors import (
    ActionDenied,
    ActionKilled,
    ApprovalRequired,
    ConfigurationError,
    InvalidActionError,
    SagaError,
)
from warden.runtime.inflight import InFlight

if TYPE_CHECKING:
    from warden.governor import Governor
    from warden.store import FleetConfig

__all__ = [
    "DEFAULT_LEASE",
    "SAGA_STATES",
    "STEP_STATES",
    "Saga",
    "SagaBackend",
    "SagaEvent",
    "SagaRecord",
    "SagaStore",
    "StepRecord",
    "default_saga_path",
    "open_saga_store",
]

SagaState = Literal["running", "completed", "compensating", "compensated", "failed"]
StepState = Literal["started", "done", "error", "compensating", "compensated"]
SAGA_STATES: Final[tuple[SagaState, ...]] = (
    "running",
    "completed",
    "compensating",
    "compensated",
    "failed",
)
STEP_STATES: Final[tuple[StepState, ...]] = (
    "started",
    "done",
    "error",
    "compensating",
    "compensated",
)
DEFAULT_LEASE: Final = 30.0
SCHEMA_VERSION: Final = 1
_MAX_TEXT: Final = 2000
_UNDOABLE: Final = ("done", "started", "compensating")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS sagas (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key TEXT UNIQUE,
    state TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    error TEXT,
    compensation_error TEXT,
    agent TEXT NOT NULL,
    holder_node TEXT,
    holder_pid INTEGER,
    holder_start TEXT,
    holder_token TEXT,
    heartbeat REAL
);
CREATE INDEX IF NOT EXISTS sagas_state ON sagas (state, created_at);
CREATE TABLE IF NOT EXISTS steps (
    saga_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    action TEXT NOT NULL,
    args TEXT NOT NULL,
    compensate TEXT,
    compensate_args TEXT,
    state TEXT NOT NULL,
    result TEXT,
    error TEXT,
    decision_id TEXT,
    attempts INTEGER NOT NULL,
    started_at REAL,
    finished_at REAL,
    compensated_at REAL,
    PRIMARY KEY (saga_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    saga_id TEXT NOT NULL,
    step INTEGER,
    state TEXT NOT NULL,
    at REAL NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS events_saga ON events (saga_id, seq);
"""

_SAGA_COLUMNS: Final = (
    "id, name, key, state, created_at, updated_at, error, compensation_error, agent, "
    "holder_node, holder_pid, holder_start, holder_token, heartbeat"
)
_STEP_COLUMNS: Final = (
    "saga_id, idx, action, args, compensate, compensate_args, state, result, error, "
    "decision_id, attempts, started_at, finished_at, compensated_at"
)

# (saga id, lease token) of every lease this process holds: a holder row naming this very
# process is alive only while its pair is in here.
_PROCESS_HELD: set[tuple[str, str]] = set()
_PROCESS_LOCK: Final = threading.Lock()


def default_saga_path() -> Path:
    """``$WARDEN_HOME/sagas.db`` (``.warden/sagas.db`` when WARDEN_HOME is unset)."""
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "sagas.db"


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One step as logged. Times are store-clock Unix seconds.

    ``result`` is the step's return value when it was JSON data
    (``result_recorded``), else None. ``error`` is why the step failed, or the
    last compensation failure. ``attempts`` counts compensation calls, across
    processes. ``decision_id`` names the Governor's decision that allowed it.
    """

    saga_id: str
    index: int
    action: str
    args: Mapping[str, Any]
    compensate: str | None
    compensate_args: Mapping[str, Any] | None
    state: StepState
    result: Any
    result_recorded: bool
    error: str | None
    decision_id: str | None
    attempts: int
    started_at: float | None
    finished_at: float | None
    compensated_at: float | None

    @property
    def idempotency_key(self) -> str:
        return f"{self.saga_id}:{self.index}"

    @property
    def undo_key(self) -> str:
        return f"{self.saga_id}:{self.index}:undo"

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "action": self.action,
            "args": dict(self.args),
            "compensate": self.compensate,
            "compensate_args": (
                dict(self.compensate_args) if self.compensate_args is not None else None
            ),
            "state": self.state,
            "idempotency_key": self.idempotency_key,
            "result": self.result,
            "result_recorded": self.result_recorded,
            "error": self.error,
            "decision_id": self.decision_id,
            "attempts": self.attempts,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "compensated_at": self.compensated_at,
        }


@dataclass(frozen=True, slots=True)
class SagaEvent:
    """One transition in a saga's history; ``step`` is None for the saga's own."""

    seq: int
    step: int | None
    state: str
    at: float
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "step": self.step,
            "state": self.state,
            "at": self.at,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class SagaRecord:
    """One saga as logged.

    ``error`` says why it stopped running forward (a step failed, was denied
    or killed, the block raised, its process died); ``compensation_error`` why
    it is ``failed``. ``holder_pid``/``holder_node``/``heartbeat`` describe
    the lease while a process holds it. ``events`` is filled by ``get`` only.
    """

    id: str
    name: str
    key: str | None
    state: SagaState
    created_at: float
    updated_at: float
    error: str | None
    compensation_error: str | None
    agent: Mapping[str, Any]
    holder_node: str | None
    holder_pid: int | None
    heartbeat: float | None
    steps: tuple[StepRecord, ...]
    events: tuple[SagaEvent, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "key": self.key,
            "state": self.state,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "error": self.error,
            "compensation_error": self.compensation_error,
            "agent": dict(self.agent),
            "holder": (
                {"node": self.holder_node, "pid": self.holder_pid, "heartbeat": self.heartbeat}
                if self.holder_pid is not None
                else None
            ),
            "steps": [s.to_dict() for s in self.steps],
            "events": [e.to_dict() for e in self.events],
        }


class _Conn(Protocol):
    """What the engine uses of a connection inside a transaction (``?`` placeholders)."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Any: ...


@runtime_checkable
class SagaBackend(Protocol):
    """What applications and ``warden saga`` use of a saga store.

    ``SagaStore`` (SQLite, embedded) and ``warden.store.sagas.PostgresSagaStore``
    (fleet: shared by every replica) implement it with the same semantics and
    pass the same tests. A store that cannot be written raises SagaError.
    """

    def begin(self, name: str, *, key: str | None = None) -> Saga: ...

    def get(self, saga_id: str) -> SagaRecord: ...

    def list(self, state: str | None = None, limit: int = 200) -> builtins.list[SagaRecord]: ...

    def recover(self) -> builtins.list[str]: ...

    def close(self) -> None: ...

    def __enter__(self) -> SagaBackend: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def open_saga_store(
    home: str | os.PathLike[str],
    config: FleetConfig | None = None,
    **kwargs: Any,
) -> SagaStore:
    """The saga store the environment names: PostgreSQL or ``home/sagas.db``.

    PostgreSQL when ``WARDEN_DATABASE_URL`` is set (namespace from
    ``WARDEN_FLEET_NAMESPACE``); ``config`` defaults to ``FleetConfig.from_env()``.
    ``kwargs`` go to the store (``actions``, ``governor``, ``recover``, ...).
    """
    if config is None:
        from warden.store import FleetConfig

        config = FleetConfig.from_env()
    if config.database_url is not None:
        from warden.store.sagas import PostgresSagaStore

        return PostgresSagaStore(config.database_url, config.namespace, **kwargs)
    return SagaStore(Path(home) / "sagas.db", **kwargs)


class SagaStore(Closing):
    """The saga log in a SQLite file, and the registry of named steps and compensations.

    ``actions`` maps names to callables; each is called as
    ``fn(**args, idempotency_key=...)`` and must honour the key. Opening the
    store recovers abandoned sagas (``recover=False`` to skip, as the CLI
    does); a saga whose compensations are not all in ``actions`` is left for
    a process that has them. Thread-safe; one Saga is driven by one thread.
    """

    # row locks a shared database needs (PostgreSQL); SQLite's BEGIN IMMEDIATE locks the file
    _row_lock: ClassVar[str] = ""
    _claim_lock: ClassVar[str] = ""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
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
        registry = dict(actions or {})
        for name, fn in registry.items():
            if type(name) is not str or not name:
                raise ConfigurationError(f"saga action names must be non-empty text, not {name!r}")
            if not callable(fn):
                raise ConfigurationError(f"saga action `{name}` is not callable")
        if type(retries) is not int or retries < 0:
            raise ConfigurationError(f"retries must be a non-negative integer, not `{retries!r}`")
        for what, seconds, low in (("backoff", backoff, 0.0), ("lease", lease, 1e-3)):
            if not isinstance(seconds, int | float) or not low <= seconds < math.inf:
                raise ConfigurationError(
                    f"{what} must be a finite number of seconds, not `{seconds}`"
                )
        self.path = Path(path) if path is not None else default_saga_path()
        self.governor = governor
        self.retries = retries
        self.backoff = float(backoff)
        self.lease = float(lease)
        self.clock = clock
        self._actions = registry
        self._inflight = inflight
        self._lock = threading.Lock()
        self._held: set[tuple[str, str]] = set()  # (saga id, token) this store beats for
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._closed = False
        self._db: Any = self._open()
        if recover:
            self.recover()

    def _open(self) -> Any:
        return open_store(self.path, _SCHEMA, SCHEMA_VERSION, "saga log", SagaError)

    def __repr__(self) -> str:
        return f"SagaStore({str(self.path)!r})"

    def close(self) -> None:
        """Stop the heartbeat and close the file; sagas still held become recoverable."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            held, self._held = self._held, set()
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with _PROCESS_LOCK:
            _PROCESS_HELD.difference_update(held)
        with self._lock:
            self._db.close()

    # -- starting ---------------------------------------------------------

    def begin(self, name: str, *, key: str | None = None) -> Saga:
        """Start a saga (use it as a context manager); see the module docstring for ``key``."""
        if type(name) is not str or not name.strip():
            raise SagaError("a saga needs a non-empty name")
        if key is not None and (type(key) is not str or not key):
            raise SagaError("a saga key must be non-empty text")
        agent = self._agent()
        saga_id = "saga-" + secrets.token_hex(8)
        token = secrets.token_hex(16)
        now = self.clock()
        replay: tuple[StepRecord, ...] | None = None
        replay_id = ""
        abandoned: str | None = None
        self._hold(saga_id, token)  # first: a saga in the log is never unregistered here
        try:
            with self._tx() as db:
                if key is not None:
                    row = db.execute(
                        f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE key = ?{self._row_lock}", (key,)
                    ).fetchone()
                    if row is not None:
                        old_id, old_name, state = row[0], row[1], row[3]
                        if old_name != name:
                            raise SagaError(
                                f"key `{key}` belongs to saga `{old_id}` (`{old_name}`)"
                            )
                        if state == "completed":
                            replay_id = old_id
                            replay = tuple(_step(r) for r in self._step_rows(db, old_id))
                        elif state in ("compensated", "failed"):
                            raise SagaError(
                                f"saga `{old_id}` with key `{key}` already ended {state}; "
                                "a new attempt needs a new key"
                            )
                        elif not self._abandoned(row, now):
                            raise SagaError(
                                f"saga `{old_id}` with key `{key}` is still {state} "
                                f"(held by pid {row[10]})"
                            )
                        else:
                            abandoned = old_id
                if replay is None and abandoned is None:
                    db.execute(
                        f"INSERT INTO sagas ({_SAGA_COLUMNS}) VALUES "
                        "(?, ?, ?, 'running', ?, ?, NULL, NULL, ?, ?, ?, ?, ?, ?)",
                        (saga_id, name, key, now, now, _dumps(agent), *_holder(token), now),
                    )
                    _event(db, saga_id, None, "running", now, f"begun by pid {os.getpid()}")
        except BaseException:
            self._unhold(saga_id, token)
            raise
        if replay is not None or abandoned is not None:
            self._unhold(saga_id, token)
        if abandoned is not None:
            if not self._recover_one(abandoned):
                raise SagaError(
                    f"saga `{abandoned}` with key `{key}` was abandoned by its process; "
                    "a store with its compensations must recover it first"
                )
            state = self.get(abandoned).state
            raise SagaError(
                f"saga `{abandoned}` with key `{key}` was abandoned by its process and is now "
                f"{state}; a new attempt needs a new key"
            )
        if replay is not None:
            return Saga(self, replay_id, name, key, None, replay)
        return Saga(self, saga_id, name, key, token, None)

    # -- reading ----------------------------------------------------------

    def get(self, saga_id: str) -> SagaRecord:
        """The saga with that id, its steps and its history; SagaError if there is none."""
        with self._reading() as db:
            row = db.execute(
                f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE id = ?", (saga_id,)
            ).fetchone()
            if row is None:
                raise SagaError(f"no saga `{saga_id}`")
            steps = tuple(_step(r) for r in self._step_rows(db, saga_id))
            events = tuple(
                SagaEvent(seq=e[0], step=e[1], state=e[2], at=e[3], detail=e[4])
                for e in db.execute(
                    "SELECT seq, step, state, at, detail FROM events "
                    "WHERE saga_id = ? ORDER BY seq",
                    (saga_id,),
                ).fetchall()
            )
        return _saga(row, steps, events)

    def list(self, state: str | None = None, limit: int = 200) -> list[SagaRecord]:
        """Sagas, newest first, optionally only those in one state; without their history."""
        if state is not None and state not in SAGA_STATES:
            raise SagaError(f"unknown saga state `{state}` (known: {', '.join(SAGA_STATES)})")
        if type(limit) is not int or limit < 1:
            raise SagaError(f"limit must be a positive integer, not `{limit!r}`")
        query = f"SELECT {_SAGA_COLUMNS} FROM sagas"
        params: tuple[Any, ...] = ()
        if state is not None:
            query += " WHERE state = ?"
            params = (state,)
        query += " ORDER BY created_at DESC, id LIMIT ?"
        with self._reading() as db:
            rows = db.execute(query, (*params, limit)).fetchall()
            return [_saga(r, tuple(_step(s) for s in self._step_rows(db, r[0])), ()) for r in rows]

    # -- recovery ---------------------------------------------------------

    def recover(self) -> builtins.list[str]:
        """Finish every abandoned ``running`` or ``compensating`` saga; the ids handled.

        A ``running`` saga whose holder is gone counts as failed and is
        compensated. Sagas held by a live process, and sagas whose
        compensations this store does not have, are skipped.
        """
        with self._reading() as db:
            ids = [
                r[0]
                for r in db.execute(
                    "SELECT id FROM sagas WHERE state IN ('running', 'compensating') "
                    "ORDER BY created_at, id"
                ).fetchall()
            ]
        return [saga_id for saga_id in ids if self._recover_one(saga_id)]

    def _recover_one(self, saga_id: str) -> bool:
        token = secrets.token_hex(16)
        claimed = False
        self._hold(saga_id, token)  # first: once claimed, the row names a live holder
        try:
            claimed, agent = self._claim(saga_id, token, self.clock())
        finally:
            if not claimed:
                self._unhold(saga_id, token)
        if not claimed:
            return False
        try:
            self._compensate(saga_id, token, agent)
        finally:
            self._release(saga_id, token)
        return True

    def _claim(self, saga_id: str, token: str, now: float) -> tuple[bool, Mapping[str, Any]]:
        """Take over an abandoned saga's lease; whether it was taken, and the saga's agent."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_SAGA_COLUMNS} FROM sagas WHERE id = ?{self._claim_lock}", (saga_id,)
            ).fetchone()
            if row is None or row[3] not in ("running", "compensating"):
                return False, {}
            if not self._abandoned(row, now):
                return False, {}
            steps = [_step(r) for r in self._step_rows(db, saga_id)]
            if any(
                s.compensate is not None and s.compensate not in self._actions
                for s in steps
                if s.state in _UNDOABLE
            ):
                return False, {}
            why = _abandon_reason(row, now, self.lease)
            db.execute(
                "UPDATE sagas SET state = 'compensating', error = COALESCE(error, ?), "
                "holder_node = ?, holder_pid = ?, holder_start = ?, holder_token = ?, "
                "heartbeat = ?, updated_at = ? WHERE id = ?",
                (why, *_holder(token), now, now, saga_id),
            )
            _event(db, saga_id, None, "compensating", now, f"recovered by pid {os.getpid()}: {why}")
        return True, _loads(row[8])

    def _abandoned(self, row: tuple[Any, ...], now: float) -> bool:
        node, pid, start, token, heartbeat = row[9], row[10], row[11], row[12], row[13]
        if token is None or heartbeat is None:
            return True
        if now - heartbeat > self.lease:
            return True
        if node != _node_id() or type(pid) is not int:
            return False  # another machine or container: only the heartbeat can tell
        if pid == os.getpid():
            with _PROCESS_LOCK:
                return (row[0], token) not in _PROCESS_HELD
        return not _alive(pid, start)

    # -- running steps (called by Saga) -------------------------------------

    def _lookup(self, name: object, what: str) -> Callable[..., Any]:
        fn = self._actions.get(name) if type(name) is str else None
        if fn is None:
            known = ", ".join(f"`{n}`" for n in sorted(self._actions)) or "none"
            raise SagaError(f"no {what} `{name}` in this saga store (known: {known})")
        return fn

    def _agent(self) -> Mapping[str, Any]:
        if self.governor is None:
            return {}
        return self.governor.current_session().agent

    def _inflight_now(self) -> InFlight | None:
        if self._inflight is not None:
            return self._inflight
        found = getattr(getattr(self.governor, "runtime", None), "inflight", None)
        return found if isinstance(found, InFlight) else None

    def _start_step(
        self,
        saga_id: str,
        token: str,
        index: int,
        action: str,
        args: str,
        compensate: str | None,
        compensate_args: str | None,
        decision_id: str | None,
        refused: str | None = None,
    ) -> None:
        """Insert the step as ``started``, or straight as ``error`` when it was ``refused``."""

        def apply(db: _Conn, now: float) -> None:
            db.execute(
                f"INSERT INTO steps ({_STEP_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, NULL, ?, ?, 0, ?, ?, NULL)",
                (
                    saga_id,
                    index,
                    action,
                    args,
                    compensate,
                    compensate_args,
                    "started" if refused is None else "error",
                    refused,
                    decision_id,
                    now,
                    None if refused is None else now,
                ),
            )
            _event(db, saga_id, index, "started" if refused is None else "error", now, refused)

        self._held_write(saga_id, token, apply)

    def _finish_step(
        self, saga_id: str, token: str, index: int, result: str | None, error: str | None
    ) -> None:
        """``started`` -> ``done`` (with its result) or ``error``."""
        to = "done" if error is None else "error"

        def apply(db: _Conn, now: float) -> None:
            _move(
                db, saga_id, index, ("started",), to, now, "finished_at", result=result, error=error
            )

        self._held_write(saga_id, token, apply)

    def _note_step(self, saga_id: str, token: str, index: int, note: str) -> None:
        """Say why a step stays ``started`` (killed, interrupted); not a transition."""

        def apply(db: _Conn, now: float) -> None:
            db.execute(
                "UPDATE steps SET error = ? WHERE saga_id = ? AND idx = ? AND state = 'started'",
                (note, saga_id, index),
            )

        self._held_write(saga_id, token, apply)

    def _complete(self, saga_id: str, token: str) -> None:
        def apply(db: _Conn, now: float) -> None:
            _move_saga(db, saga_id, ("running",), "completed", now, None)

        self._held_write(saga_id, token, apply)

    def _fail(self, saga_id: str, token: str, reason: str) -> SagaState:
        """``running`` -> ``compensating``, then compensate; the state it ends in."""
        agent: Mapping[str, Any] = {}

        def apply(db: _Conn, now: float) -> None:
            nonlocal agent
            _move_saga(db, saga_id, ("running",), "compensating", now, reason)
            db.execute("UPDATE sagas SET error = ? WHERE id = ?", (_clip(reason), saga_id))
            row = db.execute("SELECT agent FROM sagas WHERE id = ?", (saga_id,)).fetchone()
            agent = _loads(row[0])

        self._held_write(saga_id, token, apply)
        return self._compensate(saga_id, token, agent)

    # -- compensation -------------------------------------------------------

    def _compensate(self, saga_id: str, token: str, agent: Mapping[str, Any]) -> SagaState:
        """Undo the saga's steps, newest first; ``compensated`` or ``failed``."""
        with self._reading() as db:
            steps = [_step(r) for r in self._step_rows(db, saga_id)]
        for step in reversed(steps):
            if step.state not in _UNDOABLE:
                continue
            if step.compensate is None:
                if step.state == "started":
                    self._held_write(saga_id, token, functools.partial(_unfinished, saga_id, step))
                continue
            if step.state != "compensating":
                self._held_write(saga_id, token, functools.partial(_undoing, saga_id, step))
            failure = self._undo(saga_id, token, step, agent)
            if failure is not None:

                def failed(db: _Conn, now: float, why: str = failure) -> None:
                    _move_saga(db, saga_id, ("compensating",), "failed", now, why)
                    db.execute(
                        "UPDATE sagas SET compensation_error = ? WHERE id = ?", (why, saga_id)
                    )
                    _clear_holder(db, saga_id)

                self._held_write(saga_id, token, failed)
                return "failed"

        def done(db: _Conn, now: float) -> None:
            _move_saga(db, saga_id, ("compensating",), "compensated", now, None)
            _clear_holder(db, saga_id)

        self._held_write(saga_id, token, done)
        return "compensated"

    def _undo(
        self, saga_id: str, token: str, step: StepRecord, agent: Mapping[str, Any]
    ) -> str | None:
        """Run one compensation with retries; None once it is recorded, else why it failed."""
        assert step.compensate is not None  # the caller checked
        fn = self._actions.get(step.compensate)
        args = dict(step.compensate_args or {})
        action = decision = None
        if self.governor is not None:
            action = Action(
                tool=step.compensate,
                args=args,
                agent=agent,
                session=saga_id,
                context={"saga": {"id": saga_id, "step": step.index, "compensation": True}},
            )
            decision = Decision(
                Effect.ALLOW,
                reasons=(f"compensation of step {step.index} of saga {saga_id}: no policy check",),
                id=step.decision_id or os.urandom(16).hex(),
            )
        last = "it was never called"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            if fn is None:
                last = f"no compensation `{step.compensate}` in this saga store"
                break
            started = perf_counter_ns()
            try:
                result = fn(**args, idempotency_key=step.undo_key)
            except Exception as exc:  # noqa: BLE001 - any failure is retried, then reported
                last = _describe(exc)
                if action is not None and decision is not None:
                    assert self.governor is not None
                    self.governor.record_outcome(
                        action, decision, "error", perf_counter_ns() - started, error=exc
                    )

                def attempt_failed(db: _Conn, now: float, why: str = last) -> None:
                    db.execute(
                        "UPDATE steps SET attempts = attempts + 1, error = ? "
                        "WHERE saga_id = ? AND idx = ? AND state = 'compensating'",
                        (_clip(why), saga_id, step.index),
                    )
                    _event(db, saga_id, step.index, "compensating", now, f"attempt failed: {why}")

                self._held_write(saga_id, token, attempt_failed)
                continue
            if action is not None and decision is not None:
                assert self.governor is not None
                self.governor.record_outcome(
                    action, decision, "ok", perf_counter_ns() - started, result
                )

            def undone(db: _Conn, now: float) -> None:
                _move(
                    db,
                    saga_id,
                    step.index,
                    ("compensating",),
                    "compensated",
                    now,
                    "compensated_at",
                    attempts=True,
                )

            self._held_write(saga_id, token, undone)
            return None
        tries = self.retries + 1
        return f"compensation `{step.compensate}` of step {step.index} failed {tries} times: {last}"

    # -- leases ---------------------------------------------------------------

    def _hold(self, saga_id: str, token: str) -> None:
        with _PROCESS_LOCK:
            _PROCESS_HELD.add((saga_id, token))
        with self._lock:
            self._held.add((saga_id, token))
            if self._beat is None and not self._closed:
                self._beat = threading.Thread(
                    target=self._heartbeat, name=f"warden-saga-lease {self.path}", daemon=True
                )
                self._beat.start()

    def _unhold(self, saga_id: str, token: str) -> None:
        """Forget a lease in this process (its row, if any, is then abandoned)."""
        with _PROCESS_LOCK:
            _PROCESS_HELD.discard((saga_id, token))
        with self._lock:
            self._held.discard((saga_id, token))

    def _release(self, saga_id: str, token: str) -> None:
        """Drop the lease (a no-op for the row once another process has taken it over)."""
        self._unhold(saga_id, token)
        if self._closed:
            return
        # a broken file: the lease runs out instead
        with contextlib.suppress(SagaError), self._tx() as db:
            db.execute(
                "UPDATE sagas SET holder_node = NULL, holder_pid = NULL, holder_start = NULL, "
                "holder_token = NULL WHERE id = ? AND holder_token = ?",
                (saga_id, token),
            )

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.lease / 4):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            with contextlib.suppress(SagaError), self._tx() as db:  # the next beat tries again
                now = self.clock()
                for saga_id, token in held:
                    db.execute(
                        "UPDATE sagas SET heartbeat = ? WHERE id = ? AND holder_token = ?",
                        (now, saga_id, token),
                    )

    # -- SQLite -------------------------------------------------------------

    @contextlib.contextmanager
    def _tx(self) -> Iterator[_Conn]:
        if self._closed:
            raise SagaError(f"{self.path}: the saga log is closed")
        try:
            with write_transaction(self._db, self._lock) as db:
                yield db
        except sqlite3.Error as exc:
            raise SagaError(f"{self.path}: cannot write the saga log: {exc}") from None

    @contextlib.contextmanager
    def _reading(self) -> Iterator[_Conn]:
        with self._lock:
            if self._closed:
                raise SagaError(f"{self.path}: the saga log is closed")
            try:
                yield self._db
            except sqlite3.Error as exc:
                raise SagaError(f"{self.path}: cannot read the saga log: {exc}") from None

    def _held_write(self, saga_id: str, token: str, apply: Callable[[_Conn, float], None]) -> None:
        """Run ``apply`` in one transaction if this holder still has the lease; renew it."""
        with self._tx() as db:
            row = db.execute(
                f"SELECT holder_token FROM sagas WHERE id = ?{self._row_lock}", (saga_id,)
            ).fetchone()
            if row is None or row[0] != token:
                raise SagaError(
                    f"saga `{saga_id}` is no longer held by this process "
                    "(its lease ran out and another process took it over)"
                )
            now = self.clock()
            apply(db, now)
            db.execute(
                "UPDATE sagas SET heartbeat = ?, updated_at = ? WHERE id = ?", (now, now, saga_id)
            )

    @staticmethod
    def _step_rows(db: _Conn, saga_id: str) -> builtins.list[tuple[Any, ...]]:
        rows: builtins.list[tuple[Any, ...]] = db.execute(
            f"SELECT {_STEP_COLUMNS} FROM steps WHERE saga_id = ? ORDER BY idx", (saga_id,)
        ).fetchall()
        return rows


class Saga:
    """One running saga: call ``step`` inside ``with store.begin(...) as saga``.

    Leaving the block normally completes the saga; leaving it with an
    exception (from a step or not) compensates, then lets the exception
    through. A saga begun with the key of a completed saga *replays*:
    ``replaying`` is True and ``step`` returns the recorded results.
    """

    def __init__(
        self,
        store: SagaStore,
        saga_id: str,
        name: str,
        key: str | None,
        token: str | None,
        replay: tuple[StepRecord, ...] | None,
    ) -> None:
        self.id = saga_id
        self.name = name
        self.key = key
        self._store = store
        self._token = token
        self._replay = replay
        self._state: SagaState = "completed" if replay is not None else "running"
        self._next = 1

    def __repr__(self) -> str:
        return f"Saga({self.id}, {self.name}, {self._state})"

    @property
    def state(self) -> SagaState:
        """The state as this process last recorded it."""
        return self._state

    @property
    def replaying(self) -> bool:
        return self._replay is not None

    def record(self) -> SagaRecord:
        """The saga as logged now."""
        return self._store.get(self.id)

    def step(
        self,
        action: str,
        args: Mapping[str, Any] | None = None,
        *,
        compensate: str | None = None,
        compensate_args: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run ``action`` as the next step and return its result.

        ``compensate`` names the step's undo, called with ``compensate_args``
        (default: the step's own ``args``). Unknown names and arguments that
        are not JSON raise SagaError before anything runs. If the step raises,
        is denied or needs approval (with a Governor) or is killed, the
        completed steps are compensated and the exception (ActionDenied,
        ApprovalRequired, ActionKilled or the step's own) is raised.
        """
        store = self._store
        fn = store._lookup(action, "action")
        if compensate is not None:
            store._lookup(compensate, "compensation")
        elif compensate_args is not None:
            raise SagaError(f"step `{action}` has compensate_args but no compensate")
        call_args = {} if args is None else args
        args_json = _json_args(call_args, f"arguments of step `{action}`")
        undo_json = None
        if compensate is not None:
            undo_args = call_args if compensate_args is None else compensate_args
            undo_json = _json_args(undo_args, f"compensate_args of step `{action}`")
        index = self._next
        if self._replay is not None:
            self._next += 1
            return self._replayed(index, action, args_json)
        if self._state != "running" or self._token is None:
            raise SagaError(f"saga `{self.id}` is {self._state} and takes no more steps")
        token = self._token
        gov = store.governor
        act: Action | None = None
        decision: Decision | None = None
        agent_id: str | None = None
        if gov is not None:
            sess = gov.current_session()
            raw_id = sess.agent.get("id")
            agent_id = raw_id if isinstance(raw_id, str) else None
            saga_ctx = {"id": self.id, "name": self.name, "step": index}
            try:
                act = Action(
                    tool=action,
                    args=json.loads(args_json),
                    agent=sess.agent,
                    # The caller's session (with identity: its verified session), else the saga.
                    session=sess.id if sess.id is not None else self.id,
                    context={**sess.context, "saga": saga_ctx},
                )
            except InvalidActionError as exc:
                raise SagaError(f"step `{action}` is not a valid action: {exc}") from None
            decision = gov.check(act)
            if decision.effect is not Effect.ALLOW:
                gov.record_outcome(act, decision, "denied", 0)
                blocked: ActionDenied | ApprovalRequired = (
                    ApprovalRequired(decision)
                    if decision.effect is Effect.REQUIRE_APPROVAL
                    else ActionDenied(decision)
                )
                self._next += 1
                refused = f"refused by the governor: {blocked}"
                store._start_step(
                    self.id,
                    token,
                    index,
                    action,
                    args_json,
                    compensate,
                    undo_json,
                    decision.id,
                    refused=_clip(refused),
                )
                self._abort(f"step {index} `{action}` was {refused}", blocked)
                raise blocked
        store._start_step(
            self.id,
            token,
            index,
            action,
            args_json,
            compensate,
            undo_json,
            decision.id if decision is not None else None,
        )
        self._next += 1
        inflight = store._inflight_now()
        started = perf_counter_ns()
        killed: str | None = None
        try:
            if inflight is None:
                result = fn(**json.loads(args_json), idempotency_key=f"{self.id}:{index}")
            else:
                with inflight.track(agent_id, self.id, action) as call:
                    try:
                        if call.cancelled:
                            raise _Cancelled
                        result = fn(**json.loads(args_json), idempotency_key=f"{self.id}:{index}")
                    finally:
                        killed = (call.reason or "killed") if call.cancelled else None
        except BaseException as exc:
            elapsed = perf_counter_ns() - started
            if killed is None and isinstance(exc, Exception):
                if act is not None and decision is not None and gov is not None:
                    gov.record_outcome(act, decision, "error", elapsed, error=exc)
                why = _describe(exc)
                store._finish_step(self.id, token, index, None, _clip(why))
                self._abort(f"step {index} `{action}` raised {why}", exc)
                raise
            if act is not None and decision is not None and gov is not None:
                gov.record_outcome(act, decision, "killed", elapsed, error=exc)
            if killed is None:  # interrupted (KeyboardInterrupt, SystemExit): outcome unknown
                store._note_step(self.id, token, index, f"interrupted: {_describe(exc)}")
                self._abort(f"step {index} `{action}` was interrupted: {_describe(exc)}", exc)
                raise
            cause = None if isinstance(exc, _Cancelled) else exc
            raise self._killed(index, action, killed, decision, exc) from cause
        elapsed = perf_counter_ns() - started
        if killed is not None:
            if act is not None and decision is not None and gov is not None:
                gov.record_outcome(act, decision, "killed", elapsed)
            raise self._killed(index, action, killed, decision, None)
        if act is not None and decision is not None and gov is not None:
            gov.record_outcome(act, decision, "ok", elapsed, result)
        store._finish_step(self.id, token, index, _result_json(result), None)
        return result

    def _killed(
        self,
        index: int,
        action: str,
        reason: str,
        decision: Decision | None,
        exc: BaseException | None,
    ) -> ActionKilled:
        """Compensate a step a kill cancelled (it stays ``started``: its effect is unknown)."""
        assert self._token is not None
        self._store._note_step(self.id, self._token, index, _clip(reason))
        killed = ActionKilled(  # the Governor's form: its decision, turned into a deny
            Decision(Effect.DENY, reasons=(reason,))
            if decision is None
            else msgspec.structs.replace(
                decision, effect=Effect.DENY, reasons=(*decision.reasons, reason)
            )
        )
        self._abort(f"step {index} `{action}` was killed: {reason}", killed)
        return killed

    def _abort(self, reason: str, exc: BaseException) -> None:
        """Compensate; when that fails, say so on the exception about to be raised."""
        if self._state != "running" or self._token is None:
            return
        self._state = "compensating"
        self._state = self._store._fail(self.id, self._token, reason)
        if self._state == "failed":
            exc.add_note(
                f"saga `{self.id}` could not be compensated and is failed; "
                f"see `warden saga show {self.id}`"
            )

    def _replayed(self, index: int, action: str, args_json: str) -> Any:
        assert self._replay is not None
        if index > len(self._replay):
            raise SagaError(
                f"saga `{self.id}` (key `{self.key}`) completed with {len(self._replay)} "
                f"steps; step {index} `{action}` is not one of them"
            )
        rec = self._replay[index - 1]
        if rec.action != action or _canonical(rec.args) != _canonical(json.loads(args_json)):
            raise SagaError(
                f"step {index} `{action}` does not match step {index} `{rec.action}` "
                f"of completed saga `{self.id}` (key `{self.key}`)"
            )
        if not rec.result_recorded:
            raise SagaError(
                f"the result of step {index} `{action}` of saga `{self.id}` was not JSON "
                "and cannot be replayed"
            )
        return rec.result

    def __enter__(self) -> Saga:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        token = self._token
        if token is None:  # replaying: nothing to record
            return
        try:
            if self._state == "running":
                if exc is None:
                    self._store._complete(self.id, token)
                    self._state = "completed"
                else:
                    self._abort(f"the saga block raised {_describe(exc)}", exc)
        finally:
            self._token = None
            self._store._release(self.id, token)


class _Cancelled(Exception):
    """The call was cancelled before the step function started."""


# -- rows and helpers ---------------------------------------------------------


def _holder(token: str) -> tuple[str, int, str | None, str]:
    pid = os.getpid()
    stat = _proc_stat(pid)
    return (_node_id(), pid, stat[1] if stat else None, token)


def _unfinished(saga_id: str, step: StepRecord, db: _Conn, now: float) -> None:
    """A ``started`` step with no compensation: nothing to undo, so it ends as ``error``."""
    why = "it did not finish (crash, kill or interrupt) and has no compensation"
    _move(db, saga_id, step.index, ("started",), "error", now, "finished_at", error=why)


def _undoing(saga_id: str, step: StepRecord, db: _Conn, now: float) -> None:
    _move(db, saga_id, step.index, (step.state,), "compensating", now)


def _clear_holder(db: _Conn, saga_id: str) -> None:
    db.execute(
        "UPDATE sagas SET holder_node = NULL, holder_pid = NULL, holder_start = NULL, "
        "holder_token = NULL WHERE id = ?",
        (saga_id,),
    )


def _move(
    db: _Conn,
    saga_id: str,
    index: int,
    from_states: tuple[str, ...],
    to: str,
    now: float,
    stamp: str | None = None,
    *,
    result: str | None = None,
    error: str | None = None,
    attempts: bool = False,
) -> None:
    """One step transition, refused unless the step is in one of ``from_states``."""
    sets = ["state = ?", "result = COALESCE(?, result)", "error = COALESCE(?, error)"]
    if stamp is not None:
        sets.append(f"{stamp} = ?")
    if attempts:
        sets.append("attempts = attempts + 1")
    marks = ", ".join("?" for _ in from_states)
    params: list[Any] = [to, result, error]
    if stamp is not None:
        params.append(now)
    cur = db.execute(
        f"UPDATE steps SET {', '.join(sets)} WHERE saga_id = ? AND idx = ? AND state IN ({marks})",
        (*params, saga_id, index, *from_states),
    )
    if cur.rowcount != 1:
        row = db.execute(
            "SELECT state FROM steps WHERE saga_id = ? AND idx = ?", (saga_id, index)
        ).fetchone()
        found = row[0] if row else "missing"
        raise SagaError(
            f"step {index} of saga `{saga_id}` is {found}, not {' or '.join(from_states)}; "
            f"it is not recorded {to}"
        )
    _event(db, saga_id, index, to, now, error)


def _move_saga(
    db: _Conn,
    saga_id: str,
    from_states: tuple[str, ...],
    to: str,
    now: float,
    detail: str | None,
) -> None:
    marks = ", ".join("?" for _ in from_states)
    cur = db.execute(
        f"UPDATE sagas SET state = ? WHERE id = ? AND state IN ({marks})",
        (to, saga_id, *from_states),
    )
    if cur.rowcount != 1:
        row = db.execute("SELECT state FROM sagas WHERE id = ?", (saga_id,)).fetchone()
        found = row[0] if row else "missing"
        raise SagaError(f"saga `{saga_id}` is {found}, not {' or '.join(from_states)}")
    _event(db, saga_id, None, to, now, _clip(detail) if detail else None)


def _event(
    db: _Conn,
    saga_id: str,
    step: int | None,
    state: str,
    at: float,
    detail: str | None,
) -> None:
    db.execute(
        "INSERT INTO events (saga_id, step, state, at, detail) VALUES (?, ?, ?, ?, ?)",
        (saga_id, step, state, at, detail),
    )


def _step(r: tuple[Any, ...]) -> StepRecord:
    return StepRecord(
        saga_id=r[0],
        index=r[1],
        action=r[2],
        args=_loads(r[3]),
        compensate=r[4],
        compensate_args=_loads(r[5]) if r[5] is not None else None,
        state=r[6],
        result=json.loads(r[7]) if r[7] is not None else None,
        result_recorded=r[7] is not None,
        error=r[8],
        decision_id=r[9],
        attempts=r[10],
        started_at=r[11],
        finished_at=r[12],
        compensated_at=r[13],
    )


def _saga(
    r: tuple[Any, ...], steps: tuple[StepRecord, ...], events: tuple[SagaEvent, ...]
) -> SagaRecord:
    return SagaRecord(
        id=r[0],
        name=r[1],
        key=r[2],
        state=r[3],
        created_at=r[4],
        updated_at=r[5],
        error=r[6],
        compensation_error=r[7],
        agent=_loads(r[8]),
        holder_node=r[9],
        holder_pid=r[10],
        heartbeat=r[13] if r[12] is not None else None,
        steps=steps,
        events=events,
    )


def _json_args(args: object, what: str) -> str:
    """Canonical JSON text of step arguments; SagaError if they are not JSON data."""
    if not isinstance(args, Mapping) or any(type(k) is not str for k in args):
        raise SagaError(f"{what} must be a mapping with text keys")
    if "idempotency_key" in args:
        raise SagaError(f"{what} must not contain `idempotency_key`: warden passes it")
    try:
        _canonical(dict(args))  # refuses what JSON cannot carry exactly (NaN, 2**60, bytes)
    except (TypeError, ValueError, rfc8785.CanonicalizationError, RecursionError) as exc:
        raise SagaError(f"{what} are not JSON data: {exc}") from None
    return json.dumps(dict(args), sort_keys=True, ensure_ascii=False)


def _canonical(value: Any) -> bytes:
    return bytes(rfc8785.dumps(value))


def _result_json(result: object) -> str | None:
    try:
        _canonical(result)
    except (TypeError, ValueError, rfc8785.CanonicalizationError, RecursionError):
        return None
    return json.dumps(result, sort_keys=True, ensure_ascii=False)


def _dumps(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), sort_keys=True, ensure_ascii=False, default=str)


def _loads(text: str) -> Mapping[str, Any]:
    value = json.loads(text)
    return cast(Mapping[str, Any], value) if isinstance(value, dict) else {}


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _abandon_reason(row: tuple[Any, ...], now: float, lease: float) -> str:
    node, pid, token, heartbeat = row[9], row[10], row[12], row[13]
    if token is None or heartbeat is None:
        return "abandoned: its process let go of it unfinished"
    if now - heartbeat > lease:
        return f"abandoned: no heartbeat from pid {pid} for {now - heartbeat:.1f} s"
    return f"abandoned: its process (pid {pid} on {node.split('/')[0]}) is gone"


@functools.cache
def _node_id() -> str:
    """This host, boot and PID namespace: where a holder's PID can be checked."""
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip())
    with contextlib.suppress(OSError):
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    return "/".join(parts)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks after boot)`` of a process, from /proc (Linux)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def _alive(pid: int, start: str | None) -> bool:
    """Whether the process that held a lease still runs (not a zombie, not a reused PID)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    stat = _proc_stat(pid)
    if stat is None:
        return True
    if stat[0] in ("Z", "X"):
        return False
    return start is None or stat[1] == start
