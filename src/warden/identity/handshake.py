"""Mutual challenge-response handshake between two agents (docs/identity.md, "Handshake").

Four messages over a :class:`~warden.identity.transport.Transport`, each one
JSON object with a ``type`` and the protocol version ``v`` (1)::

    hello    {type, v, did, nonce, ts, purpose, cred, x25519}         I -> R
    welcome  {type, v, did, nonce, ts, cred, x25519, sig}             R -> I
    finish   {type, v, sig}                                           I -> R
    accept   {type, v, confirm}   or   refuse {type, v, reason}       R -> I

``did`` is the sender's did:key; ``nonce`` 32 lowercase hex (128 random bits);
``ts`` integer milliseconds since the epoch; ``purpose`` 1-256 printable
characters; ``cred`` the sender's credential (a compact JWS, at most 16 KiB);
``x25519`` a fresh X25519 public key, ``sig`` an Ed25519 signature and
``confirm`` 32 bytes, each canonical unpadded base64url. Every field is
required; no other field, and no duplicate key, is accepted.

A signature covers ``"warden-handshake/v1\\n" ‖ label ‖ "\\n" ‖ SHA-256(JCS(transcript))``
where the transcript is the JSON array of the messages as parsed: the
responder signs ``[hello, welcome without sig]`` (label ``responder``), the
initiator ``[hello, welcome]`` (label ``initiator``). With ``h`` =
SHA-256(JCS([hello, welcome, finish])), the session id is ``h[:16]`` in hex and
the session key HKDF-SHA256(X25519 shared secret, salt=h,
info="warden-session/v1", 32 bytes). Neither is sent. ``confirm`` is the same
HKDF with info "warden-handshake/v1 accept": it proves to the initiator that
the responder derived the same key, and reveals nothing about it.

Every failure raises HandshakeError. The responder first sends ``refuse``
with the reason (when the transport still works); the initiator just closes.
Either side closes its transport when the handshake fails and leaves it open
when it succeeds.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec
import rfc8785
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from warden._re import compile_glob, search
from warden._text import is_utf8
from warden.errors import ConfigurationError, HandshakeError, IdentityError, TrustError
from warden.identity._codec import MAX_SAFE_INT, b64url, hex_of, unb64url
from warden.identity._replay import DEFAULT_MAX_ENTRIES, ReplayCache
from warden.identity.did import public_key_from_did
from warden.identity.envelope import EnvelopeReader, EnvelopeWriter
from warden.identity.keys import Identity, verify_signature
from warden.identity.transport import MAX_FRAME, Transport

if TYPE_CHECKING:
    from warden.identity.credentials import VerifiedCredential, Verifier
    from warden.trust import TrustStore

__all__ = [
    "PROTOCOL_VERSION",
    "SKEW",
    "PeerPolicy",
    "ReplayCache",
    "Responder",
    "SecureSession",
    "initiate",
]

PROTOCOL_VERSION: Final = 1
SKEW: Final = 30.0
MAX_PURPOSE: Final = 256
MAX_CREDENTIAL: Final = 16 * 1024
MAX_REASON: Final = 512
_DOMAIN: Final = b"warden-handshake/v1\n"
_SESSION_INFO: Final = b"warden-session/v1"
_CONFIRM_INFO: Final = b"warden-handshake/v1 accept"

_FIELDS: Final[dict[str, frozenset[str]]] = {
    "hello": frozenset({"type", "v", "did", "nonce", "ts", "purpose", "cred", "x25519"}),
    "welcome": frozenset({"type", "v", "did", "nonce", "ts", "cred", "x25519", "sig"}),
    "finish": frozenset({"type", "v", "sig"}),
    "accept": frozenset({"type", "v", "confirm"}),
    "refuse": frozenset({"type", "v", "reason"}),
}
_decode_flat: Final = msgspec.json.Decoder(dict[str, str | int]).decode
_encode: Final = msgspec.json.encode

_Message = dict[str, str | int]


# --- policy and session ---------------------------------------------------------------------


@dataclass(frozen=True)
class PeerPolicy:
    """What a peer must satisfy once its credential and signature verify.

    ``min_trust`` (0-1000) and revocation are read from ``trust``; a store that
    cannot be read refuses the peer. ``require_tool``: some capability of the
    peer's credential names a tool glob matching it (argument constraints are
    checked per call, not here). ``check`` returns a refusal reason, or None.
    """

    min_trust: int | None = None
    require_tool: str | None = None
    check: Callable[[VerifiedCredential], str | None] | None = None
    trust: TrustStore | None = None

    def __post_init__(self) -> None:
        if self.min_trust is not None:
            if type(self.min_trust) is not int or not 0 <= self.min_trust <= 1000:
                raise ConfigurationError("min_trust must be an integer 0-1000")
            if self.trust is None:
                raise ConfigurationError("min_trust needs a trust store (`trust=`)")
        if self.require_tool is not None and (
            type(self.require_tool) is not str or not self.require_tool
        ):
            raise ConfigurationError("require_tool must be a non-empty tool name")

    def refusal(self, peer: VerifiedCredential) -> str | None:
        """Why ``peer`` is refused, or None when it passes."""
        did = peer.subject
        if self.trust is not None:
            try:
                snap = self.trust.snapshot(did)
            except TrustError as exc:
                return f"the trust store cannot be read: {exc}"
            if snap.revoked:
                return f"agent {did} is revoked" + (f": {snap.reason}" if snap.reason else "")
            if self.min_trust is not None and snap.score < self.min_trust:
                return (
                    f"agent {did} has trust {snap.score} ({snap.tier}), "
                    f"below the required {self.min_trust}"
                )
        tool = self.require_tool
        if tool is not None and not any(
            search(compile_glob(cap.tool), tool) for cap in peer.capabilities
        ):
            return f"the credential of {did} grants no capability for `{tool}`"
        if self.check is not None:
            try:
                reason = self.check(peer)
            except Exception as exc:
                raise HandshakeError("the peer policy check failed with an error") from exc
            if reason is not None:
                return str(reason) or "refused by the peer policy check"
        return None


_endpoint_lock = threading.Lock()


@dataclass(frozen=True, repr=False)
class SecureSession:
    """The result of a handshake: who is on the other side, and the keys both derived.

    ``key`` (32 bytes) is secret; ``repr`` never shows it. ``writer()`` and
    ``reader()`` return this session's single envelope writer and reader.
    """

    id: str
    key: bytes
    local: Identity
    peer: VerifiedCredential
    purpose: str
    initiator: bool
    _endpoints: dict[str, EnvelopeWriter | EnvelopeReader] = field(
        default_factory=dict, init=False, compare=False, hash=False
    )

    @property
    def peer_did(self) -> str:
        return self.peer.subject

    @property
    def expires(self) -> int:
        """When the peer's credential (its whole chain) expires, epoch seconds."""
        return self.peer.expires

    def writer(self) -> EnvelopeWriter:
        """Seals envelopes from the local side to the peer (one per session)."""
        with _endpoint_lock:
            w = self._endpoints.get("writer")
            if not isinstance(w, EnvelopeWriter):
                w = self._endpoints["writer"] = EnvelopeWriter(self)
        return w

    def reader(self) -> EnvelopeReader:
        """Opens envelopes from the peer to the local side (one per session).

        A second reader would accept every sequence number again, so there is one.
        """
        with _endpoint_lock:
            r = self._endpoints.get("reader")
            if not isinstance(r, EnvelopeReader):
                r = self._endpoints["reader"] = EnvelopeReader(self)
        return r

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return (
            f"SecureSession(id={self.id}, local={self.local.did}, peer={self.peer.subject}, "
            f"purpose={self.purpose!r}, {role})"
        )


# --- messages -------------------------------------------------------------------------------


def _bad(kind: str, why: str) -> HandshakeError:
    return HandshakeError(f"malformed {kind.upper()}: {why}")


def _parse(data: bytes, expect: tuple[str, ...]) -> _Message:
    """A message of one of the ``expect`` types, fully shape-checked."""
    want = " or ".join(k.upper() for k in expect)
    if len(data) > MAX_FRAME:
        raise HandshakeError(f"{want} of {len(data)} bytes exceeds {MAX_FRAME} bytes")
    try:
        msg = _decode_flat(data)
    except msgspec.ValidationError as exc:
        raise HandshakeError(f"malformed {want}: not a flat JSON object ({exc})") from None
    except msgspec.DecodeError as exc:
        raise HandshakeError(f"malformed {want}: not JSON ({exc})") from None
    except UnicodeDecodeError:  # msgspec raises it for bad UTF-8 inside a string
        raise HandshakeError(f"malformed {want}: not UTF-8") from None
    kind = msg.get("type")
    if type(kind) is not str or kind not in expect:
        shown = f"`{_printable(kind)}`" if type(kind) is str and len(kind) <= 16 else "no `type`"
        raise HandshakeError(f"expected {want}, got {shown}")
    v = msg.get("v")
    if type(v) is not int or v != PROTOCOL_VERSION:
        found = v if type(v) is int else f"of type {type(v).__name__}"
        raise _bad(kind, f"unsupported protocol version {found} (expected {PROTOCOL_VERSION})")
    fields = _FIELDS[kind]
    missing = fields - msg.keys()
    if missing:
        raise _bad(kind, f"missing field `{sorted(missing)[0]}`")
    unknown = msg.keys() - fields
    if unknown:
        name = sorted(unknown)[0]
        raise _bad(kind, f"unknown field `{_printable(name[:32])}`")
    try:  # msgspec keeps the last of repeated keys; refuse them instead
        json.loads(data, object_pairs_hook=_no_duplicates)
    except ValueError as exc:
        raise _bad(kind, str(exc)) from None
    for name in sorted(fields - {"type", "v"}):
        why = _CHECKS[name](msg[name])
        if why:
            raise _bad(kind, f"`{name}` {why}")
    return msg


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key is repeated")
    return out


def _check_did(value: object) -> str | None:
    try:
        public_key_from_did(value)
    except IdentityError as exc:
        return str(exc)
    return None


def _check_purpose(value: object) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_PURPOSE:
        return f"must be a string of 1-{MAX_PURPOSE} characters"
    if not (value.isprintable() and is_utf8(value)):
        return "must be printable text"
    return None


def _check_cred(value: object) -> str | None:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_CREDENTIAL or not value.isascii():
        return f"must be a compact JWS of at most {MAX_CREDENTIAL} characters"
    return None


def _check_reason(value: object) -> str | None:
    if type(value) is not str or len(value) > MAX_REASON:
        return f"must be a string of at most {MAX_REASON} characters"
    return None


def _check_b64(size: int) -> Callable[[object], str | None]:
    def check(value: object) -> str | None:
        if type(value) is not str or unb64url(value, size) is None:
            return f"must be {size} bytes in unpadded base64url"
        return None

    return check


def _check_ts(value: object) -> str | None:
    if type(value) is not int or not 0 <= value <= MAX_SAFE_INT:
        return "must be integer milliseconds since the epoch"
    return None


_CHECKS: Final[dict[str, Callable[[object], str | None]]] = {
    "did": _check_did,
    "nonce": lambda v: None if hex_of(v, 32) else "must be 32 lowercase hex characters",
    "ts": _check_ts,
    "purpose": _check_purpose,
    "cred": _check_cred,
    "x25519": _check_b64(32),
    "sig": _check_b64(64),
    "confirm": _check_b64(32),
    "reason": _check_reason,
}


def _jcs(message: _Message) -> bytes:
    try:
        return bytes(rfc8785.dumps(message))
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
        raise HandshakeError(f"cannot canonicalise a message: {exc}") from None


def _transcript_hash(*canonical: bytes) -> bytes:
    """SHA-256 of JCS([m1, m2, ...]) from each message's own JCS bytes.

    A JCS array is ``[`` + its elements' JCS joined by ``,`` + ``]``, so each
    message is canonicalised once rather than once per transcript it is in.
    """
    return hashlib.sha256(b"[" + b",".join(canonical) + b"]").digest()


def _signed(label: bytes, transcript_hash: bytes) -> bytes:
    return _DOMAIN + label + b"\n" + transcript_hash


def _hkdf(secret: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=info).derive(secret)


def _shared_secret(own: X25519PrivateKey, peer_key: str, who: str) -> bytes:
    raw = unb64url(peer_key, 32)
    if raw is None:  # _parse checked it: unreachable unless a caller skipped it
        raise HandshakeError(f"the {who}'s X25519 key is malformed")
    try:
        return own.exchange(X25519PublicKey.from_public_bytes(raw))
    except ValueError:
        raise HandshakeError(f"the {who}'s X25519 key is invalid (a low-order point)") from None


def _now_ms(clock: Callable[[], float]) -> int:
    return int(clock() * 1000)


def _check_clock(ts: int, now_ms: int, who: str) -> None:
    off = (ts - now_ms) / 1000
    if abs(off) > SKEW:
        direction = "ahead of" if off > 0 else "behind"
        raise HandshakeError(
            f"the {who}'s timestamp is {abs(off):.1f} s {direction} local time "
            f"(at most {SKEW:g} s allowed)"
        )


def _verify_peer(verifier: Verifier, msg: _Message, local: str, who: str) -> VerifiedCredential:
    did = str(msg["did"])
    if did == local:
        raise HandshakeError(f"the {who} presents the local DID {did}")
    try:
        peer = verifier.verify(str(msg["cred"]))
    except IdentityError as exc:
        raise HandshakeError(f"the {who}'s credential does not verify: {exc}") from None
    if peer.subject != did:
        raise HandshakeError(
            f"the {who}'s credential was issued to {peer.subject}, not to the sender {did}"
        )
    return peer


def _printable(text: str) -> str:
    """``text`` with control and other unprintable characters shown as ``?`` (peer input)."""
    return "".join(c if c.isprintable() else "?" for c in text)


def _refused(msg: _Message) -> HandshakeError:
    reason = _printable(str(msg["reason"]))
    return HandshakeError(f"refused by the responder: {reason or 'no reason given'}")


def _session_of(shared: bytes, transcript_hash: bytes) -> tuple[str, bytes, bytes]:
    """(session id, session key, key confirmation) for the complete transcript."""
    key = _hkdf(shared, transcript_hash, _SESSION_INFO)
    confirm = _hkdf(shared, transcript_hash, _CONFIRM_INFO)
    return transcript_hash[:16].hex(), key, confirm


# --- the two roles --------------------------------------------------------------------------


def initiate(
    transport: Transport,
    identity: Identity,
    credential: str,
    verifier: Verifier,
    *,
    purpose: str,
    policy: PeerPolicy | None = None,
    clock: Callable[[], float] = time.time,
) -> SecureSession:
    """Run the initiator's side of the handshake over ``transport``.

    HandshakeError says why it failed: refused by the responder (with its
    reason), a responder whose credential, signature, timestamp or key does
    not check, or one the local ``policy`` refuses. The transport is closed on
    failure.
    """
    why = _check_purpose(purpose)
    if why:
        raise HandshakeError(f"purpose {why}")
    try:
        return _initiate(transport, identity, credential, verifier, purpose, policy, clock)
    except BaseException:
        transport.close()
        raise


def _initiate(
    transport: Transport,
    identity: Identity,
    credential: str,
    verifier: Verifier,
    purpose: str,
    policy: PeerPolicy | None,
    clock: Callable[[], float],
) -> SecureSession:
    ephemeral = X25519PrivateKey.generate()
    hello: _Message = {
        "type": "hello",
        "v": PROTOCOL_VERSION,
        "did": identity.did,
        "nonce": secrets.token_hex(16),
        "ts": _now_ms(clock),
        "purpose": purpose,
        "cred": credential,
        "x25519": b64url(ephemeral.public_key().public_bytes_raw()),
    }
    transport.send(_encode(hello))

    welcome = _parse(transport.recv(), ("welcome", "refuse"))
    if welcome["type"] == "refuse":
        raise _refused(welcome)
    responder = str(welcome["did"])
    _check_clock(int(welcome["ts"]), _now_ms(clock), "responder")
    peer = _verify_peer(verifier, welcome, identity.did, "responder")
    hello_c = _jcs(hello)
    unsigned = {k: v for k, v in welcome.items() if k != "sig"}
    sig = unb64url(str(welcome["sig"]), 64) or b""
    if not verify_signature(
        responder, sig, _signed(b"responder", _transcript_hash(hello_c, _jcs(unsigned)))
    ):
        raise HandshakeError(
            f"the responder's signature does not verify for {responder} "
            "(the transcript was altered in flight, or the key is not the sender's)"
        )
    shared = _shared_secret(ephemeral, str(welcome["x25519"]), "responder")
    if policy is not None:
        reason = policy.refusal(peer)
        if reason is not None:
            raise HandshakeError(f"the responder {responder} is refused by local policy: {reason}")

    welcome_c = _jcs(welcome)
    sig_i = identity.sign(_signed(b"initiator", _transcript_hash(hello_c, welcome_c)))
    finish: _Message = {"type": "finish", "v": PROTOCOL_VERSION, "sig": b64url(sig_i)}
    transport.send(_encode(finish))
    complete = _transcript_hash(hello_c, welcome_c, _jcs(finish))
    session_id, key, confirm = _session_of(shared, complete)

    reply = _parse(transport.recv(), ("accept", "refuse"))
    if reply["type"] == "refuse":
        raise _refused(reply)
    if not hmac.compare_digest(unb64url(str(reply["confirm"]), 32) or b"", confirm):
        raise HandshakeError("the responder's key confirmation does not match this session")
    return SecureSession(session_id, key, identity, peer, purpose, initiator=True)


class Responder:
    """The responder's side: verifies initiators and keeps the HELLO replay cache.

    One Responder serves many connections (``respond`` is thread-safe); its
    replay cache holds initiator nonces for ``2 * SKEW`` seconds, at most
    100 000 of them by default.
    """

    def __init__(
        self,
        identity: Identity,
        credential: str,
        verifier: Verifier,
        *,
        policy: PeerPolicy | None = None,
        replay_cache: ReplayCache | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity = identity
        self.credential = credential
        self.verifier = verifier
        self.policy = policy
        self.replay_cache = (
            replay_cache
            if replay_cache is not None
            else ReplayCache(max_entries=DEFAULT_MAX_ENTRIES, ttl=2 * SKEW)
        )
        self._clock = clock

    def respond(self, transport: Transport) -> SecureSession:
        """Run the responder's side over ``transport``.

        On failure, sends ``refuse`` with the reason (best effort), closes the
        transport and raises HandshakeError with the same reason.
        """
        try:
            return self._respond(transport)
        except HandshakeError as exc:
            refuse: _Message = {
                "type": "refuse",
                "v": PROTOCOL_VERSION,
                "reason": str(exc)[:MAX_REASON],
            }
            with contextlib.suppress(HandshakeError):  # a dead connection cannot hear why
                transport.send(_encode(refuse))
            transport.close()
            raise
        except BaseException:
            transport.close()
            raise

    def _respond(self, transport: Transport) -> SecureSession:
        clock = self._clock
        hello = _parse(transport.recv(), ("hello",))
        initiator = str(hello["did"])
        now = clock()
        _check_clock(int(hello["ts"]), int(now * 1000), "initiator")
        if not self.replay_cache.add(str(hello["nonce"]), now):
            raise HandshakeError("replayed HELLO: its nonce was already seen")
        peer = _verify_peer(self.verifier, hello, self.identity.did, "initiator")
        ephemeral = X25519PrivateKey.generate()
        shared = _shared_secret(ephemeral, str(hello["x25519"]), "initiator")

        welcome: _Message = {
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "did": self.identity.did,
            "nonce": secrets.token_hex(16),
            "ts": _now_ms(clock),
            "cred": self.credential,
            "x25519": b64url(ephemeral.public_key().public_bytes_raw()),
        }
        hello_c = _jcs(hello)
        sig_r = self.identity.sign(_signed(b"responder", _transcript_hash(hello_c, _jcs(welcome))))
        welcome["sig"] = b64url(sig_r)
        welcome_c = _jcs(welcome)
        transport.send(_encode(welcome))

        finish = _parse(transport.recv(), ("finish",))
        sig_i = unb64url(str(finish["sig"]), 64) or b""
        if not verify_signature(
            initiator, sig_i, _signed(b"initiator", _transcript_hash(hello_c, welcome_c))
        ):
            raise HandshakeError(
                f"the initiator's signature does not verify for {initiator} "
                "(a FINISH replayed or spliced from another session, or not the sender's key)"
            )
        if self.policy is not None:
            reason = self.policy.refusal(peer)
            if reason is not None:
                raise HandshakeError(f"the initiator {initiator} is refused by policy: {reason}")

        complete = _transcript_hash(hello_c, welcome_c, _jcs(finish))
        session_id, key, confirm = _session_of(shared, complete)
        accept: _Message = {"type": "accept", "v": PROTOCOL_VERSION, "confirm": b64url(confirm)}
        transport.send(_encode(accept))
        return SecureSession(
            session_id, key, self.identity, peer, str(hello["purpose"]), initiator=False
        )

    def __repr__(self) -> str:
        return f"Responder({self.identity.did})"
