"""Audit-log benchmarks: durable appends, the Governor path with the log on, verify, proofs."""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import workload
from timing import time_calls
from warden import Action, Governor, load_policy_text
from warden.audit import (
    AuditLog,
    leaf_hash,
    open_for_verify,
    trusted_verifier,
    verify_inclusion,
    verify_log,
)
from warden.policy import evaluate

_RECORD: dict[str, Any] = {
    "type": "warden.decision/v1",
    "time": "2026-11-25T23:51:13.123456Z",
    "id": "ab" * 16,
    "agent": {"id": "did:key:z6MkBench", "trust": 700, "ring": 2},
    "session": "s1",
    "action": {"kind": "tool_call", "tool": "tool50.op", "args": {"amount": 505}},
    "decision": {"effect": "allow", "rules": ["r50"], "reasons": ["rule 50"], "errors": []},
    "policy": "sha256:" + "a" * 64,
    "approval": None,
    "elapsed_ns": 3000,
}


def bench_appends(n: int, work: Path) -> dict[str, Any]:
    """Durable appends through AuditLog.record (the Governor's sink), measured to flush()."""
    policy = load_policy_text(workload.to_warden_yaml(100))
    action = Action.from_dict(workload.make_actions(100)["allow_hit"])
    decision = evaluate(policy, action, 0, "ab" * 16)
    log = AuditLog(work / "append.db", max_queue=n + 1)
    t0 = time.perf_counter()
    for _ in range(n):
        log.record(action, decision)
    enqueued = time.perf_counter()
    log.flush()
    done = time.perf_counter()
    log.close()
    return {
        "records": n,
        "records_per_s": round(n / (done - t0)),
        "enqueue_us": round((enqueued - t0) / n * 1e6, 2),
        "batch": "100 entries or 10 ms; up to 1,000 per commit when behind; synchronous=FULL",
    }


def bench_governor(max_samples: int, budget_s: float, work: Path) -> dict[str, Any]:
    """Governor.check at 100 rules with the audit log on (the default) and off."""
    policy = load_policy_text(workload.to_warden_yaml(100))
    action = Action.from_dict(workload.make_actions(100)["allow_hit"])
    budget = int(budget_s * 1e9)
    off = Governor(policy, audit=False)
    on = Governor(policy, audit=AuditLog(work / "gov.db", max_queue=10_000_000))
    out = {
        "audit_off": time_calls(lambda: off.check(action), max_samples, budget),
        "audit_on": time_calls(lambda: on.check(action), max_samples, budget),
    }
    assert on.audit is not None
    on.audit.close()
    return out


def bench_verify_and_proofs(n: int, work: Path) -> dict[str, Any]:
    """Build an n-record log, then time `verify_log` and inclusion proofs in it."""
    path = work / "big.db"
    log = AuditLog(path)
    t0 = time.perf_counter()
    chunk = 10_000
    for start in range(0, n, chunk):
        count = min(chunk, n - start)
        log.store.append_batch([_RECORD] * count, [True] * count)
    built = time.perf_counter() - t0
    log.checkpoint()
    log.close()
    store = open_for_verify(path)
    verifier, _ = trusted_verifier(store, None)
    t0 = time.perf_counter()
    report = verify_log(store, verifier)
    verify_s = time.perf_counter() - t0
    size = store.size()
    root = store.root(size)
    rng = random.Random(7)
    gen: list[int] = []
    ver: list[int] = []
    for _ in range(2000):
        i = rng.randrange(size)
        t1 = time.perf_counter_ns()
        proof = store.inclusion_proof(i, size)
        t2 = time.perf_counter_ns()
        verify_inclusion(leaf_hash(store.record(i)), i, size, proof, root)
        t3 = time.perf_counter_ns()
        gen.append(t2 - t1)
        ver.append(t3 - t2)
    return {
        "records": size,
        "build_s": round(built, 1),
        "verify_s": round(verify_s, 2),
        "verify_records_per_s": round(size / verify_s),
        "nodes_checked": report.nodes,
        "proof_p50_us": round(statistics.median(gen) / 1e3, 1),
        "proof_p99_us": round(sorted(gen)[int(len(gen) * 0.99)] / 1e3, 1),
        "proof_verify_p50_us": round(statistics.median(ver) / 1e3, 1),
        "proof_hashes": len(proof),
        "db_mb": round(path.stat().st_size / 1e6, 1),
    }


def run(max_samples: int, budget_s: float, n_append: int, n_verify: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="warden-bench-audit-") as tmp:
        work = Path(tmp)
        print("  audit: appends", file=sys.stderr)
        appends = bench_appends(n_append, work)
        print("  audit: governor with the log on", file=sys.stderr)
        gov = bench_governor(max_samples, budget_s, work)
        print(f"  audit: building and verifying {n_verify:,} records", file=sys.stderr)
        big = bench_verify_and_proofs(n_verify, work)
    return {"appends": appends, "governor": gov, "verify": big}
