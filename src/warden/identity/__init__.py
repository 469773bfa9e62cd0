"""Agent identity: did:key, keys, credentials, delegation, handshake and envelopes.

The specification is docs/identity.md. Importing this package loads
``cryptography`` and ``joserfc``; ``import warden`` does not.
"""

from warden.identity.capabilities import Capability, Constraint
from warden.identity.credentials import (
    Challenges,
    Link,
    VerifiedCredential,
    Verifier,
    delegate,
    issue,
    make_proof,
    peek,
)
from warden.identity.did import did_from_public_key, is_did, public_key_from_did
from warden.identity.keys import Identity, KeyStore, verify_signature

__all__ = [
    "Capability",
    "Challenges",
    "Constraint",
    "Identity",
    "KeyStore",
    "Link",
    "VerifiedCredential",
    "Verifier",
    "delegate",
    "did_from_public_key",
    "is_did",
    "issue",
    "make_proof",
    "peek",
    "public_key_from_did",
    "verify_signature",
]
