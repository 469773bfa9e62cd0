"""Signed message envelopes inside a handshake session (docs/identity.md, "Envelopes").

Wire form, one JSON object (UTF-8), at most ``max_size`` bytes::

    {"v": 1, "sender": DID, "recipient": DID, "session": 32 hex,
     "seq": int, "nonce": 24 hex, "ts": int ms, "body_digest": "sha256:" + 64 hex,
     "sig": base64url(64 bytes), "body": base64url(body)}

``sig`` is the sender's Ed25519 signature over ``"warden-envelope/v1\\n"`` ‖
JCS(the object without ``sig`` and ``body``); the body is bound through
``body_digest``. Base64url is unpadded and canonical. Every field is
required and no other field is allowed.

Each field of the signed header is ASCII with nothing JSON must escape (DIDs,
hex) or a safe integer, and its keys are ASCII, so msgspec's sorted-key
encoding is byte-identical to RFC 8785 here (tests/identity/test_envelope.py
checks it against ``rfc8785``) at a fraction of the cost.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import msgspec
from cryptography.exceptions import InvalidSignature

from warden.errors import ConfigurationError, EnvelopeError
from warden.identity._codec import MAX_SAFE_INT, b64url, hex_of, unb64url
from warden.identity._replay import ReplayCache
from warden.identity.did import public_key_from_did

if TYPE_CHECKING:
    from warden.identity.handshake import SecureSession

__all__ = [
    "DEFAULT_MAX_AGE",
    "ENVELOPE_VERSION",
    "MAX_ENVELOPE",
    "EnvelopeReader",
    "EnvelopeWriter",
]

ENVELOPE_VERSION: Final = 1
DEFAULT_MAX_AGE: Final = 60.0
DEFAULT_SKEW: Final = 30.0
MAX_ENVELOPE: Final = 1 << 20
DEFAULT_MAX_NONCES: Final = 10_000
_DOMAIN: Final = b"warden-envelope/v1\n"
_ENC: Final = msgspec.json.Encoder(order="sorted")


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    v: int
    sender: str
    recipient: str
    session: str
    seq: int
    nonce: str
    ts: int
    body_digest: str
    sig: str
    body: str


_decode: Final = msgspec.json.Decoder(_Wire).decode


def _signed_bytes(
    sender: str, recipient: str, session: str, seq: int, nonce: str, ts: int, digest: str
) -> bytes:
    header = {
        "v": ENVELOPE_VERSION,
        "sender": sender,
        "recipient": recipient,
        "session": session,
        "seq": seq,
        "nonce": nonce,
        "ts": ts,
        "body_digest": digest,
    }
    return _DOMAIN + _ENC.encode(header)


def _digest(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _show(value: str) -> str:
    """Peer-supplied text for an error: truncated, unprintable characters as ``?``."""
    short = value if len(value) <= 64 else value[:60] + "..."
    return "`" + "".join(c if c.isprintable() else "?" for c in short) + "`"


class EnvelopeWriter:
    """Seals bodies sent from the local side of ``session`` to its peer.

    ``seq`` starts at 0 and goes up by one per envelope. Use one writer per
    session (``session.writer()`` always returns the same one): a second
    writer would start again at 0 and its envelopes would be rejected.
    """

    def __init__(self, session: SecureSession, *, clock: Callable[[], float] = time.time) -> None:
        self._identity = session.local
        self.sender = session.local.did
        self.recipient = session.peer_did
        self.session_id = session.id
        self._clock = clock
        self._seq = 0
        self._lock = threading.Lock()

    @property
    def next_seq(self) -> int:
        return self._seq

    def seal(self, body: bytes) -> bytes:
        """The wire bytes of a signed envelope carrying ``body``."""
        if not isinstance(body, bytes | bytearray | memoryview):
            raise EnvelopeError(f"an envelope body is bytes, not {type(body).__name__}")
        data = bytes(body)
        digest = _digest(data)
        nonce = os.urandom(12).hex()
        with self._lock:
            seq = self._seq
            if seq > MAX_SAFE_INT:
                raise EnvelopeError("the session has sent its last sequence number")
            ts = int(self._clock() * 1000)
            sig = self._identity.sign(
                _signed_bytes(self.sender, self.recipient, self.session_id, seq, nonce, ts, digest)
            )
            self._seq = seq + 1
        return _ENC.encode(
            {
                "v": ENVELOPE_VERSION,
                "sender": self.sender,
                "recipient": self.recipient,
                "session": self.session_id,
                "seq": seq,
                "nonce": nonce,
                "ts": ts,
                "body_digest": digest,
                "sig": b64url(sig),
                "body": b64url(data),
            }
        )

    def __repr__(self) -> str:
        return f"EnvelopeWriter({self.sender} -> {self.recipient}, session {self.session_id})"


class EnvelopeReader:
    """Opens envelopes sent by the peer of ``session`` to the local side.

    An envelope is accepted only when every check passes; only then does the
    expected ``seq`` advance and its nonce enter the cache. The nonce cache
    holds at most ``max_nonces`` entries for ``max_age + skew`` seconds.
    """

    def __init__(
        self,
        session: SecureSession,
        max_age: float = DEFAULT_MAX_AGE,
        clock: Callable[[], float] = time.time,
        *,
        skew: float = DEFAULT_SKEW,
        max_nonces: int = DEFAULT_MAX_NONCES,
        max_size: int = MAX_ENVELOPE,
    ) -> None:
        if not max_age > 0 or not skew >= 0:
            raise ConfigurationError("max_age must be positive and skew not negative")
        self.recipient = session.local.did
        self.sender = session.peer_did
        self.session_id = session.id
        self.expires = session.expires
        self._sender_key = public_key_from_did(self.sender)
        self.max_age = max_age
        self.skew = skew
        self.max_size = max_size
        self._clock = clock
        self._seq = 0
        self._nonces = ReplayCache(max_entries=max_nonces, ttl=max_age + skew)
        self._lock = threading.Lock()

    @property
    def next_seq(self) -> int:
        """The sequence number the next accepted envelope must carry."""
        return self._seq

    @property
    def nonces(self) -> ReplayCache:
        return self._nonces

    def open(self, wire: bytes) -> bytes:
        """The body of a valid envelope; EnvelopeError saying why it was rejected."""
        if not isinstance(wire, bytes | bytearray | memoryview):
            raise EnvelopeError(f"an envelope is bytes, not {type(wire).__name__}")
        if len(wire) > self.max_size:
            raise EnvelopeError(f"envelope of {len(wire)} bytes exceeds {self.max_size} bytes")
        try:
            env = _decode(wire)
        except msgspec.DecodeError as exc:
            raise EnvelopeError(f"malformed envelope: {exc}") from None
        except UnicodeDecodeError:  # msgspec raises it for bad UTF-8 inside a string
            raise EnvelopeError("malformed envelope: not UTF-8") from None
        if env.v != ENVELOPE_VERSION:
            raise EnvelopeError(f"unsupported envelope version {env.v} (expected 1)")
        if env.recipient != self.recipient:
            raise EnvelopeError(
                f"misaddressed: the envelope is for {_show(env.recipient)}, not {self.recipient}"
            )
        if env.sender != self.sender:
            raise EnvelopeError(
                f"wrong sender: {_show(env.sender)} is not the session's peer {self.sender}"
            )
        if env.session != self.session_id:
            raise EnvelopeError(
                f"wrong session: the envelope is for session {_show(env.session)}, "
                f"not {self.session_id}"
            )
        if not 0 <= env.seq <= MAX_SAFE_INT or not 0 <= env.ts <= MAX_SAFE_INT:
            raise EnvelopeError("malformed envelope: `seq` and `ts` must be safe integers >= 0")
        if not hex_of(env.nonce, 24):
            raise EnvelopeError("malformed envelope: `nonce` must be 24 lowercase hex characters")
        digest = env.body_digest
        if not (digest.startswith("sha256:") and hex_of(digest[7:], 64)):
            raise EnvelopeError("malformed envelope: `body_digest` must be `sha256:` + 64 hex")
        sig = unb64url(env.sig, 64)
        if sig is None:
            raise EnvelopeError("malformed envelope: `sig` must be 64 bytes in base64url")
        body = unb64url(env.body)
        if body is None:
            raise EnvelopeError("malformed envelope: `body` is not canonical base64url")
        if _digest(body) != digest:
            raise EnvelopeError("the body does not match `body_digest` (tampered)")
        signed = _signed_bytes(
            env.sender, env.recipient, env.session, env.seq, env.nonce, env.ts, digest
        )
        with self._lock:
            now = self._clock()
            now_ms = now * 1000
            if env.ts > now_ms + self.skew * 1000:
                raise EnvelopeError(
                    f"envelope from the future: ts {env.ts} is more than {self.skew:g} s ahead"
                )
            if now_ms - env.ts > self.max_age * 1000:
                raise EnvelopeError(f"envelope expired: older than {self.max_age:g} s")
            if now >= self.expires + self.skew:
                raise EnvelopeError(
                    f"the session ended: the credential of {self.sender} expired at {self.expires}"
                )
            if env.seq != self._seq:
                what = "replayed" if env.seq < self._seq else "out of order"
                raise EnvelopeError(f"{what}: seq {env.seq}, expected {self._seq}")
            if self._nonces.seen(env.nonce, now):
                raise EnvelopeError(f"replayed: nonce {env.nonce} was already seen")
            try:
                self._sender_key.verify(sig, signed)
            except InvalidSignature:
                raise EnvelopeError(f"bad signature: not signed by {self.sender}") from None
            self._seq += 1
            self._nonces.add(env.nonce, now)
        return body

    def __repr__(self) -> str:
        return (
            f"EnvelopeReader({self.sender} -> {self.recipient}, session {self.session_id}, "
            f"next seq {self._seq})"
        )
