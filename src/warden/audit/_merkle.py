"""RFC 6962 / RFC 9162 Merkle tree over SHA-256: hashing, proofs and their verification.

Proof generation reads *perfect* subtree hashes through ``get_node(level, index)``, the hash
of the subtree covering leaves ``[index * 2**level, (index + 1) * 2**level)`` (level 0 is the
leaf hashes). A proof for a tree of ``n`` leaves reads O(log n) such nodes: the ragged right
edge is combined from its perfect decomposition, the tree is never rebuilt.

Verifiers return None or raise InclusionProofError / ConsistencyProofError carrying
``expected`` and ``found``; they check argument types and hash lengths first, so no other
exception escapes them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from typing import TypeAlias

from warden.errors import ConsistencyProofError, InclusionProofError, VerificationError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "GetNode",
    "NodeSource",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "merkle_root",
    "node_hash",
    "root_from_nodes",
    "subtree_hash",
    "verify_consistency",
    "verify_inclusion",
]

GetNode: TypeAlias = Callable[[int, int], bytes]
NodeSource: TypeAlias = GetNode | Sequence[bytes]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    """Hash one leaf: ``SHA-256(0x00 || data)``."""
    return hashlib.sha256(_LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """Hash an interior node: ``SHA-256(0x01 || left || right)``."""
    return hashlib.sha256(_NODE_PREFIX + left + right).digest()


# --- compact range --------------------------------------------------------------------------


class CompactRange:
    """The perfect subtrees covering leaves ``[0, size)``, enough to extend the tree and root it.

    State is one hash per set bit of ``size``: O(log n) memory. ``append`` costs amortised O(1)
    hashes, ``root`` O(log n).
    """

    __slots__ = ("_hashes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._hashes: list[bytes] = []

    @classmethod
    def from_nodes(cls, size: int, nodes: NodeSource) -> CompactRange:
        """Resume a range at ``size`` leaves, reading one perfect node per set bit of ``size``."""
        _check_size("size", size)
        get = _node_reader(nodes)
        cr = cls()
        start = 0
        for level in reversed(range(size.bit_length())):
            if size >> level & 1:
                cr._hashes.append(get(level, start >> level))
                start += 1 << level
        cr._size = size
        return cr

    @property
    def size(self) -> int:
        return self._size

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Add the next leaf hash; return the perfect nodes it completed, as (level, index, hash).

        Only nodes at level >= 1 are returned, lowest first: exactly what a store that keeps
        every complete perfect subtree must insert for this leaf.
        """
        _check_node(leaf)
        completed: list[tuple[int, int, bytes]] = []
        h = leaf
        level = 0
        while self._size >> level & 1:
            h = node_hash(self._hashes.pop(), h)
            level += 1
            completed.append((level, self._size >> level, h))
        self._hashes.append(h)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """The RFC 6962 root of the ``size`` leaves appended so far."""
        if not self._hashes:
            return EMPTY_ROOT
        h = self._hashes[-1]
        for left in reversed(self._hashes[:-1]):
            h = node_hash(left, h)
        return h


def merkle_root(leaves: list[bytes]) -> bytes:
    """The RFC 6962 root of ``leaves``, which are record bytes, not leaf hashes.

    Iterative: O(n) hashes, O(log n) extra memory.
    """
    cr = CompactRange()
    for data in leaves:
        cr.append(leaf_hash(data))
    return cr.root()


# --- reading perfect nodes -------------------------------------------------------------------


def _check_size(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{what} must not be negative, got {value}")


def _check_node(h: object) -> None:
    if not isinstance(h, bytes) or len(h) != HASH_SIZE:
        found = f"{len(h)} bytes" if isinstance(h, bytes) else type(h).__name__
        raise ValueError(f"a node hash must be {HASH_SIZE} bytes, got {found}")


def _fold_perfect(hashes: Iterable[bytes]) -> bytes:
    """Root of a perfect tree whose bottom row is ``hashes`` (a power-of-two count)."""
    stack: list[bytes] = []
    count = 0
    for h in hashes:
        acc = h
        n = count
        while n & 1:
            acc = node_hash(stack.pop(), acc)
            n >>= 1
        stack.append(acc)
        count += 1
    if len(stack) != 1:
        raise ValueError(f"a perfect subtree needs a power-of-two number of nodes, got {count}")
    return stack[0]


def _leaf_reader(leaves: Sequence[bytes]) -> GetNode:
    """A ``get_node`` over an in-memory list of leaf hashes; a level-L read costs 2**L hashes."""

    def get(level: int, index: int) -> bytes:
        lo = index << level
        hi = lo + (1 << level)
        if index < 0 or hi > len(leaves):
            raise ValueError(f"node ({level}, {index}) needs leaves the list does not hold")
        for h in leaves[lo:hi]:
            _check_node(h)
        return _fold_perfect(leaves[lo:hi])

    return get


def _node_reader(nodes: NodeSource) -> GetNode:
    get: GetNode
    if callable(nodes):
        get = nodes
    elif isinstance(nodes, Sequence) and not isinstance(nodes, (bytes, bytearray, str)):
        get = _leaf_reader(nodes)
    else:
        raise TypeError(f"nodes must be a get_node callable or leaf hashes, not {type(nodes)}")

    def checked(level: int, index: int) -> bytes:
        h = get(level, index)
        _check_node(h)
        return h

    return checked


def _perfect_hash(start: int, level: int, get: GetNode) -> bytes:
    """Hash of the perfect tree over leaves ``[start, start + 2**level)``.

    One read when ``start`` is aligned to ``2**level`` (every subtree a proof asks for is);
    otherwise the finest aligned nodes are read and folded.
    """
    if start & ((1 << level) - 1) == 0:
        return get(level, start >> level)
    fine = min((start & -start).bit_length() - 1, level)
    first = start >> fine
    return _fold_perfect(get(fine, first + i) for i in range(1 << (level - fine)))


def subtree_hash(start: int, end: int, nodes: NodeSource) -> bytes:
    """RFC 6962 ``MTH(D[start:end])`` built from perfect nodes.

    When the range is a subtree of some tree (``start`` a multiple of the smallest power of two
    >= ``end - start``, as in every proof) it reads one node per set bit of ``end - start``:
    O(log n). Other ranges are computed correctly but read more nodes.
    """
    _check_size("start", start)
    _check_size("end", end)
    if end < start:
        raise ValueError(f"range end {end} is before its start {start}")
    if start == end:
        return EMPTY_ROOT
    get = _node_reader(nodes)
    parts: list[bytes] = []
    lo = start
    while True:
        n = end - lo
        if n & (n - 1) == 0:
            parts.append(_perfect_hash(lo, n.bit_length() - 1, get))
            break
        k = 1 << ((n - 1).bit_length() - 1)
        parts.append(_perfect_hash(lo, k.bit_length() - 1, get))
        lo += k
    h = parts[-1]
    for left in reversed(parts[:-1]):
        h = node_hash(left, h)
    return h


def root_from_nodes(size: int, nodes: NodeSource) -> bytes:
    """Root of the tree of the first ``size`` leaves, from O(log n) perfect nodes."""
    return subtree_hash(0, size, nodes)


# --- proof shapes (index arithmetic only, shared by generation and verification) ------------


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n >= 2): RFC 6962's split point."""
    return 1 << ((n - 1).bit_length() - 1)


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 §2.1.3.1 ``PATH(index, D[size])``, leaf side first."""
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def _consistency_ranges(old_size: int, new_size: int) -> list[tuple[int, int]]:
    """The subtrees of RFC 9162 §2.1.4.1 ``PROOF(old_size, D[new_size])``, deepest first."""
    if old_size in (0, new_size):
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, new_size
    complete = True  # SUBPROOF's b: the old tree is a complete subtree seen so far
    while hi != old_size:
        k = _split(hi - lo)
        if old_size <= lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            complete = False
    if not complete:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


# --- proof generation ------------------------------------------------------------------------


def inclusion_proof(index: int, size: int, nodes: NodeSource) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof for leaf ``index`` in the tree of ``size`` leaves.

    ``nodes`` is a ``get_node`` callable or the leaf hashes. Reads O(log n) perfect nodes.
    """
    _check_size("index", index)
    _check_size("size", size)
    if index >= size:
        raise ValueError(f"leaf index {index} is not in a tree of {size} leaves")
    get = _node_reader(nodes)
    return [subtree_hash(lo, hi, get) for lo, hi in _inclusion_ranges(index, size)]


def consistency_proof(old_size: int, new_size: int, nodes: NodeSource) -> list[bytes]:
    """RFC 9162 §2.1.4.1 proof that the tree of ``new_size`` leaves extends ``old_size``.

    Empty when ``old_size`` is 0 or equals ``new_size``. Reads O(log n) perfect nodes.
    """
    _check_size("old_size", old_size)
    _check_size("new_size", new_size)
    if old_size > new_size:
        raise ValueError(
            f"old size {old_size} is larger than new size {new_size}: a tree never shrinks"
        )
    get = _node_reader(nodes)
    return [subtree_hash(lo, hi, get) for lo, hi in _consistency_ranges(old_size, new_size)]


# --- verification ----------------------------------------------------------------------------


def _want_size(err: type[VerificationError], what: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise err(f"{what} must be an int", expected="int", found=type(value).__name__)
    if value < 0:
        raise err(f"{what} must not be negative", expected=">= 0", found=value)
    return value


def _want_hash(err: type[VerificationError], what: str, value: object) -> bytes:
    if not isinstance(value, (bytes, bytearray)):
        raise err(f"{what} must be bytes", expected="bytes", found=type(value).__name__)
    if len(value) != HASH_SIZE:
        raise err(f"{what} must be a {HASH_SIZE}-byte hash", expected=HASH_SIZE, found=len(value))
    return bytes(value)


def _want_proof(err: type[VerificationError], value: object) -> list[bytes]:
    if not isinstance(value, Sequence) or isinstance(value, (bytes, bytearray, str)):
        raise err(
            "proof must be a sequence of hashes", expected="sequence", found=type(value).__name__
        )
    return [_want_hash(err, f"proof[{i}]", h) for i, h in enumerate(value)]


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` leaves with ``root``.

    RFC 9162 §2.1.3.2. Raises InclusionProofError; returns None only if the proof holds.
    """
    err = InclusionProofError
    fn = _want_size(err, "leaf index", index)
    size = _want_size(err, "tree size", size)
    leaf = _want_hash(err, "leaf hash", leaf_hash)
    want_root = _want_hash(err, "root", root)
    path = _want_proof(err, proof)
    if fn >= size:
        raise err(
            f"leaf index {fn} is not in a tree of {size} leaves", expected=f"< {size}", found=fn
        )
    want_len = len(_inclusion_ranges(fn, size))
    if len(path) != want_len:
        raise err(
            f"inclusion proof for leaf {fn} of {size} has {len(path)} hashes, expected {want_len}",
            expected=want_len,
            found=len(path),
        )
    sn = size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise err("inclusion proof is longer than the path to the root", found=len(path))
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise err("inclusion proof is shorter than the path to the root", found=len(path))
    if r != want_root:
        raise err(
            f"inclusion proof for leaf {index} of {size} does not lead to the root",
            expected=want_root.hex(),
            found=r.hex(),
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (``new_size``, ``new_root``) extends (``old_size``, ``old_root``).

    RFC 9162 §2.1.4.2, plus the cases it leaves out: sizes equal (empty proof, equal roots) and
    ``old_size`` 0 (empty proof; an empty tree's root must be ``EMPTY_ROOT``). Raises
    ConsistencyProofError; returns None only if the proof holds.
    """
    err = ConsistencyProofError
    m = _want_size(err, "old size", old_size)
    n = _want_size(err, "new size", new_size)
    first = _want_hash(err, "old root", old_root)
    second = _want_hash(err, "new root", new_root)
    path = _want_proof(err, proof)
    if m > n:
        raise err(
            f"new tree size {n} is smaller than old size {m}: a tree never shrinks",
            expected=f">= {m}",
            found=n,
        )
    for size, root, which in ((m, first, "old"), (n, second, "new")):
        if size == 0 and root != EMPTY_ROOT:
            raise err(
                f"the {which} tree is empty but its root is not the empty root",
                expected=EMPTY_ROOT.hex(),
                found=root.hex(),
            )
    want_len = len(_consistency_ranges(m, n))
    if len(path) != want_len:
        raise err(
            f"consistency proof from {m} to {n} has {len(path)} hashes, expected {want_len}",
            expected=want_len,
            found=len(path),
        )
    if m == n:
        if first != second:
            raise err(
                f"trees of equal size {m} have different roots",
                expected=first.hex(),
                found=second.hex(),
            )
        return
    if m == 0:
        return

    if m & (m - 1) == 0:
        path = [first, *path]
    fn = m - 1
    sn = n - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise err("consistency proof is longer than the path to the root", found=len(path))
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise err("consistency proof is shorter than the path to the root", found=len(path))
    if fr != first:
        raise err(
            f"consistency proof from {m} to {n} does not lead to the old root",
            expected=first.hex(),
            found=fr.hex(),
        )
    if sr != second:
        raise err(
            f"consistency proof from {m} to {n} does not lead to the new root",
            expected=second.hex(),
            found=sr.hex(),
        )
