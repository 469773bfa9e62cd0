"""`warden id`, `warden cred` and `warden trust`: good paths, one-line errors, exit codes."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from warden.cli import cli


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def run(home: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [*args], env={"WARDEN_HOME": str(home), **(env or {})})


def one_line_error(result: Result) -> str:
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warden: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def new_id(home: Path, name: str) -> str:
    r = run(home, "id", "new", name)
    assert r.exit_code == 0, r.output
    return r.output.strip()


def test_id_new_and_show(home: Path) -> None:
    did = new_id(home, "alice")
    assert did.startswith("did:key:z6Mk")
    pem = home / "keys" / "alice.pem"
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert run(home, "id", "show", "alice").output.strip() == did
    listed = json.loads(run(home, "id", "show", "--json").output)
    assert listed == [{"name": "alice", "did": did, "encrypted": False, "path": str(pem)}]
    assert "already exists" in one_line_error(run(home, "id", "new", "alice"))


def test_id_with_passphrase_from_the_environment(home: Path) -> None:
    env = {"PW": "correct horse"}
    r = run(home, "id", "new", "sec", "--passphrase-env", "PW", env=env)
    assert r.exit_code == 0
    did = r.output.strip()
    assert b"ENCRYPTED" in (home / "keys" / "sec.pem").read_bytes()
    assert run(home, "id", "show", "sec").output.strip() == did  # from the sidecar
    r = run(home, "cred", "issue", "--key", "sec", "--to", did, "--cap", "x")
    assert "encrypted" in one_line_error(r)
    r = run(home, "cred", "issue", "--key", "sec", "--to", did, "--cap", "x",
            "--passphrase-env", "PW", env={"PW": "wrong"})  # fmt: skip
    assert "wrong passphrase" in one_line_error(r)
    r = run(home, "cred", "issue", "--key", "sec", "--to", did, "--cap", "x",
            "--passphrase-env", "PW", env=env)  # fmt: skip
    assert r.exit_code == 0 and r.output.count(".") == 2
    assert "not set" in one_line_error(run(home, "id", "new", "k2", "--passphrase-env", "NOPE"))


def test_bad_key_names_are_refused(home: Path) -> None:
    assert "bad key name" in one_line_error(run(home, "id", "new", "../escape"))


def test_issue_delegate_verify_chain(home: Path, tmp_path: Path) -> None:
    root, alice, bob = new_id(home, "root"), new_id(home, "alice"), new_id(home, "bob")
    pay = '{"tool": "pay", "args": {"amount": {"max": 100}}}'
    r = run(home, "cred", "issue", "--key", "root", "--to", alice, "--cap", "fs.*",
            "--cap", pay, "--ring", "2")  # fmt: skip
    assert r.exit_code == 0, r.output
    parent = r.output.strip()
    (tmp_path / "parent.jwt").write_text(parent + "\n")
    r = run(home, "cred", "delegate", "@" + str(tmp_path / "parent.jwt"), "--key", "alice",
            "--to", bob, "--cap", "fs.read", "--ttl", "10m")  # fmt: skip
    assert r.exit_code == 0, r.output
    child = r.output.strip()
    r = run(home, "cred", "verify", child, "--root", root, "--json")
    assert r.exit_code == 0, r.output
    info = json.loads(r.output)
    assert info["valid"] is True and info["subject"] == bob and info["ring"] == 2
    assert [link["issuer"] for link in info["chain"]] == [root, alice]
    text = run(home, "cred", "verify", child, env={"WARDEN_ROOTS": root}).output
    assert text.startswith(f"valid: {bob}")


def test_verify_failures_exit_non_zero(home: Path) -> None:
    root, alice = new_id(home, "root"), new_id(home, "alice")
    token = run(home, "cred", "issue", "--key", "root", "--to", alice, "--cap", "x").output.strip()
    assert "not a trusted root" in one_line_error(
        run(home, "cred", "verify", token, "--root", alice)
    )
    assert "audience" in one_line_error(
        run(home, "cred", "verify", token, "--root", root, "--aud", "other")
    )
    head, body, sig = token.split(".")
    tampered = f"{head}.{body[:-2]}AA.{sig}"
    assert "does not verify" in one_line_error(
        run(home, "cred", "verify", tampered, "--root", root)
    )
    assert "no trusted root" in one_line_error(run(home, "cred", "verify", token))
    assert "cannot read" in one_line_error(
        run(home, "cred", "verify", "@/nonexistent", "--root", root)
    )


def test_delegation_that_widens_is_refused(home: Path) -> None:
    new_id(home, "root")
    alice, bob = new_id(home, "alice"), new_id(home, "bob")
    token = run(home, "cred", "issue", "--key", "root", "--to", alice, "--cap", "fs.read").output
    r = run(home, "cred", "delegate", token.strip(), "--key", "alice", "--to", bob, "--cap", "fs.*")
    assert "widen" in one_line_error(r)
    r = run(
        home, "cred", "delegate", token.strip(), "--key", "bob", "--to", bob, "--cap", "fs.read"
    )
    assert "not to the holder" in one_line_error(r)


def test_issue_input_errors(home: Path) -> None:
    new_id(home, "root")
    assert "malformed DID" in one_line_error(
        run(home, "cred", "issue", "--key", "root", "--to", "did:key:zzz", "--cap", "x")
    )
    r = run(home, "cred", "issue", "--key", "root", "--to", new_id(home, "a"), "--cap", "{bad")
    assert "invalid JSON" in one_line_error(r)
    r = run(home, "cred", "issue", "--key", "root", "--to", new_id(home, "b"), "--ttl", "soon",
            "--cap", "x")  # fmt: skip
    assert r.exit_code == 2 and "Traceback" not in r.output


def test_trust_event_show_revoke_restore(home: Path) -> None:
    new_id(home, "ops")
    agent = new_id(home, "agent")
    r = run(home, "trust", "show", agent, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["score"] == 500
    r = run(home, "trust", "event", agent, "--kind", "violation", "--weight", "150", "--key", "ops")
    assert r.exit_code == 0, r.output
    assert "trust 350 (probation" in r.output
    shown = json.loads(run(home, "trust", "show", agent, "--json").output)
    assert shown["score"] == 350 and len(shown["events"]) == 1
    assert run(home, "trust", "revoke", agent, "--reason", "test").exit_code == 0
    shown = json.loads(run(home, "trust", "show", agent, "--json").output)
    assert shown["revoked"] is True and shown["reason"] == "test"
    table = run(home, "trust", "show").output
    assert agent[:20] in table
    r = run(home, "trust", "restore", agent)
    assert r.exit_code == 0 and "trust 500" in r.output
    assert "exactly one" in one_line_error(run(home, "trust", "revoke", "--reason", "x"))
    assert "malformed DID" in one_line_error(run(home, "trust", "show", "did:web:example.com"))


def test_revoked_credential_fails_cli_verify(home: Path) -> None:
    root, alice = new_id(home, "root"), new_id(home, "alice")
    token = run(home, "cred", "issue", "--key", "root", "--to", alice, "--cap", "x").output.strip()
    jti = json.loads(run(home, "cred", "verify", token, "--root", root, "--json").output)["chain"][
        0
    ]["jti"]
    assert run(home, "trust", "revoke", "--jti", jti, "--reason", "leaked").exit_code == 0
    assert "revoked" in one_line_error(run(home, "cred", "verify", token, "--root", root))


def test_no_private_key_material_in_any_output(home: Path) -> None:
    new_id(home, "root")
    pem = (home / "keys" / "root.pem").read_text()
    body = "".join(pem.strip().splitlines()[1:-1])
    outputs = [
        run(home, "id", "show").output,
        run(home, "id", "show", "root", "--json").output,
        run(home, "cred", "issue", "--key", "root", "--to", "did:key:bad", "--cap", "x").output,
    ]
    for out in outputs:
        assert body not in out
