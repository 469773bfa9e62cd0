"""Fleet benchmarks: decisions/s through one and two `warden serve` replicas, kill propagation.

Real replicas (subprocesses) on loopback against the local PostgreSQL and
Redis (``$WARDEN_TEST_DATABASE_URL``, ``$WARDEN_TEST_REDIS_URL``), in a
namespace of their own that is dropped afterwards. The load generator runs in
this process (asyncio, raw keep-alive HTTP/1.1, closed loop): on a 2-core
machine it competes with the replicas for the CPU, so the two-replica number
is what two replicas and their client share, not twice one. The load average
before the run is reported beside the numbers.

Kill propagation: a task decides on replica B in a tight loop while
``POST /v1/kill`` goes to replica A; the time from sending the kill to the
first deny B answers (HTTP both ways, Redis write, pub/sub, B's reload).
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from timing import percentile
from warden.examples.fleet.replicas import (
    Connection,
    Fleet,
    Replica,
    decide_request,
    load,
    request_bytes,
)

CONNECTIONS = 16  # per run, spread over the replicas


def _action(i: int) -> dict[str, Any]:
    return {
        "tool": "db.read",
        "args": {"table": "orders", "limit": 10},
        "agent": {"id": f"agent-{i}"},
        "session": f"s-{i}",
    }


def bench_throughput(
    replicas: list[Replica], token: str, duration: float, warmup: float
) -> dict[str, Any]:
    requests = []
    for i in range(CONNECTIONS):
        r = replicas[i % len(replicas)]
        requests.append((r.host, r.port, decide_request(r.host, r.port, token, _action(i))))
    answers = load(requests, duration=duration, warmup=warmup)
    ns = sorted(int(a.latency * 1e9) for a in answers)
    errors = sum(1 for a in answers if a.status != 200)
    return {
        "replicas": len(replicas),
        "connections": CONNECTIONS,
        "duration_s": duration,
        "decisions": len(answers),
        "decisions_per_s": round(len(answers) / duration),
        "p50_ms": round(statistics.median(ns) / 1e6, 2),
        "p99_ms": round(percentile(ns, 0.99) / 1e6, 2),
        "max_ms": round(ns[-1] / 1e6, 2),
        "errors": errors,
    }


async def _kill_rounds(a: Replica, b: Replica, token: str, rounds: int) -> dict[str, Any]:
    to_deny: list[float] = []
    kill_call: list[float] = []
    killer = Connection(a.host, a.port)
    poller = Connection(b.host, b.port)
    try:
        for i in range(rounds):
            agent = f"kp-{i}"
            decide = decide_request(
                b.host, b.port, token, {"tool": "db.read", "agent": {"id": agent}}
            )
            status, body = await poller.call(decide)
            assert status == 200, body
            assert json.loads(body)["effect"] == "allow", body
            stop = asyncio.Event()
            seen: list[float] = []

            async def poll(
                decide: bytes = decide, stop: asyncio.Event = stop, seen: list[float] = seen
            ) -> None:
                while not stop.is_set():
                    _, body = await poller.call(decide)
                    if json.loads(body)["effect"] == "deny":
                        seen.append(time.perf_counter())
                        return

            task = asyncio.create_task(poll())
            await asyncio.sleep(0.005)  # the poller is in its loop
            kill = json.dumps({"scope": "agent", "target": agent, "reason": "bench"}).encode()
            t0 = time.perf_counter()
            status, body = await killer.call(
                request_bytes(a.host, a.port, "POST", "/v1/kill", token, kill)
            )
            kill_call.append(time.perf_counter() - t0)
            assert status == 200, body
            try:
                await asyncio.wait_for(task, 5)
            except TimeoutError:
                stop.set()
                raise AssertionError(f"replica B never denied `{agent}`") from None
            to_deny.append(seen[0] - t0)
    finally:
        killer.close()
        poller.close()
    ms = sorted(x * 1e3 for x in to_deny)
    return {
        "rounds": rounds,
        "p50_ms": round(statistics.median(ms), 2),
        "p90_ms": round(ms[int(len(ms) * 0.9)], 2),
        "max_ms": round(ms[-1], 2),
        "kill_call_p50_ms": round(statistics.median(kill_call) * 1e3, 2),
    }


def run(
    duration: float = 5.0, warmup: float = 1.0, kill_rounds: int = 50, work: Path | None = None
) -> dict[str, Any]:
    """Throughput with one replica, then two; then kill propagation A -> B."""
    namespace = "wb_" + secrets.token_hex(6)
    with tempfile.TemporaryDirectory(prefix="warden-bench-fleet-") as tmp:
        fleet = Fleet(work or Path(tmp), namespace)
        out: dict[str, Any] = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
        try:
            token = fleet.token("bench", "decide,operate")
            fleet.start(2)
            out["one"] = bench_throughput(fleet.replicas[:1], token, duration, warmup)
            out["two"] = bench_throughput(fleet.replicas, token, duration, warmup)
            a, b = fleet.replicas
            out["kill"] = asyncio.run(_kill_rounds(a, b, token, kill_rounds))
        finally:
            fleet.stop()
            fleet.clean()
        out["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    return out


def render(r: dict[str, Any]) -> list[str]:
    rows = []
    for key, label in (("one", "one replica"), ("two", "two replicas")):
        t = r[key]
        rows.append(
            f"| `POST /v1/decide`, {label}, {t['connections']} keep-alive connections | "
            f"{t['decisions_per_s']:,}/s | {t['p50_ms']} ms | {t['p99_ms']} ms | {t['errors']} |"
        )
    k = r["kill"]
    return [
        "",
        "### Fleet (`warden serve` on PostgreSQL and Redis, loopback)",
        "",
        f"Load average before the run: {', '.join(map(str, r['load_average_before']))} "
        "(the load generator shares the machine with the replicas).",
        "",
        "| measure | decisions | p50 | p99 | errors |",
        "|---|---:|---:|---:|---:|",
        *rows,
        "",
        "| measure | p50 | p90 | max | target |",
        "|---|---:|---:|---:|---:|",
        f"| kill on replica A to the first deny on replica B ({k['rounds']} kills) | "
        f"{k['p50_ms']} ms | {k['p90_ms']} ms | {k['max_ms']} ms | < 100 ms |",
        f"| `POST /v1/kill` answered (Redis write) | {k['kill_call_p50_ms']} ms | | | |",
    ]


if __name__ == "__main__":
    result = run()
    print(json.dumps(result, indent=2))
    print("\n".join(render(result)))
