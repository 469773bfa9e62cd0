"""SLOs and error budgets (docs/sre.md, "SLOs and error budgets"), on an injected clock.

The arithmetic is checked against hand-computed cases, the burn-rate alerts
against a simulated outage, and the bucketed windows against a naive
recount of the raw events (Hypothesis).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.action import Action
from warden.policy.sections import AlertSpec, SLOSpec
from warden.sre.slo import SLOs, SLOStatus, slo_key, window_label

T0 = 3_600_000.0  # a multiple of 10 s, 5 min and 1 h: buckets start on it


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def spec(**kw: Any) -> SLOSpec:
    base: dict[str, Any] = {
        "id": "refunds",
        "scope": "tool",
        "tools": ("payments.*",),
        "objective": "success",
        "target": 0.995,
    }
    base.update(kw)
    return SLOSpec(**base)


def act(tool: str = "payments.refund", agent: str | None = "a1") -> Action:
    return Action(tool=tool, agent={"id": agent} if agent else {})


def one(slos: SLOs, key: str = "payments.refund") -> SLOStatus:
    (found,) = [s for s in slos.status() if s.key == key]
    return found


def feed(slos: SLOs, ok: int, bad: int, action: Action | None = None) -> None:
    for _ in range(ok):
        slos.record(action or act(), "ok", 1_000)
    for _ in range(bad):
        slos.record(action or act(), "error", 1_000)


# --- budget arithmetic ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "ok", "bad", "budget", "remaining", "burn"),
    [
        (0.995, 9_999, 1, 50.0, 0.98, 0.02),  # one failure barely dents a 99.5% budget
        (0.99, 99, 1, 1.0, 0.0, 1.0),  # exactly the budget: nothing left
        (0.99, 196, 4, 2.0, -1.0, 2.0),  # twice the budget: remaining below 0
        (0.9, 10, 0, 1.0, 1.0, 0.0),
        (0.999, 990, 10, 1.0, -9.0, 10.0),
    ],
)
def test_budget_arithmetic(
    target: float, ok: int, bad: int, budget: float, remaining: float, burn: float
) -> None:
    slos = SLOs((spec(target=target, min_events=100),), clock=Clock())
    feed(slos, ok, bad)
    s = one(slos)
    assert (s.eligible, s.bad, s.budget) == (ok + bad, bad, budget)
    assert s.remaining == remaining
    assert s.burn_rates == {"5m": burn, "1h": burn, "30m": burn, "6h": burn, "3d": burn}
    assert s.exhausted is (remaining <= 0)


def test_one_failure_does_not_exhaust_a_large_window() -> None:
    clock = Clock()
    slos = SLOs((spec(target=0.995, enforce="deny"),), clock=clock)
    for i in range(10_000):  # one call a minute for about a week
        clock.now = T0 + 60.0 * i
        slos.record(act(), "error" if i == 5_000 else "ok", 1_000)
    s = one(slos)
    assert (s.eligible, s.bad, s.budget, s.remaining) == (10_000, 1, 50.0, 0.98)
    assert s.firing == ()
    assert not s.exhausted
    assert slos.enforcement(act()) is None
    assert max(s.burn_rates.values()) < 1.0


def test_no_eligible_event_consumes_nothing() -> None:
    clock = Clock()
    slos = SLOs((spec(window=3600.0),), clock=clock)
    for status in ("denied", "killed"):
        assert slos.record(act(), status, 10**12) == []
    assert slos.status() == []
    feed(slos, 0, 5)
    clock.now = T0 + 4 * 86400.0  # every event has left every window, 3 d included
    s = one(slos)
    assert (s.eligible, s.bad, s.budget, s.remaining) == (0, 0, 0.0, 1.0)
    assert set(s.burn_rates.values()) == {0.0}


def test_latency_objective() -> None:
    slos = SLOs((spec(objective="latency", threshold=0.5, target=0.9),), clock=Clock())
    ms = 1_000_000
    slos.record(act(), "ok", 400 * ms)  # good
    slos.record(act(), "ok", 500 * ms)  # good: at most the threshold
    slos.record(act(), "ok", 500 * ms + 1)  # bad: slower
    slos.record(act(), "error", 1 * ms)  # bad: not ok, however fast
    slos.record(act(), "timeout", 1 * ms)  # bad
    slos.record(act(), "denied", 10_000 * ms)  # not eligible
    s = one(slos)
    assert (s.objective, s.eligible, s.bad) == ("latency", 5, 3)


def test_success_objective_ignores_latency() -> None:
    slos = SLOs((spec(),), clock=Clock())
    slos.record(act(), "ok", 10**12)
    assert (one(slos).eligible, one(slos).bad) == (1, 0)


# --- keys ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "action", "key"),
    [
        ("tool", act("payments.refund"), "payments.refund"),
        ("agent", act(agent="did:web:a"), "did:web:a"),
        ("agent", act(agent=None), None),
        ("agent", Action(tool="t", agent={"id": ["x"]}), None),
        ("global", act(agent=None), "*"),
    ],
)
def test_slo_key(scope: str, action: Action, key: str | None) -> None:
    assert slo_key(spec(scope=scope), action) == key


def test_only_covered_calls_count() -> None:
    slos = SLOs((spec(scope="agent"), spec(id="all", scope="global", tools=None)), clock=Clock())
    feed(slos, 2, 1, act("fs.read"))  # outside payments.*: only the global SLO
    feed(slos, 1, 0, act(agent=None))  # no agent id: not under the agent SLO
    got = {(s.slo, s.key): (s.eligible, s.bad) for s in slos.status()}
    assert got == {("all", "*"): (4, 1)}
    feed(slos, 1, 1, act(agent="a1"))
    got = {(s.slo, s.key): (s.eligible, s.bad) for s in slos.status()}
    assert got == {("refunds", "a1"): (2, 1), ("all", "*"): (6, 2)}


def test_keys_are_bounded_and_exhausted_keys_are_kept() -> None:
    slos = SLOs(
        (spec(scope="agent", target=0.9, min_events=1, enforce="deny"),),
        clock=Clock(),
        max_keys=3,
    )
    feed(slos, 0, 1, act(agent="bad"))
    for i in range(5):
        feed(slos, 1, 0, act(agent=f"a{i}"))
    assert [s.key for s in slos.status()] == ["a3", "a4", "bad"]
    assert slos.enforcement(act(agent="bad")) is not None


def test_an_evicted_firing_key_reports_its_alerts_resolved() -> None:
    alert = AlertSpec(1.0, 60.0, 10.0, "ticket")
    slos = SLOs((spec(scope="agent", alerts=(alert,)),), clock=Clock(), max_keys=1)
    (fired,) = slos.record(act(agent="a"), "error", 0)
    assert (fired.key, fired.state) == ("a", "firing")
    (gone,) = slos.record(act(agent="b"), "ok", 0)
    assert (gone.key, gone.state) == ("a", "resolved")
    assert [s.key for s in slos.status()] == ["b"]


# --- enforcement -------------------------------------------------------------------------


def test_min_events_gates_enforcement() -> None:
    slos = SLOs((spec(target=0.9, min_events=100, enforce="deny"),), clock=Clock())
    feed(slos, 0, 99)
    assert one(slos).remaining < 0
    assert slos.enforcement(act()) is None  # 99 events: too few to enforce anything
    feed(slos, 0, 1)
    hit = slos.enforcement(act())
    assert hit is not None
    assert hit[0].id == "refunds"
    assert hit[1] == (
        "the error budget of slo `refunds` is exhausted for tool payments.refund: "
        "remaining -9 (100 bad of 100 events in 30d, budget 10)"
    )
    assert slos.enforcement(act("payments.capture")) is None  # another key


def test_enforce_none_only_alerts_and_the_first_enforcing_slo_wins() -> None:
    slos = SLOs(
        (
            spec(id="watch", target=0.9, min_events=1),
            spec(id="gate", target=0.9, min_events=1, enforce="require_approval"),
        ),
        clock=Clock(),
    )
    feed(slos, 0, 1)
    assert all(s.exhausted for s in slos.status())
    hit = slos.enforcement(act())
    assert hit is not None
    assert (hit[0].id, hit[0].enforce) == ("gate", "require_approval")
    assert "slo `gate`" in hit[1]


@pytest.mark.parametrize(
    "alerts",
    [
        (AlertSpec(14.4, 3600.0, 300.0),),  # the coarse ring is the SLO window
        (AlertSpec(1.0, 3 * 86400.0, 6 * 3600.0),),  # the coarse ring is longer (3 d)
    ],
)
def test_enforcement_lifts_when_bad_events_leave_the_window(alerts: tuple[AlertSpec]) -> None:
    clock = Clock()
    s = spec(target=0.9, min_events=10, window=3600.0, enforce="deny", alerts=alerts)
    slos = SLOs((s,), clock=clock)
    feed(slos, 0, 10)
    # 12 coarse buckets of 5 min: the events' bucket leaves one hour after it started
    clock.now = T0 + 3599.0
    assert slos.enforcement(act()) is not None
    clock.now = T0 + 3600.0
    assert slos.enforcement(act()) is None  # no new traffic needed
    assert not one(slos).exhausted


def test_enforcement_lifts_when_good_events_refill_the_budget() -> None:
    slos = SLOs((spec(target=0.9, min_events=10, enforce="deny"),), clock=Clock())
    feed(slos, 8, 2)  # remaining 1 - 2/1 = -1
    assert slos.enforcement(act()) is not None
    feed(slos, 10, 0)  # 2 bad of 20: remaining 0, still exhausted
    assert slos.enforcement(act()) is not None
    feed(slos, 1, 0)  # 2 of 21: budget 2.1
    assert slos.enforcement(act()) is None


# --- burn-rate alerts --------------------------------------------------------------------


def outage(
    slos: SLOs, clock: Clock, start: float, until: float, errors: tuple[float, float]
) -> list[Any]:
    """One call a second from ``start`` to ``until``; errors in [errors[0], errors[1])."""
    events = []
    t = start
    while t < until:
        clock.now = t
        status = "error" if errors[0] <= t < errors[1] else "ok"
        events += slos.record(act(), status, 1_000)
        t += 1.0
    return events


def test_fast_burn_page_fires_and_resolves_at_the_right_times() -> None:
    """A full 60 s outage at 99.9%, one call a second, after six good hours.

    1h/5m at 14.4x needs 1h bad >= 0.0144 * ~3600 = 51.8: the 52nd error, at
    outage + 51 s. It resolves when the 5 min window holds fewer than 0.0144 *
    300 = 4.3 bad: exactly, at outage + 355 s; with 10 s buckets, when the
    last error bucket leaves, at outage + 350 s. 6h/30m at 6x would need 130
    bad in the 6 h window: it does not fire.
    """
    clock = Clock()
    slos = SLOs((spec(target=0.999),), clock=clock, evaluate_every=1.0)
    bad_start = T0 + 6 * 3600.0
    events = outage(slos, clock, T0, bad_start + 600.0, (bad_start, bad_start + 60.0))
    page = [e for e in events if e.long == 3600.0]
    assert [e.state for e in page] == ["firing", "resolved"]
    fired, resolved = page
    assert abs(fired.at - (bad_start + 51.0)) <= 10.0
    assert fired.burn_long >= 14.4
    assert fired.burn_short >= 14.4
    assert (fired.severity, fired.burn, fired.short) == ("page", 14.4, 300.0)
    assert abs(resolved.at - (bad_start + 355.0)) <= 10.0
    assert resolved.burn_long >= 14.4  # the long window still burns: the short one recovered
    assert resolved.burn_short < 14.4
    assert not [e for e in events if e.long == 6 * 3600.0]  # 6h/30m: never fired


def test_fast_burn_page_fires_exactly_on_the_bucket_count() -> None:
    """The same outage: with 10 s buckets the exact times are 51 s and 350 s."""
    clock = Clock()
    slos = SLOs((spec(target=0.999),), clock=clock, evaluate_every=1.0)
    bad_start = T0 + 6 * 3600.0
    events = outage(slos, clock, T0, bad_start + 600.0, (bad_start, bad_start + 60.0))
    page = [e for e in events if e.long == 3600.0]
    assert [(e.state, e.at - bad_start) for e in page] == [("firing", 51.0), ("resolved", 350.0)]


def test_firing_alerts_show_in_status_and_evaluate_resolves_idle_keys() -> None:
    clock = Clock()
    slos = SLOs((spec(target=0.999),), clock=clock, evaluate_every=1.0)
    bad_start = T0 + 6 * 3600.0
    outage(slos, clock, T0, bad_start + 60.0, (bad_start, bad_start + 60.0))
    s = one(slos)
    # 6 h of good calls first: 60 bad in the 6 h window is 2.8x, under 6x but over 1x
    assert s.firing == ("14.4x 1h/5m", "1x 3d/6h")
    assert s.burn_rates["6h"] == pytest.approx(60 / 21_600 / 0.001, rel=1e-3)
    clock.now = bad_start + 400.0  # no traffic since: only evaluate() can notice
    assert one(slos).firing == s.firing
    (e,) = slos.evaluate()
    assert (e.long, e.state) == (3600.0, "resolved")
    assert one(slos).firing == ("1x 3d/6h",)
    clock.now = bad_start + 7 * 3600.0
    (e,) = slos.evaluate()
    assert (e.long, e.state) == (3 * 86400.0, "resolved")


def test_alerts_are_evaluated_at_most_every_evaluate_every_seconds() -> None:
    alert = AlertSpec(1.0, 60.0, 10.0, "ticket")
    clock = Clock()
    slos = SLOs((spec(target=0.9, alerts=(alert,), min_events=10**6),), clock=clock)
    assert slos.record(act(), "ok", 0) == []  # first event: evaluated, nothing burns
    clock.now += 1.0
    assert slos.record(act(), "error", 0) == []  # 1 s later: not evaluated yet
    clock.now += 9.0
    (e,) = slos.record(act(), "error", 0)
    assert (e.state, e.at) == ("firing", T0 + 10.0)


def test_window_label() -> None:
    assert [window_label(s) for s in (300.0, 3600.0, 1800.0, 86400 * 3.0, 90.0, 0.5)] == [
        "5m",
        "1h",
        "30m",
        "3d",
        "90s",
        "500ms",
    ]


# --- differential: bucketed windows against a recount of the raw events --------------------


ALERTS = (AlertSpec(2.0, 600.0, 60.0), AlertSpec(1.0, 4 * 3600.0, 7 * 3600.0, "ticket"))


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.0, 900.0, allow_nan=False),
            st.sampled_from(["ok", "ok", "ok", "error", "timeout", "denied"]),
            st.integers(0, 2_000_000_000),
        ),
        max_size=60,
    ),
    st.floats(0.0, 40_000.0, allow_nan=False),
    st.sampled_from([2, 8]),
)
def test_windows_match_a_recount_of_the_events(
    steps: list[tuple[float, str, int]], after: float, hours: int
) -> None:
    """With an SLO window of 2 h, the 7 h alert window is longer than it: both hold."""
    clock = Clock()
    s = spec(objective="latency", threshold=1.0, window=hours * 3600.0, alerts=ALERTS)
    slos = SLOs((s,), clock=clock)
    raw: list[tuple[float, bool]] = []
    for dt, status, ns in steps:
        clock.now += dt
        slos.record(act(), status, ns)
        if status != "denied":
            raw.append((clock.now, status != "ok" or ns > 1_000_000_000))
    clock.now += after
    if not raw:
        assert slos.status() == []
        return
    got = one(slos)

    def count(width: float, buckets: int) -> tuple[int, int]:
        first = int(clock.now // width) - buckets + 1
        inside = [bad for t, bad in raw if int(t // width) >= first]
        return len(inside), sum(inside)

    def burn(e: int, b: int) -> float:
        return round(b / e / (1 - s.target), 9) if e else 0.0

    e, b = count(300.0, hours * 12)  # the SLO window in 5 min buckets
    assert (got.eligible, got.bad) == (e, b)
    assert got.burn_rates["10m"] == burn(*count(10.0, 60))
    assert got.burn_rates["1m"] == burn(*count(10.0, 6))
    assert got.burn_rates["4h"] == burn(*count(10.0, 1440))
    assert got.burn_rates["7h"] == burn(*count(300.0, 84))  # over 6 h: coarse buckets
