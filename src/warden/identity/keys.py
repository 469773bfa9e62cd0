"""Ed25519 identities and the on-disk key store (docs/identity.md, "Keys and identities").

An ``Identity`` holds a private key and signs; nothing it prints, raises or
exports contains key material. ``KeyStore`` keeps PKCS#8 PEM files, mode 0600,
optionally encrypted with a passphrase, written atomically.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import (
    BestAvailableEncryption,
    Encoding,
    NoEncryption,
    PrivateFormat,
    load_pem_private_key,
)

from warden.errors import IdentityError
from warden.identity.did import did_from_public_key, is_did, public_key_from_did

__all__ = ["Identity", "KeyStore", "default_key_dir", "verify_signature"]

_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
MAX_KEY_FILE: Final = 16 * 1024


class Identity:
    """An agent's (or authority's) Ed25519 key pair and its ``did:key``."""

    __slots__ = ("__key", "did", "public_key")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        if not isinstance(private_key, Ed25519PrivateKey):
            raise IdentityError("an Identity needs an Ed25519 private key")
        self.__key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.did: str = did_from_public_key(self.public_key)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Identity:
        """The identity for a 32-byte RFC 8032 secret key (tests and vectors)."""
        try:
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        except ValueError as exc:
            raise IdentityError(f"bad Ed25519 seed: {exc}") from None

    def sign(self, data: bytes) -> bytes:
        return self.__key.sign(data)

    @property
    def private_key(self) -> Ed25519PrivateKey:
        """The key object, for libraries that sign with it (never serialised by warden)."""
        return self.__key

    def to_pem(self, passphrase: bytes | None = None) -> bytes:
        if passphrase is not None and not passphrase:
            raise IdentityError("an empty passphrase would leave the key unencrypted: give none")
        enc = BestAvailableEncryption(passphrase) if passphrase else NoEncryption()
        return self.__key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, enc)

    def __repr__(self) -> str:
        return f"Identity({self.did})"

    __str__ = __repr__

    def __reduce__(self) -> str:
        raise TypeError("an Identity holds a private key and cannot be pickled")


def verify_signature(did: str, signature: bytes, data: bytes) -> bool:
    """True when ``signature`` is ``did``'s Ed25519 signature of ``data``.

    A malformed DID raises IdentityError; a wrong signature returns False.
    """
    key = public_key_from_did(did)
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def default_key_dir() -> Path:
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "keys"


class KeyStore:
    """Named Ed25519 keys in a directory, one ``NAME.pem`` (PKCS#8, 0600) each."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_key_dir()

    def path(self, name: str) -> Path:
        if type(name) is not str or not _NAME.match(name):
            raise IdentityError(
                f"bad key name {name!r}: use letters, digits, `.`, `_`, `-` (at most 64)"
            )
        return self.dir / f"{name}.pem"

    def exists(self, name: str) -> bool:
        return self.path(name).exists()

    def names(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.pem") if _NAME.match(p.stem))

    def create(self, name: str, passphrase: bytes | None = None) -> Identity:
        """Generate and store a new key; refuses to replace an existing one."""
        ident = Identity.generate()
        self.save(name, ident, passphrase)
        return ident

    def save(self, name: str, ident: Identity, passphrase: bytes | None = None) -> None:
        path = self.path(name)
        try:
            self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise IdentityError(f"{self.dir}: cannot create the key directory: {exc}") from None
        if path.exists():
            raise IdentityError(f"{path}: a key named `{name}` already exists")
        data = ident.to_pem(passphrase)
        fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=f".{name}.", suffix=".tmp")
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.link(tmp, path)  # fails if the name was taken meanwhile: never overwrite
        except FileExistsError:
            raise IdentityError(f"{path}: a key named `{name}` already exists") from None
        except OSError as exc:
            raise IdentityError(f"{path}: cannot write the key: {exc.strerror}") from None
        finally:
            Path(tmp).unlink(missing_ok=True)
        # The DID beside the key, so that an encrypted key can be named without its passphrase.
        with contextlib.suppress(OSError):
            self.dir.joinpath(f"{name}.did").write_text(ident.did + "\n")

    def export_public(self, name: str, passphrase: bytes | None = None) -> str:
        """What may leave the machine about key ``name``: its DID, nothing else."""
        return self.did(name, passphrase)

    def did(self, name: str, passphrase: bytes | None = None) -> str:
        """The DID of key ``name``, from the key itself.

        For an encrypted key given no passphrase, the DID is read from ``NAME.did``,
        written beside the key when it was created.
        """
        if passphrase is not None or not self.is_encrypted(name):
            return self.load(name, passphrase).did
        side = self.path(name).with_suffix(".did")
        with contextlib.suppress(OSError, UnicodeDecodeError):
            text = side.read_text()[:200].strip()
            if is_did(text):
                return text
        return self.load(name, passphrase).did

    def load(self, name: str, passphrase: bytes | None = None) -> Identity:
        path = self.path(name)
        try:
            st = path.stat()
        except FileNotFoundError:
            raise IdentityError(f"{path}: no key named `{name}`") from None
        except OSError as exc:
            raise IdentityError(f"{path}: cannot read the key: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise IdentityError(f"{path}: not a key file")
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise IdentityError(
                f"{path}: key file is accessible by group or others "
                f"(mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`"
            )
        if st.st_size > MAX_KEY_FILE:
            raise IdentityError(f"{path}: not a key file (larger than {MAX_KEY_FILE} bytes)")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise IdentityError(f"{path}: cannot read the key: {exc.strerror}") from None
        try:
            key = load_pem_private_key(data, passphrase)
        except TypeError:
            if passphrase is None:
                raise IdentityError(f"{path}: the key is encrypted; give its passphrase") from None
            raise IdentityError(f"{path}: the key is not encrypted; give no passphrase") from None
        except ValueError:
            raise IdentityError(
                f"{path}: cannot read the key (wrong passphrase or not a PKCS#8 PEM key)"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path}: not an Ed25519 key")
        return Identity(key)

    def load_or_create(self, name: str, passphrase: bytes | None = None) -> Identity:
        try:
            return self.create(name, passphrase)
        except IdentityError:
            if self.exists(name):
                return self.load(name, passphrase)
            raise

    def is_encrypted(self, name: str) -> bool:
        path = self.path(name)
        try:
            with path.open("rb") as fh:
                return b"ENCRYPTED" in fh.read(64)
        except OSError:
            raise IdentityError(f"{path}: no key named `{name}`") from None
