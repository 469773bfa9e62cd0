"""Tampering with a stored audit log: every attack in docs/audit.md's table must be caught.

Each test copies a freshly built, signed log, corrupts the copy with raw SQL (what an
attacker with write access to the file can do), and checks that verification fails with the
right VerificationError subclass and names the right entry. The attacks escalate: an
attacker who fixes up the leaf hash is caught by the Merkle nodes or the batch digest; one
who also rebuilds the nodes and batch rows is caught by the signed checkpoint; one who drops
the stored checkpoints is caught by a checkpoint kept elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warden.audit import (
    AuditLog,
    AuditStore,
    NoteSigner,
    NoteVerifier,
    canonical,
    generate_key,
    leaf_hash,
    node_hash,
    open_for_verify,
    sign_checkpoint,
    trusted_verifier,
    verify_consistency,
    verify_log,
)
from warden.audit import Checkpoint as CheckpointBody
from warden.errors import (
    AuditError,
    CheckpointError,
    ConsistencyProofError,
    LogIntegrityError,
    VerificationError,
)

TYPE = "test.tamper/v1"
SETTINGS = settings(max_examples=40, deadline=None)

# --- building logs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A closed, signed log to copy: ``n`` records in ``batches`` (first seq, count)."""

    dir: Path
    n: int
    batches: tuple[tuple[int, int], ...]
    note: str  # the signed checkpoint of all n records, also stored in the log
    origin: str


def _payload(rng: random.Random) -> str:
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    return "".join(rng.choice(letters) for _ in range(rng.randrange(4, 40))) + rng.choice(
        ["", " é", " 😀", " \u2028"]
    )


def _record(n: int, rng: random.Random) -> dict[str, Any]:
    return {"type": TYPE, "n": n, "payload": _payload(rng)}


def _build(directory: Path, sizes: list[int], rng: random.Random, *, via_log: bool) -> Base:
    """A log whose batches have exactly ``sizes`` entries (or AuditLog's own batching)."""
    path = directory / "audit.db"
    if via_log:
        with AuditLog(path, batch_size=rng.randrange(1, 40), checkpoint_every=0) as log:
            for n in range(sum(sizes)):
                log.append(_record(n, rng))
                if rng.random() < 0.05:
                    log.flush()
            note = log.checkpoint()
    else:
        with AuditLog(path, checkpoint_every=0) as log:
            n = 0
            for k in sizes:
                log.store.append_batch([_record(n + i, rng) for i in range(k)])
                n += k
            note = log.checkpoint()
    store = AuditStore(path, readonly=True)
    batches = tuple((first, count) for _, first, count, _, _ in store.batches())
    base = Base(directory, store.size(), batches, note, store.origin)
    store.close()
    return base


def _sizes(rng: random.Random, total: int) -> list[int]:
    sizes = []
    while total > 0:
        k = min(total, rng.choice([1, 1, 2, 3, 5, 8, 13, 21, 40, rng.randrange(1, 64)]))
        sizes.append(k)
        total -= k
    return sizes


@pytest.fixture(scope="module")
def bases(tmp_path_factory: pytest.TempPathFactory) -> list[Base]:
    rng = random.Random(9162)
    totals = [1, 2, 3, 7, 8, 64, 100, 129, 255, 300] + [rng.randrange(1, 301) for _ in range(4)]
    out = []
    for i, total in enumerate(totals):
        directory = tmp_path_factory.mktemp(f"base{i}")
        out.append(_build(directory, _sizes(rng, total), rng, via_log=i % 4 == 3))
    return out


@contextmanager
def _copy(base: Base) -> Iterator[Path]:
    """A private copy of ``base``'s directory; yields the database path."""
    with tempfile.TemporaryDirectory() as d:
        target = Path(d) / "log"
        shutil.copytree(base.dir, target)
        yield target / "audit.db"


@contextmanager
def _sql(path: Path) -> Iterator[sqlite3.Connection]:
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    finally:
        db.close()


def _verify_store(
    store: AuditStore, key: str | Path | None = None, earlier: str | None = None
) -> Any:
    verifier, _ = trusted_verifier(store, key)
    return verify_log(store, verifier, earlier=earlier)


def _verify(path: Path, *, earlier: str | None = None, key: str | Path | None = None) -> Any:
    store = open_for_verify(path)
    try:
        return _verify_store(store, key, earlier)
    finally:
        store.close()


def _fails(path: Path, kind: type[VerificationError], **kwargs: Any) -> VerificationError:
    with pytest.raises(kind) as caught:
        _verify(path, **kwargs)
    return caught.value


def _broken(path: Path, **kwargs: Any) -> LogIntegrityError:
    with pytest.raises(LogIntegrityError) as caught:
        _verify(path, **kwargs)
    return caught.value


# --- a reference tree over raw leaf hashes, for attackers who rebuild the tree -----------------


def _ref_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return node_hash(_ref_root(leaves[:k]), _ref_root(leaves[k:]))


def _leaves(db: sqlite3.Connection) -> list[bytes]:
    return [bytes(r[0]) for r in db.execute("SELECT leaf FROM entries ORDER BY seq")]


def _rebuild_nodes(db: sqlite3.Connection) -> None:
    """Replace every stored node with the one the current leaves imply."""
    db.execute("DELETE FROM nodes")
    level, row = 0, _leaves(db)
    while len(row) > 1:
        row = [node_hash(row[i], row[i + 1]) for i in range(0, len(row) - 1, 2)]
        level += 1
        db.executemany(
            "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
            [(level, i, h) for i, h in enumerate(row)],
        )


def _rebuild_batches(db: sqlite3.Connection) -> None:
    """Recompute every batch row's digest and root from the current leaves."""
    leaves = _leaves(db)
    for bid, first, count in db.execute("SELECT id, first_seq, count FROM batches").fetchall():
        digest = hashlib.sha256(b"".join(leaves[first : first + count])).digest()
        root = _ref_root(leaves[: first + count])
        db.execute("UPDATE batches SET digest = ?, root = ? WHERE id = ?", (digest, root, bid))


def _put_record(db: sqlite3.Connection, seq: int, data: bytes, *, fix_leaf: bool) -> None:
    if fix_leaf:
        db.execute(
            "UPDATE entries SET data = ?, leaf = ? WHERE seq = ?", (data, leaf_hash(data), seq)
        )
    else:
        db.execute("UPDATE entries SET data = ? WHERE seq = ?", (data, seq))


def _data(db: sqlite3.Connection, seq: int) -> bytes:
    return bytes(db.execute("SELECT data FROM entries WHERE seq = ?", (seq,)).fetchone()[0])


# --- what an error must name ------------------------------------------------------------------


def _names(err: VerificationError, i: int) -> bool:
    """The error points at entry ``i``: by index, or by a batch or Merkle node covering it."""
    msg = str(err)
    if getattr(err, "index", -1) == i or msg.startswith(f"entry {i}:"):
        return True
    for a, b in re.findall(r"entries (\d+)\.\.(\d+)", msg):
        if int(a) <= i <= int(b):
            return True
    for level, idx in re.findall(r"Merkle node \((\d+), (\d+)\)", msg):
        if int(idx) << int(level) <= i < (int(idx) + 1) << int(level):
            return True
    return False


# --- a changed byte ---------------------------------------------------------------------------

FIXUPS = ["none", "leaf", "leaf+nodes", "leaf+nodes+batches", "everything+checkpoints"]


@SETTINGS
@given(data=st.data(), fixup=st.sampled_from(FIXUPS))
def test_a_changed_byte_in_a_record(bases: list[Base], data: st.DataObject, fixup: str) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    i = data.draw(st.integers(0, base.n - 1), label="index")
    with _copy(base) as path:
        with _sql(path) as db:
            old = _data(db, i)
            if fixup == "none":  # any byte, to any other value
                pos = data.draw(st.integers(0, len(old) - 1), label="pos")
                new_byte = data.draw(st.integers(0, 255).filter(lambda b: b != old[pos]))
            else:  # a byte of the payload text, so that the record still parses
                start = old.index(b'"payload":"') + len(b'"payload":"')
                pos = data.draw(st.integers(start, start + 3), label="pos")
                new_byte = data.draw(st.sampled_from(b"0123456789"), label="byte")
            new = old[:pos] + bytes([new_byte]) + old[pos + 1 :]
            _put_record(db, i, new, fix_leaf=fixup != "none")
            if "nodes" in fixup or "everything" in fixup:
                _rebuild_nodes(db)
            if "batches" in fixup or "everything" in fixup:
                _rebuild_batches(db)
            if "checkpoints" in fixup:
                db.execute("DELETE FROM checkpoints")

        if fixup == "none":
            err = _broken(path)
            assert err.index == i
            assert str(err).startswith(f"entry {i}: leaf hash does not match"), err
        elif fixup in ("leaf", "leaf+nodes"):
            err = _broken(path)
            assert _names(err, i), err
            if fixup == "leaf+nodes":
                assert "batch" in str(err), err
        elif fixup == "leaf+nodes+batches":
            err = _broken(path)
            assert "checkpoint" in str(err), err
            assert err.index == base.n
        else:  # nothing in the file disagrees any more: only a checkpoint kept outside can tell
            err = _broken(path, earlier=base.note)
            assert "checkpoint" in str(err), err


# --- deleted, inserted, swapped records -------------------------------------------------------


@SETTINGS
@given(data=st.data(), shift=st.booleans())
def test_a_deleted_record(bases: list[Base], data: st.DataObject, shift: bool) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    i = data.draw(st.integers(0, base.n - 1), label="index")
    with _copy(base) as path:
        with _sql(path) as db:
            db.execute("DELETE FROM entries WHERE seq = ?", (i,))
            if shift:  # close the gap: later records move down one place
                db.execute("UPDATE entries SET seq = -seq WHERE seq > ?", (i,))
                db.execute("UPDATE entries SET seq = -seq - 1 WHERE seq < 0")
        err = _broken(path)
        assert err.index == i, err


@SETTINGS
@given(data=st.data(), reseq=st.booleans())
def test_an_inserted_record(bases: list[Base], data: st.DataObject, reseq: bool) -> None:
    """A well-formed record (right leaf, right ``seq`` field) slipped in at position ``i``."""
    base = data.draw(st.sampled_from(bases), label="base")
    i = data.draw(st.integers(0, base.n), label="index")
    with _copy(base) as path:
        with _sql(path) as db:
            batch = db.execute(
                "SELECT batch FROM entries WHERE seq = ?", (min(i, base.n - 1),)
            ).fetchone()[0]
            db.execute("UPDATE entries SET seq = -seq - 1 WHERE seq >= ?", (i,))
            db.execute("UPDATE entries SET seq = -seq WHERE seq < 0")  # s -> s + 1
            if reseq:  # re-encode the moved records so their seq fields match again
                for s in range(i + 1, base.n + 1):
                    rec = json.loads(_data(db, s))
                    _put_record(db, s, canonical({**rec, "seq": s}), fix_leaf=True)
            forged = canonical({"type": TYPE, "n": -1, "payload": "inserted", "seq": i})
            db.execute(
                "INSERT INTO entries (seq, leaf, data, batch) VALUES (?, ?, ?, ?)",
                (i, leaf_hash(forged), forged, batch),
            )
        err = _broken(path)
        assert _names(err, i) or _names(err, i + 1), err


@SETTINGS
@given(data=st.data(), reseq=st.booleans())
def test_two_swapped_records(bases: list[Base], data: st.DataObject, reseq: bool) -> None:
    base = data.draw(st.sampled_from([b for b in bases if b.n >= 2]), label="base")
    i = data.draw(st.integers(0, base.n - 2), label="i")
    j = data.draw(st.integers(i + 1, base.n - 1), label="j")
    with _copy(base) as path:
        with _sql(path) as db:
            di, dj = _data(db, i), _data(db, j)
            if reseq:  # the attacker also fixes the seq fields and the leaves
                di = canonical({**json.loads(di), "seq": j})
                dj = canonical({**json.loads(dj), "seq": i})
            _put_record(db, i, dj, fix_leaf=True)
            _put_record(db, j, di, fix_leaf=True)
        err = _broken(path)
        if reseq:
            assert _names(err, i) or _names(err, j), err
        else:
            assert err.index == i, err
            assert str(err).startswith(f"entry {i}: the record says it is entry {j}"), err


# --- a truncated tail -------------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_a_truncated_tail(bases: list[Base], data: st.DataObject) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    k = data.draw(st.integers(1, base.n), label="k")
    cut = base.n - k
    with _copy(base) as path:
        with _sql(path) as db:
            db.execute("DELETE FROM entries WHERE seq >= ?", (cut,))
        err = _broken(path)
        assert err.index == cut, err


@SETTINGS
@given(data=st.data(), drop_checkpoints=st.booleans())
def test_a_truncated_tail_with_its_batches_and_nodes(
    bases: list[Base], data: st.DataObject, drop_checkpoints: bool
) -> None:
    """Cut at a batch boundary and remove everything beyond it: only a checkpoint can tell."""
    base = data.draw(st.sampled_from(bases), label="base")
    cut = data.draw(st.sampled_from([first for first, _ in base.batches]), label="cut")
    with _copy(base) as path:
        with _sql(path) as db:
            db.execute("DELETE FROM entries WHERE seq >= ?", (cut,))
            db.execute("DELETE FROM batches WHERE first_seq >= ?", (cut,))
            db.execute("DELETE FROM nodes WHERE (idx + 1) << level > ?", (cut,))
            if drop_checkpoints:
                db.execute("DELETE FROM checkpoints WHERE size > ?", (cut,))
        if drop_checkpoints:
            _verify(path)  # the shortened log is internally consistent
            err = _broken(path, earlier=base.note)
        else:
            err = _broken(path)
        assert "truncated" in str(err), err
        assert err.index == cut, err


# --- checkpoints ------------------------------------------------------------------------------


def _note_lines(note: str) -> list[str]:
    return note.split("\n")


@SETTINGS
@given(data=st.data(), field=st.sampled_from(["root", "size", "origin"]))
def test_a_forged_checkpoint(bases: list[Base], data: st.DataObject, field: str) -> None:
    """One line of the signed text changed, the signature kept."""
    base = data.draw(st.sampled_from(bases), label="base")
    lines = _note_lines(base.note)
    if field == "root":
        lines[2] = base64.b64encode(data.draw(st.binary(min_size=32, max_size=32))).decode()
    elif field == "size":
        lines[1] = str(data.draw(st.integers(0, base.n - 1)))
    else:
        lines[0] = base.origin[:-1] + ("0" if base.origin[-1] != "0" else "1")
    forged = "\n".join(lines)
    assert forged != base.note
    with _copy(base) as path:
        # given as the earlier checkpoint
        err = _fails(path, CheckpointError, earlier=forged)
        assert "given checkpoint" in str(err), err
        # stored in the log
        with _sql(path) as db:
            db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (forged, base.n))
        err = _fails(path, CheckpointError)
        assert f"stored checkpoint at size {base.n}" in str(err), err


def _resign(path: Path, base: Base, signer: NoteSigner, *, replace_meta: bool) -> str:
    """Rewrite record 0, rebuild the tree, and re-sign every checkpoint with ``signer``."""
    with _sql(path) as db:
        rec = json.loads(_data(db, 0))
        _put_record(db, 0, canonical({**rec, "payload": "rewritten"}), fix_leaf=True)
        _rebuild_nodes(db)
        _rebuild_batches(db)
        leaves = _leaves(db)
        db.execute("DELETE FROM checkpoints")
        note = sign_checkpoint(CheckpointBody(base.origin, base.n, _ref_root(leaves)), signer)
        db.execute("INSERT INTO checkpoints (size, note) VALUES (?, ?)", (base.n, note))
        if replace_meta:
            db.execute(
                "UPDATE meta SET value = ? WHERE key = 'verifier'",
                (signer.verifier.to_string(),),
            )
    return note


@SETTINGS
@given(data=st.data(), replace_meta=st.booleans())
def test_a_checkpoint_re_signed_with_another_key(
    bases: list[Base], data: st.DataObject, replace_meta: bool
) -> None:
    base = data.draw(st.sampled_from(bases), label="base")
    attacker = NoteSigner(base.origin, generate_key())  # same key name, another key
    with _copy(base) as path:
        pub = path.with_name("audit-key.pub")
        trusted = pub.read_text().strip()
        forged = _resign(path, base, attacker, replace_meta=replace_meta)
        # the log is consistent with the attacker's key...
        store = open_for_verify(path)
        assert verify_log(store, attacker.verifier).size == base.n
        # ...but not with the log's own key, from audit-key.pub or given explicitly
        for key in (None, trusted, pub):
            with pytest.raises(CheckpointError):
                _verify_store(store, key)
        with pytest.raises(CheckpointError):
            verify_log(store, NoteVerifier.from_string(trusted))
        with pytest.raises(CheckpointError):
            verify_log(store, NoteVerifier.from_string(trusted), earlier=forged)
        store.close()
        # the attacker replaces audit-key.pub too: a key kept elsewhere still catches it
        pub.write_text(attacker.verifier.to_string() + "\n")
        _fails(path, CheckpointError, key=trusted)


@pytest.mark.parametrize(
    "junk", ["garbage", "", "a+b", "warden/x+zzzzzzzz+AAAA", "\u2014", "+" * 5]
)
def test_a_mangled_recorded_key_is_a_checkpoint_error(bases: list[Base], junk: str) -> None:
    with _copy(bases[5]) as path:
        with _sql(path) as db:
            db.execute("UPDATE meta SET value = ? WHERE key = 'verifier'", (junk,))
        _fails(path, CheckpointError)
        path.with_name("audit-key.pub").unlink()  # now the recorded key is all there is
        _fails(path, CheckpointError)


@pytest.mark.parametrize("junk", ["garbage", "a+b+c", "warden/x+00000000+AAAA", "\x00"])
def test_a_mangled_public_key_file_is_a_checkpoint_error(bases: list[Base], junk: str) -> None:
    with _copy(bases[5]) as path:
        path.with_name("audit-key.pub").write_text(junk)
        _fails(path, CheckpointError)
        _fails(path, CheckpointError, key=junk)


@pytest.mark.parametrize("same_key_file", [False, True])
def test_a_checkpoint_from_another_log(
    bases: list[Base], tmp_path: Path, same_key_file: bool
) -> None:
    base = bases[6]
    other = tmp_path / "other" / "audit.db"
    with _copy(base) as path:
        # a second log, signed with a fresh key or with this log's own key file (a copy of
        # it, so that writing the other log's audit-key.pub cannot touch this one's)
        if same_key_file:
            shutil.copy2(path.with_name("audit-key.pem"), tmp_path / "shared.pem")
        key = tmp_path / "shared.pem" if same_key_file else None
        with AuditLog(other, key_path=key) as log:
            for n in range(base.n):  # same size, so only the origin tells them apart
                log.append({"type": TYPE, "n": n})
            foreign = log.checkpoint()
            assert log.store.origin != base.origin
        err = _fails(path, CheckpointError, earlier=foreign)
        assert "origin" in str(err), err
        with _sql(path) as db:  # stored in the log
            db.execute("UPDATE checkpoints SET note = ? WHERE size = ?", (foreign, base.n))
        err = _fails(path, CheckpointError)
        assert "origin" in str(err), err


# --- Merkle nodes -----------------------------------------------------------------------------


@SETTINGS
@given(data=st.data(), how=st.sampled_from(["change", "delete", "extra"]))
def test_a_tampered_merkle_node(bases: list[Base], data: st.DataObject, how: str) -> None:
    base = data.draw(st.sampled_from([b for b in bases if b.n >= 2]), label="base")
    with _copy(base) as path:
        with _sql(path) as db:
            nodes = db.execute("SELECT level, idx FROM nodes ORDER BY level, idx").fetchall()
            level, idx = data.draw(st.sampled_from(nodes), label="node")
            if how == "change":
                h = data.draw(st.binary(min_size=32, max_size=32), label="hash")
                db.execute("UPDATE nodes SET hash = ? WHERE level = ? AND idx = ?", (h, level, idx))
            elif how == "delete":
                db.execute("DELETE FROM nodes WHERE level = ? AND idx = ?", (level, idx))
            else:  # a node beyond the tree's right edge
                idx = base.n >> level
                db.execute(
                    "INSERT INTO nodes (level, idx, hash) VALUES (?, ?, ?)",
                    (level, idx, b"\x00" * 32),
                )
        err = _broken(path)
        assert f"Merkle node ({level}, {idx})" in str(err), err


# --- consistency proofs -----------------------------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_a_consistency_proof_for_a_shrunk_tree(bases: list[Base], data: st.DataObject) -> None:
    base = data.draw(st.sampled_from([b for b in bases if b.n >= 2]), label="base")
    small = data.draw(st.integers(1, base.n - 1), label="small")
    store = AuditStore(base.dir / "audit.db", readonly=True)
    big_root, small_root = store.root(base.n), store.root(small)
    forward = store.consistency_proof(small, base.n)
    verify_consistency(small, base.n, small_root, big_root, forward)  # the honest direction
    for proof in (forward, [], [big_root]):
        with pytest.raises(ConsistencyProofError, match="never shrinks"):
            verify_consistency(base.n, small, big_root, small_root, proof)
    with pytest.raises(ValueError, match="never shrinks"):
        store.consistency_proof(base.n, small)
    store.close()


# --- rewritten history ------------------------------------------------------------------------


@pytest.mark.parametrize("keep_origin", [False, True])
def test_a_rewritten_history_fails_against_an_earlier_checkpoint(
    bases: list[Base], keep_origin: bool
) -> None:
    """A whole new log over the same path and key: consistent inside, but not the old one."""
    base = bases[6]
    rng = random.Random(1)
    with _copy(base) as path:
        store = AuditStore(path, readonly=True)
        meta = {k: store.meta(k) for k in ("log_id", "origin", "verifier")}
        store.close()
        path.unlink()
        if keep_origin:  # the attacker copies the old identity into the new file first
            AuditStore(path).close()
            with _sql(path) as db:
                for k, v in meta.items():
                    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        if not keep_origin:  # AuditLog refuses a key file that signs for another log
            path.with_name("audit-key.pub").unlink()
        with AuditLog(path) as log:  # the same key file, audit-key.pem beside it
            assert (log.store.origin == base.origin) is keep_origin
            for n in range(base.n + 5):
                log.append(_record(n, rng))
        assert _verify(path).size == base.n + 5  # internally consistent
        if keep_origin:
            err = _broken(path, earlier=base.note)
            assert "checkpoint" in str(err), err
        else:
            err = _fails(path, CheckpointError, earlier=base.note)
            assert "origin" in str(err), err


def test_an_honest_extension_passes_against_an_earlier_checkpoint(bases: list[Base]) -> None:
    """The control for the test above: appending to the same log keeps it verifiable."""
    base = bases[6]
    with _copy(base) as path:
        with AuditLog(path) as log:
            for n in range(17):
                log.append({"type": TYPE, "n": base.n + n})
        report = _verify(path, earlier=base.note)
        assert report.size == base.n + 17
        assert report.extends is not None
        assert report.extends.size == base.n


# --- garbage ----------------------------------------------------------------------------------


def _garbage(data: bytes, rng: random.Random, how: str) -> bytes:
    if how == "whole":
        return rng.randbytes(len(data))
    if how == "truncate":
        return data[: rng.randrange(0, len(data))]
    if how == "zero-page":
        page = 4096
        start = rng.randrange(1, max(2, len(data) // page)) * page
        return data[:start] + b"\x00" * page + data[start + page :]
    out = bytearray(data)  # "regions": a few random runs after the file header
    for _ in range(rng.randrange(1, 4)):
        start = rng.randrange(100, len(out) - 1)
        length = rng.randrange(1, 200)
        out[start : start + length] = rng.randbytes(length)[: len(out) - start]
    return bytes(out)


@pytest.mark.parametrize("seed", range(60))
def test_garbage_in_the_database_file(bases: list[Base], seed: int) -> None:
    """Garbage gives AuditError or a VerificationError, never another exception."""
    rng = random.Random(seed)
    base = bases[seed % len(bases)]
    how = ["whole", "truncate", "zero-page", "regions", "regions"][seed % 5]
    with _copy(base) as path:
        path.write_bytes(_garbage(path.read_bytes(), rng, how))
        try:
            report = _verify(path)
        except (AuditError, VerificationError):
            return
        # garbage that landed in unused space: then nothing may have been lost
        assert report.size == base.n


def test_garbage_instead_of_a_database_is_an_audit_error(bases: list[Base]) -> None:
    with _copy(bases[0]) as path:
        path.write_bytes(random.Random(0).randbytes(8192))
        with pytest.raises(AuditError):
            open_for_verify(path)
        path.write_bytes(b"")
        with pytest.raises(AuditError):
            _verify(path)


TYPE_CONFUSION: list[tuple[str, str]] = [
    ("data as text", "UPDATE entries SET data = CAST(data AS TEXT) WHERE seq = 0"),
    ("leaf as text", "UPDATE entries SET leaf = CAST(leaf AS TEXT) WHERE seq = 0"),
    ("leaf as int", "UPDATE entries SET leaf = 7 WHERE seq = 0"),
    ("batch as text", "UPDATE entries SET batch = 'x' WHERE seq = 0"),
    ("digest as text", "UPDATE batches SET digest = 'abc' WHERE id = 0"),
    ("root as real", "UPDATE batches SET root = 1.5 WHERE id = 0"),
    ("first_seq as text", "UPDATE batches SET first_seq = 'x' WHERE id = 0"),
    ("count as blob", "UPDATE batches SET count = X'01' WHERE id = 0"),
    ("node as int", "UPDATE nodes SET hash = 42 WHERE level = 1 AND idx = 0"),
    ("note as blob", "UPDATE checkpoints SET note = X'ff00'"),
    ("origin not utf-8", "UPDATE meta SET value = CAST(X'ff' AS TEXT) WHERE key = 'origin'"),
    ("no origin", "DELETE FROM meta WHERE key = 'origin'"),
    ("no tables", "DROP TABLE nodes"),
]


@pytest.mark.parametrize(("what", "sql"), TYPE_CONFUSION, ids=[w for w, _ in TYPE_CONFUSION])
def test_wrongly_typed_columns(bases: list[Base], what: str, sql: str) -> None:
    """Values of the wrong SQLite type: AuditError or a VerificationError, no TypeError."""
    base = bases[6]
    with _copy(base) as path:
        with _sql(path) as db:
            db.execute(sql)
        try:
            _verify(path)
        except (AuditError, VerificationError):
            return
        # "data as text" keeps the same bytes, so it may verify; the others may not
        assert what == "data as text", f"{what}: verified"
