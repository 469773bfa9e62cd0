"""Agent trust: signed evidence, decaying scores, tiers and revocation.

The specification is docs/identity.md ("Trust").
"""

from warden.trust._events import TIERS, TrustEvent, sign_event, tier_of, verify_event
from warden.trust._store import (
    DEFAULT_BASELINE,
    AgentTrust,
    RevokedCredential,
    TrustRecord,
    TrustStore,
    default_trust_path,
)

__all__ = [
    "DEFAULT_BASELINE",
    "TIERS",
    "AgentTrust",
    "RevokedCredential",
    "TrustEvent",
    "TrustRecord",
    "TrustStore",
    "default_trust_path",
    "sign_event",
    "tier_of",
    "verify_event",
]
