"""The tamper-evident audit log: RFC 6962 Merkle tree, proofs and signed checkpoints.

The specification is docs/audit.md.
"""

from warden.audit._checkpoint import (
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_key,
    load_or_create_key,
    parse_checkpoint,
    sign_checkpoint,
)
from warden.audit._events import DECISION_V1, OUTCOME_V1, canonical
from warden.audit._log import AuditLog
from warden.audit._merkle import (
    EMPTY_ROOT,
    CompactRange,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    merkle_root,
    node_hash,
    root_from_nodes,
    subtree_hash,
    verify_consistency,
    verify_inclusion,
)
from warden.audit._store import AuditBackend, AuditStore, open_backend
from warden.audit._verify import VerifyReport, open_for_verify, trusted_verifier, verify_log

__all__ = [
    "DECISION_V1",
    "EMPTY_ROOT",
    "OUTCOME_V1",
    "AuditBackend",
    "AuditLog",
    "AuditStore",
    "Checkpoint",
    "CompactRange",
    "NoteSigner",
    "NoteVerifier",
    "VerifyReport",
    "canonical",
    "consistency_proof",
    "generate_key",
    "inclusion_proof",
    "leaf_hash",
    "load_or_create_key",
    "merkle_root",
    "node_hash",
    "open_backend",
    "open_for_verify",
    "parse_checkpoint",
    "root_from_nodes",
    "sign_checkpoint",
    "subtree_hash",
    "trusted_verifier",
    "verify_consistency",
    "verify_inclusion",
    "verify_log",
]
