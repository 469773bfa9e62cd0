"""W3C ``did:key`` identifiers for Ed25519 keys (docs/identity.md, "Keys and identities").

``did:key:z`` + base58btc(0xed 0x01 ‖ 32-byte public key). The base58btc codec is
the Bitcoin alphabet, big-endian, one leading ``1`` per leading zero byte.
"""

from __future__ import annotations

from typing import Final

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from warden.errors import IdentityError

__all__ = ["MAX_DID_LENGTH", "did_from_public_key", "is_did", "public_key_from_did"]

MAX_DID_LENGTH: Final = 128
_PREFIX: Final = "did:key:z"
_ED25519_PUB: Final = b"\xed\x01"
_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}


def b58encode(data: bytes) -> str:
    n = int.from_bytes(data, "big")
    out = []
    while n:
        n, r = divmod(n, 58)
        out.append(_ALPHABET[r])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def b58decode(text: str) -> bytes:
    n = 0
    for pos, c in enumerate(text):
        digit = _INDEX.get(c)
        if digit is None:
            raise IdentityError(f"character {c!r} at {pos} is not base58btc")
        n = n * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def did_from_public_key(key: Ed25519PublicKey | bytes) -> str:
    """The ``did:key`` of an Ed25519 public key (or its 32 raw bytes)."""
    raw = key if isinstance(key, bytes) else key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    if len(raw) != 32:
        raise IdentityError(f"an Ed25519 public key is 32 bytes, not {len(raw)}")
    return _PREFIX + b58encode(_ED25519_PUB + raw)


_cache: dict[str, Ed25519PublicKey] = {}


def public_key_from_did(did: object) -> Ed25519PublicKey:
    """The public key a ``did:key`` names; IdentityError saying why when it is malformed."""
    if type(did) is str:
        cached = _cache.get(did)
        if cached is not None:
            return cached
    key = _parse(did)
    if len(_cache) >= 4096:
        _cache.clear()
    _cache[did] = key  # type: ignore[index]  # _parse accepted it: a str
    return key


def is_did(did: object) -> bool:
    """True when ``did`` is a well-formed Ed25519 ``did:key``."""
    try:
        public_key_from_did(did)
    except IdentityError:
        return False
    return True


def _parse(did: object) -> Ed25519PublicKey:
    if type(did) is not str:
        raise IdentityError(f"a DID must be a string, not {type(did).__name__}")
    if len(did) > MAX_DID_LENGTH:
        raise IdentityError(f"malformed DID: longer than {MAX_DID_LENGTH} characters")
    if not did.startswith("did:key:"):
        raise IdentityError(f"malformed DID {_show(did)}: not a did:key")
    if not did.startswith(_PREFIX):
        raise IdentityError(f"malformed DID {_show(did)}: multibase must be `z` (base58btc)")
    if "#" in did or "?" in did or "/" in did:
        raise IdentityError(f"malformed DID {_show(did)}: a DID URL, not a DID")
    try:
        raw = b58decode(did[len(_PREFIX) :])
    except IdentityError as exc:
        raise IdentityError(f"malformed DID {_show(did)}: {exc}") from None
    if raw[:2] != _ED25519_PUB:
        raise IdentityError(f"malformed DID {_show(did)}: not an Ed25519 key (multicodec 0xed01)")
    if len(raw) != 34:
        raise IdentityError(
            f"malformed DID {_show(did)}: an Ed25519 key is 32 bytes, not {len(raw) - 2}"
        )
    try:
        return Ed25519PublicKey.from_public_bytes(raw[2:])
    except ValueError as exc:
        raise IdentityError(f"malformed DID {_show(did)}: {exc}") from None


def _show(did: str) -> str:
    return repr(did if len(did) <= 64 else did[:60] + "...")
