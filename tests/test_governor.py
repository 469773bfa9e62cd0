"""The Governor: the decision path, wrapped calls, sessions, fail-closed behaviour."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from warden import (
    Action,
    ActionDenied,
    ApprovalRequired,
    ConfigurationError,
    Decision,
    DecisionLog,
    Effect,
    Governor,
    InvalidActionError,
    PolicyError,
    WardenError,
    load_policy_text,
)

POLICY = """
apiVersion: warden/v1
kind: Policy
name: t
default: deny
rules:
  - id: block-destructive
    tool: ["db.drop*", "fs.delete"]
    when: "args.table in ['users', 'orders'] or agent.trust < 500"
    effect: deny
    reason: destructive operations need a human
  - id: read
    tool: "db.read"
    effect: allow
  - id: email
    tool: email.send
    when: "endswith(args.to, '@b.c')"
    effect: allow
    reason: mail to b.c is fine
  - id: refund-approval
    tool: pay.refund
    when: "args.amount > 100"
    effect: require_approval
    reason: big refunds need a human
  - id: refund
    tool: pay.refund
    effect: allow
agents:
  "did:key:z6MkAgent": {ring: 2}
"""

AGENT = {"id": "did:key:z6MkAgent", "trust": 640, "ring": 2}


@pytest.fixture
def gov(tmp_path: Path) -> Governor:
    return Governor(load_policy_text(POLICY), home=tmp_path / ".warden", agent=AGENT)


def test_issue_example_deny(gov: Governor) -> None:
    d = gov.check(Action(tool="db.drop_table", args={"table": "users"}, agent=AGENT, session="s1"))
    assert d.effect is Effect.DENY
    assert d.rules == ("block-destructive",)
    assert d.reasons == ("destructive operations need a human",)
    assert d.policy_hash.startswith("sha256:")
    assert d.elapsed_ns > 0


def test_from_policy_reads_a_file(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text(POLICY)
    gov = Governor.from_policy(f, home=tmp_path)
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW


def test_from_policy_bad_file_raises_policy_error(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("apiVersion: warden/v1\nkind: Policy\nrules: []\n")
    with pytest.raises(PolicyError) as err:
        Governor.from_policy(f)
    assert err.value.diagnostics[0].code == "policy_missing_field"
    assert str(err.value).startswith(f"{f}:1:1: policy_missing_field")


def test_no_policy_refuses_to_start() -> None:
    with pytest.raises(ConfigurationError, match="allow_unconfigured"):
        Governor(None)


def test_no_policy_with_explicit_opt_in_allows_and_says_so() -> None:
    with pytest.warns(UserWarning, match="WITHOUT a policy"):
        gov = Governor(None, allow_unconfigured=True)
    d = gov.check(Action(tool="anything"))
    assert d.effect is Effect.ALLOW
    assert "allow_unconfigured" in d.reasons[0]


def test_policy_must_be_a_policy_object() -> None:
    with pytest.raises(ConfigurationError):
        Governor("policy.yaml")  # type: ignore[arg-type]  # the mistake under test


def test_wrapped_sync_tool_runs_only_when_allowed(gov: Governor) -> None:
    sent: list[tuple[str, str]] = []

    @gov.tool("email.send")
    def send_email(to: str, body: str) -> str:
        sent.append((to, body))
        return "ok"

    assert send_email(to="a@b.c", body="hi") == "ok"
    with pytest.raises(ActionDenied) as err:
        send_email("evil@x.y", "secrets")
    assert sent == [("a@b.c", "hi")]
    assert err.value.decision.effect is Effect.DENY
    assert isinstance(err.value, WardenError)
    assert err.value.decision.rules == ()


def test_wrapped_async_tool(gov: Governor) -> None:
    calls: list[str] = []

    @gov.tool("email.send")
    async def send_email(to: str, body: str = "") -> str:
        calls.append(to)
        return "sent"

    async def main() -> None:
        assert await send_email("x@b.c") == "sent"
        with pytest.raises(ActionDenied):
            await send_email("x@evil.example")

    asyncio.run(main())
    assert calls == ["x@b.c"]


def test_wrap_binds_positional_defaults_and_var_keywords(gov: Governor) -> None:
    log = DecisionLog()
    gov.sinks.append(log)

    def query(table: str, limit: int = 10, *cols: str, **opts: Any) -> int:
        return limit

    wrapped = gov.wrap(query, tool="db.read")
    assert wrapped("t", 5, "a", "b", fast=True) == 5
    _, action, _ = log.entries[-1]
    assert dict(action.args) == {"table": "t", "limit": 5, "cols": ["a", "b"], "fast": True}
    assert action.agent == AGENT


def test_wrap_rejects_bad_tool_name_at_wrap_time(gov: Governor) -> None:
    with pytest.raises(InvalidActionError):
        gov.wrap(lambda: None, tool="")
    with pytest.raises(InvalidActionError):
        gov.wrap(lambda: None, tool="x", kind="teleport")


def test_wrapped_call_with_wrong_arguments_raises_type_error_and_does_not_run(
    gov: Governor,
) -> None:
    ran = []

    @gov.tool("db.read")
    def read(table: str) -> None:
        ran.append(table)

    with pytest.raises(TypeError):
        read()  # type: ignore[call-arg]  # the mistake under test
    assert ran == []


def test_session_sets_agent_and_session(gov: Governor) -> None:
    log = DecisionLog()
    gov.sinks.append(log)

    @gov.tool("db.drop_table")
    def drop(table: str) -> None:  # pragma: no cover - always denied
        raise AssertionError("must not run")

    with (
        gov.session("s-low", agent={"id": "did:key:z6MkLow", "trust": 100}),
        pytest.raises(ActionDenied),
    ):
        drop("logs")
    _, action, decision = log.entries[-1]
    assert action.session == "s-low"
    assert action.agent["trust"] == 100
    assert decision.rules == ("block-destructive",)
    # outside the block the default agent applies again
    assert gov.current_session().id is None


def test_sessions_are_isolated_between_threads(gov: Governor) -> None:
    seen: dict[str, str | None] = {}
    barrier = threading.Barrier(2)

    def worker(name: str) -> None:
        with gov.session(name):
            barrier.wait()
            seen[name] = gov.current_session().id

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"a": "a", "b": "b"}


def test_evaluation_error_never_allows(gov: Governor) -> None:
    # `args.to` is missing: the allow rule cannot be evaluated, so it does not allow
    d = gov.check(Action(tool="email.send", args={"body": "x"}))
    assert d.effect is Effect.DENY
    assert d.errors == ("rule `email`: missing key `args.to`",)


def test_evaluation_error_in_deny_rule_denies(gov: Governor) -> None:
    d = gov.check(Action(tool="db.drop_table", args={"table": "x"}, agent={"id": "a"}))
    assert d.effect is Effect.DENY
    assert d.rules == ("block-destructive",)
    assert "missing key `agent.trust`" in d.errors[0]


def test_unexpected_exception_in_a_condition_fails_closed(gov: Governor) -> None:
    policy = gov.policy
    assert policy is not None

    def explode(action: Any) -> Any:
        raise RuntimeError("bug in a condition")

    for rule in policy.rules:
        if rule.when is not None:
            object.__setattr__(rule, "when", explode)  # frozen on purpose; this test breaks it
    policy._cache.clear()
    # the allow rule `read` has no condition: still allows
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW
    # the allow rule `email` cannot be evaluated: not allowed
    d = gov.check(Action(tool="email.send", args={"to": "a@b.c"}))
    assert d.effect is Effect.DENY
    assert d.errors == ("rule `email`: internal error (RuntimeError)",)
    # the deny rule cannot be evaluated: it denies
    d = gov.check(Action(tool="db.drop_x", args={"table": "t"}, agent=AGENT))
    assert (d.effect, d.rules) == (Effect.DENY, ("block-destructive",))


def test_internal_failure_on_the_path_is_a_deny(gov: Governor, monkeypatch: Any) -> None:
    import warden.governor as g

    def broken(*a: Any, **k: Any) -> Decision:
        raise MemoryError("simulated")

    monkeypatch.setattr(g, "evaluate", broken)
    d = gov.check(Action(tool="db.read"))
    assert d.effect is Effect.DENY
    assert "internal error" in d.reasons[0]


def test_sink_failure_turns_allow_into_deny(gov: Governor) -> None:
    class Broken:
        def record(self, action: Action, decision: Decision) -> None:
            raise OSError("disk full")

    gov.sinks.append(Broken())
    ran = []

    @gov.tool("db.read")
    def read() -> None:
        ran.append(1)

    with pytest.raises(ActionDenied) as err:
        read()
    assert ran == []
    assert "could not be recorded" in err.value.decision.reasons[-1]


def test_reload_swaps_policy_and_keeps_old_on_error(gov: Governor, tmp_path: Path) -> None:
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: warden/v1\nkind: Policy\ndefault: nope\nrules: []\n")
    with pytest.raises(PolicyError):
        gov.reload(bad)
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW
    gov.reload(load_policy_text("apiVersion: warden/v1\nkind: Policy\ndefault: deny\nrules: []\n"))
    assert gov.check(Action(tool="db.read")).effect is Effect.DENY


def test_run_and_arun(gov: Governor) -> None:
    assert gov.run(Action(tool="db.read"), lambda x: x * 2, 21) == 42
    with pytest.raises(ActionDenied):
        gov.run(Action(tool="db.write"), lambda: None)

    async def twice(x: int) -> int:
        return 2 * x

    assert asyncio.run(gov.arun(Action(tool="db.read"), twice, 4)) == 8


def test_require_approval_raises_with_request_id(gov: Governor) -> None:
    @gov.tool("pay.refund")
    def refund(amount: int) -> str:
        return f"refunded {amount}"

    assert refund(50) == "refunded 50"
    with pytest.raises(ApprovalRequired) as err:
        refund(500)
    assert err.value.approval_id is not None
    assert err.value.approval_id.startswith("apr-")
    assert err.value.decision.effect is Effect.REQUIRE_APPROVAL


def test_action_validation() -> None:
    with pytest.raises(InvalidActionError):
        Action(tool=3)  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(InvalidActionError):
        Action(tool="x", args=[1])  # type: ignore[arg-type]  # the mistake under test
    with pytest.raises(InvalidActionError, match="unknown field `tol`"):
        Action.from_dict({"tol": "x"})
    with pytest.raises(InvalidActionError, match="missing field `tool`"):
        Action.from_dict({"args": {}})
