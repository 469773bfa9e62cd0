"""A server whose `crash` tool kills the process (exit status 3) mid-call."""

from __future__ import annotations

import os

from mcp.server import MCPServer

server = MCPServer("crashy", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return f"{text} (pid {os.getpid()})"


@server.tool()
def crash() -> str:
    """Exit at once, without answering."""
    os._exit(3)


if __name__ == "__main__":
    server.run()
