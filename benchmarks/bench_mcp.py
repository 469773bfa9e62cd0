"""MCP gateway benchmarks: added latency per proxied tool call, and scanning a 100-tool listing.

Two SDK clients run side by side over stdio: one to the fixture server
``tests/gateway/servers/benign.py`` directly, one to ``warden mcp proxy`` in
front of the same server (default policy path: Governor.check, the audit
log, result scanning). Calls alternate between the two, so both see the same
machine state; each call is timed on its own inside the event loop.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from timing import ms_stats

HERE = Path(__file__).resolve().parent
SERVER = HERE.parent / "tests" / "gateway" / "servers" / "benign.py"

POLICY = """\
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: mcp, tool: "mcp.*", effect: allow}
"""


def _warden_mcp() -> list[str]:
    from warden.cli import cli

    if "mcp" in cli.commands:
        return [str(Path(sys.executable).parent / "warden"), "mcp"]
    return [sys.executable, "-c", "from warden.cli.mcp import mcp; mcp(prog_name='warden mcp')"]


def bench_calls(calls: int, work: Path) -> dict[str, Any]:
    """p50 of `tools/call echo` over stdio, bare and through the gateway, interleaved."""
    import anyio
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    policy = work / "policy.yaml"
    policy.write_text(POLICY)
    bare_params = StdioServerParameters(command=sys.executable, args=[str(SERVER)])
    argv = [
        *_warden_mcp(),
        "proxy",
        "--policy",
        str(policy),
        "--home",
        str(work / "home"),
        "--",
        sys.executable,
        str(SERVER),
    ]
    proxied_params = StdioServerParameters(command=argv[0], args=argv[1:])

    async def main() -> dict[str, Any]:
        out: dict[str, Any] = {}
        started = time.perf_counter_ns()
        async with Client(bare_params, cache=None) as bare:
            await bare.list_tools()
            out["bare_first_list_ms"] = round((time.perf_counter_ns() - started) / 1e6, 1)
            started = time.perf_counter_ns()
            async with Client(proxied_params, cache=None) as proxied:
                await proxied.list_tools()
                out["proxied_first_list_ms"] = round((time.perf_counter_ns() - started) / 1e6, 1)
                times: dict[str, list[int]] = {"bare": [], "proxied": []}
                clients = {"bare": bare, "proxied": proxied}
                for i in range(calls + 50):
                    for name, client in clients.items():
                        t0 = time.perf_counter_ns()
                        result = await client.call_tool("echo", {"text": f"call {i}"})
                        elapsed = time.perf_counter_ns() - t0
                        assert not result.is_error, result
                        if i >= 50:  # warm-up
                            times[name].append(elapsed)
        out["bare"] = ms_stats(times["bare"])
        out["proxied"] = ms_stats(times["proxied"])
        out["added_p50_ms"] = round(out["proxied"]["p50_ms"] - out["bare"]["p50_ms"], 3)
        out["ratio_p50"] = round(out["proxied"]["p50_ms"] / out["bare"]["p50_ms"], 2)
        return out

    return anyio.run(main)


def listing(n: int) -> list[Any]:
    """``n`` plausible tools: a sentence or three of description, a small schema each."""
    from warden.gateway.scan import ToolInfo

    verbs = ["get", "list", "create", "update", "delete", "search", "read", "write", "send", "sync"]
    things = ["issue", "file", "page", "user", "order", "ticket", "event", "note", "repo", "label"]
    tools = []
    for i in range(n):
        verb, thing = verbs[i % 10], things[(i // 10) % 10]
        name = f"{verb}_{thing}_{i}"
        description = (
            f"{verb.capitalize()} a {thing} in the workspace. Returns the {thing} as JSON, "
            f"with its id, title, owner and timestamps. Use `limit` to bound the number of "
            f"results and `cursor` to page through them; ids are stable across calls."
        )
        schema = {
            "type": "object",
            "properties": {
                "id": {"type": "string", "description": f"The {thing} id."},
                "limit": {"type": "integer", "minimum": 1, "maximum": 100},
                "cursor": {"type": "string", "description": "An opaque paging cursor."},
                "fields": {"type": "array", "items": {"type": "string"}},
            },
            "required": ["id"],
        }
        tools.append(ToolInfo(f"server{i % 3}", name, description, schema))
    return tools


def bench_scan(n: int = 100, rounds: int = 30) -> dict[str, Any]:
    """`scan_tools` of an n-tool listing (three servers: names are compared across them)."""
    from warden.gateway.pins import tool_digest
    from warden.gateway.scan import scan_tools

    tools = listing(n)
    assert scan_tools(tools) == [], "the benchmark listing must be clean"
    scans: list[int] = []
    digests: list[int] = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        scan_tools(tools)
        scans.append(time.perf_counter_ns() - t0)
        t0 = time.perf_counter_ns()
        for t in tools:
            tool_digest(t.name, t.description, t.input_schema)
        digests.append(time.perf_counter_ns() - t0)
    return {"tools": n, "scan": ms_stats(scans), "digest": ms_stats(digests)}


def run(calls: int = 1000) -> dict[str, Any]:
    print("warden mcp gateway:", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="warden-bench-mcp-") as tmp:
        return {"calls": bench_calls(calls, Path(tmp)), "scan_100": bench_scan(100)}


def render(r: dict[str, Any]) -> list[str]:
    c, s = r["calls"], r["scan_100"]
    return [
        "",
        "### MCP gateway",
        "",
        "| measure | p50 | p90 |",
        "|---|---:|---:|",
        f"| `tools/call` over stdio, the server directly | {c['bare']['p50_ms']} ms | "
        f"{c['bare']['p90_ms']} ms |",
        f"| the same call through `warden mcp proxy` (view check, `Governor.check`, audit, "
        f"result scan, a second stdio hop) | {c['proxied']['p50_ms']} ms | "
        f"{c['proxied']['p90_ms']} ms |",
        f"| added by the gateway | {c['added_p50_ms']} ms ({c['ratio_p50']}x) | |",
        f"| `scan_tools` of a {s['tools']}-tool listing (3 servers) | {s['scan']['p50_ms']} ms | "
        f"{s['scan']['p90_ms']} ms |",
        f"| digests (JCS + SHA-256) of the same {s['tools']} tools | {s['digest']['p50_ms']} ms | "
        f"{s['digest']['p90_ms']} ms |",
        f"| spawn to first `tools/list`: server directly / through the proxy | "
        f"{c['bare_first_list_ms']} ms / {c['proxied_first_list_ms']} ms | |",
    ]


if __name__ == "__main__":
    import json

    result = run()
    print(json.dumps(result, indent=2))
    print("\n".join(render(result)))
