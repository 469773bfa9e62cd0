"""The MCP gateway: an MCP server to its client, an MCP client to its upstreams (docs/mcp.md).

Structure::

    client ──stdio / streamable HTTP──► Server (mcp.server.lowlevel)
                                          │ tools/list        │ tools/call
                                          ▼                   ▼
                                  Gateway.list_tools   Gateway.call_tool
                                          │                   │ view check, Governor.check,
                                          │                   │ kill switch, outcome, result scan
                                          ▼                   ▼
                              one Connection per upstream (_upstream.py), restarted on demand

The *view* maps each name the client may call to the upstream tool behind
it and, when it may not be called, why. It is rebuilt from the latest
listing of every upstream: the whole set is scanned (typosquats compare
across servers), refused servers and hiding findings are applied, then pins
(trust on first use; a changed digest is a rug pull), and, with a signed
BOM, its tools (docs/supply-chain.md). A call is checked
against the view before anything else; a tool the view does not show is
never forwarded. After an upstream restarts, it is listed again before a
call reaches it, so a restart cannot swap a tool unseen.

Importing this module loads the ``mcp`` SDK (about 0.9 s); ``warden`` never
imports it on its own.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import os
import socket
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, TextIO

import anyio
import anyio.abc
import anyio.to_thread
import msgspec
from mcp.server.lowlevel import Server
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
    ToolAnnotations,
)

from warden import __version__
from warden.action import Action, Decision, Effect
from warden.errors import ConfigurationError
from warden.gateway._config import GatewayError, Upstream, check_name, load_servers
from warden.gateway._upstream import Connection, UpstreamError
from warden.gateway.pins import PinBackend, PinError, PinStatus, open_pin_store, tool_digest
from warden.gateway.scan import (
    SEVERITIES,
    Finding,
    ToolInfo,
    scan_text,
    scan_tools,
    severity_at_least,
)
from warden.governor import SANDBOX
from warden.scan import redact_text, scan_content

if TYPE_CHECKING:
    from mcp.server.context import ServerRequestContext

    from warden.governor import Governor

__all__ = ["Gateway", "GatewayError", "Upstream", "fetch_tools", "load_servers"]

MAX_FLOW_SESSIONS: Final = 1024
"""MCP sessions whose flow state the gateway holds at once (the least recently used goes)."""
MAX_RESULT_SCAN: Final = 4 << 20
"""Characters of one result scanned at most (the rest passes unscanned, and is labelled so)."""
_SERVER_INFO_META: Final = "io.modelcontextprotocol/serverInfo"


@dataclass(frozen=True, slots=True)
class _Entry:
    """One name in the view: the upstream tool behind it, and why it is hidden (None: shown)."""

    server: str
    name: str
    tool: Tool
    digest: str | None
    hidden: str | None


class Gateway:
    """Serve the tools of ``upstreams`` to one MCP client (or many, over HTTP), governed.

    Use as ``async with Gateway(...) as gw: await gw.serve_stdio()``. ``hide_at``
    and ``refuse_at`` are scanner severities (docs/mcp.md, "What the policy
    decides"); ``pin`` turns tool pinning on. ``namespace`` names tools
    ``SERVER__TOOL`` (default: when there is more than one upstream). Pins
    live in ``pins`` or, by default, in the store ``open_pin_store(HOME)`` names
    (PostgreSQL with ``WARDEN_DATABASE_URL``, else ``HOME/mcp-pins.db``).

    ``bom_tools`` (``{server: {tool: digest}}``, from a verified signed BOM)
    turns the component gate on: a server not in it is refused, a tool not in
    it or with another digest is hidden, whatever its pin says.
    """

    def __init__(
        self,
        governor: Governor,
        upstreams: Sequence[Upstream],
        *,
        agent: Mapping[str, Any] | None = None,
        timeout: float = 30.0,
        hide_at: str = "high",
        refuse_at: str = "critical",
        pin: bool = True,
        namespace: bool | None = None,
        pins: PinBackend | None = None,
        home: str | os.PathLike[str] | None = None,
        errlog: TextIO | None = None,
        session: str | None = None,
        bom_tools: Mapping[str, Mapping[str, str]] | None = None,
    ) -> None:
        if not upstreams:
            raise ConfigurationError("the gateway needs at least one upstream server")
        for level, what in ((hide_at, "hide_at"), (refuse_at, "refuse_at")):
            if level not in SEVERITIES:
                raise ConfigurationError(
                    f"{what} must be one of {', '.join(SEVERITIES)}, not `{level}`"
                )
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigurationError(f"timeout must be a positive number of seconds, not {timeout}")
        names = [u.name for u in upstreams]
        for name in names:
            problem = check_name(name)
            if problem is not None:
                raise ConfigurationError(problem)
        if len(set(names)) != len(names):
            raise ConfigurationError("upstream server names must be unique")
        self.governor = governor
        self.agent = dict(agent or {})
        flows_on = governor.policy is not None and governor.policy.flows.present
        # With a `flows:` policy provenance is tracked per session: calls that name none
        # (stdio: one process, one client) share one.
        self.session = session if session is not None or not flows_on else "mcp"
        self.timeout = timeout
        self.hide_at = hide_at
        self.refuse_at = refuse_at
        self.pin = pin
        self.namespaced = len(upstreams) > 1 if namespace is None else namespace
        self._own_pins = pins is None and pin
        if pins is None and pin:
            base = Path(home if home is not None else os.environ.get("WARDEN_HOME", ".warden"))
            pins = open_pin_store(base)
        self.pins = pins
        self.bom_tools = (
            {s: dict(tools) for s, tools in bom_tools.items()} if bom_tools is not None else None
        )
        self._errlog = errlog
        self._conns = {
            u.name: Connection(u, timeout=timeout, errlog=errlog, client_version=__version__)
            for u in upstreams
        }
        self._listings: dict[str, list[Tool]] = {}
        self._listed_gen: dict[str, int] = {}
        self._list_error: dict[str, str] = {}
        self._view: dict[str, _Entry] = {}
        self._noted: set[tuple[Any, ...]] = set()
        self._refresh_lock = anyio.Lock()
        self._warm = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._flows: collections.OrderedDict[str, Any] = collections.OrderedDict()

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Gateway:
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        for conn in self._conns.values():
            conn.start(tg)
        tg.start_soon(self._warm_up)
        return self

    async def __aexit__(self, *exc: object) -> None:
        tg = self._tg
        self._tg = None
        with anyio.CancelScope(shield=True):
            async with anyio.create_task_group() as closing:
                for conn in self._conns.values():
                    closing.start_soon(conn.aclose)
        if tg is not None:
            tg.cancel_scope.cancel()
            await tg.__aexit__(None, None, None)
        if self._own_pins and self.pins is not None:
            self.pins.close()
        audit = self.governor.audit
        if audit is not None:
            with contextlib.suppress(Exception):  # best effort: records are queued already
                await anyio.to_thread.run_sync(audit.flush)

    async def _warm_up(self) -> None:
        try:
            await self._refresh(list(self._conns))
        finally:
            self._warm.set()

    # --- tools/list ------------------------------------------------------------------------

    async def list_tools(self) -> list[Tool]:
        """The tools the client may see: every upstream listed now, scanned and pinned."""
        if not self._warm.is_set():
            await self._warm.wait()
        else:
            await self._refresh(list(self._conns))
        return [e.tool for e in self._view.values() if e.hidden is None]

    def hidden(self) -> dict[str, str]:
        """The names the view hides, with the reason for each."""
        return {name: e.hidden for name, e in self._view.items() if e.hidden is not None}

    def input_schema(self, name: str) -> Mapping[str, Any] | None:
        entry = self._view.get(name)
        return entry.tool.input_schema if entry is not None and entry.hidden is None else None

    async def _refresh(self, servers: Sequence[str]) -> None:
        """List ``servers`` now and rebuild the view; a failed upstream keeps its last listing."""
        async with self._refresh_lock:
            got: dict[str, tuple[int, list[Tool]]] = {}

            async def one(name: str) -> None:
                try:
                    got[name] = await self._conns[name].list_tools()
                    self._list_error.pop(name, None)
                except UpstreamError as exc:
                    self._list_error[name] = str(exc)
                    detail = f" ({exc.detail})" if exc.detail else ""
                    self._say(f"upstream {name} failed to list its tools: {exc}{detail}")

            async with anyio.create_task_group() as tg:
                for name in servers:
                    tg.start_soon(one, name)
            for name, (generation, tools) in got.items():
                self._listings[name] = tools
                self._listed_gen[name] = generation
            if got or not self._view:
                try:
                    self._view = await anyio.to_thread.run_sync(self._build_view)
                except Exception as exc:  # noqa: BLE001 - fail closed: show and forward nothing
                    self._say(f"cannot build the tool view ({type(exc).__name__}: {exc})")
                    self._view = {}

    def _build_view(self) -> dict[str, _Entry]:
        """Scan every listing, apply refusal, hiding and pins; runs in a worker thread."""
        listings = dict(self._listings)
        infos = [
            ToolInfo(server, t.name, t.description or "", t.input_schema)
            for server, tools in listings.items()
            for t in tools
        ]
        findings = scan_tools(infos)
        by_tool: dict[tuple[str, str], list[Finding]] = {}
        refused: dict[str, Finding] = {}
        for f in findings:
            by_tool.setdefault((f.server, f.tool), []).append(f)
            if severity_at_least(f, self.refuse_at) and f.server not in refused:
                refused[f.server] = f
        for server, f in refused.items():
            self._note(
                ("refused", server, f.code, f.tool),
                {
                    "type": "warden.alert/v1",
                    "kind": "mcp_server_refused",
                    "server": server,
                    "findings": [g.to_dict() for g in findings if g.server == server],
                },
                f"server `{server}` refused: {f.code} ({f.severity}) in `{f.tool}`: {f.message}",
            )
        view: dict[str, _Entry] = {}
        for server in self._conns:  # in the order the upstreams were given
            if server in listings:
                view.update(
                    self._server_view(server, listings[server], by_tool, refused.get(server))
                )
        return view

    def _approved(self, server: str, tool: str, digest: str | None) -> bool:
        """True when this exact version of the tool is already pinned."""
        if not self.pin or self.pins is None or digest is None:
            return False
        try:
            pin = self.pins.get(server, tool)
        except PinError:
            return False
        return pin is not None and pin.pinned == digest

    def _server_view(
        self,
        server: str,
        tools: list[Tool],
        by_tool: Mapping[tuple[str, str], list[Finding]],
        refusal: Finding | None,
    ) -> dict[str, _Entry]:
        counts: dict[str, int] = {}
        for t in tools:
            counts[t.name] = counts.get(t.name, 0) + 1
        digests: dict[str, str] = {}
        why: dict[str, str] = {}
        for t in tools:
            try:
                digests[t.name] = tool_digest(t.name, t.description, t.input_schema)
            except ValueError as exc:
                why[t.name] = str(exc)
            if counts[t.name] > 1:
                why[t.name] = "the server lists it more than once"
            hiding = [
                f for f in by_tool.get((server, t.name), ()) if severity_at_least(f, self.hide_at)
            ]
            if (
                hiding
                and all(f.code == "typosquat" for f in hiding)
                and self._approved(server, t.name, digests.get(t.name))
            ):
                # A look-alike that appears later must not hide a tool already approved:
                # otherwise any server could take a real tool away by listing `read_flie`.
                hiding = []
            if hiding and t.name not in why:
                f = hiding[0]
                why[t.name] = f"{f.code} ({f.severity}) in {f.field}: {f.message}"
            found = by_tool.get((server, t.name), ())
            if found:
                self._note(
                    ("scan", server, t.name, digests.get(t.name)),
                    {
                        "type": "warden.mcp_scan/v1",
                        "server": server,
                        "tool": t.name,
                        "digest": digests.get(t.name),
                        "hidden": bool(hiding),
                        "findings": [f.to_dict() for f in found],
                    },
                    None,
                )
        if refusal is not None:
            reason = (
                f"server `{server}` is refused: {refusal.code} ({refusal.severity}) "
                f"in `{refusal.tool}`: {refusal.message}"
            )
            why = {t.name: reason for t in tools}
        off_bom = self._bom_check(server, tools, digests)
        statuses: dict[str, PinStatus] = {}
        if self.pin and self.pins is not None and refusal is None:
            clean = {n for n in digests if n not in why and n not in off_bom}
            try:
                statuses = self.pins.observe(server, digests, pin_new=clean)
            except PinError as exc:  # unpinned tools are not shown
                self._say(f"cannot check the pins of `{server}`: {exc}")
                why = {t.name: f"not pinned: the pin store failed ({exc})" for t in tools}
        out: dict[str, _Entry] = {}
        for t in tools:
            hidden = why.get(t.name)
            digest = digests.get(t.name)
            status = statuses.get(t.name)
            if status == "changed" and digest is not None:
                try:
                    pin = self.pins.get(server, t.name) if self.pins is not None else None
                except PinError:  # the tool stays hidden; only the alert lacks the old digest
                    pin = None
                hidden = (
                    "changed since it was pinned (a rug pull?); hidden until "
                    f"`warden mcp pins approve {server} {t.name}`"
                )
                self._note(
                    ("rug_pull", server, t.name, digest),
                    {
                        "type": "warden.alert/v1",
                        "kind": "mcp_rug_pull",
                        "server": server,
                        "tool": t.name,
                        "pinned": pin.pinned if pin is not None else None,
                        "seen": digest,
                    },
                    f"tool `{t.name}` of `{server}` changed since it was pinned; hidden until "
                    f"`warden mcp pins approve {server} {t.name}`",
                )
            elif status == "new" and hidden is None and digest is not None:
                self._note(
                    ("pin", server, t.name, digest),
                    {
                        "type": "warden.mcp_pin/v1",
                        "server": server,
                        "tool": t.name,
                        "digest": digest,
                        "by": "tofu",
                    },
                    None,
                )
            if t.name in off_bom:  # the signed BOM has the last word, over pins and scans
                hidden = off_bom[t.name]
            name = f"{server}__{t.name}" if self.namespaced else t.name
            exposed = _exposed_tool(t, name)
            if name not in out or counts[t.name] > 1:
                out[name] = _Entry(server, t.name, exposed, digest, hidden)
        return out

    def _bom_check(
        self, server: str, tools: list[Tool], digests: Mapping[str, str]
    ) -> dict[str, str]:
        """Why each tool the signed BOM does not describe as listed is hidden (none: no BOM)."""
        if self.bom_tools is None:
            return {}
        allowed = self.bom_tools.get(server)
        if allowed is None:
            self._note(
                ("bom_refused", server),
                {"type": "warden.alert/v1", "kind": "mcp_bom_server_refused", "server": server},
                f"server `{server}` refused: not in the signed BOM",
            )
            return {t.name: f"server `{server}` is not in the signed BOM" for t in tools}
        out: dict[str, str] = {}
        for t in tools:
            digest = digests.get(t.name)
            signed = allowed.get(t.name)
            if signed is None:
                out[t.name] = "not in the signed BOM"
            elif digest != signed:
                out[t.name] = (
                    f"differs from the signed BOM (description digest {digest}, "
                    f"{signed} in the BOM)"
                )
            else:
                continue
            self._note(
                ("bom", server, t.name, digest),
                {
                    "type": "warden.alert/v1",
                    "kind": "mcp_bom_mismatch",
                    "server": server,
                    "tool": t.name,
                    "signed": signed,
                    "seen": digest,
                },
                f"tool `{t.name}` of `{server}` hidden: {out[t.name]}",
            )
        return out

    def _note(self, key: tuple[Any, ...], record: dict[str, Any], say: str | None) -> None:
        """Record an event once per process (listings repeat; the log should not)."""
        if key in self._noted:
            return
        self._noted.add(key)
        if say is not None:
            self._say(f"alert: {say}")
        self._audit(record)

    def _audit(self, record: dict[str, Any]) -> None:
        audit = self.governor.audit
        if audit is None:
            return
        try:
            audit.append(record)
        except Exception as exc:  # noqa: BLE001 - a broken log denies the next decision anyway
            self._say(f"cannot record `{record.get('type')}` in the audit log: {exc}")

    def _say(self, message: str) -> None:
        print(f"warden: {message}", file=self._errlog or sys.stderr, flush=True)

    # --- tools/call ------------------------------------------------------------------------

    def _exposed(self, entry: _Entry) -> str:
        return f"{entry.server}__{entry.name}" if self.namespaced else entry.name

    def _split(self, name: str) -> tuple[str, str] | None:
        if not self.namespaced:
            return next(iter(self._conns)), name
        server, sep, tool = name.partition("__")
        if not sep or server not in self._conns or not tool:
            return None
        return server, tool

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        session: str | None = None,
        agent: Mapping[str, Any] | None = None,
    ) -> CallToolResult:
        """Govern one call and forward it if allowed; any failure is a tool error, never raised."""
        try:
            return await self._call(name, dict(arguments or {}), session or self.session, agent)
        except Exception as exc:  # noqa: BLE001 - the gateway answers; nothing unexpected is forwarded
            self._say(f"internal error on a call of `{name}`: {type(exc).__name__}: {exc}")
            return _error(f"warden: denied: internal error in the gateway ({type(exc).__name__})")

    async def _call(
        self,
        name: str,
        args: dict[str, Any],
        session: str | None,
        agent: Mapping[str, Any] | None,
    ) -> CallToolResult:
        who = dict(agent) if agent is not None else self.agent
        where = self._split(name)
        if where is None:
            return self._refuse(name, None, None, f"unknown tool `{name}`", who, session)
        server, tool = where
        if not self._warm.is_set():
            await self._warm.wait()
        if server not in self._listed_gen:  # never listed: the call is the first contact
            await self._refresh([server])
            if server not in self._listed_gen:
                failed = self._list_error.get(server, "not listed")
                return _error(f"warden: upstream {server} failed: {failed}")
        entry = self._view.get(name)
        if entry is None:
            return self._refuse(name, server, tool, f"unknown tool `{name}`", who, session)
        if entry.hidden is not None:
            reason = f"tool `{name}` is hidden: {entry.hidden}"
            return self._refuse(name, server, tool, reason, who, session)
        action = Action(
            tool=f"mcp.{server}.{tool}",
            args=args,
            agent=who,
            session=session,
            context={"mcp": {"server": server, "tool": tool}},
        )
        self._follow(session)
        # On the loop: a decision takes microseconds. Only the approval gate and trust
        # reports touch SQLite, for a fraction of a millisecond.
        decision = self.governor.check(action)
        if decision.effect is Effect.ALLOW and SANDBOX in decision.obligations:
            decision = _with_reason(
                decision, Effect.DENY, f"ring 3 runs `{action.tool}` only in the sandbox"
            )
        if decision.effect is not Effect.ALLOW:
            self.governor.record_outcome(action, decision, "denied", 0)
            reasons = "; ".join(decision.reasons) or "denied by policy"
            if decision.effect is Effect.REQUIRE_APPROVAL:
                return _error(f"warden: approval required ({decision.approval_id}): {reasons}")
            return _error(f"warden: denied: {reasons}")
        return await self._forward(entry, action, decision)

    async def _forward(self, entry: _Entry, action: Action, decision: Decision) -> CallToolResult:
        gov = self.governor
        server, tool = entry.server, entry.name
        conn = self._conns[server]
        start = perf_counter_ns()
        agent_id = action.agent.get("id")
        loop = asyncio.get_running_loop()
        scope = anyio.CancelScope()

        def on_kill() -> None:  # runs in the kill switch's thread: hand over to the loop
            loop.call_soon_threadsafe(scope.cancel)

        with gov.runtime.inflight.track(
            agent_id if type(agent_id) is str else None, action.session, action.tool
        ) as call:
            call.add_hook(on_kill)
            failure: UpstreamError | None = None
            result: CallToolResult | None = None
            with scope:
                try:
                    result = await self._send(conn, entry, action.args)
                except UpstreamError as exc:
                    failure = exc
                except Exception as exc:  # noqa: BLE001 - recorded (an allowed call has an outcome)
                    failure = UpstreamError(
                        f"internal error in the gateway ({type(exc).__name__})", detail=str(exc)
                    )
                except anyio.get_cancelled_exc_class():
                    if not call.cancelled:  # the client gave up (or the gateway is closing)
                        gov.record_outcome(action, decision, "killed", perf_counter_ns() - start)
                    raise
        elapsed = perf_counter_ns() - start
        if call.cancelled or (result is None and failure is None):
            gov.record_outcome(action, decision, "killed", elapsed)
            return _error(f"warden: denied: {call.reason or 'the call was cancelled'}")
        if failure is not None:
            gov.record_outcome(action, decision, failure.status, elapsed, error=failure)
            detail = f" ({failure.detail})" if failure.detail else ""
            self._say(f"upstream {server} failed on `{tool}`: {failure}{detail}")
            return _error(f"warden: upstream {server} failed: {_shown(failure)}")
        assert result is not None
        dumped = result.model_dump(mode="json", by_alias=True, exclude_none=True)
        if result.is_error:
            text = _text_of(result) or "the tool reported an error"
            gov.record_outcome(
                action, decision, "error", elapsed, dumped, error=UpstreamError(text[:1000])
            )
        else:
            gov.record_outcome(action, decision, "ok", elapsed, dumped)
        if _result_size(result) <= INLINE_SCAN_BYTES:
            result = self._check_result(server, tool, action, decision, result)  # < 1 ms
        else:  # off the event loop: a hostile multi-megabyte result takes a while to scan
            result = await anyio.to_thread.run_sync(
                self._check_result, server, tool, action, decision, result
            )
        return _clean(result)

    async def _send(
        self, conn: Connection, entry: _Entry, args: Mapping[str, Any]
    ) -> CallToolResult:
        live = await conn.ensure()
        if self._listed_gen.get(entry.server) != live.generation:
            await self._refresh([entry.server])
            now = self._view.get(self._exposed(entry))
            if now is None or now.hidden is not None or now.digest != entry.digest:
                raise UpstreamError(
                    f"tool `{entry.name}` changed when the server restarted; "
                    "it is hidden until listed and approved again"
                )
        return await conn.call_tool(entry.name, args, live)

    def _follow(self, session: str | None) -> None:
        """Hold the flow state of ``session`` while the gateway serves it (docs/flows.md).

        Only with a `flows:` policy. At most ``MAX_FLOW_SESSIONS`` are held; past
        that, the least recently used one is let go.
        """
        gov = self.governor
        if session is None or gov.policy is None or not gov.policy.flows.present:
            return
        flows = self._flows
        if session in flows:
            flows.move_to_end(session)
            return
        flows[session] = gov.flows.open(session, None, None)
        while len(flows) > MAX_FLOW_SESSIONS:
            _, oldest = flows.popitem(last=False)
            gov.flows.close(oldest, None)

    def _check_result(
        self,
        server: str,
        tool: str,
        action: Action,
        decision: Decision,
        result: CallToolResult,
    ) -> CallToolResult:
        """Scan a result: record it into the session, audit findings, redact what policy says."""
        texts = _texts(result)
        gov = self.governor
        if action.session is not None and action.session in self._flows:
            gov.record_result(action, [text for _, text in texts])
        policy = gov.policy
        redact = policy.flows.redact_results if policy is not None else ()
        if redact:
            result = _redacted(result, redact)
        findings, truncated = _scan_result(server, tool, texts)
        if not findings and not truncated:
            return result
        labels = ["untrusted"]
        if any(f.code == "hidden_instruction" for f in findings):
            labels.append("injected")
        self._audit(
            {
                "type": "warden.mcp_result/v1",
                "server": server,
                "tool": tool,
                "decision": decision.id,
                "labels": labels,
                "truncated": truncated,
                "findings": [f.to_dict() for f in findings],
            }
        )
        return result

    def _refuse(
        self,
        name: str,
        server: str | None,
        tool: str | None,
        reason: str,
        agent: Mapping[str, Any],
        session: str | None,
    ) -> CallToolResult:
        """A call the view does not allow: recorded, not checked, not forwarded."""
        self._audit(
            {
                "type": "warden.mcp_refused/v1",
                "name": name,
                "server": server,
                "tool": tool,
                "agent": agent.get("id"),
                "session": session,
                "reason": reason,
            }
        )
        return _error(f"warden: denied: {reason}")

    # --- serving ---------------------------------------------------------------------------

    def server(self) -> Server[Any]:
        """The MCP server the client talks to (tools only: list and call)."""

        async def on_list_tools(
            ctx: ServerRequestContext[Any], params: PaginatedRequestParams | None
        ) -> ListToolsResult:
            return ListToolsResult(tools=await self.list_tools())

        async def on_call_tool(
            ctx: ServerRequestContext[Any], params: CallToolRequestParams
        ) -> CallToolResult:
            return await self.call_tool(
                params.name, params.arguments or {}, session=_session_of(ctx)
            )

        return Server(
            "warden-gateway",
            version=__version__,
            get_tool_input_schema=self.input_schema,
            on_list_tools=on_list_tools,
            on_call_tool=on_call_tool,
        )

    async def serve_stdio(self) -> None:
        """Serve one client on this process's stdin and stdout until it closes them."""
        from mcp.server.stdio import stdio_server

        from warden.gateway._stdio import stdio_pipes

        srv = self.server()
        async with stdio_pipes() as (stdin, stdout), stdio_server(stdin, stdout) as (read, write):
            await srv.run(read, write, srv.create_initialization_options())

    async def serve_http(
        self, host: str, port: int, *, ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve streamable HTTP at ``http://HOST:PORT/mcp`` until SIGINT or SIGTERM.

        ``port`` 0 picks a free port; ``ready`` gets the URL once it accepts
        connections. GatewayError if the address cannot be bound.
        """
        import uvicorn

        sock = _bind(host, port)
        bound = sock.getsockname()[1]
        app = self.server().streamable_http_app(host=host)
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        )
        async with anyio.create_task_group() as tg:

            async def serve() -> None:
                try:
                    await server.serve(sockets=[sock])
                finally:
                    sock.close()
                    tg.cancel_scope.cancel()

            tg.start_soon(serve)
            while not server.started:
                await anyio.sleep(0.01)
            if ready is not None:
                shown = f"[{host}]" if ":" in host else host
                ready(f"http://{shown}:{bound}/mcp")
            await anyio.sleep_forever()


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise GatewayError(f"cannot listen on `{host}:{port}`: {exc.strerror or exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        reason = (exc.strerror or str(exc)).lower()
        raise GatewayError(f"cannot listen on `{host}:{port}`: {reason}") from None
    sock.setblocking(False)
    return sock


def _exposed_tool(tool: Tool, name: str) -> Tool:
    """The tool as the client sees it: only what was scanned and pinned, and the hints.

    ``title``, ``icons``, ``_meta``, ``outputSchema`` and ``annotations.title``
    are text the scanner does not read, so they are not passed on.
    """
    hints = tool.annotations
    return Tool(
        name=name,
        description=tool.description,
        input_schema=tool.input_schema,
        annotations=(
            ToolAnnotations(
                read_only_hint=hints.read_only_hint,
                destructive_hint=hints.destructive_hint,
                idempotent_hint=hints.idempotent_hint,
                open_world_hint=hints.open_world_hint,
            )
            if hints is not None
            else None
        ),
    )


def _with_reason(decision: Decision, effect: Effect, reason: str) -> Decision:
    return msgspec.structs.replace(decision, effect=effect, reasons=(*decision.reasons, reason))


def _shown(failure: UpstreamError) -> str:
    """What the client is told: the gateway's words, and the server's only if the scan is clean."""
    if not (failure.shareable and failure.detail):
        return str(failure)
    found = scan_text(failure.detail, field="error")
    if found:
        codes = ", ".join(sorted({f.code for f in found}))
        return f"{failure} (its message is withheld: {codes})"
    return f"{failure}: {failure.detail}"


def _error(text: str) -> CallToolResult:
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


def _text_of(result: CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, TextContent))


def _clean(result: CallToolResult) -> CallToolResult:
    """The upstream's result without its server identity stamp (the gateway stamps its own)."""
    meta = result.meta
    if not meta or _SERVER_INFO_META not in meta:
        return result
    rest = {k: v for k, v in meta.items() if k != _SERVER_INFO_META}
    return result.model_copy(update={"meta": rest or None})


INLINE_SCAN_BYTES = 16 * 1024


def _result_size(result: CallToolResult) -> int:
    """A cheap upper-bound-ish size of a result's text, to decide where to scan it."""
    size = 0
    for block in result.content:
        text = getattr(block, "text", None)
        size += len(text) if isinstance(text, str) else 0
        rtext = getattr(getattr(block, "resource", None), "text", None)
        size += len(rtext) if isinstance(rtext, str) else 0
    if result.structured_content is not None:
        try:
            size += len(msgspec.json.encode(result.structured_content))
        except (TypeError, ValueError, OverflowError):
            size += INLINE_SCAN_BYTES + 1  # not plain JSON: scan it in a thread
    return size


def _texts(result: CallToolResult) -> list[tuple[str, str]]:
    """A result's text, by JSON pointer: content blocks, resource texts, structured strings."""
    texts: list[tuple[str, str]] = []
    for i, block in enumerate(result.content):
        text = getattr(block, "text", None)
        if isinstance(text, str):
            texts.append((f"/content/{i}/text", text))
        resource = getattr(block, "resource", None)
        rtext = getattr(resource, "text", None)
        if isinstance(rtext, str):
            texts.append((f"/content/{i}/resource/text", rtext))
    _strings(result.structured_content, "/structuredContent", texts, 0)
    return texts


def _redacted(result: CallToolResult, kinds: Sequence[str]) -> CallToolResult:
    """``result`` with the secrets (and/or PII) the scanners find masked in every text."""

    def clean(text: str) -> str:
        return redact_text(scan_content(text[:MAX_RESULT_SCAN]), kinds) + text[MAX_RESULT_SCAN:]

    def walk(value: Any, depth: int = 0) -> Any:
        if isinstance(value, str):
            return clean(value)
        if depth > 32:
            return value
        if isinstance(value, Mapping):
            return {k: walk(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, depth + 1) for v in value]
        return value

    blocks = []
    for block in result.content:
        text = getattr(block, "text", None)
        resource = getattr(block, "resource", None)
        rtext = getattr(resource, "text", None)
        if isinstance(text, str):
            blocks.append(block.model_copy(update={"text": clean(text)}))
        elif isinstance(rtext, str) and resource is not None:
            new = resource.model_copy(update={"text": clean(rtext)})
            blocks.append(block.model_copy(update={"resource": new}))
        else:
            blocks.append(block)
    update: dict[str, Any] = {"content": blocks}
    if result.structured_content is not None:
        update["structured_content"] = walk(result.structured_content)
    return result.model_copy(update=update)


def _scan_result(
    server: str, tool: str, texts: list[tuple[str, str]]
) -> tuple[list[Finding], bool]:
    """Findings in a result's text (content blocks, then structured strings not seen yet)."""
    findings: list[Finding] = []
    budget = MAX_RESULT_SCAN
    seen: set[str] = set()
    truncated = False
    for where, whole in texts:
        if whole in seen:
            continue
        seen.add(whole)
        part = whole[:budget]
        truncated = truncated or len(part) < len(whole)
        budget -= len(part)
        findings.extend(scan_text(part, field=where, server=server, tool=tool))
        if budget <= 0:
            truncated = True
            break
    return findings, truncated


def _strings(value: Any, where: str, out: list[tuple[str, str]], depth: int) -> None:
    if depth > 32:
        return
    if isinstance(value, str):
        out.append((where, value))
    elif isinstance(value, Mapping):
        for k, v in value.items():
            key = str(k).replace("~", "~0").replace("/", "~1")
            _strings(v, f"{where}/{key}", out, depth + 1)
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _strings(v, f"{where}/{i}", out, depth + 1)


def _session_of(ctx: ServerRequestContext[Any]) -> str | None:
    """The client's MCP session id over HTTP (None over stdio: one process, one client)."""
    request = ctx.request
    headers = getattr(request, "headers", None)
    if headers is None:
        return None
    value = headers.get("mcp-session-id")
    return value if isinstance(value, str) and value else None


async def fetch_tools(
    upstreams: Sequence[Upstream], *, timeout: float = 30.0, errlog: TextIO | None = None
) -> dict[str, list[Tool]]:
    """Each upstream's listing, fetched once and not governed (``warden mcp scan``).

    Raises GatewayError naming the first upstream that could not be listed.
    """
    out: dict[str, list[Tool]] = {}
    failed: dict[str, str] = {}
    conns = [
        Connection(u, timeout=timeout, errlog=errlog, client_version=__version__) for u in upstreams
    ]
    async with anyio.create_task_group() as tg:
        for conn in conns:
            conn.start(tg)

        async def one(conn: Connection) -> None:
            try:
                out[conn.name] = (await conn.list_tools())[1]
            except UpstreamError as exc:
                failed[conn.name] = str(exc)
            finally:
                await conn.aclose()

        async with anyio.create_task_group() as listing:
            for conn in conns:
                listing.start_soon(one, conn)
    if failed:
        name = next(u.name for u in upstreams if u.name in failed)
        raise GatewayError(f"upstream `{name}` failed: {failed[name]}")
    return out
