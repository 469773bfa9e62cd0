"""Streaming verification of an audit log (docs/audit.md, "Verification").

One pass over the entries in ``seq`` order (chunked reads, O(log n) memory)
re-hashes every record, checks its position, folds it into a compact range,
and checks every batch's digest and root and every stored checkpoint as the
stream reaches their sizes. A second pass checks every stored Merkle node
against its children, so that proofs served later are sound. The first
problem raises; nothing is repaired or skipped.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import msgspec

from warden.audit._checkpoint import Checkpoint, NoteVerifier, parse_checkpoint
from warden.audit._events import DECISION_V1, OUTCOME_V1
from warden.audit._merkle import (
    CompactRange,
    consistency_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
)
from warden.audit._store import AuditStore
from warden.errors import CheckpointError, LogIntegrityError, VerificationError

__all__ = ["VerifyReport", "trusted_verifier", "verify_log"]

KNOWN_TYPES = frozenset({DECISION_V1, OUTCOME_V1})


class _Head(msgspec.Struct):
    seq: int
    type: str


_decode_head = msgspec.json.Decoder(_Head).decode


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """What a successful verification covered."""

    size: int
    root: bytes
    batches: int
    checkpoints: int
    nodes: int
    extends: Checkpoint | None
    key: str


def trusted_verifier(store: AuditStore, key: str | Path | None) -> tuple[NoteVerifier, str]:
    """The key to trust, and where it came from: ``key``, else ``audit-key.pub``, else the log.

    A log whose recorded key differs from the trusted key was re-signed: CheckpointError.
    """
    recorded = store.meta("verifier")
    source = ""
    text: str | None = None
    if key is not None:
        p = Path(key)
        text = p.read_text().strip() if p.is_file() else str(key).strip()
        source = str(key)
    else:
        pub = store.path.with_name("audit-key.pub")
        if pub.is_file():
            text, source = pub.read_text().strip(), str(pub)
        elif recorded is not None:
            text, source = recorded, "the key recorded in the log"
    if text is None:
        raise CheckpointError("no key to verify checkpoints with; pass --key")
    try:
        verifier = NoteVerifier.from_string(text)
    except (CheckpointError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a verifier key ({exc})") from None
    if recorded is not None and recorded != verifier.to_string():
        raise CheckpointError(
            f"the log records key `{recorded.split('+')[0]}+{recorded.split('+')[1]}`, "
            f"but the trusted key ({source}) is `{verifier.name}+{verifier.key_id.hex()}`: "
            "the log was re-signed",
            expected=verifier.to_string(),
            found=recorded,
        )
    return verifier, source


def _hex(b: bytes) -> str:
    return b.hex()


def verify_log(
    store: AuditStore,
    verifier: NoteVerifier,
    *,
    earlier: str | None = None,
) -> VerifyReport:
    """Verify ``store`` completely; raise a VerificationError subclass at the first problem.

    ``earlier`` is a signed checkpoint kept elsewhere; the log must extend it.
    """
    origin = store.origin
    stored_cps: dict[int, Checkpoint] = {}
    for size, note in store.checkpoints():
        try:
            cp = parse_checkpoint(note, verifier, origin)
        except CheckpointError as exc:
            raise CheckpointError(
                f"stored checkpoint at size {size}: {exc}", expected=exc.expected, found=exc.found
            ) from None
        if cp.size != size:
            raise CheckpointError(f"stored checkpoint filed under size {size} says {cp.size}")
        stored_cps[size] = cp
    extends: Checkpoint | None = None
    if earlier is not None:
        try:
            extends = parse_checkpoint(earlier, verifier, origin)
        except CheckpointError as exc:
            raise CheckpointError(
                f"the given checkpoint: {exc}", expected=exc.expected, found=exc.found
            ) from None
    wanted: dict[int, list[Checkpoint]] = {}
    for cp in (*stored_cps.values(), *([extends] if extends else [])):
        wanted.setdefault(cp.size, []).append(cp)

    cr = CompactRange()
    _check_roots(wanted, 0, cr.root())
    batches = store.batches()
    batch = next(batches, None)
    nbatches = 0
    in_batch = 0
    digest = hashlib.sha256()
    expected = 0
    for seq, leaf, data, bid in store.scan():
        if seq != expected:
            raise LogIntegrityError(
                f"entry {expected}: missing (the next stored entry is {seq})",
                index=expected,
                expected=expected,
                found=seq,
            )
        computed = leaf_hash(data)
        if computed != leaf:
            raise LogIntegrityError(
                f"entry {seq}: leaf hash does not match the record",
                index=seq,
                expected=_hex(computed),
                found=_hex(leaf),
            )
        try:
            head = _decode_head(data)
        except msgspec.DecodeError as exc:
            raise LogIntegrityError(
                f"entry {seq}: record is not a valid record ({exc})", index=seq
            ) from None
        if head.seq != seq:
            raise LogIntegrityError(
                f"entry {seq}: the record says it is entry {head.seq} (moved or swapped)",
                index=seq,
                expected=seq,
                found=head.seq,
            )
        if batch is None or not batch[1] <= seq < batch[1] + batch[2] or bid != batch[0]:
            raise LogIntegrityError(
                f"entry {seq}: not covered by its batch record",
                index=seq,
                expected=batch[0] if batch else None,
                found=bid,
            )
        cr.append(leaf)
        digest.update(leaf)
        in_batch += 1
        expected += 1
        if in_batch == batch[2]:
            _end_batch(batch, digest.digest(), cr.root(), expected)
            nbatches += 1
            batch = next(batches, None)
            in_batch = 0
            digest = hashlib.sha256()
            if batch is not None and batch[1] != expected:
                raise LogIntegrityError(
                    f"batch {batch[0]} starts at entry {batch[1]}, expected {expected}",
                    index=expected,
                    expected=expected,
                    found=batch[1],
                )
        if expected in wanted:
            _check_roots(wanted, expected, cr.root())
    size = expected
    if batch is not None:
        raise LogIntegrityError(
            f"batch {batch[0]} covers entries {batch[1]}..{batch[1] + batch[2] - 1} but the log "
            f"ends at entry {size - 1} (truncated, or a torn batch)",
            index=size,
            expected=batch[1] + batch[2],
            found=size,
        )
    beyond = [s for s in wanted if s > size]
    if beyond:
        raise LogIntegrityError(
            f"a checkpoint covers {max(beyond)} entries but the log has {size} (truncated)",
            index=size,
            expected=max(beyond),
            found=size,
        )
    root = cr.root()
    nodes = _verify_nodes(store, size)
    if extends is not None and extends.size <= size:
        proof = consistency_proof(extends.size, size, store.get_node)
        try:
            verify_consistency(extends.size, size, extends.root, root, proof)
        except VerificationError as exc:
            raise LogIntegrityError(
                f"the log does not extend the given checkpoint: {exc}",
                expected=exc.expected,
                found=exc.found,
            ) from None
    return VerifyReport(size, root, nbatches, len(stored_cps), nodes, extends, verifier.name)


def _check_roots(wanted: dict[int, list[Checkpoint]], size: int, root: bytes) -> None:
    for cp in wanted.get(size, ()):
        if cp.root != root:
            raise LogIntegrityError(
                f"the first {size} entries do not match the signed checkpoint of that size "
                "(history rewritten)",
                index=size,
                expected=_hex(cp.root),
                found=_hex(root),
            )


def _end_batch(
    batch: tuple[int, int, int, bytes, bytes], digest: bytes, root: bytes, size: int
) -> None:
    bid, first, count, want_digest, want_root = batch
    if digest != want_digest:
        raise LogIntegrityError(
            f"batch {bid} (entries {first}..{first + count - 1}): its leaves do not match the "
            "batch digest",
            index=first,
            expected=_hex(want_digest),
            found=_hex(digest),
        )
    if root != want_root:
        raise LogIntegrityError(
            f"batch {bid} (entries {first}..{first + count - 1}): the tree root after it does "
            "not match the recorded root",
            index=size - 1,
            expected=_hex(want_root),
            found=_hex(root),
        )


def _level_rows(store: AuditStore, level: int) -> Iterator[tuple[int, bytes]]:
    if level == 0:
        for seq, leaf, _, _ in store.scan():
            yield seq, leaf
        return
    nxt = 0
    while True:
        rows = store.node_rows(level, nxt, 8192)
        if not rows:
            return
        yield from rows
        nxt = rows[-1][0] + 1


def _verify_nodes(store: AuditStore, size: int) -> int:
    """Check every stored node equals the hash of its two children; return how many."""
    checked = 0
    level = 1
    while size >> level:
        children = _level_rows(store, level - 1)
        count = 0
        for idx, h in _level_rows(store, level):
            if idx != count:
                raise LogIntegrityError(
                    f"Merkle node ({level}, {count}) is missing", expected=count, found=idx
                )
            left = next(children, None)
            right = next(children, None)
            if left is None or right is None:
                raise LogIntegrityError(f"Merkle node ({level}, {idx}) has no children")
            want = node_hash(left[1], right[1])
            if want != h:
                raise LogIntegrityError(
                    f"Merkle node ({level}, {idx}) does not match its children",
                    expected=_hex(want),
                    found=_hex(h),
                )
            count += 1
        if count != size >> level:
            raise LogIntegrityError(
                f"level {level} of the tree has {count} nodes, expected {size >> level}",
                expected=size >> level,
                found=count,
            )
        checked += count
        level += 1
    if store.node_rows(level, 0, 1):
        raise LogIntegrityError(f"the tree has nodes at level {level}, beyond its size {size}")
    return checked


def open_for_verify(path: str | Path) -> AuditStore:
    """Open a log read-only, turning storage errors into AuditError (never a traceback)."""
    return AuditStore(path, readonly=True)
