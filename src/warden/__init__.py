"""warden: a runtime governance layer for AI agents.

One deterministic interception path in front of every action an agent takes:
what the policy denies does not run, what needs a human waits for one.
"""

from typing import TYPE_CHECKING, Any

from warden.action import Action, Decision, Effect, FlowLabels
from warden.approvals import ApprovalRequest, ApprovalStore
from warden.errors import (
    ActionBlocked,
    ActionDenied,
    ActionKilled,
    ApprovalError,
    ApprovalRequired,
    AuditError,
    ConfigurationError,
    CredentialError,
    FlowError,
    IdentityError,
    InvalidActionError,
    PolicyError,
    RuntimeStateError,
    SagaError,
    SandboxError,
    SupplyChainError,
    TrustError,
    VerificationError,
    WardenError,
)
from warden.governor import DecisionLog, DecisionSink, Governor, Session
from warden.policy import Policy, load_policy, load_policy_text

if TYPE_CHECKING:
    from warden.audit import AuditLog
    from warden.identity.gate import IdentityConfig

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # These pull in `cryptography` (and joserfc); load them when first used, not on `import warden`.
    if name == "AuditLog":
        from warden.audit import AuditLog

        return AuditLog
    if name == "IdentityConfig":
        from warden.identity.gate import IdentityConfig

        return IdentityConfig
    raise AttributeError(f"module 'warden' has no attribute {name!r}")


__all__ = [
    "Action",
    "ActionBlocked",
    "ActionDenied",
    "ActionKilled",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalRequired",
    "ApprovalStore",
    "AuditError",
    "AuditLog",
    "ConfigurationError",
    "CredentialError",
    "Decision",
    "DecisionLog",
    "DecisionSink",
    "Effect",
    "FlowError",
    "FlowLabels",
    "Governor",
    "IdentityConfig",
    "IdentityError",
    "InvalidActionError",
    "Policy",
    "PolicyError",
    "RuntimeStateError",
    "SagaError",
    "SandboxError",
    "Session",
    "SupplyChainError",
    "TrustError",
    "VerificationError",
    "WardenError",
    "__version__",
    "load_policy",
    "load_policy_text",
]
