"""`warden approvals`: list, show, approve and deny pending approval requests."""

from __future__ import annotations

import time
from pathlib import Path

import click

from warden.approvals import ApprovalBackend, ApprovalRequest, ApprovalStore, open_approval_store
from warden.cli._common import console, fail, print_json
from warden.errors import ApprovalError, ConfigurationError

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."


def _store(home: str, db: str | None) -> ApprovalBackend:
    """``--db`` if given; else the store the environment names (PostgreSQL, or the home's)."""
    from warden.store import FleetConfig

    try:
        config = FleetConfig.from_env()
        if db is None and config.database_url is not None:
            return open_approval_store(home, config=config)
    except ConfigurationError as exc:
        fail(str(exc))
    path = Path(db) if db else Path(home) / "approvals.db"
    if not path.exists():
        fail(f"`{path}`: no approvals database (has a Governor with this home asked for one?)")
    try:
        return ApprovalStore(path)
    except ConfigurationError as exc:
        fail(str(exc))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _summary(req: ApprovalRequest) -> str:
    args = ", ".join(f"{k}={v!r}" for k, v in req.action.get("args", {}).items())
    text = f"{req.action.get('tool')}({args})"
    return text if len(text) <= 80 else text[:77] + "..."


home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
db_option = click.option("--db", default=None, help="Path of the approvals database file.")


@click.group()
def approvals() -> None:
    """Human approvals for actions a policy marks require_approval."""


@approvals.command(name="list")
@home_option
@db_option
@click.option("--all", "show_all", is_flag=True, help="Include decided and expired requests.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_(home: str, db: str | None, show_all: bool, as_json: bool) -> None:
    """List pending approval requests (newest first)."""
    store = _store(home, db)
    reqs = store.list(None if show_all else "pending")
    if as_json:
        print_json([r.to_dict() for r in reqs])
        return
    if not reqs:
        click.echo("no pending requests" if not show_all else "no requests")
        return
    from rich.table import Table

    table = Table()
    for col in ("id", "status", "agent", "action", "why", "expires"):
        table.add_column(col, overflow="fold")
    for r in reqs:
        table.add_row(
            r.id,
            r.status,
            r.agent_id or "-",
            _summary(r),
            "; ".join(r.reasons),
            _when(r.expires_at),
        )
    console().print(table)


@approvals.command()
@click.argument("request_id", metavar="ID")
@home_option
@db_option
def show(request_id: str, home: str, db: str | None) -> None:
    """Show one request in full, as JSON."""
    store = _store(home, db)
    try:
        print_json(store.get(request_id).to_dict())
    except ApprovalError as exc:
        fail(str(exc))


def _decide(
    verb: str, request_id: str, identity: str, note: str | None, home: str, db: str | None
) -> None:
    store = _store(home, db)
    try:
        req = (store.approve if verb == "approve" else store.deny)(request_id, identity, note)
    except ApprovalError as exc:
        fail(str(exc))
    click.echo(f"{req.id} {req.status} by {identity}: {_summary(req)}")


@approvals.command()
@click.argument("request_id", metavar="ID")
@click.option("--as", "identity", required=True, help="Who approves (recorded with the decision).")
@click.option("--note", default=None, help="Why (recorded with the decision).")
@home_option
@db_option
def approve(request_id: str, identity: str, note: str | None, home: str, db: str | None) -> None:
    """Approve request ID (the requesting agent cannot approve its own request)."""
    _decide("approve", request_id, identity, note, home, db)


@approvals.command()
@click.argument("request_id", metavar="ID")
@click.option("--as", "identity", required=True, help="Who denies (recorded with the decision).")
@click.option("--note", default=None, help="Why (shown to the agent).")
@home_option
@db_option
def deny(request_id: str, identity: str, note: str | None, home: str, db: str | None) -> None:
    """Deny request ID."""
    _decide("deny", request_id, identity, note, home, db)
