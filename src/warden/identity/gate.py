"""The identity step of the Governor's path (docs/identity.md, "The Governor").

Agents prove who they are once per session (a proof of possession over a
challenge, or a handshake); each governed action then names its session. The
gate looks the session up, re-checks expiry and revocation, checks the
capability, and hands policy an agent whose ``id``, ``ring``, ``trust`` and
``tier`` come from the verified credential and the trust store.
"""

from __future__ import annotations

import os
import secrets
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warden.action import Action, with_agent
from warden.errors import ConfigurationError, CredentialError, IdentityError
from warden.identity.credentials import Challenges, VerifiedCredential, Verifier
from warden.identity.keys import Identity, KeyStore

if TYPE_CHECKING:
    from warden.identity.handshake import SecureSession
    from warden.trust import TrustBackend, TrustStore

__all__ = ["IdentityConfig", "IdentityGate", "VerifiedAgent"]

MAX_SESSIONS = 100_000


@dataclass(frozen=True, slots=True)
class IdentityConfig:
    """Turns on the identity step: who is trusted to issue credentials, and for what audience.

    ``trust`` defaults to ``$WARDEN_HOME/trust.db``; ``signer`` (the key the
    Governor signs trust events with) to ``$WARDEN_HOME/keys/warden.pem``.
    """

    roots: Sequence[str]
    audience: str
    trust: TrustStore | None = None
    signer: Identity | None = None
    max_depth: int = 4
    skew: float = 30.0
    challenge_ttl: float = 60.0
    violation_weight: int = 25
    report_violations: bool = True


@dataclass(frozen=True, slots=True)
class VerifiedAgent:
    """An agent that proved its credential; act as it with ``Action(session=agent.session)``."""

    session: str
    credential: VerifiedCredential
    via: str = "proof"

    @property
    def did(self) -> str:
        return self.credential.subject


@dataclass(slots=True)
class _Entry:
    cred: VerifiedCredential
    did: str
    ring: int
    expires: float
    version: int
    tools: dict[str, bool] = field(default_factory=dict)


class IdentityGate:
    """Verified sessions and the per-action identity check. Thread-safe."""

    def __init__(
        self,
        config: IdentityConfig,
        home: str | os.PathLike[str],
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not config.roots:
            raise ConfigurationError("identity needs at least one trusted root DID")
        self.config = config
        self._home = Path(home)
        self._clock = clock
        if config.trust is None:
            from warden.trust import open_trust_store

            self.trust: TrustBackend = open_trust_store(self._home, clock=clock)
        else:
            self.trust = config.trust
        try:
            self.verifier = Verifier(
                config.roots,
                config.audience,
                max_depth=config.max_depth,
                skew=config.skew,
                revoked=self.trust.is_credential_revoked,
                agent_revoked=self.trust.is_revoked,
                clock=clock,
            )
        except IdentityError as exc:
            raise ConfigurationError(f"identity: {exc}") from None
        self.challenges = Challenges(ttl=config.challenge_ttl, clock=clock)
        self._signer = config.signer
        self._signer_lock = threading.Lock()
        self._sessions: dict[str, _Entry] = {}
        self._lock = threading.Lock()

    # --- establishing sessions ---------------------------------------------------------------

    def challenge(self) -> str:
        """A single-use nonce for ``make_proof`` (valid ``challenge_ttl`` seconds)."""
        return self.challenges.issue()

    def authenticate(self, token: str, proof: str) -> VerifiedAgent:
        """Verify a credential and its proof of possession; CredentialError says why not."""
        cred = self.verifier.verify_presentation(token, proof, self.challenges)
        return self._open(cred, "proof")

    def admit(self, session: SecureSession) -> VerifiedAgent:
        """Admit the peer of a completed handshake (its credential is verified again here)."""
        cred = self.verifier.verify(session.peer.token)
        if cred.subject != session.peer.subject:
            raise CredentialError("the handshake peer does not hold this credential")
        return self._open(cred, "handshake")

    def _open(self, cred: VerifiedCredential, via: str) -> VerifiedAgent:
        snap = self.trust.snapshot(cred.subject)
        if snap.revoked:
            raise CredentialError(f"agent {cred.subject} is revoked: {snap.reason}")
        sid = secrets.token_hex(16)
        entry = _Entry(cred, cred.subject, cred.ring, float(cred.expires), self.trust.version)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._prune()
            self._sessions[sid] = entry
        return VerifiedAgent(sid, cred, via)

    def end(self, session: str) -> None:
        """Forget a verified session; later actions in it are denied."""
        with self._lock:
            self._sessions.pop(session, None)

    def _prune(self) -> None:
        now = self._clock()
        for sid in [s for s, e in self._sessions.items() if e.expires + self.config.skew <= now]:
            del self._sessions[sid]
        while len(self._sessions) >= MAX_SESSIONS:
            del self._sessions[next(iter(self._sessions))]

    # --- the per-action check ----------------------------------------------------------------

    def resolve(self, action: Action) -> Action | str:
        """The action with a verified agent, or the reason it must be denied."""
        sid = action.session
        if sid is None:
            return "no verified session: authenticate the agent and act in its session"
        entry = self._sessions.get(sid)
        if entry is None:
            return "the session is not a verified session (unknown, ended or expired)"
        if self._clock() >= entry.expires + self.config.skew:
            self.end(sid)
            return f"the credential of {entry.did} expired at {int(entry.expires)}"
        trust = self.trust
        version = trust.version
        if entry.version != version:
            why = self._revoked_link(entry.cred)
            if why is not None:
                self.end(sid)
                return why
            entry.version = version
        if entry.cred.args_free:
            covered = entry.tools.get(action.tool)
            if covered is None:
                covered = entry.cred.covers(action.tool)
                if len(entry.tools) < 1024:
                    entry.tools[action.tool] = covered
        else:
            covered = entry.cred.covers(action.tool, action.args)
        if not covered:
            return f"`{action.tool}` is not covered by the credential's capabilities"
        snap = trust.snapshot(entry.did)
        if snap.revoked:
            return f"agent {entry.did} is revoked: {snap.reason}"
        agent: dict[str, Any] = dict(action.agent) if action.agent else {}
        agent["id"] = entry.did
        agent["ring"] = entry.ring
        agent["trust"] = snap.score
        agent["tier"] = snap.tier
        return with_agent(action, agent)

    def _revoked_link(self, cred: VerifiedCredential) -> str | None:
        for link in cred.chain:
            if self.trust.is_credential_revoked(link.jti):
                return f"credential {link.jti} in the chain of {cred.subject} is revoked"
            for who in (link.issuer, link.subject):
                if self.trust.is_revoked(who):
                    return f"agent {who} in the chain of {cred.subject} is revoked"
        return None

    # --- feedback to trust -------------------------------------------------------------------

    def report_violation(self, agent: Mapping[str, Any], rules: Sequence[str]) -> None:
        """Record a policy violation by a verified agent, signed by the Governor's key."""
        from warden.trust import sign_event

        did = agent.get("id")
        if not self.config.report_violations or type(did) is not str:
            return
        event = sign_event(
            self.signer,
            did,
            "violation",
            self.config.violation_weight,
            note="denied by " + ", ".join(rules),
            now=self._clock(),
        )
        self.trust.record(event)

    @property
    def signer(self) -> Identity:
        if self._signer is None:
            with self._signer_lock:
                if self._signer is None:
                    self._signer = KeyStore(self._home / "keys").load_or_create("warden")
        return self._signer

    def close(self) -> None:
        if self.config.trust is None:
            self.trust.close()
