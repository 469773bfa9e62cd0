"""The `warden` command on good and bad input: exit codes, one-line errors, no tracebacks."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from warden import Action, Governor, load_policy
from warden.cli import cli

GOOD = """\
apiVersion: warden/v1
kind: Policy
name: cli
default: deny
rules:
  - id: no-drop
    tool: "db.drop*"
    effect: deny
    reason: no dropping
  - id: read
    tool: db.read
    when: "args.table != 'secrets'"
    effect: allow
  - id: refund-approval
    tool: pay.refund
    when: "args.amount > 100"
    effect: require_approval
"""

BAD = """\
apiVersion: warden/v1
kind: Policy
default: sometimes
rules:
  - id: a
    tol: x
    effect: allow
    when: "args.n >"
  - id: a
    effect: deny
"""

LINE = re.compile(r"^[^:]+:\d+:\d+: [a-z_]+: .+$")


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


@pytest.fixture
def good(tmp_path: Path) -> Path:
    p = tmp_path / "good.yaml"
    p.write_text(GOOD)
    return p


@pytest.fixture
def bad(tmp_path: Path) -> Path:
    p = tmp_path / "bad.yaml"
    p.write_text(BAD)
    return p


def test_check_good(good: Path) -> None:
    r = run("policy", "check", str(good))
    assert r.exit_code == 0
    assert "0 errors" in r.stderr


def test_check_bad_reports_every_error_with_location(bad: Path) -> None:
    r = run("policy", "check", str(bad))
    assert r.exit_code == 1
    lines = [ln for ln in r.stdout.splitlines() if not ln.startswith("    hint:")]
    assert all(LINE.match(ln) for ln in lines), lines
    codes = [ln.split(": ")[1] for ln in lines]
    assert codes == [
        "policy_invalid_value",
        "policy_unknown_field",
        "expr_syntax_error",
        "policy_duplicate_id",
    ]
    assert lines[0].startswith(f"{bad}:3:10: policy_invalid_value: `default` must be one of")
    assert "hint: did you mean `tool`?" in r.stdout
    assert "Traceback" not in r.output


def test_check_warnings_and_strict(tmp_path: Path) -> None:
    p = tmp_path / "w.yaml"
    p.write_text(
        "apiVersion: warden/v1\nkind: Policy\ndefault: allow\nrules:\n"
        "  - id: all\n    effect: allow\n"
    )
    r = run("policy", "check", str(p))
    assert r.exit_code == 0
    assert f"{p}:0:0" not in r.stdout
    assert "warning: lint_default_allow" in r.stdout
    assert f"{p}:5:5: warning: lint_broad_allow" in r.stdout
    assert run("policy", "check", "--strict", str(p)).exit_code == 1


def test_check_json(bad: Path) -> None:
    r = run("policy", "check", "--format", "json", str(bad))
    assert r.exit_code == 1
    data = json.loads(r.stdout)
    assert data["errors"] == 4
    assert data["diagnostics"][0] == {
        "file": str(bad),
        "line": 3,
        "col": 10,
        "severity": "error",
        "code": "policy_invalid_value",
        "message": "`default` must be one of allow, deny, not `sometimes`",
    }


def test_check_missing_file(tmp_path: Path) -> None:
    r = run("policy", "check", str(tmp_path / "nope.yaml"))
    assert r.exit_code == 1
    assert f"{tmp_path / 'nope.yaml'}: policy_file_error: no such file" in r.stdout


def test_eval_prints_the_decision(good: Path) -> None:
    r = run("policy", "eval", str(good), "--action", '{"tool": "db.drop_table"}')
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["effect"] == "deny"
    assert out["rules"] == ["no-drop"]
    assert out["reasons"] == ["no dropping"]
    assert out["errors"] == []


def test_eval_reports_evaluation_errors(good: Path) -> None:
    r = run("policy", "eval", str(good), "--action", '{"tool": "db.read"}')
    out = json.loads(r.stdout)
    assert (out["effect"], out["errors"]) == ("deny", ["rule `read`: missing key `args.table`"])


def test_eval_from_file_and_stdin(good: Path, tmp_path: Path) -> None:
    f = tmp_path / "a.json"
    f.write_text('{"tool": "db.read", "args": {"table": "t"}}')
    assert (
        json.loads(run("policy", "eval", str(good), "--action", f"@{f}").stdout)["effect"]
        == "allow"
    )
    r = run(
        "policy",
        "eval",
        str(good),
        "--action",
        "@-",
        input='{"tool": "pay.refund", "args": {"amount": 500}}',
    )
    assert json.loads(r.stdout)["effect"] == "require_approval"


@pytest.mark.parametrize(
    ("action", "message"),
    [
        ('{"tool": ', "--action:1:10: invalid JSON: expecting value"),
        ('{"tol": "x"}', "--action: unknown field `tol`"),
        ("[1]", "--action: an action must be a JSON object"),
        ('{"tool": ""}', "--action: action `tool` must be a non-empty string"),
        ('{"tool": "x", "kind": "nope"}', "--action: action `kind` must be one of"),
        ("@/nonexistent/file.json", "/nonexistent/file.json: cannot read"),
    ],
)
def test_eval_bad_action_is_one_line(good: Path, action: str, message: str) -> None:
    r = run("policy", "eval", str(good), "--action", action)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.startswith(f"warden: error: {message}"), r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_eval_bad_policy(bad: Path) -> None:
    r = run("policy", "eval", str(bad), "--action", '{"tool": "x"}')
    assert r.exit_code == 1
    assert f"warden: error: policy `{bad}` did not load (4 errors)" in r.stderr


def test_explain_table_and_json(good: Path) -> None:
    action = '{"tool": "db.read", "args": {"table": "secrets"}}'
    r = run("policy", "explain", str(good), "--action", action, "--json")
    assert r.exit_code == 0
    trace = json.loads(r.stdout)
    assert [(t["id"], t["status"]) for t in trace["rules"]] == [
        ("no-drop", "skipped"),
        ("read", "not_matched"),
        ("refund-approval", "skipped"),
    ]
    assert trace["decision"]["effect"] == "deny"
    r = run("policy", "explain", str(good), "--action", action)
    assert "not_matched" in r.stdout and "decision: deny" in r.stdout


def test_policy_test_pass_and_fail(good: Path, tmp_path: Path) -> None:
    t = tmp_path / "good_test.yaml"
    t.write_text(
        "policy: good.yaml\ncases:\n"
        "  - note: drop is denied\n    action: {tool: db.drop_x}\n"
        "    want: {effect: deny, rules: [no-drop]}\n"
    )
    r = run("policy", "test", str(tmp_path))
    assert (r.exit_code, r.stdout.strip().splitlines()[-1]) == (0, "1 passed, 0 failed")
    t.write_text(
        "policy: good.yaml\ncases:\n"
        "  - note: drop is allowed (wrong)\n    action: {tool: db.drop_x}\n"
        "    want: {effect: allow, rules: [no-drop]}\n"
    )
    r = run("policy", "test", str(t))
    assert r.exit_code == 1
    assert f"FAIL  {t}:3: drop is allowed (wrong)" in r.stdout
    assert "effect: want allow, got deny" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "0 passed, 1 failed"


def test_policy_test_missing_path(tmp_path: Path) -> None:
    r = run("policy", "test", str(tmp_path / "none"))
    assert r.exit_code == 1 and "no such file or directory" in r.stderr


def test_bundled_example_tests_pass() -> None:
    examples = Path(__file__).parents[1] / "src" / "warden" / "examples"
    r = run("policy", "test", str(examples))
    assert r.exit_code == 0, r.stdout
    assert r.stdout.strip().endswith(" passed, 0 failed")


def test_approvals_commands(good: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    gov = Governor(load_policy(good), home=home)
    agent = {"id": "did:key:z6MkBot"}
    d = gov.check(Action(tool="pay.refund", args={"amount": 500}, agent=agent))
    rid = d.approval_id
    assert rid is not None

    listed = json.loads(run("approvals", "list", "--home", str(home), "--json").stdout)
    assert [r["id"] for r in listed] == [rid]
    assert listed[0]["action"]["args"] == {"amount": 500}

    r = run("approvals", "approve", rid, "--as", "did:key:z6MkBot", "--home", str(home))
    assert r.exit_code == 1
    assert "cannot approve it" in r.stderr and "Traceback" not in r.output

    r = run("approvals", "approve", rid, "--as", "alice", "--note", "ok", "--home", str(home))
    assert r.exit_code == 0 and f"{rid} approved by alice" in r.stdout
    r = run("approvals", "deny", rid, "--as", "bob", "--home", str(home))
    assert r.exit_code == 1 and "already approved" in r.stderr
    assert gov.check(Action(tool="pay.refund", args={"amount": 500}, agent=agent)).allowed

    r = run("approvals", "show", "apr-missing", "--home", str(home))
    assert r.exit_code == 1 and "no approval request `apr-missing`" in r.stderr
    assert "no pending requests" in run("approvals", "list", "--home", str(home)).stdout


def test_approvals_without_database(tmp_path: Path) -> None:
    r = run("approvals", "list", "--home", str(tmp_path / "nothing"))
    assert r.exit_code == 1 and "no approvals database" in r.stderr


def test_demo_runs() -> None:
    r = run("demo")
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert "require_approval" in out and "approved apr-" in out
    assert "mail may only go to customer addresses" in out
    assert "Nothing the policy denied ran." in out
    assert "a stolen copy of the token: proof of possession: not signed" in out
    assert "`payments.refund` is not covered by the credential's capabilities" in out


def test_installed_entry_point_and_usage_errors() -> None:
    exe = Path(sys.executable).parent / "warden"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=False)
    assert r.returncode == 0 and r.stdout.startswith("warden, version")
    r = subprocess.run([str(exe), "policy", "eval"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
