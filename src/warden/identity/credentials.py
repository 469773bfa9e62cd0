"""Signed capability credentials, delegation chains and proof of possession.

A credential is a JWS compact token (RFC 7515) signed with Ed25519 (``alg``
``Ed25519``, RFC 9864; ``EdDSA`` is accepted on verification), issued to an
agent's DID. The specification is docs/identity.md, "Credentials".
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning
from joserfc.jwk import OKPKey

from warden.errors import CredentialError, IdentityError
from warden.identity.capabilities import Capability, capabilities_within, parse_capabilities
from warden.identity.did import public_key_from_did
from warden.identity.keys import Identity

__all__ = [
    "CRED_TYPE",
    "MAX_TOKEN_BYTES",
    "POP_TYPE",
    "Challenges",
    "Link",
    "VerifiedCredential",
    "Verifier",
    "delegate",
    "issue",
    "make_proof",
    "peek",
]

CRED_TYPE: Final = "warden-cred+jwt"
POP_TYPE: Final = "warden-pop+jwt"
MAX_TOKEN_BYTES: Final = 16 * 1024
MAX_TTL: Final = 366 * 86400
_ALGS: Final = ("Ed25519", "EdDSA")
_CLAIMS: Final = frozenset(
    {"iss", "sub", "aud", "iat", "nbf", "exp", "jti", "capabilities", "ring", "prf"}
)
_POP_CLAIMS: Final = frozenset({"aud", "nonce", "iat", "cth"})

# joserfc warns that the `EdDSA` name is deprecated (RFC 9864) because it does not
# pin the curve; warden pins it (an Ed25519 did:key is the only key it uses).
warnings.filterwarnings("ignore", message="EdDSA is deprecated", category=SecurityWarning)


@dataclass(frozen=True, slots=True)
class Link:
    """One verified credential of a chain (root first)."""

    issuer: str
    subject: str
    jti: str
    ring: int
    not_before: int
    expires: int
    capabilities: tuple[Capability, ...]


@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    """A credential whose whole chain verified; ``subject`` is the holder's DID."""

    subject: str
    issuer: str
    root: str
    audience: str
    ring: int
    capabilities: tuple[Capability, ...]
    not_before: int
    expires: int
    jti: str
    chain: tuple[Link, ...]
    token: str = field(repr=False)

    def covers(self, tool: str, args: Mapping[str, Any] | None = None) -> bool:
        """True when some capability covers calling ``tool`` with ``args``."""
        a = args if args is not None else {}
        return any(cap.covers(tool, a) for cap in self.capabilities)

    @property
    def args_free(self) -> bool:
        """True when no capability constrains arguments (coverage depends on the tool only)."""
        return all(not cap.args for cap in self.capabilities)

    def describe(self) -> dict[str, Any]:
        """The JSON form `warden cred verify` prints."""
        return {
            "subject": self.subject,
            "root": self.root,
            "audience": self.audience,
            "ring": self.ring,
            "expires": self.expires,
            "capabilities": [c.to_json() for c in self.capabilities],
            "chain": [
                {
                    "issuer": link.issuer,
                    "subject": link.subject,
                    "jti": link.jti,
                    "ring": link.ring,
                    "not_before": link.not_before,
                    "expires": link.expires,
                    "capabilities": [c.to_json() for c in link.capabilities],
                }
                for link in self.chain
            ],
        }


# --- signing -------------------------------------------------------------------------------


def _sign(identity: Identity, typ: str, claims: Mapping[str, Any]) -> str:
    header = {"alg": "Ed25519", "typ": typ, "kid": identity.did}
    payload = json.dumps(claims, separators=(",", ":"), sort_keys=True, allow_nan=False).encode()
    key = OKPKey.import_key(identity.private_key)
    return jws.serialize_compact(header, payload, key, algorithms=["Ed25519"])


def _check_ttl(ttl: float) -> None:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL:
        raise CredentialError(f"ttl must be a number of seconds in (0, {MAX_TTL}], not {ttl!r}")


def _check_ring(ring: object) -> int:
    if type(ring) is not int or not 0 <= ring <= 3:
        raise CredentialError(f"ring must be an integer 0-3, not {ring!r}")
    return ring


def issue(
    issuer: Identity,
    subject: str,
    capabilities: Sequence[Mapping[str, Any] | str],
    *,
    audience: str,
    ttl: float,
    ring: int = 3,
    now: float | None = None,
) -> str:
    """A credential from ``issuer`` (a root authority) granting ``subject`` ``capabilities``."""
    public_key_from_did(subject)
    caps = parse_capabilities(_as_list(capabilities))
    _check_ttl(ttl)
    _check_audience(audience)
    t = int(now if now is not None else time.time())
    claims = {
        "iss": issuer.did,
        "sub": subject,
        "aud": audience,
        "iat": t,
        "nbf": t,
        "exp": t + int(ttl),
        "jti": secrets.token_hex(16),
        "capabilities": [c.to_json() for c in caps],
        "ring": _check_ring(ring),
    }
    return _sign(issuer, CRED_TYPE, claims)


def delegate(
    parent: str,
    holder: Identity,
    subject: str,
    capabilities: Sequence[Mapping[str, Any] | str],
    *,
    ttl: float,
    ring: int | None = None,
    now: float | None = None,
) -> str:
    """A narrower credential, issued by ``holder`` (the parent's subject) to ``subject``.

    Refuses (CredentialError) a delegation that would not verify: one that widens
    a capability, raises the ring's privilege or outlives the parent.
    """
    p = peek(parent)
    if p["sub"] != holder.did:
        raise CredentialError(
            f"the parent credential was issued to {p['sub']}, not to the holder {holder.did}"
        )
    public_key_from_did(subject)
    caps = parse_capabilities(_as_list(capabilities))
    why = capabilities_within(caps, parse_capabilities(p["capabilities"]))
    if why:
        raise CredentialError(f"delegation would widen: {why}")
    _check_ttl(ttl)
    t = int(now if now is not None else time.time())
    exp = t + int(ttl)
    if exp > p["exp"]:
        raise CredentialError(
            f"delegation would outlive its parent (parent expires at {p['exp']}, "
            f"asked for {exp}); use a ttl of at most {max(p['exp'] - t, 0)} s"
        )
    r = p["ring"] if ring is None else _check_ring(ring)
    if r < p["ring"]:
        raise CredentialError(f"delegation would raise the ring from {p['ring']} to {r}")
    claims = {
        "iss": holder.did,
        "sub": subject,
        "aud": p["aud"],
        "iat": t,
        "nbf": t,
        "exp": exp,
        "jti": secrets.token_hex(16),
        "capabilities": [c.to_json() for c in caps],
        "ring": r,
        "prf": parent,
    }
    return _sign(holder, CRED_TYPE, claims)


def make_proof(
    holder: Identity, token: str, nonce: str, audience: str, now: float | None = None
) -> str:
    """A proof of possession: ``holder`` signs the verifier's ``nonce`` for ``token``."""
    claims = {
        "aud": audience,
        "nonce": nonce,
        "iat": int(now if now is not None else time.time()),
        "cth": _token_hash(token),
    }
    return _sign(holder, POP_TYPE, claims)


def _as_list(capabilities: object) -> list[Any]:
    # A bare string is a sequence too: list("fs.*") would grant `f`, `s`, `.` and `*`.
    if isinstance(capabilities, str | bytes | Mapping):
        raise CredentialError("capabilities must be a list of tool globs or capability objects")
    try:
        items: list[Any] = list(capabilities)  # type: ignore[call-overload]
    except TypeError:
        raise CredentialError("capabilities must be a list") from None
    return items


def _token_hash(token: str) -> str:
    digest = hashlib.sha256(token.encode("ascii", "replace")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _check_audience(audience: object) -> None:
    if type(audience) is not str or not audience or len(audience) > 256:
        raise CredentialError("audience must be a non-empty string of at most 256 characters")


# --- decoding and verification -------------------------------------------------------------


def _decode(token: object, typ: str, allowed: frozenset[str]) -> tuple[Any, dict[str, Any]]:
    """Split, size-check and parse a token without verifying it: (jws object, claims)."""
    if type(token) is not str:
        raise CredentialError(f"a token must be a string, not {type(token).__name__}")
    if len(token) > MAX_TOKEN_BYTES:
        raise CredentialError(f"token larger than {MAX_TOKEN_BYTES} bytes")
    if not token.isascii() or token.count(".") != 2:
        raise CredentialError("not a JWS compact token (three base64url parts separated by `.`)")
    try:
        obj = jws.extract_compact(token.encode())
        header = obj.headers()
    except (JoseError, ValueError, TypeError, RecursionError) as exc:
        raise CredentialError(f"not a JWS compact token: {_jose_reason(exc)}") from None
    alg = header.get("alg")
    if alg not in _ALGS:
        raise CredentialError(f"algorithm {alg!r} refused: only Ed25519 (EdDSA) is accepted")
    if header.get("typ") != typ:
        raise CredentialError(f"token type {header.get('typ')!r} is not {typ!r}")
    if set(header) - {"alg", "typ", "kid"}:
        raise CredentialError(
            f"unexpected header field `{sorted(set(header) - {'alg', 'typ', 'kid'})[0]}`"
        )
    try:
        claims = msgspec.json.decode(obj.payload)
    except (msgspec.DecodeError, RecursionError):
        raise CredentialError("the payload is not JSON (or nests too deeply)") from None
    if not isinstance(claims, dict):
        raise CredentialError("the payload is not a JSON object")
    unknown = set(claims) - allowed
    if unknown:
        raise CredentialError(f"unknown claim `{sorted(unknown)[0]}`")
    kid = header.get("kid")
    if "iss" in allowed and kid != claims.get("iss"):
        raise CredentialError("header `kid` does not name the issuer `iss`")
    return obj, claims


def _verify_sig(obj: Any, did: object) -> None:
    try:
        key = OKPKey.import_key(public_key_from_did(did))
    except IdentityError as exc:
        raise CredentialError(str(exc)) from None
    alg = obj.headers()["alg"]
    try:
        ok = jws.validate_compact(obj, key, algorithms=[alg])
    except (JoseError, ValueError, TypeError) as exc:
        raise CredentialError(f"signature check failed: {_jose_reason(exc)}") from None
    if not ok:
        raise CredentialError(f"bad signature: not signed by {did}")


def _jose_reason(exc: Exception) -> str:
    return (
        getattr(exc, "description", None)
        or getattr(exc, "error", None)
        or str(exc)
        or type(exc).__name__
    )


def _int_claim(claims: Mapping[str, Any], name: str) -> int:
    v = claims.get(name)
    if type(v) is not int:
        raise CredentialError(f"claim `{name}` must be an integer")
    return v


def _claims_of(claims: dict[str, Any]) -> Link:
    for name in ("iss", "sub"):
        try:
            public_key_from_did(claims.get(name))
        except IdentityError as exc:
            raise CredentialError(f"claim `{name}`: {exc}") from None
    _check_audience(claims.get("aud"))
    jti = claims.get("jti")
    if type(jti) is not str or len(jti) != 32 or not all(c in "0123456789abcdef" for c in jti):
        raise CredentialError("claim `jti` must be 32 lowercase hex characters")
    _int_claim(claims, "iat")
    nbf, exp = _int_claim(claims, "nbf"), _int_claim(claims, "exp")
    if nbf > exp or exp - nbf > MAX_TTL:
        raise CredentialError("claims `nbf`/`exp`: not a valid window of at most a year")
    ring = claims.get("ring")
    if type(ring) is not int or not 0 <= ring <= 3:
        raise CredentialError("claim `ring` must be an integer 0-3")
    return Link(
        issuer=claims["iss"],
        subject=claims["sub"],
        jti=jti,
        ring=ring,
        not_before=nbf,
        expires=exp,
        capabilities=parse_capabilities(claims.get("capabilities"), "claim `capabilities`"),
    )


def peek(token: str) -> dict[str, Any]:
    """The claims of a credential, NOT verified (for display and delegation)."""
    _, claims = _decode(token, CRED_TYPE, _CLAIMS)
    _claims_of(claims)
    return claims


class Verifier:
    """Verifies credentials and presentations against a set of trusted root DIDs.

    Signatures of a token already verified are cached (by exact token); the time,
    depth and revocation checks run on every call.
    """

    def __init__(
        self,
        roots: Iterable[str],
        audience: str,
        *,
        max_depth: int = 4,
        skew: float = 30.0,
        revoked: Callable[[str], bool] | None = None,
        agent_revoked: Callable[[str], bool] | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = 4096,
    ) -> None:
        self.roots = frozenset(roots)
        for root in self.roots:
            public_key_from_did(root)
        _check_audience(audience)
        if type(max_depth) is not int or max_depth < 1:
            raise CredentialError("max_depth must be a positive integer")
        self.audience = audience
        self.max_depth = max_depth
        self.skew = skew
        self._revoked = revoked
        self._agent_revoked = agent_revoked
        self._clock = clock
        self._cache: OrderedDict[str, tuple[Link, ...]] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def verify(self, token: str) -> VerifiedCredential:
        """The verified credential; CredentialError saying which link failed and why."""
        chain = self._chain(token)
        now = self._clock()
        for depth, link in enumerate(chain):
            where = "credential" if depth == len(chain) - 1 else f"chain link {depth}"
            if now < link.not_before - self.skew:
                raise CredentialError(f"{where} is not valid yet (nbf {link.not_before})")
            if now >= link.expires + self.skew:
                raise CredentialError(f"{where} expired at {link.expires}")
            if self._revoked is not None and self._revoked(link.jti):
                raise CredentialError(f"{where} {link.jti} is revoked")
            if self._agent_revoked is not None:
                for who in (link.issuer, link.subject):
                    if self._agent_revoked(who):
                        raise CredentialError(f"{where}: agent {who} is revoked")
        leaf = chain[-1]
        return VerifiedCredential(
            subject=leaf.subject,
            issuer=leaf.issuer,
            root=chain[0].issuer,
            audience=self.audience,
            ring=leaf.ring,
            capabilities=leaf.capabilities,
            not_before=leaf.not_before,
            expires=min(link.expires for link in chain),
            jti=leaf.jti,
            chain=chain,
            token=token,
        )

    def _chain(self, token: str) -> tuple[Link, ...]:
        cached = self._cache.get(token) if type(token) is str else None
        if cached is not None:
            return cached
        chain = self._walk(token, 0)
        with self._lock:
            self._cache[token] = chain
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return chain

    def _walk(self, token: str, depth: int) -> tuple[Link, ...]:
        if depth >= self.max_depth:
            raise CredentialError(f"delegation chain longer than {self.max_depth} links")
        where = "credential" if depth == 0 else f"parent credential at depth {depth}"
        try:
            obj, claims = _decode(token, CRED_TYPE, _CLAIMS)
            link = _claims_of(claims)
            _verify_sig(obj, link.issuer)
        except CredentialError as exc:
            raise CredentialError(f"{where}: {exc}") from None
        if claims["aud"] != self.audience:
            raise CredentialError(f"{where}: audience {claims['aud']!r} is not {self.audience!r}")
        prf = claims.get("prf")
        if prf is None:
            if link.issuer not in self.roots:
                raise CredentialError(f"{where}: issuer {link.issuer} is not a trusted root")
            return (link,)
        parents = self._walk(prf, depth + 1)
        parent = parents[-1]
        if link.issuer != parent.subject:
            raise CredentialError(
                f"{where}: issued by {link.issuer}, but the parent was granted to {parent.subject}"
            )
        if link.expires > parent.expires:
            raise CredentialError(
                f"{where}: expires after its parent ({link.expires} > {parent.expires})"
            )
        if link.ring < parent.ring:
            raise CredentialError(
                f"{where}: ring {link.ring} is more privileged than the parent's {parent.ring}"
            )
        why = capabilities_within(link.capabilities, parent.capabilities)
        if why:
            raise CredentialError(f"{where}: delegation widens: {why}")
        return (*parents, link)

    def verify_presentation(
        self, token: str, proof: str, challenges: Challenges
    ) -> VerifiedCredential:
        """Verify ``token`` and that its subject signed ``proof`` over a fresh challenge."""
        cred = self.verify(token)
        try:
            obj, claims = _decode(proof, POP_TYPE, _POP_CLAIMS)
        except CredentialError as exc:
            raise CredentialError(f"proof of possession: {exc}") from None
        if obj.headers().get("kid") != cred.subject:
            raise CredentialError("proof of possession: not signed by the credential's subject")
        try:
            _verify_sig(obj, cred.subject)
        except CredentialError as exc:
            raise CredentialError(f"proof of possession: {exc}") from None
        if claims.get("aud") != self.audience:
            raise CredentialError("proof of possession: for another audience")
        if claims.get("cth") != _token_hash(token):
            raise CredentialError("proof of possession: made for another credential")
        iat = claims.get("iat")
        if type(iat) is not int or abs(self._clock() - iat) > self.skew:
            raise CredentialError("proof of possession: `iat` is not within the allowed clock skew")
        nonce = claims.get("nonce")
        if type(nonce) is not str or not challenges.spend(nonce):
            raise CredentialError("proof of possession: unknown, expired or already used challenge")
        return cred


class Challenges:
    """Single-use nonces a verifier hands out for proofs of possession."""

    def __init__(
        self,
        ttl: float = 60.0,
        max_outstanding: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.ttl = ttl
        self.max_outstanding = max_outstanding
        self._clock = clock
        self._open: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def issue(self) -> str:
        nonce = secrets.token_hex(16)
        now = self._clock()
        with self._lock:
            self._expire(now)
            if len(self._open) >= self.max_outstanding:
                self._open.popitem(last=False)
            self._open[nonce] = now + self.ttl
        return nonce

    def spend(self, nonce: str) -> bool:
        """True (once) for a nonce this object issued that has not expired."""
        with self._lock:
            deadline = self._open.pop(nonce, None)
        return deadline is not None and self._clock() < deadline

    def _expire(self, now: float) -> None:
        while self._open:
            nonce, deadline = next(iter(self._open.items()))
            if deadline > now:
                break
            del self._open[nonce]
