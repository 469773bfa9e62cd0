"""Signed policy bundles: build, verify, load, and what tampering each check catches."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from warden import Action, Effect, Governor
from warden.cli import cli
from warden.errors import PolicyError, SupplyChainError
from warden.identity.keys import Identity, KeyStore
from warden.supply.bundle import (
    BUNDLE_PREDICATE,
    build_bundle,
    is_bundle,
    load_bundle,
    read_bundle,
)
from warden.supply.dsse import sign_statement, statement

EXAMPLES = Path(__file__).parents[2] / "src" / "warden" / "examples"

POLICY = """apiVersion: warden/v1
kind: Policy
name: shop
default: deny
rules:
  - id: read
    tool: db.read
    effect: allow
  - id: no-drop
    tool: db.drop*
    effect: deny
    reason: destructive
"""

TEST = """policy: policy.yaml
cases:
  - note: reads are fine
    action: {tool: db.read}
    want: {effect: allow, rules: [read]}
  - note: drops are not
    action: {tool: db.drop_table}
    want: {effect: deny, rules: [no-drop]}
"""


def policy_dir(tmp_path: Path, policy: str = POLICY, test: str = TEST) -> Path:
    d = tmp_path / "policies"
    (d / "more").mkdir(parents=True)
    (d / "policy.yaml").write_text(policy)
    (d / "more" / "policy_test.yaml").write_text(test.replace("policy.yaml", "../policy.yaml"))
    return d


def write(tmp_path: Path, envelope: dict[str, Any], name: str = "policy.bundle.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(envelope))
    return path


@pytest.fixture
def bundle(tmp_path: Path, signer: Identity) -> Path:
    return write(tmp_path, build_bundle(policy_dir(tmp_path), signer))


def payload_of(envelope: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(base64.b64decode(envelope["payload"]))
    return out


# --- building and loading -----------------------------------------------------------------


def test_a_bundle_is_an_in_toto_statement_of_every_file(tmp_path: Path, signer: Identity) -> None:
    d = policy_dir(tmp_path)
    env = build_bundle(d, signer)
    assert [s["keyid"] for s in env["signatures"]] == [signer.did]
    stmt = payload_of(env)
    assert stmt["predicateType"] == BUNDLE_PREDICATE
    assert stmt["predicate"]["main"] == "policy.yaml"
    names = ["more/policy_test.yaml", "policy.yaml"]
    assert [s["name"] for s in stmt["subject"]] == names
    for s in stmt["subject"]:
        data = (d / s["name"]).read_bytes()
        assert s["digest"] == {"sha256": hashlib.sha256(data).hexdigest()}
        assert base64.b64decode(stmt["predicate"]["files"][s["name"]]) == data


def test_decisions_under_a_loaded_bundle_name_the_bundle(
    tmp_path: Path, signer: Identity, bundle: Path
) -> None:
    env = json.loads(bundle.read_text())
    want = "bundle:sha256:" + hashlib.sha256(base64.b64decode(env["payload"])).hexdigest()
    policy = load_bundle(bundle, [signer.did])
    assert policy.hash == want
    assert policy.file == f"{bundle}#policy.yaml"
    gov = Governor(policy, audit=False, home=tmp_path / "home")
    decision = gov.check(Action(tool="db.drop_table"))
    assert decision.effect is Effect.DENY and decision.rules == ("no-drop",)
    assert decision.policy_hash == want
    assert gov.check(Action(tool="db.read")).policy_hash == want


def test_the_same_files_give_the_same_payload(tmp_path: Path, signer: Identity) -> None:
    d = policy_dir(tmp_path)
    assert build_bundle(d, signer)["payload"] == build_bundle(d, signer)["payload"]


def test_several_policies_need_a_main(tmp_path: Path, signer: Identity) -> None:
    d = policy_dir(tmp_path)
    (d / "more" / "other.yaml").write_text(POLICY.replace("name: shop", "name: other"))
    with pytest.raises(SupplyChainError, match=r"2 policies .* name the main one") as err:
        build_bundle(d, signer)
    assert "`more/other.yaml`, `policy.yaml`" in str(err.value)
    stmt = payload_of(build_bundle(d, signer, main="more/other.yaml"))
    assert stmt["predicate"]["main"] == "more/other.yaml"
    with pytest.raises(SupplyChainError, match=r"`more/policy_test\.yaml` is not a policy"):
        build_bundle(d, signer, main="more/policy_test.yaml")
    with pytest.raises(SupplyChainError, match="not a directory"):
        build_bundle(tmp_path / "nope", signer)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SupplyChainError, match="no policy files"):
        build_bundle(tmp_path / "empty", signer)


def test_the_shipped_examples_make_a_bundle(tmp_path: Path, signer: Identity) -> None:
    env = build_bundle(EXAMPLES, signer, main="support-agent.yaml")
    names = [s["name"] for s in payload_of(env)["subject"]]
    assert {"support-agent.yaml", "support-agent_test.yaml"} <= set(names)
    assert load_bundle(write(tmp_path, env), [signer.did]).name == "support-agent"


def test_a_deployment_manifest_beside_the_policy_is_left_out(
    tmp_path: Path, signer: Identity
) -> None:
    d = policy_dir(tmp_path)
    (d / "deployment.yaml").write_text(
        "apiVersion: warden/v1\nkind: Deployment\nname: x\npolicy: policy.yaml\nmodels: []\n"
    )
    (d / ".hidden").mkdir()
    (d / ".hidden" / "junk.yaml").write_text("not: [a policy\n")
    stmt = payload_of(build_bundle(d, signer))
    assert [s["name"] for s in stmt["subject"]] == ["more/policy_test.yaml", "policy.yaml"]


def test_a_bundle_whose_tests_fail_is_not_built(tmp_path: Path, signer: Identity) -> None:
    broken = TEST.replace("want: {effect: allow, rules: [read]}", "want: {effect: deny}")
    d = policy_dir(tmp_path, test=broken)
    with pytest.raises(SupplyChainError, match="not built: 1 problem") as err:
        build_bundle(d, signer)
    (line,) = err.value.report
    assert line.startswith(f"{d}/more/policy_test.yaml:")
    assert "reads are fine" in line and "effect: want deny, got allow" in line


def test_a_policy_that_does_not_load_is_not_built(tmp_path: Path, signer: Identity) -> None:
    d = policy_dir(tmp_path)
    (d / "other.yaml").write_text("apiVersion: warden/v1\nkind: Policy\ndefault: maybe\n")
    with pytest.raises(SupplyChainError) as err:
        build_bundle(d, signer, main="policy.yaml")
    report = err.value.report
    assert all(line.startswith(f"{d}/other.yaml:") for line in report)
    assert {line.split(": ")[1] for line in report} == {
        "policy_invalid_value",
        "policy_missing_field",
    }


def test_tests_cannot_reach_outside_the_bundle(tmp_path: Path, signer: Identity) -> None:
    d = policy_dir(tmp_path)
    (tmp_path / "outside.yaml").write_text(POLICY)
    (d / "more" / "policy_test.yaml").write_text(TEST.replace("policy.yaml", "../../outside.yaml"))
    with pytest.raises(SupplyChainError) as err:
        build_bundle(d, signer)
    assert any("no such file" in line for line in err.value.report)


def test_is_bundle_sniffs_without_raising(tmp_path: Path, bundle: Path) -> None:
    as_json = tmp_path / "policy.json"
    as_json.write_text(json.dumps({"apiVersion": "warden/v1", "payload": 1}))
    assert is_bundle(bundle)
    assert is_bundle(str(bundle))
    assert not is_bundle(as_json)  # a policy written as JSON is still a policy
    assert not is_bundle(tmp_path / "policies" / "policy.yaml")
    assert not is_bundle(tmp_path / "nope.json")
    assert not is_bundle(tmp_path)


# --- tampering ----------------------------------------------------------------------------


def _change_content(stmt: dict[str, Any]) -> None:
    evil = POLICY.replace("default: deny", "default: allow").encode()
    stmt["predicate"]["files"]["policy.yaml"] = base64.b64encode(evil).decode()


def _change_digest(stmt: dict[str, Any]) -> None:
    stmt["subject"][1]["digest"]["sha256"] = "0" * 64


def _add_file(stmt: dict[str, Any]) -> None:
    stmt["predicate"]["files"]["extra.yaml"] = base64.b64encode(b"x: 1\n").decode()


def _remove_file(stmt: dict[str, Any]) -> None:
    del stmt["predicate"]["files"]["more/policy_test.yaml"]


def _remove_subject(stmt: dict[str, Any]) -> None:
    del stmt["subject"][1]


TAMPERING = {
    "content changed": (_change_content, "`policy.yaml` does not match its subject digest"),
    "digest changed": (_change_digest, "`policy.yaml` does not match its subject digest"),
    "file added": (_add_file, "`extra.yaml` is in the bundle but not a subject"),
    "file removed": (_remove_file, "`more/policy_test.yaml` is a subject of the statement but"),
    "subject removed": (_remove_subject, "`policy.yaml` is in the bundle but not a subject"),
}


@pytest.mark.parametrize("how", TAMPERING)
def test_a_tampered_bundle_signed_by_a_trusted_key_is_refused_naming_the_file(
    tmp_path: Path, signer: Identity, bundle: Path, how: str
) -> None:
    change, message = TAMPERING[how]
    stmt = payload_of(json.loads(bundle.read_text()))
    change(stmt)
    # the signer's own tooling went wrong: the signature is good, the content is not
    path = write(tmp_path, sign_statement(stmt, signer), "tampered.json")
    with pytest.raises(SupplyChainError, match=re.escape(message)) as err:
        load_bundle(path, [signer.did])
    assert str(err.value).startswith(f"bundle `{path}`: ")
    assert err.value.report


@pytest.mark.parametrize("how", TAMPERING)
def test_a_tampered_bundle_fails_its_signature_and_says_what_changed(
    tmp_path: Path, signer: Identity, bundle: Path, how: str
) -> None:
    change, message = TAMPERING[how]
    env = json.loads(bundle.read_text())
    stmt = payload_of(env)
    change(stmt)
    env["payload"] = base64.b64encode(json.dumps(stmt).encode()).decode()
    path = write(tmp_path, env, "tampered.json")
    with pytest.raises(SupplyChainError, match="no valid signature by a trusted signer") as err:
        load_bundle(path, [signer.did])
    assert message in str(err.value)


def test_a_bundle_resigned_by_an_untrusted_key_is_refused(
    tmp_path: Path, signer: Identity, stranger: Identity, bundle: Path
) -> None:
    stmt = payload_of(json.loads(bundle.read_text()))
    _change_content(stmt)  # a consistent forgery: content and digest both changed
    evil = base64.b64decode(stmt["predicate"]["files"]["policy.yaml"])
    stmt["subject"][1]["digest"]["sha256"] = hashlib.sha256(evil).hexdigest()
    path = write(tmp_path, sign_statement(stmt, stranger), "resigned.json")
    with pytest.raises(SupplyChainError, match=f"signed by: {stranger.did}") as err:
        load_bundle(path, [signer.did])
    assert "changed" not in str(err.value)
    # the forgery itself is well formed: it was the key that was refused
    assert load_bundle(path, [stranger.did]).default is Effect.ALLOW
    with pytest.raises(SupplyChainError, match="no trusted signer is configured"):
        load_bundle(bundle, [])


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"{not json", "not JSON"),
        (b'{"payload": "", "payloadType": "x", "signatures": []}', "payload type"),
        (b"", "not JSON"),
    ],
)
def test_a_malformed_bundle_is_refused(
    tmp_path: Path, signer: Identity, content: bytes, message: str
) -> None:
    path = tmp_path / "bad.json"
    path.write_bytes(content)
    with pytest.raises(SupplyChainError, match=message):
        load_bundle(path, [signer.did])
    with pytest.raises(SupplyChainError, match="cannot read"):
        load_bundle(tmp_path / "missing.json", [signer.did])


def test_another_predicate_type_is_not_a_bundle(tmp_path: Path, signer: Identity) -> None:
    data = POLICY.encode()
    stmt = statement(
        [("policy.yaml", hashlib.sha256(data).hexdigest())],
        "https://cyclonedx.org/bom",
        {"main": "policy.yaml", "files": {"policy.yaml": base64.b64encode(data).decode()}},
    )
    path = write(tmp_path, sign_statement(stmt, signer))
    with pytest.raises(SupplyChainError, match="predicate type"):
        load_bundle(path, [signer.did])


def _signed(tmp_path: Path, signer: Identity, files: dict[str, bytes], main: str) -> Path:
    stmt = statement(
        [(n, hashlib.sha256(b).hexdigest()) for n, b in files.items()],
        BUNDLE_PREDICATE,
        {"main": main, "files": {n: base64.b64encode(b).decode() for n, b in files.items()}},
    )
    return write(tmp_path, sign_statement(stmt, signer), "hand-made.json")


def test_a_main_policy_that_does_not_load_is_located_in_the_bundle(
    tmp_path: Path, signer: Identity
) -> None:
    bad = b"apiVersion: warden/v1\nkind: Policy\ndefault: maybe\nrules: []\n"
    path = _signed(tmp_path, signer, {"p.yaml": bad}, "p.yaml")
    with pytest.raises(PolicyError) as err:
        load_bundle(path, [signer.did])
    (diag,) = err.value.diagnostics
    assert (diag.file, diag.line, diag.code) == (f"{path}#p.yaml", 3, "policy_invalid_value")
    missing = _signed(tmp_path, signer, {"p.yaml": POLICY.encode()}, "q.yaml")
    with pytest.raises(SupplyChainError, match=r"main policy `q\.yaml` is not in the bundle"):
        load_bundle(missing, [signer.did])


@pytest.mark.parametrize("name", ["../escape.yaml", "/etc/x.yaml", "a/./b.yaml", "a\\b.yaml", ""])
def test_a_file_name_must_stay_inside_the_bundle(
    tmp_path: Path, signer: Identity, name: str
) -> None:
    files = {"p.yaml": POLICY.encode(), name: b"x: 1\n"}
    path = _signed(tmp_path, signer, files, "p.yaml")
    with pytest.raises(SupplyChainError, match="is not a relative path inside the bundle"):
        read_bundle(path, [signer.did])


def test_read_bundle_gives_the_verified_files(
    tmp_path: Path, signer: Identity, bundle: Path
) -> None:
    b = read_bundle(bundle, [signer.did])
    assert b.signer == signer.did and b.main == "policy.yaml"
    assert b.files["policy.yaml"] == (tmp_path / "policies" / "policy.yaml").read_bytes()
    assert b.policy_hash == load_bundle(bundle, [signer.did]).hash


# --- the command --------------------------------------------------------------------------


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    KeyStore(home / "keys").save("release", Identity.from_seed(b"s" * 32))
    return home


def test_cli_bundle_writes_a_bundle_that_loads(
    tmp_path: Path, home: Path, signer: Identity
) -> None:
    out = tmp_path / "out.json"
    d = policy_dir(tmp_path)
    res = run("policy", "bundle", str(d), "--key", "release", "--home", str(home), "-o", str(out))
    assert res.exit_code == 0, res.output
    assert res.stdout.startswith(f"wrote {out}: 2 files, main policy `policy.yaml`")
    assert signer.did in res.stdout
    assert load_bundle(out, [signer.did]).name == "shop"


def test_cli_bundle_finds_the_key_under_warden_home(
    tmp_path: Path, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    res = run("policy", "bundle", str(policy_dir(tmp_path)), "--key", "release")
    assert res.exit_code == 0, res.output
    assert is_bundle(tmp_path / "policy.bundle.json")


def _failing_test(d: Path) -> list[str]:
    (d / "policy.yaml").write_text(POLICY.replace("effect: deny", "effect: allow"))
    return []


def _second_policy(d: Path) -> list[str]:
    (d / "second.yaml").write_text(POLICY)
    return []


BAD_RUNS: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "a test fails": (_failing_test, "the bundle was not built (1 problem)"),
    "no such key": (lambda d: ["--key", "nope"], "no key named `nope`"),
    "several policies": (_second_policy, "name the main one"),
    "not a policy": (lambda d: ["--main", "more/policy_test.yaml"], "is not a policy"),
}


@pytest.mark.parametrize("case", BAD_RUNS)
def test_cli_bundle_failures_are_one_line_and_exit_1(tmp_path: Path, home: Path, case: str) -> None:
    prepare, message = BAD_RUNS[case]
    d = policy_dir(tmp_path)
    extra = prepare(d)
    out = tmp_path / "out.json"
    args = ["policy", "bundle", str(d), "--key", "release", "--home", str(home), "-o", str(out)]
    res = run(*args, *extra)
    assert res.exit_code == 1
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("warden: error: ") and message in last
    assert not out.exists()


def test_cli_eval_check_and_test_take_a_bundle(
    tmp_path: Path, bundle: Path, signer: Identity, monkeypatch: pytest.MonkeyPatch
) -> None:
    action = '{"tool": "db.drop_table"}'
    res = run("policy", "eval", str(bundle), "--trust", signer.did, "--action", action)
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["effect"] == "deny"
    assert out["policy_hash"] == load_bundle(bundle, [signer.did]).hash
    res = run("policy", "eval", str(bundle), "--action", action)
    assert res.exit_code == 1
    assert "name its trusted signers with --trust" in res.stderr
    monkeypatch.setenv("WARDEN_SIGNERS", signer.did)
    res = run("policy", "check", str(bundle))
    assert res.exit_code == 0, res.output
    res = run("policy", "test", "-v", str(bundle))
    assert res.exit_code == 0, res.output
    assert f"ok    {bundle}#more/policy_test.yaml:3: reads are fine" in res.stdout
    assert "2 passed, 0 failed" in res.stdout


def test_cli_refuses_a_bundle_that_does_not_verify(
    tmp_path: Path, bundle: Path, stranger: Identity
) -> None:
    res = run("policy", "check", str(bundle), "--trust", stranger.did, "--format", "json")
    assert res.exit_code == 1
    (diag,) = json.loads(res.stdout)["diagnostics"]
    assert diag["code"] == "bundle_invalid" and "no valid signature" in diag["message"]
    res = run("policy", "test", str(bundle), "--trust", stranger.did)
    assert res.exit_code == 1
    assert res.stderr.startswith("warden: error: bundle `") and "no valid signature" in res.stderr
