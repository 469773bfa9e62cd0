"""Circuit breakers (docs/sre.md, "Circuit breakers").

One state per breaker and key, in the process (embedded mode).

* **Window.** A closed key counts outcomes in ten buckets of ``window / 10``
  seconds of the monotonic clock; a bucket is reused (and zeroed) when the
  clock reaches it again, so an outcome leaves the window between ``window``
  and ``window + window / 10`` seconds after it was counted.
* **The check** reads an immutable view ``(state, probe_at, reason)`` that a
  transition swaps in whole: a closed (or never seen) key costs two dict
  lookups and no lock. The lock is taken only to admit or refuse a half-open
  trial, so no two callers can both take the last trial slot.
* **Trials** are remembered by the identity of the action's ``args`` mapping
  (with its tool and session), which the copies the Governor makes of an
  action share. An outcome of a half-open key settles the breaker only when it
  is a trial's: a late outcome of a call admitted before the breaker opened
  does not. ``release`` and a ``denied`` or ``killed`` outcome free a trial's
  slot without settling it, and freeing twice frees once. A trial that has not
  reported ``open_for`` seconds after its admission counts as failed, so a
  lost outcome cannot hold a breaker half-open forever.
* **Transitions made by ``check``** (open → half-open; a lost trial reopening
  it) are queued and returned by the next ``record`` (or ``drain``).
* **Keys** come from outside (agent ids), so each breaker keeps at most
  ``max_keys`` of them. A new key evicts the least recently recorded closed
  key; open and half-open keys are kept while any closed key can go, so a
  flood of new ids cannot erase an open breaker.

Times in ``Transition.at``, ``BreakerState.since`` and ``probe_at`` are wall
clock (``wall``) seconds; the state machine runs on ``clock``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from warden._re import ByTool, compile_glob, search
from warden.policy.sections import BreakerSpec

if TYPE_CHECKING:
    from warden.action import Action

__all__ = ["BreakerState", "Breakers", "Transition", "breaker_key"]

CLOSED: Final = "closed"
OPEN: Final = "open"
HALF_OPEN: Final = "half_open"

IMPLICIT_OPEN_FOR: Final = 300.0
"""``open_for`` of a breaker ``force_open`` creates without being given one."""

_BUCKETS: Final = 10
_FAILED: Final = frozenset({"error", "timeout"})
_MAX_KEYS: Final = 10_000
_MAX_TOOLS: Final = 8192


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker key changed state; ``at`` is wall-clock seconds."""

    breaker: str
    key: str
    from_state: str
    to_state: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class BreakerState:
    """A snapshot of one breaker key; ``calls`` and ``failures`` are over its window now."""

    breaker: str
    key: str
    state: str
    since: float
    probe_at: float | None
    calls: int
    failures: int
    consecutive: int


def breaker_key(spec: BreakerSpec, action: Action) -> str | None:
    """The key of ``action`` under ``spec``; None when the call is not guarded (no agent id)."""
    scope = spec.scope
    if scope == "tool":
        return action.tool
    if scope == "agent":
        agent_id = action.agent.get("id") if action.agent else None
        return agent_id if type(agent_id) is str else None
    downstream = action.context.get("downstream") if action.context else None
    if type(downstream) is str:
        return downstream
    return action.tool.partition(".")[0]


_CLOSED_VIEW: Final[tuple[str, float, str]] = (CLOSED, 0.0, "")


class _Key:
    """The mutable state of one key; ``view`` is what ``check`` reads without the lock."""

    __slots__ = (
        "calls",
        "consecutive",
        "epochs",
        "fails",
        "probe_wall",
        "since",
        "succeeded",
        "trials",
        "view",
    )

    def __init__(self, since: float) -> None:
        self.view = _CLOSED_VIEW
        self.since = since
        self.probe_wall: float | None = None
        self.calls = [0] * _BUCKETS
        self.fails = [0] * _BUCKETS
        self.epochs = [-1] * _BUCKETS
        self.consecutive = 0
        self.succeeded = 0
        # (args, tool, session, admitted at): the trial calls in flight, at most `probes`
        self.trials: list[tuple[Any, str, str | None, float]] = []

    def window(self, bucket: int) -> tuple[int, int]:
        calls = fails = 0
        for i in range(_BUCKETS):
            if self.epochs[i] > bucket - _BUCKETS:
                calls += self.calls[i]
                fails += self.fails[i]
        return calls, fails

    def clear_window(self) -> None:
        self.calls = [0] * _BUCKETS
        self.fails = [0] * _BUCKETS
        self.epochs = [-1] * _BUCKETS
        self.consecutive = 0

    def take_trial(self, action: Action) -> bool:
        """Forget the trial ``action`` holds; False when it holds none."""
        args, tool, session = action.args, action.tool, action.session
        for i, (a, t, s, _) in enumerate(self.trials):
            if a is args and t == tool and s == session:
                del self.trials[i]
                return True
        return False


class _Breaker:
    __slots__ = ("counts", "keys", "rx", "spec", "width")

    def __init__(self, spec: BreakerSpec) -> None:
        self.spec = spec
        self.rx = [compile_glob(g) for g in spec.tools] if spec.tools else None
        self.keys: OrderedDict[str, _Key] = OrderedDict()
        self.width = spec.window / _BUCKETS
        self.counts = spec.failure_ratio is not None or spec.consecutive is not None

    def applies(self, tool: str) -> bool:
        return self.rx is None or any(search(rx, tool) for rx in self.rx)

    def where(self, key: str) -> str:
        return f"{self.spec.scope} {key}"


def _open_text(b: _Breaker, key: str, why: str, probe_wall: float) -> str:
    probe = time.strftime("%H:%M:%SZ", time.gmtime(probe_wall))
    return f"breaker `{b.spec.id}` is open for {b.where(key)} ({why}); it probes again at {probe}"


class Breakers:
    """The circuit breakers of one policy, plus implicit ones ``force_open`` creates."""

    def __init__(
        self,
        specs: tuple[BreakerSpec, ...],
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        *,
        max_keys: int = _MAX_KEYS,
    ) -> None:
        self._breakers = [_Breaker(s) for s in specs]
        self._by_id = {b.spec.id: b for b in self._breakers}
        self._clock = clock
        self._wall = wall
        self._max_keys = max(1, max_keys)
        self._lock = threading.Lock()
        self._for = ByTool(self._breakers, _Breaker.applies, _MAX_TOOLS)
        self._pending: list[Transition] = []

    def __bool__(self) -> bool:
        return bool(self._breakers)

    # --- the decision path ----------------------------------------------------------------

    def check(self, action: Action) -> tuple[str, str] | None:
        """(breaker id, reason) when an open breaker refuses ``action``; else None.

        A half-open breaker admits the call as one of its trials when a slot is
        free; the caller must then report its outcome (``record``) or
        ``release`` it. O(1); no lock unless a key is open or half-open.
        """
        breakers = self._for(action.tool)
        admitted: list[tuple[_Breaker, _Key]] | None = None
        for b in breakers:
            key = breaker_key(b.spec, action)
            if key is None:
                continue
            k = b.keys.get(key)
            if k is None:
                continue
            view = k.view
            if view[0] is CLOSED:
                continue
            if view[0] is OPEN and self._clock() < view[1]:
                refusal: tuple[str, str] | None = (b.spec.id, view[2])
            else:
                refusal = self._trial(b, key, k, action)
                if refusal is None:
                    admitted = admitted or []
                    admitted.append((b, k))
            if refusal is not None:
                if admitted:
                    with self._lock:
                        for _, held in admitted:
                            held.take_trial(action)
                return refusal
        return None

    def _trial(self, b: _Breaker, key: str, k: _Key, action: Action) -> tuple[str, str] | None:
        spec = b.spec
        with self._lock:
            now = self._clock()
            state, probe_at, reason = k.view
            if state is CLOSED:
                return None
            if state is OPEN:
                if now < probe_at:
                    return spec.id, reason
                self._half_open(b, key, k)
            elif k.trials and len(k.trials) + k.succeeded >= spec.probes:
                oldest = min(t[3] for t in k.trials)
                if now - oldest >= spec.open_for:
                    lost = f"a trial call did not report within {spec.open_for:g} s"
                    self._pending.append(self._open(b, key, k, now, lost))
                    return spec.id, k.view[2]
            if len(k.trials) + k.succeeded >= spec.probes:
                return spec.id, (
                    f"breaker `{spec.id}` is half-open for {b.where(key)} "
                    f"({len(k.trials)} of its {spec.probes} trial calls in flight)"
                )
            k.trials.append((action.args, action.tool, action.session, now))
            return None

    def release(self, action: Action) -> None:
        """Free the half-open trial slot ``action`` took in ``check``, when it will not run.

        A no-op for an action that holds no trial (and for a second release).
        """
        for b in self._for(action.tool):
            key = breaker_key(b.spec, action)
            k = b.keys.get(key) if key is not None else None
            if k is not None and k.trials:
                with self._lock:
                    k.take_trial(action)

    # --- outcomes ---------------------------------------------------------------------------

    def record(self, action: Action, status: str) -> list[Transition]:
        """Count one outcome (``ok``, ``error``, ``timeout``; others only free a trial).

        Returns the transitions it caused, after any ``check`` made since the
        last call.
        """
        out: list[Transition] = []
        breakers = self._for(action.tool)
        if not breakers and not self._pending:
            return out
        failed = status in _FAILED
        counts = failed or status == "ok"
        with self._lock:
            if self._pending:
                out.extend(self._pending)
                self._pending.clear()
            now = self._clock()
            for b in breakers:
                key = breaker_key(b.spec, action)
                if key is None:
                    continue
                k = b.keys.get(key)
                if k is None:
                    if not counts or not b.counts:
                        continue
                    k = self._new_key(b, key)
                else:
                    b.keys.move_to_end(key)
                state = k.view[0]
                if state is HALF_OPEN:
                    if not k.take_trial(action) or not counts:
                        continue  # not a trial's outcome, or a trial that never ran
                    if failed:
                        out.append(self._open(b, key, k, now, f"a trial call ended `{status}`"))
                    else:
                        k.succeeded += 1
                        if k.succeeded >= b.spec.probes:
                            out.append(self._close(b, key, k))
                elif state is CLOSED and counts and b.counts:
                    t = self._count(b, key, k, now, failed)
                    if t is not None:
                        out.append(t)
        return out

    def _count(self, b: _Breaker, key: str, k: _Key, now: float, failed: bool) -> Transition | None:
        spec = b.spec
        bucket = int(now // b.width)
        slot = bucket % _BUCKETS
        if k.epochs[slot] != bucket:
            k.epochs[slot] = bucket
            k.calls[slot] = 0
            k.fails[slot] = 0
        k.calls[slot] += 1
        if failed:
            k.fails[slot] += 1
            k.consecutive += 1
        else:
            k.consecutive = 0
        if spec.consecutive is not None and k.consecutive >= spec.consecutive:
            return self._open(b, key, k, now, f"{k.consecutive} failures in a row")
        if spec.failure_ratio is not None:
            calls, fails = k.window(bucket)
            if calls >= spec.min_calls and fails / calls >= spec.failure_ratio:
                return self._open(
                    b,
                    key,
                    k,
                    now,
                    f"{fails} of {calls} calls failed in the last {spec.window:g} s",
                )
        return None

    def drain(self) -> list[Transition]:
        """The transitions ``check`` made that no ``record`` has returned yet."""
        with self._lock:
            out = list(self._pending)
            self._pending.clear()
        return out

    # --- transitions (under the lock) ---------------------------------------------------

    def _new_key(self, b: _Breaker, key: str) -> _Key:
        keys = b.keys
        if len(keys) >= self._max_keys:
            for _ in range(len(keys)):
                old_key, old = next(iter(keys.items()))
                if old.view[0] is CLOSED:
                    del keys[old_key]
                    break
                keys.move_to_end(old_key)
            else:
                keys.popitem(last=False)
        k = _Key(self._wall())
        keys[key] = k
        return k

    def _open(
        self, b: _Breaker, key: str, k: _Key, now: float, why: str, open_for: float | None = None
    ) -> Transition:
        spec = b.spec
        wall = self._wall()
        span = spec.open_for if open_for is None else open_for
        probe_wall = wall + span
        before = k.view[0]
        k.view = (OPEN, now + span, _open_text(b, key, why, probe_wall))
        k.since, k.probe_wall = wall, probe_wall
        k.trials.clear()
        k.succeeded = 0
        k.clear_window()
        return Transition(spec.id, key, before, OPEN, why, wall)

    def _half_open(self, b: _Breaker, key: str, k: _Key) -> None:
        wall = self._wall()
        k.view = (HALF_OPEN, 0.0, "")
        k.since, k.probe_wall = wall, None
        k.trials.clear()
        k.succeeded = 0
        why = f"open for {b.spec.open_for:g} s: admitting {b.spec.probes} trial calls"
        self._pending.append(Transition(b.spec.id, key, OPEN, HALF_OPEN, why, wall))

    def _close(self, b: _Breaker, key: str, k: _Key) -> Transition:
        wall = self._wall()
        k.view = _CLOSED_VIEW
        k.since, k.probe_wall = wall, None
        k.trials.clear()
        k.succeeded = 0
        k.clear_window()
        why = f"{b.spec.probes} trial calls succeeded"
        return Transition(b.spec.id, key, HALF_OPEN, CLOSED, why, wall)

    # --- operators and status ---------------------------------------------------------------

    def force_open(
        self, breaker_id: str, key: str, reason: str, open_for: float | None = None
    ) -> Transition | None:
        """Open ``breaker_id`` for ``key`` now (cascade containment); None if it already was.

        An unknown ``breaker_id`` becomes an implicit breaker of scope ``agent``
        over every tool, which only opens this way (``open_for`` defaults to
        IMPLICIT_OPEN_FOR). An open key is kept open until the later probe time.
        """
        with self._lock:
            b = self._by_id.get(breaker_id)
            if b is None:
                span = IMPLICIT_OPEN_FOR if open_for is None else open_for
                b = _Breaker(BreakerSpec(breaker_id, "agent", None, None, None, open_for=span))
                self._breakers = [*self._breakers, b]
                self._by_id[breaker_id] = b
                self._for.reset(self._breakers)
            span = b.spec.open_for if open_for is None else open_for
            now = self._clock()
            k = b.keys.get(key)
            if k is None:
                k = self._new_key(b, key)
            if k.view[0] is OPEN:
                if now + span > k.view[1]:
                    k.probe_wall = self._wall() + span
                    k.view = (OPEN, now + span, _open_text(b, key, reason, k.probe_wall))
                return None
            return self._open(b, key, k, now, reason, span)

    def states(self) -> list[BreakerState]:
        """Every key of every breaker, by breaker then key."""
        out: list[BreakerState] = []
        with self._lock:
            now = self._clock()
            for b in self._breakers:
                bucket = int(now // b.width)
                for key in sorted(b.keys):
                    k = b.keys[key]
                    calls, fails = k.window(bucket)
                    out.append(
                        BreakerState(
                            b.spec.id,
                            key,
                            k.view[0],
                            k.since,
                            k.probe_wall,
                            calls,
                            fails,
                            k.consecutive,
                        )
                    )
        return out
