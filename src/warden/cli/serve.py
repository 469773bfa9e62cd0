"""`warden serve`: the decision service over HTTP, and `warden serve token` for its tokens.

docs/fleet.md ("`warden serve`: the decision service") is the specification.
Starlette and uvicorn are imported only when the server runs.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, cast

import click

from warden.cli._common import audit_event, bom_gate, bom_options, console, fail, print_json, who
from warden.errors import ConfigurationError, PolicyError, WardenError

if TYPE_CHECKING:
    from warden.governor import Governor
    from warden.server import Token, TokenStore
    from warden.server._tokens import TokenBackend
    from warden.store.policy import PolicyFollower

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."
_LISTEN: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]]+)):(?P<port>[0-9]{1,5})"
)
_DEFAULT_LISTEN: Final = "127.0.0.1:7070"

home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
token_home_option = click.option(
    "--home", default=None, help="The warden state directory (default: that of `warden serve`)."
)


def _token_home(home: str | None) -> str:
    if home is not None:
        return home
    obj = click.get_current_context().find_object(dict)
    return str(obj["home"]) if obj and "home" in obj else os.environ.get("WARDEN_HOME", ".warden")


def _listen(value: str) -> tuple[str, int]:
    m = _LISTEN.fullmatch(value)
    port = int(m.group("port")) if m else -1
    if m is None or not 0 <= port <= 65535:
        fail(f"--listen must be HOST:PORT (port 0-65535), not `{value}`")
    return m.group("v6") or m.group("host"), port


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), or a one-line error."""
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        fail(f"cannot listen on `{host}:{port}`: {(exc.strerror or str(exc)).lower()}")
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(1024)
    except OSError as exc:
        sock.close()
        fail(f"cannot listen on `{host}:{port}`: {(exc.strerror or str(exc)).lower()}")
    return sock


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _tokens(home: str) -> TokenBackend:
    """The token store the environment names: PostgreSQL in fleet mode, else the home's."""
    from warden.server._tokens import open_token_store

    try:
        return open_token_store(home)
    except ConfigurationError as exc:
        fail(str(exc))


def _has_tokens(home: str) -> bool:
    """Whether a token store exists to read (PostgreSQL in fleet mode always does)."""
    from warden.store import FleetConfig

    try:
        fleet = FleetConfig.from_env().database_url is not None
    except ConfigurationError as exc:
        fail(str(exc))
    return fleet or (Path(home) / "tokens.db").exists()


@click.group(invoke_without_command=True)
@click.option("--policy", "policy_path", metavar="FILE", help="The policy file (or signed bundle).")
@click.option(
    "--listen",
    metavar="HOST:PORT",
    default=_DEFAULT_LISTEN,
    show_default=True,
    help="Where to accept HTTP (port 0: any free port).",
)
@home_option
@bom_options
@click.pass_context
def serve(
    ctx: click.Context,
    policy_path: str | None,
    listen: str,
    home: str,
    bom_path: str | None,
    bom_trust: tuple[str, ...],
    bom_mode: str,
) -> None:
    """Serve decisions, approvals, the kill switch and the audit log over HTTP.

    \b
      warden serve --policy policy.yaml --listen 127.0.0.1:7070
      warden serve token new --subject alice --scope approve,read

    Every /v1 route needs `Authorization: Bearer <token>` with the route's
    scope. Tokens travel in clear over plain HTTP: listen on loopback, or put
    a TLS-terminating proxy in front.
    """
    ctx.ensure_object(dict)["home"] = home  # `warden serve --home H token ...` means H
    if ctx.invoked_subcommand is not None:
        return
    if policy_path is None:
        fail("--policy is required to serve (or use `warden serve token ...`)")
    host, port = _listen(listen)
    gate = bom_gate(bom_path, bom_trust, bom_mode, policy_path)  # before anything starts
    from warden.governor import Governor

    try:
        gov = Governor.from_policy(policy_path, home=home)
    except PolicyError as exc:
        for diag in exc.diagnostics:
            click.echo(diag.render(), err=True)
        fail(f"policy `{policy_path}` did not load")
    except (WardenError, OSError) as exc:
        fail(f"cannot start: {exc}")
    if gate is not None and gate.report and gov.audit is not None and bom_path is not None:
        from warden.supply.gate import drift_record

        try:
            gov.audit.append(drift_record(gate.deployment, bom_path, gate.report))
        except WardenError as exc:
            fail(f"cannot record the BOM drift in the audit log: {exc}")
    follower = _follow_policy(gov)
    _run(gov, home, host, port, follower)


def _follow_policy(gov: Governor) -> PolicyFollower | None:
    """With WARDEN_REDIS_URL, a follower keeping ``gov`` on the fleet's published policy."""
    from warden.store import FleetConfig
    from warden.store.policy import PolicyFollower

    try:
        config = FleetConfig.from_env()
        if config.redis_url is None:
            return None
        return PolicyFollower(gov, config.redis_url, config.namespace)
    except ConfigurationError as exc:
        fail(str(exc))


def _run(
    gov: Governor, home: str, host: str, port: int, follower: PolicyFollower | None = None
) -> None:
    import anyio
    import uvicorn

    from warden.server import create_app

    class Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            # uvicorn's own re-raises SIGTERM after its graceful shutdown, which would
            # kill the process before the audit log is closed (and its checkpoint signed)
            handled = (signal.SIGINT, signal.SIGTERM)
            before = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
            try:
                yield
            finally:
                for sig, handler in before.items():
                    signal.signal(sig, handler)

    tokens = _tokens(home)
    try:
        # create_app is typed for the SQLite store; it uses only what TokenBackend has
        app = create_app(gov, cast("TokenStore", tokens))
        listed = tokens.list()
    except (ConfigurationError, OSError) as exc:
        tokens.close()
        fail(str(exc))
    if not listed:
        click.echo(
            "warden: note: no tokens yet; make one with "
            f"`warden serve token new --home {home} --subject NAME --scope decide`",
            err=True,
        )
    if not _loopback(host):
        click.echo(
            "warden: note: tokens travel in clear over plain HTTP; "
            "serve through a TLS-terminating proxy",
            err=True,
        )
    sock = _bind(host, port)
    server = Server(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))

    async def main() -> None:
        async with anyio.create_task_group() as tg:

            async def announce() -> None:
                while not server.started:
                    await anyio.sleep(0.01)
                bound = sock.getsockname()[1]
                shown = f"[{host}]" if ":" in host else host
                click.echo(f"warden: serving http://{shown}:{bound}", err=True)

            tg.start_soon(announce)
            await server.serve(sockets=[sock])
            tg.cancel_scope.cancel()

    try:
        anyio.run(main)
    finally:
        sock.close()
        if follower is not None:
            follower.close()
        if gov.audit is not None:
            gov.audit.close()
        gov.runtime.close()
        tokens.close()


# --- tokens ----------------------------------------------------------------------------------


@serve.group()
def token() -> None:
    """Bearer tokens of the service: shown once, stored as SHA-256 with subject and scopes."""


@token.command(name="new")
@click.option("--subject", required=True, help="Who the token acts as (the approver, the `by`).")
@click.option(
    "--scope",
    "scopes",
    required=True,
    metavar="SCOPES",
    help="Comma-separated: decide, read, approve, operate.",
)
@click.option("--by", default=None, help="Who makes it (recorded; default: $USER).")
@token_home_option
def token_new(subject: str, scopes: str, by: str | None, home: str | None) -> None:
    """Make a token and print it once (only its SHA-256 is kept)."""
    home = _token_home(home)
    store = _tokens(home)
    actor = who(by)
    try:
        text, made = store.new(subject, scopes, by=actor)
    except ConfigurationError as exc:
        fail(str(exc))
    finally:
        store.close()
    audit_event(
        home,
        {
            "type": "warden.token/v1",
            "event": "new",
            "id": made.id,
            "subject": made.subject,
            "scopes": sorted(made.scopes),
            "by": actor,
        },
    )
    click.echo(
        f"token {made.id} for `{subject}` ({', '.join(sorted(made.scopes))}); "
        "it is shown once, keep it now:",
        err=True,
    )
    click.echo(text)


@token.command(name="list")
@click.option("--all", "show_all", is_flag=True, help="Include revoked tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@token_home_option
def token_list(show_all: bool, as_json: bool, home: str | None) -> None:
    """List tokens (never their secrets)."""
    home = _token_home(home)
    found: list[Token] = []
    if _has_tokens(home):
        store = _tokens(home)
        try:
            found = store.list(revoked=show_all)
        except OSError as exc:  # the fleet store did not answer
            fail(str(exc))
        finally:
            store.close()
    if as_json:
        print_json([t.to_dict() for t in found])
        return
    if not found:
        click.echo("no tokens")
        return
    from rich.table import Table

    table = Table()
    for col in ("id", "subject", "scopes", "created", "by", "revoked"):
        table.add_column(col, overflow="fold")
    for t in found:
        table.add_row(
            t.id,
            t.subject,
            ",".join(sorted(t.scopes)),
            _when(t.created_at),
            t.created_by,
            _when(t.revoked_at),
        )
    console().print(table)


@token.command(name="revoke")
@click.argument("token_id", metavar="ID")
@click.option("--by", default=None, help="Who revokes it (recorded; default: $USER).")
@token_home_option
def token_revoke(token_id: str, by: str | None, home: str | None) -> None:
    """Revoke token ID (as `token list` shows it): servers refuse it from the next request."""
    home = _token_home(home)
    if not _has_tokens(home):
        fail(f"no token `{token_id}` (no tokens under `{home}`)")
    store = _tokens(home)
    try:
        revoked = store.revoke(token_id)
    except ConfigurationError as exc:
        fail(str(exc))
    finally:
        store.close()
    audit_event(
        home,
        {
            "type": "warden.token/v1",
            "event": "revoke",
            "id": revoked.id,
            "subject": revoked.subject,
            "scopes": sorted(revoked.scopes),
            "by": who(by),
        },
    )
    click.echo(f"revoked token {revoked.id} of `{revoked.subject}`")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
