"""`warden hook claude-code`: Claude Code's PreToolUse protocol, answered by the policy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from warden.cli import cli
from warden.cli.hook import tool_name

POLICY = """apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: read, tool: ["claude.Read", "claude.Grep"], effect: allow}
  - id: no-rm
    tool: claude.Bash
    when: "'rm -rf' in args.command"
    effect: deny
    reason: no recursive deletes
  - {id: bash, tool: claude.Bash, effect: require_approval, reason: shell needs a human}
  - {id: gh, tool: "mcp.github.*", effect: allow}
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(POLICY)
    return path


def ask(policy: Path, home: Path, event: object | str) -> dict[str, str]:
    text = event if isinstance(event, str) else json.dumps(event)
    r = CliRunner().invoke(
        cli, ["hook", "claude-code", "--policy", str(policy), "--home", str(home)], input=text
    )
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)["hookSpecificOutput"]
    assert out["hookEventName"] == "PreToolUse"
    return {"decision": out["permissionDecision"], "reason": out["permissionDecisionReason"]}


def event(tool: str, tool_input: dict[str, object]) -> dict[str, object]:
    return {
        "session_id": "abc",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": "toolu_1",
        "cwd": "/repo",
    }


def test_allow_deny_and_ask(policy: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert ask(policy, home, event("Read", {"file_path": "/repo/a.py"}))["decision"] == "allow"
    out = ask(policy, home, event("Bash", {"command": "rm -rf /"}))
    assert out == {"decision": "deny", "reason": "warden: denied: no recursive deletes"}
    out = ask(policy, home, event("Bash", {"command": "ls"}))
    assert out["decision"] == "ask" and "approval required (apr-" in out["reason"]
    assert ask(policy, home, event("Write", {"file_path": "x"}))["decision"] == "deny"
    assert ask(policy, home, event("mcp__github__list_issues", {}))["decision"] == "allow"


def test_every_decision_is_in_the_audit_log(policy: Path, tmp_path: Path) -> None:
    from warden.audit import open_for_verify

    home = tmp_path / "home"
    ask(policy, home, event("Read", {"file_path": "/a"}))
    ask(policy, home, event("Bash", {"command": "rm -rf ~"}))
    store = open_for_verify(home / "audit.db")
    recs = [json.loads(d) for _, _, d, _ in store.scan()]
    store.close()
    assert [(r["action"]["tool"], r["decision"]["effect"]) for r in recs] == [
        ("claude.Read", "allow"),
        ("claude.Bash", "deny"),
    ]
    assert recs[0]["session"] == "abc" and recs[0]["agent"]["id"] == "claude-code"


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[1, 2]",
        json.dumps({"hook_event_name": "PostToolUse", "tool_name": "Read"}),
        json.dumps({"tool_input": {}}),
        json.dumps({"tool_name": "Bash", "tool_input": "rm"}),
        "\xff",
    ],
)
def test_unreadable_events_are_denied_not_ignored(policy: Path, tmp_path: Path, bad: str) -> None:
    out = ask(policy, tmp_path / "home", bad)
    assert out["decision"] == "deny" and out["reason"].startswith("warden: unreadable hook event")


def test_a_broken_policy_denies(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: warden/v1\nkind: Policy\ndefault: maybe\nrules: []\n")
    out = ask(bad, tmp_path / "home", event("Read", {}))
    assert out["decision"] == "deny" and "policy did not load" in out["reason"]


def test_tool_names() -> None:
    assert tool_name("Bash") == "claude.Bash"
    assert tool_name("mcp__github__create_issue") == "mcp.github.create_issue"
    assert tool_name("mcp__x__y__z") == "mcp.x.y__z"
    assert tool_name("mcp__broken") == "claude.mcp__broken"


def test_as_a_real_subprocess(policy: Path, tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "warden"
    r = subprocess.run(
        [str(exe), "hook", "claude-code", "--policy", str(policy), "--home", str(tmp_path)],
        input=json.dumps(event("Grep", {"pattern": "x"})),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["hookSpecificOutput"]["permissionDecision"] == "allow"
