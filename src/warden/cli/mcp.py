"""`warden mcp`: the MCP gateway (`proxy`), the tool scanner (`scan`) and tool `pins`.

docs/mcp.md is the specification. The upstream is a command after `--`
(a stdio server), `--upstream URL` (streamable HTTP) or `--config FILE`
(several, named). The `mcp` SDK is imported only by `proxy` and `scan`.
While `proxy` serves stdio, stdout is the protocol: everything it says goes
to stderr.
"""

from __future__ import annotations

import re
import signal
import sys
import time
import unicodedata
from typing import TYPE_CHECKING, Any, Final

import click

from warden.cli._common import audit_event, bom_gate, bom_options, console, fail, print_json, who
from warden.errors import PolicyError, WardenError

if TYPE_CHECKING:
    from warden.gateway._config import Upstream
    from warden.gateway.pins import PinBackend

SEVERITIES: Final = ("low", "medium", "high", "critical")
_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."
home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
_LISTEN = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})")


def _upstream_options(fn: Any) -> Any:
    fn = click.argument("command", nargs=-1, type=click.UNPROCESSED)(fn)
    fn = click.option(
        "--name",
        default="upstream",
        show_default=True,
        help="The name of the one upstream (in pins and in action names mcp.NAME.TOOL).",
    )(fn)
    fn = click.option(
        "--config", metavar="FILE", default=None, help="A servers file naming several upstreams."
    )(fn)
    fn = click.option(
        "--upstream", metavar="URL", default=None, help="A streamable-HTTP upstream server."
    )(fn)
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0.001, max=86400),
        default=30.0,
        show_default=True,
        help="Seconds an upstream has to answer.",
    )(fn)


def _upstreams(
    command: tuple[str, ...], url: str | None, config: str | None, name: str
) -> list[Upstream]:
    from warden.gateway._config import GatewayError, Upstream, check_name, load_servers

    if sum((bool(command), url is not None, config is not None)) != 1:
        fail("name the upstream once: `-- COMMAND ARGS...`, `--upstream URL` or `--config FILE`")
    if config is not None:
        try:
            return load_servers(config)
        except GatewayError as exc:
            if not exc.diagnostics:
                fail(str(exc))
            for diag in exc.diagnostics:
                click.echo(diag.render(), err=True)
            fail(f"servers file `{config}` did not load")
    problem = check_name(name)
    if problem is not None:
        fail(problem)
    if url is not None:
        if not re.match(r"https?://", url):
            fail(f"--upstream must be an http(s) URL, not `{url}`")
        return [Upstream(name, url=url)]
    return [Upstream(name, command=tuple(command))]


def _listen(value: str) -> tuple[str, int]:
    m = _LISTEN.fullmatch(value)
    port = int(m.group("port")) if m else -1
    if m is None or not 0 <= port <= 65535:
        fail(f"--listen must be HOST:PORT (port 0-65535), not `{value}`")
    return m.group("v6") or m.group("host"), port


@click.group()
def mcp() -> None:
    """The MCP gateway: govern, scan and pin the tools of MCP servers."""


@mcp.command()
@click.option("--policy", "policy_path", required=True, metavar="FILE", help="The policy file.")
@click.option("--agent", default=None, help="The agent id the client's calls are governed as.")
@click.option(
    "--session",
    default=None,
    help="The session id of the client's calls over stdio (over HTTP: the MCP session id). "
    "With a `flows:` policy, provenance is tracked per session.",
)
@home_option
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default=None,
    help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio.",
)
@click.option(
    "--hide-at",
    type=click.Choice(SEVERITIES),
    default=None,
    help="Hide a tool with a finding at or above this severity (default: the policy's "
    "`mcp.hide_at`, else high).",
)
@click.option(
    "--refuse-at",
    type=click.Choice(SEVERITIES),
    default=None,
    help="Refuse a whole server with a finding at or above this severity (default: the "
    "policy's `mcp.refuse_at`, else critical).",
)
@click.option(
    "--no-pin", is_flag=True, help="Do not pin tool versions (default: the policy's `mcp.pin`)."
)
@bom_options
@_upstream_options
def proxy(
    policy_path: str,
    agent: str | None,
    session: str | None,
    home: str,
    listen: str | None,
    hide_at: str | None,
    refuse_at: str | None,
    no_pin: bool,
    bom_path: str | None,
    bom_trust: tuple[str, ...],
    bom_mode: str,
    timeout: float,
    upstream: str | None,
    config: str | None,
    name: str,
    command: tuple[str, ...],
) -> None:
    """Serve the tools of an MCP server to an MCP client, scanned, pinned and governed.

    \b
      warden mcp proxy --policy POLICY.yaml -- python my_server.py
      warden mcp proxy --policy POLICY.yaml --upstream http://127.0.0.1:8000/mcp
      warden mcp proxy --policy POLICY.yaml --config servers.yaml --listen 127.0.0.1:7000
      warden mcp proxy --policy POLICY.yaml --config servers.yaml \\
          --bom bom.dsse.json --bom-trust did:key:z6Mk...
    """
    upstreams = _upstreams(command, upstream, config, name)
    address = _listen(listen) if listen is not None else None
    gate = bom_gate(bom_path, bom_trust, bom_mode, policy_path)
    from warden.governor import Governor

    try:
        gov = Governor.from_policy(policy_path, home=home)
    except PolicyError as exc:
        for diag in exc.diagnostics:
            click.echo(diag.render(), err=True)
        fail(f"policy `{policy_path}` did not load")
    except (WardenError, OSError) as exc:
        fail(f"cannot start: {exc}")
    if gate is not None and gate.report and gov.audit is not None:
        from warden.supply.gate import drift_record

        assert bom_path is not None
        try:
            gov.audit.append(drift_record(gate.deployment, bom_path, gate.report))
        except WardenError as exc:
            fail(f"cannot record the BOM drift in the audit log: {exc}")

    import anyio

    from warden.gateway.proxy import Gateway

    _quiet_sdk_logs()

    settings = gov.policy.mcp if gov.policy is not None else None
    try:
        gateway = Gateway(
            gov,
            upstreams,
            agent={"id": agent} if agent else None,
            timeout=timeout,
            hide_at=hide_at or (settings.hide_at if settings else "high"),
            refuse_at=refuse_at or (settings.refuse_at if settings else "critical"),
            pin=not no_pin and (settings.pin if settings else True),
            namespace=True if config is not None else None,
            home=home,
            session=session,
            bom_tools=gate.tools if gate is not None else None,
        )
    except WardenError as exc:
        fail(str(exc))

    async def serve() -> None:
        async with gateway, anyio.create_task_group() as tg:

            async def on_signal() -> None:
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        tg.cancel_scope.cancel()
                        return

            tg.start_soon(on_signal)
            if address is None:
                await gateway.serve_stdio()
            else:
                await gateway.serve_http(
                    *address, ready=lambda url: click.echo(f"warden: serving {url}", err=True)
                )
            tg.cancel_scope.cancel()

    try:
        anyio.run(serve)
    except (WardenError, BaseExceptionGroup) as exc:
        found = _first_warden_error(exc)
        if found is None:
            raise
        fail(str(found))


def _quiet_sdk_logs() -> None:
    """The SDK's warnings and errors as one line each on stderr, without tracebacks.

    (Upstream failures are the gateway's business: it reports them itself.)
    """
    import logging

    class OneLine(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = " ".join(record.getMessage().split())
            return f"warden: mcp sdk: {record.levelname.lower()}: {text}"[:500]

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLine())
    for name in ("mcp", "client"):  # ClientSession logs as "client"
        log = logging.getLogger(name)
        log.handlers[:] = [handler]
        log.setLevel(logging.WARNING)
        log.propagate = False


def _first_warden_error(exc: BaseException) -> WardenError | None:
    """The WardenError in ``exc`` (task groups wrap what their tasks raise), or None."""
    if isinstance(exc, WardenError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _first_warden_error(inner)
            if found is not None:
                return found
    return None


@mcp.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--fail-on",
    type=click.Choice(SEVERITIES),
    default="high",
    show_default=True,
    help="Exit 1 when a finding is at or above this severity.",
)
@_upstream_options
def scan(
    as_json: bool,
    fail_on: str,
    timeout: float,
    upstream: str | None,
    config: str | None,
    name: str,
    command: tuple[str, ...],
) -> None:
    """List an MCP server's tools and scan them; exit 1 on a finding at or above --fail-on.

    Nothing is pinned, governed or recorded.
    """
    upstreams = _upstreams(command, upstream, config, name)
    import anyio

    from warden.gateway.pins import tool_digest
    from warden.gateway.proxy import GatewayError, fetch_tools
    from warden.gateway.scan import ToolInfo, scan_tools, severity_at_least

    try:
        listings = anyio.run(lambda: fetch_tools(upstreams, timeout=timeout))
    except GatewayError as exc:
        fail(str(exc))
    infos = [
        ToolInfo(server, t.name, t.description or "", t.input_schema)
        for server, tools in listings.items()
        for t in tools
    ]
    findings = scan_tools(infos)
    failing = [f for f in findings if severity_at_least(f, fail_on)]
    if as_json:
        tools = []
        for server, listed in listings.items():
            for t in listed:
                try:
                    digest: str | None = tool_digest(t.name, t.description, t.input_schema)
                except ValueError:
                    digest = None
                tools.append({"server": server, "name": t.name, "digest": digest})
        print_json(
            {
                "tools": tools,
                "findings": [f.to_dict() for f in findings],
                "fail_on": fail_on,
                "failed": bool(failing),
            }
        )
    else:
        _print_findings(listings, findings, fail_on, len(failing))
    if failing:
        sys.exit(1)


def _print_findings(
    listings: dict[str, Any], findings: list[Any], fail_on: str, failing: int
) -> None:
    from rich.table import Table
    from rich.text import Text

    out = console()
    total = sum(len(t) for t in listings.values())
    servers = ", ".join(f"`{s}`" for s in listings)
    if not findings:
        out.print(Text(f"{total} tools from {servers}: no findings"))
        return
    order = {s: i for i, s in enumerate(SEVERITIES)}
    table = Table(show_header=True, header_style="bold", show_lines=False)
    for col in ("severity", "code", "server", "tool", "field", "excerpt", "message"):
        table.add_column(col, overflow="fold")
    for f in sorted(findings, key=lambda f: (-order.get(f.severity, 0), f.server, f.tool)):
        table.add_row(
            *(Text(_visible(str(v))) for v in (f.severity, f.code, f.server, f.tool, f.field)),
            Text(_visible(str(f.excerpt))),
            Text(_visible(str(f.message))),
        )
    out.print(table)
    out.print(
        Text(
            f"{total} tools from {servers}: {len(findings)} findings, "
            f"{failing} at or above `{fail_on}`"
        )
    )


def _visible(text: str) -> str:
    """Text safe for a terminal: control, format and private-use characters as \\uXXXX."""
    return "".join(
        f"\\u{ord(c):04x}" if unicodedata.category(c) in ("Cc", "Cf", "Co", "Cn", "Zl", "Zp") else c
        for c in text
    )


# --- pins ------------------------------------------------------------------------------------


@mcp.group()
def pins() -> None:
    """Pinned tool versions: the first clean version is trusted; a change hides the tool."""


def _store(home: str) -> PinBackend:
    from warden.errors import ConfigurationError
    from warden.gateway.pins import PinError, open_pin_store

    try:
        return open_pin_store(home)
    except (PinError, ConfigurationError) as exc:
        fail(str(exc))


@pins.command(name="list")
@home_option
@click.option("--server", default=None, help="Only this server's tools.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def pins_list(home: str, server: str | None, as_json: bool) -> None:
    """List pinned tools, and tools seen but not (or no longer) matching their pin."""
    from warden.gateway.pins import PinError

    store = _store(home)
    try:
        rows = [p.to_dict() for p in store.list(server)]
    except PinError as exc:
        fail(str(exc))
    finally:
        store.close()
    if as_json:
        print_json(rows)
        return
    if not rows:
        click.echo("no tools seen")
        return
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["pinned_at"] or r["seen_at"]))
        digest = (r["pinned"] or r["seen"])[:19]
        extra = f"  seen {r['seen'][:19]}" if r["status"] == "changed" else ""
        by = f" (by {r['pinned_by']})" if r["pinned_by"] else ""
        click.echo(
            f"{_visible(r['server'])}  {_visible(r['tool'])}  {r['status']:<7}  "
            f"{digest}{extra}  {when}{by}"
        )


@pins.command(name="approve")
@click.argument("server")
@click.argument("tool")
@home_option
@click.option("--by", default=None, help="Who approves (default: $USER).")
def pins_approve(server: str, tool: str, home: str, by: str | None) -> None:
    """Pin the version of TOOL last seen on SERVER (after a change hid it)."""
    from warden.gateway.pins import PinError

    store = _store(home)
    try:
        before = store.get(server, tool)
        pin = store.approve(server, tool, by=who(by))
    except PinError as exc:
        fail(str(exc))
    finally:
        store.close()
    audit_event(
        home,
        {
            "type": "warden.mcp_pin/v1",
            "server": server,
            "tool": tool,
            "digest": pin.pinned,
            "previous": before.pinned if before is not None else None,
            "by": pin.pinned_by,
        },
    )
    already = before is not None and before.pinned == pin.pinned
    verb = "already pinned" if already else "pinned"
    click.echo(f"{verb} `{tool}` of `{server}`: {pin.pinned}")


@pins.command(name="reset")
@click.argument("server")
@click.argument("tool", required=False)
@home_option
@click.option("--by", default=None, help="Who resets (default: $USER).")
def pins_reset(server: str, tool: str | None, home: str, by: str | None) -> None:
    """Forget the pins of SERVER (or of one TOOL): the next listing pins again."""
    from warden.gateway.pins import PinError

    store = _store(home)
    try:
        count = store.reset(server, tool)
    except PinError as exc:
        fail(str(exc))
    finally:
        store.close()
    what = f"`{tool}` of `{server}`" if tool is not None else f"server `{server}`"
    if count == 0:
        fail(f"no pins of {what}")
    audit_event(
        home,
        {
            "type": "warden.mcp_pin_reset/v1",
            "server": server,
            "tool": tool,
            "count": count,
            "by": who(by),
        },
    )
    click.echo(f"forgot {count} pin{'s' if count != 1 else ''} of {what}")
