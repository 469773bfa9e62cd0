"""Streaming verification of an audit log (docs/audit.md, "Verification").

One pass over the entries in ``seq`` order (chunked reads, O(log n) memory)
re-hashes every record, checks its position, folds it into a compact range,
checks every Merkle node it completes against the stored one (so proofs
served later are sound), and checks every batch's digest and root and every
stored checkpoint as the stream reaches their sizes. The first problem
raises; nothing is repaired or skipped.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import msgspec

from warden.audit._checkpoint import Checkpoint, NoteVerifier, parse_checkpoint
from warden.audit._events import DECISION_V1, OUTCOME_V1
from warden.audit._merkle import EMPTY_ROOT, consistency_proof, node_hash, verify_consistency
from warden.audit._store import AuditBackend, open_backend
from warden.errors import (
    AuditError,
    CheckpointError,
    ConfigurationError,
    LogIntegrityError,
    VerificationError,
)

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


def trusted_verifier(store: AuditBackend, key: str | Path | None) -> tuple[NoteVerifier, str]:
    """The key to trust, and where it came from: ``key``, else ``audit-key.pub``, else the log.

    A log whose recorded key differs from the trusted key was re-signed: CheckpointError.
    """
    try:
        recorded = store.meta("verifier")
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{store.path}: not a readable audit log ({exc})") from None
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
    except (CheckpointError, ConfigurationError, ValueError) as exc:
        raise CheckpointError(f"{source}: not a verifier key ({exc})") from None
    if recorded is not None and recorded != verifier.to_string():
        shown = "+".join(recorded.split("+")[:2])
        raise CheckpointError(
            f"the log records key `{shown}`, but the trusted key ({source}) is "
            f"`{verifier.name}+{verifier.key_id.hex()}`: the log was re-signed",
            expected=verifier.to_string(),
            found=recorded,
        )
    return verifier, source


def _hex(b: bytes) -> str:
    return b.hex()


def verify_log(
    store: AuditBackend,
    verifier: NoteVerifier,
    *,
    earlier: str | None = None,
) -> VerifyReport:
    """Verify ``store`` completely; raise a VerificationError subclass at the first problem.

    ``earlier`` is a signed checkpoint kept elsewhere; the log must extend it. A file that
    SQLite cannot read (garbage, a malformed page, a missing table) raises AuditError.
    """
    # a store that can (PostgreSQL) gives one consistent view of a log other writers extend
    snapshot = getattr(store, "snapshot", None)
    try:
        with snapshot() if callable(snapshot) else contextlib.nullcontext():
            return _verify_log(store, verifier, earlier)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{store.path}: not a readable audit log ({exc})") from None


def _verify_log(store: AuditBackend, verifier: NoteVerifier, earlier: str | None) -> VerifyReport:
    origin = store.origin
    stored_cps: dict[int, Checkpoint] = {}
    for size, note in store.checkpoints():
        cp = _parse(note, verifier, origin, f"stored checkpoint at size {size}")
        if cp.size != size:
            raise CheckpointError(f"stored checkpoint filed under size {size} says {cp.size}")
        stored_cps[size] = cp
    extends: Checkpoint | None = None
    if earlier is not None:
        extends = _parse(earlier, verifier, origin, "the given checkpoint")
    wanted: dict[int, list[Checkpoint]] = {}
    for cp in (*stored_cps.values(), *([extends] if extends else [])):
        wanted.setdefault(cp.size, []).append(cp)

    nodes = _NodeChecker(store)
    sha = hashlib.sha256
    stack: list[bytes] = []  # the compact range: one perfect subtree per set bit of size
    _check_roots(wanted, 0, _root(stack))
    batches = store.batches()
    batch = next(batches, None)
    nbatches = 0
    in_batch = 0
    digest = sha()
    expected = 0
    for rows in store.scan_chunks():
        clean = _chunk_ok(rows, expected)
        for seq, leaf, data, bid in rows:
            if clean:
                pass  # every per-entry check below already passed for the whole chunk
            elif type(data) is not bytes or type(leaf) is not bytes or type(bid) is not int:
                raise LogIntegrityError(
                    f"entry {expected}: a stored value has the wrong type", index=expected
                )
            elif seq != expected:
                raise LogIntegrityError(
                    f"entry {expected}: missing (the next stored entry is {seq})",
                    index=expected,
                    expected=expected,
                    found=seq,
                )
            else:
                _check_entry(seq, leaf, data)
            if batch is None or bid != batch[0] or not batch[1] <= seq < batch[1] + batch[2]:
                raise LogIntegrityError(
                    f"entry {seq}: not covered by its batch record",
                    index=seq,
                    expected=batch[0] if batch else None,
                    found=bid,
                )
            # fold the leaf in; every perfect subtree it completes must be the stored node
            h = leaf
            level = 0
            while expected >> level & 1:
                h = sha(b"\x01" + stack.pop() + h).digest()
                level += 1
                nodes.expect(level, expected >> level, h)
            stack.append(h)
            digest.update(leaf)
            in_batch += 1
            expected += 1
            if in_batch == batch[2]:
                _end_batch(batch, digest.digest(), _root(stack), expected)
                nbatches += 1
                batch = next(batches, None)
                in_batch = 0
                digest = sha()
                if batch is not None and batch[1] != expected:
                    raise LogIntegrityError(
                        f"batch {batch[0]} starts at entry {batch[1]}, expected {expected}",
                        index=expected,
                        expected=expected,
                        found=batch[1],
                    )
            if expected in wanted:
                _check_roots(wanted, expected, _root(stack))
    size = expected
    if batch is not None:
        raise LogIntegrityError(
            f"batch {batch[0]} covers entries {batch[1]}..{batch[1] + batch[2] - 1} but the log "
            f"has {size} entries (truncated, or a torn batch)",
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
    root = _root(stack)
    checked = nodes.finish(size)
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
    return VerifyReport(size, root, nbatches, len(stored_cps), checked, extends, verifier.name)


def _parse(note: str, verifier: NoteVerifier, origin: str, what: str) -> Checkpoint:
    """``parse_checkpoint``, its error prefixed with which checkpoint it was."""
    try:
        return parse_checkpoint(note, verifier, origin)
    except CheckpointError as exc:
        raise CheckpointError(f"{what}: {exc}", expected=exc.expected, found=exc.found) from None


def _check_entry(seq: int, leaf: bytes, data: bytes) -> None:
    """The per-entry checks, raising the precise error (the slow path of :func:`_chunk_ok`)."""
    computed = hashlib.sha256(b"\x00" + data).digest()
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


def _chunk_ok(rows: list[tuple[int, bytes, bytes, int]], first: int) -> bool:
    """True when every row of a chunk passes the per-entry checks, tested in bulk.

    Comprehensions over a chunk are about twice as fast as the row-by-row loop;
    on any doubt this returns False and the loop finds and names the problem.
    """
    try:
        seqs = [r[0] for r in rows]
        if seqs != list(range(first, first + len(rows))):
            return False
        if not all(type(r[3]) is int for r in rows):
            return False
        sha = hashlib.sha256
        if [sha(b"\x00" + r[2]).digest() for r in rows] != [r[1] for r in rows]:
            return False
        return [_decode_head(r[2]).seq for r in rows] == seqs
    except Exception:  # noqa: BLE001 - wrong types, undecodable records: take the slow path
        return False


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


def _root(stack: list[bytes]) -> bytes:
    if not stack:
        return EMPTY_ROOT
    h = stack[-1]
    for left in reversed(stack[:-1]):
        h = node_hash(left, h)
    return h


class _NodeChecker:
    """Compares the nodes a verifier recomputes with the stored ones, one cursor per level.

    Nodes of one level complete in index order, so each level is one streaming
    read; memory is one chunk per level (O(log n) chunks).
    """

    def __init__(self, store: AuditBackend) -> None:
        self.store = store
        self.pending: dict[int, list[tuple[int, bytes]]] = {}
        self.next_idx: dict[int, int] = {}
        self.count = 0

    def _row(self, level: int) -> tuple[int, bytes] | None:
        buf = self.pending.get(level)
        if not buf:
            start = self.next_idx.get(level, 0)
            buf = self.store.node_rows(level, start, 8192)
            buf.reverse()
            self.pending[level] = buf
            if not buf:
                return None
        row = buf.pop()
        self.next_idx[level] = row[0] + 1
        return row

    def expect(self, level: int, idx: int, h: bytes) -> None:
        row = self._row(level)
        if row is None or row[0] != idx:
            raise LogIntegrityError(
                f"Merkle node ({level}, {idx}) is missing from the store",
                expected=idx,
                found=None if row is None else row[0],
            )
        if row[1] != h:
            raise LogIntegrityError(
                f"Merkle node ({level}, {idx}) does not match its leaves",
                expected=_hex(h),
                found=_hex(row[1]),
            )
        self.count += 1

    def finish(self, size: int) -> int:
        """Check no stored node lies beyond the tree; return how many nodes were checked."""
        level = 1
        while size >> level or self.store.node_rows(level, 0, 1):
            extra = self.store.node_rows(level, size >> level, 1)
            if extra:
                raise LogIntegrityError(
                    f"Merkle node ({level}, {extra[0][0]}) lies beyond the log's {size} entries",
                    expected=size >> level,
                    found=extra[0][0],
                )
            level += 1
        return self.count


def open_for_verify(path: str | Path) -> AuditBackend:
    """Open a log read-only, turning storage errors into AuditError (never a traceback).

    With ``WARDEN_DATABASE_URL`` set, the fleet's log on PostgreSQL (``path`` is
    then where ``audit-key.pub`` is looked for); see ``open_backend``.
    """
    return open_backend(path, readonly=True)
