"""`warden verify --threats` (docs/supply-chain.md) and the scenarios of docs/threat-model.md.

The demo deployment must stop every scenario, each with evidence that can be
checked again from the report alone; a weaker policy must show its gaps, each
with the reason, and make the command fail. Each deployment is attacked once
per module (the runs are the expensive part) and the tests read the results.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from warden.audit import NoteVerifier, canonical, leaf_hash, parse_checkpoint, verify_inclusion
from warden.cli.verify import verify
from warden.errors import InclusionProofError, PolicyError, SupplyChainError
from warden.supply import threats
from warden.supply.deployment import load_deployment
from warden.supply.threats import SCENARIOS, STRIDE, Scenario, ThreatResult, run_threats

EXAMPLES = Path(__file__).parents[2] / "src" / "warden" / "examples"
DEMO = EXAMPLES / "deployment" / "deployment.yaml"
DEMO_POLICY = EXAMPLES / "deployment" / "policy.yaml"
WEAK = EXAMPLES / "support-agent.yaml"
IDS = [s.id for s in SCENARIOS]

# What stops each attack on the demo deployment, and the type of the record that proves it.
EXPECTED: dict[str, tuple[tuple[str, ...], str]] = {
    "goal-hijack": (("no-injected-payee",), "warden.decision/v1"),
    "out-of-scope-tool": (("flow:scope",), "warden.decision/v1"),
    "destructive-tool": (("block-destructive",), "warden.decision/v1"),
    "exfiltration": (("flow:egress:mail.send",), "warden.decision/v1"),
    "forged-credential": (("identity",), "warden.decision/v1"),
    "delegation-widening": (("identity",), "warden.decision/v1"),
    "ring-escalation": (("ring",), "warden.decision/v1"),
    "mcp-rug-pull": (("pins",), "warden.mcp_refused/v1"),
    "code-outside-sandbox": (("ring 3: sandbox only",), "warden.outcome/v1"),
    "sandbox-network": (("sandbox",), "warden.outcome/v1"),
    "memory-poisoning": (("flows.stores", "no-injected-payee"), "warden.decision/v1"),
    "envelope-replay": (("envelope",), "warden.threat/v1"),
    "runaway-loop": (("budget:tool-rate",), "warden.decision/v1"),
    "approval-reuse": (("approvals", "payee-from-mail"), "warden.decision/v1"),
    "kill-mid-task": (("kill switch",), "warden.decision/v1"),
    "revoked-agent": (("revocation",), "warden.decision/v1"),
    "audit-tamper": (("audit log",), "warden.decision/v1"),
    "repudiation": (("audit log",), "warden.decision/v1"),
}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ThreatResult]:
    scratch = tmp_path_factory.mktemp("demo")
    return {r.id: r for r in run_threats(load_deployment(DEMO), scratch=scratch)}


@pytest.fixture(scope="module")
def weak(tmp_path_factory: pytest.TempPathFactory) -> list[ThreatResult]:
    return run_threats(WEAK, scratch=tmp_path_factory.mktemp("weak"))


def reverify(evidence: Mapping[str, Any]) -> None:
    """Check a reported proof from the report alone: record -> leaf -> proof -> signed root."""
    verifier = NoteVerifier.from_string(evidence["verifier"])
    cp = parse_checkpoint(evidence["checkpoint"], verifier)
    assert (cp.size, cp.root.hex()) == (evidence["tree_size"], evidence["root"])
    leaf = leaf_hash(canonical(evidence["record"]))
    assert leaf.hex() == evidence["leaf_hash"]
    assert evidence["record"]["seq"] == evidence["seq"]
    proof = [bytes.fromhex(h) for h in evidence["proof"]]
    verify_inclusion(leaf, evidence["seq"], cp.size, proof, cp.root)


# --- the catalogue ---------------------------------------------------------------------------


def test_every_stride_category_and_every_owasp_asi_has_a_scenario() -> None:
    assert {letter for s in SCENARIOS for letter in s.stride} == set(STRIDE)
    assert {a for s in SCENARIOS for a in s.asi} == {f"ASI{n:02d}" for n in range(1, 11)}
    assert len(set(IDS)) == len(IDS)
    assert set(EXPECTED) == set(IDS)


def test_the_threat_model_cites_only_tests_that_exist() -> None:
    doc = (Path(__file__).parents[2] / "docs" / "threat-model.md").read_text()
    cited = set(re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", doc))
    assert len(cited) > 50
    root = Path(__file__).parents[2]
    missing = [
        f"{file}::{name}"
        for file, name in sorted(cited)
        if not re.search(rf"^(async )?def {name}\(", (root / file).read_text(), re.M)
    ]
    assert missing == []
    for scenario in IDS:
        assert f"| `{scenario}` |" in doc


# --- the demo deployment stops everything ----------------------------------------------------


@pytest.mark.parametrize("scenario", IDS)
def test_the_demo_deployment_stops(demo: dict[str, ThreatResult], scenario: str) -> None:
    result = demo[scenario]
    assert result.stopped, result.detail
    controls, record_type = EXPECTED[scenario]
    assert result.controls == controls, result.detail
    assert result.evidence is not None
    assert result.evidence.type == record_type
    assert result.evidence.seq < result.evidence.tree_size
    reverify(result.evidence.to_dict())


def test_the_evidence_names_the_decision_that_stopped_the_attack(
    demo: dict[str, ThreatResult],
) -> None:
    hijack = demo["goal-hijack"].evidence
    assert hijack is not None
    decision = hijack.record["decision"]
    assert decision["effect"] == "deny" and decision["rules"] == ["no-injected-payee"]
    assert "injected" in hijack.record["action"]["flow"]["args"]["iban"]
    killed = demo["kill-mid-task"].evidence
    assert killed is not None and killed.record["decision"]["reasons"][0].startswith("killed:")
    outside = demo["code-outside-sandbox"].evidence
    assert outside is not None and outside.record["status"] == "denied"


def test_changed_evidence_does_not_verify(demo: dict[str, ThreatResult]) -> None:
    good = demo["exfiltration"].evidence
    assert good is not None
    reverify(good.to_dict())
    forged = good.to_dict()
    forged["record"] = {**forged["record"], "decision": {**forged["record"]["decision"]}}
    forged["record"]["decision"]["effect"] = "allow"
    forged["leaf_hash"] = leaf_hash(canonical(forged["record"])).hex()
    with pytest.raises(InclusionProofError):
        reverify(forged)
    bent = good.to_dict()
    bent["proof"] = [("0" if h[0] != "0" else "1") + h[1:] for h in bent["proof"]]
    with pytest.raises(InclusionProofError):
        reverify(bent)


# --- gaps are reported, never hidden ---------------------------------------------------------


def test_a_weak_policy_reports_its_gaps(weak: list[ThreatResult]) -> None:
    assert [r.id for r in weak] == IDS  # every scenario is in the report
    by_id = {r.id: r for r in weak}
    stopped = {r.id for r in weak if r.stopped}
    assert stopped == {"destructive-tool", "audit-tamper", "repudiation"}
    # No rule allows the tools the attack needs: a gap that says so, with nothing decided.
    hijack = by_id["goal-hijack"]
    assert hijack.gap and hijack.controls == () and hijack.evidence is None
    assert "`mail.read`, `bank.pay`" in hijack.detail
    # A policy file alone configures no identity.
    forged = by_id["forged-credential"]
    assert forged.gap and "identity is not configured" in forged.detail
    # What stops the delete here is the trust rule failing closed, and the report says so.
    assert by_id["destructive-tool"].controls == ("low-trust",)


def test_a_gap_that_went_through_carries_the_allowing_decision(tmp_path: Path) -> None:
    (loop,) = run_threats(
        EXAMPLES / "personal-assistant.yaml", scratch=tmp_path, select=["runaway-loop"]
    )
    assert loop.gap and loop.controls == ()
    assert "1000 calls" in loop.detail
    assert loop.evidence is not None
    assert loop.evidence.record["decision"]["effect"] == "allow"
    reverify(loop.evidence.to_dict())


def _weakened(tmp_path: Path, pattern: str, replacement: str) -> Path:
    text = DEMO_POLICY.read_text()
    changed = re.sub(pattern, replacement, text, count=1, flags=re.S)
    assert changed != text
    path = tmp_path / "policy.yaml"
    path.write_text(changed)
    return path


@pytest.mark.parametrize(
    ("scenario", "pattern", "replacement", "said"),
    [
        pytest.param(
            "sandbox-network",
            r'"code\.run": \{exec: true\}',
            '"code.run": {exec: true, network: true}',
            "reached the host network",
            id="network-granted",
        ),
        pytest.param(
            "code-outside-sandbox",
            r'"code\.run": \{exec: true\}',
            '"code.run": {}',
            "ran outside the sandbox",
            id="exec-not-declared",
        ),
        pytest.param(
            "mcp-rug-pull", r"pin: true", "pin: false", "forwarded", id="pins-off"
        ),
        pytest.param(
            "runaway-loop", r"budgets:.*?\nflows:", "budgets: []\nflows:", "1000 calls",
            id="no-budgets",
        ),
    ],
)  # fmt: skip
def test_weakening_the_demo_policy_opens_the_gap(
    tmp_path: Path, scenario: str, pattern: str, replacement: str, said: str
) -> None:
    policy = _weakened(tmp_path, pattern, replacement)
    (result,) = run_threats(policy, scratch=tmp_path / "scratch", select=[scenario])
    assert result.gap, result.detail
    assert said in result.detail
    assert result.evidence is not None  # what went through is on the record too
    reverify(result.evidence.to_dict())


def test_a_scenario_that_breaks_is_a_gap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(run: Any) -> Any:
        raise RuntimeError("the attacker tripped")

    scenario = Scenario("broken", "a scenario that fails", ("T",), (), (), False, broken)
    monkeypatch.setattr(threats, "SCENARIOS", (scenario,))
    (result,) = threats.run_threats(WEAK, scratch=tmp_path)
    assert result.gap and result.evidence is None
    assert "the scenario failed (RuntimeError: the attacker tripped" in result.detail


def _listing(directory: Path) -> list[tuple[str, int]]:
    if not directory.exists():
        return []
    return sorted((str(p), p.stat().st_mtime_ns) for p in directory.rglob("*"))


def test_only_scratch_homes_are_touched(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "real-home"
    monkeypatch.setenv("WARDEN_HOME", str(home))
    deployment = load_deployment(DEMO)
    before = _listing(deployment.home)
    run_threats(deployment, scratch=tmp_path / "s", select=["kill-mid-task", "mcp-rug-pull"])
    assert not home.exists()
    assert _listing(deployment.home) == before
    assert (tmp_path / "s" / "kill-mid-task" / "runtime.db").is_file()
    assert (tmp_path / "s" / "mcp-rug-pull" / "mcp-pins.db").is_file()


def test_a_deployment_with_a_signed_bundle_is_attacked_under_the_bundle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden.identity import Identity
    from warden.supply.bundle import build_bundle

    signer = Identity.from_seed(b"b" * 32)
    bundle = tmp_path / "policy.bundle.json"
    bundle.write_text(json.dumps(build_bundle(DEMO_POLICY.parent, signer)))
    manifest = tmp_path / "deployment.yaml"
    text = DEMO.read_text().replace("policy: policy.yaml", "policy: policy.bundle.json")
    manifest.write_text(text + f"  signers: [{signer.did}]\n")
    (result,) = run_threats(
        load_deployment(manifest), scratch=tmp_path / "s", select=["goal-hijack"]
    )
    assert result.stopped and result.evidence is not None
    assert result.evidence.record["policy"].startswith("bundle:sha256:")
    monkeypatch.delenv("WARDEN_SIGNERS", raising=False)
    unsigned = tmp_path / "unsigned.yaml"
    unsigned.write_text(text)
    with pytest.raises(SupplyChainError, match="needs trusted signers"):
        run_threats(load_deployment(unsigned), scratch=tmp_path / "t")


def test_bad_input_raises(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown scenario `nope`"):
        run_threats(WEAK, scratch=tmp_path, select=["nope"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: warden/v1\nkind: Policy\ndefault: maybe\nrules: []\n")
    with pytest.raises(PolicyError):
        run_threats(bad, scratch=tmp_path)


# --- the command -----------------------------------------------------------------------------


def invoke(*args: str) -> Any:
    return CliRunner().invoke(verify, list(args), catch_exceptions=False)


def test_cli_json_on_the_demo_deployment_exits_0() -> None:
    r = invoke("--threats", "--deployment", str(DEMO), "--json")
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["target"] == {"deployment": str(DEMO), "name": "office-assistant"}
    assert (out["scenarios"], out["stopped"], out["gaps"]) == (len(IDS), len(IDS), 0)
    assert [x["id"] for x in out["results"]] == IDS
    for x in out["results"]:
        assert set(x) == {"id", "title", "stride", "asi", "stopped", "controls", "evidence",
                          "detail"}  # fmt: skip
        assert x["stopped"] is True and x["controls"] == list(EXPECTED[x["id"]][0])
        assert set(x["stride"]) <= set(STRIDE.values())
        reverify(x["evidence"])


def test_cli_table_on_a_weak_policy_exits_1() -> None:
    r = invoke("--threats", "--policy", str(WEAK))
    assert r.exit_code == 1
    assert "GAP goal-hijack: cannot run: no rule of the policy can allow" in r.stdout
    assert r.stdout.rstrip().endswith(f"{len(IDS)} scenarios: 3 stopped, {len(IDS) - 3} gaps")
    assert "STOPPED destructive-tool" not in r.stdout  # details of stops only with -v


def test_cli_policy_form_has_no_identity_and_exits_1() -> None:
    r = invoke("--threats", "--policy", str(DEMO_POLICY), "--scenario", "revoked-agent", "--json")
    assert r.exit_code == 1
    (result,) = json.loads(r.stdout)["results"]
    assert result["stopped"] is False and result["evidence"] is None
    assert "a policy file alone names no trust roots" in result["detail"]


def test_cli_reads_deployment_yaml_here(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(DEMO.parent)
    r = invoke("--threats", "--scenario", "destructive-tool", "-v")
    assert r.exit_code == 0, r.output
    assert "STOPPED destructive-tool: deleting /srv/shared/finance" in r.stdout
    assert r.stdout.rstrip().endswith("1 scenarios: 1 stopped, 0 gaps")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "say what to verify: --threats"),
        (("--threats", "--policy", "a.yaml", "--deployment", "b.yaml"), "not both"),
        (("--threats",), "no deployment.yaml here"),
        (("--threats", "--policy", str(WEAK), "--scenario", "nope"), "unknown scenario `nope`"),
    ],
)
def test_cli_usage_errors_exit_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: tuple[str, ...], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    r = invoke(*args)
    assert r.exit_code == 2
    assert message in r.stderr


def test_cli_input_that_does_not_load_exits_1(tmp_path: Path) -> None:
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text("apiVersion: warden/v1\nkind: Deployment\nname: x\n")
    r = invoke("--threats", "--deployment", str(manifest))
    assert r.exit_code == 1
    assert "deployment_missing_field" in r.stderr
    assert r.stderr.rstrip().endswith(f"warden: error: deployment `{manifest}` did not load")
    policy = tmp_path / "policy.yaml"
    policy.write_text("apiVersion: warden/v1\nkind: Policy\ndefault: maybe\nrules: []\n")
    r = invoke("--threats", "--policy", str(policy))
    assert r.exit_code == 1
    assert "policy_invalid_value" in r.stderr and "Traceback" not in r.output
