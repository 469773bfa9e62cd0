"""Budgets and rate limits (docs/runtime.md, "Budgets"): directly and through a Governor.

Rates are tested with an injected clock. The property tests pin down what GCRA
guarantees. With ``step = per / calls`` and exact arithmetic:

* safety: any ``k`` allowed calls span at least ``(k - calls) * step`` seconds, so a
  window of length ``W`` holds at most ``calls + floor(W / step)`` allowed calls:
  ``calls`` in any window shorter than ``step``, and up to ``2 * calls - 1`` in a
  window of length ``per`` (a burst, then one call per ``step``);
* liveness: a call is allowed whenever fewer than ``calls`` calls were allowed in
  the half-open window ``(t - per, t]`` before it.

GCRA is therefore never stricter than an exact sliding-window count, but it is not
"at most N in any window of `per`" (a test below shows the difference).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden import Action, ActionDenied, Effect, Governor, load_policy_text
from warden.policy import Policy
from warden.policy.sections import BudgetSpec
from warden.runtime import budgets as budgets_module
from warden.runtime.budgets import Budgets

HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"
RULES = (
    "rules:\n"
    "  - {id: allow-all, effect: allow}\n"
    "  - {id: no-drop, tool: db.drop, effect: deny}\n"
    "  - {id: ask, tool: payments.big, effect: require_approval}\n"
    "  - {id: pay, tool: payments.card, effect: allow, redact: [card]}\n"
)


class Clock:
    """A settable clock for Budgets (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(budgets_yaml: str, extra: str = "") -> Policy:
    return load_policy_text(HEAD + RULES + extra + "budgets:\n" + budgets_yaml)


def specs(budgets_yaml: str) -> tuple[BudgetSpec, ...]:
    return policy(budgets_yaml).budgets


def make(budgets_yaml: str, clock: Callable[[], float] | None = None) -> Budgets:
    return Budgets(specs(budgets_yaml), clock=clock) if clock else Budgets(specs(budgets_yaml))


def act(
    tool: str = "fs.read", agent: object = "a1", session: str | None = "s1", **args: Any
) -> Action:
    return Action(tool=tool, agent={"id": agent}, session=session, args=args)


def run_out(b: Budgets, action: Action, limit: int = 1000) -> int:
    """How many checks of ``action`` pass before the first refusal."""
    for n in range(limit):
        if b.check(action) is not None:
            return n
    return limit


# --- lifetime call budgets, directly -----------------------------------------------------


def test_no_budgets_admit_everything() -> None:
    b = Budgets(())
    assert not b
    assert all(b.check(act()) is None for _ in range(100))
    assert b.usage() == []


def test_a_global_budget_counts_every_allowed_call() -> None:
    b = make("  - {id: g, calls: 3}\n")
    assert b
    assert [b.check(act(agent=f"a{i}", session=f"s{i}", tool=f"t{i}")) for i in range(3)] == [
        None,
        None,
        None,
    ]
    assert b.check(act(agent="new", session="new", tool="new")) == (
        "g",
        "budget `g`: 3 of 3 calls used in all",
    )
    assert b.check(act()) is not None  # it stays spent


@pytest.mark.parametrize(
    ("scope", "other", "where"),
    [
        ("session", {"session": "s2"}, "for session s1"),
        ("agent", {"agent": "a2"}, "for agent a1"),
        ("tool", {"tool": "fs.write"}, "for tool fs.read"),
    ],
)
def test_one_counter_per_scope_value(scope: str, other: dict[str, Any], where: str) -> None:
    b = make(f"  - {{id: per-{scope}, scope: {scope}, calls: 2}}\n")
    assert b.check(act()) is None
    assert b.check(act()) is None
    assert b.check(act()) == (f"per-{scope}", f"budget `per-{scope}`: 2 of 2 calls used {where}")
    # Another value of the scope has its own counter; the other fields do not matter.
    assert b.check(act(**other)) is None
    assert b.check(act(**other)) is None
    assert b.check(act(**other)) is not None


def test_a_scope_list_keys_by_the_tuple() -> None:
    b = make("  - {id: at, scope: [agent, tool], calls: 1}\n")
    assert b.check(act(agent="a1", tool="t1", session="x")) is None
    assert b.check(act(agent="a1", tool="t1", session="y")) == (
        "at",
        "budget `at`: 1 of 1 calls used for agent a1, tool t1",
    )
    assert b.check(act(agent="a1", tool="t2")) is None
    assert b.check(act(agent="a2", tool="t1")) is None
    assert b.check(act(agent="a2", tool="t2")) is None
    (snap,) = b.usage()
    assert snap["calls"] == {("a1", "t1"): 1, ("a1", "t2"): 1, ("a2", "t1"): 1, ("a2", "t2"): 1}


def test_missing_scope_values_share_one_null_counter() -> None:
    b = make("  - {id: s, scope: [session], calls: 2}\n  - {id: a, scope: agent, calls: 3}\n")
    assert b.check(act(session=None, agent="x")) is None
    assert b.check(act(session=None, agent="y")) is None
    over = b.check(act(session=None, agent="z"))
    assert over is not None
    assert over[0] == "s"
    b = make("  - {id: a, scope: agent, calls: 3}\n")
    assert b.check(Action(tool="t")) is None  # no agent at all
    assert b.check(act(agent=7)) is None  # not a string
    assert b.check(act(agent=None)) is None
    assert b.check(act(agent=["x"])) is not None
    assert b.check(act(agent="x")) is None
    (snap,) = b.usage()
    assert snap["calls"] == {(None,): 3, ("x",): 1}


def test_the_tool_filter_decides_which_calls_count() -> None:
    b = make(
        '  - {id: pay, tool: "payments.*", calls: 2}\n'
        '  - {id: two, tool: ["db.write", "fs.rm*"], scope: tool, calls: 1}\n'
    )
    for _ in range(10):
        assert b.check(act(tool="fs.read")) is None
    assert b.check(act(tool="payments.refund")) is None
    assert b.check(act(tool="payments.charge")) is None
    assert b.check(act(tool="payments.refund")) == (
        "pay",
        "budget `pay`: 2 of 2 calls used in all",
    )
    assert b.check(act(tool="payments")) is None  # the glob is `payments.*`
    assert b.check(act(tool="db.write")) is None
    assert b.check(act(tool="db.write")) is not None
    assert b.check(act(tool="fs.rmdir")) is None  # scope: tool, its own counter
    assert b.check(act(tool="fs.rmdir")) is not None


def test_a_refused_call_consumes_no_other_budget() -> None:
    b = make("  - {id: wide, calls: 10}\n  - {id: narrow, scope: agent, calls: 1}\n")
    assert b.check(act(agent="x")) is None
    for _ in range(5):
        assert b.check(act(agent="x")) == (
            "narrow",
            "budget `narrow`: 1 of 1 calls used for agent x",
        )
    wide, narrow = b.usage()
    assert wide["calls"] == {(): 1}
    assert narrow["calls"] == {("x",): 1}
    for i in range(9):
        assert b.check(act(agent=f"other{i}")) is None
    assert b.check(act(agent="other9")) == ("wide", "budget `wide`: 10 of 10 calls used in all")


def test_the_first_declared_budget_that_is_spent_is_named() -> None:
    b = make("  - {id: first, calls: 1}\n  - {id: second, calls: 1}\n")
    assert b.check(act()) is None
    over = b.check(act())
    assert over is not None
    assert over[0] == "first"


# --- rates (`calls` with `per`), directly --------------------------------------------------


def test_a_rate_allows_a_burst_then_one_call_per_step() -> None:
    clock = Clock(1000.0)
    b = make("  - {id: rate, scope: agent, calls: 5, per: 1m}\n", clock)
    for _ in range(5):
        assert b.check(act()) is None
    assert b.check(act()) == (
        "rate",
        "budget `rate`: more than 5 calls per 60 s for agent a1 (next in 12.00 s)",
    )
    clock.now = 1006.5
    over = b.check(act())
    assert over is not None
    assert over[1].endswith("(next in 5.50 s)")
    assert b.check(act(agent="a2")) is None  # another key has its own rate
    clock.now = 1012.0  # one step (60 s / 5) later: exactly one more
    assert b.check(act()) is None
    assert b.check(act()) is not None


def test_a_rate_is_fully_available_again_after_a_quiet_window() -> None:
    clock = Clock(1000.0)
    b = make("  - {id: rate, calls: 5, per: 1m}\n", clock)
    assert run_out(b, act()) == 5
    clock.now = 1060.0
    assert run_out(b, act()) == 5
    clock.now = 1060.0 + 3600.0
    assert run_out(b, act()) == 5  # idle time does not bank more than one burst


def test_a_denied_call_does_not_push_the_rate_back() -> None:
    clock = Clock(0.0)
    b = make("  - {id: rate, calls: 2, per: 10s}\n", clock)
    assert run_out(b, act()) == 2
    for t in (1.0, 2.0, 3.0, 4.0):  # refusals leave the state alone
        clock.now = t
        assert b.check(act()) is not None
    clock.now = 5.0
    assert b.check(act()) is None


def test_a_rate_and_a_lifetime_limit_in_one_budget() -> None:
    clock = Clock(0.0)
    b = make("  - {id: both, calls: 2, per: 1s, tokens: 10}\n", clock)
    assert run_out(b, act()) == 2
    b.report(act(), tokens=10)
    clock.now = 100.0
    assert b.check(act()) == ("both", "budget `both`: 10 of 10 tokens used in all")


def test_idle_rate_keys_are_evicted_without_changing_answers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(budgets_module, "_MAX_RATE_KEYS", 3)
    clock = Clock(0.0)
    b = make("  - {id: rate, scope: agent, calls: 1, per: 10s}\n", clock)
    for name in ("a", "b", "c"):
        assert b.check(act(agent=name)) is None
    clock.now = 5.0
    assert b.check(act(agent="d")) is None  # full, but nothing is idle yet: kept
    assert len(b.usage()[0]["calls"]) == 4
    assert b.check(act(agent="a")) is not None  # still limited
    clock.now = 10.0
    assert b.check(act(agent="e")) is None  # a, b, c are idle (TAT <= now): dropped
    assert set(b.usage()[0]["calls"]) == {("d",), ("e",)}
    assert b.check(act(agent="a")) is None  # a fresh key, as it would be anyway
    assert b.check(act(agent="d")) is not None  # d was not idle: still limited


SHAPES = st.tuples(
    st.integers(min_value=1, max_value=6),  # calls
    st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0]),  # step = per / calls (exact in binary)
)
# Request times on a 1/8 s grid from 1024 s: every sum GCRA forms is exact in floats,
# so the checks below hold with no tolerance at all.
TIMES = st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=60).map(
    lambda ticks: [1024.0 + t / 8 for t in sorted(ticks)]
)


def simulate(calls: int, per: float, times: list[float]) -> list[bool]:
    clock = Clock(times[0])
    b = Budgets((BudgetSpec("r", ("global",), None, calls, per, None, None, 1, 1),), clock)
    out = []
    for t in times:
        clock.now = t
        out.append(b.check(act()) is None)
    return out


@settings(max_examples=300, deadline=None)
@given(SHAPES, TIMES)
def test_gcra_safety_any_k_allowed_calls_span_at_least_k_minus_n_steps(
    shape: tuple[int, float], times: list[float]
) -> None:
    calls, step = shape
    per = calls * step
    allowed = [t for t, ok in zip(times, simulate(calls, per, times), strict=True) if ok]
    for i in range(len(allowed)):
        for j in range(i, len(allowed)):
            k = j - i + 1
            assert allowed[j] - allowed[i] >= (k - calls) * step
        # Corollaries: `calls` in any window shorter than a step, and fewer than
        # 2 * calls in any window [t, t + per).
        assert sum(1 for t in allowed if allowed[i] <= t < allowed[i] + step) <= calls
        assert sum(1 for t in allowed if allowed[i] <= t < allowed[i] + per) <= 2 * calls - 1


@settings(max_examples=300, deadline=None)
@given(SHAPES, TIMES)
def test_gcra_liveness_fewer_than_n_in_the_last_window_means_allowed(
    shape: tuple[int, float], times: list[float]
) -> None:
    calls, step = shape
    per = calls * step
    allowed: list[float] = []
    for t, ok in zip(times, simulate(calls, per, times), strict=True):
        recent = sum(1 for s in allowed if t - per < s <= t)
        if recent < calls:
            assert ok, f"refused at {t} with only {recent} allowed in ({t - per}, {t}]"
        if ok:
            allowed.append(t)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=50),
    st.floats(min_value=0.001, max_value=86400.0),
    st.floats(min_value=0.0, max_value=1e7),
    st.lists(st.floats(min_value=0.0, max_value=10.0), min_size=1, max_size=60),
)
def test_gcra_safety_holds_for_any_float_rate_and_clock(
    calls: int, per: float, start: float, gaps: list[float]
) -> None:
    times = [start]
    for g in gaps[1:]:
        times.append(times[-1] + g * per / calls)
    allowed = [t for t, ok in zip(times, simulate(calls, per, times), strict=True) if ok]
    step = per / calls
    slack = 1e-9 * max(1.0, start + sum(gaps) * step)
    for i in range(len(allowed)):
        for j in range(i + calls, len(allowed)):
            assert allowed[j] - allowed[i] >= (j - i + 1 - calls) * step - slack


@pytest.mark.parametrize(
    ("calls", "per", "start"),
    [(9, "1s", 0.0), (3, "1s", 12345.678), (10, "1s", 1.0), (17, "1m", 0.0), (7, "100ms", 0.0)],
)
def test_a_rate_allows_a_full_burst_whatever_the_numbers(
    calls: int, per: str, start: float
) -> None:
    b = make(f"  - {{id: rate, calls: {calls}, per: {per}}}\n", Clock(start))
    assert run_out(b, act()) == calls


def test_a_rate_is_a_burst_then_one_call_per_step_as_documented() -> None:
    """docs/runtime.md: a burst of N, then one call per `per / N` (not a sliding count)."""
    clock = Clock(0.0)
    b = make("  - {id: rate, calls: 5, per: 1m}\n", clock)
    allowed = []
    for tick in range(60):  # one attempt a second for a minute: the window [0, 60)
        clock.now = float(tick)
        if b.check(act()) is None:
            allowed.append(tick)
    assert allowed == [0, 1, 2, 3, 4, 12, 24, 36, 48]


# --- tokens and cost, directly -----------------------------------------------------------


def test_reported_tokens_deny_the_next_call_once_the_limit_is_reached() -> None:
    b = make("  - {id: tok, scope: agent, tokens: 100}\n")
    assert b.check(act()) is None
    b.report(act(), tokens=60)
    assert b.check(act()) is None
    b.report(act(), tokens=39)
    assert b.check(act()) is None  # 99 of 100
    b.report(act(), tokens=1)
    assert b.check(act()) == ("tok", "budget `tok`: 100 of 100 tokens used for agent a1")
    assert b.check(act(agent="a2")) is None
    b.report(act(agent="a2"), tokens=1000)  # a single report may overshoot
    assert b.check(act(agent="a2")) == ("tok", "budget `tok`: 1000 of 100 tokens used for agent a2")


def test_reported_cost_denies_the_next_call_once_the_limit_is_reached() -> None:
    b = make("  - {id: spend, scope: session, cost: 1.5}\n")
    b.report(act(), cost=1)
    assert b.check(act()) is None
    b.report(act(), cost=0.25)
    assert b.check(act()) is None
    b.report(act(), cost=0.25)
    assert b.check(act()) == ("spend", "budget `spend`: cost 1.5 of 1.5 used for session s1")
    assert b.check(act(session="s2")) is None


def test_a_tokens_or_cost_budget_does_not_count_calls() -> None:
    b = make("  - {id: tok, tokens: 5}\n  - {id: c, cost: 1}\n")
    assert all(b.check(act()) is None for _ in range(50))
    assert [u["calls"] for u in b.usage()] == [{}, {}]


def test_usage_counts_only_where_the_budget_applies() -> None:
    b = make(
        '  - {id: llm, tool: "llm.*", scope: agent, tokens: 100, cost: 2}\n'
        "  - {id: calls-only, calls: 10}\n"
        "  - {id: all-cost, cost: 5}\n"
    )
    b.report(act(tool="fs.read"), tokens=50, cost=1)  # not an llm.* call
    b.report(act(tool="llm.chat"), tokens=7, cost=0.5)
    b.report(act(tool="llm.chat"), tokens=0, cost=0)  # zero is allowed, and adds nothing
    llm, calls_only, all_cost = b.usage()
    assert llm == {"budget": "llm", "calls": {}, "tokens": {("a1",): 7}, "cost": {("a1",): 0.5}}
    assert calls_only == {"budget": "calls-only", "calls": {}, "tokens": {}, "cost": {}}
    assert all_cost["tokens"] == {}
    assert all_cost["cost"] == {(): 1.5}


def test_usage_is_a_snapshot() -> None:
    b = make("  - {id: g, calls: 5, tokens: 9}\n")
    b.check(act())
    snap = b.usage()
    snap[0]["calls"][()] = 99
    snap[0]["tokens"][()] = 99
    b.check(act())
    b.report(act(), tokens=2)
    assert b.usage() == [{"budget": "g", "calls": {(): 2}, "tokens": {(): 2}, "cost": {}}]
    assert snap[0]["calls"] == {(): 99}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": -1},
        {"tokens": True},
        {"tokens": False},
        {"tokens": 1.5},
        {"tokens": 2.0},
        {"tokens": "3"},
        {"tokens": None},
        {"cost": -0.01},
        {"cost": True},
        {"cost": math.nan},
        {"cost": -math.inf},
        {"cost": "1"},
        {"cost": None},
    ],
)
def test_report_rejects_bad_usage_and_counts_nothing(kwargs: dict[str, Any]) -> None:
    b = make("  - {id: g, tokens: 10, cost: 10}\n")
    with pytest.raises(ValueError, match="must be a non-negative"):
        b.report(act(), **kwargs)
    assert b.usage() == [{"budget": "g", "calls": {}, "tokens": {}, "cost": {}}]


# --- through a Governor -------------------------------------------------------------------


@pytest.fixture
def governed(tmp_path: Path) -> Iterator[Callable[..., Governor]]:
    made: list[Governor] = []

    def build(budgets_yaml: str, extra: str = "", **kw: Any) -> Governor:
        kw.setdefault("audit", False)
        g = Governor(policy(budgets_yaml, extra), home=tmp_path / f"home{len(made)}", **kw)
        made.append(g)
        return g

    yield build
    for g in made:
        g.runtime.close()


def test_the_governor_denies_beyond_a_budget_and_names_it(
    governed: Callable[..., Governor],
) -> None:
    gov = governed("  - {id: session-calls, scope: session, calls: 2}\n")
    assert gov.check(act(session="s1")).allowed
    assert gov.check(act(session="s1", tool="fs.write")).allowed
    d = gov.check(act(session="s1"))
    assert d.effect is Effect.DENY
    assert d.rules == ("budget:session-calls",)
    assert d.reasons == ("budget `session-calls`: 2 of 2 calls used for session s1",)
    assert gov.policy is not None
    assert d.policy_hash == gov.policy.hash
    assert d.id
    assert gov.check(act(session="s2")).allowed


def test_a_governed_call_beyond_the_budget_does_not_run(
    governed: Callable[..., Governor],
) -> None:
    gov = governed("  - {id: once, scope: agent, calls: 1}\n")
    ran: list[int] = []
    assert gov.run(act(), ran.append, 1) is None
    with pytest.raises(ActionDenied) as info:
        gov.run(act(), ran.append, 2)
    assert ran == [1]
    assert info.value.decision.rules == ("budget:once",)


@pytest.mark.parametrize(
    ("scope", "same", "different"),
    [
        ("agent", {"session": "other", "tool": "x"}, {"agent": "a2"}),
        ("tool", {"agent": "a9", "session": "s9"}, {"tool": "fs.write"}),
        ("global", {"agent": "a9", "session": "s9", "tool": "x"}, None),
        ("[agent, session]", {"tool": "x"}, {"session": "s2"}),
    ],
)
def test_scopes_through_the_governor(
    governed: Callable[..., Governor],
    scope: str,
    same: dict[str, Any],
    different: dict[str, Any] | None,
) -> None:
    gov = governed(f"  - {{id: b, scope: {scope}, calls: 1}}\n")
    assert gov.check(act()).allowed
    d = gov.check(act(**same))
    assert (d.effect, d.rules) == (Effect.DENY, ("budget:b",))
    if different is not None:
        assert gov.check(act(**different)).allowed


def test_only_allowed_decisions_consume_a_budget(governed: Callable[..., Governor]) -> None:
    gov = governed(
        "  - {id: two, scope: agent, calls: 2}\n",
        extra="tools:\n  'admin.*': {ring: 0}\n",
    )
    for _ in range(5):
        d = gov.check(act(tool="db.drop"))  # the policy denies
        assert (d.effect, d.rules) == (Effect.DENY, ("no-drop",))
        d = gov.check(act(tool="payments.big"))  # waits for a human
        assert d.effect is Effect.REQUIRE_APPROVAL
        d = gov.check(act(tool="admin.reset"))  # ring 3 may not call it
        assert d.reasons[0].startswith("ring: ")
    assert gov.runtime.budgets.usage()[0]["calls"] == {}
    assert gov.check(act()).allowed
    assert gov.check(act()).allowed
    assert gov.check(act()).rules == ("budget:two",)
    # Once spent, the policy's own deny still wins over the budget's.
    assert gov.check(act(tool="db.drop")).rules == ("no-drop",)


def test_a_tool_filter_through_the_governor(governed: Callable[..., Governor]) -> None:
    gov = governed('  - {id: refunds, tool: "payments.refund*", scope: agent, calls: 1}\n')
    assert gov.check(act(tool="payments.refund")).allowed
    assert gov.check(act(tool="payments.refund_partial")).rules == ("budget:refunds",)
    assert all(gov.check(act(tool="payments.charge")).allowed for _ in range(5))
    assert gov.check(act(tool="payments.refund", agent="a2")).allowed


def test_a_rate_through_the_governor(governed: Callable[..., Governor]) -> None:
    gov = governed("  - {id: refund-rate, scope: agent, calls: 5, per: 1m}\n")
    clock = Clock(500.0)
    assert gov.policy is not None
    gov.runtime.budgets = Budgets(gov.policy.budgets, clock=clock)
    for _ in range(5):
        assert gov.check(act()).allowed
    d = gov.check(act())
    assert d.effect is Effect.DENY
    assert d.rules == ("budget:refund-rate",)
    assert d.reasons == (
        "budget `refund-rate`: more than 5 calls per 60 s for agent a1 (next in 12.00 s)",
    )
    assert gov.check(act(agent="a2")).allowed
    clock.now = 560.0  # a window later: a full burst again
    assert [gov.check(act()).allowed for _ in range(6)] == [True] * 5 + [False]


def test_reported_usage_denies_the_next_call_not_the_current_one(
    governed: Callable[..., Governor],
) -> None:
    gov = governed(
        "  - {id: agent-tokens, scope: agent, tokens: 1000}\n"
        "  - {id: session-cost, scope: session, cost: 2.5}\n"
    )
    seen: list[str] = []

    def model_call(n: int) -> str:
        seen.append("ran")
        return "ok"

    action = act()
    decision = gov.check(action)
    assert decision.allowed
    gov.report_usage(action, tokens=999)
    assert gov.check(act()).allowed  # 999 of 1000
    gov.report_usage(action, tokens=1)  # reported after the call: it was not cut short
    d = gov.check(act())
    assert (d.effect, d.rules) == (Effect.DENY, ("budget:agent-tokens",))
    assert d.reasons == ("budget `agent-tokens`: 1000 of 1000 tokens used for agent a1",)

    other = act(agent="a2")
    assert gov.run(other, model_call, 1) == "ok"
    gov.report_usage(other, cost=2.5)
    d = gov.check(act(agent="a3"))  # same session s1: its cost is spent
    assert d.rules == ("budget:session-cost",)
    assert d.reasons == ("budget `session-cost`: cost 2.5 of 2.5 used for session s1",)
    assert gov.check(act(agent="a3", session="s2")).allowed
    assert seen == ["ran"]


@pytest.mark.parametrize(
    "kwargs", [{"tokens": -5}, {"tokens": True}, {"cost": math.nan}, {"cost": -1.0}]
)
def test_report_usage_rejects_bad_numbers(
    governed: Callable[..., Governor], kwargs: dict[str, Any]
) -> None:
    gov = governed("  - {id: t, tokens: 10, cost: 10}\n")
    with pytest.raises(ValueError, match="must be a non-negative"):
        gov.report_usage(act(), **kwargs)
    assert gov.check(act()).allowed


def test_a_reload_starts_the_counters_again(governed: Callable[..., Governor]) -> None:
    gov = governed("  - {id: one, calls: 1}\n")
    assert gov.check(act()).allowed
    assert not gov.check(act()).allowed
    gov.reload(policy("  - {id: one, calls: 1}\n"))
    assert gov.check(act()).allowed


def test_a_budget_deny_keeps_the_redact_obligation(governed: Callable[..., Governor]) -> None:
    gov = governed("  - {id: one, calls: 1}\n", audit=True)
    first = gov.check(act(tool="payments.card", card="4111-1111"))
    assert first.obligations == ("redact:args.card",)
    d = gov.check(act(tool="payments.card", card="4111-1111"))
    assert d.rules == ("budget:one",)
    assert gov.audit is not None
    gov.audit.flush()
    logged = [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]
    assert [r["decision"]["effect"] for r in logged if "decision" in r] == ["allow", "deny"]
    assert "4111-1111" not in json.dumps(logged)
    assert d.obligations == ("redact:args.card",)
