"""Exceptions raised by warden.

Every exception warden raises on purpose derives from one root::

    WardenError
    ├── ConfigurationError        a Governor or store was set up wrongly
    ├── InvalidActionError        an Action (or its JSON form) is malformed
    ├── PolicyError               a policy document did not load (carries diagnostics)
    ├── ActionBlocked             an action did not go ahead (carries the Decision)
    │   ├── ActionDenied          the decision was deny
    │   ├── ApprovalRequired      the decision was require_approval
    │   └── ActionKilled          the call was cancelled by a kill while in flight
    ├── ApprovalError             an approval operation was refused
    │   ├── ApprovalNotFound
    │   ├── SelfApprovalError
    │   └── ApprovalStateError    expired, already decided, consumed
    ├── AuditError                the audit log cannot accept or serve records
    ├── IdentityError             a key, DID, credential or proof is malformed or refused
    │   ├── CredentialError       a credential or delegation chain does not verify
    │   ├── HandshakeError        a handshake failed or the peer was refused
    │   └── EnvelopeError         a signed envelope was rejected
    ├── TrustError                the trust store refused an event or cannot be read
    ├── RuntimeStateError         the kill switch / ring store cannot be read or written
    ├── SandboxError              the sandbox cannot run a command safely (fails closed)
    ├── SagaError                 a saga cannot be started, run or recovered
    ├── GatewayError              the MCP gateway cannot be configured or started as asked
    ├── PinError                  the MCP pin store cannot be read or written
    └── VerificationError         a proof, signature or log failed verification
        ├── InclusionProofError
        ├── ConsistencyProofError
        ├── CheckpointError       bad format, wrong origin, bad signature
        └── LogIntegrityError     a stored record, batch or sequence is wrong
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from warden.action import Decision
    from warden.policy._diagnostics import Diagnostic

__all__ = [
    "ActionBlocked",
    "ActionDenied",
    "ActionKilled",
    "ApprovalError",
    "ApprovalNotFound",
    "ApprovalRequired",
    "ApprovalStateError",
    "AuditError",
    "CheckpointError",
    "ConfigurationError",
    "ConsistencyProofError",
    "CredentialError",
    "DeploymentError",
    "EnvelopeError",
    "FlowError",
    "GatewayError",
    "HandshakeError",
    "IdentityError",
    "InclusionProofError",
    "InvalidActionError",
    "LogIntegrityError",
    "PinError",
    "PolicyError",
    "RuntimeStateError",
    "SagaError",
    "SandboxError",
    "SelfApprovalError",
    "SupplyChainError",
    "TrustError",
    "VerificationError",
    "WardenError",
]


class WardenError(Exception):
    """Root of every exception warden raises deliberately."""


class ConfigurationError(WardenError):
    """A Governor, store or command was configured in a way that cannot work."""


class InvalidActionError(WardenError, ValueError):
    """An Action, or the JSON it was read from, is malformed."""


class PolicyError(WardenError):
    """A policy document failed to load; ``diagnostics`` holds every error found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        first = self.diagnostics[0].render() if self.diagnostics else "policy did not load"
        more = len(self.diagnostics) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))


class ActionBlocked(WardenError):
    """An action was not allowed to run; ``decision`` says why."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        reasons = "; ".join(decision.reasons) or decision.effect.value
        super().__init__(f"{decision.effect.value}: {reasons}")


class ActionDenied(ActionBlocked):
    """The policy denied the action."""


class ActionKilled(ActionBlocked):
    """A kill switch stopped the call while it was in flight (its outcome is ``killed``)."""


class ApprovalRequired(ActionBlocked):
    """The action needs a human approval first; ``approval_id`` names the pending request."""

    @property
    def approval_id(self) -> str | None:
        return self.decision.approval_id


class ApprovalError(WardenError):
    """An approval operation was refused."""


class ApprovalNotFound(ApprovalError):
    """No approval request has that id."""


class SelfApprovalError(ApprovalError):
    """The agent that asked for an action tried to approve it."""


class ApprovalStateError(ApprovalError):
    """The request is not in a state that allows the operation (expired, decided, used)."""


class AuditError(WardenError):
    """The audit log cannot accept or serve records (closed, full, store failure)."""


class IdentityError(WardenError):
    """A key, DID, credential or proof is malformed or refused; never carries key material."""


class CredentialError(IdentityError):
    """A credential, delegation chain or proof of possession does not verify."""


class HandshakeError(IdentityError):
    """A handshake failed: bad message, bad signature, replay, or the peer was refused."""


class EnvelopeError(IdentityError):
    """A signed envelope was rejected (bad signature, replay, reordering, misaddressed)."""


class TrustError(WardenError):
    """The trust store refused an event (bad signature, bad field) or cannot be read."""


class RuntimeStateError(WardenError):
    """The kill switch or ring store cannot be read or written (decisions then deny)."""


class SandboxError(WardenError):
    """The sandbox cannot run a command with the isolation asked for; nothing ran."""


class GatewayError(WardenError):
    """The MCP gateway cannot be configured or started as asked.

    ``diagnostics`` holds every problem found in a servers file, located.
    """

    def __init__(self, message: str, diagnostics: Sequence[Diagnostic] = ()) -> None:
        super().__init__(message)
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)


class PinError(WardenError):
    """The MCP pin store cannot be read or written, or a pin operation was refused."""


class FlowError(WardenError):
    """The flow store (labels that outlive a session) cannot be read or written."""


class SupplyChainError(WardenError):
    """A BOM, a bundle or a deployment does not verify, or differs from what runs.

    ``report`` lists one line per problem (each difference, or why a signature
    does not verify).
    """

    def __init__(self, message: str, report: Sequence[str] = ()) -> None:
        self.report: tuple[str, ...] = tuple(report)
        super().__init__(message)


class DeploymentError(SupplyChainError):
    """A deployment manifest failed to load; ``diagnostics`` holds every error found."""

    def __init__(self, diagnostics: Sequence[Diagnostic]) -> None:
        self.diagnostics: tuple[Diagnostic, ...] = tuple(diagnostics)
        first = self.diagnostics[0].render() if self.diagnostics else "deployment did not load"
        more = len(self.diagnostics) - 1
        super().__init__(
            first + (f" (and {more} more)" if more > 0 else ""),
            [d.render() for d in self.diagnostics],
        )


class SagaError(WardenError):
    """A saga cannot be started, run or recovered (unknown step, store failure, bad state)."""


class VerificationError(WardenError):
    """A verifier found something wrong; ``expected`` and ``found`` say what.

    Verifiers return None on success and raise a subclass of this on failure;
    any other exception escaping a verifier is a bug.
    """

    def __init__(self, message: str, *, expected: object = None, found: object = None) -> None:
        self.expected = expected
        self.found = found
        super().__init__(message)


class InclusionProofError(VerificationError):
    """An inclusion proof does not lead to the expected root."""


class ConsistencyProofError(VerificationError):
    """A consistency proof does not show the new tree extends the old one."""


class CheckpointError(VerificationError):
    """A checkpoint is malformed, from another log, or not signed by the expected key."""


class LogIntegrityError(VerificationError):
    """A stored record, batch or sequence number does not match what the log committed to.

    ``index`` names the first bad entry (or -1 when the problem is not one entry).
    """

    def __init__(
        self, message: str, *, index: int = -1, expected: object = None, found: object = None
    ) -> None:
        self.index = index
        super().__init__(message, expected=expected, found=found)
