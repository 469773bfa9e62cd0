"""Credentials, delegation chains and proof of possession (docs/identity.md, "Credentials").

Hostile tokens are built by hand: `compact()` assembles a JWS from any header, payload and
signature, and `_sign` (warden's own signer) signs arbitrary claims with a correct header,
so that a refusal is known to come from the check under test and not from a side issue.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
from typing import Any

import pytest

from warden.errors import CredentialError, IdentityError
from warden.identity import (
    Challenges,
    Identity,
    VerifiedCredential,
    Verifier,
    delegate,
    issue,
    make_proof,
    peek,
)
from warden.identity import credentials as credmod
from warden.identity.credentials import (
    CRED_TYPE,
    MAX_TOKEN_BYTES,
    MAX_TTL,
    POP_TYPE,
    _sign,
)

T0 = 1_700_000_000
AUD = "prod"
HOUR = 3600
DAY = 86400

ROOT = Identity.from_seed(b"\x01" * 32)
ALICE = Identity.from_seed(b"\x02" * 32)
CAROL = Identity.from_seed(b"\x03" * 32)
DAVE = Identity.from_seed(b"\x04" * 32)
MALLORY = Identity.from_seed(b"\x05" * 32)
OTHER_ROOT = Identity.from_seed(b"\x06" * 32)

_jti = itertools.count(1)


class Clock:
    def __init__(self, t: float = T0) -> None:
        self.t = float(t)

    def __call__(self) -> float:
        return self.t


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def compact(
    header: dict[str, Any] | bytes,
    payload: dict[str, Any] | bytes,
    signer: Identity | None = None,
    signature: bytes | None = None,
) -> str:
    """A JWS compact token from any parts; signed by ``signer`` unless ``signature`` is given."""
    h = b64u(header if isinstance(header, bytes) else json.dumps(header).encode())
    p = b64u(payload if isinstance(payload, bytes) else json.dumps(payload).encode())
    if signature is None:
        signature = signer.sign(f"{h}.{p}".encode()) if signer is not None else b""
    return f"{h}.{p}.{b64u(signature)}"


def header(kid: str, alg: Any = "Ed25519", typ: Any = CRED_TYPE) -> dict[str, Any]:
    return {"alg": alg, "typ": typ, "kid": kid}


def parts(token: str) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    h, p, s = token.split(".")
    return json.loads(unb64u(h)), json.loads(unb64u(p)), unb64u(s)


class _Drop:
    """Marks a claim or header field to leave out (with a stable repr for test ids)."""

    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()


def claims(iss: Identity | str, sub: Identity | str, /, **over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {
        "iss": iss if isinstance(iss, str) else iss.did,
        "sub": sub if isinstance(sub, str) else sub.did,
        "aud": AUD,
        "iat": T0,
        "nbf": T0,
        "exp": T0 + HOUR,
        "jti": f"{next(_jti):032x}",
        "capabilities": [{"tool": "*"}],
        "ring": 3,
    }
    c.update(over)
    return {k: v for k, v in c.items() if v is not DROP}


def forge(signer: Identity, **kw: Any) -> str:
    """A credential signed correctly by ``signer`` (iss = signer) with chosen claims."""
    sub = kw.pop("sub", ALICE)
    return _sign(signer, CRED_TYPE, claims(signer, sub, **kw))


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_verifier(clock: Clock, **kw: Any) -> Verifier:
    return Verifier([ROOT.did], AUD, clock=clock, **kw)


@pytest.fixture
def verifier(clock: Clock) -> Verifier:
    return make_verifier(clock)


def root_token(
    caps: list[Any] | None = None, *, sub: Identity = ALICE, ttl: float = HOUR, ring: int = 3
) -> str:
    return issue(ROOT, sub.did, caps or ["*"], audience=AUD, ttl=ttl, ring=ring, now=T0)


def refused(v: Verifier, token: object, match: str | None = None) -> str:
    with pytest.raises(CredentialError, match=match) as info:
        v.verify(token)  # type: ignore[arg-type]
    return str(info.value)


# --- issue and verify ----------------------------------------------------------------------------


def test_issue_and_verify(verifier: Verifier) -> None:
    caps = [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}, "net.get"]
    tok = issue(ROOT, ALICE.did, caps, audience=AUD, ttl=HOUR, ring=2, now=T0)
    cred = verifier.verify(tok)
    assert isinstance(cred, VerifiedCredential)
    assert cred.subject == ALICE.did
    assert cred.issuer == cred.root == ROOT.did
    assert cred.audience == AUD
    assert cred.ring == 2
    assert cred.not_before == T0
    assert cred.expires == T0 + HOUR
    assert cred.token == tok
    assert len(cred.chain) == 1
    assert [c.to_json() for c in cred.capabilities] == [
        {"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}},
        {"tool": "net.get"},
    ]
    assert cred.covers("fs.read", {"path": "/tmp/x"})
    assert not cred.covers("fs.read", {"path": "/etc/passwd"})
    assert cred.covers("net.get")
    assert not cred.covers("net.post")
    assert not cred.args_free
    assert cred.describe()["subject"] == ALICE.did


def test_issued_token_has_the_specified_header_and_claims() -> None:
    tok = root_token(ring=1)
    hdr, body, sig = parts(tok)
    assert hdr == {"alg": "Ed25519", "typ": "warden-cred+jwt", "kid": ROOT.did}
    assert set(body) == {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "capabilities", "ring"}
    assert body["iss"] == ROOT.did
    assert body["sub"] == ALICE.did
    assert body["aud"] == AUD
    assert body["iat"] == body["nbf"] == T0
    assert body["exp"] == T0 + HOUR
    assert body["ring"] == 1
    assert len(body["jti"]) == 32
    int(body["jti"], 16)
    assert len(sig) == 64
    h, p, _ = tok.split(".")
    assert ROOT.sign(f"{h}.{p}".encode()) == sig  # plain Ed25519 over the JWS signing input
    assert peek(tok) == body


def test_jti_is_unique() -> None:
    jtis = {peek(root_token())["jti"] for _ in range(50)}
    assert len(jtis) == 50


@pytest.mark.filterwarnings("ignore:EdDSA is deprecated")
def test_eddsa_alg_is_accepted_with_an_ed25519_key(verifier: Verifier) -> None:
    tok = compact(header(ROOT.did, alg="EdDSA"), claims(ROOT, ALICE), ROOT)
    assert verifier.verify(tok).subject == ALICE.did


def test_hand_built_ed25519_token_is_accepted(verifier: Verifier) -> None:
    tok = compact(header(ROOT.did), claims(ROOT, ALICE), ROOT)
    assert verifier.verify(tok).subject == ALICE.did


def test_verifier_constructor_checks_its_arguments() -> None:
    with pytest.raises(IdentityError):
        Verifier(["did:key:nope"], AUD)
    with pytest.raises(CredentialError):
        Verifier([ROOT.did], "")
    for depth in (0, -1, True, 2.0):
        with pytest.raises(CredentialError):
            Verifier([ROOT.did], AUD, max_depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "error"),
    [
        ({"subject": "did:key:zBAD"}, IdentityError),
        ({"subject": ALICE.did + "#k"}, IdentityError),
        ({"capabilities": []}, CredentialError),
        ({"capabilities": [{"tool": "[z-a]"}]}, CredentialError),
        ({"capabilities": [{"tool": ""}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "extra": 1}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {}}}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {"lt": 1}}}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {"max": float("nan")}}}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {"max": True}}}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {"in": []}}}]}, CredentialError),
        ({"capabilities": [{"tool": "x", "args": {"a": {"glob": 5}}}]}, CredentialError),
        ({"ttl": 0}, CredentialError),
        ({"ttl": -1}, CredentialError),
        ({"ttl": MAX_TTL + 1}, CredentialError),
        ({"ttl": True}, CredentialError),
        ({"ttl": "60"}, CredentialError),
        ({"ring": 4}, CredentialError),
        ({"ring": -1}, CredentialError),
        ({"ring": True}, CredentialError),
        ({"ring": 1.0}, CredentialError),
        ({"audience": ""}, CredentialError),
        ({"audience": ["prod"]}, CredentialError),
        ({"audience": "a" * 257}, CredentialError),
    ],
    ids=repr,
)
def test_issue_refuses_bad_arguments(kw: dict[str, Any], error: type[Exception]) -> None:
    args: dict[str, Any] = {
        "subject": ALICE.did,
        "capabilities": ["*"],
        "audience": AUD,
        "ttl": HOUR,
        "ring": 3,
    }
    args.update(kw)
    subject, caps = args.pop("subject"), args.pop("capabilities")
    with pytest.raises(error):
        issue(ROOT, subject, caps, now=T0, **args)


def test_issue_with_a_bare_string_does_not_grant_each_character(verifier: Verifier) -> None:
    try:
        tok = issue(ROOT, ALICE.did, "fs.*", audience=AUD, ttl=HOUR, now=T0)
    except CredentialError:
        return  # refusing a bare string is fine
    assert not verifier.verify(tok).covers("shell.exec")


# --- tampering and forgery -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "change",
    [
        {"ring": 0},
        {"capabilities": [{"tool": "*"}, {"tool": "shell.exec"}]},
        {"sub": MALLORY.did},
        {"exp": T0 + 10 * DAY},
        {"aud": "prod "},
    ],
    ids=repr,
)
def test_tampered_payload_is_refused(verifier: Verifier, change: dict[str, Any]) -> None:
    tok = root_token(["fs.read"])
    h, _, s = tok.split(".")
    body = peek(tok)
    body.update(change)
    forged = h + "." + b64u(json.dumps(body).encode()) + "." + s
    refused(verifier, forged, "signature")


def test_reencoded_payload_with_same_claims_is_refused(verifier: Verifier) -> None:
    """The signature covers the exact bytes: the same claims, serialised differently, fail."""
    tok = root_token()
    h, _, s = tok.split(".")
    body = peek(tok)
    forged = h + "." + b64u(json.dumps(body, indent=1).encode()) + "." + s
    refused(verifier, forged, "signature")


@pytest.mark.parametrize("bit", [0, 7, 8 * 31, 8 * 32, 8 * 63 + 7])
def test_tampered_signature_is_refused(verifier: Verifier, bit: int) -> None:
    tok = root_token()
    h, p, s = tok.split(".")
    sig = bytearray(unb64u(s))
    sig[bit // 8] ^= 1 << (bit % 8)
    refused(verifier, f"{h}.{p}.{b64u(bytes(sig))}", "signature")


def test_truncated_or_missing_signature_is_refused(verifier: Verifier) -> None:
    h, p, s = root_token().split(".")
    for sig in ("", s[:-2], s + "AA", b64u(bytes(64))):
        with pytest.raises(CredentialError):
            verifier.verify(f"{h}.{p}.{sig}")


def test_non_canonical_signature_encoding_is_refused(verifier: Verifier) -> None:
    """The last base64url character of a 64-byte signature carries 4 unused bits."""
    h, p, s = root_token().split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    i = alphabet.index(s[-1])
    assert i % 16 == 0
    for extra in range(1, 16):
        with pytest.raises(CredentialError):
            verifier.verify(f"{h}.{p}.{s[:-1]}{alphabet[i + extra]}")


def test_wrong_issuer_key_claiming_the_root_is_refused(verifier: Verifier) -> None:
    tok = compact(header(ROOT.did), claims(ROOT, MALLORY, ring=0), MALLORY)
    msg = refused(verifier, tok, "bad signature")
    assert ROOT.did in msg


def test_signature_by_the_subject_is_not_enough(verifier: Verifier) -> None:
    tok = compact(header(ROOT.did), claims(ROOT, ALICE), ALICE)
    refused(verifier, tok, "bad signature")


@pytest.mark.parametrize("signature", [b"", b"\0" * 64], ids=["empty", "zeros"])
@pytest.mark.parametrize("alg", ["none", "None", "NONE", ""])
def test_alg_none_is_refused(
    verifier: Verifier, monkeypatch: pytest.MonkeyPatch, alg: str, signature: bytes
) -> None:
    called = []
    monkeypatch.setattr(credmod, "_verify_sig", lambda *a: called.append(a))
    tok = compact(header(ROOT.did, alg=alg), claims(ROOT, ALICE, ring=0), signature=signature)
    refused(verifier, tok, "algorithm")
    assert called == []


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_with_the_root_public_key_as_secret_is_refused(
    verifier: Verifier, monkeypatch: pytest.MonkeyPatch, alg: str
) -> None:
    """The classic confusion: a public key used as an HMAC secret."""
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    called = []
    monkeypatch.setattr(credmod, "_verify_sig", lambda *a: called.append(a))
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    pub = ROOT.public_key
    secrets = [
        pub.public_bytes(Encoding.Raw, PublicFormat.Raw),
        pub.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        ROOT.did.encode(),
    ]
    for secret in secrets:
        h = b64u(json.dumps(header(ROOT.did, alg=alg)).encode())
        p = b64u(json.dumps(claims(ROOT, ALICE, ring=0)).encode())
        sig = hmac.new(secret, f"{h}.{p}".encode(), digest).digest()
        refused(verifier, f"{h}.{p}.{b64u(sig)}", "algorithm")
    assert called == []


@pytest.mark.parametrize(
    "alg",
    [
        "RS256",
        "PS256",
        "ES256",
        "ES256K",
        "Ed448",
        "ed25519",
        "EDDSA",
        "Ed25519 ",
        None,
        0,
        ["Ed25519"],
    ],
    ids=repr,
)
def test_other_algorithms_are_refused(verifier: Verifier, alg: Any) -> None:
    tok = compact(header(ROOT.did, alg=alg), claims(ROOT, ALICE), ROOT)
    refused(verifier, tok, "algorithm")


def test_missing_alg_is_refused(verifier: Verifier) -> None:
    tok = compact({"typ": CRED_TYPE, "kid": ROOT.did}, claims(ROOT, ALICE), ROOT)
    with pytest.raises(CredentialError):
        verifier.verify(tok)


@pytest.mark.parametrize("kid", [ALICE.did, MALLORY.did, "", None, DROP], ids=repr)
def test_kid_must_equal_iss(verifier: Verifier, kid: Any) -> None:
    hdr = {k: v for k, v in header(kid).items() if v is not DROP}
    tok = compact(hdr, claims(ROOT, ALICE), ROOT)
    refused(verifier, tok, "kid")


@pytest.mark.parametrize("typ", ["JWT", "jwt", POP_TYPE, "", None, DROP], ids=repr)
def test_wrong_typ_is_refused(verifier: Verifier, typ: Any) -> None:
    hdr = {k: v for k, v in header(ROOT.did, typ=typ).items() if v is not DROP}
    tok = compact(hdr, claims(ROOT, ALICE), ROOT)
    refused(verifier, tok, "type")


@pytest.mark.parametrize(
    "extra",
    [
        {"crit": ["exp"]},
        {"b64": False},
        {"jwk": {"kty": "OKP", "crv": "Ed25519", "x": b64u(bytes(32))}},
        {"jku": "https://evil.example/keys"},
        {"x5u": "https://evil.example/cert"},
        {"cty": "JWT"},
        {"zip": "DEF"},
    ],
    ids=lambda e: next(iter(e)),
)
def test_unknown_header_field_is_refused(verifier: Verifier, extra: dict[str, Any]) -> None:
    tok = compact({**header(ROOT.did), **extra}, claims(ROOT, ALICE), ROOT)
    with pytest.raises(CredentialError):
        verifier.verify(tok)


def test_untrusted_root_is_refused(verifier: Verifier) -> None:
    tok = issue(MALLORY, ALICE.did, ["*"], audience=AUD, ttl=HOUR, now=T0)
    refused(verifier, tok, "not a trusted root")
    assert Verifier([MALLORY.did], AUD, clock=Clock()).verify(tok).root == MALLORY.did


def test_several_roots_are_each_trusted(clock: Clock) -> None:
    v = Verifier([ROOT.did, OTHER_ROOT.did], AUD, clock=clock)
    for r in (ROOT, OTHER_ROOT):
        assert v.verify(issue(r, ALICE.did, ["*"], audience=AUD, ttl=HOUR, now=T0)).root == r.did


# --- time --------------------------------------------------------------------------------------


def test_expiry_with_skew_boundary(verifier: Verifier, clock: Clock) -> None:
    tok = root_token()
    clock.t = T0 + HOUR + 29.999
    assert verifier.verify(tok).expires == T0 + HOUR
    clock.t = T0 + HOUR + 30
    refused(verifier, tok, "expired")
    clock.t = T0 + 10 * DAY
    refused(verifier, tok, "expired")


def test_not_yet_valid_with_skew_boundary(verifier: Verifier, clock: Clock) -> None:
    tok = issue(ROOT, ALICE.did, ["*"], audience=AUD, ttl=HOUR, now=T0 + 100)
    clock.t = T0
    refused(verifier, tok, "not valid yet")
    clock.t = T0 + 69.999
    refused(verifier, tok, "not valid yet")
    clock.t = T0 + 70
    assert verifier.verify(tok).not_before == T0 + 100


def test_custom_skew(clock: Clock) -> None:
    v = make_verifier(clock, skew=0)
    tok = root_token()
    clock.t = T0 + HOUR - 0.5
    v.verify(tok)
    clock.t = T0 + HOUR
    refused(v, tok, "expired")
    clock.t = T0 - 0.5
    refused(v, tok, "not valid yet")


def test_audience_mismatch_is_refused(clock: Clock) -> None:
    tok = root_token()
    refused(Verifier([ROOT.did], "staging", clock=clock), tok, "audience")


# --- claims --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"admin": True}, "unknown claim"),
        ({"scope": "all"}, "unknown claim"),
        ({"jti": "0" * 31}, "jti"),
        ({"jti": "0" * 33}, "jti"),
        ({"jti": "A" * 32}, "jti"),
        ({"jti": "g" * 32}, "jti"),
        ({"jti": 12345}, "jti"),
        ({"jti": DROP}, "jti"),
        ({"ring": -1}, "ring"),
        ({"ring": 4}, "ring"),
        ({"ring": "0"}, "ring"),
        ({"ring": True}, "ring"),
        ({"ring": 0.0}, "ring"),
        ({"ring": DROP}, "ring"),
        ({"capabilities": []}, "capabilities"),
        ({"capabilities": {}}, "capabilities"),
        ({"capabilities": "*"}, "capabilities"),
        ({"capabilities": DROP}, "capabilities"),
        ({"capabilities": [{"tool": "[z-a]"}]}, "invalid glob"),
        ({"capabilities": [{"tool": "x", "args": {"p": {"glob": "[z-a]"}}}]}, "invalid glob"),
        ({"capabilities": [{"tool": "x", "args": {"p": {"regex": ".*"}}}]}, "unknown constraint"),
        ({"capabilities": [{"tool": "x", "args": {"p": {"max": "9"}}}]}, "finite number"),
        ({"capabilities": [{"tool": "x", "args": []}]}, "args"),
        ({"capabilities": [5]}, "capabilities"),
        ({"capabilities": [{"tool": "x"}] * 65}, "more than"),
        ({"sub": "did:key:zNOPE"}, "sub"),
        ({"sub": ALICE.did + "#frag"}, "sub"),
        ({"sub": DROP}, "sub"),
        ({"aud": ["prod"]}, "audience"),
        ({"aud": ""}, "audience"),
        ({"aud": DROP}, "audience"),
        ({"iat": "now"}, "iat"),
        ({"iat": DROP}, "iat"),
        ({"nbf": float(T0)}, "nbf"),
        ({"exp": True}, "exp"),
        ({"exp": str(T0 + HOUR)}, "exp"),
        ({"exp": DROP}, "exp"),
        ({"nbf": T0 + 10, "exp": T0 + 9}, "window"),
        ({"exp": T0 + MAX_TTL + 1}, "window"),
        ({"exp": T0 + 2 * 365 * DAY}, "window"),
    ],
    ids=repr,
)
def test_bad_claims_are_refused(verifier: Verifier, change: dict[str, Any], says: str) -> None:
    tok = _sign(ROOT, CRED_TYPE, claims(ROOT, ALICE, **change))
    refused(verifier, tok, says)
    with pytest.raises(CredentialError):
        peek(tok)


def test_a_year_long_credential_is_accepted(verifier: Verifier) -> None:
    tok = _sign(ROOT, CRED_TYPE, claims(ROOT, ALICE, exp=T0 + 365 * DAY))
    assert verifier.verify(tok).expires == T0 + 365 * DAY


def test_null_prf_is_a_root_link(verifier: Verifier) -> None:
    tok = _sign(MALLORY, CRED_TYPE, claims(MALLORY, ALICE, prf=None))
    refused(verifier, tok, "not a trusted root")


@pytest.mark.parametrize("prf", [1, "", {}, [], True, "a.b.c"], ids=repr)
def test_non_token_prf_is_refused(verifier: Verifier, prf: Any) -> None:
    tok = _sign(ALICE, CRED_TYPE, claims(ALICE, CAROL, prf=prf))
    with pytest.raises(CredentialError):
        verifier.verify(tok)


# --- malformed tokens ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "a..b.c",
        "...",
        "..",
        "\u00e9.\u00e9.\u00e9",
        "eyJhbGciOiJFZDI1NTE5In0.e30.\u0410",
        "eyJ.eyJ.AA==",
        None,
        b"a.b.c",
        42,
        ["a", "b", "c"],
    ],
    ids=repr,
)
def test_malformed_token_is_a_credential_error(verifier: Verifier, token: Any) -> None:
    refused(verifier, token)
    with pytest.raises(CredentialError):
        peek(token)


def test_non_ascii_in_a_signed_looking_token_is_refused(verifier: Verifier) -> None:
    h, p, s = root_token().split(".")
    refused(verifier, f"{h}.{p}\u200b.{s}", "JWS")


@pytest.mark.parametrize(
    ("payload", "says"),
    [
        (b"not json", "not JSON"),
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b'{"iss": ', "not JSON"),
        (b"[1, 2, 3]", "not a JSON object"),
        (b'"a string"', "not a JSON object"),
        (b"42", "not a JSON object"),
        (b"null", "not a JSON object"),
    ],
    ids=repr,
)
def test_non_object_payload_signed_by_the_root_is_refused(
    verifier: Verifier, payload: bytes, says: str
) -> None:
    tok = compact(header(ROOT.did), payload, ROOT)
    refused(verifier, tok, says)


@pytest.mark.parametrize(
    "hdr",
    [b"[]", b'"Ed25519"', b"42", b"null", b"not json", b"\xff", b"[" * 400 + b"]" * 400],
    ids=lambda b: repr(b[:12]),
)
def test_hostile_header_is_a_credential_error(verifier: Verifier, hdr: bytes) -> None:
    tok = compact(hdr, claims(ROOT, ALICE), ROOT)
    refused(verifier, tok)


@pytest.mark.parametrize("depth", [1000, 5000])
def test_deeply_nested_payload_is_a_credential_error(verifier: Verifier, depth: int) -> None:
    """msgspec raises RecursionError past ~1000 levels; it must come out as a refusal."""
    payload = b"[" * depth + b"]" * depth
    tok = compact(header(ROOT.did), payload, MALLORY)  # an attacker needs no key
    assert len(tok) <= MAX_TOKEN_BYTES
    refused(verifier, tok)


def test_deeply_nested_claim_value_is_a_credential_error(verifier: Verifier) -> None:
    inner = "[" * 3000 + "]" * 3000
    payload = ('{"iss": "' + ROOT.did + '", "x": ' + inner + "}").encode()
    refused(verifier, compact(header(ROOT.did), payload, MALLORY))


# --- size ----------------------------------------------------------------------------------------


def test_max_token_bytes_is_16_kib() -> None:
    assert MAX_TOKEN_BYTES == 16 * 1024


def test_oversized_token_is_refused_before_decoding(
    verifier: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    def must_not_decode(*a: object, **k: object) -> None:
        raise AssertionError("decoded an oversized token")

    monkeypatch.setattr(credmod.jws, "extract_compact", must_not_decode)
    monkeypatch.setattr(credmod.msgspec.json, "decode", must_not_decode)
    big = b64u(b"{" + b" " * (MAX_TOKEN_BYTES) + b"}")
    for tok in (f"{big}.{big}.{big}", "a" * (MAX_TOKEN_BYTES + 1)):
        refused(verifier, tok, "larger than")
        with pytest.raises(CredentialError, match="larger than"):
            peek(tok)


def test_token_at_the_limit_is_not_refused_for_size(verifier: Verifier) -> None:
    msg = refused(verifier, "a" * MAX_TOKEN_BYTES)
    assert "larger than" not in msg


def test_large_signed_token_is_refused(verifier: Verifier) -> None:
    caps = [{"tool": f"tool{i:03d}." + "x" * 240} for i in range(64)]
    tok = _sign(ROOT, CRED_TYPE, claims(ROOT, ALICE, capabilities=caps))
    assert len(tok) > MAX_TOKEN_BYTES
    refused(verifier, tok, "larger than")


def test_size_limit_counts_embedded_parents(verifier: Verifier) -> None:
    caps = [{"tool": f"tool{i:03d}." + "x" * 200} for i in range(40)]
    parent = issue(ROOT, ALICE.did, caps, audience=AUD, ttl=HOUR, now=T0)
    assert len(parent) < MAX_TOKEN_BYTES
    verifier.verify(parent)
    child = delegate(parent, ALICE, CAROL.did, [caps[0]], ttl=60, now=T0)
    assert len(child) > MAX_TOKEN_BYTES
    refused(verifier, child, "larger than")


# --- delegation ----------------------------------------------------------------------------------


def test_delegation_chain_verifies(verifier: Verifier) -> None:
    parent = root_token(["fs.*", "net.get"], ring=1)
    child = delegate(parent, ALICE, CAROL.did, ["fs.read"], ttl=600, now=T0)
    grandchild = delegate(child, CAROL, DAVE.did, ["fs.read"], ttl=60, ring=3, now=T0)
    cred = verifier.verify(grandchild)
    assert cred.subject == DAVE.did
    assert cred.issuer == CAROL.did
    assert cred.root == ROOT.did
    assert cred.ring == 3
    assert cred.expires == T0 + 60
    assert [link.subject for link in cred.chain] == [ALICE.did, CAROL.did, DAVE.did]
    assert [link.issuer for link in cred.chain] == [ROOT.did, ALICE.did, CAROL.did]
    assert cred.covers("fs.read")
    assert not cred.covers("fs.write")
    assert not cred.covers("net.get")
    _, body, _ = parts(child)
    assert body["iss"] == ALICE.did
    assert body["prf"] == parent
    assert body["aud"] == AUD
    assert body["ring"] == 1  # the parent's ring by default


def test_delegate_refuses_a_holder_who_is_not_the_parents_subject() -> None:
    parent = root_token()
    with pytest.raises(CredentialError, match="not to the holder"):
        delegate(parent, CAROL, DAVE.did, ["*"], ttl=60, now=T0)


def test_delegate_refuses_bad_arguments() -> None:
    parent = root_token(ring=1)
    with pytest.raises(IdentityError):
        delegate(parent, ALICE, "did:key:zBAD", ["*"], ttl=60, now=T0)
    with pytest.raises(CredentialError):
        delegate(parent, ALICE, CAROL.did, [], ttl=60, now=T0)
    with pytest.raises(CredentialError):
        delegate(parent, ALICE, CAROL.did, ["*"], ttl=0, now=T0)
    with pytest.raises(CredentialError):
        delegate(parent, ALICE, CAROL.did, ["*"], ttl=60, ring=7, now=T0)
    with pytest.raises(CredentialError):
        delegate("not a token", ALICE, CAROL.did, ["*"], ttl=60, now=T0)


PAY = "payments.send"
WIDENING = [
    pytest.param([{"tool": "fs.*"}], [{"tool": "*"}], id="tool glob to *"),
    pytest.param([{"tool": "fs.read"}], [{"tool": "fs.*"}], id="literal to glob"),
    pytest.param([{"tool": "fs.*"}], [{"tool": "shell.exec"}], id="other tool"),
    pytest.param([{"tool": "fs.r*"}], [{"tool": "fs.*"}], id="shorter prefix"),
    pytest.param([{"tool": "fs.*"}], [{"tool": "fs.read"}, {"tool": "net.*"}], id="one of two"),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY, "args": {"amount": {"max": 200}}}],
        id="max 100 to 200",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"min": 10}}}],
        [{"tool": PAY, "args": {"amount": {"min": 5}}}],
        id="min 10 to 5",
    ),
    pytest.param(
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}],
        [{"tool": "fs.read", "args": {"path": {"glob": "/*"}}}],
        id="glob /tmp/* to /*",
    ),
    pytest.param(
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/a*"}}}],
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}],
        id="glob /tmp/a* to /tmp/*",
    ),
    pytest.param(
        [{"tool": "net.get", "args": {"host": {"in": ["a", "b"]}}}],
        [{"tool": "net.get", "args": {"host": {"in": ["a", "c"]}}}],
        id="in [a,b] to [a,c]",
    ),
    pytest.param(
        [{"tool": "net.get", "args": {"host": {"eq": "a"}}}],
        [{"tool": "net.get", "args": {"host": {"eq": "b"}}}],
        id="eq a to eq b",
    ),
    pytest.param(
        [{"tool": "x", "args": {"n": {"eq": 1}}}],
        [{"tool": "x", "args": {"n": {"eq": True}}}],
        id="eq 1 to eq true",
    ),
    pytest.param(
        [{"tool": "x", "args": {"n": {"eq": 5}}}],
        [{"tool": "x", "args": {"n": {"max": 5}}}],
        id="eq to max",
    ),
    pytest.param(
        [{"tool": "x", "args": {"p": {"glob": "/tmp/*"}}}],
        [{"tool": "x", "args": {"p": {"max": 5}}}],
        id="glob to max",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY}],
        id="constraint omitted",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}, "to": {"eq": "bob"}}}],
        [{"tool": PAY, "args": {"amount": {"max": 50}}}],
        id="one of two constraints omitted",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY, "args": {"other": {"max": 100}}}],
        id="constraint on another argument",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"min": 0, "max": 100}}}],
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        id="min dropped",
    ),
]


@pytest.mark.parametrize(("parent_caps", "child_caps"), WIDENING)
def test_delegate_refuses_widening(parent_caps: list[Any], child_caps: list[Any]) -> None:
    parent = root_token(parent_caps)
    with pytest.raises(CredentialError, match="widen"):
        delegate(parent, ALICE, CAROL.did, child_caps, ttl=60, now=T0)


@pytest.mark.parametrize(("parent_caps", "child_caps"), WIDENING)
def test_forged_widening_chain_is_refused(
    verifier: Verifier, parent_caps: list[Any], child_caps: list[Any]
) -> None:
    parent = root_token(parent_caps)
    child = forge(ALICE, sub=CAROL, capabilities=child_caps, exp=T0 + 60, prf=parent)
    refused(verifier, child, "widens")


NARROWING = [
    pytest.param([{"tool": "*"}], [{"tool": "fs.read"}], id="* to literal"),
    pytest.param([{"tool": "fs.*"}], [{"tool": "fs.read.*"}], id="prefix extended"),
    pytest.param([{"tool": "fs.?ead"}], [{"tool": "fs.read"}], id="literal matched"),
    pytest.param([{"tool": "fs.*"}], [{"tool": "fs.*"}], id="same"),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY, "args": {"amount": {"max": 50, "min": 0}}}],
        id="tighter max plus min",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY, "args": {"amount": {"eq": 100}}}],
        id="eq within max",
    ),
    pytest.param(
        [{"tool": PAY, "args": {"amount": {"max": 100}}}],
        [{"tool": PAY, "args": {"amount": {"in": [1, 2.5, 100]}}}],
        id="in within max",
    ),
    pytest.param(
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}],
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/a/*"}}}],
        id="glob narrower",
    ),
    pytest.param(
        [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}],
        [{"tool": "fs.read", "args": {"path": {"eq": "/tmp/x"}}}],
        id="eq within glob",
    ),
    pytest.param(
        [{"tool": "net.get", "args": {"host": {"in": ["a", "b"]}}}],
        [{"tool": "net.get", "args": {"host": {"in": ["b"]}}}],
        id="in subset",
    ),
    pytest.param(
        [{"tool": "x", "args": {"n": {"eq": 1}}}],
        [{"tool": "x", "args": {"n": {"eq": 1.0}}}],
        id="eq 1 to eq 1.0",
    ),
    pytest.param(
        [{"tool": PAY}],
        [{"tool": PAY, "args": {"amount": {"max": 5}}}],
        id="constraint added",
    ),
]


@pytest.mark.parametrize(("parent_caps", "child_caps"), NARROWING)
def test_narrowing_delegation_is_issued_and_verifies(
    verifier: Verifier, parent_caps: list[Any], child_caps: list[Any]
) -> None:
    parent = root_token(parent_caps)
    child = delegate(parent, ALICE, CAROL.did, child_caps, ttl=60, now=T0)
    assert verifier.verify(child).subject == CAROL.did


def test_delegate_refuses_to_outlive_the_parent(verifier: Verifier) -> None:
    parent = root_token(ttl=HOUR)
    with pytest.raises(CredentialError, match="outlive"):
        delegate(parent, ALICE, CAROL.did, ["*"], ttl=HOUR + 1, now=T0)
    assert delegate(parent, ALICE, CAROL.did, ["*"], ttl=HOUR, now=T0)
    forged = forge(ALICE, sub=CAROL, exp=T0 + HOUR + 1, prf=parent)
    refused(verifier, forged, "expires after its parent")


@pytest.mark.parametrize(("parent_ring", "child_ring"), [(2, 1), (3, 0), (1, 0)])
def test_delegate_refuses_a_more_privileged_ring(
    verifier: Verifier, parent_ring: int, child_ring: int
) -> None:
    parent = root_token(ring=parent_ring)
    with pytest.raises(CredentialError, match="ring"):
        delegate(parent, ALICE, CAROL.did, ["*"], ttl=60, ring=child_ring, now=T0)
    forged = forge(ALICE, sub=CAROL, ring=child_ring, exp=T0 + 60, prf=parent)
    refused(verifier, forged, "more privileged")


def test_less_privileged_ring_is_allowed(verifier: Verifier) -> None:
    parent = root_token(ring=0)
    child = delegate(parent, ALICE, CAROL.did, ["*"], ttl=60, ring=2, now=T0)
    assert verifier.verify(child).ring == 2


def test_trust_laundering_through_someone_elses_token_is_refused(verifier: Verifier) -> None:
    """Carol got hold of Alice's token and signs a child of it as herself."""
    parent = root_token()
    with pytest.raises(CredentialError):
        delegate(parent, CAROL, CAROL.did, ["*"], ttl=60, now=T0)
    for sub in (CAROL, MALLORY):
        laundered = forge(CAROL, sub=sub, exp=T0 + 60, prf=parent)
        refused(verifier, laundered, "granted to")


def test_laundering_by_impersonating_the_parents_subject_is_refused(verifier: Verifier) -> None:
    parent = root_token()
    body = claims(ALICE, CAROL, exp=T0 + 60, prf=parent)
    forged = compact(header(ALICE.did), body, CAROL)
    refused(verifier, forged, "bad signature")


def test_child_audience_must_equal_the_parents(clock: Clock) -> None:
    prod, staging = make_verifier(clock), Verifier([ROOT.did], "staging", clock=clock)
    parent = issue(ROOT, ALICE.did, ["*"], audience="staging", ttl=HOUR, now=T0)
    child = forge(ALICE, sub=CAROL, exp=T0 + 60, prf=parent)  # aud prod
    refused(prod, child, "audience")
    refused(staging, child, "audience")


def test_untrusted_root_of_a_chain_is_refused(verifier: Verifier) -> None:
    parent = issue(MALLORY, ALICE.did, ["*"], audience=AUD, ttl=HOUR, now=T0)
    child = delegate(parent, ALICE, CAROL.did, ["*"], ttl=60, now=T0)
    refused(verifier, child, "not a trusted root")


def test_a_trusted_root_cannot_lend_trust_to_an_untrusted_chain(verifier: Verifier) -> None:
    """The trusted root signs a child of a chain rooted elsewhere: the chain root decides."""
    parent = issue(MALLORY, ROOT.did, ["*"], audience=AUD, ttl=HOUR, now=T0)
    child = forge(ROOT, sub=ALICE, exp=T0 + 60, prf=parent)
    refused(verifier, child, "not a trusted root")


def _chain(n: int) -> tuple[str, list[Identity]]:
    """A chain of ``n`` links: ROOT -> A1 -> ... -> An; returns the leaf and the holders."""
    holders = [Identity.from_seed(bytes([0x40 + i]) * 32) for i in range(n)]
    tok = issue(ROOT, holders[0].did, ["*"], audience=AUD, ttl=HOUR, now=T0)
    for i in range(1, n):
        tok = delegate(tok, holders[i - 1], holders[i].did, ["*"], ttl=HOUR - i, now=T0)
    return tok, holders


def test_chain_depth_limit(clock: Clock) -> None:
    four, _ = _chain(4)
    five, _ = _chain(5)
    v = make_verifier(clock)
    assert len(v.verify(four).chain) == 4
    refused(v, five, "longer than 4")
    refused(make_verifier(clock, max_depth=3), four, "longer than 3")
    assert len(make_verifier(clock, max_depth=5).verify(five).chain) == 5
    one = make_verifier(clock, max_depth=1)
    one.verify(root_token())
    refused(one, _chain(2)[0], "longer than 1")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_revoked_jti_anywhere_in_the_chain_is_refused(clock: Clock, index: int) -> None:
    leaf, _ = _chain(3)
    jtis = [link.jti for link in make_verifier(clock).verify(leaf).chain]
    v = make_verifier(clock, revoked=lambda j: j == jtis[index])
    msg = refused(v, leaf, "revoked")
    assert jtis[index] in msg


@pytest.mark.parametrize("who", ["root", 0, 1, 2])
def test_revoked_agent_anywhere_in_the_chain_is_refused(clock: Clock, who: Any) -> None:
    leaf, holders = _chain(3)
    did = ROOT.did if who == "root" else holders[who].did
    v = make_verifier(clock, agent_revoked=lambda d: d == did)
    msg = refused(v, leaf, "revoked")
    assert did in msg


def test_unrelated_revocations_do_not_refuse(clock: Clock) -> None:
    leaf, _ = _chain(3)
    v = make_verifier(
        clock, revoked=lambda j: j == "0" * 32, agent_revoked=lambda d: d == MALLORY.did
    )
    assert v.verify(leaf).subject


def test_parent_not_yet_valid_while_child_is_valid_is_refused(
    verifier: Verifier, clock: Clock
) -> None:
    parent = issue(ROOT, ALICE.did, ["*"], audience=AUD, ttl=HOUR, now=T0 + 100)
    child = delegate(parent, ALICE, CAROL.did, ["*"], ttl=HOUR, now=T0)
    clock.t = T0
    refused(verifier, child, "chain link 0 is not valid yet")
    clock.t = T0 + 100
    assert verifier.verify(child).subject == CAROL.did


def test_expired_parent_with_a_longer_lived_forged_child_is_refused(
    verifier: Verifier, clock: Clock
) -> None:
    parent = root_token(ttl=60)
    child = forge(ALICE, sub=CAROL, exp=T0 + HOUR, prf=parent)
    clock.t = T0 + 600  # parent expired, child still within its own window
    with pytest.raises(CredentialError):
        verifier.verify(child)


def test_verified_expiry_is_the_minimum_over_the_chain(verifier: Verifier) -> None:
    parent = root_token(ttl=HOUR)
    child = delegate(parent, ALICE, CAROL.did, ["*"], ttl=120, now=T0 + 10)
    cred = verifier.verify(child)
    assert cred.expires == T0 + 130 == min(link.expires for link in cred.chain)
    assert cred.chain[0].expires == T0 + HOUR
    assert cred.not_before == T0 + 10


def test_signature_cache_does_not_bypass_time_checks(verifier: Verifier, clock: Clock) -> None:
    leaf, _ = _chain(2)
    assert verifier.verify(leaf)
    assert verifier.verify(leaf)
    clock.t = T0 + 2 * HOUR
    refused(verifier, leaf, "expired")
    clock.t = T0 - 600
    refused(verifier, leaf, "not valid yet")


def test_signature_cache_does_not_bypass_revocation(clock: Clock) -> None:
    leaf, holders = _chain(2)
    revoked_jtis: set[str] = set()
    revoked_agents: set[str] = set()
    v = make_verifier(
        clock, revoked=revoked_jtis.__contains__, agent_revoked=revoked_agents.__contains__
    )
    cred = v.verify(leaf)
    revoked_jtis.add(cred.chain[0].jti)
    refused(v, leaf, "revoked")
    revoked_jtis.clear()
    assert v.verify(leaf)
    revoked_agents.add(holders[0].did)
    refused(v, leaf, "revoked")
    revoked_agents.clear()
    assert v.verify(leaf)


def test_failed_verification_is_not_cached(verifier: Verifier) -> None:
    tok = forge(MALLORY)
    for _ in range(2):
        refused(verifier, tok, "not a trusted root")


def test_cache_is_per_verifier(clock: Clock) -> None:
    tok = root_token()
    make_verifier(clock).verify(tok)
    refused(Verifier([OTHER_ROOT.did], AUD, clock=clock), tok, "not a trusted root")
    refused(Verifier([ROOT.did], "staging", clock=clock), tok, "audience")


# --- coverage through a verified credential ------------------------------------------------------


def test_verified_credential_covers(verifier: Verifier) -> None:
    caps = [
        {"tool": "payments.send", "args": {"amount": {"max": 100}, "to": {"in": ["bob", "eve"]}}},
        {"tool": "flag.set", "args": {"value": {"eq": 1}}},
        {"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}},
        {"tool": "temp.set", "args": {"celsius": {"min": -10, "max": 40}}},
    ]
    cred = verifier.verify(root_token(caps))
    assert cred.covers("payments.send", {"amount": 100, "to": "bob"})
    assert cred.covers("payments.send", {"amount": 99.5, "to": "eve", "memo": "x"})
    assert not cred.covers("payments.send", {"amount": 101, "to": "bob"})
    assert not cred.covers("payments.send", {"amount": 1, "to": "mallory"})
    assert not cred.covers("payments.send", {"to": "bob"})  # missing argument
    assert not cred.covers("payments.send", {"amount": True, "to": "bob"})
    assert not cred.covers("payments.send", {"amount": float("nan"), "to": "bob"})
    assert not cred.covers("payments.send", {"amount": "50", "to": "bob"})
    assert not cred.covers("payments.send")
    assert cred.covers("flag.set", {"value": 1})
    assert cred.covers("flag.set", {"value": 1.0})
    assert not cred.covers("flag.set", {"value": True})
    assert cred.covers("fs.read", {"path": "/tmp/a/b"})
    assert not cred.covers("fs.read", {"path": "/etc/passwd"})
    assert not cred.covers("fs.read", {"path": ["/tmp/x"]})
    assert cred.covers("temp.set", {"celsius": -10})
    assert not cred.covers("temp.set", {"celsius": -10.5})
    assert not cred.covers("temp.set", {"celsius": float("nan")})
    assert not cred.covers("other.tool", {})


def test_any_capability_covers(verifier: Verifier) -> None:
    caps = [{"tool": "fs.read", "args": {"path": {"glob": "/tmp/*"}}}, {"tool": "fs.*"}]
    cred = verifier.verify(root_token(caps))
    assert cred.covers("fs.read", {"path": "/etc/passwd"})
    assert cred.args_free is False
    assert verifier.verify(root_token(["fs.*"])).args_free


# --- proof of possession ------------------------------------------------------------------------


@pytest.fixture
def challenges(clock: Clock) -> Challenges:
    return Challenges(clock=clock)


def present(
    v: Verifier,
    token: str,
    challenges: Challenges,
    clock: Clock,
    holder: Identity = ALICE,
    *,
    nonce: str | None = None,
    audience: str = AUD,
    proof_token: str | None = None,
    iat: float | None = None,
) -> VerifiedCredential:
    n = nonce if nonce is not None else challenges.issue()
    proof = make_proof(
        holder, proof_token or token, n, audience, now=clock() if iat is None else iat
    )
    return v.verify_presentation(token, proof, challenges)


def pop_refused(
    v: Verifier, token: str, proof: str, challenges: Challenges, match: str | None = None
) -> None:
    with pytest.raises(CredentialError, match=match):
        v.verify_presentation(token, proof, challenges)


def test_valid_presentation(verifier: Verifier, challenges: Challenges, clock: Clock) -> None:
    tok = root_token()
    cred = present(verifier, tok, challenges, clock)
    assert cred.subject == ALICE.did


def test_proof_has_the_specified_form(challenges: Challenges) -> None:
    tok = root_token()
    nonce = challenges.issue()
    hdr, body, sig = parts(make_proof(ALICE, tok, nonce, AUD, now=T0))
    assert hdr == {"alg": "Ed25519", "typ": "warden-pop+jwt", "kid": ALICE.did}
    assert body == {
        "aud": AUD,
        "nonce": nonce,
        "iat": T0,
        "cth": b64u(hashlib.sha256(tok.encode()).digest()),
    }
    assert len(sig) == 64


def test_replayed_proof_is_refused(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    tok = root_token()
    nonce = challenges.issue()
    proof = make_proof(ALICE, tok, nonce, AUD, now=clock())
    verifier.verify_presentation(tok, proof, challenges)
    pop_refused(verifier, tok, proof, challenges, "already used")
    # A fresh proof over the spent nonce is refused too.
    again = make_proof(ALICE, tok, nonce, AUD, now=clock() + 1)
    pop_refused(verifier, tok, again, challenges, "already used")


def test_stolen_token_with_a_proof_by_another_key_is_refused(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    tok = root_token()
    nonce = challenges.issue()
    own = make_proof(MALLORY, tok, nonce, AUD, now=clock())
    pop_refused(verifier, tok, own, challenges, "subject")
    body = {
        "aud": AUD,
        "nonce": nonce,
        "iat": T0,
        "cth": b64u(hashlib.sha256(tok.encode()).digest()),
    }
    impersonating = compact(header(ALICE.did, typ=POP_TYPE), body, MALLORY)
    pop_refused(verifier, tok, impersonating, challenges, "signature")
    # The failures spent nothing: the real holder can still use the challenge.
    assert present(verifier, tok, challenges, clock, nonce=nonce).subject == ALICE.did


def test_proof_for_another_token_is_refused(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    tok1, tok2 = root_token(["fs.read"]), root_token(["*"])
    nonce = challenges.issue()
    proof = make_proof(ALICE, tok1, nonce, AUD, now=clock())
    pop_refused(verifier, tok2, proof, challenges, "another credential")


def test_proof_for_another_audience_is_refused(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    tok = root_token()
    with pytest.raises(CredentialError, match="audience"):
        present(verifier, tok, challenges, clock, audience="staging")


def test_unknown_nonce_is_refused(verifier: Verifier, challenges: Challenges, clock: Clock) -> None:
    tok = root_token()
    with pytest.raises(CredentialError, match="challenge"):
        present(verifier, tok, challenges, clock, nonce="0" * 32)
    foreign = Challenges(clock=clock).issue()
    with pytest.raises(CredentialError, match="challenge"):
        present(verifier, tok, challenges, clock, nonce=foreign)


def test_expired_challenge_is_refused(verifier: Verifier, clock: Clock) -> None:
    ch = Challenges(clock=clock)
    tok = root_token()
    early, late = ch.issue(), ch.issue()
    clock.t = T0 + 59.9
    assert present(verifier, tok, ch, clock, nonce=early)
    clock.t = T0 + 60
    with pytest.raises(CredentialError, match="expired"):
        present(verifier, tok, ch, clock, nonce=late)


@pytest.mark.parametrize(("offset", "ok"), [(-30, True), (30, True), (-31, False), (31, False)])
def test_proof_iat_must_be_within_skew(
    verifier: Verifier, challenges: Challenges, clock: Clock, offset: int, ok: bool
) -> None:
    tok = root_token()
    clock.t = T0 + 100
    if ok:
        assert present(verifier, tok, challenges, clock, iat=clock() + offset)
    else:
        with pytest.raises(CredentialError, match="iat"):
            present(verifier, tok, challenges, clock, iat=clock() + offset)


def test_failed_presentations_do_not_spend_the_nonce(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    tok = root_token()
    other = root_token(["fs.*"])
    nonce = challenges.issue()
    bad_proofs = [
        make_proof(ALICE, tok, nonce, "staging", now=clock()),
        make_proof(ALICE, other, nonce, AUD, now=clock()),
        make_proof(ALICE, tok, nonce, AUD, now=clock() - 3600),
        make_proof(CAROL, tok, nonce, AUD, now=clock()),
    ]
    for proof in bad_proofs:
        pop_refused(verifier, tok, proof, challenges)
    # An invalid credential with a good proof does not spend it either.
    expired = forge(ROOT, exp=T0 - 100, nbf=T0 - 200)
    pop_refused(verifier, expired, make_proof(ALICE, expired, nonce, AUD, now=clock()), challenges)
    assert present(verifier, tok, challenges, clock, nonce=nonce)
    # Once accepted, it is spent.
    with pytest.raises(CredentialError, match="already used"):
        present(verifier, tok, challenges, clock, nonce=nonce)


@pytest.mark.parametrize(
    ("hdr", "body"),
    [
        pytest.param({"alg": "none", "typ": POP_TYPE, "kid": "ALICE"}, {}, id="alg none"),
        pytest.param({"alg": "HS256", "typ": POP_TYPE, "kid": "ALICE"}, {}, id="alg HS256"),
        pytest.param({"alg": "Ed25519", "typ": CRED_TYPE, "kid": "ALICE"}, {}, id="cred typ"),
        pytest.param({"alg": "Ed25519", "kid": "ALICE"}, {}, id="no typ"),
        pytest.param(
            {"alg": "Ed25519", "typ": POP_TYPE, "kid": "ALICE", "jwk": {}}, {}, id="extra header"
        ),
        pytest.param(None, {"exp": T0 + 60}, id="unknown claim"),
        pytest.param(None, {"nonce": DROP}, id="no nonce"),
        pytest.param(None, {"nonce": 5}, id="int nonce"),
        pytest.param(None, {"iat": DROP}, id="no iat"),
        pytest.param(None, {"iat": float(T0)}, id="float iat"),
        pytest.param(None, {"cth": DROP}, id="no cth"),
        pytest.param(None, {"aud": DROP}, id="no aud"),
    ],
)
def test_malformed_proofs_are_refused(
    verifier: Verifier,
    challenges: Challenges,
    hdr: dict[str, Any] | None,
    body: dict[str, Any],
) -> None:
    tok = root_token()
    nonce = challenges.issue()
    h = {"alg": "Ed25519", "typ": POP_TYPE, "kid": ALICE.did} if hdr is None else dict(hdr)
    h["kid"] = ALICE.did
    b = {"aud": AUD, "nonce": nonce, "iat": T0, "cth": b64u(hashlib.sha256(tok.encode()).digest())}
    b.update(body)
    b = {k: v for k, v in b.items() if v is not DROP}
    pop_refused(verifier, tok, compact(h, b, ALICE), challenges, "proof of possession")
    # Control: the well-formed proof over the same nonce is accepted (nothing was spent).
    good = compact(
        {"alg": "Ed25519", "typ": POP_TYPE, "kid": ALICE.did},
        {"aud": AUD, "nonce": nonce, "iat": T0, "cth": b64u(hashlib.sha256(tok.encode()).digest())},
        ALICE,
    )
    assert verifier.verify_presentation(tok, good, challenges).subject == ALICE.did


def test_a_credential_is_not_a_proof(verifier: Verifier, challenges: Challenges) -> None:
    tok = root_token()
    challenges.issue()
    pop_refused(verifier, tok, tok, challenges, "proof of possession")


def test_deeply_nested_proof_is_a_credential_error(
    verifier: Verifier, challenges: Challenges
) -> None:
    tok = root_token()
    proof = compact(header(ALICE.did, typ=POP_TYPE), b"[" * 3000 + b"]" * 3000, MALLORY)
    pop_refused(verifier, tok, proof, challenges)


def test_delegated_credential_is_presented_by_its_leaf_subject(
    verifier: Verifier, challenges: Challenges, clock: Clock
) -> None:
    parent = root_token()
    child = delegate(parent, ALICE, CAROL.did, ["fs.*"], ttl=60, now=T0)
    with pytest.raises(CredentialError, match="subject"):
        present(verifier, child, challenges, clock, holder=ALICE)
    assert present(verifier, child, challenges, clock, holder=CAROL).subject == CAROL.did


def test_challenges_are_128_bit_hex_and_unique(challenges: Challenges) -> None:
    nonces = [challenges.issue() for _ in range(200)]
    assert len(set(nonces)) == 200
    for n in nonces:
        assert len(n) == 32
        assert set(n) <= set("0123456789abcdef")


def test_challenges_are_single_use_and_expire(clock: Clock) -> None:
    ch = Challenges(ttl=60, clock=clock)
    a = ch.issue()
    assert ch.spend(a)
    assert not ch.spend(a)
    b = ch.issue()
    clock.t += 60
    assert not ch.spend(b)
    assert not ch.spend("never issued")


def test_challenges_bound_outstanding_nonces(clock: Clock) -> None:
    ch = Challenges(max_outstanding=2, clock=clock)
    first, second, third = ch.issue(), ch.issue(), ch.issue()
    assert not ch.spend(first)  # the oldest was dropped
    assert ch.spend(second)
    assert ch.spend(third)
