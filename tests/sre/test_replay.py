"""Replay (docs/sre.md, "Replay and shadow mode"): the exact diff of a candidate policy.

Logs are real: a Governor decides, records outcomes, gates an approval, runs out
a budget and kills an agent; then the log is replayed under other policies.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from warden import Action, Effect, Governor, load_policy_text
from warden.audit import open_for_verify
from warden.cli.replay import replay as replay_command
from warden.errors import AuditError
from warden.sre.replay import ReplayChange, ReplayReport, replay

OLD = """\
apiVersion: warden/v1
kind: Policy
name: replay-old
default: deny
rules:
  - {id: read, tool: "db.read*", effect: allow}
  - {id: no-drop, tool: "db.drop*", effect: deny}
  - {id: refund, tool: pay.refund, effect: require_approval, redact: card}
  - {id: small-pay, tool: pay.charge, effect: allow, when: "args.amount <= 100"}
budgets:
  - {id: two-charges, tool: pay.charge, scope: agent, calls: 2}
"""

NEW = """\
apiVersion: warden/v1
kind: Policy
name: replay-new
default: deny
rules:
  - {id: read, tool: "db.read*", effect: allow}
  - {id: no-secrets, tool: "db.read*", effect: deny, when: "args.table == 'secrets'"}
  - {id: no-drop, tool: "db.drop*", effect: deny}
  - {id: refund, tool: pay.refund, effect: require_approval, redact: card}
  - {id: big-refund, tool: pay.refund, effect: deny, when: "args.amount > 500"}
  - {id: small-pay, tool: pay.charge, effect: allow, when: "args.amount <= 50"}
  - {id: mail, tool: "mail.*", effect: allow}
"""

ALICE = {"id": "did:key:alice"}
BOB = {"id": "did:key:bob"}


def build(home: Path) -> tuple[Path, dict[str, int]]:
    """A log of 11 decisions and other records; the seq of each named decision."""
    gov = Governor(load_policy_text(OLD), home=home)
    ids: dict[str, str] = {}

    def check(name: str, action: Action) -> Any:
        decision = gov.check(action)
        ids[name] = decision.id
        return decision

    read = Action(tool="db.read", args={"table": "orders"}, agent=ALICE)
    d = check("read", read)
    gov.record_outcome(read, d, "ok", 1_000, result={"rows": 3})
    check("secrets", Action(tool="db.read", args={"table": "secrets"}, agent=BOB))
    check("drop", Action(tool="db.drop_table", args={"table": "orders"}, agent=ALICE))
    refund = Action(
        tool="pay.refund", args={"card": "4111", "amount": 10}, agent=ALICE, session="s1"
    )
    pending = check("refund-small", refund)
    assert pending.effect is Effect.REQUIRE_APPROVAL
    big = Action(tool="pay.refund", args={"card": "4242", "amount": 900}, agent=BOB)
    check("refund-big", big)
    charge = Action(tool="pay.charge", args={"amount": 80}, agent=BOB)
    d = check("charge-80", charge)
    gov.record_outcome(charge, d, "error", 2_000, error=RuntimeError("card declined"))
    check("charge-20", Action(tool="pay.charge", args={"amount": 20}, agent=BOB))
    over = check("charge-over", Action(tool="pay.charge", args={"amount": 20}, agent=BOB))
    assert over.rules == ("budget:two-charges",)
    check("mail", Action(tool="mail.send", args={"to": "x@example.com"}))
    assert pending.approval_id is not None
    gov.approvals.approve(pending.approval_id, "ops")
    approved = check("refund-approved", refund)
    assert (approved.effect, approved.approval_id) == (Effect.ALLOW, pending.approval_id)
    gov.runtime.kill(agent="did:key:bob", reason="replay test")
    killed = check("killed", Action(tool="db.read", args={"table": "orders"}, agent=BOB))
    assert killed.reasons[0].startswith("killed:")
    assert gov.audit is not None
    gov.audit.close()
    path = home / "audit.db"
    store = open_for_verify(path)
    seq_of = {}
    try:
        for seq, _, data, _ in store.scan():
            rec = json.loads(data)
            if rec["type"] == "warden.decision/v1":
                seq_of[rec["id"]] = seq
        assert {rec_type(data) for _, _, data, _ in store.scan()} >= {
            "warden.outcome/v1",
            "warden.kill/v1",
        }
    finally:
        store.close()
    return path, {name: seq_of[i] for name, i in ids.items()}


def rec_type(data: bytes) -> str:
    return str(json.loads(data)["type"])


@pytest.fixture
def log(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    return build(tmp_path / "home")


def expected_changes(seqs: dict[str, int]) -> tuple[ReplayChange, ...]:
    return (
        ReplayChange(
            seqs["secrets"], "db.read", "did:key:bob", "allow", "deny", ("read",),
            ("no-secrets",), False,
        ),
        ReplayChange(
            seqs["refund-big"], "pay.refund", "did:key:bob", "require_approval", "deny",
            ("refund",), ("big-refund",), True,
        ),
        ReplayChange(
            seqs["charge-80"], "pay.charge", "did:key:bob", "allow", "deny", ("small-pay",), (),
            False,
        ),
        ReplayChange(seqs["mail"], "mail.send", None, "deny", "allow", (), ("mail",), False),
    )  # fmt: skip


def test_replay_reports_the_exact_diff(log: tuple[Path, dict[str, int]]) -> None:
    path, seqs = log
    old, new = load_policy_text(OLD), load_policy_text(NEW)
    report = replay(path, new)
    assert report.records == 11
    assert report.changed == 4
    assert report.unchanged == 5  # read, drop, refund-small, charge-20, refund-approved
    assert report.runtime == 2  # the budget deny and the kill deny are not the policy's
    assert report.records == report.changed + report.unchanged + report.runtime
    assert report.approximate == 3  # the three refunds: their card is redacted
    assert report.transitions == {"allow->deny": 2, "deny->allow": 1, "require_approval->deny": 1}
    assert list(report.transitions) == ["allow->deny", "deny->allow", "require_approval->deny"]
    assert report.by_rule == {
        "new:(default)": 1,
        "new:big-refund": 1,
        "new:mail": 1,
        "new:no-secrets": 1,
        "old:(default)": 1,
        "old:read": 1,
        "old:refund": 1,
        "old:small-pay": 1,
    }
    assert report.examples == expected_changes(seqs)
    assert [c.seq for c in report.examples] == sorted(c.seq for c in report.examples)
    assert report.old_policies == (old.hash,)
    assert report.new_policy == new.hash
    assert report.seconds > 0


def test_by_rule_counts_every_rule_of_a_side_once_per_change(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(OLD), home=tmp_path)
    for table in ("a", "b", "c"):
        gov.check(Action(tool="db.read", args={"table": table}, agent=ALICE))
    assert gov.audit is not None
    gov.audit.close()
    both = OLD.replace(
        "rules:\n",
        "rules:\n"
        '  - {id: "x:1", tool: "db.*", effect: deny, when: "args.table != \'c\'"}\n'
        '  - {id: "x:2", tool: "db.read", effect: deny, when: "args.table != \'c\'"}\n',
    )
    report = replay(tmp_path / "audit.db", load_policy_text(both))
    assert (report.changed, report.unchanged) == (2, 1)
    assert report.by_rule == {"new:x:1": 2, "new:x:2": 2, "old:read": 2}
    assert report.examples[0].new_rules == ("x:1", "x:2")


def test_the_same_policy_changes_nothing(log: tuple[Path, dict[str, int]]) -> None:
    path, _ = log
    report = replay(path, load_policy_text(OLD))
    assert (report.records, report.changed, report.unchanged, report.runtime) == (11, 0, 9, 2)
    assert report.approximate == 3
    assert (report.transitions, report.by_rule, report.examples) == ({}, {}, ())


def test_show_limits_the_examples_not_the_counts(log: tuple[Path, dict[str, int]]) -> None:
    path, seqs = log
    new = load_policy_text(NEW)
    two = replay(path, new, show=2)
    assert two.examples == expected_changes(seqs)[:2]
    assert two.changed == 4
    assert replay(path, new, show=0).examples == ()
    with pytest.raises(ValueError, match="show"):
        replay(path, new, show=-1)


def test_progress_reports_entries_read(log: tuple[Path, dict[str, int]]) -> None:
    path, _ = log
    seen: list[int] = []
    replay(path, load_policy_text(NEW), progress=seen.append)
    store = open_for_verify(path)
    size = store.size()
    store.close()
    assert size > 11  # outcomes, the kill and the ring hold are in the log too
    assert seen == [size]


def test_the_recorded_agent_and_session_are_what_candidate_rules_see(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(OLD), home=tmp_path)
    gov.check(Action(tool="db.read", agent=ALICE, session="s1"))
    gov.check(Action(tool="db.read", agent=BOB, session="s2"))
    gov.check(Action(tool="db.read", agent=BOB, session="s1"))
    gov.check(Action(tool="db.read"))
    assert gov.audit is not None
    gov.audit.close()
    candidate = OLD.replace(
        "rules:\n",
        "rules:\n"
        '  - {id: no-bob, agent: "did:key:bob", tool: "db.*", effect: deny,'
        " when: \"session == 's1'\"}\n"
        '  - {id: untrusted, tool: "db.*", effect: deny,'
        " when: \"has(agent, 'trust') or agent.ring != 3\"}\n",
    )
    report = replay(tmp_path / "audit.db", load_policy_text(candidate))
    # only bob in s1 changes: the agent scope and `session` are rebuilt; the recorded null
    # trust is left out (as it was absent), and the ring is the effective one (3)
    assert report.changed == 1
    assert report.examples[0].agent == "did:key:bob"
    assert report.examples[0].new_rules == ("no-bob",)


class BrokenApprovals:
    def gate(self, *args: Any) -> Any:
        raise RuntimeError("approvals are down")


def test_a_gate_failure_deny_was_require_approval_for_the_policy(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(OLD), home=tmp_path, approvals=BrokenApprovals())  # type: ignore[arg-type]
    d = gov.check(Action(tool="pay.refund", args={"card": "1", "amount": 900}, agent=ALICE))
    assert (d.effect, d.rules) == (Effect.DENY, ("refund",))
    assert d.reasons[-1].startswith("approval store unavailable")
    assert gov.audit is not None
    gov.audit.close()
    same = replay(tmp_path / "audit.db", load_policy_text(OLD))
    assert (same.records, same.unchanged, same.changed) == (1, 1, 0)
    new = replay(tmp_path / "audit.db", load_policy_text(NEW))
    assert new.transitions == {"require_approval->deny": 1}


def test_values_the_log_did_not_keep_make_a_record_approximate(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(OLD), home=tmp_path)
    gov.check(Action(tool="db.read", args={"blob": b"\x00raw"}))  # a non-JSON value
    gov.check(Action(tool="db.read", args={"q": [{"n": 1}]}))
    gov.check(Action(tool="db.read", args={"q": {"redacted": "not a digest"}}))
    assert gov.audit is not None
    gov.audit.close()
    report = replay(tmp_path / "audit.db", load_policy_text(OLD))
    assert (report.records, report.approximate) == (3, 1)


def test_an_unreadable_log_raises(tmp_path: Path, log: tuple[Path, dict[str, int]]) -> None:
    policy = load_policy_text(NEW)
    with pytest.raises(AuditError, match="no audit log here"):
        replay(tmp_path / "missing.db", policy)
    junk = tmp_path / "junk.db"
    junk.write_text("not a database\n" * 100)
    with pytest.raises(AuditError, match="not a readable audit log"):
        replay(junk, policy)
    path, seqs = log
    with sqlite3.connect(path) as db:
        db.execute("UPDATE entries SET data = ? WHERE seq = ?", (b"{not json", seqs["drop"]))
    db.close()
    with pytest.raises(AuditError, match=rf"entry {seqs['drop']}: not a JSON record"):
        replay(path, policy)


def test_a_malformed_decision_record_raises(log: tuple[Path, dict[str, int]]) -> None:
    path, seqs = log
    with sqlite3.connect(path) as db:
        (data,) = db.execute("SELECT data FROM entries WHERE seq = ?", (seqs["read"],)).fetchone()
        rec = json.loads(data)
        rec["action"]["kind"] = "teleport"
        db.execute(
            "UPDATE entries SET data = ? WHERE seq = ?", (json.dumps(rec).encode(), seqs["read"])
        )
    db.close()
    with pytest.raises(AuditError, match=rf"entry {seqs['read']}: .*malformed action"):
        replay(path, load_policy_text(NEW))


# --- the command -------------------------------------------------------------------------------


def run(*args: str) -> Result:
    r = CliRunner().invoke(replay_command, list(args), catch_exceptions=False)
    assert "Traceback" not in r.output
    return r


@pytest.fixture
def files(tmp_path: Path, log: tuple[Path, dict[str, int]]) -> dict[str, Path]:
    old = tmp_path / "old.yaml"
    new = tmp_path / "new.yaml"
    old.write_text(OLD)
    new.write_text(NEW)
    return {"audit": log[0], "old": old, "new": new}


def test_cli_exits_0_when_nothing_changes(files: dict[str, Path]) -> None:
    r = run("--audit", str(files["audit"]), "--policy", str(files["old"]))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"replayed 11 decisions from {files['audit']} under ")
    assert "changed 0, unchanged 9, decided by runtime state (not compared) 2" in lines[2]
    assert lines[-1] == "no decision would change"


def test_cli_exits_3_and_lists_the_changes(
    files: dict[str, Path], log: tuple[Path, dict[str, int]]
) -> None:
    _, seqs = log
    r = run("--audit", str(files["audit"]), "--policy", str(files["new"]), "--show", "3")
    assert r.exit_code == 3, r.output
    out = r.stdout.splitlines()
    start = out.index("effect changes (old -> new):")
    assert [line.split() for line in out[start + 1 : start + 4]] == [
        ["allow->deny", "2"],
        ["deny->allow", "1"],
        ["require_approval->deny", "1"],
    ]
    start = out.index("rules behind the changes:")
    assert [line.split() for line in out[start + 1 : start + 9]] == [
        ["new", "(default)", "1"],
        ["new", "big-refund", "1"],
        ["new", "mail", "1"],
        ["new", "no-secrets", "1"],
        ["old", "(default)", "1"],
        ["old", "read", "1"],
        ["old", "refund", "1"],
        ["old", "small-pay", "1"],
    ]
    start = out.index("first 3 of 4 changes (by seq):")
    assert out[start + 1 :] == [
        f"  #{seqs['secrets']}  db.read  agent did:key:bob  allow -> deny  "
        "old: read  new: no-secrets",
        f"  #{seqs['refund-big']}  pay.refund  agent did:key:bob  require_approval -> deny  "
        "old: refund  new: big-refund  (approximate)",
        f"  #{seqs['charge-80']}  pay.charge  agent did:key:bob  allow -> deny  "
        "old: small-pay  new: (default)",
    ]


def test_cli_json_matches_the_report(files: dict[str, Path]) -> None:
    r = run("--audit", str(files["audit"]), "--policy", str(files["new"]), "--json")
    assert r.exit_code == 3, r.output
    got = json.loads(r.stdout)
    want = replay(files["audit"], load_policy_text(NEW)).to_dict()
    assert got.pop("audit") == str(files["audit"])
    assert got.pop("policy") == str(files["new"])
    got.pop("seconds")
    want.pop("seconds")
    assert got == want
    assert got["examples"][1] == {
        "seq": got["examples"][1]["seq"],
        "tool": "pay.refund",
        "agent": "did:key:bob",
        "old_effect": "require_approval",
        "new_effect": "deny",
        "old_rules": ["refund"],
        "new_rules": ["big-refund"],
        "approximate": True,
    }


def test_cli_reads_the_log_in_home_by_default(tmp_path: Path, files: dict[str, Path]) -> None:
    r = run("--home", str(files["audit"].parent), "--policy", str(files["new"]), "--json")
    assert (r.exit_code, json.loads(r.stdout)["changed"]) == (3, 4)


def test_cli_reads_warden_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, files: dict[str, Path]
) -> None:
    monkeypatch.setenv("WARDEN_HOME", str(files["audit"].parent))
    r = run("--policy", str(files["old"]))
    assert r.exit_code == 0, r.output


def one_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_cli_bad_inputs_are_one_line_and_exit_1(tmp_path: Path, files: dict[str, Path]) -> None:
    missing = tmp_path / "nope.db"
    r = run("--audit", str(missing), "--policy", str(files["new"]))
    assert r.exit_code == 1
    assert one_line(r) == f"warden: error: {missing}: no audit log here"
    junk = tmp_path / "junk.db"
    junk.write_text("hello\n" * 200)
    r = run("--audit", str(junk), "--policy", str(files["new"]))
    assert r.exit_code == 1
    assert one_line(r).startswith(f"warden: error: {junk}: not a readable audit log (")
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as db:
        db.execute("CREATE TABLE t (x)")
    db.close()
    r = run("--audit", str(foreign), "--policy", str(files["new"]))
    assert r.exit_code == 1
    assert one_line(r) == (f"warden: error: {foreign}: not a warden audit log (schema version 0)")
    assert r.stdout == ""


def test_cli_a_bad_policy_prints_located_diagnostics(
    tmp_path: Path, files: dict[str, Path]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        NEW.replace("default: deny", "default: maybe").replace("effect: allow}", "effect: allw}", 1)
    )
    r = run("--audit", str(files["audit"]), "--policy", str(bad))
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines == [
        f"{bad}:4:10: policy_invalid_value: `default` must be one of allow, deny, not `maybe`",
        f"{bad}:6:42: policy_invalid_value: `effect` must be one of allow, deny, "
        "require_approval, not `allw`",
        f"warden: error: policy `{bad}` did not load (2 errors)",
    ]
    for line in lines[:-1]:
        assert re.fullmatch(r".+:\d+:\d+: [a-z_]+: .+", line)
    r = run("--audit", str(files["audit"]), "--policy", str(tmp_path / "absent.yaml"))
    assert r.exit_code == 1
    assert r.stderr.splitlines()[-1] == (
        f"warden: error: policy `{tmp_path / 'absent.yaml'}` did not load (1 error)"
    )


def test_cli_usage_errors_exit_2(files: dict[str, Path]) -> None:
    assert run("--audit", str(files["audit"])).exit_code == 2  # no --policy
    r = run("--audit", str(files["audit"]), "--policy", str(files["new"]), "--show", "-1")
    assert r.exit_code == 2


def test_the_report_is_a_value() -> None:
    report = ReplayReport(
        records=1, changed=0, transitions={}, by_rule={}, approximate=0, unchanged=1,
        examples=(), old_policies=("sha256:a",), new_policy="sha256:b", seconds=0.5,
    )  # fmt: skip
    assert report.to_dict() == {
        "records": 1,
        "changed": 0,
        "unchanged": 1,
        "runtime": 0,
        "approximate": 0,
        "transitions": {},
        "by_rule": {},
        "examples": [],
        "old_policies": ["sha256:a"],
        "new_policy": "sha256:b",
        "seconds": 0.5,
    }
