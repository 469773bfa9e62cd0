"""The Governor's identity step (docs/identity.md, "The Governor")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from warden import Action, Effect, Governor, load_policy_text
from warden.errors import CredentialError
from warden.identity import Identity, delegate, issue, make_proof
from warden.identity.gate import IdentityConfig, VerifiedAgent
from warden.trust import TrustStore

AUD = "test-deploy"
POLICY = """
apiVersion: warden/v1
kind: Policy
name: identity-test
default: deny
rules:
  - id: read
    tool: "fs.read"
    effect: allow
  - id: pay
    tool: "pay"
    effect: allow
  - id: drop
    tool: "db.drop"
    effect: deny
    reason: never
  - id: low-trust
    when: "agent.trust < 450"
    effect: deny
    reason: trust too low
  - id: ring0-only
    tool: "admin.*"
    when: "agent.ring != 0"
    effect: deny
  - id: admin
    tool: "admin.*"
    effect: allow
"""


class Clock:
    def __init__(self, t: float = 1_800_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def root() -> Identity:
    return Identity.generate()


@pytest.fixture
def trust(tmp_path: Path, clock: Clock) -> TrustStore:
    store = TrustStore(tmp_path / "trust.db", clock=clock, refresh_interval=0)
    yield store
    store.close()


@pytest.fixture
def gov(tmp_path: Path, root: Identity, trust: TrustStore, clock: Clock) -> Governor:
    config = IdentityConfig(roots=[root.did], audience=AUD, trust=trust)
    return Governor(
        load_policy_text(POLICY), home=tmp_path / "home", identity=config, audit=False, clock=clock
    )


def login(gov: Governor, agent: Identity, token: str, clock: Clock) -> VerifiedAgent:
    assert gov.identity is not None
    nonce = gov.identity.challenge()
    return gov.identity.authenticate(token, make_proof(agent, token, nonce, AUD, now=clock()))


def cred(root: Identity, agent: Identity, clock: Clock, caps: list[object], **kw: object) -> str:
    return issue(root, agent.did, caps, audience=AUD, ttl=kw.pop("ttl", 3600), now=clock(), **kw)  # type: ignore[arg-type]


def test_no_session_is_denied_before_policy(gov: Governor) -> None:
    d = gov.check(Action(tool="fs.read"))
    assert d.effect is Effect.DENY
    assert d.rules == ()
    assert d.reasons[0].startswith("identity: no verified session")


def test_unknown_session_is_denied(gov: Governor) -> None:
    d = gov.check(Action(tool="fs.read", session="made-up"))
    assert d.effect is Effect.DENY and "not a verified session" in d.reasons[0]


def test_verified_agent_is_allowed_and_policy_sees_verified_attributes(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"], ring=2), clock)
    assert va.did == agent.did
    seen: list[Action] = []

    class Sink:
        def record(self, action: Action, decision: object) -> None:
            seen.append(action)

    gov.sinks.append(Sink())
    # The host claims more than the credential says: it does not count.
    d = gov.check(
        Action(
            tool="fs.read",
            session=va.session,
            agent={"id": "did:key:forged", "trust": 1000, "ring": 0, "labels": ["x"]},
        )
    )
    assert d.effect is Effect.ALLOW, d.reasons
    agent_seen = seen[-1].agent
    assert agent_seen["id"] == agent.did
    assert agent_seen["ring"] == 2
    assert agent_seen["trust"] == 500
    assert agent_seen["tier"] == "standard"
    assert agent_seen["labels"] == ["x"]  # other host keys pass through


def test_host_cannot_raise_ring_through_agent_mapping(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["admin.*"], ring=1), clock)
    d = gov.check(Action(tool="admin.reset", session=va.session, agent={"ring": 0}))
    assert d.effect is Effect.DENY and d.rules == ("ring0-only",)
    va0 = login(gov, agent, cred(root, agent, clock, ["admin.*"], ring=0), clock)
    assert gov.check(Action(tool="admin.reset", session=va0.session)).effect is Effect.ALLOW


def test_capability_not_covering_the_tool_is_denied_before_policy(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.read"]), clock)
    d = gov.check(Action(tool="pay", args={"amount": 1}, session=va.session))
    assert d.effect is Effect.DENY
    assert d.reasons == ("identity: `pay` is not covered by the credential's capabilities",)


def test_argument_constraints_are_enforced_per_call(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    caps = [{"tool": "pay", "args": {"amount": {"max": 100}}}]
    va = login(gov, agent, cred(root, agent, clock, caps), clock)
    assert gov.check(Action(tool="pay", args={"amount": 50}, session=va.session)).allowed
    assert not gov.check(Action(tool="pay", args={"amount": 500}, session=va.session)).allowed
    assert not gov.check(Action(tool="pay", args={}, session=va.session)).allowed


def test_delegated_credential_is_accepted_with_its_narrower_scope(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    a, b = Identity.generate(), Identity.generate()
    parent = cred(root, a, clock, ["fs.*", "pay"])
    child = delegate(parent, a, b.did, ["fs.read"], ttl=600, now=clock())
    va = login(gov, b, child, clock)
    assert gov.check(Action(tool="fs.read", session=va.session)).allowed
    assert not gov.check(Action(tool="pay", session=va.session)).allowed


def test_stolen_token_without_the_key_is_refused(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent, thief = Identity.generate(), Identity.generate()
    token = cred(root, agent, clock, ["fs.*"])
    assert gov.identity is not None
    nonce = gov.identity.challenge()
    with pytest.raises(CredentialError, match="not signed by the credential's subject"):
        gov.identity.authenticate(token, make_proof(thief, token, nonce, AUD, now=clock()))


def test_a_proof_cannot_be_replayed(gov: Governor, root: Identity, clock: Clock) -> None:
    agent = Identity.generate()
    token = cred(root, agent, clock, ["fs.*"])
    assert gov.identity is not None
    proof = make_proof(agent, token, gov.identity.challenge(), AUD, now=clock())
    gov.identity.authenticate(token, proof)
    with pytest.raises(CredentialError, match="already used"):
        gov.identity.authenticate(token, proof)


def test_expiry_ends_the_session(gov: Governor, root: Identity, clock: Clock) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"], ttl=60), clock)
    assert gov.check(Action(tool="fs.read", session=va.session)).allowed
    clock.t += 60 + 31  # past expiry plus the allowed skew
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "expired" in d.reasons[0]


def test_revoking_the_credential_ends_the_session(
    gov: Governor, root: Identity, trust: TrustStore, clock: Clock
) -> None:
    agent = Identity.generate()
    token = cred(root, agent, clock, ["fs.*"])
    va = login(gov, agent, token, clock)
    assert gov.check(Action(tool="fs.read", session=va.session)).allowed
    trust.revoke_credential(va.credential.jti, "leaked")
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "revoked" in d.reasons[0]
    with pytest.raises(CredentialError, match="revoked"):
        login(gov, agent, token, clock)


def test_revoking_a_link_of_the_chain_ends_the_delegate_session(
    gov: Governor, root: Identity, trust: TrustStore, clock: Clock
) -> None:
    a, b = Identity.generate(), Identity.generate()
    parent = cred(root, a, clock, ["fs.*"])
    va = login(gov, b, delegate(parent, a, b.did, ["fs.read"], ttl=600, now=clock()), clock)
    trust.revoke(a.did, "compromised")  # the delegator, not the delegate
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and a.did in d.reasons[0]


def test_revocation_from_another_process_is_seen(
    tmp_path: Path, gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"]), clock)
    assert gov.check(Action(tool="fs.read", session=va.session)).allowed
    code = (
        "from warden.trust import TrustStore; import sys\n"
        f"s = TrustStore({str(tmp_path / 'trust.db')!r}); s.revoke(sys.argv[1], 'ops'); s.close()"
    )
    subprocess.run([sys.executable, "-c", code, agent.did], check=True, timeout=60)
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "revoked" in d.reasons[0]


def test_policy_denies_lower_trust_until_auto_revocation(
    gov: Governor, root: Identity, trust: TrustStore, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*", "db.*"]), clock)
    d = gov.check(Action(tool="db.drop", session=va.session))
    assert d.effect is Effect.DENY and d.rules == ("drop",)
    assert trust.score(agent.did) == 475  # one violation, weight 25, signed by the Governor
    assert gov.check(Action(tool="fs.read", session=va.session)).allowed
    for _ in range(2):
        gov.check(Action(tool="db.drop", session=va.session))
    assert trust.score(agent.did) == 425
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "low-trust" in d.rules
    while not trust.is_revoked(agent.did):
        gov.check(Action(tool="fs.read", session=va.session))
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "revoked" in d.reasons[0]
    assert gov.identity is not None
    events = [e for e in trust.events(agent.did, 100) if e.kind == "violation"]
    assert events and all(e.actor == gov.identity.signer.did for e in events)


def test_default_deny_is_not_a_violation(
    gov: Governor, root: Identity, trust: TrustStore, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["*"]), clock)
    d = gov.check(Action(tool="unknown.tool", session=va.session))
    assert d.effect is Effect.DENY and d.rules == ()
    assert trust.score(agent.did) == 500


def test_revoked_agent_cannot_authenticate(
    gov: Governor, root: Identity, trust: TrustStore, clock: Clock
) -> None:
    agent = Identity.generate()
    trust.revoke(agent.did, "banned")
    with pytest.raises(CredentialError, match="revoked"):
        login(gov, agent, cred(root, agent, clock, ["fs.*"]), clock)


def test_a_failing_trust_store_denies(gov: Governor, root: Identity, clock: Clock) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"]), clock)
    assert gov.identity is not None

    class Broken:
        def __getattr__(self, name: str) -> object:
            raise RuntimeError("store down")

    gov.identity.trust = Broken()  # type: ignore[assignment]
    d = gov.check(Action(tool="fs.read", session=va.session))
    assert d.effect is Effect.DENY and "store down" in d.errors[0]


def test_ended_session_is_denied(gov: Governor, root: Identity, clock: Clock) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"]), clock)
    assert gov.identity is not None
    gov.identity.end(va.session)
    assert not gov.check(Action(tool="fs.read", session=va.session)).allowed


def test_session_context_manager_carries_the_verified_session(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"]), clock)

    @gov.tool("fs.read")
    def read(path: str) -> str:
        return path

    with gov.session(va.session):
        assert read("/x") == "/x"


def test_audit_records_the_verified_agent(tmp_path: Path, root: Identity, clock: Clock) -> None:
    from warden.audit import AuditLog

    trust = TrustStore(tmp_path / "t.db", clock=clock)
    log = AuditLog(tmp_path / "audit.db")
    gov = Governor(
        load_policy_text(POLICY),
        home=tmp_path / "h",
        audit=log,
        identity=IdentityConfig(roots=[root.did], audience=AUD, trust=trust),
        clock=clock,
    )
    agent = Identity.generate()
    va = login(gov, agent, cred(root, agent, clock, ["fs.*"], ring=2), clock)
    gov.check(Action(tool="fs.read", session=va.session, agent={"id": "spoofed"}))
    log.flush()
    records = [json.loads(data) for _, _, data, _ in log.store.scan()]
    assert records[-1]["agent"] == {"id": agent.did, "trust": 500, "ring": 2}
    log.close()
    trust.close()


def test_identity_needs_a_root(tmp_path: Path) -> None:
    from warden.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        Governor(
            load_policy_text(POLICY),
            home=tmp_path,
            audit=False,
            identity=IdentityConfig(roots=[], audience=AUD),
        )
    with pytest.raises(ConfigurationError, match="malformed DID"):
        Governor(
            load_policy_text(POLICY),
            home=tmp_path,
            audit=False,
            identity=IdentityConfig(roots=["did:key:nope"], audience=AUD),
        )


def test_without_identity_the_host_assertion_stands(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(POLICY), home=tmp_path, audit=False)
    assert gov.identity is None
    assert gov.check(Action(tool="fs.read", agent={"trust": 900})).allowed
    assert not gov.check(Action(tool="fs.read", agent={"trust": 100})).allowed


def test_a_handshake_peer_is_admitted_under_its_verified_credential(
    gov: Governor, root: Identity, clock: Clock
) -> None:
    import threading

    from warden.identity import Verifier
    from warden.identity.handshake import Responder, initiate
    from warden.identity.transport import socket_pair

    host, peer = Identity.generate(), Identity.generate()
    verifier = Verifier([root.did], AUD, clock=clock)
    host_cred = cred(root, host, clock, ["chat.*"])
    peer_cred = cred(root, peer, clock, ["fs.read"], ring=1)
    a, b = socket_pair()
    box: dict[str, object] = {}
    t = threading.Thread(
        target=lambda: box.update(s=Responder(host, host_cred, verifier, clock=clock).respond(b))
    )
    t.start()
    initiate(a, peer, peer_cred, verifier, purpose="work", clock=clock)
    t.join(timeout=30)
    assert gov.identity is not None
    agent = gov.identity.admit(box["s"])  # type: ignore[arg-type]
    assert agent.did == peer.did and agent.via == "handshake"
    seen: list[Action] = []

    class Sink:
        def record(self, action: Action, decision: object) -> None:
            seen.append(action)

    gov.sinks.append(Sink())
    assert gov.check(Action(tool="fs.read", session=agent.session)).allowed
    assert seen[-1].agent["id"] == peer.did and seen[-1].agent["ring"] == 1
    assert not gov.check(Action(tool="chat.send", session=agent.session)).allowed
    a.close()
    b.close()


def test_admit_re_verifies_against_the_governors_own_roots(gov: Governor, clock: Clock) -> None:
    import threading

    from warden.identity import Verifier
    from warden.identity.handshake import Responder, initiate
    from warden.identity.transport import socket_pair

    other_root = Identity.generate()  # trusted by the two peers, not by the Governor
    host, peer = Identity.generate(), Identity.generate()
    verifier = Verifier([other_root.did], AUD, clock=clock)
    a, b = socket_pair()
    box: dict[str, object] = {}
    responder = Responder(host, cred(other_root, host, clock, ["*"]), verifier, clock=clock)
    t = threading.Thread(target=lambda: box.update(s=responder.respond(b)))
    t.start()
    initiate(a, peer, cred(other_root, peer, clock, ["*"]), verifier, purpose="x", clock=clock)
    t.join(timeout=30)
    assert gov.identity is not None
    with pytest.raises(CredentialError, match="not a trusted root"):
        gov.identity.admit(box["s"])  # type: ignore[arg-type]
    a.close()
    b.close()
