"""Anomaly detection (docs/sre.md, "Anomalies"), driven by an injected clock.

Every scenario is simulated time: a clock the test moves, decisions fed one by
one. A naive reference, which keeps every decision and recomputes the windows
and baselines from scratch, is checked against the ring buffers by Hypothesis.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.action import Action, Decision, Effect
from warden.policy.sections import AnomalySpec
from warden.sre import anomaly as anomaly_module
from warden.sre.anomaly import Anomalies, AnomalyAlert, args_size

ALLOW = Decision(Effect.ALLOW)
DENY = Decision(Effect.DENY)
ASK = Decision(Effect.REQUIRE_APPROVAL)
AGENT = "did:example:worker"


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def act(tool: str = "search", agent: str = AGENT, **args: Any) -> Action:
    return Action(tool=tool, args=args, agent={"id": agent})


def make(clock: Clock, egress: Any = lambda tool: tool == "http.post", **spec: Any) -> Anomalies:
    return Anomalies(AnomalySpec(**spec), egress=egress, clock=clock)


def steady(
    anomalies: Anomalies,
    clock: Clock,
    per_minute: float,
    minutes: float,
    action: Action | None = None,
    decide: Any = lambda n: ALLOW,
) -> list[AnomalyAlert]:
    """Calls evenly spaced at ``per_minute`` for ``minutes``; the alerts they raise."""
    action = action or act()
    out: list[AnomalyAlert] = []
    step = 60.0 / per_minute
    for n in range(round(per_minute * minutes)):
        out += anomalies.observe_decision(action, decide(n))
        clock.t += step
    return out


def signals(alerts: list[AnomalyAlert]) -> list[str]:
    return [a.signal for a in alerts]


# --- call rate -----------------------------------------------------------------------


def test_a_tenfold_burst_of_a_steady_agent_alerts_rate() -> None:
    clock = Clock()
    anomalies = make(clock)
    assert steady(anomalies, clock, 20, 60) == []
    alerts = steady(anomalies, clock, 200, 1)
    assert signals(alerts) == ["rate"]  # once: the next 5 min are held back
    alert = alerts[0]
    assert alert.agent == AGENT
    assert alert.baseline == pytest.approx(20.0)
    assert alert.bound == pytest.approx(100.0)  # 5 x 20, above rate_min 30
    assert alert.value == 101  # the first call past the bound
    assert alert.at == pytest.approx(clock.t - 60.0, abs=60.0)
    assert "101 calls in the last minute" in alert.detail
    assert f"`{AGENT}`" in alert.detail


def test_jitter_of_30_percent_never_alerts_over_hours() -> None:
    def run(rate_factor: float) -> list[AnomalyAlert]:
        clock = Clock()
        anomalies = make(clock, rate_factor=rate_factor)
        rng = random.Random(7)  # the test's jitter; the engine has no randomness
        out: list[AnomalyAlert] = []
        for _ in range(6 * 60):
            calls = round(100 * rng.uniform(0.7, 1.3))
            start = clock.t
            for t in sorted(rng.uniform(0, 60) for _ in range(calls)):
                clock.t = start + t
                out += anomalies.observe_decision(act(), ALLOW)
            clock.t = start + 60.0
        return out

    assert run(5.0) == []
    # The same traffic against a tight bound does alert: the detector is live.
    assert "rate" in signals(run(1.2))


def test_rate_min_holds_back_a_burst_of_a_quiet_agent() -> None:
    clock = Clock()
    anomalies = make(clock, learning=5)
    steady(anomalies, clock, 2, 60)
    assert steady(anomalies, clock, 25, 1) == []  # 12.5 x baseline, but not above 30


def test_rate_waits_for_a_first_completed_minute() -> None:
    clock = Clock()
    anomalies = make(clock, learning=5)
    alerts = [anomalies.observe_decision(act(), ALLOW) for _ in range(500)]
    assert all(a == [] for a in alerts)  # no baseline yet, whatever the rate


def test_idle_minutes_lower_the_baseline() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 20, 60)
    assert anomalies.baselines(AGENT)["rate"] == pytest.approx(20.0)
    clock.t += 30 * 60  # one half-life without calls: 60 minutes at 20, then 30 at 0
    # The weighted mean of what was seen: weights 0.5**(age / 30 min) over 90 minutes.
    want = 20 * (0.5 - 0.5**3) / (1 - 0.5**3)
    assert anomalies.baselines(AGENT)["rate"] == pytest.approx(want)
    clock.t += 24 * 3600
    assert anomalies.baselines(AGENT)["rate"] < 1e-9


# --- learning ------------------------------------------------------------------------


def test_learning_is_silent() -> None:
    clock = Clock()
    anomalies = make(clock, learning=50, rate_min=1)
    steady(anomalies, clock, 1, 3, act("warmup"))  # 3 decisions, a baseline of 1/min
    out: list[AnomalyAlert] = []
    for n in range(47):  # a burst of denied new tools, all in learning
        clock.t += 0.1
        out += anomalies.observe_decision(act(f"tool{n}"), DENY)
    assert out == []
    assert anomalies.baselines(AGENT)["learning"] == 0
    # Decision 51 may alert: it is a new tool, at a rate and denial ratio past the bounds.
    assert sorted(signals(anomalies.observe_decision(act("tool-x"), DENY))) == [
        "denial_rate",
        "new_tool",
        "rate",
    ]


# --- new tools -----------------------------------------------------------------------


def test_a_first_ever_tool_alerts_once() -> None:
    clock = Clock()
    anomalies = make(clock, learning=10)
    steady(anomalies, clock, 10, 10)
    alerts = anomalies.observe_decision(act("db.drop"), DENY)
    assert signals(alerts) == ["new_tool"]
    assert alerts[0].value == 2 and alerts[0].baseline == 1 and alerts[0].bound == 1
    assert "`db.drop` for the first time" in alerts[0].detail
    later = steady(anomalies, clock, 10, 30, act("db.drop"))
    assert "new_tool" not in signals(later)
    assert signals(anomalies.observe_decision(act("db.read"), ALLOW)) == ["new_tool"]


def test_a_new_tool_held_back_by_the_refire_limit_alerts_when_next_called() -> None:
    clock = Clock()
    anomalies = make(clock, learning=10)
    steady(anomalies, clock, 10, 10)
    assert signals(anomalies.observe_decision(act("a"), ALLOW)) == ["new_tool"]
    clock.t += 60
    assert anomalies.observe_decision(act("b"), ALLOW) == []  # within 5 min of the last
    clock.t += 240
    assert signals(anomalies.observe_decision(act("b"), ALLOW)) == ["new_tool"]
    assert anomalies.observe_decision(act("a"), ALLOW) == []


def test_new_tool_false_never_alerts_it() -> None:
    clock = Clock()
    anomalies = make(clock, learning=10, new_tool=False)
    steady(anomalies, clock, 10, 10)
    assert anomalies.observe_decision(act("db.drop"), ALLOW) == []


def test_remembered_tools_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomaly_module, "MAX_TOOLS", 3)
    clock = Clock()
    anomalies = make(clock, learning=5)
    for n in range(5):
        anomalies.observe_decision(act(f"t{n}"), ALLOW)
    assert anomalies.baselines(AGENT)["tools"] == 3
    assert signals(anomalies.observe_decision(act("t4"), ALLOW)) == ["new_tool"]
    clock.t += 301
    assert signals(anomalies.observe_decision(act("t4"), ALLOW)) == ["new_tool"]


# --- denials -------------------------------------------------------------------------


def test_a_burst_of_denials_alerts() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 10, 30)
    out = steady(anomalies, clock, 10, 4, decide=lambda n: DENY)
    assert signals(out) == ["denial_rate"]
    alert = out[0]
    assert alert.bound == 0.5 and alert.baseline == 0.0
    assert 0.5 < alert.value < 0.6  # the first denial past half of the window
    assert "decisions in the last 5 min" in alert.detail


def test_a_benign_mix_of_denials_does_not_alert() -> None:
    clock = Clock()
    anomalies = make(clock)
    mix = steady(anomalies, clock, 10, 120, decide=lambda n: DENY if n % 5 == 0 else ALLOW)
    assert mix == []
    assert anomalies.baselines(AGENT)["denials_5m"] == pytest.approx(10, abs=1)


def test_approvals_are_not_denials() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 10, 10)
    assert steady(anomalies, clock, 10, 5, decide=lambda n: ASK) == []


def test_denials_need_ten_decisions_in_the_window() -> None:
    clock = Clock()
    anomalies = make(clock, learning=5)
    steady(anomalies, clock, 1, 5)
    clock.t += 600  # the allows leave the window
    alerts = [anomalies.observe_decision(act(), DENY) for _ in range(9)]
    assert alerts == [[]] * 9  # 9 of 9 denied: too few to mean anything
    (alert,) = anomalies.observe_decision(act(), DENY)
    assert alert.signal == "denial_rate" and alert.value == 1.0
    assert "denied 10 of 10 decisions" in alert.detail


# --- egress --------------------------------------------------------------------------


def egress_spike(tool: str) -> list[AnomalyAlert]:
    """An hour of 10 calls a minute with 1 kB of arguments, then one call with 2 MiB."""
    clock = Clock()
    anomalies = make(clock)
    assert steady(anomalies, clock, 10, 60, act(tool, body="y" * 1000)) == []
    return anomalies.observe_decision(act(tool, body="x" * (2 << 20)), ALLOW)


def test_an_egress_spike_alerts_for_an_egress_tool() -> None:
    (alert,) = egress_spike("http.post")
    assert alert.signal == "egress"
    assert alert.baseline == pytest.approx(50 * args_size({"body": "y" * 1000}))
    assert alert.bound == 1 << 20  # egress_min is above 5 x baseline
    spike, small = args_size({"body": "x" * (2 << 20)}), args_size({"body": "y" * 1000})
    assert alert.value == spike + 48 * small  # the last 5 min: this bucket and 29 before
    assert "bytes to egress tools in the last 5 min" in alert.detail


def test_the_same_spike_to_a_tool_without_egress_does_not_alert() -> None:
    assert egress_spike("db.write") == []


def test_denied_egress_is_not_egress() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 10, 60, act("http.post", body="y" * 1000))
    assert anomalies.observe_decision(act("http.post", body="x" * (2 << 20)), DENY) == []
    assert anomalies.baselines(AGENT)["egress_5m"] == pytest.approx(
        50 * args_size({"body": "y" * 1000}), rel=0.1
    )


def test_egress_above_factor_but_below_egress_min_does_not_alert() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 10, 60, act("http.post", body="y" * 100))
    assert anomalies.observe_decision(act("http.post", body="x" * 500_000), ALLOW) == []
    clock.t += 300
    assert anomalies.observe_decision(act("http.post", body="x" * 600_000), ALLOW) == []


def test_the_egress_predicate_is_asked_once_per_tool() -> None:
    asked: list[str] = []

    def egress(tool: str) -> bool:
        asked.append(tool)
        return True

    clock = Clock()
    anomalies = make(clock, egress=egress)
    steady(anomalies, clock, 10, 1, act("http.post"))
    steady(anomalies, clock, 10, 1, act("http.get"))
    assert asked == ["http.post", "http.get"]


def test_args_size_is_the_length_of_the_canonical_json() -> None:
    samples: list[dict[str, Any]] = [{}, {"b": 1, "a": "é€😀", "n": None, "l": [1, {"x": "y"}]}]
    for args in samples:
        assert args_size(args) == len(rfc8785.dumps(args))
    odd: dict[Any, Any] = {"o": object(), 3: b"\x00"}
    assert args_size(odd) > 0  # not JSON: measured by its repr, never raises


# --- re-fire, determinism, bounds ----------------------------------------------------


def test_an_alert_refires_at_most_once_per_signal_per_5_min() -> None:
    clock = Clock()
    anomalies = make(clock, rate_factor=2)  # the burst stays above 2x a baseline that rises
    steady(anomalies, clock, 20, 60)
    alerts = steady(anomalies, clock, 200, 12, decide=lambda n: DENY)
    rate = [a.at for a in alerts if a.signal == "rate"]
    denial = [a.at for a in alerts if a.signal == "denial_rate"]
    assert len(rate) == 3 and len(denial) == 3  # at 0, 5 and 10 min of the 12
    for times in (rate, denial):
        assert all(b - a >= 300 for a, b in itertools.pairwise(times))


def test_the_same_inputs_give_the_same_alerts() -> None:
    def run() -> list[AnomalyAlert]:
        clock = Clock()
        anomalies = make(clock, learning=20)
        out = steady(anomalies, clock, 20, 40, act("http.post", body="y" * 100))
        out += steady(anomalies, clock, 300, 2, act("http.post", body="x" * 9000))
        out += steady(anomalies, clock, 20, 6, act("new"), decide=lambda n: DENY)
        return out

    first = run()
    assert sorted(signals(first)) == ["denial_rate", "egress", "new_tool", "rate"]
    assert run() == first


def test_actions_without_an_agent_id_are_not_tracked() -> None:
    clock = Clock()
    anomalies = make(clock, learning=0)
    assert anomalies.observe_decision(Action(tool="x"), DENY) == []
    assert anomalies.observe_decision(Action(tool="x", agent={"id": 7}), DENY) == []
    assert len(anomalies) == 0
    assert anomalies.baselines("nobody") == {}


def test_agents_are_bounded_least_recently_seen_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(anomaly_module, "MAX_AGENTS", 3)
    clock = Clock()
    anomalies = make(clock)
    for name in ("a", "b", "c", "a", "d"):
        anomalies.observe_decision(act(agent=name), ALLOW)
    assert len(anomalies) == 3
    assert anomalies.baselines("b") == {}
    assert anomalies.baselines("a")["decisions"] == 2


def test_a_clock_that_goes_back_counts_in_the_current_bucket() -> None:
    clock = Clock()
    anomalies = make(clock)
    steady(anomalies, clock, 10, 3)
    clock.t -= 3600
    assert anomalies.observe_decision(act(), ALLOW) == []
    assert anomalies.baselines(AGENT)["decisions"] == 31


# --- the ring buffers against a naive reference --------------------------------------


class Reference:
    """Keeps every decision; recomputes windows and baselines from scratch."""

    def __init__(self, egress: set[str]) -> None:
        self.events: list[tuple[float, bool, int]] = []  # (t, denied, egress bytes)
        self.egress = egress

    def add(self, t: float, action: Action, decision: Decision) -> None:
        size = 0
        if decision.effect is Effect.ALLOW and action.tool in self.egress:
            size = args_size(action.args)
        self.events.append((t, decision.effect is Effect.DENY, size))

    def view(self, now: float) -> dict[str, float]:
        t0 = self.events[0][0]
        buckets = [(int((t - t0) / 10), d, s) for t, d, s in self.events]
        cur = max(int((now - t0) / 10), *(b for b, _, _ in buckets))
        last1 = [e for e in buckets if cur - 6 < e[0]]
        last5 = [e for e in buckets if cur - 30 < e[0]]

        def ewma(per: int, value: Callable[[Any], int], half_lives: float) -> float:
            done = cur // per  # completed periods 0 .. done - 1
            if done == 0:
                return 0.0
            d: float = 0.5 ** (1 / half_lives)
            xs = [sum(value(e) for e in buckets if e[0] // per == k) for k in range(done)]
            ws = [(1 - d) * d ** (done - 1 - k) for k in range(done)]
            return sum(w * x for w, x in zip(ws, xs, strict=True)) / sum(ws)

        return {
            "decisions": len(self.events),
            "rate": ewma(6, lambda e: 1, 30),
            "egress": ewma(30, lambda e: e[2], 6),
            "calls_1m": len(last1),
            "decisions_5m": len(last5),
            "denials_5m": sum(1 for e in last5 if e[1]),
            "egress_5m": sum(e[2] for e in last5),
        }


@st.composite
def traffic(draw: Any) -> list[tuple[float, str, Decision, int]]:
    steps = st.tuples(
        st.one_of(
            st.floats(0, 12, allow_nan=False),
            st.floats(0, 400, allow_nan=False),
            st.sampled_from([0.0, 10.0, 55.0, 59.99, 60.0, 290.0, 295.0, 300.0, 3600.0]),
        ),
        st.sampled_from(["http.post", "search"]),
        st.sampled_from([ALLOW, DENY, ASK]),
        st.integers(0, 300),
    )
    return list(draw(st.lists(steps, min_size=1, max_size=120)))


@given(traffic())
@settings(max_examples=150, deadline=None)
def test_windows_and_baselines_match_a_naive_reference(
    steps: list[tuple[float, str, Decision, int]],
) -> None:
    clock = Clock(1000.0)
    anomalies = make(clock, learning=10**9)
    ref = Reference({"http.post"})
    for gap, tool, decision, size in steps:
        clock.t += gap
        action = act(tool, body="z" * size)
        anomalies.observe_decision(action, decision)
        ref.add(clock.t, action, decision)
    for later in (0.0, 7.0, 61.0):
        clock.t += later
        got, want = anomalies.baselines(AGENT), ref.view(clock.t)
        for key, value in want.items():
            assert math.isclose(got[key], value, rel_tol=1e-9, abs_tol=1e-6), (key, later)
