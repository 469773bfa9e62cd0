"""Circuit breakers (docs/sre.md, "Circuit breakers"), on injected clocks.

The state clock and the wall clock move together: ``wall = NOON + clock``, where
NOON is 2024-01-01 12:00:00 UTC, so a breaker that opens at clock 0 for 30 s
"probes again at 12:00:30Z".
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from warden.action import Action
from warden.policy.sections import BreakerSpec
from warden.sre.breakers import Breakers, Transition, breaker_key

NOON = 1_704_110_400.0  # 2024-01-01T12:00:00Z


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return NOON + self.now


def spec(**kw: Any) -> BreakerSpec:
    base: dict[str, Any] = {
        "id": "payments-api",
        "scope": "downstream",
        "tools": ("payments.*",),
        "failure_ratio": None,
        "consecutive": None,
    }
    base.update(kw)
    return BreakerSpec(**base)


def make(clock: Clock, *specs: BreakerSpec, **kw: Any) -> Breakers:
    return Breakers(specs, clock=clock, wall=clock.wall, **kw)


def act(tool: str = "payments.refund", agent: str | None = "a1", **context: Any) -> Action:
    """A fresh action: its own args mapping, so a distinct trial."""
    return Action(tool=tool, args={"n": 1}, agent={"id": agent} if agent else {}, context=context)


def feed(b: Breakers, statuses: str, tool: str = "payments.refund") -> list[Transition]:
    """Record one outcome per letter: o ok, e error, t timeout, d denied, k killed."""
    names = {"o": "ok", "e": "error", "t": "timeout", "d": "denied", "k": "killed"}
    out: list[Transition] = []
    for c in statuses:
        out += b.record(act(tool), names[c])
    return out


def state(b: Breakers, key: str = "payments") -> str:
    found = [s for s in b.states() if s.key == key]
    return found[0].state if found else "closed"


def open_breaker(clock: Clock, probes: int = 1, open_for: float = 30.0) -> Breakers:
    b = make(clock, spec(consecutive=2, probes=probes, open_for=open_for))
    assert [t.to_state for t in feed(b, "ee")] == ["open"]
    return b


# --- closed → open -----------------------------------------------------------------------


def test_consecutive_failures_open_the_breaker() -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=3))
    assert feed(b, "eeoee") == []  # an ok breaks the run
    assert b.check(act()) is None
    clock.now = 5.0
    (t,) = feed(b, "t")  # a timeout is a failure
    assert (t.breaker, t.key, t.from_state, t.to_state) == (
        "payments-api",
        "payments",
        "closed",
        "open",
    )
    assert t.reason == "3 failures in a row"
    assert t.at == NOON + 5.0
    assert b.check(act()) == (
        "payments-api",
        "breaker `payments-api` is open for downstream payments (3 failures in a row); "
        "it probes again at 12:00:35Z",
    )
    (s,) = b.states()
    assert (s.state, s.since, s.probe_at) == ("open", NOON + 5.0, NOON + 35.0)


def test_failure_ratio_needs_min_calls() -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=10))
    assert feed(b, "e" * 9) == []  # 100% failures, but below min_calls: never opens
    assert b.check(act()) is None
    (t,) = feed(b, "e")
    assert t.reason == "10 of 10 calls failed in the last 60 s"


def test_failure_ratio_opens_when_it_reaches_the_bound() -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=10))
    assert feed(b, "ooooo" + "eeee") == []  # 9 calls
    assert feed(b, "o") == []  # 4 of 10
    assert feed(b, "e") == []  # 5 of 11
    (t,) = feed(b, "e")  # 6 of 12 = 0.5
    assert t.reason == "6 of 12 calls failed in the last 60 s"
    assert b.check(act()) is not None


@pytest.mark.parametrize(("later", "opens"), [(50.0, True), (61.0, False)])
def test_old_failures_leave_the_window(later: float, opens: bool) -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=4, window=60.0))
    feed(b, "eee")
    clock.now = later  # 60 s in ten buckets of 6 s: at 61 s the first bucket is gone
    transitions = feed(b, "o")
    assert bool(transitions) is opens
    if not opens:
        (s,) = b.states()
        assert (s.calls, s.failures) == (1, 0)


def test_outcomes_of_other_tools_and_keys_are_apart() -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=2))
    feed(b, "eeee", tool="fs.read")  # not guarded: the glob is payments.*
    assert b.check(act("fs.read")) is None
    assert b.states() == []
    feed(b, "ee", tool="billing.charge")  # not payments.* either
    feed(b, "ee")
    assert b.check(act("payments.capture")) is not None  # same downstream: payments
    assert b.check(act("payments.refund", downstream="stripe")) is None  # another key


def test_denied_and_killed_outcomes_do_not_count() -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=2))
    assert feed(b, "edkdk") == []
    (s,) = b.states()
    assert (s.calls, s.failures, s.consecutive) == (1, 1, 1)
    (t,) = feed(b, "e")  # still in a row: denied and killed neither count nor break it
    assert t.reason == "2 failures in a row"
    assert make(clock, spec(consecutive=1)).record(act(), "killed") == []


# --- open → half-open → closed or open again -----------------------------------------------


def test_open_denies_until_open_for_then_admits_a_trial() -> None:
    clock = Clock()
    b = open_breaker(clock)
    clock.now = 29.999
    assert b.check(act()) is not None
    clock.now = 30.0
    assert b.check(act()) is None  # the trial
    (t,) = b.drain()  # made by check: handed out by the next record or drain
    assert (t.from_state, t.to_state, t.at) == ("open", "half_open", NOON + 30.0)
    assert b.drain() == []
    assert b.check(act()) == (
        "payments-api",
        "breaker `payments-api` is half-open for downstream payments "
        "(1 of its 1 trial calls in flight)",
    )


def test_transitions_made_by_check_come_out_of_the_next_record() -> None:
    clock = Clock()
    b = open_breaker(clock)
    clock.now = 30.0
    trial = act()
    assert b.check(trial) is None
    out = b.record(trial, "ok")
    assert [(t.from_state, t.to_state) for t in out] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert out[1].reason == "1 trial calls succeeded"


def test_a_failed_trial_reopens() -> None:
    clock = Clock()
    b = open_breaker(clock, probes=2)
    clock.now = 40.0
    t1, t2 = act(), act()
    assert b.check(t1) is None
    assert b.check(t2) is None
    assert b.record(t1, "ok")[-1].to_state == "half_open"
    assert state(b) == "half_open"
    clock.now = 41.0
    (t,) = b.record(t2, "timeout")
    assert (t.from_state, t.to_state, t.reason) == (
        "half_open",
        "open",
        "a trial call ended `timeout`",
    )
    hit = b.check(act())
    assert hit is not None
    assert hit[1].endswith("(a trial call ended `timeout`); it probes again at 12:01:11Z")


def test_all_trials_ok_close_with_an_empty_window() -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=3, probes=2))
    feed(b, "eee")
    clock.now = 30.0
    trials = [act(), act()]
    assert all(b.check(t) is None for t in trials)
    assert b.check(act()) is not None  # both slots taken
    assert b.record(trials[0], "ok")[-1].to_state == "half_open"
    (t,) = b.record(trials[1], "ok")
    assert (t.from_state, t.to_state) == ("half_open", "closed")
    (s,) = b.states()
    assert (s.state, s.calls, s.failures, s.consecutive) == ("closed", 0, 0, 0)
    assert feed(b, "ee") == []  # the run starts again from zero
    assert feed(b, "e")[0].to_state == "open"


def test_outcomes_that_are_not_a_trials_do_not_settle_a_half_open_breaker() -> None:
    clock = Clock()
    b = open_breaker(clock)
    clock.now = 30.0
    trial = act()
    assert b.check(trial) is None
    b.drain()
    late = act()  # admitted before the breaker opened; its outcome comes only now
    assert b.record(late, "error") == []
    assert b.record(late, "ok") == []
    assert state(b) == "half_open"
    assert b.record(trial, "ok")[0].to_state == "closed"


def test_release_frees_only_the_slot_of_a_trial_and_only_once() -> None:
    clock = Clock()
    b = open_breaker(clock)
    clock.now = 30.0
    a = act()
    assert b.check(a) is None
    refused = act()
    assert b.check(refused) is not None
    b.release(refused)  # holds no slot: frees nothing
    assert b.check(act()) is not None
    b.release(a)
    c = act()
    assert b.check(c) is None
    b.release(a)  # a second release of the same call is a no-op
    assert b.check(act()) is not None
    assert [t.to_state for t in b.drain()] == ["half_open"]
    assert b.record(c, "denied") == []  # a denied trial never ran: its slot is free again
    assert b.check(act()) is None


def test_a_killed_trial_frees_its_slot_without_settling() -> None:
    clock = Clock()
    b = open_breaker(clock)
    clock.now = 30.0
    a = act()
    assert b.check(a) is None
    b.drain()
    assert b.record(a, "killed") == []
    assert state(b) == "half_open"
    assert b.check(act()) is None


def test_a_trial_that_never_reports_reopens_after_open_for() -> None:
    clock = Clock()
    b = open_breaker(clock, open_for=30.0)
    clock.now = 30.0
    assert b.check(act()) is None
    clock.now = 59.0
    assert b.check(act()) is not None
    assert state(b) == "half_open"
    clock.now = 60.0
    hit = b.check(act())
    assert hit is not None
    assert "a trial call did not report within 30 s" in hit[1]
    assert [(t.from_state, t.to_state) for t in b.drain()] == [
        ("open", "half_open"),
        ("half_open", "open"),
    ]


def test_a_copy_of_the_action_is_the_same_trial() -> None:
    """The Governor checks a copy with the effective ring and reports the original."""
    from warden.action import with_agent

    clock = Clock()
    b = open_breaker(clock)
    clock.now = 30.0
    original = act()
    assert b.check(with_agent(original, {"id": "a1", "ring": 2})) is None
    assert b.record(original, "ok")[-1].to_state == "closed"


@pytest.fixture
def fast_switching() -> Iterator[None]:
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # preempt threads as often as possible
    yield
    sys.setswitchinterval(old)


def hammer(b: Breakers, threads: int, calls: int) -> list[Action]:
    """``threads`` threads, released at once, each checking ``calls`` fresh actions."""
    barrier = threading.Barrier(threads)
    admitted: list[Action] = []
    lock = threading.Lock()

    def run() -> None:
        mine = [act() for _ in range(calls)]
        barrier.wait()
        for a in mine:
            if b.check(a) is None:
                with lock:
                    admitted.append(a)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return admitted


@pytest.mark.usefixtures("fast_switching")
@pytest.mark.parametrize("probes", [1, 3])
def test_half_open_admits_exactly_probes_trials_under_concurrency(probes: int) -> None:
    clock = Clock()
    b = open_breaker(clock, probes=probes)
    for round_ in range(5):
        clock.now = 30.0 + round_ * 100.0  # open_for passed: half-open on the next check
        admitted = hammer(b, threads=8, calls=200)
        assert len(admitted) == probes
        # one transition to half-open, whichever thread saw the probe time first
        assert [t.to_state for t in b.drain()] == ["half_open"]
        (t,) = b.record(admitted[0], "error")  # reopen for the next round
        assert t.to_state == "open"


def test_a_concurrent_check_waits_for_the_transition_in_progress() -> None:
    """Deterministic: a check starts while another is inside the open → half-open transition."""
    clock = Clock()
    armed: list[threading.Thread] = []
    seen: list[tuple[str, str] | None] = []

    def wall() -> float:
        if armed:  # inside the first check's transition: let a second check race it
            other = armed.pop()
            other.start()
            other.join(0.2)  # with the lock held, it cannot get past it before we return
        return clock.wall()

    b = Breakers((spec(consecutive=1),), clock=clock, wall=wall)
    feed(b, "e")
    clock.now = 30.0
    other = threading.Thread(target=lambda: seen.append(b.check(act())))
    armed.append(other)
    assert b.check(act()) is None
    other.join()
    assert seen[0] is not None
    assert "half-open" in seen[0][1]
    assert [t.to_state for t in b.drain()] == ["half_open"]


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "action", "key"),
    [
        ("tool", Action(tool="payments.refund"), "payments.refund"),
        ("agent", Action(tool="x", agent={"id": "did:web:a"}), "did:web:a"),
        ("agent", Action(tool="x"), None),
        ("agent", Action(tool="x", agent={"id": 7}), None),
        ("downstream", Action(tool="payments.refund"), "payments"),
        ("downstream", Action(tool="payments.v2.refund"), "payments"),
        ("downstream", Action(tool="search"), "search"),
        ("downstream", Action(tool="payments.refund", context={"downstream": "stripe"}), "stripe"),
        ("downstream", Action(tool="payments.refund", context={"downstream": 3}), "payments"),
    ],
)
def test_breaker_key(scope: str, action: Action, key: str | None) -> None:
    assert breaker_key(spec(scope=scope), action) == key


def test_a_call_without_agent_id_is_not_guarded_by_an_agent_breaker() -> None:
    clock = Clock()
    b = make(clock, spec(id="per-agent", scope="agent", tools=None, consecutive=1))
    (t,) = b.record(act("x", agent="a1"), "error")
    assert (t.key, t.to_state) == ("a1", "open")
    hit = b.check(act("y", agent="a1"))
    assert hit is not None
    assert hit[1].startswith("breaker `per-agent` is open for agent a1 (1 failures in a row)")
    assert b.check(act("y", agent="a2")) is None
    assert b.check(act("y", agent=None)) is None
    assert b.record(act("y", agent=None), "error") == []


def test_keys_are_bounded_and_open_keys_are_kept() -> None:
    clock = Clock()
    b = make(clock, spec(scope="tool", tools=None, consecutive=2), max_keys=3)
    feed(b, "ee", tool="t0")
    assert state(b, "t0") == "open"
    for i in range(1, 6):
        feed(b, "o", tool=f"t{i}")
    assert [s.key for s in b.states()] == ["t0", "t4", "t5"]
    assert b.check(act("t0")) is not None


# --- forced open (cascade containment) -----------------------------------------------------


def test_force_open_creates_an_implicit_agent_breaker() -> None:
    clock = Clock()
    b = make(clock)
    assert not b
    t = b.force_open("cascade", "agent-x", "cascade from agent-x reached 3 agents", open_for=300)
    assert t == Transition(
        "cascade", "agent-x", "closed", "open", "cascade from agent-x reached 3 agents", NOON
    )
    assert b
    assert b.check(act("anything", agent="agent-x")) == (
        "cascade",
        "breaker `cascade` is open for agent agent-x (cascade from agent-x reached 3 agents); "
        "it probes again at 12:05:00Z",
    )
    assert b.check(act("anything", agent="agent-y")) is None
    assert b.force_open("cascade", "agent-x", "again", open_for=300) is None
    feed(b, "eeee", tool="anything")  # an implicit breaker never opens by itself
    assert b.check(act("anything", agent="a1")) is None
    clock.now = 300.0
    trial = act("anything", agent="agent-x")
    assert b.check(trial) is None
    assert b.record(trial, "ok")[-1].to_state == "closed"


def test_force_open_of_a_declared_breaker_uses_its_open_for() -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=5, open_for=60.0))
    t = b.force_open("payments-api", "payments", "operator")
    assert t is not None
    assert t.to_state == "open"
    clock.now = 59.0
    assert b.check(act()) is not None
    clock.now = 60.0
    assert b.check(act()) is None
