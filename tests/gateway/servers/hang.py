"""A server that never answers `hang` (its event loop stays free) or `block` (it does not)."""

from __future__ import annotations

import time

import anyio
from mcp.server import MCPServer

server = MCPServer("hang", log_level="WARNING")


@server.tool()
def echo(text: str) -> str:
    """Return the text unchanged."""
    return text


@server.tool()
async def hang() -> str:
    """Never answer, politely."""
    await anyio.sleep_forever()
    return "unreachable"


@server.tool()
async def block() -> str:
    """Never answer, and stop reading too (a blocking call on the event loop)."""
    time.sleep(3600)
    return "unreachable"


if __name__ == "__main__":
    server.run()
