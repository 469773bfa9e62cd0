"""Strict mode: a Governor that runs only signed bundles, and Governor.from_deployment."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from warden import Action, ConfigurationError, Effect, Governor, PolicyError, load_policy
from warden.errors import SupplyChainError
from warden.identity.keys import Identity
from warden.supply.bundle import BUNDLE_PREDICATE, build_bundle, load_bundle
from warden.supply.dsse import sign_statement, statement

DENY_DROPS = """apiVersion: warden/v1
kind: Policy
name: shop
default: deny
rules:
  - id: read
    tool: db.read
    effect: allow
"""
ALLOW_ALL = DENY_DROPS.replace("default: deny", "default: allow")
STRICT = "strict mode loads only signed bundles"


def make_bundle(tmp_path: Path, signer: Identity, policy: str, name: str) -> Path:
    d = tmp_path / f"src-{name}"
    d.mkdir()
    (d / "policy.yaml").write_text(policy)
    out = tmp_path / f"{name}.bundle.json"
    out.write_text(json.dumps(build_bundle(d, signer)))
    return out


@pytest.fixture
def bundle(tmp_path: Path, signer: Identity) -> Path:
    return make_bundle(tmp_path, signer, DENY_DROPS, "deny")


@pytest.fixture
def plain(tmp_path: Path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(ALLOW_ALL)
    return p


def strict_gov(bundle: Path, signer: Identity, tmp_path: Path) -> Governor:
    return Governor.from_policy(
        bundle, strict=True, signers=[signer.did], audit=False, home=tmp_path / "home"
    )


def test_strict_mode_accepts_a_signed_bundle(
    tmp_path: Path, signer: Identity, bundle: Path
) -> None:
    gov = strict_gov(bundle, signer, tmp_path)
    decision = gov.check(Action(tool="db.drop_table"))
    assert decision.effect is Effect.DENY
    assert decision.policy_hash.startswith("bundle:sha256:")
    assert decision.policy_hash == load_bundle(bundle, [signer.did]).hash


def test_strict_mode_refuses_plain_yaml_and_policy_objects(
    tmp_path: Path, signer: Identity, plain: Path
) -> None:
    with pytest.raises(SupplyChainError, match=f"{STRICT}: `{plain}` is not one"):
        Governor.from_policy(plain, strict=True, signers=[signer.did], audit=False)
    with pytest.raises(SupplyChainError, match="a loaded Policy object is refused"):
        Governor.from_policy(load_policy(plain), strict=True, signers=[signer.did], audit=False)
    with pytest.raises(SupplyChainError, match="no such file"):
        Governor.from_policy(tmp_path / "nope.json", strict=True, audit=False)


def test_strict_mode_refuses_bundles_it_cannot_trust(
    tmp_path: Path, signer: Identity, stranger: Identity, bundle: Path
) -> None:
    with pytest.raises(SupplyChainError, match="no valid signature by a trusted signer"):
        Governor.from_policy(bundle, strict=True, signers=[stranger.did], audit=False)
    with pytest.raises(SupplyChainError, match="a bundle needs trusted signers"):
        Governor.from_policy(bundle, strict=True, signers=[], audit=False)


def test_strict_mode_and_signers_come_from_the_environment(
    tmp_path: Path,
    signer: Identity,
    stranger: Identity,
    bundle: Path,
    plain: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WARDEN_STRICT", "1")
    monkeypatch.setenv("WARDEN_SIGNERS", f"{stranger.did}, {signer.did}")
    with pytest.raises(SupplyChainError, match=STRICT):
        Governor.from_policy(plain, audit=False)
    gov = Governor.from_policy(bundle, audit=False)
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW
    # an explicit argument wins over the environment
    assert Governor.from_policy(plain, strict=False, audit=False).policy is not None
    monkeypatch.setenv("WARDEN_STRICT", "maybe")
    with pytest.raises(ConfigurationError, match="WARDEN_STRICT"):
        Governor.from_policy(bundle, audit=False)


def test_a_bundle_needs_signers_even_when_not_strict(
    tmp_path: Path, signer: Identity, bundle: Path, plain: Path
) -> None:
    with pytest.raises(SupplyChainError, match="a bundle needs trusted signers"):
        Governor.from_policy(bundle, audit=False)
    gov = Governor.from_policy(bundle, signers=[signer.did], audit=False)
    assert gov.policy is not None and gov.policy.hash.startswith("bundle:")
    assert Governor.from_policy(plain, audit=False).policy is not None  # not strict: YAML is fine


def _tampered(bundle: Path, tmp_path: Path) -> Path:
    env = json.loads(bundle.read_text())
    stmt = json.loads(base64.b64decode(env["payload"]))
    stmt["predicate"]["files"]["policy.yaml"] = base64.b64encode(ALLOW_ALL.encode()).decode()
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    out = tmp_path / "tampered.json"
    out.write_text(json.dumps(env))
    return out


def _resigned(bundle: Path, tmp_path: Path, key: Identity) -> Path:
    stmt = json.loads(base64.b64decode(json.loads(bundle.read_text())["payload"]))
    out = tmp_path / "resigned.json"
    out.write_text(json.dumps(sign_statement(stmt, key)))
    return out


def test_strict_reload_keeps_the_old_policy_on_any_error(
    tmp_path: Path, signer: Identity, stranger: Identity, bundle: Path, plain: Path
) -> None:
    gov = strict_gov(bundle, signer, tmp_path)
    before = gov.policy
    assert before is not None
    bad: list[Any] = [
        plain,
        load_policy(plain),
        _tampered(bundle, tmp_path),
        _resigned(bundle, tmp_path, stranger),
        tmp_path / "missing.json",
    ]
    for candidate in bad:
        with pytest.raises(SupplyChainError):
            gov.reload(candidate)
        assert gov.policy is before
        assert gov.check(Action(tool="db.drop_table")).effect is Effect.DENY
    loads_not = _signed_raw(tmp_path, signer, b"apiVersion: warden/v1\nkind: Policy\n")
    with pytest.raises(PolicyError):
        gov.reload(loads_not)
    assert gov.policy is before
    # a good bundle swaps in, and decisions name it
    allow = make_bundle(tmp_path, signer, ALLOW_ALL, "allow")
    gov.reload(allow)
    decision = gov.check(Action(tool="db.drop_table"))
    assert decision.effect is Effect.ALLOW
    assert decision.policy_hash == load_bundle(allow, [signer.did]).hash != before.hash


def _signed_raw(tmp_path: Path, signer: Identity, policy: bytes) -> Path:
    stmt = statement(
        [("p.yaml", hashlib.sha256(policy).hexdigest())],
        BUNDLE_PREDICATE,
        {"main": "p.yaml", "files": {"p.yaml": base64.b64encode(policy).decode()}},
    )
    out = tmp_path / "raw.json"
    out.write_text(json.dumps(sign_statement(stmt, signer)))
    return out


def test_a_governor_that_is_not_strict_reloads_yaml_and_bundles(
    tmp_path: Path, signer: Identity, bundle: Path, plain: Path
) -> None:
    gov = Governor.from_policy(plain, signers=[signer.did], audit=False)
    gov.reload(bundle)
    assert gov.check(Action(tool="db.drop_table")).effect is Effect.DENY
    gov.reload(plain)
    assert gov.check(Action(tool="db.drop_table")).effect is Effect.ALLOW


# --- from_deployment ----------------------------------------------------------------------


def deployment(tmp_path: Path, policy: str, signers: list[str]) -> Path:
    trust = f"trust: {{signers: [{', '.join(signers)}]}}\n" if signers else ""
    path = tmp_path / "deployment.yaml"
    path.write_text(
        "apiVersion: warden/v1\nkind: Deployment\nname: shop-bot\n"
        f"policy: {policy}\nhome: state\n"
        "models:\n  - {name: claude-sonnet-4-5, provider: anthropic}\n" + trust
    )
    return path


def test_from_deployment_loads_a_bundle_with_the_manifest_signers(
    tmp_path: Path, signer: Identity, bundle: Path
) -> None:
    path = deployment(tmp_path, bundle.name, [signer.did])
    gov = Governor.from_deployment(path, strict=True)
    try:
        decision = gov.check(Action(tool="db.drop_table"))
        assert decision.effect is Effect.DENY
        assert decision.policy_hash == load_bundle(bundle, [signer.did]).hash
        assert gov.audit is not None
        gov.audit.flush()
        assert (tmp_path / "state" / "audit.db").exists()  # the manifest's home
    finally:
        if gov.audit is not None:
            gov.audit.close()


def test_from_deployment_follows_strict_mode(
    tmp_path: Path, signer: Identity, stranger: Identity, bundle: Path, plain: Path
) -> None:
    with pytest.raises(SupplyChainError, match=STRICT):
        Governor.from_deployment(
            deployment(tmp_path, plain.name, [signer.did]), strict=True, audit=False
        )
    gov = Governor.from_deployment(deployment(tmp_path, plain.name, []), audit=False)
    assert gov.check(Action(tool="db.drop_table")).effect is Effect.ALLOW
    path = deployment(tmp_path, bundle.name, [stranger.did])
    with pytest.raises(SupplyChainError, match="no valid signature"):
        Governor.from_deployment(path, audit=False)
    gov = Governor.from_deployment(path, signers=[signer.did], audit=False)  # explicit wins
    assert gov.check(Action(tool="db.drop_table")).effect is Effect.DENY
    with pytest.raises(ConfigurationError, match="bom_mode"):
        Governor.from_deployment(path, bom_mode="lenient", audit=False)


# --- from_deployment with a signed BOM ----------------------------------------------------


def signed_bom(deployment_path: Path, signer: Identity) -> Path:
    from warden.supply.bom import generate_bom, sign_bom
    from warden.supply.deployment import load_deployment

    out = deployment_path.parent / "bom.dsse.json"
    out.write_text(json.dumps(sign_bom(generate_bom(load_deployment(deployment_path)), signer)))
    return out


def test_from_deployment_starts_when_the_bom_matches(
    tmp_path: Path, signer: Identity, bundle: Path
) -> None:
    path = deployment(tmp_path, bundle.name, [signer.did])
    bom = signed_bom(path, signer)
    gov = Governor.from_deployment(path, bom=bom, strict=True, audit=False)
    assert gov.check(Action(tool="db.drop_table")).policy_hash.startswith("bundle:sha256:")


def test_from_deployment_refuses_a_swapped_bundle_in_enforce_mode(
    tmp_path: Path, signer: Identity, bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = deployment(tmp_path, bundle.name, [signer.did])
    bom = signed_bom(path, signer)
    # another signed bundle under the same name: signed, but not the reviewed one
    other = make_bundle(tmp_path, signer, ALLOW_ALL, "allow")
    bundle.write_bytes(other.read_bytes())
    with pytest.raises(SupplyChainError, match="differs from its signed BOM") as err:
        Governor.from_deployment(path, bom=bom, audit=False)
    assert any(line.startswith("policy: ") for line in err.value.report)
    with pytest.warns(UserWarning, match="differs from its signed BOM"):
        gov = Governor.from_deployment(path, bom=bom, bom_mode="warn")
    try:
        assert "WARNING: running a deployment that differs" in capsys.readouterr().err
        assert gov.audit is not None
        gov.audit.flush()
        records = [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]
        drift = [r for r in records if r.get("type") == "warden.bom_drift/v1"]
        assert len(drift) == 1
        assert drift[0]["deployment"] == "shop-bot"
        assert drift[0]["differences"] == list(err.value.report)
    finally:
        if gov.audit is not None:
            gov.audit.close()
