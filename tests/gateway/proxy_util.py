"""Helpers for the gateway tests: run `warden mcp ...` as a real process, talk to it with the SDK.

Tests are synchronous; an anyio blocking portal (one event-loop thread per
client) runs the SDK's async client, so one proxy process can serve a whole
test module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

SERVERS = Path(__file__).parent / "servers"
PY = sys.executable

POLICY = """\
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: mcp-tools
    tool: "mcp.*"
    effect: allow
  - id: echo-redacted
    tool: "mcp.*.echo"
    effect: allow
    redact: [text]
  - id: no-negative
    tool: "mcp.*.add"
    when: "args.a < 0"
    effect: deny
    reason: negative numbers are not allowed
  - id: echo-context
    tool: "mcp.*"
    when: "context.mcp.tool == 'echo' and args.text == 'forbidden'"
    effect: deny
    reason: the gateway passed the mcp context
  - id: lookup-needs-approval
    tool: "mcp.*.lookup"
    effect: require_approval
    reason: lookups need a human
"""


def warden_mcp() -> list[str]:
    """The argv of `warden mcp` (the `warden` script once the group is registered there)."""
    from warden.cli import cli

    if "mcp" in cli.commands:
        return [str(Path(PY).parent / "warden"), "mcp"]
    return [PY, "-c", "from warden.cli.mcp import mcp; mcp(prog_name='warden mcp')"]


def server(name: str, *args: str) -> list[str]:
    """The argv of a fixture server."""
    return [PY, str(SERVERS / f"{name}.py"), *args]


def write_policy(directory: Path, text: str = POLICY) -> Path:
    path = directory / "policy.yaml"
    path.write_text(text)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ProxyClient:
    """An MCP client session to a `warden mcp proxy` process (spawned over stdio, or at a URL).

    The proxy's stderr goes to ``errlog`` (a file), for assertions on what it said.
    """

    def __init__(
        self, argv: Sequence[str] | None = None, *, url: str | None = None, errlog: Path
    ) -> None:
        self.argv = list(argv or [])
        self.url = url
        self.errlog = errlog
        self.home: Path | None = None
        self._stack = ExitStack()

    def __enter__(self) -> ProxyClient:
        from anyio.from_thread import start_blocking_portal
        from mcp import Client
        from mcp.client.stdio import StdioServerParameters, stdio_client

        stack = self._stack
        self.portal = stack.enter_context(start_blocking_portal())
        if self.url is not None:
            target: Any = self.url
        else:
            err = stack.enter_context(self.errlog.open("a"))
            params = StdioServerParameters(command=self.argv[0], args=self.argv[1:])
            target = stdio_client(params, errlog=err)
        client = Client(target, cache=None, read_timeout_seconds=60)
        self.client = stack.enter_context(self.portal.wrap_async_context_manager(client))
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def names(self) -> list[str]:
        result = self.portal.call(self.client.list_tools)
        return [t.name for t in result.tools]

    def call(self, name: str, args: dict[str, Any] | None = None) -> Any:
        return self.portal.call(self.client.call_tool, name, args or {})

    def stderr(self) -> str:
        return self.errlog.read_text() if self.errlog.exists() else ""


def text(result: Any) -> str:
    return " ".join(getattr(b, "text", "") for b in result.content)


def records(home: Path, kind: str | None = None) -> list[dict[str, Any]]:
    """The audit records under ``home`` (of one ``type``), read from the file."""
    from warden.audit import AuditStore

    path = home / "audit.db"
    if not path.exists():
        return []
    store = AuditStore(path, readonly=True)
    try:
        out = [json.loads(data) for _, _, data, _ in store.scan()]
    finally:
        store.close()
    return [r for r in out if kind is None or r.get("type") == kind]


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something truthy (the proxy's audit writer batches)."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*warden_mcp(), *args], capture_output=True, text=True, timeout=timeout, check=False
    )
