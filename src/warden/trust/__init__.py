"""Agent trust: signed evidence, decaying scores, tiers and revocation.

The specification is docs/identity.md ("Trust").
"""

from warden.trust._events import TIERS, TrustEvent, sign_event, tier_of, verify_event
from warden.trust._store import (
    DEFAULT_BASELINE,
    AgentTrust,
    RevokedCredential,
    TrustBackend,
    TrustRecord,
    TrustStore,
    default_trust_path,
    open_trust_store,
)

__all__ = [
    "DEFAULT_BASELINE",
    "TIERS",
    "AgentTrust",
    "RevokedCredential",
    "TrustBackend",
    "TrustEvent",
    "TrustRecord",
    "TrustStore",
    "default_trust_path",
    "open_trust_store",
    "sign_event",
    "tier_of",
    "verify_event",
]
