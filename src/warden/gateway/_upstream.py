"""One upstream MCP server as the gateway sees it: a connection that can die and come back.

Each live connection is owned by one task of the gateway's task group (the
SDK's ``Client`` must be entered and left in the same task). Requests from
any task use the live session; a request that cannot be answered raises
:class:`UpstreamError`, never anything else.

A connection is dead when the server's output ends (it exited), when it
sends something that is not JSON-RPC while a request is waiting (the
waiting requests fail at once: the stream cannot be trusted any more), or
after two timeouts in a row with no answer in between (a server that stopped
reading). The next request starts a new one: at once after the first death,
then with exponential backoff (0.5 s doubling to 30 s) while restarts keep
failing. A request waits up to 1 s for the backoff to run out and fails at
once beyond that; one answered request resets it.

What an upstream says is never put in an :class:`UpstreamError`'s message,
which the client (and its model) sees: it goes in ``detail``, for the
operator's log.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from types import TracebackType
from typing import Any, Final, Literal, TextIO

import anyio
import anyio.abc
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.message import SessionMessage
from mcp_types import (
    CONNECTION_CLOSED,
    REQUEST_TIMEOUT,
    CallToolResult,
    Implementation,
    Tool,
)

from warden.gateway._config import Upstream

__all__ = ["Connection", "Upstream", "UpstreamError"]

MAX_BACKOFF: Final = 30.0
MAX_WAIT: Final = 1.0
"""A request waits this long at most for a restart's backoff to run out; longer fails at once."""
WEDGED_AFTER: Final = 2
"""Timeouts in a row, with no answer in between, after which a connection is restarted."""
MAX_PAGES: Final = 100


class UpstreamError(Exception):
    """An upstream did not answer: it exited, timed out, or sent something malformed.

    The message is the gateway's own words, safe to show the client (and its
    model). ``detail`` is what the upstream said, for the operator; it is
    ``shareable`` when it is the server's own error message, which the
    gateway may pass on once scanned. ``status`` is the outcome to record:
    ``error`` or ``timeout``.
    """

    def __init__(
        self,
        message: str,
        status: Literal["error", "timeout"] = "error",
        *,
        detail: str | None = None,
        shareable: bool = False,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.detail = detail
        self.shareable = shareable


class _Reader:
    """A transport's read stream that reports its end and the malformed items it carries."""

    def __init__(self, inner: Any, live: _Live) -> None:
        self._inner = inner
        self._live = live

    @property
    def last_context(self) -> Any:
        return getattr(self._inner, "last_context", None)

    async def receive(self) -> SessionMessage | Exception:
        try:
            item: SessionMessage | Exception = await self._inner.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError):
            self._live.kill("the server closed the connection (exited?)")
            raise
        if isinstance(item, Exception):
            self._live.malformed(item)
        return item

    async def aclose(self) -> None:
        await self._inner.aclose()

    def __aiter__(self) -> _Reader:
        return self

    async def __anext__(self) -> SessionMessage | Exception:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    async def __aenter__(self) -> _Reader:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _Live:
    """One connection attempt: its client, the requests waiting on it, and why it died."""

    def __init__(self, generation: int, say: Callable[[str], None]) -> None:
        self.generation = generation
        self.say = say
        self.client: Client | None = None
        self.ready = anyio.Event()
        self.done = anyio.Event()
        self.scope = anyio.CancelScope()
        self.dead: str | None = None
        self.detail: str | None = None
        self.waiting: set[anyio.CancelScope] = set()
        self.broken: str | None = None
        self.timeouts = 0

    def kill(self, reason: str) -> None:
        if self.dead is None:
            self.dead = reason
        self.scope.cancel()

    def malformed(self, exc: Exception) -> None:
        text = _one_line(str(exc), 200)
        if not self.waiting:
            self.say(f"ignored malformed output (no request was waiting): {text}")
            return
        self.broken = "malformed output (not a JSON-RPC message)"
        self.detail = text
        for scope in list(self.waiting):
            scope.cancel()
        self.kill(self.broken)


class Connection:
    """The gateway's client side of one upstream, restarted on demand.

    ``start`` must be called with a running task group before any request.
    """

    def __init__(
        self,
        spec: Upstream,
        *,
        timeout: float,
        errlog: TextIO | None = None,
        client_name: str = "warden-gateway",
        client_version: str = "",
    ) -> None:
        self.spec = spec
        self.timeout = timeout
        self._errlog = errlog
        self._info = Implementation(name=client_name, version=client_version)
        self._tg: anyio.abc.TaskGroup | None = None
        self._live: _Live | None = None
        self._lock = anyio.Lock()
        self._generation = 0
        self._failures = 0
        self._retry_at = 0.0

    @property
    def name(self) -> str:
        return self.spec.name

    def _say(self, message: str) -> None:
        print(f"warden: upstream {self.name}: {message}", file=_errlog(self._errlog), flush=True)

    def start(self, tg: anyio.abc.TaskGroup) -> None:
        self._tg = tg

    async def aclose(self) -> None:
        """Stop the live connection (a stdio server gets its stdin closed, then signals)."""
        live = self._live
        self._live = None
        if live is not None:
            live.kill("the gateway is closing")
            with anyio.move_on_after(10):
                await live.done.wait()

    # --- connecting -------------------------------------------------------------------------

    def _transport(self, live: _Live) -> Any:
        spec = self.spec

        @asynccontextmanager
        async def transport() -> AsyncIterator[tuple[_Reader, Any]]:
            if spec.url is not None:
                inner = streamable_http_client(spec.url)
            else:
                params = StdioServerParameters(
                    command=spec.command[0],
                    args=list(spec.command[1:]),
                    env=dict(spec.env) or None,
                    cwd=spec.cwd,
                )
                inner = stdio_client(params, errlog=_errlog(self._errlog))
            async with inner as (read, write):
                yield _Reader(read, live), write

        return transport()

    async def _own(self, live: _Live) -> None:
        """The task that holds the connection open until it dies or is stopped."""
        try:
            with live.scope:
                async with Client(
                    self._transport(live), cache=None, client_info=self._info
                ) as client:
                    live.client = client
                    live.ready.set()
                    await anyio.sleep_forever()
        except Exception as exc:  # noqa: BLE001 - any failure of an upstream is the upstream's
            if live.dead is None:
                live.dead = _safe(exc)
                live.detail = _describe(exc)
        finally:
            if live.dead is None:
                live.dead = "the connection was closed"
            live.client = None
            live.ready.set()
            live.done.set()

    async def ensure(self) -> _Live:
        """The live connection, started (or restarted) now if there is none."""
        async with self._lock:
            live = self._live
            if live is not None and live.dead is None:
                return live
            if live is not None:
                self._live = None
                self._died()
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                if wait > min(self.timeout, MAX_WAIT):
                    raise UpstreamError(
                        f"not restarted yet after {self._failures} failures "
                        f"(next attempt in {wait:.1f} s)"
                    )
                await anyio.sleep(wait)
            if self._tg is None:
                raise RuntimeError("Connection.start() was not called")
            self._generation += 1
            live = _Live(self._generation, self._say)
            self._tg.start_soon(self._own, live)
            with anyio.move_on_after(self.timeout) as scope:
                await live.ready.wait()
            if scope.cancelled_caught:
                live.kill(f"no answer to the handshake within {self.timeout:g} s")
                self._died()
                raise UpstreamError(
                    f"did not start within {self.timeout:g} s", status="timeout"
                ) from None
            if live.client is None:
                self._died()
                raise UpstreamError(f"cannot connect: {live.dead}", detail=live.detail)
            self._live = live
            return live

    def _died(self) -> None:
        self._failures += 1
        delay = 0.0 if self._failures <= 1 else min(0.5 * 2 ** (self._failures - 2), MAX_BACKOFF)
        self._retry_at = time.monotonic() + delay

    # --- requests ---------------------------------------------------------------------------

    async def list_tools(self) -> tuple[int, list[Tool]]:
        """Every tool the server lists (all pages), and the connection generation listed."""
        live = await self.ensure()
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            page = await self._request(live, lambda c, cur=cursor: c.list_tools(cursor=cur))
            tools.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None:
                return live.generation, tools
        raise UpstreamError(f"the tool listing did not end within {MAX_PAGES} pages")

    async def call_tool(
        self, name: str, arguments: Mapping[str, Any], live: _Live | None = None
    ) -> CallToolResult:
        """Call a tool; an error result from the server is returned, a failure raised."""
        if live is None or live.dead is not None:
            live = await self.ensure()
        args = dict(arguments)
        result: CallToolResult = await self._request(live, lambda c: c.call_tool(name, args))
        return result

    async def _request(self, live: _Live, send: Any) -> Any:
        client = live.client
        if client is None or live.dead is not None:
            raise UpstreamError(live.dead or "not connected", detail=live.detail)
        scope = anyio.CancelScope()
        live.waiting.add(scope)
        try:
            with scope, anyio.fail_after(self.timeout):
                result = await send(client)
        except TimeoutError:
            self._timed_out(live)
            raise UpstreamError(f"no answer within {self.timeout:g} s", "timeout") from None
        except MCPError as exc:
            if exc.code == REQUEST_TIMEOUT:
                self._timed_out(live)
                raise UpstreamError(f"no answer within {self.timeout:g} s", "timeout") from None
            if exc.code == CONNECTION_CLOSED:
                live.kill(live.dead or "the server closed the connection (exited?)")
                reason = live.broken or live.dead or "the connection closed"
                raise UpstreamError(reason, detail=live.detail) from None
            self._answered(live)
            raise UpstreamError(
                f"error {exc.code}", detail=_one_line(exc.message), shareable=True
            ) from None
        except UpstreamError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed results (validation errors) and the like
            if live.broken is not None:
                raise UpstreamError(live.broken, detail=live.detail) from None
            raise UpstreamError(
                f"bad answer ({type(exc).__name__})", detail=_describe(exc)
            ) from None
        finally:
            live.waiting.discard(scope)
        if scope.cancelled_caught:
            reason = live.broken or live.dead or "the request was abandoned"
            raise UpstreamError(reason, detail=live.detail)
        self._answered(live)
        return result

    def _answered(self, live: _Live) -> None:
        live.timeouts = 0
        self._failures = 0
        self._retry_at = 0.0

    def _timed_out(self, live: _Live) -> None:
        live.timeouts += 1
        if live.timeouts >= WEDGED_AFTER:
            live.kill(f"{live.timeouts} requests in a row got no answer")


def _errlog(errlog: TextIO | None) -> TextIO:
    """Where a stdio server's stderr goes: ``errlog`` (default stderr) if it is a real file."""
    for stream in (errlog, sys.stderr, sys.__stderr__):
        if stream is None:
            continue
        try:
            stream.fileno()
        except (AttributeError, OSError, ValueError):
            continue
        return stream
    raise UpstreamError("no file to send the server's stderr to")


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


def _safe(exc: BaseException) -> str:
    """One line about a failure to connect without the upstream's words (OS errors are not)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, OSError | TimeoutError):
        return _describe(exc)
    if isinstance(exc, MCPError):
        return f"the server refused the handshake (error {exc.code})"
    return f"the handshake failed ({type(exc).__name__})"


def _describe(exc: BaseException) -> str:
    """One line for an exception, looking inside exception groups."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_describe(e) for e in exc.exceptions[:3])
    text = _one_line(str(exc))
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
