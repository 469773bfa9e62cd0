"""One behavioural suite for both budget backends (docs/runtime.md, "Budgets"; issue 9).

Every test taking ``make`` runs against the embedded ``Budgets`` and against
``RedisBudgets`` on a fresh namespace (two instances of it where a test says
so: two replicas counting once). The tests after them are Redis's own: the
key layout, replicas and threads racing for one budget, two Governors sharing
a budget through the environment, and failing closed when Redis is down.
"""

from __future__ import annotations

import math
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from warden import Action, Effect, Governor, load_policy_text
from warden.errors import RuntimeStateError
from warden.policy import Policy
from warden.policy.sections import BudgetSpec
from warden.runtime.budgets import Budgets
from warden.store.budgets import BudgetCounters, RedisBudgets

REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
DOWN_URL = "redis://:secret@127.0.0.1:1/0"  # nothing listens on port 1

HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"
RULES = (
    "rules:\n  - {id: allow-all, effect: allow}\n  - {id: no-drop, tool: db.drop, effect: deny}\n"
)


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


# As tests/store/test_runtime_backends.py: skipped without Redis, except where it must run.
needs_redis = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_REDIS") or os.environ.get("CI")) and not _redis_up(),
    reason=f"no Redis at {REDIS_URL} (set WARDEN_TEST_REDIS_URL)",
)


class Clock:
    """A settable clock (seconds)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def policy(budgets_yaml: str) -> Policy:
    return load_policy_text(HEAD + RULES + "budgets:\n" + budgets_yaml)


def specs(budgets_yaml: str) -> tuple[BudgetSpec, ...]:
    return policy(budgets_yaml).budgets


def act(
    tool: str = "fs.read", agent: object = "a1", session: str | None = "s1", **args: Any
) -> Action:
    return Action(tool=tool, agent={"id": agent}, session=session, args=args)


def run_out(b: BudgetCounters, action: Action, limit: int = 1000) -> int:
    for n in range(limit):
        if b.check(action) is not None:
            return n
    return limit


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


Make = Callable[..., BudgetCounters]


@pytest.fixture(params=["embedded", pytest.param("redis", marks=needs_redis)])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, request: pytest.FixtureRequest) -> Iterator[Make]:
    """``make(yaml, clock=None)``: budgets of that backend (on Redis, all in one namespace)."""
    opened: list[RedisBudgets] = []
    ns = request.getfixturevalue("namespace") if kind == "redis" else ""

    def build(budgets_yaml: str, clock: Callable[[], float] | None = None) -> BudgetCounters:
        if kind == "embedded":
            return (
                Budgets(specs(budgets_yaml), clock=clock) if clock else Budgets(specs(budgets_yaml))
            )
        made = RedisBudgets(specs(budgets_yaml), REDIS_URL, ns, clock=clock)
        opened.append(made)
        return made

    yield build
    for b in opened:
        b.close()


# --- both backends: lifetime calls ---


def test_no_budgets_admit_everything(make: Make) -> None:
    b = make("  []\n")
    assert not b
    assert all(b.check(act()) is None for _ in range(20))
    assert b.usage() == []


def test_a_global_budget_counts_every_allowed_call(make: Make) -> None:
    b = make("  - {id: g, calls: 3}\n")
    assert b
    for i in range(3):
        assert b.check(act(agent=f"a{i}", session=f"s{i}", tool=f"t{i}")) is None
    assert b.check(act(agent="new", session="new", tool="new")) == (
        "g",
        "budget `g`: 3 of 3 calls used in all",
    )
    assert b.check(act()) is not None


@pytest.mark.parametrize(
    ("scope", "other", "where"),
    [
        ("session", {"session": "s2"}, "for session s1"),
        ("agent", {"agent": "a2"}, "for agent a1"),
        ("tool", {"tool": "fs.write"}, "for tool fs.read"),
    ],
)
def test_one_counter_per_scope_value(
    make: Make, scope: str, other: dict[str, Any], where: str
) -> None:
    b = make(f"  - {{id: per-{scope}, scope: {scope}, calls: 2}}\n")
    assert b.check(act()) is None
    assert b.check(act()) is None
    assert b.check(act()) == (f"per-{scope}", f"budget `per-{scope}`: 2 of 2 calls used {where}")
    assert b.check(act(**other)) is None
    assert b.check(act(**other)) is None
    assert b.check(act(**other)) is not None


def test_a_scope_list_keys_by_the_tuple(make: Make) -> None:
    b = make("  - {id: at, scope: [agent, tool], calls: 1}\n")
    assert b.check(act(agent="a1", tool="t1", session="x")) is None
    assert b.check(act(agent="a1", tool="t1", session="y")) == (
        "at",
        "budget `at`: 1 of 1 calls used for agent a1, tool t1",
    )
    assert b.check(act(agent="a1", tool="t2")) is None
    assert b.check(act(agent="a2", tool="t1")) is None
    (snap,) = b.usage()
    assert snap["calls"] == {("a1", "t1"): 1, ("a1", "t2"): 1, ("a2", "t1"): 1}


def test_missing_scope_values_share_one_null_counter(make: Make) -> None:
    b = make("  - {id: a, scope: agent, calls: 3}\n")
    assert b.check(Action(tool="t")) is None
    assert b.check(act(agent=7)) is None
    assert b.check(act(agent=None)) is None
    assert b.check(act(agent=["x"])) is not None
    assert b.check(act(agent="x")) is None
    (snap,) = b.usage()
    assert snap["calls"] == {(None,): 3, ("x",): 1}


def test_odd_scope_values_keep_their_own_counters(make: Make) -> None:
    b = make("  - {id: s, scope: [agent, session], calls: 1}\n")
    for agent, session in [("a:b", "c"), ("a", "b:c"), ("é [1]", None), ("*", "?")]:
        assert b.check(act(agent=agent, session=session)) is None
        assert b.check(act(agent=agent, session=session)) is not None


def test_the_tool_filter_decides_which_calls_count(make: Make) -> None:
    b = make(
        '  - {id: pay, tool: "payments.*", calls: 2}\n'
        '  - {id: two, tool: ["db.write", "fs.rm*"], scope: tool, calls: 1}\n'
    )
    for _ in range(5):
        assert b.check(act(tool="fs.read")) is None
    assert b.check(act(tool="payments.refund")) is None
    assert b.check(act(tool="payments.charge")) is None
    assert b.check(act(tool="payments.refund")) == ("pay", "budget `pay`: 2 of 2 calls used in all")
    assert b.check(act(tool="payments")) is None
    assert b.check(act(tool="db.write")) is None
    assert b.check(act(tool="db.write")) is not None
    assert b.check(act(tool="fs.rmdir")) is None
    assert b.check(act(tool="fs.rmdir")) is not None


def test_a_refused_call_consumes_no_other_budget(make: Make) -> None:
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


def test_the_first_declared_budget_that_is_spent_is_named(make: Make) -> None:
    b = make("  - {id: first, calls: 1}\n  - {id: second, calls: 1}\n")
    assert b.check(act()) is None
    over = b.check(act())
    assert over is not None
    assert over[0] == "first"


# --- both backends: rates ---


def test_a_rate_allows_a_burst_then_one_call_per_step(make: Make) -> None:
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
    assert b.check(act(agent="a2")) is None
    clock.now = 1012.0
    assert b.check(act()) is None
    assert b.check(act()) is not None


def test_a_rate_is_fully_available_again_after_a_quiet_window(make: Make) -> None:
    clock = Clock(1000.0)
    b = make("  - {id: rate, calls: 5, per: 1m}\n", clock)
    assert run_out(b, act()) == 5
    clock.now = 1060.0
    assert run_out(b, act()) == 5
    clock.now = 1060.0 + 3600.0
    assert run_out(b, act()) == 5


def test_a_denied_call_does_not_push_the_rate_back(make: Make) -> None:
    clock = Clock(0.0)
    b = make("  - {id: rate, calls: 2, per: 10s}\n", clock)
    assert run_out(b, act()) == 2
    for t in (1.0, 2.0, 3.0, 4.0):
        clock.now = t
        assert b.check(act()) is not None
    clock.now = 5.0
    assert b.check(act()) is None


def test_a_rate_and_a_lifetime_limit_in_one_budget(make: Make) -> None:
    clock = Clock(0.0)
    b = make("  - {id: both, calls: 2, per: 1s, tokens: 10}\n", clock)
    assert run_out(b, act()) == 2
    b.report(act(), tokens=10)
    clock.now = 100.0
    assert b.check(act()) == ("both", "budget `both`: 10 of 10 tokens used in all")


@pytest.mark.parametrize(
    ("calls", "per", "start"),
    [(9, "1s", 0.0), (3, "1s", 12345.678), (10, "1s", 1.0), (17, "1m", 0.0), (7, "100ms", 0.0)],
)
def test_a_rate_allows_a_full_burst_whatever_the_numbers(
    make: Make, calls: int, per: str, start: float
) -> None:
    b = make(f"  - {{id: rate, calls: {calls}, per: {per}}}\n", Clock(start))
    assert run_out(b, act()) == calls


def test_a_rate_is_a_burst_then_one_call_per_step_as_documented(make: Make) -> None:
    clock = Clock(0.0)
    b = make("  - {id: rate, calls: 5, per: 1m}\n", clock)
    allowed = []
    for tick in range(60):
        clock.now = float(tick)
        if b.check(act()) is None:
            allowed.append(tick)
    assert allowed == [0, 1, 2, 3, 4, 12, 24, 36, 48]


# --- both backends: tokens and cost ---


def test_reported_tokens_deny_the_next_call_once_the_limit_is_reached(make: Make) -> None:
    b = make("  - {id: tok, scope: agent, tokens: 100}\n")
    assert b.check(act()) is None
    b.report(act(), tokens=60)
    b.report(act(), tokens=39)
    assert b.check(act()) is None
    b.report(act(), tokens=1)
    assert b.check(act()) == ("tok", "budget `tok`: 100 of 100 tokens used for agent a1")
    assert b.check(act(agent="a2")) is None
    b.report(act(agent="a2"), tokens=1000)
    assert b.check(act(agent="a2")) == ("tok", "budget `tok`: 1000 of 100 tokens used for agent a2")


def test_reported_cost_denies_the_next_call_once_the_limit_is_reached(make: Make) -> None:
    b = make("  - {id: spend, scope: session, cost: 1.5}\n")
    b.report(act(), cost=1)
    assert b.check(act()) is None
    b.report(act(), cost=0.25)
    assert b.check(act()) is None
    b.report(act(), cost=0.25)
    assert b.check(act()) == ("spend", "budget `spend`: cost 1.5 of 1.5 used for session s1")
    assert b.check(act(session="s2")) is None


def test_cost_adds_up_as_python_adds(make: Make) -> None:
    b = make("  - {id: c, cost: 0.3}\n")
    for _ in range(3):
        b.report(act(), cost=0.1)
    (snap,) = b.usage()
    assert snap["cost"] == {(): 0.1 + 0.1 + 0.1}  # 0.30000000000000004, not 0.3
    assert b.check(act()) == ("c", "budget `c`: cost 0.3 of 0.3 used in all")


def test_a_tokens_or_cost_budget_does_not_count_calls(make: Make) -> None:
    b = make("  - {id: tok, tokens: 5}\n  - {id: c, cost: 1}\n")
    assert all(b.check(act()) is None for _ in range(20))
    assert [u["calls"] for u in b.usage()] == [{}, {}]


def test_usage_counts_only_where_the_budget_applies(make: Make) -> None:
    b = make(
        '  - {id: llm, tool: "llm.*", scope: agent, tokens: 100, cost: 2}\n'
        "  - {id: calls-only, calls: 10}\n"
        "  - {id: all-cost, cost: 5}\n"
    )
    b.report(act(tool="fs.read"), tokens=50, cost=1)
    b.report(act(tool="llm.chat"), tokens=7, cost=0.5)
    b.report(act(tool="llm.chat"), tokens=0, cost=0)
    llm, calls_only, all_cost = b.usage()
    assert llm == {"budget": "llm", "calls": {}, "tokens": {("a1",): 7}, "cost": {("a1",): 0.5}}
    assert calls_only == {"budget": "calls-only", "calls": {}, "tokens": {}, "cost": {}}
    assert all_cost["tokens"] == {}
    assert all_cost["cost"] == {(): 1.5}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tokens": -1},
        {"tokens": True},
        {"tokens": 1.5},
        {"tokens": "3"},
        {"cost": -0.01},
        {"cost": True},
        {"cost": math.nan},
        {"cost": math.inf},
        {"cost": "1"},
    ],
)
def test_report_rejects_bad_usage_and_counts_nothing(make: Make, kwargs: dict[str, Any]) -> None:
    b = make("  - {id: g, tokens: 10, cost: 10}\n")
    with pytest.raises(ValueError, match="must be a non-negative"):
        b.report(act(), **kwargs)
    assert b.usage() == [{"budget": "g", "calls": {}, "tokens": {}, "cost": {}}]


# --- both backends: through a Governor ---


@pytest.fixture
def governed(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], Governor]]:
    """Governors that choose their budget backend from the environment, as in production."""
    if kind == "redis":
        monkeypatch.setenv("WARDEN_REDIS_URL", REDIS_URL)
        monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", request.getfixturevalue("namespace"))
    else:
        monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)
    made: list[Governor] = []

    def build(budgets_yaml: str) -> Governor:
        g = Governor(policy(budgets_yaml), home=tmp_path / f"home{len(made)}", audit=False)
        made.append(g)
        return g

    yield build
    for g in made:
        g.runtime.close()


def test_the_governor_uses_the_backend_the_environment_names(
    kind: str, governed: Callable[[str], Governor]
) -> None:
    gov = governed("  - {id: session-calls, scope: session, calls: 2}\n")
    expected = RedisBudgets if kind == "redis" else Budgets
    assert type(gov.runtime.budgets) is expected
    assert gov.check(act()).allowed
    assert gov.check(act(tool="fs.write")).allowed
    d = gov.check(act())
    assert (d.effect, d.rules) == (Effect.DENY, ("budget:session-calls",))
    assert d.reasons == ("budget `session-calls`: 2 of 2 calls used for session s1",)
    assert gov.check(act(session="s2")).allowed
    assert gov.check(act(tool="db.drop")).rules == ("no-drop",)


def test_reported_usage_through_the_governor(governed: Callable[[str], Governor]) -> None:
    gov = governed("  - {id: agent-tokens, scope: agent, tokens: 1000}\n")
    assert gov.check(act()).allowed
    gov.report_usage(act(), tokens=999)
    assert gov.check(act()).allowed
    gov.report_usage(act(), tokens=1)
    d = gov.check(act())
    assert d.rules == ("budget:agent-tokens",)
    assert d.reasons == ("budget `agent-tokens`: 1000 of 1000 tokens used for agent a1",)


# --- Redis only ---


@needs_redis
def test_the_key_layout(namespace: str) -> None:
    b = RedisBudgets(
        specs("  - {id: k, scope: [agent, session], calls: 3, tokens: 9, cost: 2}\n"),
        REDIS_URL,
        namespace,
    )
    r = RedisBudgets(specs("  - {id: r, scope: agent, calls: 2, per: 10s}\n"), REDIS_URL, namespace)
    try:
        assert b.check(act(session=None)) is None
        b.report(act(session=None), tokens=4, cost=0.5)
        assert r.check(act()) is None
        client = redis.Redis.from_url(REDIS_URL, decode_responses=True)
        base = f'{namespace}:budget:k:["a1",null]'
        assert client.get(f"{base}:calls") == "1"
        assert client.get(f"{base}:tokens") == "4"
        assert float(client.get(f"{base}:cost") or "") == 0.5
        assert client.ttl(f"{base}:calls") == -1  # lifetime counters do not expire
        rate = f'{namespace}:budget:r:["a1"]:rate'
        assert 0 < client.pttl(rate) <= 5000  # as good as fresh once one step has passed
        client.close()
    finally:
        b.close()
        r.close()


@needs_redis
def test_two_replicas_and_threads_count_one_budget_once(namespace: str) -> None:
    yaml = "  - {id: shared, calls: 50}\n  - {id: per-agent, scope: agent, calls: 1000}\n"
    replicas = [RedisBudgets(specs(yaml), REDIS_URL, namespace) for _ in range(2)]
    allowed: list[int] = []
    lock = threading.Lock()

    def hammer(b: BudgetCounters, n: int) -> None:
        for _ in range(n):
            if b.check(act()) is None:
                with lock:
                    allowed.append(1)

    threads = [threading.Thread(target=hammer, args=(replicas[i % 2], 20)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert len(allowed) == 50
        shared, per_agent = replicas[0].usage()
        assert shared["calls"] == {(): 50}
        assert per_agent["calls"] == {("a1",): 50}  # refused calls consumed nothing
    finally:
        for b in replicas:
            b.close()


@needs_redis
def test_two_replicas_share_one_rate(namespace: str) -> None:
    clock = Clock(0.0)
    yaml = "  - {id: rate, calls: 4, per: 1m}\n"
    a, b = (RedisBudgets(specs(yaml), REDIS_URL, namespace, clock=clock) for _ in range(2))
    try:
        assert [x.check(act()) is None for x in (a, b, a, b, a, b)] == [True] * 4 + [False] * 2
        clock.now = 15.0
        assert b.check(act()) is None
        assert a.check(act()) is not None
    finally:
        a.close()
        b.close()


@needs_redis
def test_the_server_clock_is_the_default_for_rates(namespace: str) -> None:
    b = RedisBudgets(specs("  - {id: rate, calls: 3, per: 1h}\n"), REDIS_URL, namespace)
    try:
        assert run_out(b, act()) == 3
        over = b.check(act())
        assert over is not None
        assert "more than 3 calls per 3600 s in all (next in 1" in over[1]
    finally:
        b.close()


@needs_redis
def test_two_governors_share_one_calls_budget(
    namespace: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", namespace)
    text = policy("  - {id: five, calls: 5}\n")
    one = Governor(text, home=tmp_path / "one", audit=False)
    two = Governor(text, home=tmp_path / "two", audit=False)
    try:
        results = [g.check(act(agent=f"a{i}")).allowed for i, g in enumerate([one, two] * 3)]
        assert results == [True] * 5 + [False]
        for g in (one, two):
            d = g.check(act())
            assert (d.effect, d.rules) == (Effect.DENY, ("budget:five",))
            assert d.reasons == ("budget `five`: 5 of 5 calls used in all",)
    finally:
        one.runtime.close()
        two.runtime.close()


def test_an_unreachable_store_denies_and_does_not_count() -> None:
    b = RedisBudgets(
        specs('  - {id: pay, tool: "payments.*", calls: 100, tokens: 10}\n'),
        DOWN_URL,
        "wt_down",
        timeout=0.2,
    )
    try:
        reason = "budget store unreachable (redis://127.0.0.1:1/0): denying"
        for _ in range(3):
            assert b.check(act(tool="payments.card")) == ("pay", reason)
        assert b.check(act(tool="fs.read")) is None  # no budget applies: nothing to ask
        with pytest.raises(RuntimeStateError, match=r"unreachable .*usage not counted"):
            b.report(act(tool="payments.card"), tokens=1)
        b.report(act(tool="fs.read"), tokens=1)  # counted nowhere: nothing to lose
        with pytest.raises(RuntimeStateError, match="unreachable"):
            b.usage()
        assert "secret" not in b.path
    finally:
        b.close()


def test_a_governor_denies_while_its_budget_store_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)
    gov = Governor(policy("  - {id: g, calls: 5}\n"), home=tmp_path, audit=False)
    try:
        assert gov.policy is not None
        gov.runtime.budgets = RedisBudgets(gov.policy.budgets, DOWN_URL, "wt_down", timeout=0.2)
        d = gov.check(act())
        assert (d.effect, d.rules) == (Effect.DENY, ("budget:g",))
        assert d.reasons == ("budget store unreachable (redis://127.0.0.1:1/0): denying",)
    finally:
        gov.runtime.close()
