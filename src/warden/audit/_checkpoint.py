"""Signed checkpoints: C2SP tlog-checkpoint text in a C2SP signed note, signed with Ed25519.

Formats follow https://c2sp.org/signed-note and https://c2sp.org/tlog-checkpoint. The key id
is ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``; a verifier key is written as
``<name>+<hex key id>+<base64(0x01 || public key)>`` (the golang.org/x/mod/sumdb/note form
the C2SP ecosystem uses).

``parse_checkpoint`` raises CheckpointError with a one-line reason, and nothing else.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from warden._text import is_utf8
from warden.errors import CheckpointError, ConfigurationError

__all__ = [
    "Checkpoint",
    "NoteSigner",
    "NoteVerifier",
    "generate_key",
    "load_or_create_key",
    "parse_checkpoint",
    "sign_checkpoint",
]

_ED25519 = b"\x01"  # signed-note signature type for Ed25519
_KEY_ID_SIZE = 4
_SIGNATURE_SIZE = 64
_PUBLIC_KEY_SIZE = 32
_ROOT_SIZE = 32
_MAX_SIZE = 2**64 - 1  # tree sizes are uint64 in every checkpoint implementation
# signed-note: verifiers MUST accept at least 16 signatures and SHOULD cap the count.
_MAX_SIGNATURES = 100
_SIG_PREFIX = "\u2014 "  # em dash, space
_SIZE_RE = re.compile(r"0|[1-9][0-9]*", re.ASCII)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str) -> bytes | None:
    """Strict standard base64 (RFC 4648 §4): padded, canonical, nothing else; None if not."""
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    return raw if _b64(raw) == text else None


def _has_control(text: str) -> bool:
    return any(c < " " and c != "\n" for c in text)


def _bad_name(name: object) -> str | None:
    """Why ``name`` cannot be a signed-note key name, or None if it can."""
    if not isinstance(name, str) or not name:
        return "a key name must be a non-empty string"
    if not is_utf8(name) or _has_control(name) or "\n" in name:
        return "a key name must not contain control characters or invalid text"
    if "+" in name or any(c.isspace() for c in name):
        return f"key name `{name}` contains a space or `+`"
    return None


def _key_id(name: str, public_key: Ed25519PublicKey) -> bytes:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode("utf-8") + b"\n" + _ED25519 + raw).digest()[:_KEY_ID_SIZE]


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint body: origin, tree size, root hash and opaque extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError("checkpoint origin must be a non-empty string")
        if isinstance(self.size, bool) or not isinstance(self.size, int):
            raise ValueError("checkpoint size must be an int")
        if not 0 <= self.size <= _MAX_SIZE:
            raise ValueError(f"checkpoint size {self.size} is out of range")
        if not isinstance(self.root, bytes) or len(self.root) != _ROOT_SIZE:
            raise ValueError(f"checkpoint root must be {_ROOT_SIZE} bytes")
        if not isinstance(self.extensions, tuple):
            raise ValueError("checkpoint extensions must be a tuple of strings")
        for line in (self.origin, *self.extensions):
            if not isinstance(line, str) or not line:
                raise ValueError("checkpoint lines must be non-empty strings")
            if "\n" in line or _has_control(line) or not is_utf8(line):
                raise ValueError(f"checkpoint line {line!r} contains control characters")

    def text(self) -> str:
        """The note text that gets signed, including its final newline."""
        lines = [self.origin, str(self.size), _b64(self.root), *self.extensions]
        return "".join(line + "\n" for line in lines)


def _parse_body(text: str) -> Checkpoint:
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise CheckpointError(
            "checkpoint text needs an origin, a size and a root hash",
            expected=">= 3 lines",
            found=len(lines),
        )
    for number, line in enumerate(lines, 1):
        if not line:
            raise CheckpointError(f"checkpoint line {number} is empty", found=number)
    origin, size_text, root_text, *extensions = lines
    if not _SIZE_RE.fullmatch(size_text):
        raise CheckpointError(
            f"checkpoint size `{size_text}` is not a decimal number without leading zeros",
            found=size_text,
        )
    size = int(size_text)
    if size > _MAX_SIZE:
        raise CheckpointError(f"checkpoint size `{size_text}` is too large", found=size_text)
    root = _unb64(root_text)
    if root is None:
        raise CheckpointError(
            f"checkpoint root hash `{root_text}` is not valid base64", found=root_text
        )
    if len(root) != _ROOT_SIZE:
        raise CheckpointError(
            f"checkpoint root hash is {len(root)} bytes, not {_ROOT_SIZE}",
            expected=_ROOT_SIZE,
            found=len(root),
        )
    return Checkpoint(origin, size, root, tuple(extensions))


# --- keys, signers and verifiers -------------------------------------------------------------


class NoteVerifier:
    """An Ed25519 signed-note verifier key: a key name and a public key."""

    __slots__ = ("_key_id", "_name", "_public_key", "_raw")

    def __init__(self, name: str, public_key: Ed25519PublicKey) -> None:
        if (why := _bad_name(name)) is not None:
            raise ValueError(why)
        if not isinstance(public_key, Ed25519PublicKey):
            raise TypeError("a note verifier needs an Ed25519 public key")
        self._name = name
        self._public_key = public_key
        self._raw = public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self._key_id = _key_id(name, public_key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def key_id(self) -> bytes:
        """The 4-byte key id: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
        return self._key_id

    def to_string(self) -> str:
        """The verifier key ``<name>+<8 hex key id>+<base64(0x01 || public key)>``."""
        return f"{self._name}+{self._key_id.hex()}+{_b64(_ED25519 + self._raw)}"

    @classmethod
    def from_string(cls, vkey: str) -> NoteVerifier:
        """Parse a verifier key string; raises ConfigurationError if it is malformed.

        The key id in the string must match the one computed from the name and key.
        """
        if not isinstance(vkey, str):
            raise ConfigurationError("a verifier key must be a string")
        vkey = vkey.strip()
        parts = vkey.split("+", 2)  # names hold no `+`; base64 key material may
        if len(parts) != 3:
            raise ConfigurationError(
                f"verifier key `{vkey}` is not of the form <name>+<key id>+<key>"
            )
        name, id_hex, key_b64 = parts
        if (why := _bad_name(name)) is not None:
            raise ConfigurationError(f"verifier key: {why}")
        if len(id_hex) != 2 * _KEY_ID_SIZE or not all(c in "0123456789abcdef" for c in id_hex):
            raise ConfigurationError(f"verifier key id `{id_hex}` is not 8 lowercase hex digits")
        raw = _unb64(key_b64)
        if raw is None or len(raw) != 1 + _PUBLIC_KEY_SIZE:
            raise ConfigurationError("verifier key material is not base64 of 33 bytes")
        if raw[:1] != _ED25519:
            raise ConfigurationError(f"verifier key type 0x{raw[0]:02x} is not Ed25519 (0x01)")
        verifier = cls(name, Ed25519PublicKey.from_public_bytes(raw[1:]))
        if verifier.key_id.hex() != id_hex:
            raise ConfigurationError(
                f"verifier key id `{id_hex}` does not match its key "
                f"(expected {verifier.key_id.hex()})"
            )
        return verifier

    def verify(self, message: bytes, signature: bytes) -> None:
        """Check an Ed25519 signature over ``message``; raises CheckpointError if it fails."""
        try:
            self._public_key.verify(signature, message)
        except InvalidSignature:
            raise CheckpointError(
                f"signature by key `{self.to_string()}` does not verify", found=_b64(signature)
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NoteVerifier):
            return NotImplemented
        return (self._name, self._raw) == (other._name, other._raw)

    def __hash__(self) -> int:
        return hash((self._name, self._raw))

    def __repr__(self) -> str:
        return f"NoteVerifier({self.to_string()!r})"


class NoteSigner:
    """An Ed25519 signed-note signer: a key name and a private key."""

    __slots__ = ("_name", "_private_key", "_verifier")

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if (why := _bad_name(name)) is not None:
            raise ValueError(why)
        if not isinstance(private_key, Ed25519PrivateKey):
            raise TypeError("a note signer needs an Ed25519 private key")
        self._name = name
        self._private_key = private_key
        self._verifier = NoteVerifier(name, private_key.public_key())

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def verifier(self) -> NoteVerifier:
        return self._verifier

    def sign(self, message: bytes) -> bytes:
        """``key id || Ed25519 signature`` over ``message``, as a signature line carries it."""
        return self.key_id + self._private_key.sign(message)

    def __repr__(self) -> str:
        return f"NoteSigner(verifier={self._verifier.to_string()!r})"


def sign_checkpoint(cp: Checkpoint, signer: NoteSigner) -> str:
    """The signed note for ``cp``: its text, a blank line, and one signature line."""
    text = cp.text()
    signature = _b64(signer.sign(text.encode("utf-8")))
    return f"{text}\n{_SIG_PREFIX}{signer.name} {signature}\n"


def parse_checkpoint(note: str, verifier: NoteVerifier, origin: str | None = None) -> Checkpoint:
    """Verify a signed checkpoint note and return its checkpoint.

    Accepts the note only if a signature line names ``verifier``'s key (name and key id) and
    verifies; signatures by other keys are ignored, but a malformed line or a failing signature
    by this key rejects the whole note. With ``origin``, the checkpoint must come from that log.
    Raises CheckpointError and nothing else.
    """
    if not isinstance(verifier, NoteVerifier):
        raise CheckpointError(
            "checkpoint verifier must be a NoteVerifier", found=type(verifier).__name__
        )
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise CheckpointError("signed note is not valid UTF-8") from None
    if not isinstance(note, str):
        raise CheckpointError("signed note must be text", found=type(note).__name__)
    if not is_utf8(note):
        raise CheckpointError("signed note is not valid UTF-8")
    if _has_control(note):
        raise CheckpointError("signed note contains control characters other than newline")
    if not note.endswith("\n"):
        raise CheckpointError("signed note does not end with a newline")
    split = note.rfind("\n\n")
    if split < 0:
        raise CheckpointError("signed note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    sig_lines = block[:-1].split("\n") if block else []
    if not sig_lines:
        raise CheckpointError("signed note has no signature lines")
    if len(sig_lines) > _MAX_SIGNATURES:
        raise CheckpointError(
            f"signed note has more than {_MAX_SIGNATURES} signatures",
            expected=_MAX_SIGNATURES,
            found=len(sig_lines),
        )
    signatures: list[tuple[str, bytes]] = []
    for number, line in enumerate(sig_lines, 1):
        if not line.startswith(_SIG_PREFIX):
            raise CheckpointError(f"signature line {number} does not start with an em dash")
        fields = line[len(_SIG_PREFIX) :].split(" ")
        if len(fields) != 2 or _bad_name(fields[0]) is not None:
            raise CheckpointError(f"signature line {number} is not `— <key name> <signature>`")
        name, sig_b64 = fields
        sig = _unb64(sig_b64)
        if sig is None:
            raise CheckpointError(f"signature line {number} is not valid base64", found=sig_b64)
        if len(sig) <= _KEY_ID_SIZE:
            raise CheckpointError(f"signature line {number} is too short", found=sig_b64)
        signatures.append((name, sig))

    cp = _parse_body(text)
    if origin is not None and cp.origin != origin:
        raise CheckpointError(
            f"checkpoint origin `{cp.origin}` is not this log's `{origin}`",
            expected=origin,
            found=cp.origin,
        )

    message = text.encode("utf-8")
    verified = False
    for name, sig in signatures:
        if name != verifier.name or sig[:_KEY_ID_SIZE] != verifier.key_id:
            continue  # signed-note: signatures from unknown keys MUST be ignored
        body = sig[_KEY_ID_SIZE:]
        if len(body) != _SIGNATURE_SIZE:
            raise CheckpointError(
                f"signature by key `{verifier.name}` is {len(body)} bytes, not {_SIGNATURE_SIZE}",
                expected=_SIGNATURE_SIZE,
                found=len(body),
            )
        verifier.verify(message, body)
        verified = True
    if not verified:
        raise CheckpointError(
            f"checkpoint has no signature by key `{verifier.name}+{verifier.key_id.hex()}`",
            expected=verifier.to_string(),
            found=[name for name, _ in signatures],
        )
    return cp


# --- key files -------------------------------------------------------------------------------


def generate_key() -> Ed25519PrivateKey:
    """A new random Ed25519 private key."""
    return Ed25519PrivateKey.generate()


def _public_path(path: Path) -> Path:
    return path.with_name(path.stem + ".pub")


def _write_public(path: Path, name: str, key: Ed25519PrivateKey) -> None:
    content = NoteVerifier(name, key.public_key()).to_string() + "\n"
    pub = _public_path(path)
    with contextlib.suppress(OSError):
        if pub.read_text(encoding="utf-8") == content:
            return
    tmp = pub.with_name(f".{pub.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, pub)
        _fsync_dir(pub.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _load_private(path: Path) -> Ed25519PrivateKey:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise ConfigurationError(f"cannot read the audit key `{path}`: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigurationError(f"the audit key `{path}` is not a regular file")
    if os.name == "posix" and st.st_mode & 0o077:
        raise ConfigurationError(
            f"the audit key `{path}` is readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
            "run `chmod 600` on it"
        )
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ConfigurationError(
            f"the audit key `{path}` is not a PEM private key: {exc}"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigurationError(f"the audit key `{path}` is not an Ed25519 key")
    return key


def load_or_create_key(path: Path, name: str) -> Ed25519PrivateKey:
    """Load the Ed25519 key at ``path``, creating it (PKCS#8 PEM, mode 0600) on first use.

    Also writes ``<stem>.pub`` beside it, holding the verifier key string for ``name``.
    Security: creation is atomic and exclusive (the key is written to a 0600 temporary file
    made with O_CREAT|O_EXCL, then hard-linked into place, so a racing process either wins or
    reads a complete file); an existing key whose mode grants any group/other access is
    refused with ConfigurationError.
    """
    if (why := _bad_name(name)) is not None:
        raise ConfigurationError(why)
    path = Path(path)
    if not path.exists():
        _create_private(path)
    key = _load_private(path)
    _write_public(path, name, key)
    return key


def _create_private(path: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    pem = generate_key().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            if hasattr(os, "fchmod"):
                os.fchmod(f.fileno(), 0o600)  # the umask may only have narrowed it; make it exact
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(FileExistsError):  # another process won the race: use theirs
            os.link(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Make a new directory entry durable; best effort, as not every platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
