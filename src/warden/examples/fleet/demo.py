"""`make demo-fleet`: two `warden serve` replicas on PostgreSQL and Redis, one kill stops both.

    python -m warden.examples.fleet.demo [--hold]

Starts replicas on 127.0.0.1:7071 and :7072 in namespace ``demo_fleet``
(``$WARDEN_TEST_DATABASE_URL``, ``$WARDEN_TEST_REDIS_URL``; defaults: the local
servers), runs scripted agents against both, kills every agent through replica
A's ``POST /v1/kill`` (what the console's kill button calls), shows the agents
on both replicas denied, restores, then stops the replicas and drops the
namespace. ``--hold`` (or ``WARDEN_DEMO_HOLD=1``) keeps the replicas up until
Ctrl-C so that the console can be tried by hand.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Final

from warden.examples.fleet.replicas import DATABASE_URL, REDIS_URL, Fleet, clean

NAMESPACE: Final = "demo_fleet"
PORTS: Final = [7071, 7072]
AGENTS: Final = {"agent-1": 0, "agent-2": 0, "agent-3": 1, "agent-4": 1}  # agent -> replica
SCRIPT: Final = [
    {"tool": "db.read", "args": {"table": "orders"}},
    {"tool": "ticket.close", "args": {"id": 42}},
    {"tool": "db.drop_table", "args": {"table": "orders"}},
]


def call(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as err:
        answer = {"status": err.code, **json.load(err)}
    return answer


def run_agents(fleet: Fleet, token: str, title: str, script: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for agent, index in AGENTS.items():
        replica = fleet.replicas[index]
        for action in script:
            d = call(f"{replica.url}/v1/decide", token, {**action, "agent": {"id": agent}})
            reason = d["reasons"][-1] if d.get("reasons") else ""
            print(
                f"  {agent} on {replica.name} (:{replica.port})  "
                f"{action['tool']:<14} -> {d['effect']:<5}  {reason}"
            )


def main(argv: list[str]) -> int:
    hold = "--hold" in argv or os.environ.get("WARDEN_DEMO_HOLD") == "1"
    print(f"fleet demo: PostgreSQL {DATABASE_URL}, Redis {REDIS_URL}, namespace `{NAMESPACE}`")
    try:
        clean(NAMESPACE)  # whatever an interrupted run left
    except Exception as exc:  # noqa: BLE001 - any failure here means the servers are not there
        print(f"fleet demo: PostgreSQL and Redis must be running: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="warden-demo-fleet-") as tmp:
        fleet = Fleet(Path(tmp), NAMESPACE)
        try:
            agents = fleet.token("agents", "decide")
            operator = fleet.token("operator", "decide,read,approve,operate")
            fleet.start(2, ports=PORTS)
            for r in fleet.replicas:
                print(f"{r.name}: {r.url} (home {r.home})")
            run_agents(fleet, agents, "agents at work on both replicas:", SCRIPT)

            a = fleet.replicas[0]
            kill = {"scope": "all", "reason": "demo: operator stops the fleet"}
            t0 = time.perf_counter()
            killed = call(f"{a.url}/v1/kill", operator, kill)
            print(
                f"\nPOST {a.url}/v1/kill {json.dumps(kill)} by `{killed['by']}` "
                f"({(time.perf_counter() - t0) * 1e3:.1f} ms; the console's kill button "
                "makes this same call)"
            )
            run_agents(fleet, agents, "the same agents, on both replicas:", SCRIPT[:1])

            call(f"{a.url}/v1/restore", operator, {"scope": "all"})
            print(f'\nPOST {a.url}/v1/restore {{"scope": "all"}}')
            run_agents(fleet, agents, "after the restore:", SCRIPT[:1])

            print(f"\nthe web console: {a.url}/console/ (operator token: {operator})")
            if hold:
                print("holding the replicas up; Ctrl-C to stop them")
                try:
                    while all(r.proc.poll() is None for r in fleet.replicas):
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
            else:
                print("(the replicas stop now; `make demo-fleet HOLD=1` keeps them up to try it)")
        finally:
            codes = fleet.stop()
            fleet.clean()
            print(f"\nreplicas stopped (exit {codes}); namespace `{NAMESPACE}` dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
