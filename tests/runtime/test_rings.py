"""Rings on the decision path (docs/runtime.md, "Rings")."""

from __future__ import annotations

from pathlib import Path

import pytest

from warden import Action, ActionDenied, Effect, Governor, load_policy_text
from warden.governor import SANDBOX

POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
  - {id: ring-visible, tool: "probe.ring0", when: "agent.ring != 0", effect: deny}
tools:
  "shell.*": {ring: 1, exec: true}
  "db.write*": {ring: 1}
  "db.write.critical": {ring: 0}
  "python.run": {exec: true}
agents:
  "ops-*": {ring: 0}
  "ops-intern": {ring: 2}
  "bot-*": {ring: 2}
"""
)


class Sink:
    def __init__(self) -> None:
        self.actions: list[Action] = []

    def record(self, action: Action, decision: object) -> None:
        self.actions.append(action)


@pytest.fixture
def gov(tmp_path: Path) -> Governor:
    return Governor(POLICY, home=tmp_path, audit=False)


def ring_seen(gov: Governor, agent: dict[str, object]) -> int:
    sink = Sink()
    gov.sinks.append(sink)
    gov.check(Action(tool="fs.read", agent=agent))
    gov.sinks.remove(sink)
    return int(sink.actions[-1].agent["ring"])  # type: ignore[call-overload]


def test_the_ring_comes_from_the_operator_never_from_the_action(gov: Governor) -> None:
    assert ring_seen(gov, {"id": "bot-1", "ring": 0}) == 2
    assert ring_seen(gov, {"id": "ops-anna"}) == 0
    assert ring_seen(gov, {"id": "ops-intern"}) == 2  # the literal beats the glob
    assert ring_seen(gov, {"id": "stranger", "ring": 0}) == 3
    assert ring_seen(gov, {"ring": 0}) == 3
    d = gov.check(Action(tool="probe.ring0", agent={"id": "bot-1", "ring": 0}))
    assert d.effect is Effect.DENY and d.rules == ("ring-visible",)


def test_a_tool_that_needs_a_lower_ring_is_denied_before_policy(gov: Governor) -> None:
    d = gov.check(Action(tool="db.write", agent={"id": "bot-1"}))
    assert d.effect is Effect.DENY and d.rules == ()
    assert d.reasons == ("ring: `db.write` needs ring 1; agent bot-1 is ring 2",)
    assert gov.check(Action(tool="db.write", agent={"id": "ops-anna"})).allowed
    # The strictest matching entry applies.
    d = gov.check(Action(tool="db.write.critical", agent={"id": "ops-intern"}))
    assert "needs ring 0" in d.reasons[0]


def test_ring_3_runs_exec_tools_only_in_the_sandbox(gov: Governor) -> None:
    d = gov.check(Action(tool="python.run", agent={"id": "stranger"}))
    assert d.allowed and SANDBOX in d.obligations
    d2 = gov.check(Action(tool="python.run", agent={"id": "bot-1"}))
    assert d2.allowed and SANDBOX not in d2.obligations

    ran: list[str] = []

    @gov.tool("python.run")
    def run(code: str) -> None:
        ran.append(code)

    with gov.session("s", agent={"id": "stranger"}), pytest.raises(ActionDenied) as info:
        run("print(1)")
    assert "only in the sandbox" in str(info.value)
    assert ran == []
    with gov.session("s", agent={"id": "bot-1"}):
        run("print(2)")
    assert ran == ["print(2)"]


def test_a_trust_drop_demotes_until_an_operator_promotes(tmp_path: Path) -> None:
    from warden.identity import Identity, issue, make_proof
    from warden.identity.gate import IdentityConfig
    from warden.trust import TrustStore, sign_event

    root, agent, ops = Identity.generate(), Identity.generate(), Identity.generate()
    trust = TrustStore(tmp_path / "trust.db", refresh_interval=0)
    gov = Governor(
        POLICY,
        home=tmp_path,
        audit=False,
        identity=IdentityConfig(roots=[root.did], audience="t", trust=trust),
    )
    assert gov.identity is not None
    token = issue(root, agent.did, ["*"], audience="t", ttl=600, ring=1)
    va = gov.identity.authenticate(token, make_proof(agent, token, gov.identity.challenge(), "t"))
    assert gov.check(Action(tool="db.write", session=va.session)).allowed
    trust.record(sign_event(ops, agent.did, "violation", 150))  # 500 -> 350: probation
    d = gov.check(Action(tool="db.write", session=va.session))
    assert d.effect is Effect.DENY and "is ring 3" in d.reasons[0]
    trust.record(sign_event(ops, agent.did, "success", 300))  # back to 650
    d = gov.check(Action(tool="db.write", session=va.session))
    assert d.effect is Effect.DENY, "a recovering score must not promote"
    gov.runtime.set_ring(agent.did, 0, by="alice", reason="reviewed")
    assert gov.check(Action(tool="db.write", session=va.session)).allowed  # credential ring 1
    trust.close()


def test_a_reload_takes_the_new_rings(gov: Governor) -> None:
    gov.reload(
        load_policy_text(
            """
apiVersion: warden/v1
kind: Policy
default: allow
rules: []
agents:
  "bot-*": {ring: 1}
"""
        )
    )
    assert ring_seen(gov, {"id": "bot-1"}) == 1
    assert gov.check(Action(tool="db.write", agent={"id": "bot-9"})).allowed  # no tools: section
