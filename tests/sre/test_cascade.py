"""Cascade detection (docs/sre.md, "Cascades"), driven by an injected clock."""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from warden.action import Action
from warden.policy.sections import CascadeSpec
from warden.sre import cascade as cascade_module
from warden.sre.cascade import CascadeAlert, Cascades


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def make(clock: Clock, **spec: Any) -> Cascades:
    return Cascades(CascadeSpec(**spec), clock=clock)


def called(cascades: Cascades, caller: str, agent: str) -> None:
    """``agent`` acts on behalf of ``caller`` (an edge caller -> agent)."""
    cascades.observe_action(Action(tool="work", agent={"id": agent}, context={"caller": caller}))


def delegated(cascades: Cascades, agent: str, to: str) -> None:
    cascades.observe_action(
        Action(tool="delegate", kind="delegate", agent={"id": agent}, args={"agent": to})
    )


def chain(cascades: Cascades, *agents: str) -> None:
    for caller, agent in itertools.pairwise(agents):
        called(cascades, caller, agent)


def fail(cascades: Cascades, clock: Clock, *events: tuple[float, str]) -> list[CascadeAlert]:
    """Failure events (``breaker``) at the given offsets; the alerts they raise."""
    start = clock.t
    out: list[CascadeAlert] = []
    for offset, agent in events:
        clock.t = start + offset
        alert = cascades.failure(agent, "breaker")
        if alert is not None:
            out.append(alert)
    return out


def test_a_failure_climbing_a_call_chain_alerts_once_from_the_earliest() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")  # A calls B, B calls C
    start = clock.t
    assert cascades.failure("C", "breaker") is None
    clock.t += 60
    assert cascades.failure("B", "kill") is None
    clock.t += 60
    alert = cascades.failure("A", "breaker")
    assert alert == CascadeAlert(
        source="C", agents=("C", "B", "A"), path=(("B", "C"), ("A", "B")), at=start + 120
    )
    clock.t += 30
    assert fail(cascades, clock, (0, "B"), (10, "C"), (20, "A")) == []  # the same set


def test_the_source_is_the_earliest_failing_agent_wherever_it_sits() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")
    (alert,) = fail(cascades, clock, (0, "B"), (10, "C"), (20, "A"))
    assert alert.source == "B"
    assert alert.agents == ("B", "A", "C")  # breadth first, neighbours by id
    assert alert.path == (("A", "B"), ("B", "C"))  # each edge as recorded: caller, callee


def test_the_source_is_where_the_failure_started_not_where_it_last_failed() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")
    (alert,) = fail(cascades, clock, (0, "C"), (10, "B"), (20, "C"), (30, "A"))
    assert alert.source == "C"


def test_the_path_is_a_shortest_path_tree() -> None:
    clock = Clock()
    cascades = make(clock, min_agents=4)
    chain(cascades, "S", "X", "Y", "Z")
    called(cascades, "S", "Z")  # a shortcut: Z is one edge from S
    (alert,) = fail(cascades, clock, (0, "S"), (1, "X"), (2, "Y"), (3, "Z"))
    assert alert.agents == ("S", "X", "Z", "Y")
    assert alert.path == (("S", "X"), ("S", "Z"), ("X", "Y"))


def test_failures_of_unconnected_agents_do_not_alert() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B")
    chain(cascades, "X", "Y")
    assert fail(cascades, clock, (0, "A"), (1, "B"), (2, "X"), (3, "Y"), (4, "Q")) == []


def test_a_healthy_agent_in_between_stops_the_spread() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "H", "C")
    chain(cascades, "C", "D")
    assert fail(cascades, clock, (0, "A"), (1, "C"), (2, "D")) == []
    assert [a.agents for a in fail(cascades, clock, (3, "H"))] == [("A", "H", "C", "D")]


def test_failures_spread_over_longer_than_the_window_do_not_alert() -> None:
    clock = Clock()
    cascades = make(clock, window=300.0)
    chain(cascades, "A", "B", "C")
    assert fail(cascades, clock, (0, "C"), (200, "B"), (400, "A")) == []
    clock.t += 100  # C failing again brings the three within 5 min
    assert [a.source for a in fail(cascades, clock, (0, "C"))] == ["B"]


def test_a_failure_exactly_window_old_still_counts() -> None:
    clock = Clock()
    cascades = make(clock, window=300.0)
    chain(cascades, "A", "B", "C")
    assert len(fail(cascades, clock, (0, "C"), (100, "B"), (300, "A"))) == 1


def test_a_set_that_grows_alerts_again() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C", "D")
    first = fail(cascades, clock, (0, "D"), (10, "C"), (20, "B"))
    assert [a.agents for a in first] == [("D", "C", "B")]
    clock.t += 20
    grown = fail(cascades, clock, (10, "A"))
    assert [a.agents for a in grown] == [("D", "C", "B", "A")]
    assert grown[0].path == (("C", "D"), ("B", "C"), ("A", "B"))
    clock.t += 10
    assert fail(cascades, clock, (0, "B"), (1, "A")) == []


def test_a_set_that_shrinks_stays_quiet() -> None:
    clock = Clock()
    cascades = make(clock, window=300.0)
    chain(cascades, "A", "B", "C", "D")
    alerts = fail(cascades, clock, (0, "A"), (1, "B"), (2, "C"), (3, "D"))
    assert [len(a.agents) for a in alerts] == [3, 4]
    clock.t += 3
    # A stops failing; B, C and D go on: a part of what was reported, not news.
    assert fail(cascades, clock, (200, "B"), (250, "C"), (310, "D"), (320, "B")) == []


def test_a_set_quiet_for_a_window_alerts_again_when_it_fails_again() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")
    assert len(fail(cascades, clock, (0, "A"), (1, "B"), (2, "C"))) == 1
    clock.t += 3000
    chain(cascades, "A", "B", "C")  # still in use: the edges live on
    assert len(fail(cascades, clock, (0, "A"), (1, "B"), (2, "C"))) == 1


def test_delegation_edges_count() -> None:
    clock = Clock()
    cascades = make(clock)
    delegated(cascades, "planner", "coder")
    delegated(cascades, "coder", "tester")
    (alert,) = fail(cascades, clock, (0, "tester"), (1, "coder"), (2, "planner"))
    assert alert.source == "tester"
    assert alert.path == (("coder", "tester"), ("planner", "coder"))


def test_an_action_records_its_caller_and_its_delegate() -> None:
    clock = Clock()
    cascades = make(clock)
    cascades.observe_action(
        Action(
            tool="delegate",
            kind="delegate",
            agent={"id": "B"},
            args={"agent": "C"},
            context={"caller": "A"},
        )
    )
    assert sorted(cascades.edges()) == [("A", "B"), ("B", "C")]


def test_what_is_not_an_edge() -> None:
    clock = Clock()
    cascades = make(clock)
    cascades.observe_action(Action(tool="x", agent={"id": "A"}, context={"caller": "A"}))
    cascades.observe_action(Action(tool="x", agent={"id": "A"}, context={"caller": 7}))
    cascades.observe_action(Action(tool="x", context={"caller": "A"}))
    cascades.observe_action(Action(tool="x", agent={"id": "A"}, args={"agent": "B"}))
    assert cascades.edges() == []


def test_edges_expire_after_an_hour_without_use() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")
    clock.t += 3000
    called(cascades, "A", "B")  # A -> B is used again, B -> C is not
    clock.t += 601
    assert cascades.edges() == [("A", "B")]
    assert fail(cascades, clock, (0, "A"), (1, "B"), (2, "C")) == []
    called(cascades, "B", "C")
    assert len(fail(cascades, clock, (3, "C"))) == 1


def test_edges_are_bounded_least_recently_used_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cascade_module, "MAX_EDGES", 3)
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C", "D")
    called(cascades, "A", "B")
    called(cascades, "D", "E")
    assert cascades.edges() == [("C", "D"), ("A", "B"), ("D", "E")]
    assert fail(cascades, clock, (0, "A"), (1, "B"), (2, "C")) == []  # B -> C was dropped


def test_unknown_failure_kinds_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown failure kind `oops`"):
        make(Clock()).failure("A", "oops")


# --- failure events from outcomes ---------------------------------------------------------


def outcome(cascades: Cascades, agent: str, status: str) -> CascadeAlert | None:
    return cascades.observe_outcome(Action(tool="work", agent={"id": agent}), status)


def count_events(monkeypatch: pytest.MonkeyPatch, cascades: Cascades) -> list[tuple[str, str]]:
    events: list[tuple[str, str]] = []
    real = cascades._failure

    def spy(agent: str, kind: str, now: float) -> CascadeAlert | None:
        events.append((agent, kind))
        return real(agent, kind, now)

    monkeypatch.setattr(cascades, "_failure", spy)
    return events


def test_an_error_ratio_of_half_over_five_outcomes_is_a_failure_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    cascades = make(clock)
    events = count_events(monkeypatch, cascades)
    for status in ("ok", "error", "ok", "timeout", "ok"):
        clock.t += 1
        assert outcome(cascades, "C", status) is None
    assert events == []  # 2 of 5
    clock.t += 1
    outcome(cascades, "C", "error")
    assert events == [("C", "errors")]  # 3 of 6
    for _ in range(20):
        clock.t += 1
        outcome(cascades, "C", "error")
    assert events == [("C", "errors")]  # once per minute
    clock.t += 40
    outcome(cascades, "C", "error")
    assert events == [("C", "errors")] * 2
    assert "C" in cascades.failing()


def test_too_few_outcomes_or_old_ones_are_not_a_failure_event(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()
    cascades = make(clock)
    events = count_events(monkeypatch, cascades)
    for _ in range(4):
        outcome(cascades, "C", "error")
    clock.t += 61  # those four leave the minute
    for status in ("error", "ok", "ok", "denied", "killed", "ok"):
        outcome(cascades, "C", status)
    assert events == []  # 1 of 4 counted; denied and killed do not count
    for _ in range(4):
        outcome(cascades, "C", "ok")
    outcome(cascades, "C", "error")
    assert events == []


def test_errors_from_outcomes_complete_a_cascade() -> None:
    clock = Clock()
    cascades = make(clock)
    chain(cascades, "A", "B", "C")
    assert fail(cascades, clock, (0, "A"), (5, "B")) == []
    clock.t += 10
    alerts = [outcome(cascades, "C", "error") for _ in range(5)]
    assert alerts[:4] == [None] * 4
    assert alerts[4] is not None and alerts[4].agents == ("A", "B", "C")


def test_the_same_inputs_give_the_same_alerts() -> None:
    def run() -> list[CascadeAlert]:
        clock = Clock()
        cascades = make(clock)
        for n in range(30):
            called(cascades, f"a{n % 7}", f"a{(n * 3 + 1) % 7}")
        order = [(n * 11.0, f"a{(n * 5) % 7}") for n in range(7)]
        return fail(cascades, clock, *order)

    first = run()
    assert first and run() == first
