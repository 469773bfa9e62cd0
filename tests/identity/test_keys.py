"""Identities and the key store (docs/identity.md, "Keys and identities")."""

from __future__ import annotations

import base64
import copy
import os
import pickle
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
)

from warden.errors import IdentityError
from warden.identity import Identity, KeyStore, verify_signature
from warden.identity.keys import default_key_dir

SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def secrets_of(ident: Identity) -> list[str]:
    """Every printable form of the identity's private key that must never leak."""
    raw = ident.private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    der = ident.private_key.private_bytes(Encoding.DER, PrivateFormat.PKCS8, NoEncryption())
    pem = ident.to_pem().decode()
    body = "".join(line for line in pem.splitlines() if not line.startswith("-----"))
    return [
        raw.hex(),
        raw.hex().upper(),
        base64.b64encode(raw).decode().rstrip("="),
        base64.urlsafe_b64encode(raw).decode().rstrip("="),
        base64.b64encode(der).decode().rstrip("="),
        body,
        body[:40],
        repr(raw)[2:-1],
    ]


def assert_no_secret(text: str, ident: Identity) -> None:
    for secret in secrets_of(ident):
        assert secret not in text


@pytest.fixture
def store(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path / "keys")


# --- Identity ----------------------------------------------------------------------------------


def test_identity_signs_and_verifies() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    assert len(sig) == 64
    assert verify_signature(ident.did, sig, b"hello")
    assert not verify_signature(ident.did, sig, b"hellO")


def test_from_seed_wrong_length_is_an_identity_error_without_the_seed() -> None:
    for n in (0, 31, 33, 64):
        seed = bytes(range(1, n + 1))
        with pytest.raises(IdentityError) as info:
            Identity.from_seed(seed)
        if seed:
            assert seed.hex() not in str(info.value)
            assert repr(seed)[2:-1] not in str(info.value)


def test_identity_needs_an_ed25519_private_key() -> None:
    with pytest.raises(IdentityError):
        Identity(ec.generate_private_key(ec.SECP256R1()))  # type: ignore[arg-type]
    with pytest.raises(IdentityError):
        Identity(SEED)  # type: ignore[arg-type]


def test_repr_and_str_name_only_the_did() -> None:
    ident = Identity.from_seed(SEED)
    for text in (repr(ident), str(ident), f"{ident}", f"{ident!r}", repr([ident])):
        assert ident.did in text
        assert_no_secret(text, ident)
    assert repr(ident) == f"Identity({ident.did})"
    assert str(ident) == repr(ident)


def test_identity_has_no_instance_dict_exposing_the_key() -> None:
    ident = Identity.from_seed(SEED)
    assert not hasattr(ident, "__dict__")
    with pytest.raises(AttributeError):
        ident.new_attribute = 1  # type: ignore[attr-defined]


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_identity_cannot_be_pickled(protocol: int) -> None:
    ident = Identity.from_seed(SEED)
    with pytest.raises(TypeError) as info:
        pickle.dumps(ident, protocol=protocol)
    assert_no_secret(str(info.value), ident)


def test_identity_cannot_be_copied_through_reduce() -> None:
    ident = Identity.from_seed(SEED)
    with pytest.raises(TypeError):
        copy.deepcopy(ident)
    with pytest.raises(TypeError):
        pickle.dumps({"nested": [ident]})


def test_to_pem_is_pkcs8() -> None:
    ident = Identity.from_seed(SEED)
    pem = ident.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----\n")
    enc = ident.to_pem(b"pass")
    assert enc.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")


# --- KeyStore: create and load -----------------------------------------------------------------


def test_default_directory_is_warden_home_keys() -> None:
    _warden_home = Path(os.environ["WARDEN_HOME"])
    assert default_key_dir() == _warden_home / "keys"
    ks = KeyStore()
    assert ks.dir == _warden_home / "keys"
    ident = ks.create("agent")
    assert (_warden_home / "keys" / "agent.pem").is_file()
    assert ks.load("agent").did == ident.did


def test_create_load_round_trip(store: KeyStore) -> None:
    ident = store.create("agent")
    loaded = store.load("agent")
    assert loaded.did == ident.did
    assert loaded.sign(b"m") == ident.sign(b"m")  # Ed25519 is deterministic: the same key
    assert store.did("agent") == ident.did
    assert store.exists("agent")
    assert not store.exists("other")
    assert store.names() == ["agent"]
    assert not store.is_encrypted("agent")


def test_key_file_is_pkcs8_pem_0600_in_a_0700_directory(store: KeyStore) -> None:
    store.create("agent")
    path = store.dir / "agent.pem"
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    assert mode(path) == 0o600
    assert mode(store.dir) == 0o700


def test_key_file_mode_does_not_depend_on_umask(store: KeyStore) -> None:
    old = os.umask(0)
    try:
        store.create("agent")
    finally:
        os.umask(old)
    assert mode(store.dir / "agent.pem") == 0o600


def test_save_an_existing_identity(store: KeyStore) -> None:
    ident = Identity.from_seed(SEED)
    store.save("vector", ident)
    assert store.load("vector").did == ident.did


def test_create_refuses_to_overwrite(store: KeyStore) -> None:
    first = store.create("agent")
    before = (store.dir / "agent.pem").read_bytes()
    with pytest.raises(IdentityError, match="already exists"):
        store.create("agent")
    with pytest.raises(IdentityError, match="already exists"):
        store.save("agent", Identity.generate())
    assert (store.dir / "agent.pem").read_bytes() == before
    assert store.load("agent").did == first.did


def test_load_or_create(store: KeyStore) -> None:
    a = store.load_or_create("warden")
    b = store.load_or_create("warden")
    assert a.did == b.did


def test_load_missing_key_is_an_identity_error(store: KeyStore) -> None:
    with pytest.raises(IdentityError, match="no key named"):
        store.load("ghost")


@pytest.mark.parametrize("bad_mode", [0o640, 0o604, 0o644, 0o660, 0o666, 0o620])
def test_load_refuses_a_key_file_accessible_by_group_or_others(
    store: KeyStore, bad_mode: int
) -> None:
    ident = store.create("agent")
    path = store.dir / "agent.pem"
    path.chmod(bad_mode)
    with pytest.raises(IdentityError, match="group or others") as info:
        store.load("agent")
    assert "chmod 600" in str(info.value)
    assert_no_secret(str(info.value), ident)
    path.chmod(0o600)
    assert store.load("agent").did == ident.did


def test_load_refuses_a_non_ed25519_key(store: KeyStore) -> None:
    store.dir.mkdir(mode=0o700, parents=True)
    path = store.dir / "ec.pem"
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not an Ed25519 key"):
        store.load("ec")


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"not a key\n",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        bytes(range(256)),
    ],
    ids=["empty", "text", "bad pem", "binary"],
)
def test_load_garbage_is_an_identity_error(store: KeyStore, content: bytes) -> None:
    store.dir.mkdir(mode=0o700, parents=True)
    path = store.dir / "junk.pem"
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="cannot read the key"):
        store.load("junk")


def test_load_refuses_an_oversized_file(store: KeyStore) -> None:
    store.dir.mkdir(mode=0o700, parents=True)
    path = store.dir / "big.pem"
    path.write_bytes(b"A" * (17 * 1024))
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="larger than"):
        store.load("big")


@pytest.mark.parametrize("case", ["pem is a directory", "key dir is a file"])
def test_unreadable_key_path_is_an_identity_error(tmp_path: Path, case: str) -> None:
    if case == "pem is a directory":
        store = KeyStore(tmp_path / "keys")
        (store.dir / "odd.pem").mkdir(mode=0o700, parents=True)
    else:
        (tmp_path / "keys").write_text("not a directory")
        store = KeyStore(tmp_path / "keys")
    with pytest.raises(IdentityError):
        store.load("odd")


# --- names --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "../x",
        "..",
        ".",
        "",
        "a/b",
        "/abs",
        ".hidden",
        "-dash",
        "_under",
        "a b",
        "a\n",
        "a\x00",
        "k" * 65,
        "caf\u00e9",
        None,
        b"agent",
        7,
    ],
    ids=repr,
)
def test_bad_key_names_are_refused(store: KeyStore, name: object) -> None:
    for op in (store.create, store.load, store.exists, store.path, store.did):
        with pytest.raises(IdentityError, match="bad key name"):
            op(name)  # type: ignore[operator]
    assert not store.dir.exists() or not any(store.dir.iterdir())


@pytest.mark.parametrize("name", ["a", "A.b_c-1", "k" * 64, "0", "agent.v2"])
def test_good_key_names_are_accepted(store: KeyStore, name: str) -> None:
    ident = store.create(name)
    assert store.load(name).did == ident.did
    assert name in store.names()
    assert store.path(name).parent == store.dir


# --- passphrases --------------------------------------------------------------------------------


def test_passphrase_encrypts_the_key(store: KeyStore) -> None:
    ident = store.create("secret", b"correct horse")
    data = (store.dir / "secret.pem").read_bytes()
    assert data.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert b"BEGIN PRIVATE KEY" not in data
    assert store.is_encrypted("secret")
    assert store.load("secret", b"correct horse").did == ident.did


def test_encrypted_key_without_passphrase_is_refused_clearly(store: KeyStore) -> None:
    ident = store.create("secret", b"correct horse")
    with pytest.raises(IdentityError, match="encrypted; give its passphrase") as info:
        store.load("secret")
    assert_no_secret(str(info.value), ident)


def test_encrypted_key_with_wrong_passphrase_is_refused_clearly(store: KeyStore) -> None:
    ident = store.create("secret", b"correct horse")
    with pytest.raises(IdentityError, match="wrong passphrase") as info:
        store.load("secret", b"battery staple")
    msg = str(info.value)
    assert "correct horse" not in msg
    assert "battery staple" not in msg
    assert_no_secret(msg, ident)


def test_plain_key_with_a_passphrase_is_refused_clearly(store: KeyStore) -> None:
    store.create("plain")
    with pytest.raises(IdentityError, match="not encrypted"):
        store.load("plain", b"whatever")


def test_empty_passphrase_is_consistent(store: KeyStore) -> None:
    try:
        ident = store.create("empty", b"")
    except IdentityError:
        return  # refusing an empty passphrase up front is a consistent answer
    assert store.load("empty", b"").did == ident.did


def test_did_of_encrypted_key_without_passphrase_uses_the_sidecar(store: KeyStore) -> None:
    ident = store.create("secret", b"pw")
    sidecar = store.dir / "secret.did"
    assert sidecar.read_text().strip() == ident.did
    assert store.did("secret") == ident.did
    assert store.did("secret", b"pw") == ident.did
    with pytest.raises(IdentityError):
        store.did("secret", b"wrong")


def test_did_of_encrypted_key_without_sidecar_needs_the_passphrase(store: KeyStore) -> None:
    ident = store.create("secret", b"pw")
    (store.dir / "secret.did").unlink()
    with pytest.raises(IdentityError, match="passphrase"):
        store.did("secret")
    assert store.did("secret", b"pw") == ident.did


def test_did_of_encrypted_key_ignores_a_malformed_sidecar(store: KeyStore) -> None:
    store.create("secret", b"pw")
    (store.dir / "secret.did").write_text("not a did\n")
    with pytest.raises(IdentityError, match="passphrase"):
        store.did("secret")


def test_did_of_plain_key_comes_from_the_key_not_the_sidecar(store: KeyStore) -> None:
    ident = store.create("plain")
    (store.dir / "plain.did").write_text(Identity.generate().did + "\n")
    assert store.did("plain") == ident.did


def test_export_public_gives_the_did_only(store: KeyStore) -> None:
    ident = store.create("agent")
    exported = store.export_public("agent")  # type: ignore[attr-defined]
    assert exported == ident.did
    assert_no_secret(str(exported), ident)


# --- atomic writes ------------------------------------------------------------------------------


def test_create_leaves_no_temporary_files(store: KeyStore) -> None:
    store.create("a")
    store.create("b", b"pw")
    with pytest.raises(IdentityError):
        store.create("a")
    assert sorted(p.name for p in store.dir.iterdir()) == ["a.did", "a.pem", "b.did", "b.pem"]


def test_failed_write_leaves_neither_key_nor_temporary_file(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken_link(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "link", broken_link)
    with pytest.raises(IdentityError, match="cannot write the key"):
        store.create("agent")
    assert list(store.dir.iterdir()) == []
    assert not store.exists("agent")


def test_key_file_appears_complete_or_not_at_all(
    store: KeyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At the moment the final name appears, the file it names is already complete."""
    seen: list[bytes] = []
    real_link = os.link

    def spying_link(src: str, dst: str) -> None:
        seen.append(Path(src).read_bytes())
        real_link(src, dst)

    monkeypatch.setattr(os, "link", spying_link)
    ident = store.create("agent")
    assert seen == [(store.dir / "agent.pem").read_bytes()]
    assert seen[0].rstrip().endswith(b"-----END PRIVATE KEY-----")
    assert store.load("agent").did == ident.did


# --- no key material in errors -------------------------------------------------------------------


def test_no_error_message_carries_key_material(store: KeyStore) -> None:
    ident = Identity.from_seed(SEED)
    store.save("plain", ident)
    store.save("enc", ident, b"pw")
    messages: list[str] = []
    attempts = [
        lambda: store.load("enc"),
        lambda: store.load("enc", b"bad"),
        lambda: store.load("plain", b"pw"),
        lambda: store.save("plain", ident),
        lambda: store.create("enc"),
    ]
    for attempt in attempts:
        with pytest.raises(IdentityError) as info:
            attempt()
        messages.append(str(info.value))
        assert info.value.__cause__ is None
    (store.dir / "plain.pem").chmod(0o644)
    with pytest.raises(IdentityError) as info:
        store.load("plain")
    messages.append(str(info.value))
    for msg in messages:
        assert_no_secret(msg, ident)
