"""The policy's `sre:` section and `tools: egress` (docs/sre.md, "Declaring it")."""

from __future__ import annotations

import pytest

from warden import load_policy_text
from warden.errors import PolicyError
from warden.policy.sections import DEFAULT_ALERTS, NO_SRE, AlertSpec

HEAD = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\nrules: []\n"


def diags(body: str) -> list[tuple[int, int, str, str]]:
    with pytest.raises(PolicyError) as info:
        load_policy_text(HEAD + body, "p.yaml")
    return [(d.line, d.col, d.code, d.message) for d in info.value.diagnostics]


def test_a_full_section_loads_with_its_defaults() -> None:
    p = load_policy_text(
        HEAD
        + """tools:
  "mail.send": {egress: true}
sre:
  breakers:
    - {id: pay, scope: downstream, tool: "payments.*", failure_ratio: 0.5, min_calls: 20,
       consecutive: 5, window: 1m, open_for: 30s, probes: 3}
  slos:
    - {id: ok, scope: agent, objective: success, target: 0.995, enforce: deny}
    - {id: fast, objective: latency, target: 0.99, threshold: 250ms,
       alerts: [{burn: 10, long: 30m, short: 2m, severity: ticket}]}
  anomaly: {egress_min: 512KiB, quarantine: true}
  cascade: {min_agents: 4}
"""
    )
    b = p.sre.breakers[0]
    assert (b.id, b.scope, b.tools, b.failure_ratio, b.consecutive) == (
        "pay", "downstream", ("payments.*",), 0.5, 5,
    )  # fmt: skip
    assert (b.min_calls, b.window, b.open_for, b.probes) == (20, 60.0, 30.0, 3)
    ok, fast = p.sre.slos
    assert (ok.scope, ok.target, ok.enforce, ok.window, ok.min_events) == (
        "agent", 0.995, "deny", 30 * 86400.0, 100,
    )  # fmt: skip
    assert ok.alerts == DEFAULT_ALERTS
    assert fast.threshold == 0.25 and fast.alerts == (AlertSpec(10.0, 1800.0, 120.0, "ticket"),)
    assert p.sre.anomaly is not None and p.sre.anomaly.egress_min == 512 * 1024
    assert p.sre.anomaly.quarantine and p.sre.anomaly.rate_factor == 5.0
    assert p.sre.cascade is not None and p.sre.cascade.min_agents == 4
    assert p.tools[0].egress is True


def test_no_section_is_the_shared_empty_one() -> None:
    assert load_policy_text(HEAD).sre is NO_SRE


def test_errors_are_located_and_all_reported() -> None:
    found = diags(
        """sre:
  breakers:
    - {id: b, failure_ratio: 1.5, window: 1y}
    - {id: c}
    - {id: b, consecutive: 0}
  slos:
    - {id: s, target: 1.0, objective: latency}
    - {id: t, target: 0.9, alerts: [{burn: 2, long: 5m, short: 1h}]}
    - {id: u, objective: success, target: 0.9, threshold: 1s, enforce: maybe}
  anomaly: {egress_min: lots, rate_factor: 0.5, learning: -1}
  cascade: {min_agents: 1}
  bogus: 1
"""
    )
    codes = [(line, code) for line, _, code, _ in found]
    assert codes == [
        (7, "policy_invalid_value"),  # failure_ratio
        (7, "policy_invalid_value"),  # window
        (8, "policy_missing_field"),  # no trip condition
        (9, "policy_duplicate_id"),
        (9, "policy_invalid_value"),  # consecutive 0
        (11, "policy_missing_field"),  # latency without threshold
        (11, "policy_invalid_value"),  # target 1
        (12, "policy_invalid_value"),  # short >= long
        (13, "policy_invalid_value"),  # threshold on success
        (13, "policy_invalid_value"),  # enforce
        (14, "policy_invalid_value"),  # egress_min
        (14, "policy_invalid_value"),  # rate_factor
        (14, "policy_invalid_value"),  # learning
        (15, "policy_invalid_value"),  # min_agents
        (16, "policy_unknown_field"),
    ]
    messages = [m for *_, m in found]
    assert "breaker `c` sets no trip condition" in messages
    assert (
        "`enforce` of slo `u` must be one of none, deny, require_approval, demote, not `maybe`"
        in messages
    )


def test_egress_must_be_a_boolean() -> None:
    ((line, _col, code, message),) = diags('tools:\n  "x": {egress: 1}\n')
    assert (line, code) == (6, "policy_type_error")
    assert message == "`egress` of `tools` entry `x` must be true or false"
