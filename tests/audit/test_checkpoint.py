"""Signed checkpoints: Ed25519 known answers, the signed-note format, rejections, key files.

Vector sources:
- RFC 8032 §7.1 TEST 1 (Ed25519, empty message).
- golang.org/x/mod `sumdb/note/note_test.go` and `note.go` (repository golang/mod): the
  PeterNeumann / EnochRoot verifier keys, the PeterNeumann signer key and the note it signs.
- A real sum.golang.org checkpoint, from transparency-dev/trillian-tessera
  `internal/parse/parse_test.go` (BenchmarkCheckpointUnsafe; the final newline, cut off there,
  is restored), verified with the sum.golang.org key from golang/go
  `src/cmd/go/internal/modfetch/key.go`.
The C2SP signed-note and tlog-checkpoint specs' examples publish no public key, so they cannot
be verified; they are used as format examples only.
"""

from __future__ import annotations

import base64
import hashlib
import os
import stat
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.audit import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_key,
    load_or_create_key,
    parse_checkpoint,
    sign_checkpoint,
)
from warden.errors import CheckpointError, ConfigurationError

EM = "\u2014"

# --- RFC 8032 ----------------------------------------------------------------------------------


def test_rfc8032_test_1_pins_the_primitive() -> None:
    secret = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    public = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
    signature = bytes.fromhex(
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    )
    key = Ed25519PrivateKey.from_private_bytes(secret)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == public
    assert key.sign(b"") == signature
    Ed25519PublicKey.from_public_bytes(public).verify(signature, b"")


# --- the Go signed-note vectors ----------------------------------------------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY_MATERIAL = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"  # 0x01 || seed
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM="
)
SUMDB_VKEY = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8"
SUMDB_NOTE = (
    "go.sum database tree\n31700353\nqINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=\n\n"
    f"{EM} sum.golang.org Az3grnmrIUEDFqHzAElIQCPNoRFRAAdFo47fooyWKMHb89k11GJh5zHIfNCOBmwn"
    "/C3YI8oW9/C8DJ87F61QqspBYwM=\n"
)


def peter_signer() -> NoteSigner:
    seed = base64.b64decode(PETER_SKEY_MATERIAL)[1:]
    return NoteSigner("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed))


def test_verifier_key_strings_round_trip_and_key_ids_match_go() -> None:
    for vkey, key_id in [
        (PETER_VKEY, "c74f20a3"),
        (ENOCH_VKEY, "af0cfe78"),
        (SUMDB_VKEY, "033de0ae"),  # key material with `+` in it
    ]:
        verifier = NoteVerifier.from_string(vkey)
        assert verifier.key_id.hex() == key_id
        assert verifier.to_string() == vkey
        assert NoteVerifier.from_string(vkey + "\n") == verifier  # as read from a .pub file


def test_key_id_is_computed_as_the_spec_says() -> None:
    key = generate_key()
    name = "warden/0123456789abcdef"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    want = hashlib.sha256(name.encode() + b"\x0a" + b"\x01" + raw).digest()[:4]
    verifier = NoteVerifier(name, key.public_key())
    assert verifier.key_id == want
    assert len(verifier.key_id) == 4
    assert NoteSigner(name, key).key_id == want
    material = base64.b64encode(b"\x01" + raw).decode()
    assert verifier.to_string() == f"{name}+{want.hex()}+{material}"


def test_signer_reproduces_the_go_signature() -> None:
    signer = peter_signer()
    assert signer.verifier == NoteVerifier.from_string(PETER_VKEY)
    sig = signer.sign(PETER_TEXT.encode())
    assert base64.b64encode(sig).decode() == PETER_SIG
    NoteVerifier.from_string(PETER_VKEY).verify(PETER_TEXT.encode(), sig[4:])
    with pytest.raises(CheckpointError):
        NoteVerifier.from_string(ENOCH_VKEY).verify(PETER_TEXT.encode(), sig[4:])


@pytest.mark.parametrize(
    "vkey",
    [
        PETER_VKEY[:-1],
        PETER_VKEY + "A",
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # not lowercase
        "PeterNeuman+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # other name
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x65
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "",
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(ConfigurationError):
        NoteVerifier.from_string(vkey)


def test_a_real_sumdb_checkpoint_verifies() -> None:
    cp = parse_checkpoint(
        SUMDB_NOTE, NoteVerifier.from_string(SUMDB_VKEY), origin="go.sum database tree"
    )
    assert cp.origin == "go.sum database tree"
    assert cp.size == 31700353
    assert cp.root == base64.b64decode("qINS1GRFhWHwdkUeqLEoP4yEMkTBBzxBkGwGQlVlVcs=")
    assert cp.extensions == ()
    with pytest.raises(CheckpointError):
        parse_checkpoint(SUMDB_NOTE.replace("31700353", "31700354"), cp_verifier())


def cp_verifier() -> NoteVerifier:
    return NoteVerifier.from_string(SUMDB_VKEY)


# --- round trip --------------------------------------------------------------------------------

ORIGIN = "warden/0123456789abcdef"
ROOT = hashlib.sha256(b"a root").digest()
KEY = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"test key").digest())
SIGNER = NoteSigner(ORIGIN, KEY)
VERIFIER = SIGNER.verifier
CP = Checkpoint(ORIGIN, 1234, ROOT, ("time 2026-11-25T23:51:13.123456Z",))
NOTE = sign_checkpoint(CP, SIGNER)


def test_checkpoint_text_is_the_tlog_checkpoint_body() -> None:
    b64 = base64.b64encode(ROOT).decode()
    assert CP.text() == f"{ORIGIN}\n1234\n{b64}\ntime 2026-11-25T23:51:13.123456Z\n"
    assert Checkpoint(ORIGIN, 0, ROOT).text() == f"{ORIGIN}\n0\n{b64}\n"


def test_signed_note_layout() -> None:
    text, sigs = NOTE.split("\n\n")
    assert text + "\n" == CP.text()
    assert sigs.endswith("\n")
    prefix, name, sig = sigs[:-1].split(" ")
    assert (prefix, name) == (EM, ORIGIN)
    raw = base64.b64decode(sig)
    assert raw[:4] == VERIFIER.key_id
    VERIFIER.public_key.verify(raw[4:], CP.text().encode())  # covers the final newline


def test_round_trip() -> None:
    assert parse_checkpoint(NOTE, VERIFIER) == CP
    assert parse_checkpoint(NOTE, VERIFIER, origin=ORIGIN) == CP
    assert parse_checkpoint(NOTE.encode(), VERIFIER) == CP  # type: ignore[arg-type]
    empty = Checkpoint(ORIGIN, 0, hashlib.sha256(b"").digest())
    assert parse_checkpoint(sign_checkpoint(empty, SIGNER), VERIFIER) == empty


@pytest.mark.parametrize(
    "bad",
    [
        {"origin": ""},
        {"origin": "a\nb"},
        {"size": -1},
        {"size": 2**64},
        {"size": True},
        {"root": b"\x00" * 31},
        {"extensions": ("",)},
        {"extensions": ("a\tb",)},
        {"extensions": ["time x"]},
    ],
)
def test_checkpoint_values_are_validated(bad: dict[str, object]) -> None:
    fields: dict[str, object] = {"origin": ORIGIN, "size": 1, "root": ROOT, "extensions": ()}
    fields.update(bad)
    with pytest.raises(ValueError, match="checkpoint"):
        Checkpoint(**fields)  # type: ignore[arg-type]


# --- rejections --------------------------------------------------------------------------------


def _sig_line(signer: NoteSigner, text: str) -> str:
    return f"{EM} {signer.name} {base64.b64encode(signer.sign(text.encode())).decode()}\n"


def _note(text: str, *signers: NoteSigner) -> str:
    return text + "\n" + "".join(_sig_line(s, text) for s in signers)


OTHER_KEY = generate_key()
SAME_NAME_OTHER_KEY = NoteSigner(ORIGIN, OTHER_KEY)
OTHER_NAME = NoteSigner("warden/fedcba9876543210", OTHER_KEY)
B64_ROOT = base64.b64encode(ROOT).decode()


def _reject(note: str, match: str, origin: str | None = None) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        parse_checkpoint(note, VERIFIER, origin=origin)
    assert "\n" not in str(info.value)
    return info.value


def test_rejects_a_note_with_no_trusted_signature() -> None:
    _reject(_note(CP.text(), OTHER_NAME), "no signature by key")


def test_rejects_a_signature_by_another_key_with_the_same_name() -> None:
    _reject(_note(CP.text(), SAME_NAME_OTHER_KEY), "no signature by key")


def test_rejects_a_bad_signature_by_the_trusted_key() -> None:
    raw = bytearray(SIGNER.sign(CP.text().encode()))
    raw[10] ^= 1
    note = CP.text() + f"\n{EM} {ORIGIN} {base64.b64encode(bytes(raw)).decode()}\n"
    _reject(note, "does not verify")


def test_rejects_a_changed_body() -> None:
    _reject(NOTE.replace("\n1234\n", "\n1235\n"), "does not verify")
    _reject(NOTE.replace("time 2026", "time 2027"), "does not verify")


def test_rejects_a_colliding_key_id_with_a_different_key() -> None:
    # Same name and key id as the trusted key, but signed by another key: must fail, not skip.
    forged = OTHER_KEY.sign(CP.text().encode())
    sig = base64.b64encode(VERIFIER.key_id + forged).decode()
    _reject(CP.text() + f"\n{EM} {ORIGIN} {sig}\n", "does not verify")


def test_rejects_a_wrong_origin() -> None:
    err = _reject(NOTE, "origin", origin="warden/ffffffffffffffff")
    assert (err.expected, err.found) == ("warden/ffffffffffffffff", ORIGIN)


@pytest.mark.parametrize(
    ("note", "match"),
    [
        (NOTE.replace(f"{EM} {ORIGIN} ", f"{EM} {ORIGIN} !"), "base64"),
        (NOTE[:-3] + "=\n", "base64"),  # non-canonical padding
        (NOTE.replace(f"{EM} {ORIGIN} ", f"{EM} {ORIGIN} AAAA"), "no signature"),  # other key id
        (NOTE.replace(B64_ROOT, B64_ROOT[:-1]), "base64"),
        (NOTE.replace(B64_ROOT, B64_ROOT.replace("=", "")), "base64"),
        (NOTE.replace("\n1234\n", "\n\t1234\n"), "control"),
        (NOTE.replace("\n1234\n", "\n1234\r\n"), "control"),
        (NOTE.replace(ORIGIN + "\n", ORIGIN + "\x00\n", 1), "control"),
        (NOTE.replace("\n1234\n", "\n\n1234\n"), "empty"),
        (NOTE.replace(f"\n\n{EM}", f"\n\n\n{EM}"), "empty"),
        ("\n" + NOTE, "empty"),
        (NOTE.replace("\n1234\n", "\n01234\n"), "leading zeros"),
        (NOTE.replace("\n1234\n", "\n-1234\n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n+1234\n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n0x4d2\n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n1e3\n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n 1234\n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n1234 \n"), "decimal"),
        (NOTE.replace("\n1234\n", "\n\uff11234\n"), "decimal"),  # fullwidth digit
        (NOTE.replace("\n1234\n", "\n1_234\n"), "decimal"),
        (NOTE.replace("\n1234\n", f"\n{2**64}\n"), "too large"),
        (NOTE[:-1], "newline"),
        (CP.text(), "blank line"),
        (CP.text() + "\n", "no signature lines"),
        (NOTE.replace(f"{EM} ", "- "), "em dash"),
        (NOTE.replace(f"{EM} {ORIGIN}", f"{EM} bad name"), "key name"),
        (NOTE.replace(f"{EM} {ORIGIN}", f"{EM} "), "key name"),
        (NOTE + "Unexpected line.\n", "em dash"),
        (NOTE.replace("time", "ti\ud800me"), "UTF-8"),
    ],
)
def test_rejects_malformed_notes(note: str, match: str) -> None:
    _reject(note, match)


@pytest.mark.parametrize("size", [31, 33, 0])
def test_rejects_a_root_that_is_not_32_bytes(size: int) -> None:
    root = base64.b64encode(b"\x07" * size).decode()
    text = f"{ORIGIN}\n5\n{root}\n"
    _reject(_note(text, SIGNER), "32|base64|empty")


def test_rejects_too_few_lines() -> None:
    _reject(_note(f"{ORIGIN}\n5\n", SIGNER), "origin, a size and a root")


def test_multiple_signatures() -> None:
    text = CP.text()
    # Unknown keys are ignored, wherever the trusted signature sits.
    assert parse_checkpoint(_note(text, OTHER_NAME, SIGNER), VERIFIER) == CP
    assert parse_checkpoint(_note(text, SIGNER, SAME_NAME_OTHER_KEY), VERIFIER) == CP
    assert parse_checkpoint(_note(text, SIGNER, SIGNER), VERIFIER) == CP
    # An unknown signature that is not even valid for its own key is still ignored.
    junk = f"{EM} someone.else/log {base64.b64encode(b'0123' + bytes(64)).decode()}\n"
    assert parse_checkpoint(_note(text, SIGNER) + junk, VERIFIER) == CP
    # A failing signature by the trusted key rejects the note even beside a good one.
    raw = bytearray(SIGNER.sign(text.encode()))
    raw[-1] ^= 1
    bad = f"{EM} {ORIGIN} {base64.b64encode(bytes(raw)).decode()}\n"
    _reject(_note(text, SIGNER) + bad, "does not verify")
    # A malformed line rejects the note too.
    _reject(_note(text, SIGNER) + f"{EM} {ORIGIN} not*base64\n", "base64")
    # At most 100 signatures.
    many = _note(text) + junk * 100 + _sig_line(SIGNER, text)
    _reject(many, "more than 100")
    assert parse_checkpoint(_note(text) + junk * 15 + _sig_line(SIGNER, text), VERIFIER) == CP


def test_rejects_non_text_and_wrong_verifier_type() -> None:
    with pytest.raises(CheckpointError):
        parse_checkpoint(None, VERIFIER)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError):
        parse_checkpoint(b"\xff" + NOTE.encode(), VERIFIER)  # type: ignore[arg-type]
    with pytest.raises(CheckpointError):
        parse_checkpoint(NOTE, PETER_VKEY)  # type: ignore[arg-type]


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_any_edit_of_a_signed_note_is_rejected_or_harmless(data: st.DataObject) -> None:
    note = NOTE
    pos = data.draw(st.integers(min_value=0, max_value=len(note)))
    how = data.draw(st.sampled_from(["insert", "delete", "replace"]))
    char = data.draw(st.sampled_from(["\n", " ", "+", "=", "A", "0", "\t", EM, "\x7f", "é"]))
    if how == "insert":
        edited = note[:pos] + char + note[pos:]
    elif how == "delete":
        edited = note[:pos] + note[pos + 1 :]
    else:
        edited = note[:pos] + char + note[pos + 1 :]
    reason = ""
    try:
        cp = parse_checkpoint(edited, VERIFIER)
    except CheckpointError as exc:
        reason = str(exc)
    else:
        assert cp == CP  # only an edit that changed nothing signed may pass
    assert "\n" not in reason


# --- key files ---------------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_key_file_is_created_0600_with_its_public_key(tmp_path: Path) -> None:
    path = tmp_path / ".warden" / "audit-key.pem"
    key = load_or_create_key(path, ORIGIN)
    assert _mode(path) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")  # PKCS#8
    pub = tmp_path / ".warden" / "audit-key.pub"
    verifier = NoteVerifier.from_string(pub.read_text())
    assert verifier == NoteVerifier(ORIGIN, key.public_key())
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    again = load_or_create_key(path, ORIGIN)
    assert again.private_bytes_raw() == key.private_bytes_raw()


def test_key_file_open_to_others_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit-key.pem"
    load_or_create_key(path, ORIGIN)
    for mode in (0o644, 0o640, 0o604, 0o601):
        os.chmod(path, mode)
        with pytest.raises(ConfigurationError, match="chmod 600"):
            load_or_create_key(path, ORIGIN)
    os.chmod(path, 0o400)
    load_or_create_key(path, ORIGIN)


def test_key_file_that_is_not_an_ed25519_pem_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit-key.pem"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"not a key")
    os.close(fd)
    with pytest.raises(ConfigurationError, match="PEM"):
        load_or_create_key(path, ORIGIN)
    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path.write_bytes(ec_pem)
    with pytest.raises(ConfigurationError, match="Ed25519"):
        load_or_create_key(path, ORIGIN)


def test_public_key_file_is_repaired_from_the_private_key(tmp_path: Path) -> None:
    path = tmp_path / "audit-key.pem"
    key = load_or_create_key(path, ORIGIN)
    pub = tmp_path / "audit-key.pub"
    pub.write_text(PETER_VKEY + "\n")
    load_or_create_key(path, ORIGIN)
    assert NoteVerifier.from_string(pub.read_text()) == NoteVerifier(ORIGIN, key.public_key())


def test_racing_creators_share_one_key(tmp_path: Path) -> None:
    path = tmp_path / "audit-key.pem"
    results: list[bytes] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        results.append(load_or_create_key(path, ORIGIN).private_bytes_raw())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8
    assert len(set(results)) == 1
    assert _mode(path) == 0o600


def test_bad_key_name_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        load_or_create_key(tmp_path / "k.pem", "has space")
    with pytest.raises(ConfigurationError):
        load_or_create_key(tmp_path / "k.pem", "a+b")
    assert not (tmp_path / "k.pem").exists()
