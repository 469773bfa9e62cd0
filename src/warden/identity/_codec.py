"""Strict encodings shared by the handshake and envelopes."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Final

__all__ = ["MAX_SAFE_INT", "b64url", "hex_of", "unb64url"]

MAX_SAFE_INT: Final = 2**53 - 1
_B64URL: Final = re.compile(r"[A-Za-z0-9_-]*\Z")
_HEX: Final = re.compile(r"[0-9a-f]*\Z")


def b64url(data: bytes) -> str:
    """Base64url without padding (RFC 4648 section 5)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64url(text: str, size: int | None = None) -> bytes | None:
    """The bytes ``text`` encodes, or None unless it is canonical unpadded base64url.

    Canonical: alphabet ``A-Z a-z 0-9 - _`` only, no padding, unused trailing
    bits zero, so each byte string has exactly one accepted encoding. With
    ``size``, the decoded length must be exactly that.
    """
    if size is not None and len(text) != (size * 4 + 2) // 3:
        return None
    if not _B64URL.match(text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    if b64url(raw) != text:
        return None
    return raw


def hex_of(text: object, chars: int) -> bool:
    """True when ``text`` is exactly ``chars`` lowercase hex digits."""
    return type(text) is str and len(text) == chars and _HEX.match(text) is not None
