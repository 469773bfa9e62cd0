"""warden: a runtime governance layer for AI agents.

One deterministic interception path in front of every action an agent takes:
what the policy denies does not run, what needs a human waits for one.
"""

from warden.action import Action, Decision, Effect
from warden.approvals import ApprovalRequest, ApprovalStore
from warden.audit import AuditLog
from warden.errors import (
    ActionBlocked,
    ActionDenied,
    ApprovalError,
    ApprovalRequired,
    AuditError,
    ConfigurationError,
    InvalidActionError,
    PolicyError,
    VerificationError,
    WardenError,
)
from warden.governor import DecisionLog, DecisionSink, Governor, Session
from warden.policy import Policy, load_policy, load_policy_text

__version__ = "0.1.0"

__all__ = [
    "Action",
    "ActionBlocked",
    "ActionDenied",
    "ApprovalError",
    "ApprovalRequest",
    "ApprovalRequired",
    "ApprovalStore",
    "AuditError",
    "AuditLog",
    "ConfigurationError",
    "Decision",
    "DecisionLog",
    "DecisionSink",
    "Effect",
    "Governor",
    "InvalidActionError",
    "Policy",
    "PolicyError",
    "Session",
    "VerificationError",
    "WardenError",
    "__version__",
    "load_policy",
    "load_policy_text",
]
