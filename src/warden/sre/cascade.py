"""Cascade detection over the agent call graph (docs/sre.md, "Cascades").

The graph: an edge *A → B* means *A* called on *B*. It is recorded when an
action by *B* carries ``context.caller = A`` (a string other than *B*), and
when *A* makes a ``delegate`` action with ``args.agent = B``. An edge lives
for 1 h after its last use.

Failure events (``failure``): an agent-scope breaker opening, a kill, or an
agent's error ratio over the last minute reaching 0.5 with at least 5
outcomes (``observe_outcome``: ``error`` and ``timeout`` are errors, ``ok`` a
success, other statuses do not count; one such event per agent per minute).
An agent is *failing* while its last failure event is at most ``window`` old;
its failure started with the first event of that run.

Detection runs on each failure event at *X*: the failing agents reachable from
*X* through edges in either direction, **passing only through failing
agents** (a healthy agent in between stops the spread: a failure that did
not fail it did not cross it), form the set. With at least ``min_agents``
agents it is a cascade. The source is the agent whose failure started first
(ties: the smallest id). ``agents`` lists the source, then the others in
breadth-first order (neighbours by id); ``path`` is, for each of those, the
edge by which a shortest path from the source reaches it, written in its
recorded direction (``(caller, callee)``).

An alert fires once per set: a set that is a subset of one already alerted
stays quiet, a set that grew fires again. An alerted set is forgotten once no
failure event has touched it for ``window``, so the same agents failing
together again later alert again. Detection is triggered by failure events
only: an edge that later joins two failing groups does not fire by itself.

Memory is bounded: 100,000 edges (beyond them the least recently used goes
first), 10,000 agents with failure or outcome state (least recently updated
evicted first) and 1,000 remembered alerted sets. A failure event costs a
breadth-first search over the failing agents and their edges; recording an
edge or an outcome is O(1) amortised. Deterministic: the same calls at the
same clock readings give the same alerts.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from warden.action import Action
    from warden.policy.sections import CascadeSpec

__all__ = [
    "EDGE_TTL",
    "FAILURE_KINDS",
    "MAX_AGENTS",
    "MAX_EDGES",
    "CascadeAlert",
    "Cascades",
]

EDGE_TTL: Final = 3600.0
MAX_EDGES: Final = 100_000
MAX_AGENTS: Final = 10_000
MAX_ALERTED: Final = 1_000
FAILURE_KINDS: Final = frozenset({"breaker", "kill", "errors"})
ERROR_RATIO: Final = 0.5
ERROR_MIN: Final = 5  # outcomes in the last minute before the ratio means anything
ERROR_REFIRE: Final = 60.0
_BUCKET: Final = 10.0
_SLOTS: Final = 6  # 10 s buckets in the minute
_ERRORS: Final = frozenset({"error", "timeout"})


@dataclass(frozen=True, slots=True)
class CascadeAlert:
    """A failure that spread: ``agents`` (source first), each reached by an edge of ``path``."""

    source: str
    agents: tuple[str, ...]
    path: tuple[tuple[str, str], ...]
    at: float


@dataclass(slots=True)
class _Failing:
    first: float  # when this run of failures started
    last: float
    kinds: set[str]


@dataclass(slots=True)
class _Outcomes:
    bucket: int
    total: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    errors: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    fired: float = -float("inf")


class Cascades:
    """The call graph, failing agents and the cascades they form."""

    def __init__(self, spec: CascadeSpec, clock: Callable[[], float] = time.time) -> None:
        self.spec = spec
        self._clock = clock
        self._lock = threading.Lock()
        self._edges: OrderedDict[tuple[str, str], float] = OrderedDict()  # oldest use first
        self._out: dict[str, set[str]] = {}
        self._in: dict[str, set[str]] = {}
        self._failing: OrderedDict[str, _Failing] = OrderedDict()
        self._outcomes: OrderedDict[str, _Outcomes] = OrderedDict()
        self._alerted: OrderedDict[frozenset[str], float] = OrderedDict()

    # --- the graph ------------------------------------------------------------------------

    def observe_action(self, action: Action) -> None:
        """Record the edges ``action`` shows: its caller → its agent, its agent → a delegate."""
        agent = action.agent.get("id") if action.agent else None
        if type(agent) is not str:
            return
        caller = action.context.get("caller") if action.context else None
        target = action.args.get("agent") if action.kind == "delegate" else None
        if type(caller) is not str and type(target) is not str:
            return
        now = self._clock()
        with self._lock:
            if type(caller) is str and caller != agent:
                self._touch(caller, agent, now)
            if type(target) is str and target != agent:
                self._touch(agent, target, now)
            self._expire(now)

    def _touch(self, a: str, b: str, now: float) -> None:
        edges = self._edges
        key = (a, b)
        if key in edges:
            edges.move_to_end(key)
        else:
            self._out.setdefault(a, set()).add(b)
            self._in.setdefault(b, set()).add(a)
            if len(edges) >= MAX_EDGES:
                self._drop(*edges.popitem(last=False)[0])
        edges[key] = now

    def _expire(self, now: float) -> None:
        edges = self._edges
        while edges:
            key, used = next(iter(edges.items()))
            if now - used <= EDGE_TTL:
                break
            del edges[key]
            self._drop(*key)

    def _drop(self, a: str, b: str) -> None:
        out, inn = self._out[a], self._in[b]
        out.discard(b)
        inn.discard(a)
        if not out:
            del self._out[a]
        if not inn:
            del self._in[b]

    def edges(self) -> list[tuple[str, str]]:
        """The live edges, least recently used first."""
        with self._lock:
            self._expire(self._clock())
            return list(self._edges)

    # --- failures -------------------------------------------------------------------------

    def failure(self, agent: str, kind: str) -> CascadeAlert | None:
        """A failure event at ``agent`` (``breaker``, ``kill``, ``errors``); the cascade, if any."""
        if kind not in FAILURE_KINDS:
            raise ValueError(f"unknown failure kind `{kind}`")
        now = self._clock()
        with self._lock:
            return self._failure(agent, kind, now)

    def _failure(self, agent: str, kind: str, now: float) -> CascadeAlert | None:
        window = self.spec.window
        failing = self._failing
        f = failing.get(agent)
        if f is None or now - f.last > window:
            f = _Failing(now, now, {kind})
            failing[agent] = f
        else:
            f.last = now
            f.kinds.add(kind)
        failing.move_to_end(agent)
        while failing:  # oldest update first: drop what no longer fails, and the excess
            name, old = next(iter(failing.items()))
            if now - old.last <= window and len(failing) <= MAX_AGENTS:
                break
            del failing[name]
        self._expire(now)
        members = self._component(agent)
        for alerted, seen in list(self._alerted.items()):
            if now - seen > window:
                del self._alerted[alerted]
        if len(members) < self.spec.min_agents:
            return None
        group = frozenset(members)
        for alerted in self._alerted:
            if group <= alerted:
                self._alerted[alerted] = now
                self._alerted.move_to_end(alerted)
                return None
        for alerted in [a for a in self._alerted if a < group]:
            del self._alerted[alerted]
        self._alerted[group] = now
        while len(self._alerted) > MAX_ALERTED:
            self._alerted.popitem(last=False)
        source = min(members, key=lambda a: (failing[a].first, a))
        agents, path = self._tree(source, group)
        return CascadeAlert(source, agents, path, now)

    def _neighbours(self, x: str) -> list[tuple[str, tuple[str, str]]]:
        """(neighbour, edge) pairs of ``x`` in either direction, by neighbour then direction."""
        pairs = [(b, (x, b)) for b in self._out.get(x, ())]
        pairs += [(a, (a, x)) for a in self._in.get(x, ())]
        pairs.sort()
        return pairs

    def _component(self, start: str) -> set[str]:
        failing = self._failing
        seen = {start}
        todo = [start]
        while todo:
            x = todo.pop()
            for y in self._out.get(x, ()):
                if y not in seen and y in failing:
                    seen.add(y)
                    todo.append(y)
            for y in self._in.get(x, ()):
                if y not in seen and y in failing:
                    seen.add(y)
                    todo.append(y)
        return seen

    def _tree(
        self, source: str, group: frozenset[str]
    ) -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
        order = [source]
        path: list[tuple[str, str]] = []
        seen = {source}
        todo = deque([source])
        while todo:
            x = todo.popleft()
            for y, edge in self._neighbours(x):
                if y in group and y not in seen:
                    seen.add(y)
                    order.append(y)
                    path.append(edge)
                    todo.append(y)
        return tuple(order), tuple(path)

    # --- outcomes -------------------------------------------------------------------------

    def observe_outcome(self, action: Action, status: str) -> CascadeAlert | None:
        """Count an outcome of the agent; an ``errors`` failure event (and its cascade) if due."""
        agent = action.agent.get("id") if action.agent else None
        if type(agent) is not str or (status != "ok" and status not in _ERRORS):
            return None
        now = self._clock()
        b = int(now // _BUCKET)
        with self._lock:
            outcomes = self._outcomes
            o = outcomes.get(agent)
            if o is None:
                o = outcomes[agent] = _Outcomes(b)
                if len(outcomes) > MAX_AGENTS:
                    outcomes.popitem(last=False)
            else:
                outcomes.move_to_end(agent)
                if b > o.bucket:
                    for s in range(o.bucket + 1, min(b, o.bucket + _SLOTS) + 1):
                        o.total[s % _SLOTS] = o.errors[s % _SLOTS] = 0
                    o.bucket = b
            i = o.bucket % _SLOTS
            o.total[i] += 1
            if status in _ERRORS:
                o.errors[i] += 1
            total = sum(o.total)
            if (
                total >= ERROR_MIN
                and sum(o.errors) >= ERROR_RATIO * total
                and now - o.fired >= ERROR_REFIRE
            ):
                o.fired = now
                return self._failure(agent, "errors", now)
            return None

    def failing(self) -> dict[str, float]:
        """Agents failing now, with the time their failure started."""
        now = self._clock()
        with self._lock:
            window = self.spec.window
            return {a: f.first for a, f in self._failing.items() if now - f.last <= window}
