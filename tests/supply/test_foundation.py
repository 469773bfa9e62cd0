"""The deployment manifest and the DSSE profile (docs/supply-chain.md)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warden.errors import DeploymentError, SupplyChainError
from warden.identity.keys import Identity
from warden.supply.deployment import load_deployment
from warden.supply.dsse import PAYLOAD_TYPE, sign_statement, statement, verify_envelope

POLICY = "apiVersion: warden/v1\nkind: Policy\nname: p\ndefault: deny\nrules: []\n"
KIND = "https://example.org/predicate/v1"


def manifest(tmp_path: Path, body: str) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    path = tmp_path / "deployment.yaml"
    path.write_text("apiVersion: warden/v1\nkind: Deployment\n" + body)
    return path


def test_a_manifest_loads_with_paths_relative_to_it(tmp_path: Path) -> None:
    root = Identity.generate().did
    path = manifest(
        tmp_path,
        f"""name: support-bot
policy: policy.yaml
home: state
models:
  - {{name: claude-sonnet-4-5, provider: anthropic, version: "20250929",
     card: "https://example.org/card"}}
  - {{name: embedder, provider: local, version: 3}}
trust: {{roots: [{root}], signers: [{root}]}}
""",
    )
    dep = load_deployment(path)
    assert dep.name == "support-bot"
    assert dep.policy == tmp_path / "policy.yaml"
    assert dep.home == tmp_path / "state"
    assert [m.version for m in dep.models] == ["20250929", "3"]
    assert dep.roots == (root,) and dep.signers == (root,)
    assert dep.digest.startswith("sha256:") and len(dep.digest) == 71


def test_every_problem_of_a_manifest_is_located(tmp_path: Path) -> None:
    path = manifest(
        tmp_path,
        """name: bot
policy: missing.yaml
models:
  - {name: x, version: 1.10, digest: abc, bogus: 1}
trust: {roots: [did:key:zNOPE]}
extra: 1
""",
    )
    with pytest.raises(DeploymentError) as err:
        load_deployment(path)
    lines = err.value.report
    codes = [line.split(": ")[1] for line in lines]
    assert all(line.startswith(f"{path}:") for line in lines)
    assert "deployment_file_error" in codes  # missing.yaml
    assert codes.count("deployment_unknown_field") == 2  # bogus, extra
    assert "deployment_missing_field" in codes  # provider
    assert sum("quote it" in line for line in lines) == 1
    assert sum("did:key:zNOPE" in line for line in lines) == 1


def test_a_manifest_that_is_not_yaml_or_not_there(tmp_path: Path) -> None:
    with pytest.raises(DeploymentError, match="no such file"):
        load_deployment(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(DeploymentError):
        load_deployment(bad)


def test_signed_statements_verify_and_nothing_else_does() -> None:
    signer, other = Identity.generate(), Identity.generate()
    stmt = statement([("thing", "ab" * 32)], KIND, {"n": 1})
    env = sign_statement(stmt, signer)
    assert env["payloadType"] == PAYLOAD_TYPE
    assert env["signatures"][0]["keyid"] == signer.did
    ok = verify_envelope(json.dumps(env).encode(), [other.did, signer.did], KIND)
    assert ok.signer == signer.did and ok.statement == stmt
    assert sign_statement(stmt, signer)["payload"] == env["payload"]  # canonical payload

    def refused(data: object, trusted: list[str], kind: str = KIND) -> str:
        with pytest.raises(SupplyChainError) as err:
            verify_envelope(data, trusted, kind)  # type: ignore[arg-type]
        return str(err.value)

    assert "trusted signer" in refused(env, [other.did])
    forged = dict(
        env, payload=base64.b64encode(json.dumps({**stmt, "predicate": {"n": 2}}).encode()).decode()
    )
    assert "trusted signer" in refused(forged, [signer.did])
    assert "predicate type" in refused(env, [signer.did], "https://other")
    assert "no trusted signer" in refused(env, [])
    assert "not JSON" in refused(b"{nope", [signer.did])
    assert "not a DSSE envelope" in refused({"payload": 1}, [signer.did])
    assert "payload type" in refused(dict(env, payloadType="text/plain"), [signer.did])
    assert env["signatures"][0]["sig"]  # verifying never consumed the caller's envelope


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "payload": st.one_of(_JSON, st.just("eyJ9")),
            "payloadType": st.one_of(_JSON, st.just(PAYLOAD_TYPE)),
            "signatures": st.one_of(
                _JSON, st.lists(st.dictionaries(st.sampled_from(["keyid", "sig"]), _JSON))
            ),
        },
    )
)
def test_any_malformed_envelope_is_a_supply_chain_error(env: dict[str, object]) -> None:
    with pytest.raises(SupplyChainError):
        verify_envelope(env, [SIGNER.did], KIND)


SIGNER = Identity.generate()
