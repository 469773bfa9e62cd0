"""The Governor's audit trail: every decision and every outcome, linked, redacted, verifiable."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from warden import Action, ActionDenied, ConfigurationError, Effect, Governor, load_policy_text
from warden.audit import AuditLog, canonical, open_for_verify, trusted_verifier, verify_log

POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: pay
    tool: pay.charge
    effect: allow
    redact: [card]
  - id: read
    tool: "db.*"
    effect: allow
agents:
  "did:key:z6MkAgent": {ring: 2}   # the operator's ring for the agent (docs/runtime.md)
"""
)
AGENT = {"id": "did:key:z6MkAgent", "trust": 700, "ring": 2}


def records(gov: Governor) -> list[dict[str, Any]]:
    assert gov.audit is not None
    gov.audit.flush()
    return [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]


def test_the_log_is_on_by_default_under_home(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)
    assert gov.audit is not None
    assert gov.audit.path == tmp_path / "audit.db"
    gov.check(Action(tool="db.read"))
    assert [r["type"] for r in records(gov)] == ["warden.decision/v1"]
    assert (tmp_path / "audit-key.pem").stat().st_mode & 0o777 == 0o600


def test_audit_can_be_turned_off_explicitly_only(tmp_path: Path) -> None:
    assert Governor(POLICY, home=tmp_path, audit=False).audit is None
    with pytest.raises(ConfigurationError):
        Governor(POLICY, home=tmp_path, audit="yes")  # type: ignore[arg-type]  # under test


def test_decisions_and_outcomes_are_linked(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path, agent=AGENT)

    @gov.tool("db.read")
    def read(table: str) -> str:
        return "rows"

    @gov.tool("fs.write")
    def write(table: str) -> None:  # pragma: no cover - denied
        raise AssertionError

    @gov.tool("db.fail")
    def fail(table: str) -> None:
        raise RuntimeError("disk on fire")

    with gov.session("s1"):
        assert read("t") == "rows"
        with pytest.raises(ActionDenied):
            write("t")
        with pytest.raises(RuntimeError):
            fail("t")
    recs = records(gov)
    assert [r["seq"] for r in recs] == list(range(6))
    decisions = [r for r in recs if r["type"] == "warden.decision/v1"]
    outcomes = [r for r in recs if r["type"] == "warden.outcome/v1"]
    assert [d["decision"]["effect"] for d in decisions] == ["allow", "deny", "allow"]
    assert [o["status"] for o in outcomes] == ["ok", "denied", "error"]
    for d, o in zip(decisions, outcomes, strict=True):
        assert o["decision"] == d["id"]
        assert len(d["id"]) == 32
        assert o["tool"] == d["action"]["tool"]
        assert d["session"] == o["session"] == "s1"
        assert d["agent"] == {"id": AGENT["id"], "trust": 700, "ring": 2}
        assert d["policy"] == POLICY.hash
    ok = outcomes[0]
    assert ok["output"] == {"size": 4, "digest": "sha256:" + hashlib.sha256(b"rows").hexdigest()}
    assert outcomes[2]["error"] == {"type": "RuntimeError", "message": "disk on fire"}
    assert outcomes[1]["output"] is None


def test_cancelled_async_call_is_recorded_as_killed(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)

    @gov.tool("db.slow")
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.create_task(slow())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    outcome = records(gov)[-1]
    assert outcome["status"] == "killed"
    assert outcome["error"]["type"] == "CancelledError"


def test_redacted_arguments_are_stored_as_digests(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)
    d = gov.check(Action(tool="pay.charge", args={"card": "4111111111111111", "amount": 5}))
    assert d.obligations == ("redact:args.card",)
    (rec,) = records(gov)
    args = rec["action"]["args"]
    assert args["amount"] == 5
    assert args["card"] == {
        "redacted": "sha256:" + hashlib.sha256(canonical({"v": "4111111111111111"})).hexdigest()
    }
    assert gov.audit is not None
    raw = gov.audit.path.read_bytes()
    assert b"4111111111111111" not in raw


def test_arguments_are_recorded_as_they_were_at_decision_time(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)
    args = {"table": "users"}
    gov.check(Action(tool="db.read", args=args))
    args["table"] = "changed afterwards"
    assert records(gov)[0]["action"]["args"] == {"table": "users"}


def test_non_json_arguments_are_recorded_as_markers(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path)
    d = gov.check(Action(tool="db.read", args={"blob": b"\x00\x01", "n": 2**80, "x": object()}))
    assert d.effect is Effect.ALLOW
    args = records(gov)[0]["action"]["args"]
    assert args["blob"]["non_json"] == "bytes"
    assert args["n"] == {"non_json": "int", "value": str(2**80)}
    assert args["x"]["non_json"] == "object"


def test_the_governors_log_verifies(tmp_path: Path) -> None:
    gov = Governor(POLICY, home=tmp_path, agent=AGENT)
    for i in range(250):
        gov.run(Action(tool="db.read", args={"i": i}, agent=AGENT), lambda i=i: i)
    assert gov.audit is not None
    note = gov.audit.checkpoint()
    gov.audit.close()
    store = open_for_verify(tmp_path / "audit.db")
    verifier, source = trusted_verifier(store, None)
    report = verify_log(store, verifier, earlier=note)
    assert report.size == 500
    assert source.endswith("audit-key.pub")


def test_a_closed_log_fails_closed(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.db")
    gov = Governor(POLICY, home=tmp_path, audit=log)
    assert gov.check(Action(tool="db.read")).effect is Effect.ALLOW
    log.close()
    d = gov.check(Action(tool="db.read"))
    assert d.effect is Effect.DENY
    assert "could not be recorded" in d.reasons[-1]
