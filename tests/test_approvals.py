"""Approvals: binding to the exact action, single use, expiry, self-approval, processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from warden import (
    Action,
    ApprovalRequired,
    ApprovalStore,
    ConfigurationError,
    Effect,
    Governor,
    load_policy_text,
)
from warden.approvals import action_digest
from warden.errors import ApprovalNotFound, ApprovalStateError, SelfApprovalError

POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: big-refund
    tool: pay.refund
    when: "args.amount > 100"
    effect: require_approval
    reason: big refunds need a human
  - id: refund
    tool: pay.refund
    effect: allow
"""
)
AGENT = {"id": "did:key:z6MkAgent", "trust": 700}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gov(tmp_path: Path, clock: Clock) -> Governor:
    store = ApprovalStore(tmp_path / "approvals.db", ttl=900, clock=clock)
    return Governor(POLICY, approvals=store, agent=AGENT)


def refund(amount: object, session: str = "s1", agent: dict[str, object] = AGENT) -> Action:
    return Action(tool="pay.refund", args={"amount": amount}, agent=agent, session=session)


def test_digest_is_canonical_and_binds_what_matters() -> None:
    a = Action(tool="t", args={"a": 1, "b": [1, 2]}, agent={"id": "x", "trust": 1})
    b = Action(
        tool="t", args={"b": [1, 2], "a": 1}, agent={"trust": 999, "id": "x"}, context={"now": 5}
    )
    assert action_digest(a) == action_digest(b)  # key order, trust and context do not count
    assert action_digest(a) != action_digest(
        Action(tool="t", args={"a": 2, "b": [1, 2]}, agent={"id": "x"})
    )
    assert action_digest(a) != action_digest(
        Action(tool="t", args={"a": 1, "b": [1, 2]}, agent={"id": "y"})
    )
    assert action_digest(a) != action_digest(
        Action(tool="t", args={"a": 1, "b": [1, 2]}, agent={"id": "x"}, session="other")
    )
    assert action_digest(a).startswith("sha256:") and len(action_digest(a)) == 71


def test_full_cycle_single_use(gov: Governor) -> None:
    d1 = gov.check(refund(500))
    assert d1.effect is Effect.REQUIRE_APPROVAL
    assert d1.rules == ("big-refund",)
    rid = d1.approval_id
    assert rid is not None
    # asking again while pending gives the same request, not a new one
    assert gov.check(refund(500)).approval_id == rid
    assert [r.id for r in gov.approvals.list("pending")] == [rid]

    req = gov.approvals.approve(rid, "alice@ops", "checked")
    assert (req.status, req.decided_by, req.note) == ("approved", "alice@ops", "checked")
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.ALLOW
    assert d2.approval_id == rid
    assert "approved by `alice@ops`" in d2.reasons[-1]
    assert gov.approvals.get(rid).status == "consumed"
    # used once: the same action asks again with a new request
    d3 = gov.check(refund(500))
    assert d3.effect is Effect.REQUIRE_APPROVAL
    assert d3.approval_id not in (None, rid)


def test_approval_does_not_cover_another_action(gov: Governor) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    gov.approvals.approve(rid, "alice@ops")
    for other in (
        refund(501),
        refund(500, session="s2"),
        refund(500, agent={"id": "did:key:z6MkOther", "trust": 700}),
    ):
        d = gov.check(other)
        assert d.effect is Effect.REQUIRE_APPROVAL
        assert d.approval_id != rid
    assert gov.approvals.get(rid).status == "approved"  # still unused, still for 500 only
    assert gov.check(refund(500)).effect is Effect.ALLOW


def test_agent_cannot_approve_its_own_request(gov: Governor) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    with pytest.raises(SelfApprovalError):
        gov.approvals.approve(rid, AGENT["id"])  # type: ignore[arg-type]
    assert gov.approvals.get(rid).status == "pending"
    assert gov.check(refund(500)).effect is Effect.REQUIRE_APPROVAL


def test_pending_request_expires_into_a_deny_then_asks_again(gov: Governor, clock: Clock) -> None:
    rid = gov.check(refund(500)).approval_id
    clock.now += 901
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY
    assert d.reasons[-1] == f"approval {rid} expired"
    assert gov.approvals.get(rid).status == "expired"
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.REQUIRE_APPROVAL and d2.approval_id != rid


def test_cannot_approve_an_expired_request(gov: Governor, clock: Clock) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    clock.now += 1000
    with pytest.raises(ApprovalStateError, match="expired"):
        gov.approvals.approve(rid, "alice@ops")


def test_unused_approval_expires(gov: Governor, clock: Clock) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    gov.approvals.approve(rid, "alice@ops")
    clock.now += 901
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY and "expired" in d.reasons[-1]


def test_denial_stands_until_expiry(gov: Governor, clock: Clock) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    gov.approvals.deny(rid, "bob@ops", "not this customer")
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY
    assert d.reasons[-1] == f"approval {rid} denied by `bob@ops`: not this customer"
    clock.now += 901
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.REQUIRE_APPROVAL and d2.approval_id != rid


def test_decided_requests_cannot_be_decided_again(gov: Governor) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    gov.approvals.approve(rid, "alice@ops")
    with pytest.raises(ApprovalStateError, match="already approved"):
        gov.approvals.deny(rid, "bob@ops")
    with pytest.raises(ApprovalNotFound):
        gov.approvals.approve("apr-nope", "alice@ops")
    with pytest.raises(ApprovalStateError, match="approver"):
        gov.approvals.approve(rid, "  ")


def test_non_json_arguments_cannot_be_approved(gov: Governor) -> None:
    # NaN cannot be ordered, so the approval rule matches (fail closed); NaN is not JSON
    d = gov.check(refund(float("nan")))
    assert d.effect is Effect.DENY
    assert "no approval can be bound" in d.reasons[-1]
    d = gov.check(Action(tool="pay.refund", args={"amount": 500, "blob": b"\x00"}, agent=AGENT))
    assert d.effect is Effect.DENY
    assert "no approval can be bound" in d.reasons[-1]


def test_unreachable_store_is_a_deny(tmp_path: Path) -> None:
    bad = tmp_path / "approvals.db"
    bad.write_bytes(b"this is not a sqlite database" * 100)
    gov = Governor(POLICY, home=tmp_path, agent=AGENT)
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY
    assert "approval store unavailable" in d.reasons[-1]
    with pytest.raises(ConfigurationError, match="cannot open approvals database"):
        ApprovalStore(bad)


def test_concurrent_checks_create_one_request(tmp_path: Path) -> None:
    store = ApprovalStore(tmp_path / "a.db")
    gov = Governor(POLICY, approvals=store, agent=AGENT)
    ids: list[str | None] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        ids.append(gov.check(refund(777)).approval_id)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(ids)) == 1 and ids[0] is not None
    assert len(store.list()) == 1


def test_wait_returns_when_decided_or_times_out(gov: Governor) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    assert gov.approvals.wait(rid, timeout=0.05).status == "pending"
    threading.Timer(0.1, gov.approvals.approve, args=(rid, "alice@ops")).start()
    assert gov.approvals.wait(rid, timeout=5).status == "approved"


def test_wait_async(gov: Governor) -> None:
    rid = gov.check(refund(500)).approval_id
    assert rid is not None

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, gov.approvals.deny, rid, "bob@ops")
        return (await gov.approvals.wait_async(rid, timeout=5)).status

    assert asyncio.run(main()) == "denied"


def test_approval_from_another_process_unblocks_a_waiting_tool(tmp_path: Path) -> None:
    """The CLI, in a separate process, approves; the waiting wrapped call then runs once."""
    gov = Governor(POLICY, home=tmp_path, agent=AGENT)
    done: list[str] = []

    @gov.tool("pay.refund", approval_wait=30)
    def pay(amount: int) -> str:
        done.append("paid")
        return "paid"

    # first call with no approver around: raises after a short wait
    gov_fast = Governor(POLICY, home=tmp_path, agent=AGENT)

    @gov_fast.tool("pay.refund", approval_wait=0.05)
    def pay_fast(amount: int) -> str:  # pragma: no cover - never approved
        return "paid"

    with pytest.raises(ApprovalRequired):
        pay_fast(900)
    pending = gov.approvals.list("pending")
    assert len(pending) == 1
    rid = pending[0].id

    approver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time, sys; time.sleep(0.3); from warden.cli import main; "
            f"sys.argv = ['warden', 'approvals', 'approve', '{rid}', '--as', 'alice@ops', "
            f"'--home', '{tmp_path}']; main()",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert pay(900) == "paid"
    out, err = approver.communicate(timeout=30)
    assert approver.returncode == 0, err
    assert f"{rid} approved by alice@ops" in out
    assert done == ["paid"]
    assert gov.approvals.get(rid).status == "consumed"
