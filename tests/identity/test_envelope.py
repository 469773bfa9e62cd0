"""Signed envelopes inside a session (docs/identity.md, "Envelopes")."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from warden.errors import EnvelopeError
from warden.identity import Identity, Verifier, issue
from warden.identity._codec import b64url, unb64url
from warden.identity.envelope import EnvelopeReader, EnvelopeWriter, _signed_bytes
from warden.identity.handshake import SecureSession

AUD = "fleet-test"


@dataclass
class Pair:
    alice: Identity
    bob: Identity
    a: SecureSession  # alice's side
    b: SecureSession  # bob's side
    make: Callable[[Identity, Identity, str], SecureSession]


@pytest.fixture(scope="module")
def pair() -> Pair:
    """Matching sessions built directly (the handshake has its own tests)."""
    root = Identity.generate()
    verifier = Verifier([root.did], AUD)

    def make(local: Identity, peer: Identity, sid: str) -> SecureSession:
        cred = issue(root, peer.did, [{"tool": "*"}], audience=AUD, ttl=3600)
        return SecureSession(
            sid, os.urandom(32), local, verifier.verify(cred), "test", initiator=True
        )

    alice, bob = Identity.generate(), Identity.generate()
    sid = os.urandom(16).hex()
    return Pair(alice, bob, make(alice, bob, sid), make(bob, alice, sid), make)


def fresh(pair: Pair) -> tuple[EnvelopeWriter, EnvelopeReader]:
    """A writer on alice's side and the matching reader on bob's, both new."""
    return EnvelopeWriter(pair.a), EnvelopeReader(pair.b)


def edit(wire: bytes, **changes: Any) -> bytes:
    env = json.loads(wire)
    env.update(changes)
    return json.dumps(env).encode()


def resign(signer: Identity, wire: bytes, **changes: Any) -> bytes:
    """Change header fields and sign again with ``signer``: a validly signed variant."""
    env = json.loads(wire)
    env.update(changes)
    header = {k: v for k, v in env.items() if k not in ("sig", "body")}
    env["sig"] = b64url(signer.sign(b"warden-envelope/v1\n" + rfc8785.dumps(header)))
    return json.dumps(env).encode()


def assert_untouched(reader: EnvelopeReader, seq: int = 0, nonces: int = 0) -> None:
    assert reader.next_seq == seq
    assert len(reader.nonces) == nonces


# --- happy path -----------------------------------------------------------------------------


def test_round_trip_in_both_directions(pair: Pair) -> None:
    ab, ba = EnvelopeWriter(pair.a), EnvelopeWriter(pair.b)
    at_b, at_a = EnvelopeReader(pair.b), EnvelopeReader(pair.a)
    bodies = [b"", b"hello", bytes(range(256)), os.urandom(40_000)]
    for n, body in enumerate(bodies):
        assert at_b.open(ab.seal(body)) == body
        assert at_a.open(ba.seal(body[::-1])) == body[::-1]
        assert at_b.next_seq == n + 1
    assert ab.next_seq == len(bodies)


def test_wire_form(pair: Pair) -> None:
    writer, _ = fresh(pair)
    env = json.loads(writer.seal(b"payload"))
    assert set(env) == {
        "v",
        "sender",
        "recipient",
        "session",
        "seq",
        "nonce",
        "ts",
        "body_digest",
        "sig",
        "body",
    }
    assert env["v"] == 1 and env["seq"] == 0
    assert env["sender"] == pair.alice.did and env["recipient"] == pair.bob.did
    assert env["session"] == pair.a.id
    assert len(env["nonce"]) == 24 and int(env["nonce"], 16) >= 0
    assert abs(env["ts"] - time.time() * 1000) < 5000
    assert env["body_digest"] == "sha256:" + hashlib.sha256(b"payload").hexdigest()
    assert unb64url(env["body"]) == b"payload"
    header = {k: v for k, v in env.items() if k not in ("sig", "body")}
    signed = b"warden-envelope/v1\n" + rfc8785.dumps(header)
    sig = unb64url(env["sig"], 64)
    assert sig is not None
    pair.alice.public_key.verify(sig, signed)  # raises if the spec's bytes were not signed


@given(
    seq=st.integers(0, 2**53 - 1),
    ts=st.integers(0, 2**53 - 1),
    nonce=st.binary(min_size=12, max_size=12).map(bytes.hex),
    session=st.binary(min_size=16, max_size=16).map(bytes.hex),
    digest=st.binary(min_size=32, max_size=32).map(lambda b: "sha256:" + b.hex()),
)
def test_signed_header_bytes_are_jcs(
    seq: int, ts: int, nonce: str, session: str, digest: str
) -> None:
    sender, recipient = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", "did:key:z6Mk"
    header: dict[str, Any] = {
        "v": 1,
        "sender": sender,
        "recipient": recipient,
        "session": session,
        "seq": seq,
        "nonce": nonce,
        "ts": ts,
        "body_digest": digest,
    }
    expected = b"warden-envelope/v1\n" + rfc8785.dumps(header)
    assert _signed_bytes(sender, recipient, session, seq, nonce, ts, digest) == expected


def test_session_endpoints(pair: Pair) -> None:
    s = pair.make(pair.alice, pair.bob, os.urandom(16).hex())
    t = pair.make(pair.bob, pair.alice, s.id)
    assert t.reader().open(s.writer().seal(b"x")) == b"x"
    assert s.writer() is s.writer() and t.reader() is t.reader()
    assert "key" not in repr(s.writer()).replace("did:key", "")


# --- rejections -----------------------------------------------------------------------------


def test_replayed_envelope_is_rejected(pair: Pair) -> None:
    writer, reader = fresh(pair)
    wire = writer.seal(b"pay 10")
    assert reader.open(wire) == b"pay 10"
    with pytest.raises(EnvelopeError, match="replayed: seq 0, expected 1"):
        reader.open(wire)
    assert_untouched(reader, seq=1, nonces=1)


def test_reordered_envelope_is_rejected_and_the_right_one_still_opens(pair: Pair) -> None:
    writer, reader = fresh(pair)
    e0, e1 = writer.seal(b"first"), writer.seal(b"second")
    with pytest.raises(EnvelopeError, match="out of order: seq 1, expected 0"):
        reader.open(e1)
    assert_untouched(reader)
    assert reader.open(e0) == b"first"
    assert reader.open(e1) == b"second"


def test_expired_envelope_is_rejected(pair: Pair) -> None:
    writer = EnvelopeWriter(pair.a, clock=lambda: time.time() - 61)
    reader = EnvelopeReader(pair.b)
    with pytest.raises(EnvelopeError, match="expired: older than 60 s"):
        reader.open(writer.seal(b"old"))
    assert_untouched(reader)
    quick = EnvelopeReader(pair.b, max_age=5)
    slightly_old = EnvelopeWriter(pair.a, clock=lambda: time.time() - 6)
    with pytest.raises(EnvelopeError, match="expired"):
        quick.open(slightly_old.seal(b"x"))


def test_no_envelope_is_accepted_once_the_peer_credential_expired(pair: Pair) -> None:
    expires = pair.b.expires
    writer = EnvelopeWriter(pair.a, clock=lambda: expires + 31)
    reader = EnvelopeReader(pair.b, clock=lambda: expires + 31)
    with pytest.raises(EnvelopeError, match="the session ended"):
        reader.open(writer.seal(b"late"))
    assert_untouched(reader)
    within_skew = EnvelopeReader(pair.b, clock=lambda: expires + 29)
    assert within_skew.open(EnvelopeWriter(pair.a, clock=lambda: expires + 29).seal(b"ok")) == b"ok"


def test_envelope_from_the_future_is_rejected(pair: Pair) -> None:
    reader = EnvelopeReader(pair.b)
    ahead = EnvelopeWriter(pair.a, clock=lambda: time.time() + 31)
    with pytest.raises(EnvelopeError, match="from the future"):
        reader.open(ahead.seal(b"x"))
    assert_untouched(reader)
    within = EnvelopeWriter(pair.a, clock=lambda: time.time() + 25)
    assert EnvelopeReader(pair.b).open(within.seal(b"x")) == b"x"


def test_misaddressed_envelope_is_rejected(pair: Pair) -> None:
    """An envelope reflected back to its own sender is not addressed to it."""
    writer = EnvelopeWriter(pair.a)
    back_at_alice = EnvelopeReader(pair.a)
    with pytest.raises(EnvelopeError, match="misaddressed"):
        back_at_alice.open(writer.seal(b"x"))
    carol = Identity.generate()
    to_carol = EnvelopeWriter(pair.make(pair.alice, carol, pair.a.id))
    with pytest.raises(EnvelopeError, match=f"misaddressed: the envelope is for `{carol.did}`"):
        EnvelopeReader(pair.b).open(to_carol.seal(b"x"))


def test_envelope_from_another_sender_is_rejected(pair: Pair) -> None:
    mallory = Identity.generate()
    forged = EnvelopeWriter(pair.make(mallory, pair.bob, pair.a.id))
    reader = EnvelopeReader(pair.b)
    with pytest.raises(EnvelopeError, match="wrong sender"):
        reader.open(forged.seal(b"x"))
    # claiming to be alice without alice's key
    claimed = resign(mallory, forged.seal(b"x"), sender=pair.alice.did, seq=0)
    with pytest.raises(EnvelopeError, match="bad signature"):
        reader.open(claimed)
    assert_untouched(reader)


def test_envelope_from_another_session_is_rejected(pair: Pair) -> None:
    other = pair.make(pair.alice, pair.bob, os.urandom(16).hex())
    reader = EnvelopeReader(pair.b)
    with pytest.raises(EnvelopeError, match="wrong session"):
        reader.open(EnvelopeWriter(other).seal(b"x"))
    # relabelled for this session: the signature covers the session id
    with pytest.raises(EnvelopeError, match="bad signature"):
        reader.open(edit(EnvelopeWriter(other).seal(b"x"), session=pair.a.id))
    assert_untouched(reader)


def test_tampered_body_is_rejected(pair: Pair) -> None:
    writer, reader = fresh(pair)
    wire = writer.seal(b"pay 10")
    with pytest.raises(EnvelopeError, match="does not match `body_digest`"):
        reader.open(edit(wire, body=b64url(b"pay 99")))
    digest = "sha256:" + hashlib.sha256(b"pay 99").hexdigest()
    with pytest.raises(EnvelopeError, match="bad signature"):
        reader.open(edit(wire, body=b64url(b"pay 99"), body_digest=digest))
    assert_untouched(reader)
    assert reader.open(wire) == b"pay 10"


def test_tampered_signature_is_rejected(pair: Pair) -> None:
    writer, reader = fresh(pair)
    wire = writer.seal(b"x")
    sig = bytearray(unb64url(json.loads(wire)["sig"], 64) or b"")
    for i in (0, 31, 63):
        bad = bytearray(sig)
        bad[i] ^= 0x80
        with pytest.raises(EnvelopeError, match="bad signature"):
            reader.open(edit(wire, sig=b64url(bytes(bad))))
    for field, value in [("seq", 0), ("ts", json.loads(wire)["ts"] + 1), ("nonce", "ab" * 12)]:
        if json.loads(wire)[field] == value:
            continue
        with pytest.raises(EnvelopeError, match="bad signature"):
            reader.open(edit(wire, **{field: value}))
    assert_untouched(reader)
    assert reader.open(wire) == b"x"


def test_reused_nonce_is_rejected_even_with_the_next_seq(pair: Pair) -> None:
    writer, reader = fresh(pair)
    first = writer.seal(b"a")
    assert reader.open(first) == b"a"
    again = resign(pair.alice, writer.seal(b"b"), nonce=json.loads(first)["nonce"])
    with pytest.raises(EnvelopeError, match=r"nonce \w+ was already seen"):
        reader.open(again)
    assert_untouched(reader, seq=1, nonces=1)


def test_state_advances_only_on_success(pair: Pair) -> None:
    writer, reader = fresh(pair)
    good = writer.seal(b"ok")
    bad = [
        edit(good, body=b64url(b"ko")),
        edit(good, sig=b64url(bytes(64))),
        edit(good, recipient=pair.alice.did),
        edit(good, v=2),
        b"{}",
        b"not json",
    ]
    for wire in bad:
        with pytest.raises(EnvelopeError):
            reader.open(wire)
        assert_untouched(reader)
    assert reader.open(good) == b"ok"
    assert_untouched(reader, seq=1, nonces=1)


def test_nonce_cache_is_bounded(pair: Pair) -> None:
    writer = EnvelopeWriter(pair.a)
    reader = EnvelopeReader(pair.b, max_nonces=8)
    for n in range(50):
        assert reader.open(writer.seal(b"%d" % n)) == b"%d" % n
        assert len(reader.nonces) <= 8
    assert len(reader.nonces) == 8
    assert reader.next_seq == 50


def test_nonce_cache_expires(pair: Pair) -> None:
    now = [time.time()]
    writer = EnvelopeWriter(pair.a, clock=lambda: now[0])
    reader = EnvelopeReader(pair.b, max_age=10, clock=lambda: now[0], skew=5)
    reader.open(writer.seal(b"a"))
    now[0] += 9
    reader.open(writer.seal(b"b"))
    assert len(reader.nonces) == 2
    now[0] += 7  # the first nonce is older than max_age + skew
    reader.open(writer.seal(b"c"))
    assert len(reader.nonces) == 2


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda w: b"", "malformed envelope"),
        (lambda w: b"[]", "malformed envelope"),
        (lambda w: b"\xff" * 10, "malformed envelope"),
        (lambda w: w.replace(b'"v":1', b'"v":true'), "malformed envelope"),
        (lambda w: w[:-1] + b',"extra":1}', "unknown field `extra`"),
        (lambda w: edit(w, seq=-1), "safe integers"),
        (lambda w: edit(w, seq=2**60), "safe integers"),
        (lambda w: edit(w, seq="0"), "malformed envelope"),
        (lambda w: edit(w, nonce="XYZ"), "`nonce`"),
        (lambda w: edit(w, body_digest="md5:00"), "`body_digest`"),
        (lambda w: edit(w, sig="AAAA"), "`sig`"),
        (lambda w: edit(w, body="!!"), "`body`"),
        (lambda w: edit(w, body=json.loads(w)["body"] + "="), "`body`"),
        (lambda w: b" " * (1 << 20) + w, "exceeds"),
    ],
)
def test_malformed_envelopes_are_rejected(
    pair: Pair, mutate: Callable[[bytes], bytes], reason: str
) -> None:
    writer, reader = fresh(pair)
    wire = mutate(writer.seal(b"hi"))
    with pytest.raises(EnvelopeError) as info:
        reader.open(wire)
    assert reason in str(info.value)
    assert_untouched(reader)


def test_fuzzed_envelopes_only_raise_envelope_error(pair: Pair) -> None:
    import random

    rng = random.Random(99)
    writer, reader = fresh(pair)
    base = writer.seal(b"some body")
    for _ in range(1000):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if bytes(data) == base:
            continue
        with pytest.raises(EnvelopeError):
            reader.open(bytes(data))
    assert_untouched(reader)
    assert reader.open(base) == b"some body"


def test_wrong_body_type_is_rejected(pair: Pair) -> None:
    writer, reader = fresh(pair)
    with pytest.raises(EnvelopeError, match="bytes"):
        writer.seal("text")  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="bytes"):
        reader.open("text")  # type: ignore[arg-type]
    assert writer.next_seq == 0
