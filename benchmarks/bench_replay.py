"""Replay benchmark: `warden replay` of a large audit log under a candidate policy.

The log is built directly through the store's batch append (prebuilt
``warden.decision/v1`` records whose decisions are what the old policy
decides, plus one outcome record for every four decisions), so building it
costs Merkle hashing and SQLite inserts only. Target (the issue): 1,000,000
recorded actions replayed in under 30 s.

    python benchmarks/bench_replay.py [N]        # prints the result as JSON
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from warden import Action, load_policy_text
from warden.audit import AuditLog
from warden.policy import Policy, evaluate
from warden.sre.replay import replay

TOOLS = 40
AGENTS = 8
TEMPLATES = 4096
CHUNK = 10_000
TARGET_S = 30.0
TARGET_N = 1_000_000


def _policy(limit: int, name: str) -> str:
    """20 tool families of two rules each, a redacting rule for payments, a global deny."""
    lines = [
        "apiVersion: warden/v1",
        "kind: Policy",
        f"name: {name}",
        "default: deny",
        "rules:",
        '  - {id: pay-card, tool: "pay*", effect: allow, redact: card,'
        f' when: "args.amount <= {limit}"}}',
        "  - {id: no-root, tool: \"*\", effect: deny, when: \"get(args, 'user', '') == 'root'\"}",
    ]
    for i in range(TOOLS // 2):
        lines.append(
            f'  - {{id: t{i}-read, tool: "t{i}.read*", effect: allow, when: "agent.ring >= 2"}}'
        )
        lines.append(
            f'  - {{id: t{i}-big, tool: "t{i}.write", effect: require_approval,'
            f' when: "args.amount > {limit + i * 10}"}}'
        )
        lines.append(f'  - {{id: t{i}-write, tool: "t{i}.write", effect: allow}}')
    return "\n".join(lines) + "\n"


OLD = _policy(1000, "bench-old")
NEW = _policy(900, "bench-new")  # lower limits: some allows become denies or approvals


def _tool(i: int) -> str:
    family = i % TOOLS
    if family < 4:
        return f"pay{family}.charge"
    return f"t{family // 2}.{'read' if family % 2 else 'write'}"


def _templates(policy: Policy) -> list[dict[str, Any]]:
    """Distinct decision records: varied tools, amounts, agents; decided by ``policy``."""
    out = []
    for i in range(TEMPLATES):
        tool = _tool(i)
        args: dict[str, Any] = {"amount": (i * 37) % 2000, "user": "root" if i % 97 == 0 else "u"}
        if tool.startswith("pay"):
            args["card"] = "4111 1111 1111 1111"
        agent = {"id": f"did:key:z6MkAgent{i % AGENTS}", "trust": 500, "ring": 2 + i % 2}
        action = Action(tool=tool, args=args, agent=agent, session=f"s{i % 64}")
        d = evaluate(policy, action)
        recorded = dict(args)
        if "redact:args.card" in d.obligations:
            digest = hashlib.sha256(
                json.dumps({"v": args["card"]}, separators=(",", ":")).encode()
            ).hexdigest()
            recorded["card"] = {"redacted": f"sha256:{digest}"}
        out.append(
            {
                "type": "warden.decision/v1",
                "time": "2026-11-25T23:51:13.123456Z",
                "id": f"{i:032x}",
                "agent": agent,
                "session": action.session,
                "action": {"kind": "tool_call", "tool": tool, "args": recorded},
                "decision": {
                    "effect": d.effect.value,
                    "rules": list(d.rules),
                    "reasons": list(d.reasons),
                    "errors": list(d.errors),
                },
                "policy": policy.hash,
                "approval": None,
                "elapsed_ns": 3000,
            }
        )
    return out


_OUTCOME: dict[str, Any] = {
    "type": "warden.outcome/v1",
    "time": "2026-11-25T23:51:13.223456Z",
    "decision": "0" * 32,
    "agent": "did:key:z6MkAgent0",
    "session": "s0",
    "tool": "t2.read",
    "status": "ok",
    "duration_ns": 120_000,
    "output": {"size": 2, "digest": "sha256:" + "b" * 64},
    "error": None,
}


def build(path: Path, n: int) -> int:
    """Write ``n`` decision records (and n // 4 outcomes); return the number of entries."""
    templates = _templates(load_policy_text(OLD))
    log = AuditLog(path)
    entries = 0
    batch: list[dict[str, Any]] = []
    for i in range(n):
        batch.append(templates[i % TEMPLATES])
        if i % 4 == 3:
            batch.append(_OUTCOME)
        if len(batch) >= CHUNK:
            log.store.append_batch(batch, [True] * len(batch))
            entries += len(batch)
            batch = []
    if batch:
        log.store.append_batch(batch, [True] * len(batch))
        entries += len(batch)
    log.close()
    return entries


def run(n: int = TARGET_N) -> dict[str, Any]:
    """Build an n-decision log, then time `replay` of it under the candidate policy."""
    with tempfile.TemporaryDirectory(prefix="warden-bench-replay-") as tmp:
        path = Path(tmp) / "audit.db"
        print(f"  replay: building a log of {n:,} decisions", file=sys.stderr)
        t0 = time.perf_counter()
        entries = build(path, n)
        built = time.perf_counter() - t0
        new = load_policy_text(NEW)
        print("  replay: replaying it", file=sys.stderr)
        t0 = time.perf_counter()
        report = replay(path, new, show=20)
        seconds = time.perf_counter() - t0
        same = replay(path, load_policy_text(OLD), show=0)
        if same.changed or report.records != n:
            raise AssertionError(f"replay miscounted: {same.changed} changes, {report.records}")
    return {
        "records": report.records,
        "entries": entries,
        "build_s": round(built, 1),
        "seconds": round(seconds, 2),
        "records_per_s": round(report.records / seconds),
        "projected_1m_s": round(seconds * TARGET_N / report.records, 1),
        "changed": report.changed,
        "approximate": report.approximate,
        "transitions": report.transitions,
    }


def render(r: dict[str, Any]) -> list[str]:
    measured = f"{r['seconds']} s ({r['records_per_s']:,} decisions/s)"
    if r["records"] != TARGET_N:
        measured += f"; {r['projected_1m_s']} s projected for 1,000,000"
    return [
        "",
        "### Replay",
        "",
        "| measure | result | target |",
        "|---|---:|---:|",
        f"| `replay` of {r['records']:,} recorded decisions ({r['entries']:,} log entries) "
        f"under a candidate policy | {measured} | < 30 s for 1,000,000 |",
        f"| decisions the candidate changes | {r['changed']:,} "
        f"({r['approximate']:,} records approximate: redacted arguments) | |",
    ]


if __name__ == "__main__":
    result = run(int(sys.argv[1]) if len(sys.argv) > 1 else TARGET_N)
    print(json.dumps(result, indent=2))
    print("\n".join(render(result)), file=sys.stderr)
