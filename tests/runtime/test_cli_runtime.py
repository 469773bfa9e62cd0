"""`warden kill`, `restore` and `ring` change what a Governor on the same home does."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner, Result

from warden import Action, Effect, Governor, load_policy_text
from warden.cli import cli

POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
tools:
  "db.write": {ring: 1}
agents:
  "bot-*": {ring: 1}
"""
)


def run(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"WARDEN_HOME": str(home), "USER": "alice"})


def error_line(r: Result) -> str:
    assert r.exit_code == 1, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("warden: error: "), r.output
    return lines[0]


def test_kill_restore_and_ring_round_trip(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)
    act = Action(tool="db.write", agent={"id": "bot-1"}, session="s1")
    assert gov.check(act).allowed
    r = run(tmp_path, "kill", "bot-1", "--reason", "looping on payments")
    assert r.exit_code == 0, r.output
    gov.runtime.state.refresh()  # what the watcher does within 100 ms
    d = gov.check(act)
    assert d.effect is Effect.DENY and d.reasons == ("killed: looping on payments (by alice)",)
    listed = json.loads(run(tmp_path, "kill", "--list", "--json").output)
    assert [(k["scope"], k["target"], k["by"]) for k in listed] == [("agent", "bot-1", "alice")]
    assert run(tmp_path, "restore", "bot-1").exit_code == 0
    gov.runtime.state.refresh()
    d = gov.check(act)
    assert d.effect is Effect.DENY and "is ring 3" in d.reasons[0]  # restored, still demoted
    rings = json.loads(run(tmp_path, "ring", "list", "--json").output)
    assert rings[0]["agent"] == "bot-1" and rings[0]["ring"] == 3
    assert run(tmp_path, "ring", "set", "bot-1", "1", "--reason", "reviewed").exit_code == 0
    gov.runtime.state.refresh()
    assert gov.check(act).allowed
    assert gov.audit is not None
    gov.audit.flush()
    types = [json.loads(d)["type"] for _, _, d, _ in gov.audit.store.scan()]
    assert "warden.kill/v1" in types and "warden.restore/v1" in types
    assert types.count("warden.ring/v1") == 1  # the CLI records the operator's ring change


def test_kill_all_and_sessions(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path, audit=False)
    assert run(tmp_path, "kill", "--all", "--reason", "incident").exit_code == 0
    gov.runtime.state.refresh()
    assert not gov.check(Action(tool="x", agent={"id": "anyone"})).allowed
    assert run(tmp_path, "restore", "--all").exit_code == 0
    assert run(tmp_path, "kill", "--session", "s7", "--reason", "r").exit_code == 0
    gov.runtime.state.refresh()
    assert not gov.check(Action(tool="x", session="s7")).allowed
    assert gov.check(Action(tool="x", session="s8")).allowed


def test_usage_errors(tmp_path: Path) -> None:
    assert "exactly one target" in error_line(run(tmp_path, "kill", "--reason", "x"))
    assert "exactly one target" in error_line(
        run(tmp_path, "kill", "a", "--session", "s", "--reason", "x")
    )
    assert "--reason is required" in error_line(run(tmp_path, "kill", "bot-1"))
    assert "no kill of agent nobody" in error_line(run(tmp_path, "restore", "nobody"))
    r = run(tmp_path, "ring", "set", "bot-1", "7", "--reason", "x")
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert run(tmp_path, "kill", "--list").output.strip() == "no kills in effect"
