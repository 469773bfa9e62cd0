"""Benchmark Microsoft's Agent Governance Toolkit (AGT) on the neutral warden workload.

Runs inside a virtualenv that contains only AGT (see ``setup_agt.sh``); warden is never
imported. The shared workload (``benchmarks/workload.py``) is imported by path, translated
into AGT's own policy formats, loaded with AGT's own loaders and evaluated with AGT's own
entry points. One JSON document is written to stdout; progress goes to stderr.

Engines (all from ``agent-governance-toolkit-core``):

* ``agent_os.PolicyEvaluator`` (primary) -- ``PolicyEvaluator.evaluate(context)``, the entry
  point AGT's docs and ``bench_policy.py`` call "policy evaluation". One condition per rule,
  so a workload rule keeps its tool glob (as an anchored ``matches`` regex) and loses its
  amount condition.
* ``agent_os.PolicyEvaluator[contains]`` -- diagnostic: same engine, tool glob ``X*`` mapped to
  the cheap ``contains`` operator on the literal prefix ``X`` instead of a regex, to separate
  the cost of AGT's per-call regex handling from its rule scan.
* ``agent_os.SharedPolicyEvaluator`` -- AGT's evaluator with AND-ed condition lists: the
  faithful mapping (tool regex AND amount), default deny via a lowest-priority catch-all.

Usage: ``.venv-agt/bin/python benchmarks/compare/agt_runner.py > agt.json``
"""

from __future__ import annotations

import argparse
import fnmatch
import functools
import gc
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import workload
from timing import package_versions, time_calls  # the same timing code as benchmarks/run.py

with warnings.catch_warnings():
    # agent_os / agentmesh emit "deprecated, use agent-governance-toolkit-core" warnings on
    # import even though they ship inside that very package.
    warnings.simplefilter("ignore", DeprecationWarning)
    from agent_os.audit_logger import (
        GovernanceAuditLogger,
        JsonlFileBackend,
    )
    from agent_os.policies import PolicyEvaluator
    from agent_os.policies.shared import (
        SharedPolicyEvaluator,
        SharedPolicySchema,
    )
    from agentmesh.governance.audit import AuditLog
    from agentmesh.governance.audit_backends import FileAuditSink
    from agentmesh.governance.policy import PolicyEngine

PRIMARY = "agent_os.PolicyEvaluator"
PACKAGES = ("agent-governance-toolkit", "agent-governance-toolkit-core", "pydantic", "PyYAML")
AUDIT_EVENT = "policy_evaluation"
HMAC_KEY = b"agt-bench-hmac-key-32-bytes-long"

Rule = dict[str, Any]
Action = dict[str, Any]
Context = dict[str, Any]


def log(msg: str) -> None:
    print(f"[agt-runner] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Workload -> AGT translation
# --------------------------------------------------------------------------------------------


def glob_regex(glob: str) -> str:
    """Anchored regex for a tool glob; AGT's ``matches`` operator uses ``re.search``."""
    return "^" + fnmatch.translate(glob)


def data_key(rule: Rule) -> str:
    """Flat context key for a rule's data condition (AGT does ``context.get(field)``)."""
    return f"{rule['source']}.{rule['field']}"


def flat_context(action: Action) -> Context:
    """Workload action -> the flat context dict agent_os evaluators read.

    agent_os looks fields up with ``context.get(field)`` (no nested paths), so ``args`` and
    ``agent`` are flattened to ``args.<k>`` / ``agent.<k>`` keys; the tool goes to AGT's
    conventional ``tool_name`` key.
    """
    ctx: Context = {
        "tool_name": action["tool"],
        "action": action["kind"],
        "agent_id": action["agent"]["id"],
        "session_id": action["session"],
    }
    for source in ("args", "agent"):
        for key, value in action[source].items():
            ctx[f"{source}.{key}"] = value
    return ctx


def _priority(rule: Rule) -> int:
    # Global guard rules (tool "*", e.g. low-trust) are checked before tool rules so that a
    # guard deny cannot be shadowed by AGT's first-match on a tool-specific allow.
    return 1 if rule["tool"] == "*" else 0


def agent_os_document(n: int, tool_op: str) -> dict[str, Any]:
    """Native ``PolicyDocument`` (YAML) for agent_os.PolicyEvaluator.

    ``tool_op`` is ``"matches"`` (anchored regex from the glob) or ``"contains"`` (literal
    prefix of a ``prefix*`` glob). A rule holds exactly one condition: tool-specific rules
    keep the tool condition and drop the data condition; ``tool: "*"`` rules keep the data
    condition.
    """
    rules: list[dict[str, Any]] = []
    for rule in workload.make_rules(n):
        if rule["tool"] == "*":
            cond = {"field": data_key(rule), "operator": rule["op"], "value": rule["value"]}
        elif tool_op == "matches":
            cond = {"field": "tool_name", "operator": "matches", "value": glob_regex(rule["tool"])}
        else:
            prefix = rule["tool"].rstrip("*")
            if "*" in prefix or "?" in prefix or "[" in prefix:
                raise ValueError(f"'contains' mapping needs a 'prefix*' glob: {rule['tool']!r}")
            cond = {"field": "tool_name", "operator": "contains", "value": prefix}
        rules.append(
            {
                "name": rule["id"],
                "condition": cond,
                "action": rule["effect"],
                "priority": _priority(rule),
                "message": rule["reason"],
            }
        )
    return {
        "version": "1.0",
        "name": f"bench-{n}",
        "description": "warden comparison workload",
        "defaults": {"action": workload.DEFAULT_EFFECT},
        "rules": rules,
    }


def shared_schema(n: int) -> dict[str, Any]:
    """Native ``SharedPolicySchema`` (YAML): AND-ed condition lists, i.e. the full rule."""
    rules: list[dict[str, Any]] = []
    for rule in workload.make_rules(n):
        conds: list[dict[str, Any]] = []
        if rule["tool"] != "*":
            conds.append(
                {"field": "tool_name", "operator": "matches", "value": glob_regex(rule["tool"])}
            )
        conds.append({"field": data_key(rule), "operator": rule["op"], "value": rule["value"]})
        rules.append(
            {
                "id": rule["id"],
                "action": rule["effect"],
                "conditions": conds,
                "priority": _priority(rule),
            }
        )
    # SharedPolicyEvaluator has no default action (no match -> allow); an unconditional
    # lowest-priority rule expresses the workload's default deny.
    rules.append(
        {"id": "default", "action": workload.DEFAULT_EFFECT, "conditions": [], "priority": -1}
    )
    return {
        "version": "1.0",
        "name": f"bench-{n}",
        "description": "warden comparison workload",
        "scope": "tool",
        "rules": rules,
    }


# --------------------------------------------------------------------------------------------
# Engines
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Engine:
    """One AGT evaluator: how to render, load and call it."""

    name: str
    api: str
    loader: str
    mapping: str
    render: Callable[[int], dict[str, Any]]
    load: Callable[[Path], Any]
    bind: Callable[[Any, Context], Callable[[], Any]]


def _load_agent_os(policy_dir: Path) -> Any:
    evaluator = PolicyEvaluator()
    evaluator.load_policies(policy_dir)
    return evaluator


def _bind_agent_os(evaluator: Any, ctx: Context) -> Callable[[], Any]:
    return functools.partial(evaluator.evaluate, ctx)


def _load_shared(policy_dir: Path) -> Any:
    (path,) = sorted(policy_dir.glob("*.yaml"))
    return SharedPolicyEvaluator(), SharedPolicySchema.from_yaml(path).parsed_rules()


def _bind_shared(loaded: Any, ctx: Context) -> Callable[[], Any]:
    evaluator, rules = loaded
    return functools.partial(evaluator.evaluate, ctx, rules)


ENGINES: dict[str, Engine] = {
    e.name: e
    for e in (
        Engine(
            name=PRIMARY,
            api="agent_os.policies.PolicyEvaluator.evaluate(context) -> PolicyDecision",
            loader="PolicyEvaluator.load_policies(dir) (PolicyDocument.from_yaml per file)",
            mapping=(
                "one condition per rule: tool glob -> tool_name `matches` anchored regex; "
                "the args.amount condition is DROPPED (no AND in PolicyDocument rules); "
                "low-trust -> agent.trust `lt` 100 with priority 1; defaults.action=deny"
            ),
            render=functools.partial(agent_os_document, tool_op="matches"),
            load=_load_agent_os,
            bind=_bind_agent_os,
        ),
        Engine(
            name=f"{PRIMARY}[contains]",
            api="agent_os.policies.PolicyEvaluator.evaluate(context) -> PolicyDecision",
            loader="PolicyEvaluator.load_policies(dir) (PolicyDocument.from_yaml per file)",
            mapping=(
                "diagnostic: as primary but tool glob 'X*' -> tool_name `contains` 'X' "
                "(unanchored substring, looser than the glob; no regex)"
            ),
            render=functools.partial(agent_os_document, tool_op="contains"),
            load=_load_agent_os,
            bind=_bind_agent_os,
        ),
        Engine(
            name="agent_os.SharedPolicyEvaluator",
            api="agent_os.policies.shared.SharedPolicyEvaluator.evaluate(context, rules)",
            loader="SharedPolicySchema.from_yaml(path).parsed_rules()",
            mapping=(
                "faithful: conditions [tool_name `matches` anchored regex, args.amount `gt` v] "
                "AND-ed; low-trust priority 1; default deny = unconditional rule, priority -1"
            ),
            render=shared_schema,
            load=_load_shared,
            bind=_bind_shared,
        ),
    )
}


def decision_effect(decision: Any) -> tuple[str, str, str | None]:
    """(normalised effect, AGT's raw action string, matched rule id) of a decision."""
    effect = "allow" if decision.allowed else "deny"
    matched = getattr(decision, "matched_rule", None) or getattr(decision, "matched_rule_id", None)
    return effect, str(decision.action), matched


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def time_load(
    load: Callable[[], Any], max_reps: int = 5, budget_s: float = 1.0
) -> tuple[float, Any]:
    """Median wall time (ms) of ``load()`` over up to ``max_reps`` runs or ``budget_s``.

    Returns the median and the object built by the last run.
    """
    times: list[float] = []
    loaded: Any = None
    start = time.perf_counter()
    while len(times) < max_reps:
        loaded = None
        gc.collect()
        t0 = time.perf_counter_ns()
        loaded = load()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - start >= budget_s:
            break
    return round(statistics.median(times), 3), loaded


def bench_engine(
    engine: Engine, sizes: tuple[int, ...], max_samples: int, budget_s: float, workdir: Path
) -> dict[str, Any]:
    evaluate: dict[str, dict[str, Any]] = {}
    load_ms: dict[str, float] = {}
    mismatches: list[str] = []
    for n in sizes:
        policy_dir = workdir / f"{engine.name}-{n}"
        policy_dir.mkdir()
        with open(policy_dir / "policy.yaml", "w", encoding="utf-8") as fh:
            yaml.safe_dump(engine.render(n), fh, sort_keys=False)
        load_ms[str(n)], loaded = time_load(functools.partial(engine.load, policy_dir))
        expected = workload.expected_effects(n)
        actions = workload.make_actions(n)
        per_action_ns = int(budget_s * 1e9 / len(actions))
        evaluate[str(n)] = {}
        for name, action in actions.items():
            call = engine.bind(loaded, flat_context(action))
            effect, raw, matched = decision_effect(call())
            gc.collect()
            stats = time_calls(call, max_samples, per_action_ns)
            evaluate[str(n)][name] = {
                **stats,
                "effect": effect,
                "agt_action": raw,
                "matched_rule": matched,
                "expected": expected[name],
                "correct": effect == expected[name],
            }
            if effect != expected[name]:
                mismatches.append(f"n={n} {name}: got {effect}, expected {expected[name]}")
            log(
                f"{engine.name} n={n} {name}: p50={stats['p50_ns'] / 1e3:.1f}us "
                f"({stats['samples']} samples) effect={effect} rule={matched}"
            )
    return {
        "api": engine.api,
        "loader": engine.loader,
        "mapping": engine.mapping,
        "evaluate": evaluate,
        "load_ms": load_ms,
        "mismatches": mismatches,
    }


# --------------------------------------------------------------------------------------------
# Audit
# --------------------------------------------------------------------------------------------


def _append_records(write: Callable[[int], Any], n: int) -> float:
    gc.collect()
    t0 = time.perf_counter_ns()
    for i in range(n):
        write(i)
    return (time.perf_counter_ns() - t0) / 1e9


def _mesh_writer(audit: Any) -> Callable[[int], Any]:
    def write(i: int) -> Any:
        return audit.log(
            AUDIT_EVENT,
            "did:key:z6MkBench",
            "tool5.op",
            data={"amount": i, "session": "s1"},
            outcome="success",
            policy_decision="allow",
        )

    return write


def bench_audit(n: int, workdir: Path) -> dict[str, Any]:
    """Append ``n`` records through AGT's audit loggers (default and file-backed setups)."""
    out: dict[str, Any] = {"records": n}

    mem = AuditLog()
    secs = _append_records(_mesh_writer(mem), n)
    ok, err = mem.verify_integrity()
    out["agentmesh.AuditLog"] = {
        "api": "agentmesh.governance.audit.AuditLog().log(...)",
        "persistence": "in-memory list (default: sink=None); SHA-256 hash chain + Merkle tree",
        "durable": False,
        "fsync": False,
        "seconds": round(secs, 3),
        "records_per_s": round(n / secs, 1),
        "chain_verified": ok,
        "verify_error": err,
    }
    del mem
    log(f"audit AuditLog (memory): {n / secs:,.0f} records/s")

    path = workdir / "mesh-audit.jsonl"
    sink = FileAuditSink(path, HMAC_KEY)
    filed = AuditLog(sink=sink)
    secs = _append_records(_mesh_writer(filed), n)
    sink.close()
    out["agentmesh.AuditLog+FileAuditSink"] = {
        "api": "AuditLog(sink=FileAuditSink(path, secret_key)).log(...)",
        "persistence": (
            "in-memory chain + JSONL file of HMAC-signed entries; the file is opened and "
            "closed for every entry, never fsync'd"
        ),
        "durable": False,
        "fsync": False,
        "survives_process_crash": True,
        "seconds": round(secs, 3),
        "records_per_s": round(n / secs, 1),
        "file_bytes": path.stat().st_size,
    }
    del filed
    log(f"audit AuditLog+FileAuditSink: {n / secs:,.0f} records/s")

    gpath = workdir / "gov-audit.jsonl"
    gov = GovernanceAuditLogger()
    backend = JsonlFileBackend(gpath)
    gov.add_backend(backend)

    def gov_write(i: int) -> None:
        gov.log_decision("did:key:z6MkBench", "tool5.op", "allow", reason="rule 5", amount=i)

    secs = _append_records(gov_write, n)
    t0 = time.perf_counter_ns()
    gov.flush()
    flush_s = (time.perf_counter_ns() - t0) / 1e9
    backend.close()
    out["agent_os.GovernanceAuditLogger+JsonlFileBackend"] = {
        "api": "GovernanceAuditLogger().add_backend(JsonlFileBackend(path)); .log_decision(...)",
        "persistence": (
            "buffered JSONL file (Python text I/O buffer, flushed only on flush()/close()); "
            "no hash chain; with no backend added (the default) entries are discarded"
        ),
        "durable": False,
        "fsync": False,
        "survives_process_crash": False,
        "seconds": round(secs, 3),
        "records_per_s": round(n / secs, 1),
        "final_flush_s": round(flush_s, 4),
        "file_bytes": gpath.stat().st_size,
    }
    log(f"audit GovernanceAuditLogger+JsonlFileBackend: {n / secs:,.0f} records/s")
    return out


# --------------------------------------------------------------------------------------------
# Fail-open probes
# --------------------------------------------------------------------------------------------

_MISSING = workload.MISSING
PROBE_AMOUNTS = workload.PROBE_AMOUNTS  # the same probe warden's run.py sends


@contextmanager
def quiet_logging() -> Iterator[None]:
    """AGT logs evaluation errors at ERROR with tracebacks; keep stderr readable."""
    logging.disable(logging.CRITICAL)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _probe_outcome(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        decision = fn()
    except Exception as exc:
        return {"result": "raised", "error": f"{type(exc).__name__}: {exc}"}
    effect, raw, matched = decision_effect(decision)
    return {
        "result": effect,
        "agt_action": raw,
        "matched_rule": matched,
        "reason": getattr(decision, "reason", None),
    }


def run_probes() -> dict[str, Any]:
    """Deny rule ``amount > 1000`` (high priority) + allow rule for tool ``transfer``.

    A fail-closed engine must not ``allow`` any of the non-control inputs.
    """
    os_doc = {
        "version": "1.0",
        "name": "probe",
        "defaults": {"action": "deny"},
        "rules": [
            {
                "name": "big-transfer",
                "action": "deny",
                "priority": 10,
                "condition": {"field": "amount", "operator": "gt", "value": 1000},
            },
            {
                "name": "transfers-ok",
                "action": "allow",
                "priority": 0,
                "condition": {"field": "tool_name", "operator": "eq", "value": "transfer"},
            },
        ],
    }
    shared = {
        "name": "probe",
        "scope": "tool",
        "rules": [
            {
                "id": "big-transfer",
                "action": "deny",
                "priority": 10,
                "conditions": [{"field": "amount", "operator": "gt", "value": 1000}],
            },
            {
                "id": "transfers-ok",
                "action": "allow",
                "priority": 0,
                "conditions": [{"field": "tool_name", "operator": "eq", "value": "transfer"}],
            },
        ],
    }
    mesh_yaml = "\n".join(
        [
            "apiVersion: governance.toolkit/v1",
            "name: probe",
            "agents: ['*']",
            "default_action: deny",
            "rules:",
            "  - {name: big-transfer, action: deny, priority: 10,",
            "     condition: \"tool_name == 'transfer' and args.amount > 1000\"}",
            "  - {name: transfers-ok, action: allow, priority: 0,",
            "     condition: \"tool_name == 'transfer'\"}",
        ]
    )
    with tempfile.TemporaryDirectory() as tmp:
        Path(tmp, "probe.yaml").write_text(yaml.safe_dump(os_doc), encoding="utf-8")
        os_eval = _load_agent_os(Path(tmp))
    shared_rules = SharedPolicySchema.model_validate(shared).parsed_rules()
    shared_eval = SharedPolicyEvaluator()
    mesh = PolicyEngine()
    mesh.load_yaml(mesh_yaml)

    results: dict[str, dict[str, Any]] = {
        "agent_os.PolicyEvaluator": {},
        "agent_os.SharedPolicyEvaluator": {},
        "agentmesh.PolicyEngine": {},
    }
    with quiet_logging():
        for label, amount in PROBE_AMOUNTS.items():
            flat: Context = {"tool_name": "transfer"}
            args: Context = {}
            if amount is not _MISSING:
                flat["amount"] = amount
                args["amount"] = amount
            results["agent_os.PolicyEvaluator"][label] = _probe_outcome(
                functools.partial(os_eval.evaluate, dict(flat))
            )
            results["agent_os.SharedPolicyEvaluator"][label] = _probe_outcome(
                functools.partial(shared_eval.evaluate, dict(flat), shared_rules)
            )
            results["agentmesh.PolicyEngine"][label] = _probe_outcome(
                functools.partial(
                    mesh.evaluate, "did:key:probe", {"tool_name": "transfer", "args": args}
                )
            )
    return {
        "setup": (
            "deny rule 'amount > 1000' (priority 10) above allow rule 'tool_name == transfer' "
            "(priority 0), default deny; action tool_name=transfer with various amounts"
        ),
        "results": results,
    }


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------


def build_notes(engines: dict[str, dict[str, Any]], probes: dict[str, Any] | None) -> list[str]:
    notes = [
        "`pip install agent-governance-toolkit` alone installs only the agent_compliance "
        "module; the policy evaluator (agent_os) and audit log (agentmesh) come from "
        "agent-governance-toolkit-core, pulled in by the [core] extra.",
        f"Primary = {PRIMARY}.evaluate(), the call AGT's BENCHMARKS.md and bench_policy.py "
        "time as 'policy evaluation'. Its rules hold ONE condition, so the amount condition "
        "of every tool rule is dropped; decisions on the benchmark actions are still the "
        "expected ones because each action's amount satisfies its rule.",
        "agent_os.SharedPolicyEvaluator is the faithful (AND-ed) mapping; it has no default "
        "action, so default deny is an unconditional priority -1 rule.",
        "Context is flattened to {'tool_name', 'args.amount', 'agent.trust', ...}: agent_os "
        "reads fields with context.get(field), no nested paths. Flattening is not timed.",
        "Glob -> regex uses '^' + fnmatch.translate(glob); AGT calls re.search(str(value), ...) "
        "per rule per call without precompiling, so with more than re's 512-entry cache of "
        "distinct patterns every evaluation recompiles the regexes it scans.",
        "agent_os evaluators rebuild and sort the full rule list on every call (O(n log n)), "
        "then scan first-match; a default-deny action scans every rule.",
        "Timing: perf_counter_ns around each call (timer overhead ~50-100 ns included), "
        "warm-up first, gc enabled; p50/p99 nearest-rank; ops_per_s = 1e9/mean. Slow sizes "
        "are bounded by the time budget, see 'samples'.",
    ]
    for name, res in engines.items():
        if res["mismatches"]:
            notes.append(f"{name} decided differently than expected: {res['mismatches']}")
    if probes is not None:
        for name, cases in probes["results"].items():
            bypassed = [label for label, out in cases.items() if out["result"] == "allow"]
            raised = [label for label, out in cases.items() if out["result"] == "raised"]
            notes.append(
                f"fail-open probe, {name}: deny rule bypassed (allowed) for {bypassed}"
                + (f"; raised to the caller for {raised}" if raised else "")
            )
    return notes


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        default=",".join(map(str, workload.SIZES)),
        help="comma-separated rule counts (default: %(default)s)",
    )
    ap.add_argument(
        "--max-samples",
        type=int,
        default=20_000,
        help="timed calls per action (default: %(default)s)",
    )
    ap.add_argument(
        "--budget-s",
        type=float,
        default=3.0,
        help="time budget per size and engine, shared by the actions (default: 3)",
    )
    ap.add_argument(
        "--audit-n",
        type=int,
        default=100_000,
        help="audit records to append per logger setup; 0 skips (default: 100000)",
    )
    ap.add_argument(
        "--engines",
        default="all",
        help=f"'all', 'primary' or comma-separated names from {list(ENGINES)}",
    )
    ap.add_argument("--no-probes", action="store_true", help="skip the fail-open probes")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    if args.engines == "all":
        selected = list(ENGINES)
    elif args.engines == "primary":
        selected = [PRIMARY]
    else:
        selected = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in selected if e not in ENGINES]
    if unknown:
        print(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}", file=sys.stderr)
        return 2

    versions = package_versions(PACKAGES)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="agt-bench-") as tmp:
        workdir = Path(tmp)
        for name in selected:
            results[name] = bench_engine(
                ENGINES[name], sizes, args.max_samples, args.budget_s, workdir
            )
        audit = bench_audit(args.audit_n, workdir) if args.audit_n > 0 else {"skipped": True}

    probes = None if args.no_probes else run_probes()
    primary = results.get(PRIMARY)
    doc: dict[str, Any] = {
        "tool": "agent-governance-toolkit",
        "version": versions["agent-governance-toolkit"],
        "package": (
            f"agent-governance-toolkit[core]=={versions['agent-governance-toolkit']} "
            f"(evaluator + audit from agent-governance-toolkit-core=="
            f"{versions['agent-governance-toolkit-core']})"
        ),
        "packages": versions,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "config": {
            "sizes": list(sizes),
            "max_samples": args.max_samples,
            "budget_s_per_size": args.budget_s,
            "audit_n": args.audit_n,
        },
        "engine": ({k: primary[k] for k in ("api", "loader", "mapping")} if primary else None),
        "evaluate": primary["evaluate"] if primary else {},
        "load_ms": primary["load_ms"] if primary else {},
        "variants": {k: v for k, v in results.items() if k != PRIMARY},
        "audit": audit,
        "probes": probes,
        "notes": build_notes(results, probes),
    }
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
