"""The mutual handshake (docs/identity.md, "Handshake").

Two processes over real loopback TCP for the happy path and a refusal; in-process
pipes with a relaying man in the middle, or a hand-written reference initiator
built from the spec alone, for the attacks.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from warden.errors import ConfigurationError, HandshakeError
from warden.identity import Identity, KeyStore, Verifier, issue
from warden.identity._codec import b64url, unb64url
from warden.identity.handshake import PeerPolicy, ReplayCache, Responder, SecureSession, initiate
from warden.identity.transport import MemoryTransport, TcpTransport, connect, memory_pair

AUD = "fleet-test"
PEER_SCRIPT = Path(__file__).with_name("handshake_peer.py")


@dataclass
class World:
    root: Identity
    alice: Identity  # initiator
    bob: Identity  # responder
    cred_a: str
    cred_b: str
    verifier: Verifier

    def responder(self, **kw: Any) -> Responder:
        return Responder(self.bob, self.cred_b, self.verifier, **kw)


@pytest.fixture
def w() -> World:
    root, alice, bob = Identity.generate(), Identity.generate(), Identity.generate()
    return World(
        root,
        alice,
        bob,
        issue(root, alice.did, [{"tool": "search.*"}], audience=AUD, ttl=3600, ring=2),
        issue(root, bob.did, [{"tool": "*"}], audience=AUD, ttl=3600),
        Verifier([root.did], AUD),
    )


# --- harness --------------------------------------------------------------------------------


class Outcome:
    """What one side of a handshake produced: a session or a HandshakeError."""

    def __init__(self) -> None:
        self.session: SecureSession | None = None
        self.error: BaseException | None = None

    def run(self, fn: Callable[[], SecureSession]) -> None:
        try:
            self.session = fn()
        except BaseException as exc:
            self.error = exc

    @property
    def message(self) -> str:
        assert isinstance(self.error, HandshakeError), self.error
        return str(self.error)


Edit = Callable[[str, dict[str, Any]], dict[str, Any] | bytes | None]


def _relay(src: MemoryTransport, dst: MemoryTransport, direction: str, edit: Edit | None) -> None:
    """Forward frames from ``src`` to ``dst``, letting ``edit`` rewrite them (a MITM)."""
    while True:
        try:
            data = src.recv()
        except HandshakeError:
            dst.close()
            return
        if edit is not None:
            msg = json.loads(data)
            out = edit(direction, msg)
            if isinstance(out, bytes):
                data = out
            elif out is not None:
                data = json.dumps(out).encode()
        try:
            dst.send(data)
        except HandshakeError:
            src.close()
            return


def run(
    w: World,
    *,
    responder: Responder | None = None,
    identity: Identity | None = None,
    cred: str | None = None,
    purpose: str = "invoke",
    policy: PeerPolicy | None = None,
    clock: Callable[[], float] = time.time,
    edit: Edit | None = None,
    record: list[tuple[str, bytes]] | None = None,
) -> tuple[Outcome, Outcome]:
    """One handshake between two threads, through a relay when ``edit`` or ``record``."""
    init_end, resp_end = memory_pair(timeout=5.0)
    threads = []
    if edit is not None or record is not None:
        i_end, r_mid = memory_pair(timeout=5.0)
        r_end, i_mid = memory_pair(timeout=5.0)

        def tap(direction: str, msg: dict[str, Any]) -> dict[str, Any] | bytes | None:
            out = edit(direction, msg) if edit is not None else None
            if record is not None:
                data = (
                    out
                    if isinstance(out, bytes)
                    else json.dumps(out if out is not None else msg).encode()
                )
                record.append((direction, data))
            return out

        threads += [
            threading.Thread(target=_relay, args=(r_mid, i_mid, "i->r", tap), daemon=True),
            threading.Thread(target=_relay, args=(i_mid, r_mid, "r->i", tap), daemon=True),
        ]
        init_end, resp_end = i_end, r_end
    resp_out, init_out = Outcome(), Outcome()
    r = responder if responder is not None else w.responder()
    resp_thread = threading.Thread(target=resp_out.run, args=(lambda: r.respond(resp_end),))
    for t in [*threads, resp_thread]:
        t.start()
    init_out.run(
        lambda: initiate(
            init_end,
            identity or w.alice,
            cred or w.cred_a,
            w.verifier,
            purpose=purpose,
            policy=policy,
            clock=clock,
        )
    )
    resp_thread.join(10)
    init_end.close()  # a successful handshake leaves both open; let the relays stop
    resp_end.close()
    for t in threads:
        t.join(10)
    return init_out, resp_out


class Scripted:
    """A transport that replays fixed frames and records what the other side sends."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = list(frames)
        self.sent: list[bytes] = []
        self.closed = False

    def send(self, data: bytes) -> None:
        self.sent.append(data)

    def recv(self) -> bytes:
        if not self.frames:
            raise HandshakeError("connection closed by the peer")
        return self.frames.pop(0)

    def close(self) -> None:
        self.closed = True

    def sent_messages(self) -> list[dict[str, Any]]:
        return [json.loads(d) for d in self.sent]


def refusal_of(transport: Scripted) -> str:
    last = transport.sent_messages()[-1]
    assert last["type"] == "refuse", last
    return str(last["reason"])


# --- a reference initiator written from the spec, for crafted attacks -----------------------


def _jcs_hash(messages: list[dict[str, Any]]) -> bytes:
    return hashlib.sha256(rfc8785.dumps(messages)).digest()


def spec_sign(identity: Identity, label: str, messages: list[dict[str, Any]]) -> str:
    data = b"warden-handshake/v1\n" + label.encode() + b"\n" + _jcs_hash(messages)
    return b64url(identity.sign(data))


@dataclass
class SpecInitiator:
    """Speaks the protocol by hand, so that any field can be forged."""

    did: str
    cred: str
    signer: Identity
    purpose: str = "invoke"
    nonce: str = ""
    ts: int | None = None

    def __post_init__(self) -> None:
        self.x = X25519PrivateKey.generate()
        self.nonce = self.nonce or os.urandom(16).hex()

    def hello(self) -> dict[str, Any]:
        return {
            "type": "hello",
            "v": 1,
            "did": self.did,
            "nonce": self.nonce,
            "ts": self.ts if self.ts is not None else int(time.time() * 1000),
            "purpose": self.purpose,
            "cred": self.cred,
            "x25519": b64url(self.x.public_key().public_bytes_raw()),
        }

    def talk(self, responder: Responder) -> tuple[Outcome, MemoryTransport, list[dict[str, Any]]]:
        """Run a handshake against ``responder``; returns its outcome, our end, our messages."""
        mine, theirs = memory_pair(timeout=5.0)
        out = Outcome()
        t = threading.Thread(target=out.run, args=(lambda: responder.respond(theirs),))
        t.start()
        hello = self.hello()
        sent = [hello]
        mine.send(msgspec.json.encode(hello))
        welcome = json.loads(mine.recv())
        if welcome["type"] == "welcome":
            finish = {
                "type": "finish",
                "v": 1,
                "sig": spec_sign(self.signer, "initiator", [hello, welcome]),
            }
            sent += [welcome, finish]
            mine.send(msgspec.json.encode(finish))
        t.join(10)
        return out, mine, sent


# --- two processes over loopback TCP --------------------------------------------------------


@pytest.fixture
def peer_dir(tmp_path: Path, w: World) -> Path:
    work = tmp_path / "peer"
    work.mkdir()
    KeyStore(work / "keys").save("responder", w.bob)
    (work / "responder.cred").write_text(w.cred_b)
    (work / "root.did").write_text(w.root.did)
    (work / "audience").write_text(AUD)
    return work


@pytest.fixture
def spawn(peer_dir: Path) -> Iterator[Callable[..., tuple[subprocess.Popen[str], int]]]:
    procs: list[subprocess.Popen[str]] = []

    def start(connections: int, *extra: str) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, str(PEER_SCRIPT), str(peer_dir), str(connections), *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("PORT "), line + (proc.stderr.read() if proc.stderr else "")
        return proc, int(line.split()[1])

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _line(proc: subprocess.Popen[str]) -> dict[str, Any]:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line, proc.stderr.read() if proc.stderr else "peer exited"
    result: dict[str, Any] = json.loads(line)
    return result


def test_two_processes_agree_on_session_and_exchange_envelopes(
    w: World, spawn: Callable[..., tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = spawn(2)
    sessions = []
    for i in range(2):
        transport = connect("127.0.0.1", port)
        assert isinstance(transport, TcpTransport)
        assert transport._sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        session = initiate(transport, w.alice, w.cred_a, w.verifier, purpose=f"job-{i}")
        transport.send(session.writer().seal(b"ping %d" % i))
        assert session.reader().open(transport.recv()) == b"echo:ping %d" % i
        transport.close()
        theirs = _line(proc)
        assert theirs["ok"], theirs
        assert theirs["id"] == session.id
        assert theirs["key_sha256"] == hashlib.sha256(session.key).hexdigest()
        assert theirs["peer"] == w.alice.did
        assert theirs["purpose"] == f"job-{i}"
        assert theirs["body"] == f"ping {i}"
        assert session.peer_did == w.bob.did
        assert session.initiator
        assert len(session.key) == 32
        sessions.append(session)
    assert sessions[0].id != sessions[1].id
    assert sessions[0].key != sessions[1].key
    assert proc.wait(10) == 0


def test_two_processes_refusal_reason_reaches_the_initiator(
    w: World, spawn: Callable[..., tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = spawn(1, "--require-tool", "payments.transfer")
    transport = connect("127.0.0.1", port)
    with pytest.raises(HandshakeError, match=r"refused by the responder: .*payments\.transfer"):
        initiate(transport, w.alice, w.cred_a, w.verifier, purpose="pay")
    theirs = _line(proc)
    assert not theirs["ok"]
    assert "grants no capability for `payments.transfer`" in theirs["error"]
    assert proc.wait(10) == 0


# --- agreement ------------------------------------------------------------------------------


def test_both_sides_derive_the_same_session_and_each_handshake_differs(w: World) -> None:
    i1, r1 = run(w)
    i2, r2 = run(w)
    assert i1.session is not None and r1.session is not None, (i1.error, r1.error)
    assert i2.session is not None and r2.session is not None
    assert i1.session.id == r1.session.id and i1.session.key == r1.session.key
    assert i2.session.id == r2.session.id and i2.session.key == r2.session.key
    assert i1.session.id != i2.session.id and i1.session.key != i2.session.key
    assert len(i1.session.id) == 32 and int(i1.session.id, 16) >= 0
    assert r1.session.peer.subject == w.alice.did and r1.session.peer.ring == 2
    assert r1.session.purpose == "invoke" and not r1.session.initiator
    assert i1.session.local is w.alice and r1.session.local is w.bob


def test_session_matches_the_spec_derivation(w: World) -> None:
    """A reference initiator, written from docs/identity.md alone, derives the same key and id."""
    me = SpecInitiator(w.alice.did, w.cred_a, w.alice)
    out, mine, (hello, welcome, finish) = me.talk(w.responder())
    assert out.session is not None, out.error
    accept = json.loads(mine.recv())
    h = _jcs_hash([hello, welcome, finish])
    peer_x = X25519PublicKey.from_public_bytes(unb64url(welcome["x25519"], 32) or b"")
    shared = me.x.exchange(peer_x)
    key = HKDF(SHA256(), 32, salt=h, info=b"warden-session/v1").derive(shared)
    assert out.session.id == h[:16].hex()
    assert out.session.key == key
    assert accept["type"] == "accept"
    confirm = HKDF(SHA256(), 32, salt=h, info=b"warden-handshake/v1 accept").derive(shared)
    assert unb64url(accept["confirm"], 32) == confirm
    assert confirm != key
    # the session id and key are never on the wire
    wire = json.dumps([hello, welcome, finish, accept])
    assert out.session.id not in wire and b64url(key) not in wire and key.hex() not in wire


def test_the_key_is_in_no_repr(w: World) -> None:
    i, _ = run(w)
    assert i.session is not None
    text = repr(i.session) + str(i.session)
    assert i.session.key.hex() not in text and repr(i.session.key) not in text
    assert "key=" not in text
    assert w.alice.did in text and w.bob.did in text


def test_writer_and_reader_are_one_per_session(w: World) -> None:
    i, r = run(w)
    assert i.session is not None and r.session is not None
    assert i.session.writer() is i.session.writer()
    assert i.session.reader() is i.session.reader()
    for n in range(3):
        assert r.session.reader().open(i.session.writer().seal(b"%d" % n)) == b"%d" % n
        assert i.session.reader().open(r.session.writer().seal(b"r%d" % n)) == b"r%d" % n


# --- replay and splicing ---------------------------------------------------------------------


def test_replayed_hello_is_refused(w: World) -> None:
    responder = w.responder()
    frames: list[tuple[str, bytes]] = []
    i, r = run(w, responder=responder, record=frames)
    assert i.session is not None and r.session is not None
    hello = next(data for d, data in frames if d == "i->r")
    replay = Scripted([hello])
    with pytest.raises(HandshakeError, match="replayed HELLO"):
        responder.respond(replay)
    assert "replayed HELLO" in refusal_of(replay)
    assert replay.closed
    assert [m["type"] for m in replay.sent_messages()] == ["refuse"]  # no WELCOME: no work


def test_replayed_handshake_fails_at_finish_on_a_fresh_responder(w: World) -> None:
    """Without the replay cache (a restart), a recorded FINISH signs an old responder nonce."""
    frames: list[tuple[str, bytes]] = []
    run(w, record=frames)
    hello, finish = (data for d, data in frames if d == "i->r")
    replay = Scripted([hello, finish])
    with pytest.raises(HandshakeError, match="initiator's signature does not verify"):
        w.responder(replay_cache=ReplayCache()).respond(replay)
    assert [m["type"] for m in replay.sent_messages()] == ["welcome", "refuse"]


def test_finish_spliced_from_another_session_is_refused(w: World) -> None:
    responder = w.responder()
    first: list[tuple[str, bytes]] = []
    run(w, responder=responder, record=first)
    old_finish = json.loads(next(data for d, data in first if d == "i->r" and b"finish" in data))

    def splice(direction: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        return old_finish if msg["type"] == "finish" else None

    i, r = run(w, responder=responder, edit=splice)
    assert "initiator's signature does not verify" in r.message
    assert i.message.startswith("refused by the responder: ")
    assert "initiator's signature does not verify" in i.message


# --- tampering in flight ---------------------------------------------------------------------


def _flip_b64(value: str, size: int) -> str:
    raw = bytearray(unb64url(value, size) or b"")
    raw[5] ^= 0x01
    return b64url(bytes(raw))


def test_tampered_welcome_signature_is_rejected(w: World) -> None:
    def tamper(direction: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["type"] == "welcome":
            return {**msg, "sig": _flip_b64(msg["sig"], 64)}
        return None

    frames: list[tuple[str, bytes]] = []
    i, r = run(w, edit=tamper, record=frames)
    assert "responder's signature does not verify" in i.message
    assert r.error is not None and "closed" in str(r.error)
    assert not any(b'"finish"' in data for _, data in frames)  # the initiator sent nothing more


_X_ATTACKER = b64url(
    X25519PrivateKey.from_private_bytes(b"\x07" * 32).public_key().public_bytes_raw()
)


@pytest.mark.parametrize(
    ("kind", "field", "value"),
    [
        ("hello", "purpose", "transfer-all-funds"),
        ("hello", "x25519", _X_ATTACKER),
        ("hello", "nonce", "00" * 16),
        ("hello", "ts", -1),  # -1: the edit adds it to the original
        ("welcome", "x25519", _X_ATTACKER),
        ("welcome", "nonce", "11" * 16),
        ("welcome", "ts", -1),
    ],
)
def test_transcript_field_altered_by_a_man_in_the_middle_fails(
    w: World, kind: str, field: str, value: Any
) -> None:
    def tamper(direction: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["type"] != kind:
            return None
        return {**msg, field: msg[field] + value if value == -1 else value}

    i, r = run(w, edit=tamper)
    assert "responder's signature does not verify" in i.message
    assert r.session is None


def test_tampered_key_confirmation_is_rejected(w: World) -> None:
    def tamper(direction: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["type"] == "accept":
            return {**msg, "confirm": _flip_b64(msg["confirm"], 32)}
        return None

    i, r = run(w, edit=tamper)
    assert "key confirmation does not match" in i.message
    assert r.session is not None  # the responder finished; the initiator did not accept it


def test_forged_refuse_is_only_a_refusal(w: World) -> None:
    """A MITM can always cut the connection; swapping ACCEPT for REFUSE gives no session."""

    def tamper(direction: str, msg: dict[str, Any]) -> dict[str, Any] | None:
        if msg["type"] == "accept":
            return {"type": "refuse", "v": 1, "reason": "nope\x1b[31m"}
        return None

    i, _ = run(w, edit=tamper)
    assert i.message == "refused by the responder: nope?[31m"


# --- credentials ----------------------------------------------------------------------------


def test_initiator_credential_from_an_untrusted_root_is_refused(w: World) -> None:
    rogue = Identity.generate()
    cred = issue(rogue, w.alice.did, [{"tool": "*"}], audience=AUD, ttl=3600)
    i, r = run(w, cred=cred)
    assert "not a trusted root" in r.message
    assert i.message.startswith("refused by the responder: the initiator's credential")
    assert "not a trusted root" in i.message


def test_responder_credential_from_an_untrusted_root_is_refused(w: World) -> None:
    rogue = Identity.generate()
    cred = issue(rogue, w.bob.did, [{"tool": "*"}], audience=AUD, ttl=3600)
    i, r = run(w, responder=Responder(w.bob, cred, w.verifier))
    assert "the responder's credential does not verify" in i.message
    assert "not a trusted root" in i.message
    assert r.session is None


def test_credential_for_another_audience_is_refused(w: World) -> None:
    cred = issue(w.root, w.alice.did, [{"tool": "*"}], audience="other-fleet", ttl=3600)
    i, _ = run(w, cred=cred)
    assert "audience" in i.message


def test_expired_initiator_credential_is_refused(w: World) -> None:
    cred = issue(w.root, w.alice.did, [{"tool": "*"}], audience=AUD, ttl=60, now=time.time() - 7200)
    i, r = run(w, cred=cred)
    assert "expired" in r.message
    assert "refused by the responder" in i.message and "expired" in i.message


def test_expired_responder_credential_is_refused(w: World) -> None:
    cred = issue(w.root, w.bob.did, [{"tool": "*"}], audience=AUD, ttl=60, now=time.time() - 7200)
    i, _ = run(w, responder=Responder(w.bob, cred, w.verifier))
    assert "the responder's credential does not verify" in i.message and "expired" in i.message


def test_stolen_credential_under_the_thiefs_own_did_is_refused(w: World) -> None:
    thief = Identity.generate()
    i, r = run(w, identity=thief, cred=w.cred_a)
    assert f"issued to {w.alice.did}, not to the sender {thief.did}" in r.message
    assert "refused by the responder" in i.message


def test_stolen_credential_under_the_victims_did_cannot_sign(w: World) -> None:
    """The thief claims to be the subject; it cannot sign FINISH with the subject's key."""
    thief = Identity.generate()
    out, mine, _ = SpecInitiator(w.alice.did, w.cred_a, signer=thief).talk(w.responder())
    assert "initiator's signature does not verify" in out.message
    assert json.loads(mine.recv())["type"] == "refuse"


def test_responder_with_a_stolen_credential_is_rejected(w: World) -> None:
    thief = Identity.generate()
    i, _ = run(w, responder=Responder(thief, w.cred_b, w.verifier))
    assert f"issued to {w.bob.did}, not to the sender {thief.did}" in i.message


def test_a_peer_presenting_the_local_did_is_refused(w: World) -> None:
    cred = issue(w.root, w.bob.did, [{"tool": "*"}], audience=AUD, ttl=3600)
    i, r = run(w, identity=w.bob, cred=cred)
    assert "presents the local DID" in r.message
    assert i.error is not None


# --- peer policy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Snap:
    did: str
    score: int
    tier: str
    revoked: bool
    reason: str | None


class FakeTrust:
    def __init__(self, scores: dict[str, int], revoked: dict[str, str] | None = None) -> None:
        self.scores = scores
        self.revoked = revoked or {}

    def snapshot(self, did: str) -> Snap:
        reason = self.revoked.get(did)
        return Snap(did, self.scores.get(did, 500), "x", reason is not None, reason)


def test_low_trust_initiator_is_refused_with_the_reason(w: World) -> None:
    policy = PeerPolicy(min_trust=500, trust=FakeTrust({w.alice.did: 150}))  # type: ignore[arg-type]
    i, r = run(w, responder=w.responder(policy=policy))
    assert "has trust 150" in r.message and "below the required 500" in r.message
    assert i.message.startswith("refused by the responder: ")
    assert "has trust 150" in i.message


def test_low_trust_with_the_real_trust_store(w: World, tmp_path: Path) -> None:
    from warden.trust import TrustStore, sign_event

    store = TrustStore(tmp_path / "trust.db")
    reporter = Identity.generate()
    store.record(sign_event(reporter, w.alice.did, "violation", weight=300))
    i, _ = run(w, responder=w.responder(policy=PeerPolicy(min_trust=400, trust=store)))
    assert "has trust 200 (probation), below the required 400" in i.message
    store.revoke(w.alice.did, "leaked key")
    i, _ = run(w, responder=w.responder(policy=PeerPolicy(trust=store)))
    assert "is revoked: leaked key" in i.message


def test_missing_capability_is_refused_with_the_reason(w: World) -> None:
    i, _ = run(w, responder=w.responder(policy=PeerPolicy(require_tool="payments.transfer")))
    assert "grants no capability for `payments.transfer`" in i.message
    i, r = run(w, responder=w.responder(policy=PeerPolicy(require_tool="search.web")))
    assert i.session is not None and r.session is not None


def test_application_check_refuses(w: World) -> None:
    def only_ring_0_1(peer: Any) -> str | None:
        return None if peer.ring <= 1 else f"ring {peer.ring} is not allowed here"

    i, _ = run(w, responder=w.responder(policy=PeerPolicy(check=only_ring_0_1)))
    assert "ring 2 is not allowed here" in i.message


def test_failing_application_check_refuses_without_leaking(w: World) -> None:
    def broken(peer: Any) -> str | None:
        raise RuntimeError("secret internal detail")

    i, r = run(w, responder=w.responder(policy=PeerPolicy(check=broken)))
    assert "peer policy check failed" in i.message and "secret" not in i.message
    assert isinstance(r.error, HandshakeError)
    assert isinstance(r.error.__cause__, RuntimeError)


def test_initiator_policy_refuses_the_responder(w: World) -> None:
    policy = PeerPolicy(min_trust=600, trust=FakeTrust({w.bob.did: 300}))  # type: ignore[arg-type]
    frames: list[tuple[str, bytes]] = []
    i, r = run(w, policy=policy, record=frames)
    assert f"the responder {w.bob.did} is refused by local policy" in i.message
    assert "has trust 300" in i.message
    assert r.error is not None and "closed" in str(r.error)
    assert [json.loads(d)["type"] for _, d in frames] == ["hello", "welcome"]


def test_policy_configuration_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="trust store"):
        PeerPolicy(min_trust=300)
    with pytest.raises(ConfigurationError, match="0-1000"):
        PeerPolicy(min_trust=2000, trust=FakeTrust({}))  # type: ignore[arg-type]


# --- clocks ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("offset", "ok"), [(-31.0, False), (31.0, False), (-29.0, True), (29.0, True)]
)
def test_initiator_timestamp_skew(w: World, offset: float, ok: bool) -> None:
    me = SpecInitiator(w.alice.did, w.cred_a, w.alice, ts=int((time.time() + offset) * 1000))
    out, _, _ = me.talk(w.responder())
    if ok:
        assert out.session is not None, out.error
    else:
        assert "initiator's timestamp is 3" in out.message
        assert ("ahead of" if offset > 0 else "behind") in out.message


def test_responder_timestamp_skew(w: World) -> None:
    late = w.responder(clock=lambda: time.time() + 45)
    i, r = run(w, responder=late)
    # the responder's clock is ahead: it finds the initiator behind and refuses first
    assert "initiator's timestamp is" in r.message
    calls = iter(range(10**6))

    def skewed_after_hello() -> float:  # HELLO's ts is true; the check of WELCOME is not
        return time.time() + (0 if next(calls) == 0 else 45)

    i, _ = run(w, clock=skewed_after_hello)
    assert "the responder's timestamp is 45" in i.message and "behind local time" in i.message


# --- malformed and oversized messages -------------------------------------------------------


def _hello(w: World, **changes: Any) -> dict[str, Any]:
    hello = SpecInitiator(w.alice.did, w.cred_a, w.alice).hello()
    for k, v in changes.items():
        if v is ...:
            del hello[k]
        else:
            hello[k] = v
    return hello


def _nested_credential(holder: Identity) -> str:
    header = {"alg": "Ed25519", "typ": "warden-cred+jwt", "kid": holder.did}
    return ".".join([b64url(json.dumps(header).encode()), b64url(b"[" * 9000), b64url(bytes(64))])


MALFORMED: list[tuple[str, Callable[[World], bytes], str]] = [
    ("empty", lambda w: b"", "not JSON"),
    ("garbage", lambda w: b"\xff\xfe{", "not JSON"),
    ("array", lambda w: b"[]", "not a flat JSON object"),
    ("null", lambda w: b"null", "not a flat JSON object"),
    ("nested", lambda w: b'{"a":' * 10000 + b"1" + b"}" * 10000, "not a flat JSON object"),
    ("deep array", lambda w: b"[" * 60000, "malformed HELLO"),
    ("trailing", lambda w: json.dumps(_hello(w)).encode() + b"x", "not JSON"),
    ("no type", lambda w: json.dumps(_hello(w, type=...)).encode(), "expected HELLO"),
    ("wrong type", lambda w: json.dumps(_hello(w, type="finish")).encode(), "got `finish`"),
    ("v2", lambda w: json.dumps(_hello(w, v=2)).encode(), "unsupported protocol version 2"),
    ("v bool", lambda w: json.dumps(_hello(w, v=True)).encode(), "not a flat JSON object"),
    ("v float", lambda w: json.dumps(_hello(w, v=1.0)).encode(), "not a flat JSON object"),
    ("missing", lambda w: json.dumps(_hello(w, nonce=...)).encode(), "missing field `nonce`"),
    ("unknown", lambda w: json.dumps(_hello(w, admin=1)).encode(), "unknown field `admin`"),
    (
        "duplicate",
        lambda w: json.dumps(_hello(w)).encode()[:-1] + b',"purpose":"x"}',
        "a key is repeated",
    ),
    ("ts string", lambda w: json.dumps(_hello(w, ts="1")).encode(), "`ts` must be integer"),
    ("ts huge", lambda w: json.dumps(_hello(w, ts=2**60)).encode(), "`ts` must be integer"),
    ("ts 10^40", lambda w: json.dumps(_hello(w, ts=10**40)).encode(), "`ts` must be integer"),
    (
        "ts bignum",
        lambda w: json.dumps(_hello(w, ts=0)).encode().replace(b'"ts": 0', b'"ts": ' + b"9" * 5000),
        "not a flat JSON object",
    ),
    (
        "bad utf-8",
        lambda w: json.dumps(_hello(w)).encode().replace(b"invoke", b"inv\xeeke"),
        "UTF-8",
    ),
    ("nonce short", lambda w: json.dumps(_hello(w, nonce="ab")).encode(), "`nonce` must be 32"),
    ("nonce upper", lambda w: json.dumps(_hello(w, nonce="AB" * 16)).encode(), "`nonce` must"),
    ("did", lambda w: json.dumps(_hello(w, did="did:web:x")).encode(), "`did` malformed DID"),
    ("did int", lambda w: json.dumps(_hello(w, did=7)).encode(), "`did` a DID must be a string"),
    ("purpose empty", lambda w: json.dumps(_hello(w, purpose="")).encode(), "`purpose` must"),
    ("purpose ctrl", lambda w: json.dumps(_hello(w, purpose="a\nb")).encode(), "printable"),
    ("cred int", lambda w: json.dumps(_hello(w, cred=5)).encode(), "`cred` must"),
    ("cred big", lambda w: json.dumps(_hello(w, cred="a" * 20000)).encode(), "`cred` must"),
    ("x25519 short", lambda w: json.dumps(_hello(w, x25519="AAAA")).encode(), "`x25519` must"),
    (
        "x25519 padded",
        lambda w: json.dumps(_hello(w, x25519=b64url(bytes(32)) + "=")).encode(),
        "`x25519` must",
    ),
    (
        "x25519 non-canonical",
        lambda w: json.dumps(_hello(w, x25519=b64url(bytes(32))[:-1] + "B")).encode(),
        "`x25519` must",
    ),
    (
        "x25519 low order",
        lambda w: json.dumps(_hello(w, x25519=b64url(bytes(32)))).encode(),
        "low-order",
    ),
    ("cred garbage", lambda w: json.dumps(_hello(w, cred="a.b.c")).encode(), "does not verify"),
    (
        "cred nested payload",
        lambda w: json.dumps(_hello(w, cred=_nested_credential(w.alice))).encode(),
        "nests too deeply",
    ),
    ("oversized", lambda w: b" " * 70_000 + b"{}", "exceeds 65536 bytes"),
]


@pytest.mark.parametrize(("name", "make", "reason"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_hello_is_refused_with_a_reason(
    w: World, name: str, make: Callable[[World], bytes], reason: str
) -> None:
    transport = Scripted([make(w)])
    with pytest.raises(HandshakeError) as info:
        w.responder().respond(transport)
    assert reason in str(info.value)
    assert reason in refusal_of(transport)
    assert len(refusal_of(transport)) <= 512
    assert transport.closed


@pytest.mark.parametrize(
    "welcome",
    [
        b"{}",
        b"[1,2]",
        b'{"type":"welcome","v":1}',
        b'{"type":"accept","v":1,"confirm":"x"}',
        b'{"type":"refuse","v":1}',
        b'{"type":"refuse","v":1,"reason":5}',
        b"\x00" * 100,
    ],
)
def test_malformed_welcome_is_a_handshake_error(w: World, welcome: bytes) -> None:
    transport = Scripted([welcome])
    with pytest.raises(HandshakeError):
        initiate(transport, w.alice, w.cred_a, w.verifier, purpose="invoke")
    assert transport.closed
    assert [m["type"] for m in transport.sent_messages()] == ["hello"]


def test_fuzzed_frames_never_escape_as_another_exception(w: World) -> None:
    import random

    rng = random.Random(1234)
    base = json.dumps(_hello(w)).encode()
    responder = w.responder()
    for _ in range(1000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        with pytest.raises(HandshakeError):
            responder.respond(Scripted([bytes(data)]))


def test_local_purpose_is_checked_before_anything_is_sent(w: World) -> None:
    transport = Scripted([])
    with pytest.raises(HandshakeError, match="purpose must"):
        initiate(transport, w.alice, w.cred_a, w.verifier, purpose="")
    assert transport.sent == []


def test_oversized_frame_over_tcp_is_refused_before_its_body(w: World) -> None:
    import struct

    a, b = socket.socketpair()
    with a:
        a.sendall(struct.pack(">I", 10 * 1024 * 1024))  # and no body at all
        transport = TcpTransport(b, timeout=5.0)
        start = time.monotonic()
        with pytest.raises(HandshakeError, match="over the 65536-byte limit"):
            w.responder().respond(transport)
        assert time.monotonic() - start < 2.0  # did not wait for a body


# --- replay cache ---------------------------------------------------------------------------


def test_replay_cache_is_bounded_and_expires() -> None:
    cache = ReplayCache(max_entries=3, ttl=10.0)
    assert cache.add("a", 0) and not cache.add("a", 1)
    assert cache.add("b", 1) and cache.add("c", 2) and cache.add("d", 3)
    assert len(cache) == 3  # `a`, the oldest, made room
    assert cache.add("a", 4)
    assert not cache.add("d", 12.9)
    assert cache.add("d", 13.0)  # expired after ttl
    assert len(cache) <= 3
    big = ReplayCache(max_entries=1000, ttl=60)
    for n in range(5000):
        big.add(str(n), n / 1000)
    assert len(big) == 1000
    with pytest.raises(ConfigurationError, match="positive"):
        ReplayCache(max_entries=0)


def test_replay_cache_expiry_lets_an_old_nonce_fail_on_its_timestamp(w: World) -> None:
    """Entries live 2 x skew: beyond that, the HELLO's own timestamp is out of the window."""
    now = [time.time()]
    responder = w.responder(clock=lambda: now[0])
    assert responder.replay_cache.ttl == 60.0
    hello = msgspec.json.encode(_hello(w, ts=int(now[0] * 1000)))
    with pytest.raises(HandshakeError, match="closed"):  # WELCOME sent, then the peer is gone
        responder.respond(Scripted([hello]))
    with pytest.raises(HandshakeError, match="replayed HELLO"):
        responder.respond(Scripted([hello]))
    now[0] += 61
    with pytest.raises(HandshakeError, match="timestamp"):
        responder.respond(Scripted([hello]))
