"""Runtime benchmarks: kill to deny, kill to terminated (sandboxed), sandbox start overhead."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from timing import ms_stats, time_calls
from warden import Action, Governor, load_policy_text
from warden.runtime.inflight import InFlight
from warden.runtime.sandbox import Sandbox

POLICY = """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
agents:
  "bot-*": {ring: 2}
"""


def bench_kill_to_deny(rounds: int, work: Path) -> dict[str, Any]:
    """From the start of kill() to the first deny seen by a thread deciding in a loop.

    Also: how long kill() takes to return, by when the kill is on disk (fsync).
    """
    gov = Governor(load_policy_text(POLICY), home=work / "k", audit=False)
    to_deny: list[int] = []
    to_return: list[int] = []
    for i in range(rounds):
        action = Action(tool="fs.read", agent={"id": f"bot-{i}"})
        assert gov.check(action).allowed
        seen: list[int] = []
        go = threading.Event()

        def decide(
            action: Action = action, seen: list[int] = seen, go: threading.Event = go
        ) -> None:
            go.set()
            while gov.check(action).allowed:
                pass
            seen.append(time.perf_counter_ns())

        t = threading.Thread(target=decide)
        t.start()
        go.wait()
        t0 = time.perf_counter_ns()
        gov.runtime.kill(agent=f"bot-{i}", reason="bench")
        to_return.append(time.perf_counter_ns() - t0)
        t.join(10)
        to_deny.append(seen[0] - t0)
    gov.runtime.close()
    return {"deny": ms_stats(to_deny), "durable": ms_stats(to_return)}


def bench_kill_check(max_samples: int, budget_ns: int, work: Path) -> dict[str, Any]:
    """The kill switch's cost on the decision path (a lookup per decision)."""
    gov = Governor(load_policy_text(POLICY), home=work / "c", audit=False)
    gov.runtime.kill(agent="bot-x", reason="bench")
    state = gov.runtime.state
    out = time_calls(lambda: state.killed("bot-1", "s1"), max_samples, budget_ns)
    gov.runtime.close()
    return out


def bench_kill_sandboxed(rounds: int) -> dict[str, Any]:
    """From cancelling a call to its sandboxed `sleep 30` being reaped (bubblewrap)."""
    sandbox = Sandbox()
    flight = InFlight()
    samples: list[int] = []
    for _ in range(rounds):
        box: dict[str, Any] = {}
        started = threading.Event()

        def run(box: dict[str, Any] = box, started: threading.Event = started) -> None:
            with flight.track("bot-1", "s1", "shell.run") as call:
                started.set()
                box["call"] = call
                box["result"] = sandbox.run(["sleep", "30"])
                box["done"] = time.perf_counter_ns()

        t = threading.Thread(target=run)
        t.start()
        started.wait()
        time.sleep(0.15)  # let bwrap start the command
        t0 = time.perf_counter_ns()
        flight.cancel(lambda c: True, "bench")
        t.join(10)
        assert box["result"].killed, box["result"]
        samples.append(box["done"] - t0)
    return ms_stats(samples)


def bench_sandbox_start(rounds: int) -> dict[str, Any]:
    """`true` under bubblewrap against a plain subprocess, end to end."""
    sandbox = Sandbox()
    plain: list[int] = []
    boxed: list[int] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        subprocess.run(["true"], check=True)
        plain.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        result = sandbox.run(["true"])
        boxed.append(time.perf_counter_ns() - t0)
        assert result.ok, result
        assert result.mode == "bwrap", result
    return {"plain": ms_stats(plain), "bwrap": ms_stats(boxed)}


def run(max_samples: int, budget_s: float) -> dict[str, Any]:
    print("warden runtime:", file=sys.stderr)
    budget = int(budget_s * 1e9 / 4)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        return {
            "kill_to_deny": bench_kill_to_deny(200, work),
            "kill_check": bench_kill_check(max_samples, budget, work),
            "kill_sandboxed": bench_kill_sandboxed(20),
            "sandbox_start": bench_sandbox_start(30),
        }


def render(r: dict[str, Any]) -> list[str]:
    s = r["sandbox_start"]
    return [
        "",
        "### Runtime",
        "",
        "| measure | p50 | p90 | target |",
        "|---|---:|---:|---:|",
        f"| kill to deny: from `runtime.kill()` to the first deny a deciding thread sees | "
        f"{r['kill_to_deny']['deny']['p50_ms']} ms | {r['kill_to_deny']['deny']['p90_ms']} ms "
        "| < 1 ms |",
        f"| `runtime.kill()` returns: the kill is on disk (fsync) and audited | "
        f"{r['kill_to_deny']['durable']['p50_ms']} ms | "
        f"{r['kill_to_deny']['durable']['p90_ms']} ms | |",
        f"| kill switch lookup on the decision path | {r['kill_check']['p50_ns'] / 1e3:.2f} µs | "
        f"{r['kill_check']['p99_ns'] / 1e3:.2f} µs (p99) | |",
        f"| kill to terminated, sandboxed `sleep 30` in flight (process group SIGKILL, reaped) | "
        f"{r['kill_sandboxed']['p50_ms']} ms | {r['kill_sandboxed']['p90_ms']} ms | < 100 ms |",
        f"| `true` as a plain subprocess | {s['plain']['p50_ms']} ms | {s['plain']['p90_ms']} ms "
        "| |",
        f"| `true` in the sandbox (bubblewrap, namespaces, rlimits, work dir) | "
        f"{s['bwrap']['p50_ms']} ms | {s['bwrap']['p90_ms']} ms | |",
    ]
