"""AuditLog and AuditStore on a real SQLite file: sequence, tree, proofs, concurrency, failure.

Guarantees under test are docs/audit.md 1-5 ("Guarantees"): the stored tree is the RFC 6962
tree of the record bytes at every batch boundary, proofs served from the store verify against
signed checkpoints, threads and processes sharing one file get one gap-free sequence, flush()
means durable, and a log that cannot take a record turns the Governor's decision into a deny.
The last section checks the JCS fast path of ``canonical`` against the reference encoder.
"""

from __future__ import annotations

import contextlib
import json
import math
import random
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from warden import Action, Effect, Governor, load_policy_text
from warden.audit import (
    AuditLog,
    AuditStore,
    canonical,
    leaf_hash,
    merkle_root,
    open_for_verify,
    parse_checkpoint,
    trusted_verifier,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from warden.audit._events import json_safe
from warden.errors import AuditError, ConsistencyProofError, InclusionProofError

REC = "test.record/v1"

POLICY = """
apiVersion: warden/v1
kind: Policy
name: audit-tests
default: deny
rules:
  - id: ok
    tool: "t.ok"
    effect: allow
"""


def _rec(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": REC, "n": n, **extra}


def _verify(path: Path, earlier: str | None = None) -> Any:
    store = open_for_verify(path)
    try:
        verifier, _ = trusted_verifier(store, None)
        return verify_log(store, verifier, earlier=earlier)
    finally:
        store.close()


def _assert_one_sequence(store: AuditStore) -> list[dict[str, Any]]:
    """Every stored record's seq is its position and its leaf is the hash of its bytes."""
    recs = []
    for pos, (seq, leaf, data, _) in enumerate(store.scan()):
        assert seq == pos
        assert leaf == leaf_hash(data)
        rec = json.loads(data)
        assert rec["seq"] == pos
        recs.append(rec)
    assert len(recs) == store.size()
    return recs


# --- append, flush, close --------------------------------------------------------------------


def test_append_flush_close(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, batch_size=7)
    for n in range(250):
        log.append(_rec(n))
    assert log.flush() == 250
    recs = _assert_one_sequence(log.store)
    assert [r["n"] for r in recs] == list(range(250))
    assert all(r["type"] == REC for r in recs)
    log.close()
    with pytest.raises(AuditError, match="closed"):
        log.append(_rec(250))

    store = open_for_verify(path)
    assert store.size() == 250
    latest = store.latest_checkpoint()
    assert latest is not None
    assert latest[0] == 250  # close() signed the final tree
    store.close()
    report = _verify(path)
    assert report.size == 250
    assert report.checkpoints >= 1


@pytest.mark.parametrize("bad", [{"n": 1}, {"type": 5}, {"type": REC, "seq": 3}])
def test_append_refuses_records_without_type_or_with_seq(tmp_path: Path, bad: Any) -> None:
    with AuditLog(tmp_path / "audit.db") as log:
        with pytest.raises(AuditError, match="type"):
            log.append(bad)
        assert log.flush() == 0


def _boundaries(store: AuditStore) -> Iterator[tuple[int, bytes]]:
    for _, first, count, _, root in store.batches():
        yield first + count, root


@settings(max_examples=25, deadline=None)
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=12))
def test_stored_root_is_the_tree_of_the_records_at_every_batch(batches: list[int]) -> None:
    with tempfile.TemporaryDirectory() as d:
        store = AuditStore(Path(d) / "audit.db")
        n = 0
        for k in batches:
            first, size = store.append_batch([_rec(n + i) for i in range(k)])
            assert (first, size) == (n, n + k)
            n += k
        data = [store.record(i) for i in range(n)]
        ends = []
        for end, batch_root in _boundaries(store):
            want = merkle_root(data[:end])
            assert store.root(end) == want
            assert batch_root == want
            ends.append(end)
        assert ends == [sum(batches[: i + 1]) for i in range(len(batches))]
        for size in range(n + 1):  # also between boundaries
            assert store.root(size) == merkle_root(data[:size])
        store.close()


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 64))
def test_stored_root_matches_via_auditlog_batches(n: int, batch_size: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "audit.db"
        with AuditLog(path, batch_size=batch_size, batch_interval=0.001) as log:
            for i in range(n):
                log.append(_rec(i))
                if i % 37 == 36:
                    log.flush()
            assert log.flush() == n
            store = log.store
            data = [store.record(i) for i in range(n)]
            boundaries = list(_boundaries(store))
            assert boundaries[-1][0] == n
            for end, batch_root in boundaries:
                assert store.root(end) == batch_root == merkle_root(data[:end])
        assert _verify(path).size == n


# --- proofs served by the store --------------------------------------------------------------


@pytest.fixture(scope="module")
def proven_log(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """A closed log of 333 records in uneven batches, with signed checkpoints along the way."""
    path = tmp_path_factory.mktemp("proofs") / "audit.db"
    rng = random.Random(6962)
    notes = []
    with AuditLog(path, batch_size=13, checkpoint_every=0) as log:
        for n in range(333):
            log.append(_rec(n, pad="x" * rng.randrange(40)))
            if rng.random() < 0.03 or n in (0, 1, 127, 128):
                notes.append(log.checkpoint())
        notes.append(log.checkpoint())
    return path, notes


@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_inclusion_proofs_from_the_store_verify(
    proven_log: tuple[Path, list[str]], data: st.DataObject
) -> None:
    path, notes = proven_log
    store = open_for_verify(path)
    verifier, _ = trusted_verifier(store, None)
    n = store.size()
    size = data.draw(st.integers(1, n), label="size")
    index = data.draw(st.integers(0, size - 1), label="index")
    record = store.record(index)
    proof = store.inclusion_proof(index, size)
    root = store.root(size)
    assert root == merkle_root([store.record(i) for i in range(size)])
    verify_inclusion(leaf_hash(record), index, size, proof, root)

    # against a signed checkpoint that covers the record
    note = data.draw(st.sampled_from(notes), label="checkpoint")
    cp = parse_checkpoint(note, verifier, store.origin)
    if index < cp.size:
        verify_inclusion(
            leaf_hash(record), index, cp.size, store.inclusion_proof(index, cp.size), cp.root
        )
    # and a proof never vouches for another record or another position
    other = (index + 1) % size
    if other != index:
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf_hash(store.record(other)), index, size, proof, root)
        with pytest.raises(InclusionProofError):
            verify_inclusion(leaf_hash(record), other, size, proof, root)
    store.close()


def test_consistency_proofs_between_stored_checkpoints_verify(
    proven_log: tuple[Path, list[str]],
) -> None:
    path, notes = proven_log
    store = open_for_verify(path)
    verifier, _ = trusted_verifier(store, None)
    cps = [parse_checkpoint(note, verifier, store.origin) for _, note in store.checkpoints()]
    assert len(cps) >= 5
    assert {cp.size for cp in cps} >= {1, 2, 128, 129, 333}
    for old in cps:
        for new in cps:
            if old.size > new.size:
                continue
            proof = store.consistency_proof(old.size, new.size)
            verify_consistency(old.size, new.size, old.root, new.root, proof)
            if old.size != new.size:
                # the same proof must not connect the new tree to a different old root
                with pytest.raises(ConsistencyProofError):
                    verify_consistency(old.size, new.size, new.root, new.root, proof)
    # the kept notes are the stored checkpoints
    assert {parse_checkpoint(n, verifier).size for n in notes} == {cp.size for cp in cps}
    store.close()


# --- concurrency -----------------------------------------------------------------------------


def test_threads_share_one_gap_free_sequence(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    threads, per_thread = 8, 500
    log = AuditLog(path)
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                log.append({"type": REC, "thread": t, "i": i})
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    workers = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert errors == []
    assert log.flush() == threads * per_thread
    log.close()

    store = open_for_verify(path)
    recs = _assert_one_sequence(store)
    assert len(recs) == threads * per_thread
    seen = [(r["thread"], r["i"]) for r in recs]
    assert sorted(seen) == [(t, i) for t in range(threads) for i in range(per_thread)]
    for t in range(threads):  # one thread's appends keep their order
        assert [i for th, i in seen if th == t] == list(range(per_thread))
    store.close()
    assert _verify(path).size == threads * per_thread


PROCESS_WRITER = r"""
import os, sys, time
from warden.audit import AuditLog
path, proc, count, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
deadline = time.monotonic() + 30
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.001)
log = AuditLog(path, batch_size=5, batch_interval=0.002)
for i in range(count):
    log.append({"type": "test.process/v1", "proc": proc, "i": i})
    if i % 40 == 39:
        log.flush()
log.close()
print("done", flush=True)
"""


def test_processes_share_one_gap_free_sequence(tmp_path: Path) -> None:
    """Processes that start together on a fresh file: one log, one origin, one sequence."""
    path = tmp_path / "audit.db"
    go = tmp_path / "go"
    procs, per_proc = 4, 250
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PROCESS_WRITER, str(path), str(p), str(per_proc), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        for p in range(procs)
    ]
    time.sleep(0.3)  # let them all import and wait at the start line
    go.touch()
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        assert out.strip() == "done", err

    store = open_for_verify(path)
    recs = _assert_one_sequence(store)
    assert len(recs) == procs * per_proc
    seen = [(r["proc"], r["i"]) for r in recs]
    assert sorted(seen) == [(p, i) for p in range(procs) for i in range(per_proc)]
    for p in range(procs):
        assert [i for pr, i in seen if pr == p] == list(range(per_proc))
    store.close()
    report = _verify(path)
    assert report.size == procs * per_proc
    assert report.checkpoints >= 1


# --- flush -----------------------------------------------------------------------------------


def test_flush_makes_records_readable_by_a_fresh_reader(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    # Neither the batch size nor the interval would ever close a batch: only flush() does.
    log = AuditLog(path, batch_size=100_000, batch_interval=3600)
    total = 0
    for round_ in range(5):
        for _ in range(round_ * 7 + 1):
            log.append(_rec(total))
            total += 1
        assert log.flush(timeout=10) == total
        reader = AuditStore(path, readonly=True)
        assert reader.size() == total
        assert [json.loads(reader.record(i))["n"] for i in range(total)] == list(range(total))
        reader.close()
    log.close()


# --- fail closed -----------------------------------------------------------------------------


def _governor(log: AuditLog, tmp_path: Path) -> Governor:
    return Governor(load_policy_text(POLICY), audit=log, home=tmp_path / "home")


def test_full_queue_makes_the_governor_deny(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    max_queue, batch_size = 5, 2
    log = AuditLog(path, batch_size=batch_size, batch_interval=0, max_queue=max_queue)
    gov = _governor(log, tmp_path)
    assert gov.check(Action(tool="t.ok")).effect is Effect.ALLOW
    log.flush()
    accepted = log.store.size()

    blocker = sqlite3.connect(path, timeout=1.0, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # the writer now waits on the database lock
    try:
        full = None
        # the writer may hold a few taken records while it waits; the queue then fills
        for n in range(max_queue + 20 * batch_size + 5):
            try:
                log.append(_rec(n))
            except AuditError as exc:
                full = exc
                break
            accepted += 1
            time.sleep(0.002)
        assert full is not None, "the queue never filled"
        assert "queue is full" in str(full)
        denied = gov.check(Action(tool="t.ok"))
        assert denied.effect is Effect.DENY
        assert any("audit" in r for r in denied.reasons), denied.reasons
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()

    # everything accepted is recorded (the denied decision never made it onto the queue)
    assert log.flush(timeout=20) == accepted
    assert gov.check(Action(tool="t.ok")).effect is Effect.ALLOW
    log.close()
    assert _verify(path).size == accepted + 1


def _close_store(log: AuditLog, path: Path) -> None:
    log.store.close()


def _drop_batches_table(log: AuditLog, path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("DROP TABLE batches")
    db.close()


@pytest.mark.parametrize("breakage", [_close_store, _drop_batches_table])
def test_writer_failure_makes_the_governor_deny(tmp_path: Path, breakage: Any) -> None:
    path = tmp_path / "audit.db"
    log = AuditLog(path, batch_size=4, batch_interval=0.001)
    gov = _governor(log, tmp_path)
    for n in range(10):
        log.append(_rec(n))
    assert log.flush() == 10
    assert gov.check(Action(tool="t.ok")).effect is Effect.ALLOW

    breakage(log, path)
    with contextlib.suppress(AuditError):  # may be taken while the writer still looks healthy
        log.append(_rec(10))
    with pytest.raises(AuditError):  # but it cannot be made durable
        log.flush(timeout=20)
    with pytest.raises(AuditError, match="writer failed"):
        log.append(_rec(11))
    denied = gov.check(Action(tool="t.ok"))
    assert denied.effect is Effect.DENY
    assert any("audit" in r for r in denied.reasons), denied.reasons
    log.close()  # must not hang or raise


def test_a_record_with_any_argument_value_does_not_kill_the_writer(tmp_path: Path) -> None:
    """One agent's odd argument must not stop the log from recording everyone else."""
    path = tmp_path / "audit.db"
    log = AuditLog(path, batch_size=1, batch_interval=0.001)
    gov = _governor(log, tmp_path)
    odd = [b"\xff", object(), "\ud800", float("nan"), 2**64, 10**5000, {1: 2}, [[[[]]]]]
    for value in odd:
        assert gov.check(Action(tool="t.ok", args={"v": value})).effect is Effect.ALLOW
    assert log.flush(timeout=20) == len(odd)
    assert gov.check(Action(tool="t.ok")).effect is Effect.ALLOW
    log.close()
    assert _verify(path).size == len(odd) + 1


# --- reopening -------------------------------------------------------------------------------


def test_reopening_continues_the_sequence_and_keeps_the_origin(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path, batch_size=3) as log:
        origin = log.store.origin
        log_id = log.store.meta("log_id")
        for n in range(10):
            log.append(_rec(n))
        first_note = log.checkpoint()
    with AuditLog(path, batch_size=3) as log:
        assert log.store.origin == origin
        assert log.store.meta("log_id") == log_id
        assert log.store.size() == 10
        for n in range(10, 25):
            log.append(_rec(n))
        assert log.flush() == 25
    store = open_for_verify(path)
    recs = _assert_one_sequence(store)
    assert [r["n"] for r in recs] == list(range(25))
    assert origin == f"warden/{log_id}"
    store.close()
    report = _verify(path, earlier=first_note)
    assert report.size == 25
    assert report.extends is not None
    assert report.extends.size == 10


def test_opening_with_another_key_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    with AuditLog(path) as log:
        log.append(_rec(0))
    with pytest.raises(AuditError, match="another key"):
        AuditLog(path, key_path=tmp_path / "other" / "audit-key.pem")
    # the refused open changed nothing
    report = _verify(path)
    assert report.size == 1
    with AuditLog(path) as log:  # the right key still opens it
        assert log.store.size() == 1


def test_another_log_sharing_the_key_file_does_not_break_this_one(tmp_path: Path) -> None:
    """A second log signed with this log's key file: refused, or both still verify."""
    first = tmp_path / "a" / "audit.db"
    with AuditLog(first) as log:
        log.append(_rec(0))
    second = tmp_path / "b" / "audit.db"
    try:
        with AuditLog(second, key_path=first.with_name("audit-key.pem")) as log:
            log.append(_rec(0))
    except AuditError:
        pass  # refusing to sign a second log with a key bound to another origin is fine
    assert _verify(first).size == 1


# --- canonical JSON (RFC 8785) ---------------------------------------------------------------

_CHARS = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",))
_SPECIAL = st.sampled_from(
    ["\x00", "\x1f", "\x7f", "\u2028", "\ud7ff", "\ue000", "\uffff", "\U00010000", "😀", "é"]
)
_TEXT = st.one_of(st.text(_CHARS, max_size=12), st.text(_SPECIAL, max_size=4))
_FLOATS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(
        [-0.0, 0.0, 1e21, 1e-7, 1e20, 1e-6, 5e-324, 1.7976931348623157e308, 0.1, 333333333.33333329]
    ),
)
_INTS = st.one_of(
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.sampled_from([2**53 - 1, 2**53, -(2**53) + 1, -(2**53), 2**63, -(2**64)]),
)
_SCALARS = st.one_of(st.none(), st.booleans(), _INTS, _FLOATS, _TEXT)
_JSON = st.recursive(
    _SCALARS,
    lambda kids: st.one_of(st.lists(kids, max_size=5), st.dictionaries(_TEXT, kids, max_size=5)),
    max_leaves=30,
)


# without floats and (mostly) without non-BMP keys: the records that take the fast path
_FAST_JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), _INTS, _TEXT),
    lambda kids: st.one_of(st.lists(kids, max_size=5), st.dictionaries(_TEXT, kids, max_size=5)),
    max_leaves=30,
)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_TEXT, _JSON, max_size=6))
def test_canonical_is_the_reference_jcs_encoding(value: dict[str, Any]) -> None:
    clean, _ = json_safe(value)
    want = bytes(rfc8785.dumps(clean))
    assert canonical(value) == want
    assert _same_json(json.loads(want), clean)


@settings(max_examples=200, deadline=None)
@given(value=st.dictionaries(_TEXT, _FAST_JSON, max_size=6))
def test_the_fast_path_is_byte_identical_when_taken(value: dict[str, Any]) -> None:
    clean, fast = json_safe(value)
    if fast:
        assert msgspec.json.Encoder(order="sorted").encode(clean) == bytes(rfc8785.dumps(clean))
    assert canonical(value) == bytes(rfc8785.dumps(clean))


def test_the_fast_path_is_taken_for_plain_records() -> None:
    """The property above is not vacuous: ordinary records do take the fast path."""
    assert json_safe({"a": [1, "é", None, True, {"x": "😀"}], "é": 2**53 - 1})[1]
    assert not json_safe({"a": 0.5})[1]
    assert not json_safe({"😀": 1})[1]


def _same_json(parsed: Any, original: Any) -> bool:
    """``parsed`` (from JCS text) carries the same JSON value as ``original``."""
    if isinstance(original, float):
        # JCS writes 1e16-ish floats without an exponent, so they may come back as ints
        return math.isfinite(original) and float(parsed) == original
    if isinstance(original, dict):
        return (
            isinstance(parsed, dict)
            and parsed.keys() == original.keys()
            and all(_same_json(parsed[k], v) for k, v in original.items())
        )
    if isinstance(original, list):
        return (
            isinstance(parsed, list)
            and len(parsed) == len(original)
            and all(_same_json(p, o) for p, o in zip(parsed, original, strict=True))
        )
    return type(parsed) is type(original) and parsed == original


class _BadRepr:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


class _Opaque:
    pass


class _HugeInt(int):
    """An int too long for ``str()`` (CPython's 4300-digit limit), with a printable repr."""

    @classmethod
    def of(cls, digits: int) -> _HugeInt:
        return cls(10**digits - 1)

    def __repr__(self) -> str:
        return f"<int of {self.bit_length()} bits>"


def _self_referential() -> list[Any]:
    loop: list[Any] = []
    loop.append(loop)
    return loop


_LONE = st.sampled_from(["\ud800", "a\udfff", "\udc00\ud800", "x\ud83d"])
_ODD_SCALARS = st.one_of(
    _SCALARS,
    st.binary(max_size=8),
    st.builds(bytearray, st.binary(max_size=4)),
    st.builds(_Opaque),
    st.builds(_BadRepr),
    st.builds(_self_referential),
    st.frozensets(st.integers(), max_size=3),
    _LONE,
    st.sampled_from([5000, 20000]).map(_HugeInt.of),  # beyond Python's int-to-str limit
)
_ODD_KEYS = st.one_of(_TEXT, _LONE, st.integers(), st.none(), st.tuples(st.integers()), st.binary())
_ODD = st.recursive(
    _ODD_SCALARS,
    lambda kids: st.one_of(
        st.lists(kids, max_size=4),
        st.tuples(kids, kids),
        st.dictionaries(_ODD_KEYS, kids, max_size=4),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(_ODD_KEYS, _ODD, max_size=5))
def test_canonical_never_raises_on_non_json_values(value: dict[Any, Any]) -> None:
    out = canonical(value)
    decoded = json.loads(out.decode("utf-8"))  # valid UTF-8 JSON, always
    assert isinstance(decoded, dict)
    assert len(decoded) <= len(value)
    assert out == bytes(rfc8785.dumps(json_safe(value)[0]))


def test_canonical_cuts_deep_nesting_with_a_marker() -> None:
    deep: Any = "leaf"
    for _ in range(5000):
        deep = [deep]
    decoded = json.loads(canonical({"deep": deep, "loop": _self_referential()}))
    for key in ("deep", "loop"):
        node, depth = decoded[key], 1
        while isinstance(node, list):
            (node,) = node
            depth += 1
        assert node["non_json"] == "list", key
        assert depth < 100
