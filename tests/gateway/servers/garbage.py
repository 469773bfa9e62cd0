"""A server whose `garble` tool writes a line that is not JSON-RPC to stdout, then waits.

The SDK's stdio transport keeps stray output off the wire; this server passes
its own stdout to it, so `garble` can corrupt the stream as a buggy server would.
"""

from __future__ import annotations

import io
import sys
from typing import Any

import anyio
import mcp_types as types
from mcp.server.lowlevel import Server
from mcp.server.stdio import stdio_server

ANY = {"type": "object", "properties": {"text": {"type": "string"}}}


async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
    return types.ListToolsResult(
        tools=[
            types.Tool(name="echo", description="Return the text unchanged.", input_schema=ANY),
            types.Tool(name="garble", description="Answer with noise.", input_schema=ANY),
        ]
    )


async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
    if params.name == "garble":
        sys.stdout.write("this is not JSON-RPC {{{\n")
        sys.stdout.flush()
        await anyio.sleep_forever()
    text = str((params.arguments or {}).get("text", ""))
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)])


server = Server("garbage", on_list_tools=list_tools, on_call_tool=call_tool)


async def main() -> None:
    stdin = anyio.wrap_file(io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8"))
    stdout = anyio.wrap_file(sys.stdout)
    async with stdio_server(stdin=stdin, stdout=stdout) as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
