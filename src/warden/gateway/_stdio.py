"""The gateway's own stdin/stdout for the MCP SDK, read and written on the event loop.

The SDK's ``stdio_server()`` wraps the standard streams with ``anyio.wrap_file``,
so every line read and every line written is a round trip to a worker thread.
For a proxy that adds a whole hop to each tool call, that is most of its cost.
These adapters give the SDK the same interface (``async for line``, ``write``,
``flush``) over asyncio pipes. As the SDK does, they take private duplicates
of fds 0 and 1 and point the originals at /dev/null and stderr, so a stray
``print`` can never corrupt the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

__all__ = ["stdio_pipes"]

MAX_LINE = 64 << 20  # a JSON-RPC message on one line; the SDK has no smaller bound


class _Lines:
    """``async for line in ...`` over a pipe, as text."""

    def __init__(self, reader: asyncio.StreamReader) -> None:
        self._reader = reader

    def __aiter__(self) -> _Lines:
        return self

    async def __anext__(self) -> str:
        line = await self._reader.readline()
        if not line:
            raise StopAsyncIteration
        return line.decode("utf-8", "replace")


class _Writer:
    """``write`` and ``flush`` of text to a pipe."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self._writer = writer

    async def write(self, text: str) -> None:
        self._writer.write(text.encode("utf-8"))

    async def flush(self) -> None:
        await self._writer.drain()


@asynccontextmanager
async def stdio_pipes() -> AsyncIterator[tuple[Any, Any]]:
    """(stdin lines, stdout writer) for ``stdio_server(stdin=..., stdout=...)``."""
    loop = asyncio.get_running_loop()
    sys.stdout.flush()
    in_fd = os.dup(0)
    out_fd = os.dup(1)
    saved = (os.dup(0), os.dup(1))  # put back on exit, as the SDK does
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.dup2(2, 1)  # stray output goes to stderr, not onto the wire
    reader = asyncio.StreamReader(limit=MAX_LINE)
    read_transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), os.fdopen(in_fd, "rb", buffering=0)
    )
    write_transport, write_protocol = await loop.connect_write_pipe(
        asyncio.streams.FlowControlMixin, os.fdopen(out_fd, "wb", buffering=0)
    )
    writer = asyncio.StreamWriter(write_transport, write_protocol, None, loop)
    try:
        yield _Lines(reader), _Writer(writer)
    finally:
        with contextlib.suppress(Exception):
            await writer.drain()
        write_transport.close()
        read_transport.close()
        for fd, original in zip((0, 1), saved, strict=True):
            with contextlib.suppress(OSError):
                os.dup2(original, fd)
            os.close(original)
