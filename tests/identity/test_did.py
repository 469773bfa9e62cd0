"""did:key identifiers and Ed25519 known answers (docs/identity.md, "Keys and identities").

Vector sources:
- W3C CCG did:key method, `test-vectors/ed25519-x25519.json` (repository
  w3c-ccg/did-method-key): seeds 0..4, their DIDs and their `publicKeyBase58`.
- RFC 8032 section 7.1, TEST 1, TEST 2 and TEST 3 (Ed25519).
- draft-msporny-base58 (the base58btc examples), for the codec itself.
"""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.errors import IdentityError
from warden.identity import (
    Identity,
    did_from_public_key,
    is_did,
    public_key_from_did,
    verify_signature,
)
from warden.identity.did import MAX_DID_LENGTH, b58decode, b58encode

B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def raw(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def did_of_bytes(multicodec_and_key: bytes) -> str:
    return "did:key:z" + b58encode(multicodec_and_key)


# --- W3C did:key test vectors ----------------------------------------------------------------

# did -> (seed hex, publicKeyBase58)
W3C_ED25519 = {
    "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp": (
        "00" * 32,
        "4zvwRjXUKGfvwnParsHAS3HuSVzV5cA4McphgmoCtajS",
    ),
    "did:key:z6MkjchhfUsD6mmvni8mCdXHw216Xrm9bQe2mBH1P5RDjVJG": (
        "00" * 31 + "01",
        "6ASf5EcmmEHTgDJ4X4ZT5vT6iHVJBXPg5AN5YoTCpGWt",
    ),
    "did:key:z6MknGc3ocHs3zdPiJbnaaqDi58NGb4pk1Sp9WxWufuXSdxf": (
        "00" * 31 + "02",
        "8pM1DN3RiT8vbom5u1sNryaNT1nyL8CTTW3b5PwWXRBH",
    ),
    "did:key:z6MkvqoYXQfDDJRv8L4wKzxYeuKyVZBfi9Qo6Ro8MiLH3kDQ": (
        "00" * 31 + "03",
        "HPYVwAQmskwT1qEEeRzhoomyfyupJGASQQtCXSNG8XS2",
    ),
    "did:key:z6MkwW6aqMnjgrhJXFUko3NnZPGzVpkNzhYK7yEhnsibmLwL": (
        "00" * 31 + "04",
        "J3qYF7YJMKCqQke47UQwiHizgFUXapHxRxKmxbkar89x",
    ),
}
# The X25519 key-agreement DID of the first vector: a real did:key, but not an Ed25519 one.
W3C_X25519 = "did:key:z6LShs9GGnqk85isEBzzshkuVWrVKsRp24GnDuHk8QWkARMW"
VALID = "did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp"


@pytest.mark.parametrize("did", sorted(W3C_ED25519))
def test_w3c_vector_round_trips(did: str) -> None:
    key = public_key_from_did(did)
    assert isinstance(key, Ed25519PublicKey)
    assert did_from_public_key(key) == did
    assert did_from_public_key(raw(key)) == did
    assert is_did(did)


@pytest.mark.parametrize("did", sorted(W3C_ED25519))
def test_w3c_vector_public_key_and_seed(did: str) -> None:
    seed_hex, pub_b58 = W3C_ED25519[did]
    assert raw(public_key_from_did(did)) == b58decode(pub_b58)
    ident = Identity.from_seed(bytes.fromhex(seed_hex))
    assert ident.did == did
    assert raw(ident.public_key) == b58decode(pub_b58)


def test_w3c_x25519_did_is_not_an_ed25519_did() -> None:
    with pytest.raises(IdentityError, match="Ed25519"):
        public_key_from_did(W3C_X25519)
    assert not is_did(W3C_X25519)


def test_every_ed25519_did_starts_z6mk() -> None:
    for _ in range(20):
        did = Identity.generate().did
        assert did.startswith("did:key:z6Mk")
        assert len(did) <= MAX_DID_LENGTH


# --- RFC 8032 section 7.1 ----------------------------------------------------------------------

RFC8032 = [
    pytest.param(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
        id="TEST 1",
    ),
    pytest.param(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
        id="TEST 2",
    ),
    pytest.param(
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
        id="TEST 3",
    ),
]


@pytest.mark.parametrize(("secret", "public", "message", "signature"), RFC8032)
def test_rfc8032_vectors(secret: str, public: str, message: str, signature: str) -> None:
    ident = Identity.from_seed(bytes.fromhex(secret))
    pub, msg, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert raw(ident.public_key) == pub
    assert ident.did == did_from_public_key(pub)
    assert raw(public_key_from_did(ident.did)) == pub
    assert ident.sign(msg) == sig
    assert verify_signature(ident.did, sig, msg)
    # A one-bit flip anywhere in the signature, or in the message, is refused.
    for i in (0, 31, 32, 63):
        for bit in (0, 7):
            bad = bytearray(sig)
            bad[i] ^= 1 << bit
            assert not verify_signature(ident.did, bytes(bad), msg)
    assert not verify_signature(ident.did, sig, msg + b"\x00")
    if msg:
        flipped = bytes([msg[0] ^ 1]) + msg[1:]
        assert not verify_signature(ident.did, sig, flipped)
    # Another key does not verify it either.
    assert not verify_signature(Identity.generate().did, sig, msg)


def test_verify_signature_with_malformed_did_is_an_identity_error() -> None:
    with pytest.raises(IdentityError):
        verify_signature("did:key:zNOPE", b"\0" * 64, b"")


def test_verify_signature_wrong_length_signature_is_false() -> None:
    ident = Identity.generate()
    assert not verify_signature(ident.did, b"", b"x")
    assert not verify_signature(ident.did, ident.sign(b"x") + b"\0", b"x")


# --- malformed DIDs ----------------------------------------------------------------------------


def _with_char(c: str) -> str:
    return VALID[:20] + c + VALID[21:]


ZERO_KEY = bytes(32)
MALFORMED = [
    # wrong method or not a DID at all
    pytest.param("did:web:example.com", "did:key", id="did:web"),
    pytest.param("did:jwk:eyJrdHkiOiJPS1AifQ", "did:key", id="did:jwk"),
    pytest.param("did:key2:" + VALID[8:], "did:key", id="did:key2"),
    pytest.param("DID:KEY:" + VALID[8:], "did:key", id="uppercase scheme"),
    pytest.param(VALID[8:], "did:key", id="bare multibase"),
    pytest.param("", "did:key", id="empty"),
    pytest.param(" " + VALID, "did:key", id="leading space"),
    # multibase other than z
    pytest.param("did:key:" + VALID[9:], "`z`", id="missing z"),
    pytest.param("did:key:", "`z`", id="nothing after did:key:"),
    pytest.param("did:key:f" + "ed01" + "00" * 32, "`z`", id="multibase f (hex)"),
    pytest.param("did:key:u7QE" + "A" * 43, "`z`", id="multibase u (base64url)"),
    pytest.param("did:key:Z" + VALID[9:], "`z`", id="capital Z"),
    # characters outside base58btc
    pytest.param(_with_char("0"), "base58", id="char 0"),
    pytest.param(_with_char("O"), "base58", id="char O"),
    pytest.param(_with_char("I"), "base58", id="char I"),
    pytest.param(_with_char("l"), "base58", id="char l"),
    pytest.param(_with_char("+"), "base58", id="char +"),
    pytest.param(_with_char("-"), "base58", id="char -"),
    pytest.param(_with_char("_"), "base58", id="char _"),
    pytest.param(_with_char("\u00e9"), "base58", id="non-ascii"),
    pytest.param(_with_char("\uff11"), "base58", id="fullwidth digit"),
    pytest.param(VALID + "\n", "base58", id="trailing newline"),
    pytest.param(VALID + " ", "base58", id="trailing space"),
    pytest.param(VALID + "\x00", "base58", id="trailing NUL"),
    # wrong multicodec (another key type)
    pytest.param(did_of_bytes(b"\xe7\x01\x02" + ZERO_KEY), "Ed25519", id="secp256k1-pub"),
    pytest.param(did_of_bytes(b"\xec\x01" + ZERO_KEY), "Ed25519", id="x25519-pub"),
    pytest.param(did_of_bytes(b"\x80\x24\x02" + ZERO_KEY), "Ed25519", id="p256-pub"),
    pytest.param(did_of_bytes(b"\x80\x26" + ZERO_KEY), "Ed25519", id="ed25519-priv"),
    pytest.param(did_of_bytes(b"\xed\x00" + ZERO_KEY), "Ed25519", id="0xed 0x00"),
    pytest.param(did_of_bytes(b"\x01\xed" + ZERO_KEY), "Ed25519", id="swapped codec"),
    pytest.param(did_of_bytes(ZERO_KEY[:-1] + b"\x01"), "Ed25519", id="no multicodec"),
    pytest.param(did_of_bytes(b"\x00\xed\x01" + ZERO_KEY), "Ed25519", id="leading zero byte"),
    pytest.param("did:key:z", "Ed25519", id="empty key"),
    pytest.param(W3C_X25519, "Ed25519", id="w3c x25519"),
    # wrong length
    pytest.param(did_of_bytes(b"\xed\x01" + ZERO_KEY[:31]), "32 bytes", id="31-byte key"),
    pytest.param(did_of_bytes(b"\xed\x01" + ZERO_KEY + b"\x01"), "32 bytes", id="33-byte key"),
    pytest.param(did_of_bytes(b"\xed\x01"), "32 bytes", id="codec only"),
    pytest.param(did_of_bytes(b"\xed\x01" + b"\xff" * 64), "32 bytes", id="64-byte key"),
    # DID URLs
    pytest.param(VALID + "#" + VALID[8:], "DID URL", id="fragment"),
    pytest.param(VALID + "#", "DID URL", id="empty fragment"),
    pytest.param(VALID + "?service=files", "DID URL", id="query"),
    pytest.param(VALID + "/path", "DID URL", id="path"),
    # too long
    pytest.param("did:key:z" + "1" * 200, "128", id="too long"),
    pytest.param(VALID + "#" * (MAX_DID_LENGTH + 1 - len(VALID)), "128", id="129 chars"),
]


@pytest.mark.parametrize(("did", "says"), MALFORMED)
def test_malformed_did_is_an_identity_error_naming_the_problem(did: str, says: str) -> None:
    with pytest.raises(IdentityError) as info:
        public_key_from_did(did)
    assert type(info.value) is IdentityError
    assert says in str(info.value)
    assert not is_did(did)
    # A second look (after any caching) refuses it the same way.
    with pytest.raises(IdentityError):
        public_key_from_did(did)


@pytest.mark.parametrize(
    "value",
    [None, 42, 1.5, b"did:key:z6MkiTBz1ymuepAQ4HEHYSF1H8quG5GLVVQR3djdX3mDooWp", ["did"], {}],
    ids=repr,
)
def test_non_string_did_is_an_identity_error(value: object) -> None:
    with pytest.raises(IdentityError, match="string"):
        public_key_from_did(value)
    assert not is_did(value)


def test_did_of_exactly_the_maximum_length_is_judged_on_content() -> None:
    # 128 characters is allowed by the length rule; it fails only for its content.
    did = "did:key:z" + "2" * (MAX_DID_LENGTH - len("did:key:z"))
    assert len(did) == MAX_DID_LENGTH
    with pytest.raises(IdentityError) as info:
        public_key_from_did(did)
    assert "128" not in str(info.value)


def test_did_from_public_key_refuses_wrong_length_bytes() -> None:
    for n in (0, 31, 33, 64):
        with pytest.raises(IdentityError, match="32 bytes"):
            did_from_public_key(bytes(n))


def test_cache_overflow_keeps_answers_right() -> None:
    dids = {did_from_public_key(i.to_bytes(32, "big")): i for i in range(1, 4200)}
    for did in dids:
        public_key_from_did(did)
    for did, i in list(dids.items())[:50]:
        assert raw(public_key_from_did(did)) == i.to_bytes(32, "big")
    with pytest.raises(IdentityError):
        public_key_from_did(VALID + "#x")


# --- base58btc ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"", ""),
        (b"\x00", "1"),
        (b"\x00\x00\x00", "111"),
        (b"\x00\x01", "12"),
        (b"\x00\x00\x01", "112"),
        (b"\x39", "z"),
        (b"\x3a", "21"),
        (b"Hello World!", "2NEpo7TZRRrLZSi2U"),
        (
            b"The quick brown fox jumps over the lazy dog.",
            "USm3fpXnKG5EUBx2ndxBDMPVciP5hGey2Jh4NDv6gmeo1LkMeiKrLJUUBk6Z",
        ),
        (bytes.fromhex("0000287fb4cd"), "11233QC4"),
    ],
)
def test_base58_known_answers(data: bytes, text: str) -> None:
    assert b58encode(data) == text
    assert b58decode(text) == data


def test_base58_bad_character_is_an_identity_error() -> None:
    for c in "0OIl+/=":
        with pytest.raises(IdentityError, match="base58"):
            b58decode("2" + c)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 5), st.binary(max_size=40))
def test_base58_round_trip_keeps_leading_zeros(zeros: int, body: bytes) -> None:
    data = b"\x00" * zeros + body
    text = b58encode(data)
    assert b58decode(text) == data
    leading = len(data) - len(data.lstrip(b"\x00"))
    assert text[:leading] == "1" * leading
    assert text[leading : leading + 1] != "1"


# --- properties --------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_random_32_byte_keys_round_trip(key: bytes) -> None:
    did = did_from_public_key(key)
    assert did.startswith("did:key:z6Mk")
    assert len(did) <= MAX_DID_LENGTH
    assert raw(public_key_from_did(did)) == key
    assert did_from_public_key(public_key_from_did(did)) == did
    assert is_did(did)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=140),
        st.text(alphabet=B58 + "0OIl#?/ ", max_size=60).map(lambda s: "did:key:z6Mk" + s),
        st.binary(min_size=0, max_size=40).map(lambda b: did_of_bytes(b"\xed\x01" + b)),
    )
)
def test_arbitrary_text_is_a_did_or_an_identity_error(text: str) -> None:
    try:
        key = public_key_from_did(text)
    except IdentityError:
        assert not is_did(text)
    else:
        # Only a canonical encoding is accepted: it derives back to the same text.
        assert did_from_public_key(key) == text
