"""Signed trust events and the tier table (docs/identity.md, "Trust").

An event is signed by its attester: Ed25519 over
``b"warden-trust-event/v1\\n" ‖ JCS(every field but sig)``, the signature in
base64url without padding. ``verify_event`` validates the fields and the
signature; what an event does to a score is the store's business.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from typing import Final

import msgspec
import rfc8785

from warden._text import is_utf8
from warden.errors import IdentityError, TrustError
from warden.identity.did import is_did
from warden.identity.keys import Identity, verify_signature

__all__ = [
    "DEFAULT_WEIGHTS",
    "KINDS",
    "MAX_NOTE",
    "MAX_WEIGHT",
    "TIERS",
    "TrustEvent",
    "sign_event",
    "tier_of",
    "verify_event",
]

TIERS: Final[tuple[tuple[int, str], ...]] = (
    (0, "untrusted"),
    (200, "probation"),
    (400, "standard"),
    (600, "trusted"),
    (800, "verified"),
)
"""(lowest score, name) for each tier, in increasing order; the top tier ends at 1000."""

MAX_SCORE: Final = 1000
MAX_WEIGHT: Final = 1000
MAX_NOTE: Final = 1024
KINDS: Final = frozenset({"violation", "success", "attestation"})
DEFAULT_WEIGHTS: Final = {"violation": 100, "success": 10}
"""The weight ``sign_event`` uses when none is given; an attestation has no default."""

_DOMAIN: Final = b"warden-trust-event/v1\n"
_ID: Final = re.compile(r"[0-9a-f]{32}\Z")
_SIG: Final = re.compile(r"[A-Za-z0-9_-]{86}\Z")  # 64 bytes, base64url, no padding
_MAX_TIME: Final = 2**53 - 1  # JCS integers stay exact below this

# One entry per possible score: the hot path indexes instead of searching.
_TIER_BY_SCORE: Final = tuple(
    next(name for low, name in reversed(TIERS) if score >= low) for score in range(MAX_SCORE + 1)
)


def tier_of(score: int) -> str:
    """The tier name of a score in 0-1000 (TrustError for anything else)."""
    if type(score) is not int or not 0 <= score <= MAX_SCORE:
        raise TrustError(f"a trust score is an integer from 0 to {MAX_SCORE}, not `{score!r}`")
    return _TIER_BY_SCORE[score]


class TrustEvent(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One signed report about an agent.

    ``weight`` is 1-1000 for ``violation`` (score - weight) and ``success``
    (score + weight), and -1000 to 1000 but not 0 for ``attestation`` (score +
    weight * the attester's trust / 1000). ``time`` is in milliseconds since
    the epoch; ``id`` is 32 random hex characters and can be recorded once.
    """

    subject: str
    kind: str
    weight: int
    attester: str
    time: int
    id: str
    note: str = ""
    sig: str = ""

    def signed_bytes(self) -> bytes:
        """The exact bytes ``sig`` signs: the domain tag and the JCS of every other field."""
        fields: dict[str, str | int] = {
            "subject": self.subject,
            "kind": self.kind,
            "weight": self.weight,
            "attester": self.attester,
            "time": self.time,
            "id": self.id,
            "note": self.note,
        }
        return _DOMAIN + rfc8785.dumps(fields)


def sign_event(
    identity: Identity,
    subject: str,
    kind: str,
    weight: int | None = None,
    note: str = "",
    now: float | None = None,
) -> TrustEvent:
    """A new event about ``subject``, signed by ``identity`` (the attester).

    ``weight`` defaults to 100 for a violation and 10 for a success; an
    attestation must give one. ``now`` is Unix seconds (default: the current
    time). The fields are checked as ``record`` checks them, so a malformed
    event is never signed.
    """
    if weight is None:
        if kind == "attestation":
            raise TrustError("an attestation needs an explicit weight")
        weight = DEFAULT_WEIGHTS.get(kind, 0)  # an unknown kind is refused by the check below
    when = time.time() if now is None else now
    unsigned = TrustEvent(
        subject=subject,
        kind=kind,
        weight=weight,
        attester=identity.did,
        time=int(when * 1000),
        id=secrets.token_hex(16),
        note=note,
    )
    _check_fields(unsigned)
    sig = base64.urlsafe_b64encode(identity.sign(unsigned.signed_bytes())).rstrip(b"=")
    return msgspec.structs.replace(unsigned, sig=sig.decode("ascii"))


def verify_event(event: object) -> None:
    """Return None when ``event`` is a well-formed TrustEvent signed by its attester.

    Raises TrustError naming the first field that is wrong, or the signature.
    """
    if not isinstance(event, TrustEvent):
        raise TrustError(f"a trust event must be a TrustEvent, not {type(event).__name__}")
    _check_fields(event)
    sig = _decode_sig(event.sig, f"trust event `{event.id}`")
    try:
        good = verify_signature(event.attester, sig, event.signed_bytes())
    except IdentityError as exc:  # already checked by _check_fields; kept fail-closed
        raise TrustError(f"trust event `{event.id}`: {exc}") from None
    if not good:
        raise TrustError(
            f"trust event `{event.id}`: signature does not verify for attester `{event.attester}`"
        )


def _check_fields(event: TrustEvent) -> None:
    if type(event.id) is not str or not _ID.match(event.id):
        raise TrustError(f"trust event id `{event.id!r}` is not 32 lowercase hex characters")
    where = f"trust event `{event.id}`"
    for name in ("subject", "attester"):
        value = getattr(event, name)
        if not is_did(value):
            raise TrustError(f"{where}: {name} `{value!r}` is not an Ed25519 did:key")
    if type(event.kind) is not str or event.kind not in KINDS:
        raise TrustError(
            f"{where}: unknown kind `{event.kind!r}` (violation, success or attestation)"
        )
    weight = event.weight
    if type(weight) is not int:
        raise TrustError(f"{where}: weight must be an integer, not {type(weight).__name__}")
    if event.kind == "attestation":
        if weight == 0 or not -MAX_WEIGHT <= weight <= MAX_WEIGHT:
            raise TrustError(
                f"{where}: an attestation weight is from -{MAX_WEIGHT} to {MAX_WEIGHT} "
                f"and not 0, not `{weight}`"
            )
    elif not 1 <= weight <= MAX_WEIGHT:
        raise TrustError(
            f"{where}: a {event.kind} weight is from 1 to {MAX_WEIGHT}, not `{weight}`"
        )
    if type(event.time) is not int or not 0 <= event.time <= _MAX_TIME:
        raise TrustError(f"{where}: time must be integer milliseconds since the epoch")
    note = event.note
    if type(note) is not str or len(note) > MAX_NOTE or not is_utf8(note):
        raise TrustError(f"{where}: note must be UTF-8 text of at most {MAX_NOTE} characters")
    if type(event.sig) is not str:
        raise TrustError(f"{where}: sig must be a string, not {type(event.sig).__name__}")


def _decode_sig(sig: str, where: str) -> bytes:
    if not sig:
        raise TrustError(f"{where} is not signed")
    if not _SIG.match(sig):
        raise TrustError(f"{where}: signature is not 64 bytes of unpadded base64url")
    try:
        raw = base64.urlsafe_b64decode(sig + "==")
    except (binascii.Error, ValueError):  # the pattern admits only decodable text; fail closed
        raise TrustError(f"{where}: signature is not base64url") from None
    if base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii") != sig:
        raise TrustError(f"{where}: signature is not canonical base64url")
    return raw
