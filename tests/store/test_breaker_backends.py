"""One behavioural suite for both breaker backends (docs/sre.md, "Circuit breakers"; issue 9).

Every test taking ``make`` runs against the embedded ``Breakers`` and against
``RedisBreakers`` on a fresh namespace: the suite of tests/sre/test_breakers.py,
less what only the embedded one has (its lock, ``max_keys``). The tests after
them are Redis's own: two replicas sharing breakers, the key layout, failing
closed when Redis is down, and the cost of a check.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from warden.action import Action
from warden.errors import RuntimeStateError
from warden.policy.sections import BreakerSpec
from warden.sre.breakers import Breakers, Transition
from warden.store.breakers import RedisBreakers

REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://:secret@127.0.0.1:1/0"  # nothing listens on port 1
NOON = 1_704_110_400.0  # 2024-01-01T12:00:00Z

AnyBreakers = Breakers | RedisBreakers


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


# As tests/store/test_budget_backends.py: skipped without Redis, except where it must run.
needs_redis = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_REDIS") or os.environ.get("CI")) and not _redis_up(),
    reason=f"no Redis at {REDIS_URL} (set WARDEN_TEST_REDIS_URL)",
)


class Clock:
    """The state clock; the wall clock is ``NOON + now`` (tests/sre/test_breakers.py)."""

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


def act(tool: str = "payments.refund", agent: str | None = "a1", **context: Any) -> Action:
    """A fresh action: its own args mapping, so a distinct trial."""
    return Action(tool=tool, args={"n": 1}, agent={"id": agent} if agent else {}, context=context)


def feed(b: AnyBreakers, statuses: str, tool: str = "payments.refund") -> list[Transition]:
    """Record one outcome per letter: o ok, e error, t timeout, d denied, k killed."""
    names = {"o": "ok", "e": "error", "t": "timeout", "d": "denied", "k": "killed"}
    out: list[Transition] = []
    for c in statuses:
        out += b.record(act(tool), names[c])
    return out


def state(b: AnyBreakers, key: str = "payments") -> str:
    found = [s for s in b.states() if s.key == key]
    return found[0].state if found else "closed"


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of its own for one test; its keys are deleted afterwards."""
    name = f"wt_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


Make = Callable[..., AnyBreakers]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=needs_redis)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(clock, *specs)``: breakers of that backend (on Redis, all in one namespace)."""
    opened: list[RedisBreakers] = []
    ns = request.getfixturevalue("namespace") if kind == "redis" else ""

    def build(clock: Clock, *specs: BreakerSpec, **kw: Any) -> AnyBreakers:
        if kind == "embedded":
            return Breakers(specs, clock=clock, wall=clock.wall, **kw)
        made = RedisBreakers(specs, REDIS_URL, ns, clock=clock, wall=clock.wall, **kw)
        opened.append(made)
        return made

    yield build
    for b in opened:
        b.close()


def open_breaker(make: Make, clock: Clock, probes: int = 1, open_for: float = 30.0) -> AnyBreakers:
    b = make(clock, spec(consecutive=2, probes=probes, open_for=open_for))
    assert [t.to_state for t in feed(b, "ee")] == ["open"]
    return b


# --- closed → open -----------------------------------------------------------------------


def test_consecutive_failures_open_the_breaker(make: Make) -> None:
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


def test_failure_ratio_needs_min_calls(make: Make) -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=10))
    assert feed(b, "e" * 9) == []  # 100% failures, but below min_calls: never opens
    assert b.check(act()) is None
    (t,) = feed(b, "e")
    assert t.reason == "10 of 10 calls failed in the last 60 s"


def test_failure_ratio_opens_when_it_reaches_the_bound(make: Make) -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=10))
    assert feed(b, "ooooo" + "eeee") == []  # 9 calls
    assert feed(b, "o") == []  # 4 of 10
    assert feed(b, "e") == []  # 5 of 11
    (t,) = feed(b, "e")  # 6 of 12 = 0.5
    assert t.reason == "6 of 12 calls failed in the last 60 s"
    assert b.check(act()) is not None


@pytest.mark.parametrize(("later", "opens"), [(50.0, True), (61.0, False)])
def test_old_failures_leave_the_window(make: Make, later: float, opens: bool) -> None:
    clock = Clock()
    b = make(clock, spec(failure_ratio=0.5, min_calls=4, window=60.0))
    feed(b, "eee")
    clock.now = later  # 60 s in ten buckets of 6 s: at 61 s the first bucket is gone
    transitions = feed(b, "o")
    assert bool(transitions) is opens
    if not opens:
        (s,) = b.states()
        assert (s.calls, s.failures) == (1, 0)


def test_outcomes_of_other_tools_and_keys_are_apart(make: Make) -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=2))
    feed(b, "eeee", tool="fs.read")  # not guarded: the glob is payments.*
    assert b.check(act("fs.read")) is None
    assert b.states() == []
    feed(b, "ee", tool="billing.charge")  # not payments.* either
    feed(b, "ee")
    assert b.check(act("payments.capture")) is not None  # same downstream: payments
    assert b.check(act("payments.refund", downstream="stripe")) is None  # another key


def test_denied_and_killed_outcomes_do_not_count(make: Make) -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=2))
    assert feed(b, "edkdk") == []
    (s,) = b.states()
    assert (s.calls, s.failures, s.consecutive) == (1, 1, 1)
    (t,) = feed(b, "e")  # still in a row: denied and killed neither count nor break it
    assert t.reason == "2 failures in a row"
    assert make(clock, spec(consecutive=1)).record(act(), "killed") == []


# --- open → half-open → closed or open again -----------------------------------------------


def test_open_denies_until_open_for_then_admits_a_trial(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock)
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


def test_transitions_made_by_check_come_out_of_the_next_record(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock)
    clock.now = 30.0
    trial = act()
    assert b.check(trial) is None
    out = b.record(trial, "ok")
    assert [(t.from_state, t.to_state) for t in out] == [
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert out[1].reason == "1 trial calls succeeded"


def test_a_failed_trial_reopens(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock, probes=2)
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


def test_all_trials_ok_close_with_an_empty_window(make: Make) -> None:
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


def test_outcomes_that_are_not_a_trials_do_not_settle_a_half_open_breaker(
    make: Make,
) -> None:
    clock = Clock()
    b = open_breaker(make, clock)
    clock.now = 30.0
    trial = act()
    assert b.check(trial) is None
    b.drain()
    late = act()  # admitted before the breaker opened; its outcome comes only now
    assert b.record(late, "error") == []
    assert b.record(late, "ok") == []
    assert state(b) == "half_open"
    assert b.record(trial, "ok")[0].to_state == "closed"


def test_release_frees_only_the_slot_of_a_trial_and_only_once(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock)
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


def test_a_killed_trial_frees_its_slot_without_settling(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock)
    clock.now = 30.0
    a = act()
    assert b.check(a) is None
    b.drain()
    assert b.record(a, "killed") == []
    assert state(b) == "half_open"
    assert b.check(act()) is None


def test_a_trial_that_never_reports_reopens_after_open_for(make: Make) -> None:
    clock = Clock()
    b = open_breaker(make, clock, open_for=30.0)
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


def test_a_copy_of_the_action_is_the_same_trial(make: Make) -> None:
    """The Governor checks a copy with the effective ring and reports the original."""
    from warden.action import with_agent

    clock = Clock()
    b = open_breaker(make, clock)
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


def hammer(b: AnyBreakers, threads: int, calls: int) -> list[Action]:
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
def test_half_open_admits_exactly_probes_trials_under_concurrency(make: Make, probes: int) -> None:
    clock = Clock()
    b = open_breaker(make, clock, probes=probes)
    for round_ in range(5):
        clock.now = 30.0 + round_ * 100.0  # open_for passed: half-open on the next check
        admitted = hammer(b, threads=8, calls=200)
        assert len(admitted) == probes
        # one transition to half-open, whichever thread saw the probe time first
        assert [t.to_state for t in b.drain()] == ["half_open"]
        (t,) = b.record(admitted[0], "error")  # reopen for the next round
        assert t.to_state == "open"


# --- keys ----------------------------------------------------------------------------------


def test_a_call_without_agent_id_is_not_guarded_by_an_agent_breaker(make: Make) -> None:
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


# --- forced open (cascade containment) -----------------------------------------------------


def test_force_open_creates_an_implicit_agent_breaker(make: Make) -> None:
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


def test_force_open_of_a_declared_breaker_uses_its_open_for(make: Make) -> None:
    clock = Clock()
    b = make(clock, spec(consecutive=5, open_for=60.0))
    t = b.force_open("payments-api", "payments", "operator")
    assert t is not None
    assert t.to_state == "open"
    clock.now = 59.0
    assert b.check(act()) is not None
    clock.now = 60.0
    assert b.check(act()) is None


# --- Redis only: replicas, layout, failing closed, cost -------------------------------------


@pytest.fixture
def replicas(namespace: str) -> Iterator[Callable[..., list[RedisBreakers]]]:
    """``replicas(clock, *specs, n=2)``: ``n`` RedisBreakers sharing one namespace."""
    opened: list[RedisBreakers] = []

    def build(clock: Clock, *specs: BreakerSpec, n: int = 2) -> list[RedisBreakers]:
        made = [
            RedisBreakers(specs, REDIS_URL, namespace, clock=clock, wall=clock.wall)
            for _ in range(n)
        ]
        opened.extend(made)
        return made

    yield build
    for b in opened:
        b.close()


@needs_redis
def test_failures_seen_on_two_replicas_open_the_breaker_on_both(
    replicas: Callable[..., list[RedisBreakers]],
) -> None:
    clock = Clock()
    one, two = replicas(clock, spec(failure_ratio=0.5, min_calls=4))
    assert feed(one, "ee") == []
    assert feed(two, "o") == []
    (t,) = feed(two, "e")  # 3 of 4, counted across both replicas; recorded once, by two
    assert (t.from_state, t.to_state, t.reason) == (
        "closed",
        "open",
        "3 of 4 calls failed in the last 60 s",
    )
    assert one.drain() == []
    reason = (
        "breaker `payments-api` is open for downstream payments "
        "(3 of 4 calls failed in the last 60 s); it probes again at 12:00:30Z"
    )
    assert one.check(act()) == ("payments-api", reason)
    assert two.check(act()) == ("payments-api", reason)
    assert [s.state for s in one.states()] == ["open"]


@needs_redis
def test_a_half_open_probe_is_admitted_on_exactly_one_replica(
    replicas: Callable[..., list[RedisBreakers]],
) -> None:
    clock = Clock()
    one, two = replicas(clock, spec(consecutive=2, probes=1))
    feed(one, "e")
    feed(two, "e")
    assert one.check(act()) is not None
    clock.now = 30.0
    trial = act()
    assert two.check(trial) is None
    refused = one.check(act())
    assert refused is not None
    assert "half-open" in refused[1]
    assert one.drain() == []
    assert [t.to_state for t in two.drain()] == ["half_open"]  # the transition: once
    assert one.record(trial, "error") == []  # not one's trial
    (t,) = two.record(trial, "ok")
    assert (t.from_state, t.to_state) == ("half_open", "closed")
    assert one.check(act()) is None


@needs_redis
@pytest.mark.usefixtures("fast_switching")
def test_replicas_racing_admit_exactly_probes_trials(
    replicas: Callable[..., list[RedisBreakers]],
) -> None:
    clock = Clock()
    made = replicas(clock, spec(consecutive=1, probes=2), n=3)
    feed(made[0], "e")
    clock.now = 30.0
    admitted: list[Action] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def run(b: RedisBreakers) -> None:
        mine = [act() for _ in range(30)]
        barrier.wait()
        for a in mine:
            if b.check(a) is None:
                with lock:
                    admitted.append(a)

    workers = [threading.Thread(target=run, args=(made[i % 3],)) for i in range(6)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(admitted) == 2
    assert sum(len(b.drain()) for b in made) == 1


@needs_redis
def test_the_key_layout(namespace: str, replicas: Callable[..., list[RedisBreakers]]) -> None:
    clock = Clock()
    (b,) = replicas(clock, spec(consecutive=2), n=1)
    feed(b, "ee")
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        value = client.get(f"{namespace}:breaker:payments-api:payments:state")
        assert value == "open|30|1704110430|1704110400|2 failures in a row"
        assert client.exists(f"{namespace}:breaker:payments-api:payments:win") == 0  # cleared
    finally:
        client.close()


def test_an_unreachable_redis_fails_closed() -> None:
    clock = Clock()
    b = RedisBreakers(
        (spec(consecutive=2),), DOWN_URL, "wt_down", clock=clock, wall=clock.wall, timeout=0.2
    )
    assert b.check(act()) == (
        "payments-api",
        "breaker store unreachable (redis://127.0.0.1:1/0): denying",
    )
    assert b.check(act("fs.read")) is None  # no breaker guards it
    assert b.record(act(), "error") == []  # dropped, logged
    b.release(act())
    with pytest.raises(RuntimeStateError, match="breaker store unreachable"):
        b.states()
    with pytest.raises(RuntimeStateError, match="breaker store unreachable"):
        b.force_open("payments-api", "payments", "operator")
    b.close()


@needs_redis
def test_two_governors_share_a_breaker_through_the_environment(
    namespace: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden import ActionDenied, Effect, Governor, load_policy_text

    monkeypatch.setenv("WARDEN_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", namespace)
    text = """apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
sre:
  breakers:
    - {id: pay, scope: downstream, tool: "payments.*", consecutive: 3, open_for: 30s}
"""
    one = Governor(load_policy_text(text), home=tmp_path / "one")
    two = Governor(load_policy_text(text), home=tmp_path / "two")
    assert one.sre is not None and isinstance(one.sre.breakers, RedisBreakers)

    @one.tool("payments.charge")
    def broken() -> None:
        raise RuntimeError("downstream 503")

    with one.session("s1", agent={"id": "bot-1"}):
        for _ in range(3):
            with pytest.raises((RuntimeError, ActionDenied)):
                broken()
    d = two.check(Action(tool="payments.refund", agent={"id": "bot-2"}))
    assert d.effect is Effect.DENY and d.rules == ("breaker:pay",)
    assert "probes again" in d.reasons[0]

    def transitions(gov: Governor) -> list[dict[str, Any]]:
        assert gov.audit is not None
        gov.audit.flush()
        out = [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]
        return [r for r in out if r["type"] == "warden.breaker/v1"]

    assert [(t["from"], t["to"]) for t in transitions(one)] == [("closed", "open")]
    assert transitions(two) == []  # recorded once, by the replica that made it


@needs_redis
def test_the_cost_of_a_check(make: Make, kind: str) -> None:
    """Prints µs per check of a closed and of an open key (loopback Redis vs in process)."""
    clock = Clock()
    b = make(clock, spec(consecutive=2))
    a = act()
    n = 2000
    for _ in range(50):
        b.check(a)
    start = time.perf_counter()
    for _ in range(n):
        assert b.check(a) is None
    closed = (time.perf_counter() - start) / n * 1e6
    feed(b, "ee")
    start = time.perf_counter()
    for _ in range(n):
        assert b.check(a) is not None
    opened = (time.perf_counter() - start) / n * 1e6
    sys.stderr.write(f"\n{kind}: check {closed:.1f} µs closed, {opened:.1f} µs open\n")
    assert closed < 5000


@needs_redis
def test_a_key_forced_open_on_one_replica_is_open_on_the_other(namespace: str) -> None:
    clock = Clock()
    one, two = (
        RedisBreakers(
            (), REDIS_URL, namespace, clock=clock, wall=clock.wall, implicit={"cascade": 300.0}
        )
        for _ in range(2)
    )
    try:
        assert not one and not two
        t = one.force_open("cascade", "agent-x", "cascade from agent-x", open_for=300.0)
        assert t is not None and t.to_state == "open"
        hit = two.check(act("anything", agent="agent-x"))
        assert hit is not None and hit[0] == "cascade"
        assert two.check(act("anything", agent="agent-y")) is None
        assert two  # it knows the breaker now
        clock.now = 300.0
        trial = act("anything", agent="agent-x")
        assert two.check(trial) is None
        assert one.check(act("anything", agent="agent-x")) is not None  # one trial only
        assert two.record(trial, "ok")[-1].to_state == "closed"
        assert one.check(act("anything", agent="agent-x")) is None
    finally:
        one.close()
        two.close()
