"""`warden serve`: every route of docs/fleet.md, its scopes, its errors, and the attribution.

Most tests drive the Starlette app in process (TestClient); one starts the
real `warden serve` command on a free port and decides over HTTP.
"""

from __future__ import annotations

import json
import re
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from warden.action import Action
from warden.audit import (
    DECISION_V1,
    NoteVerifier,
    leaf_hash,
    parse_checkpoint,
    verify_inclusion,
)
from warden.errors import ConfigurationError, InclusionProofError
from warden.governor import Governor
from warden.server import API_V1, MAX_BODY, TokenStore, create_app

POLICY = """\
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: reads
    tool: "db.read"
    effect: allow
  - id: no-drops
    tool: "db.drop_*"
    effect: deny
    reason: dropping tables is not allowed
  - id: refunds
    tool: "payments.refund"
    effect: require_approval
    reason: refunds need a human
"""

READ = {"tool": "db.read", "args": {"table": "users"}, "agent": {"id": "bot-1"}, "session": "s1"}
DROP = {"tool": "db.drop_table", "args": {"table": "users"}, "agent": {"id": "bot-1"}}
REFUND = {"tool": "payments.refund", "args": {"amount": 30}, "agent": {"id": "bot-1"}}
ALL_SCOPES = "decide,read,approve,operate"
TOKEN_TEXT = re.compile(r"wdn_[A-Za-z0-9_-]{43}")


# --- fixtures --------------------------------------------------------------------------------


class Service:
    """One app over one home, with a helper to make tokens and read the audit log."""

    def __init__(self, policy: Path, home: Path) -> None:
        self.home = home
        self.gov = Governor.from_policy(policy, home=home)
        self.tokens = TokenStore.for_home(home)
        self.app = create_app(self.gov, self.tokens)
        self.client = TestClient(self.app)

    def bearer(self, subject: str = "alice", scopes: str = ALL_SCOPES) -> dict[str, str]:
        text, _ = self.tokens.new(subject, scopes, by="test")
        return {"Authorization": f"Bearer {text}"}

    def records(self, record_type: str) -> list[dict[str, Any]]:
        assert self.gov.audit is not None
        self.gov.audit.flush()
        rows = self.gov.audit.store.select_records(record_type=record_type)
        return [json.loads(data) for _, data in rows]

    def close(self) -> None:
        self.client.close()
        if self.gov.audit is not None:
            self.gov.audit.close()
        self.gov.runtime.close()
        self.gov.approvals.close()
        self.tokens.close()


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def svc(policy: Path, tmp_path: Path) -> Iterator[Service]:
    service = Service(policy, tmp_path / "home")
    yield service
    service.close()


@pytest.fixture
def auth(svc: Service) -> dict[str, str]:
    return svc.bearer()


def assert_error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """The response is the error form with this status and code; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "errors"}
    assert body["code"] == code
    assert body["message"] and isinstance(body["errors"], list) and body["errors"]
    return body


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "it") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


# --- /v1/decide --------------------------------------------------------------------------------


def test_decide_answers_the_decision_and_attributes_it(svc: Service, auth: dict[str, str]) -> None:
    allowed = svc.client.post("/v1/decide", json=READ, headers=auth)
    assert allowed.status_code == 200
    body = allowed.json()
    assert set(body) == {
        "effect", "rules", "reasons", "errors", "obligations", "policy_hash", "id", "approval_id"
    }  # fmt: skip
    assert body["effect"] == "allow" and body["rules"] == ["reads"]
    assert body["obligations"] == [] and body["approval_id"] is None
    assert body["policy_hash"].startswith("sha256:") and re.fullmatch(r"[0-9a-f]{32}", body["id"])

    denied = svc.client.post("/v1/decide", json=DROP, headers=auth).json()
    assert denied["effect"] == "deny"
    assert denied["reasons"] == ["dropping tables is not allowed"]

    # each decision's audit record is linked to the request's warden.api/v1 record by its id
    decisions = {r["id"]: r for r in svc.records(DECISION_V1)}
    api = [r for r in svc.records(API_V1) if r["path"] == "/v1/decide"]
    assert [r["decision_id"] for r in api] == [body["id"], denied["id"]]
    assert all(r["subject"] == "alice" and r["method"] == "POST" for r in api)
    assert [r["status"] for r in api] == [200, 200]
    assert decisions[body["id"]]["action"]["tool"] == "db.read"
    assert decisions[denied["id"]]["decision"]["effect"] == "deny"


def test_require_approval_then_approve_then_allowed(svc: Service) -> None:
    agent = svc.bearer("bot-host", "decide")
    human = svc.bearer("alice", "approve,read")
    first = svc.client.post("/v1/decide", json=REFUND, headers=agent).json()
    assert first["effect"] == "require_approval"
    approval_id = first["approval_id"]
    assert approval_id and approval_id.startswith("apr-")

    pending = svc.client.get("/v1/approvals?status=pending", headers=human)
    assert pending.status_code == 200
    listed = pending.json()["approvals"]
    assert [a["id"] for a in listed] == [approval_id]
    assert listed[0]["agent_id"] == "bot-1" and listed[0]["action"]["tool"] == "payments.refund"

    approved = svc.client.post(
        f"/v1/approvals/{approval_id}/approve", json={"reason": "customer called"}, headers=human
    )
    assert approved.status_code == 200
    assert approved.json()["status"] == "approved"
    assert approved.json()["decided_by"] == "alice"  # the token's subject is the approver
    assert approved.json()["note"] == "customer called"

    again = svc.client.post("/v1/decide", json=REFUND, headers=agent).json()
    assert again["effect"] == "allow"
    assert again["approval_id"] == approval_id
    assert "approved by `alice`" in again["reasons"][-1]
    # used once: the next identical action asks again
    third = svc.client.post("/v1/decide", json=REFUND, headers=agent).json()
    assert third["effect"] == "require_approval" and third["approval_id"] != approval_id
    api = [r for r in svc.records(API_V1) if r["path"].endswith("/approve")]
    assert api == [
        {
            **api[0],
            "subject": "alice",
            "method": "POST",
            "path": f"/v1/approvals/{approval_id}/approve",
            "status": 200,
            "decision_id": None,
        }
    ]


def test_deny_a_request_and_the_action_is_denied(svc: Service, auth: dict[str, str]) -> None:
    approval_id = svc.client.post("/v1/decide", json=REFUND, headers=auth).json()["approval_id"]
    denied = svc.client.post(
        f"/v1/approvals/{approval_id}/deny", json={"reason": "not this one"}, headers=auth
    )
    assert denied.status_code == 200 and denied.json()["status"] == "denied"
    after = svc.client.post("/v1/decide", json=REFUND, headers=auth).json()
    assert after["effect"] == "deny"
    assert after["reasons"][-1] == f"approval {approval_id} denied by `alice`: not this one"
    everything = svc.client.get("/v1/approvals?status=all", headers=auth).json()["approvals"]
    assert [a["status"] for a in everything] == ["denied"]


def test_self_approval_is_403_and_changes_nothing(svc: Service) -> None:
    agent = svc.bearer("bot-1", ALL_SCOPES)  # the subject is the requesting agent's id
    approval_id = svc.client.post("/v1/decide", json=REFUND, headers=agent).json()["approval_id"]
    refused = svc.client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=agent)
    body = assert_error(refused, 403, "self_approval")
    assert "`bot-1`" in body["message"]
    assert svc.gov.approvals.get(approval_id).status == "pending"
    api = [r for r in svc.records(API_V1) if r["path"].endswith("/approve")]
    assert [(r["subject"], r["status"]) for r in api] == [("bot-1", 403)]  # the attempt is kept


def test_unknown_approval_is_404_and_a_decided_one_409(svc: Service, auth: dict[str, str]) -> None:
    assert_error(
        svc.client.post("/v1/approvals/apr-000000000000/approve", json={}, headers=auth),
        404,
        "not_found",
    )
    approval_id = svc.client.post("/v1/decide", json=REFUND, headers=auth).json()["approval_id"]
    ok = svc.client.post(f"/v1/approvals/{approval_id}/approve", json={}, headers=auth)
    assert ok.status_code == 200
    for verb in ("approve", "deny"):
        again = svc.client.post(f"/v1/approvals/{approval_id}/{verb}", json={}, headers=auth)
        body = assert_error(again, 409, "wrong_state")
        assert "already approved" in body["message"]


def test_approval_bodies_are_checked(svc: Service, auth: dict[str, str]) -> None:
    approval_id = svc.client.post("/v1/decide", json=REFUND, headers=auth).json()["approval_id"]
    url = f"/v1/approvals/{approval_id}/approve"
    body = assert_error(
        svc.client.post(url, json={"reason": 5}, headers=auth), 400, "invalid_request"
    )
    assert body["errors"][0]["field"] == "reason"
    body = assert_error(
        svc.client.post(url, json={"why": "x"}, headers=auth), 400, "invalid_request"
    )
    assert body["errors"][0]["field"] == "why"
    assert svc.gov.approvals.get(approval_id).status == "pending"
    bad = svc.client.get("/v1/approvals?status=maybe", headers=auth)
    assert assert_error(bad, 400, "invalid_request")["errors"][0]["field"] == "status"


# --- the kill switch -----------------------------------------------------------------------


def test_kill_via_the_api_denies_the_next_decision_and_restore_lifts_it(svc: Service) -> None:
    operator = svc.bearer("oncall", "operate")
    agent = svc.bearer("bot-host", "decide")
    assert svc.client.post("/v1/decide", json=READ, headers=agent).json()["effect"] == "allow"
    killed = svc.client.post(
        "/v1/kill",
        json={"scope": "agent", "target": "bot-1", "reason": "runaway loop"},
        headers=operator,
    )
    assert killed.status_code == 200
    assert killed.json() == {
        "scope": "agent",
        "target": "bot-1",
        "reason": "runaway loop",
        "by": "oncall",
        "cancelled": 0,
    }
    after = svc.client.post("/v1/decide", json=READ, headers=agent).json()
    assert after["effect"] == "deny"
    assert after["reasons"] == ["killed: runaway loop (by oncall)"]
    other = {**READ, "agent": {"id": "bot-2"}}
    assert svc.client.post("/v1/decide", json=other, headers=agent).json()["effect"] == "allow"

    restored = svc.client.post(
        "/v1/restore", json={"scope": "agent", "target": "bot-1"}, headers=operator
    )
    assert restored.status_code == 200 and restored.json()["by"] == "oncall"
    assert svc.client.post("/v1/decide", json=READ, headers=agent).json()["effect"] == "allow"
    again = svc.client.post(
        "/v1/restore", json={"scope": "agent", "target": "bot-1"}, headers=operator
    )
    assert_error(again, 409, "wrong_state")

    kills = svc.records("warden.kill/v1")
    assert [(k["scope"], k["target"], k["by"]) for k in kills] == [("agent", "bot-1", "oncall")]
    assert [r["by"] for r in svc.records("warden.restore/v1")] == ["oncall"]
    api = [(r["path"], r["status"]) for r in svc.records(API_V1) if r["subject"] == "oncall"]
    assert api == [("/v1/kill", 200), ("/v1/restore", 200), ("/v1/restore", 409)]


def test_kill_all_and_session(svc: Service, auth: dict[str, str]) -> None:
    killed = svc.client.post(
        "/v1/kill", json={"scope": "session", "target": "s1", "reason": "leak"}, headers=auth
    )
    assert killed.status_code == 200
    assert svc.client.post("/v1/decide", json=READ, headers=auth).json()["effect"] == "deny"
    no_session = {**READ, "session": "s2"}
    assert svc.client.post("/v1/decide", json=no_session, headers=auth).json()["effect"] == "allow"
    everything = svc.client.post(
        "/v1/kill", json={"scope": "all", "reason": "incident"}, headers=auth
    )
    assert everything.status_code == 200 and everything.json()["target"] is None
    assert svc.client.post("/v1/decide", json=no_session, headers=auth).json()["effect"] == "deny"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"scope": "agent", "target": "bot-1"}, "reason"),
        ({"scope": "agent", "target": "bot-1", "reason": "  "}, "reason"),
        ({"scope": "planet", "target": "x", "reason": "r"}, "scope"),
        ({"scope": "agent", "reason": "r"}, "target"),
        ({"scope": "all", "target": "bot-1", "reason": "r"}, "target"),
        ({"scope": "agent", "target": "bot-1", "reason": "r", "by": "mallory"}, "by"),
    ],
)
def test_kill_bodies_are_checked_and_nothing_is_killed(
    svc: Service, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    refused = svc.client.post("/v1/kill", json=body, headers=auth)
    assert assert_error(refused, 400, "invalid_request")["errors"][0]["field"] == field
    assert svc.gov.runtime.state.kills() == []
    assert svc.client.post("/v1/decide", json=READ, headers=auth).json()["effect"] == "allow"


# --- authentication and scopes ---------------------------------------------------------------


def test_no_token_a_bad_token_and_a_revoked_one_are_401(svc: Service) -> None:
    no_token = svc.client.post("/v1/decide", json=READ)
    assert_error(no_token, 401, "unauthenticated")
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    unknown = "wdn_" + secrets.token_urlsafe(32)
    for header in (f"Bearer {unknown}", "Bearer not-a-token", "Basic YWxpY2U6cHc=", "Bearer "):
        refused = svc.client.post("/v1/decide", json=READ, headers={"Authorization": header})
        assert_error(refused, 401, "unauthenticated")

    text, made = svc.tokens.new("carol", "decide", by="test")
    good = {"Authorization": f"Bearer {text}"}
    assert svc.client.post("/v1/decide", json=READ, headers=good).status_code == 200
    # revoked from another process (its own connection to tokens.db): refused at once
    with TokenStore.for_home(svc.home) as other:
        other.revoke(made.id)
    assert_error(svc.client.post("/v1/decide", json=READ, headers=good), 401, "unauthenticated")
    # nobody unauthenticated is recorded; carol's one good request is
    api = svc.records(API_V1)
    assert [(r["subject"], r["status"]) for r in api] == [("carol", 200)]
    assert len(svc.records(DECISION_V1)) == 1


@pytest.mark.parametrize(
    ("method", "path", "scope"),
    [
        ("POST", "/v1/decide", "decide"),
        ("GET", "/v1/approvals", "read"),
        ("POST", "/v1/approvals/apr-1/approve", "approve"),
        ("POST", "/v1/approvals/apr-1/deny", "approve"),
        ("POST", "/v1/kill", "operate"),
        ("POST", "/v1/restore", "operate"),
        ("GET", "/v1/audit", "read"),
        ("GET", "/v1/audit/0/proof", "read"),
        ("GET", "/v1/audit/verify", "read"),
    ],
)
def test_every_route_needs_its_scope(svc: Service, method: str, path: str, scope: str) -> None:
    others = ",".join(s for s in ALL_SCOPES.split(",") if s != scope)
    headers = svc.bearer("dave", others)
    refused = svc.client.request(method, path, json=READ, headers=headers)
    body = assert_error(refused, 403, "missing_scope")
    assert f"`{scope}`" in body["message"]
    assert svc.records(DECISION_V1) == []
    assert svc.gov.runtime.state.kills() == []


# --- malformed requests ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"args": {}}, "tool"),
        ({"tool": ""}, "tool"),
        ({"tool": 7}, "tool"),
        ({"tool": "db.read", "kind": "telepathy"}, "kind"),
        ({"tool": "db.read", "args": [1, 2]}, "args"),
        ({"tool": "db.read", "session": 5}, "session"),
        ({"tool": "db.read", "tol": "x"}, "tol"),
        ({"tool": "db.read", "flow": {"args": {"iban": "untrusted"}}}, "flow.args.iban"),
    ],
)
def test_a_malformed_action_is_400_naming_the_field(
    svc: Service, auth: dict[str, str], body: dict[str, Any], field: str
) -> None:
    refused = assert_error(
        svc.client.post("/v1/decide", json=body, headers=auth), 400, "invalid_action"
    )
    assert refused["errors"] == [{"field": field, "message": refused["message"]}]
    assert f"`{field}`" in refused["message"]
    assert svc.records(DECISION_V1) == []


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b"",
        b"[1, 2]",
        b'"db.read"',
        b"\xff\xfe{}",
        b'{"tool": NaN}',
        b'{"tool": "db.read", "args": {"n": 1e400}}',
        b"[" * 100_000,
    ],
)
def test_a_body_that_is_not_a_json_object_is_400(
    svc: Service, auth: dict[str, str], raw: bytes
) -> None:
    headers = {**auth, "Content-Type": "application/json"}
    assert_error(svc.client.post("/v1/decide", content=raw, headers=headers), 400, "invalid_json")
    assert svc.records(DECISION_V1) == []


@pytest.mark.parametrize("ctype", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_a_body_that_is_not_json_is_415(
    svc: Service, auth: dict[str, str], ctype: str | None
) -> None:
    headers = dict(auth) if ctype is None else {**auth, "Content-Type": ctype}
    refused = svc.client.post("/v1/decide", content=json.dumps(READ).encode(), headers=headers)
    assert_error(refused, 415, "unsupported_media_type")
    assert svc.records(DECISION_V1) == []
    # and the +json and charset forms are JSON
    for ok in ("application/json; charset=utf-8", "application/vnd.warden+json"):
        answer = svc.client.post(
            "/v1/decide", content=json.dumps(READ).encode(), headers={**auth, "Content-Type": ok}
        )
        assert answer.status_code == 200


def test_an_oversized_body_is_413_before_the_governor_sees_it(
    svc: Service, auth: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[object] = []
    monkeypatch.setattr(svc.gov, "check", seen.append)
    big = {"tool": "db.read", "args": {"blob": "x" * MAX_BODY}}
    refused = svc.client.post("/v1/decide", json=big, headers=auth)
    assert_error(refused, 413, "body_too_large")

    # without a Content-Length (chunked), the limit holds while reading: the rest is never read
    sent: list[int] = []
    chunk = b"x" * 65536
    head = b'{"tool": "db.read", "args": {"blob": "'

    async def receive() -> dict[str, Any]:
        sent.append(1)
        if len(sent) > 64:  # 4 MiB in all, then the end of the object
            return {"type": "http.request", "body": b'"}}', "more_body": False}
        return {
            "type": "http.request",
            "body": head if len(sent) == 1 else chunk,
            "more_body": True,
        }

    answer: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        answer.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/decide",
        "raw_path": b"/v1/decide",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"transfer-encoding", b"chunked"),
            (b"authorization", auth["Authorization"].encode()),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 7070),
    }
    anyio.run(svc.app, scope, receive, send)
    assert answer[0]["type"] == "http.response.start" and answer[0]["status"] == 413
    assert json.loads(answer[1]["body"])["code"] == "body_too_large"
    assert len(sent) == 17  # the head and 16 chunks pass 1 MiB: not one more was read
    assert seen == []
    assert svc.records(DECISION_V1) == []
    assert [r["status"] for r in svc.records(API_V1)] == [413, 413]  # the attempts, attributed
    # exactly at the limit is still read (and then judged on its content)
    padded = json.dumps(READ).encode()
    padded = padded[:-1] + b" " * (MAX_BODY - len(padded)) + b"}"
    assert len(padded) == MAX_BODY
    monkeypatch.undo()
    headers = {**auth, "Content-Type": "application/json"}
    assert svc.client.post("/v1/decide", content=padded, headers=headers).status_code == 200


def test_unknown_routes_and_methods_answer_in_the_error_form(
    svc: Service, auth: dict[str, str]
) -> None:
    assert_error(svc.client.get("/v2/decide", headers=auth), 404, "not_found")
    wrong = svc.client.get("/v1/decide", headers=auth)
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "POST"
    assert_error(svc.client.get("/v1/audit/x/proof", headers=auth), 404, "not_found")


# --- the audit log ---------------------------------------------------------------------------


def test_audit_query_filters(svc: Service, auth: dict[str, str]) -> None:
    for action in (READ, DROP, READ):
        svc.client.post("/v1/decide", json=action, headers=auth)
    got = svc.client.get("/v1/audit?tool=db.read", headers=auth)
    assert got.status_code == 200
    records = got.json()["records"]
    assert [r["action"]["tool"] for r in records] == ["db.read", "db.read"]
    assert records[0]["seq"] < records[1]["seq"]  # oldest first
    denied = svc.client.get("/v1/audit?effect=deny&agent=bot-1", headers=auth).json()["records"]
    assert [r["action"]["tool"] for r in denied] == ["db.drop_table"]
    newest = svc.client.get(f"/v1/audit?type={API_V1}&limit=2", headers=auth).json()["records"]
    assert len(newest) == 2 and all(r["type"] == API_V1 for r in newest)
    assert newest[-1]["seq"] == max(r["seq"] for r in svc.records(API_V1))
    future = svc.client.get("/v1/audit?since=2999-01-01T00:00:00Z", headers=auth).json()
    assert future == {"records": []}
    recent = svc.client.get("/v1/audit?since=1h&tool=db.drop_table", headers=auth).json()
    assert len(recent["records"]) == 1
    for query, field in (
        ("limit=0", "limit"),
        ("limit=lots", "limit"),
        ("effect=maybe", "effect"),
        ("since=yesterday", "since"),
        ("tools=db.read", "tools"),
    ):
        refused = svc.client.get(f"/v1/audit?{query}", headers=auth)
        assert assert_error(refused, 400, "invalid_request")["errors"][0]["field"] == field


def test_audit_proof_verifies_against_a_signed_checkpoint(
    svc: Service, auth: dict[str, str]
) -> None:
    decided = svc.client.post("/v1/decide", json=DROP, headers=auth).json()
    svc.client.post("/v1/decide", json=READ, headers=auth)
    seq = next(r["seq"] for r in svc.records(DECISION_V1) if r["id"] == decided["id"])
    got = svc.client.get(f"/v1/audit/{seq}/proof", headers=auth)
    assert got.status_code == 200
    body = got.json()
    assert body["record"]["id"] == decided["id"] and body["index"] == seq
    assert body["size"] > seq

    # check it as a client would: the record's bytes, the proof, the signed root
    assert svc.gov.audit is not None
    data = svc.gov.audit.store.record(seq)
    assert json.loads(data) == body["record"]
    leaf = leaf_hash(data)
    assert leaf.hex() == body["leaf_hash"]
    proof = [bytes.fromhex(h) for h in body["proof"]]
    root = bytes.fromhex(body["root"])
    verify_inclusion(leaf, seq, body["size"], proof, root)
    verifier = NoteVerifier.from_string(body["key"])
    assert verifier.to_string() == svc.gov.audit.verifier.to_string()
    checkpoint = parse_checkpoint(body["checkpoint"], verifier, svc.gov.audit.store.origin)
    assert checkpoint.size == body["size"] and checkpoint.root == root
    # the check can fail: a flipped bit in the proof or another record does not verify
    if proof:
        flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf, seq, body["size"], flipped, root)
    with pytest.raises(InclusionProofError):
        verify_inclusion(leaf_hash(data + b" "), seq, body["size"], proof, root)

    # a later record gets a newer checkpoint that covers it
    latest = svc.gov.audit.store.size() - 1
    later = svc.client.get(f"/v1/audit/{latest}/proof", headers=auth).json()
    assert later["size"] > latest
    missing = svc.client.get(f"/v1/audit/{latest + 1000}/proof", headers=auth)
    assert_error(missing, 404, "not_found")


def test_audit_verify(svc: Service, auth: dict[str, str]) -> None:
    for action in (READ, DROP, REFUND):
        svc.client.post("/v1/decide", json=action, headers=auth)
    got = svc.client.get("/v1/audit/verify", headers=auth)
    assert got.status_code == 200
    body = got.json()
    assert body["ok"] is True
    assert svc.gov.audit is not None
    assert body["size"] == svc.gov.audit.store.size() >= 6  # 3 decisions, 3 api records


def test_a_store_that_does_not_answer_is_503(svc: Service, auth: dict[str, str]) -> None:
    svc.gov.approvals.close()
    got = svc.client.get("/v1/approvals", headers=auth)
    assert_error(got, 503, "store_unavailable")
    approve = svc.client.post("/v1/approvals/apr-1/approve", json={}, headers=auth)
    assert_error(approve, 503, "store_unavailable")
    lines = svc.client.get("/metrics").text.splitlines()
    # the scrape found the store down too: the pending gauge is left out, and counted
    assert "warden_store_errors_total 3" in lines
    assert not any(line.startswith("warden_approvals_pending ") for line in lines)


def test_an_audit_log_that_cannot_record_is_503_and_the_decision_a_deny(
    svc: Service, auth: dict[str, str]
) -> None:
    assert svc.gov.audit is not None
    svc.gov.audit.close()
    got = svc.client.post("/v1/decide", json=READ, headers=auth)
    assert_error(got, 503, "audit_unavailable")
    assert svc.gov.check(Action.from_dict(READ)).effect.value == "deny"  # the sink failed: deny


# --- health and metrics ----------------------------------------------------------------------


def test_healthz_is_200_and_503_with_what_is_down(svc: Service) -> None:
    ok = svc.client.get("/healthz")
    assert ok.status_code == 200 and ok.json() == {"ok": True}
    assert svc.gov.audit is not None
    svc.gov.audit.close()
    down = svc.client.get("/healthz")
    assert down.status_code == 503
    body = down.json()
    assert body["ok"] is False and body["code"] == "unhealthy"
    assert [e["field"] for e in body["errors"]] == ["audit"]
    assert "closed" in body["errors"][0]["message"]


_SAMPLE = re.compile(r'([a-z_]+)(\{[a-z]+="[^"]*"\})? (\S+)')


def test_metrics_text_exposition(svc: Service, auth: dict[str, str]) -> None:
    for action in (READ, READ, DROP, REFUND):
        svc.client.post("/v1/decide", json=action, headers=auth)
    got = svc.client.get("/metrics")
    assert got.status_code == 200
    assert got.headers["content-type"].startswith("text/plain; version=0.0.4")
    samples: dict[str, float] = {}
    types: dict[str, str] = {}
    for line in got.text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind
            continue
        if line.startswith("# HELP "):
            continue
        m = _SAMPLE.fullmatch(line)
        assert m, f"not a sample line: {line!r}"
        samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    assert types == {
        "warden_decisions_total": "counter",
        "warden_decision_seconds": "histogram",
        "warden_approvals_pending": "gauge",
        "warden_store_errors_total": "counter",
    }
    assert samples['warden_decisions_total{effect="allow"}'] == 2
    assert samples['warden_decisions_total{effect="deny"}'] == 1
    assert samples['warden_decisions_total{effect="require_approval"}'] == 1
    assert samples["warden_approvals_pending"] == 1
    assert samples["warden_store_errors_total"] == 0
    buckets = [v for k, v in samples.items() if k.startswith("warden_decision_seconds_bucket")]
    assert buckets == sorted(buckets) and buckets[-1] == 4
    assert samples['warden_decision_seconds_bucket{le="+Inf"}'] == 4
    assert samples["warden_decision_seconds_count"] == 4
    assert samples["warden_decision_seconds_sum"] > 0


# --- replicas --------------------------------------------------------------------------------


def test_two_replicas_over_one_home_decide_alike(policy: Path, tmp_path: Path) -> None:
    home = tmp_path / "shared"
    one, two = Service(policy, home), Service(policy, home)
    try:
        auth = one.bearer("bot-host", ALL_SCOPES)  # one tokens.db: valid on both
        actions = [
            READ,
            DROP,
            {"tool": "unknown.tool"},
            {**READ, "kind": "message"},
            {"tool": "db.read", "agent": {"id": "bot-9", "ring": 0}, "context": {"x": 1}},
        ]
        keys = ("effect", "rules", "reasons", "errors", "obligations", "policy_hash")
        for action in actions:
            a = one.client.post("/v1/decide", json=action, headers=auth).json()
            b = two.client.post("/v1/decide", json=action, headers=auth).json()
            assert {k: a[k] for k in keys} == {k: b[k] for k in keys}, action
            assert a["id"] != b["id"]
        # an approval asked on one replica, approved on the other, used on the first
        asked = one.client.post("/v1/decide", json=REFUND, headers=auth).json()
        same = two.client.post("/v1/decide", json=REFUND, headers=auth).json()
        assert same["approval_id"] == asked["approval_id"]
        human = two.bearer("alice", "approve")
        url = f"/v1/approvals/{asked['approval_id']}/approve"
        assert two.client.post(url, json={}, headers=human).status_code == 200
        assert one.client.post("/v1/decide", json=REFUND, headers=auth).json()["effect"] == "allow"
        # a kill through one replica reaches the other
        one.client.post(
            "/v1/kill", json={"scope": "agent", "target": "bot-1", "reason": "x"}, headers=auth
        )
        wait_for(
            lambda: (
                two.client.post("/v1/decide", json=READ, headers=auth).json()["effect"] == "deny"
            ),
            what="the kill to reach the second replica",
        )
        # one log: both replicas' records in one verifiable sequence
        verified = two.client.get("/v1/audit/verify", headers=auth).json()
        assert verified["ok"] is True
        assert {r["subject"] for r in one.records(API_V1)} == {"bot-host", "alice"}
    finally:
        one.close()
        two.close()


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_are_stored_as_hashes_only(tmp_path: Path) -> None:
    with TokenStore.for_home(tmp_path) as store:
        text, made = store.new("alice", "read, approve", by="ops")
        assert TOKEN_TEXT.fullmatch(text)
        assert made.scopes == frozenset({"read", "approve"}) and made.subject == "alice"
        found = store.authenticate(text)
        assert found is not None and found.id == made.id
        assert store.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
        with pytest.raises(ConfigurationError, match="unknown scope `admin`"):
            store.new("bob", "read,admin", by="ops")
        with pytest.raises(ConfigurationError, match="at least one scope"):
            store.new("bob", " , ", by="ops")
        with pytest.raises(ConfigurationError, match="subject"):
            store.new("bo\nb", "read", by="ops")
        store.revoke(made.id[:8])
        assert store.authenticate(text) is None
        with pytest.raises(ConfigurationError, match="already revoked"):
            store.revoke(made.id)
        with pytest.raises(ConfigurationError, match="no token"):
            store.revoke("abcdef")
        assert store.list() == [] and [t.id for t in store.list(revoked=True)] == [made.id]
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("tokens.db*"))
    assert text.encode() not in raw and text[4:].encode() not in raw


def test_token_commands(tmp_path: Path) -> None:
    from warden.cli.serve import serve

    home = str(tmp_path / "home")
    runner = CliRunner()
    made = runner.invoke(
        serve, ["token", "new", "--home", home, "--subject", "alice", "--scope", "approve,read"]
    )
    assert made.exit_code == 0, made.output
    text = made.stdout.strip()
    assert TOKEN_TEXT.fullmatch(text)
    listed = runner.invoke(serve, ["--home", home, "token", "list", "--json"])  # the group's
    assert listed.exit_code == 0
    tokens = json.loads(listed.stdout)
    assert [(t["subject"], t["scopes"]) for t in tokens] == [("alice", ["approve", "read"])]
    assert text not in listed.stdout
    bad = runner.invoke(serve, ["token", "new", "--home", home, "--subject", "x", "--scope", "all"])
    assert bad.exit_code == 1 and "unknown scope `all`" in bad.stderr
    revoked = runner.invoke(serve, ["token", "revoke", tokens[0]["id"], "--home", home])
    assert revoked.exit_code == 0, revoked.output
    assert (
        json.loads(runner.invoke(serve, ["token", "list", "--home", home, "--json"]).stdout) == []
    )
    missing = runner.invoke(serve, ["token", "revoke", "abcdef", "--home", home])
    assert missing.exit_code == 1 and "no token `abcdef`" in missing.stderr
    no_policy = runner.invoke(serve, ["--home", home])
    assert no_policy.exit_code == 1 and "--policy is required" in no_policy.stderr


# --- the real server -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _warden_serve() -> list[str]:
    from warden.cli import cli

    if "serve" in cli.commands:
        return [str(Path(sys.executable).parent / "warden"), "serve"]
    return [
        sys.executable,
        "-c",
        "from warden.cli.serve import serve; serve(prog_name='warden serve')",
    ]


def test_warden_serve_decides_over_http(policy: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    with TokenStore.for_home(home) as store:
        text, _ = store.new("bot-host", "decide,read", by="test")
    port = _free_port()
    errlog = tmp_path / "serve.err"
    argv = [*_warden_serve(), "--policy", str(policy), "--home", str(home)]
    with errlog.open("w") as err:
        proc = subprocess.Popen(
            [*argv, "--listen", f"127.0.0.1:{port}"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(
            lambda: f"warden: serving {url}" in errlog.read_text() or proc.poll() is not None,
            timeout=30,
            what="the listener",
        )
        assert proc.poll() is None, errlog.read_text()
        with httpx.Client(base_url=url, timeout=10) as client:
            auth = {"Authorization": f"Bearer {text}"}
            decided = client.post("/v1/decide", json=DROP, headers=auth)
            assert decided.status_code == 200
            assert decided.json()["effect"] == "deny"
            assert client.post("/v1/decide", json=DROP).status_code == 401
            assert client.get("/healthz").json() == {"ok": True}
            records = client.get(f"/v1/audit?type={DECISION_V1}", headers=auth).json()["records"]
            assert [r["id"] for r in records] == [decided.json()["id"]]
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, errlog.read_text()
    assert out == b""
    # the log was closed on SIGTERM: a final checkpoint covers everything
    from warden.audit import open_for_verify, verify_log

    store = open_for_verify(home / "audit.db")
    try:
        latest = store.latest_checkpoint()
        assert latest is not None and latest[0] == store.size() == 2  # the decision, its api record
        verify_log(store, NoteVerifier.from_string((home / "audit-key.pub").read_text().strip()))
    finally:
        store.close()
