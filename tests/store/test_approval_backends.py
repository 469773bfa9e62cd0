"""Approvals and API tokens on both backends: SQLite (embedded) and PostgreSQL (fleet).

docs/approvals.md's life of a request must hold whichever store keeps it: bound
to one action, decided once by someone other than the asking agent, used once,
expired. docs/fleet.md adds what only a shared store has: replicas (store
instances on one namespace, Governors and `warden serve` apps on different
homes) see each other's requests, decisions and tokens, one request per action
and one use per approval however many replicas race, and a store that does not
answer is a deny (or a refused token), never an allow.

The PostgreSQL tests use ``$WARDEN_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each gets its own namespace,
``wt_<12 hex>``, whose tables it drops. They are skipped when PostgreSQL does not
answer, and fail instead when ``CI`` or ``WARDEN_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from warden import Action, Effect, Governor, load_policy_text
from warden.approvals import (
    ApprovalBackend,
    ApprovalStore,
    action_digest,
    open_approval_store,
)
from warden.cli.approvals import approvals as approvals_command
from warden.cli.serve import serve as serve_command
from warden.errors import ApprovalNotFound, ApprovalStateError, SelfApprovalError
from warden.server import TokenStore, create_app
from warden.server._tokens import TokenBackend, open_token_store
from warden.store import FleetConfig, PostgresApprovalStore, PostgresTokenStore, StoreUnavailable

try:
    import psycopg
except ImportError:  # pragma: no cover - the fleet extra is not installed: SQLite only
    psycopg = None

DATABASE_URL = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/test"
TABLES = ("approvals", "tokens", "records", "nodes", "batches", "checkpoints", "meta")
POLICY_TEXT = """\
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
POLICY = load_policy_text(POLICY_TEXT)
AGENT = {"id": "did:key:z6MkAgent", "trust": 700}
TTL = 900.0


def _postgres_answers() -> bool:
    if psycopg is None:
        return False
    try:
        psycopg.connect(DATABASE_URL, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


_PG_UP = _postgres_answers()
_MUST_RUN = bool(os.environ.get("WARDEN_REQUIRE_POSTGRES") or os.environ.get("CI"))
"""In CI PostgreSQL is there: a test that cannot reach it fails instead of skipping."""


def _skip_without_postgres() -> None:
    if not _PG_UP:
        if _MUST_RUN:
            pytest.fail(f"PostgreSQL does not answer at {DATABASE_URL} (required in CI)")
        pytest.skip(f"PostgreSQL does not answer at {DATABASE_URL}")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def refund(amount: object, session: str = "s1", agent: dict[str, object] = AGENT) -> Action:
    return Action(tool="pay.refund", args={"amount": amount}, agent=agent, session=session)


# --- the two backends ------------------------------------------------------------------------


@dataclass
class Backend:
    """One backend under test: opens replicas of the approval and token stores."""

    kind: str
    home: Path
    namespace: str = "warden"

    def store(self, clock: Callable[[], float] = time.time, ttl: float = TTL) -> ApprovalBackend:
        """A replica: another store instance (another connection) on the same shared state."""
        if self.kind == "sqlite":
            return ApprovalStore(self.home / "approvals.db", ttl=ttl, clock=clock)
        return PostgresApprovalStore(DATABASE_URL, self.namespace, ttl=ttl, clock=clock)

    def tokens(self) -> TokenBackend:
        if self.kind == "sqlite":
            return TokenStore.for_home(self.home)
        return PostgresTokenStore(DATABASE_URL, self.namespace)

    def set_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if self.kind == "sqlite":
            monkeypatch.delenv("WARDEN_DATABASE_URL", raising=False)
            monkeypatch.delenv("WARDEN_FLEET_NAMESPACE", raising=False)
        else:
            monkeypatch.setenv("WARDEN_DATABASE_URL", DATABASE_URL)
            monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", self.namespace)
        monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                for table in TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {self.namespace}_{table}")


def _new_backend(kind: str, home: Path) -> Backend:
    if kind == "postgres":
        _skip_without_postgres()
        return Backend(kind, home, f"wt_{uuid.uuid4().hex[:12]}")
    return Backend(kind, home)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _new_backend(request.param, tmp_path / "home")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    b = _new_backend("postgres", tmp_path / "home")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def replicas(backend: Backend, clock: Clock) -> Iterator[tuple[Governor, ApprovalBackend]]:
    """A Governor on one replica of the store, and a second replica for the humans."""
    mine, theirs = backend.store(clock), backend.store(clock)
    gov = Governor(POLICY, approvals=mine, agent=AGENT, audit=False, home=backend.home)
    try:
        yield gov, theirs
    finally:
        mine.close()
        theirs.close()


# --- the same approval behaviour on both -----------------------------------------------------


def test_both_stores_are_approval_backends(backend: Backend) -> None:
    store = backend.store()
    try:
        assert isinstance(store, ApprovalBackend)
        assert isinstance(backend.tokens(), TokenBackend)
    finally:
        store.close()


def test_open_approval_store_follows_the_configuration(backend: Backend) -> None:
    url = DATABASE_URL if backend.kind == "postgres" else None
    config = FleetConfig(database_url=url, namespace=backend.namespace)
    store = open_approval_store(backend.home, ttl=TTL, config=config)
    try:
        want = PostgresApprovalStore if backend.kind == "postgres" else ApprovalStore
        assert type(store) is want
        tokens = open_token_store(backend.home, config)
        assert type(tokens) is (PostgresTokenStore if backend.kind == "postgres" else TokenStore)
        tokens.close()
    finally:
        store.close()


def test_full_cycle_single_use_across_replicas(
    replicas: tuple[Governor, ApprovalBackend],
) -> None:
    gov, other = replicas
    d1 = gov.check(refund(500))
    assert d1.effect is Effect.REQUIRE_APPROVAL and d1.rules == ("big-refund",)
    rid = d1.approval_id
    assert rid is not None
    assert gov.check(refund(500)).approval_id == rid  # asking again finds the same request
    assert [r.id for r in other.list("pending")] == [rid]

    req = other.approve(rid, "alice@ops", "checked")
    assert (req.status, req.decided_by, req.note) == ("approved", "alice@ops", "checked")
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.ALLOW and d2.approval_id == rid
    assert "approved by `alice@ops`" in d2.reasons[-1]
    got = other.get(rid)
    assert (got.status, got.decided_by, got.note) == ("consumed", "alice@ops", "checked")
    assert got.used_at is not None
    d3 = gov.check(refund(500))  # used once: the same action asks again
    assert d3.effect is Effect.REQUIRE_APPROVAL and d3.approval_id not in (None, rid)


def test_request_records_the_action(replicas: tuple[Governor, ApprovalBackend]) -> None:
    gov, other = replicas
    action = refund(500)
    rid = gov.check(action).approval_id
    assert rid is not None
    req = other.get(rid)
    assert req.digest == action_digest(action)
    assert req.action["tool"] == "pay.refund" and req.action["args"] == {"amount": 500}
    assert req.agent_id == AGENT["id"] and req.session == "s1"
    assert req.rules == ("big-refund",) and "big refunds need a human" in req.reasons
    assert req.expires_at - req.created_at == TTL
    assert req.to_dict()["status"] == "pending"


def test_approval_does_not_cover_another_action(
    replicas: tuple[Governor, ApprovalBackend],
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    other.approve(rid, "alice@ops")
    for different in (
        refund(501),
        refund(500, session="s2"),
        refund(500, agent={"id": "did:key:z6MkOther", "trust": 700}),
    ):
        d = gov.check(different)
        assert d.effect is Effect.REQUIRE_APPROVAL and d.approval_id != rid
    assert other.get(rid).status == "approved"
    assert gov.check(refund(500)).effect is Effect.ALLOW


def test_agent_cannot_approve_its_own_request(replicas: tuple[Governor, ApprovalBackend]) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    with pytest.raises(SelfApprovalError):
        other.approve(rid, str(AGENT["id"]))
    assert other.get(rid).status == "pending"
    assert gov.check(refund(500)).effect is Effect.REQUIRE_APPROVAL
    other.deny(rid, str(AGENT["id"]), "withdrawn")  # denying one's own request is allowed
    assert gov.check(refund(500)).effect is Effect.DENY


def test_pending_request_expires_into_a_deny_then_asks_again(
    replicas: tuple[Governor, ApprovalBackend], clock: Clock
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    clock.now += TTL + 1
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY and d.reasons[-1] == f"approval {rid} expired"
    assert other.get(rid or "").status == "expired"
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.REQUIRE_APPROVAL and d2.approval_id != rid


def test_expiry_is_seen_by_list_and_get_and_refuses_a_decision(
    replicas: tuple[Governor, ApprovalBackend], clock: Clock
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    clock.now += TTL
    assert [r.id for r in other.list("expired")] == [rid]
    assert other.list("pending") == []
    with pytest.raises(ApprovalStateError, match="expired"):
        other.approve(rid, "alice@ops")
    assert other.get(rid).status == "expired"


def test_cannot_approve_an_expired_request(
    replicas: tuple[Governor, ApprovalBackend], clock: Clock
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    clock.now += TTL + 100
    with pytest.raises(ApprovalStateError, match="expired"):
        other.approve(rid, "alice@ops")


def test_unused_approval_expires(replicas: tuple[Governor, ApprovalBackend], clock: Clock) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    other.approve(rid, "alice@ops")
    clock.now += TTL + 1
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY and "expired" in d.reasons[-1]
    assert other.get(rid).status == "expired"


def test_denial_stands_until_expiry(
    replicas: tuple[Governor, ApprovalBackend], clock: Clock
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    other.deny(rid, "bob@ops", "not this customer")
    for _ in range(2):
        d = gov.check(refund(500))
        assert d.effect is Effect.DENY
        assert d.reasons[-1] == f"approval {rid} denied by `bob@ops`: not this customer"
    clock.now += TTL + 1
    d2 = gov.check(refund(500))
    assert d2.effect is Effect.REQUIRE_APPROVAL and d2.approval_id != rid
    assert other.get(rid).status == "expired"


def test_decided_requests_cannot_be_decided_again(
    replicas: tuple[Governor, ApprovalBackend],
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    other.approve(rid, "alice@ops")
    with pytest.raises(ApprovalStateError, match="already approved"):
        gov.approvals.deny(rid, "bob@ops")
    with pytest.raises(ApprovalNotFound):
        other.approve("apr-nope", "alice@ops")
    with pytest.raises(ApprovalNotFound):
        other.get("apr-nope")
    with pytest.raises(ApprovalStateError, match="approver"):
        other.approve(rid, "  ")
    assert gov.check(refund(500)).effect is Effect.ALLOW
    with pytest.raises(ApprovalStateError, match="already consumed"):
        other.approve(rid, "alice@ops")


def test_list_filters_and_orders_newest_first(
    replicas: tuple[Governor, ApprovalBackend], clock: Clock
) -> None:
    gov, other = replicas
    ids = []
    for amount in (200, 300, 400):
        ids.append(gov.check(refund(amount)).approval_id)
        clock.now += 1
    other.deny(str(ids[0]), "bob@ops")
    assert [r.id for r in other.list()] == ids[::-1]
    assert [r.id for r in other.list("pending")] == ids[:0:-1]
    assert [r.id for r in other.list("denied")] == ids[:1]
    assert [r.id for r in other.list(limit=1)] == ids[-1:]


def test_wait_sees_a_decision_made_by_another_replica(
    replicas: tuple[Governor, ApprovalBackend],
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None
    assert gov.approvals.wait(rid, timeout=0.05).status == "pending"
    timer = threading.Timer(0.1, other.approve, args=(rid, "alice@ops"))
    timer.start()
    try:
        assert gov.approvals.wait(rid, timeout=10).status == "approved"
    finally:
        timer.join()
    assert gov.check(refund(500)).effect is Effect.ALLOW


def test_wait_async_sees_a_denial_made_by_another_replica(
    replicas: tuple[Governor, ApprovalBackend],
) -> None:
    gov, other = replicas
    rid = gov.check(refund(500)).approval_id
    assert rid is not None

    async def main() -> str:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, other.deny, rid, "bob@ops")
        return (await gov.approvals.wait_async(rid, timeout=10)).status

    assert asyncio.run(main()) == "denied"


def test_a_waiting_tool_runs_once_when_another_replica_approves(
    backend: Backend, clock: Clock
) -> None:
    mine, theirs = backend.store(), backend.store()
    gov = Governor(POLICY, approvals=mine, agent=AGENT, audit=False, home=backend.home)
    paid: list[int] = []

    @gov.tool("pay.refund", approval_wait=10)
    def pay(amount: int) -> str:
        paid.append(amount)
        return "paid"

    def approve_when_asked() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pending = theirs.list("pending")
            if pending:
                theirs.approve(pending[0].id, "alice@ops")
                return
            time.sleep(0.02)

    approver = threading.Thread(target=approve_when_asked)
    approver.start()
    try:
        assert pay(900) == "paid"
    finally:
        approver.join()
        mine.close()
        theirs.close()
    assert paid == [900]


def _race(n: int, fn: Callable[[int], Any]) -> list[Any]:
    """``fn(i)`` for i in range(n), each in its own thread, released at once."""
    barrier = threading.Barrier(n)
    out: list[Any] = [None] * n
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        barrier.wait()
        try:
            out[i] = fn(i)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def test_replicas_gating_one_action_at_once_create_one_request(backend: Backend) -> None:
    stores = [backend.store() for _ in range(6)]
    govs = [Governor(POLICY, approvals=s, agent=AGENT, audit=False) for s in stores]
    try:
        ids = _race(len(govs), lambda i: govs[i].check(refund(777)).approval_id)
        assert len(set(ids)) == 1 and ids[0] is not None
        assert [r.id for r in stores[0].list()] == ids[:1]
    finally:
        for s in stores:
            s.close()


def test_one_approval_allows_exactly_one_check_across_replicas(backend: Backend) -> None:
    stores = [backend.store() for _ in range(6)]
    govs = [Governor(POLICY, approvals=s, agent=AGENT, audit=False) for s in stores]
    try:
        rid = govs[0].check(refund(888)).approval_id
        assert rid is not None
        stores[-1].approve(rid, "alice@ops")
        effects = _race(len(govs), lambda i: govs[i].check(refund(888)).effect)
        assert effects.count(Effect.ALLOW) == 1
        assert effects.count(Effect.REQUIRE_APPROVAL) == len(govs) - 1
        assert stores[1].get(rid).status == "consumed"
        assert len(stores[2].list("pending")) == 1  # the others asked again, once
    finally:
        for s in stores:
            s.close()


# --- tokens ----------------------------------------------------------------------------------


def test_tokens_made_on_one_replica_work_on_another(backend: Backend) -> None:
    a, b = backend.tokens(), backend.tokens()
    try:
        text, made = a.new("alice", "approve,read", by="test")
        found = b.authenticate(text)
        assert found is not None
        assert (found.id, found.subject, found.scopes) == (
            made.id,
            "alice",
            frozenset({"approve", "read"}),
        )
        assert [t.id for t in b.list()] == [made.id]
        assert b.authenticate(text[:-1] + ("A" if text[-1] != "A" else "B")) is None
        assert b.authenticate("not-a-token") is None
    finally:
        a.close()
        b.close()


def test_a_revoke_on_one_replica_is_refused_by_another_within_a_second(backend: Backend) -> None:
    a, b = backend.tokens(), backend.tokens()
    try:
        text, made = a.new("alice", "decide", by="test")
        other, _ = a.new("bob", "decide", by="test")
        assert b.authenticate(text) is not None
        revoked = a.revoke(made.id[:8])
        assert revoked.revoked_at is not None
        assert a.authenticate(text) is None  # at once where it was revoked
        started = time.monotonic()
        while b.authenticate(text) is not None:
            assert time.monotonic() - started < 1.0, "the revoke took more than a second"
            time.sleep(0.01)
        assert b.authenticate(other) is not None
        assert [t.subject for t in b.list()] == ["bob"]
        assert [t.subject for t in b.list(revoked=True)] == ["alice", "bob"]
    finally:
        a.close()
        b.close()


# --- Governors and services on different homes (PostgreSQL only) ----------------------------


def test_governors_on_different_homes_share_approvals_through_the_environment(
    pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set_env(monkeypatch)
    one = Governor(POLICY, agent=AGENT, audit=False, home=tmp_path / "one")
    two = Governor(POLICY, agent=AGENT, audit=False, home=tmp_path / "two")
    try:
        assert isinstance(one.approvals, PostgresApprovalStore)
        rid = one.check(refund(500)).approval_id
        assert rid is not None
        assert [r.id for r in two.approvals.list("pending")] == [rid]
        assert two.check(refund(500)).approval_id == rid  # the same request, not a second
        two.approvals.approve(rid, "alice@ops")
        assert one.check(refund(500)).effect is Effect.ALLOW
        assert two.check(refund(500)).effect is Effect.REQUIRE_APPROVAL  # used once
        assert not (tmp_path / "one" / "approvals.db").exists()
    finally:
        one.approvals.close()
        two.approvals.close()


def test_the_cli_follows_the_environment(
    pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set_env(monkeypatch)
    gov = Governor(POLICY, agent=AGENT, audit=False, home=tmp_path / "agent")
    try:
        rid = gov.check(refund(500)).approval_id
        assert rid is not None
        runner = CliRunner()
        home = str(tmp_path / "operator")  # another machine: no approvals.db there
        listed = runner.invoke(approvals_command, ["list", "--json", "--home", home])
        assert listed.exit_code == 0, listed.output
        assert rid in listed.output
        done = runner.invoke(approvals_command, ["approve", rid, "--as", "alice", "--home", home])
        assert done.exit_code == 0, done.output
        assert gov.check(refund(500)).effect is Effect.ALLOW
        made = runner.invoke(
            serve_command, ["token", "new", "--subject", "carol", "--scope", "read", "--home", home]
        )
        assert made.exit_code == 0, made.output
        token = made.stdout.strip().splitlines()[-1]
        tokens = PostgresTokenStore(DATABASE_URL, pg.namespace)
        try:
            found = tokens.authenticate(token)
            assert found is not None and found.subject == "carol"
        finally:
            tokens.close()
        listed = runner.invoke(serve_command, ["token", "list", "--json", "--home", home])
        assert listed.exit_code == 0 and "carol" in listed.output
    finally:
        gov.approvals.close()


class Replica:
    """One `warden serve` app over its own home, configured by the environment."""

    def __init__(self, policy: Path, home: Path) -> None:
        self.gov = Governor.from_policy(policy, home=home)
        self.tokens = open_token_store(home)
        self.client = TestClient(create_app(self.gov, self.tokens))  # type: ignore[arg-type]

    def close(self) -> None:
        self.client.close()
        if self.gov.audit is not None:
            self.gov.audit.close()
        self.gov.runtime.close()
        self.gov.approvals.close()
        self.tokens.close()


def test_two_serve_replicas_share_approvals_and_tokens(
    pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set_env(monkeypatch)
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY_TEXT)
    a = Replica(policy, tmp_path / "a")
    for name in ("audit-key.pem", "audit-key.pub"):  # one fleet, one signing key
        (tmp_path / "b").mkdir(exist_ok=True)
        shutil.copy(tmp_path / "a" / name, tmp_path / "b" / name)
    b = Replica(policy, tmp_path / "b")
    try:
        assert isinstance(a.tokens, PostgresTokenStore)
        agent_text, _ = a.tokens.new("agent-runner", "decide", by="test")
        human_text, human = b.tokens.new("alice", "read,approve", by="test")
        agent = {"Authorization": f"Bearer {agent_text}"}
        alice = {"Authorization": f"Bearer {human_text}"}
        action = {"tool": "pay.refund", "args": {"amount": 500}, "agent": {"id": "bot-1"}}

        first = a.client.post("/v1/decide", json=action, headers=agent)
        assert first.status_code == 200, first.text
        assert first.json()["effect"] == "require_approval"
        rid = first.json()["approval_id"]

        listed = b.client.get("/v1/approvals?status=pending", headers=alice)
        assert listed.status_code == 200, listed.text
        assert [r["id"] for r in listed.json()["approvals"]] == [rid]
        approved = b.client.post(
            f"/v1/approvals/{rid}/approve", json={"reason": "ok"}, headers=alice
        )
        assert approved.status_code == 200, approved.text
        assert approved.json()["decided_by"] == "alice"

        second = a.client.post("/v1/decide", json=action, headers=agent)
        assert second.json()["effect"] == "allow" and second.json()["approval_id"] == rid
        third = b.client.post("/v1/decide", json=action, headers=agent)  # used once
        assert third.json()["effect"] == "require_approval"
        assert third.json()["approval_id"] != rid

        a.tokens.revoke(human.id)
        started = time.monotonic()
        while b.client.get("/v1/approvals", headers=alice).status_code != 401:
            assert time.monotonic() - started < 1.0, "the revoke took more than a second"
            time.sleep(0.02)
    finally:
        a.close()
        b.close()


# --- PostgreSQL unreachable: deny, refuse ----------------------------------------------------


def test_unreachable_postgres_is_a_deny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if psycopg is None:
        pytest.skip("psycopg is not installed")
    monkeypatch.setenv("WARDEN_DATABASE_URL", UNREACHABLE_URL)
    monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", "wt_unreachable")
    gov = Governor(POLICY, agent=AGENT, audit=False, home=tmp_path)
    d = gov.check(refund(500))
    assert d.effect is Effect.DENY
    assert "approval store unavailable" in d.reasons[-1]
    assert gov.check(refund(50)).effect is Effect.ALLOW  # no approval needed: unaffected
    store = PostgresApprovalStore(UNREACHABLE_URL, "wt_unreachable")
    with pytest.raises(StoreUnavailable) as caught:
        store.list()
    assert isinstance(caught.value, OSError)  # the service's 503, like any store that is down
    store.close()


def test_unreachable_postgres_refuses_every_token(tmp_path: Path) -> None:
    if psycopg is None:
        pytest.skip("psycopg is not installed")
    tokens = PostgresTokenStore(UNREACHABLE_URL, "wt_unreachable")
    gov = Governor(POLICY, agent=AGENT, home=tmp_path)
    client = TestClient(create_app(gov, tokens))  # type: ignore[arg-type]
    try:
        token = "wdn_" + "A" * 43
        with pytest.raises(StoreUnavailable):
            tokens.authenticate(token)  # never a token, never "unknown": the store is away
        response = client.get("/v1/approvals", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 503
        assert response.json()["code"] == "store_unavailable"
        with pytest.raises(StoreUnavailable):
            tokens.list()
    finally:
        client.close()
        assert gov.audit is not None
        gov.audit.close()
        gov.runtime.close()
        tokens.close()


def test_a_stale_token_snapshot_refuses(pg: Backend) -> None:
    """When reloads stop succeeding, tokens are refused once the snapshot is max_age old."""
    store = PostgresTokenStore(DATABASE_URL, pg.namespace, refresh=3600, max_age=0.2)
    try:
        text, _ = store.new("alice", "read", by="test")
        assert store.authenticate(text) is not None
        time.sleep(0.3)
        with pytest.raises(StoreUnavailable):
            store.authenticate(text)
    finally:
        store.close()
