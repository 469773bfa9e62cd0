"""Signed in-toto statements in DSSE envelopes (docs/supply-chain.md), for BOMs and bundles.

The envelope work (pre-authentication encoding, signing, verifying) is
securesystemslib's; this module fixes the profile warden uses: an in-toto
Statement v1 as payload, Ed25519 keys named by their ``did:key``, one
signature from a trusted signer required.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

import rfc8785
from securesystemslib.dsse import Envelope
from securesystemslib.signer import (  # type: ignore[attr-defined]  # re-exported, no __all__
    CryptoSigner,
    Key,
    SSlibKey,
)

from warden.errors import SupplyChainError
from warden.identity.did import public_key_from_did
from warden.identity.keys import Identity

__all__ = [
    "PAYLOAD_TYPE",
    "STATEMENT_TYPE",
    "Verified",
    "sha256_hex",
    "sign_statement",
    "statement",
    "verify_envelope",
]

PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE: Final = "https://in-toto.io/Statement/v1"
MAX_ENVELOPE: Final = 64 << 20
"""Bytes of an envelope's JSON read at most."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def statement(
    subjects: Sequence[tuple[str, str]], predicate_type: str, predicate: Any
) -> dict[str, Any]:
    """An in-toto Statement v1: ``subjects`` are (name, sha256 hex) pairs."""
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}} for name, digest in subjects],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def _key(did: str) -> SSlibKey:
    return SSlibKey.from_crypto(public_key_from_did(did), keyid=did, scheme="ed25519")


def sign_statement(stmt: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    """The DSSE envelope (its JSON form) of ``stmt``, signed by ``identity``.

    The payload is the statement's canonical JSON (RFC 8785), so that the same
    statement always gives the same payload and digest.
    """
    did = identity.did
    signer = CryptoSigner(identity.private_key, _key(did))
    env = Envelope(rfc8785.dumps(dict(stmt)), PAYLOAD_TYPE, {})
    env.sign(signer)
    out: dict[str, Any] = env.to_dict()
    return out


class Verified:
    """A verified envelope: its ``statement``, the ``signer`` DID, the ``payload`` bytes."""

    __slots__ = ("payload", "signer", "statement")

    def __init__(self, stmt: dict[str, Any], signer: str, payload: bytes) -> None:
        self.statement = stmt
        self.signer = signer
        self.payload = payload

    @property
    def digest(self) -> str:
        """``sha256:`` and the hex digest of the signed payload."""
        return "sha256:" + sha256_hex(self.payload)


def verify_envelope(
    data: bytes | Mapping[str, Any], trusted: Sequence[str], predicate_type: str
) -> Verified:
    """Verify an envelope signed by one of ``trusted`` (did:key) over a statement of the type.

    Raises SupplyChainError with a one-line reason: malformed JSON or envelope,
    a payload type or statement type that is not the expected one, no trusted
    signer given, or no signature by a trusted key.
    """
    if not trusted:
        raise SupplyChainError("no trusted signer is configured: nothing can verify")
    if isinstance(data, (bytes, bytearray)):
        if len(data) > MAX_ENVELOPE:
            raise SupplyChainError(f"the envelope is larger than {MAX_ENVELOPE >> 20} MiB")
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise SupplyChainError(f"the envelope is not JSON ({exc})") from None
    else:
        obj = copy.deepcopy(dict(data))  # Envelope.from_dict consumes what it reads
    if not isinstance(obj, dict):
        raise SupplyChainError("the envelope is not a JSON object")
    try:
        env = Envelope.from_dict(obj)
        if not isinstance(env.payload, bytes) or not isinstance(env.payload_type, str):
            raise TypeError("payload or payloadType of the wrong type")
    except Exception as exc:  # noqa: BLE001 - whatever the library trips on is a malformed envelope
        raise SupplyChainError(f"not a DSSE envelope ({type(exc).__name__}: {exc})") from None
    if env.payload_type != PAYLOAD_TYPE:
        raise SupplyChainError(f"payload type `{env.payload_type}`, not `{PAYLOAD_TYPE}`")
    keys: list[Key] = []
    for did in dict.fromkeys(trusted):
        try:
            keys.append(_key(did))
        except Exception as exc:  # noqa: BLE001 - IdentityError and friends: name the bad DID
            raise SupplyChainError(f"trusted signer `{did}` is not a did:key ({exc})") from None
    try:
        accepted = env.verify(keys, 1)
    except Exception:  # noqa: BLE001 - VerificationError, or a signature the library cannot read
        found = ", ".join(sorted(env.signatures)) or "none"
        raise SupplyChainError(
            f"no valid signature by a trusted signer (signed by: {found})"
        ) from None
    try:
        stmt = json.loads(env.payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise SupplyChainError(f"the signed payload is not JSON ({exc})") from None
    if not isinstance(stmt, dict) or stmt.get("_type") != STATEMENT_TYPE:
        raise SupplyChainError(f"the signed payload is not an in-toto statement ({STATEMENT_TYPE})")
    if stmt.get("predicateType") != predicate_type:
        raise SupplyChainError(
            f"predicate type `{stmt.get('predicateType')}`, not `{predicate_type}`"
        )
    subjects = stmt.get("subject")
    if not isinstance(subjects, list) or not all(
        isinstance(s, dict)
        and isinstance(s.get("name"), str)
        and isinstance(s.get("digest"), dict)
        and isinstance(s["digest"].get("sha256"), str)
        for s in subjects
    ):
        raise SupplyChainError("the statement's `subject` is malformed")
    return Verified(stmt, next(iter(accepted)), env.payload)
