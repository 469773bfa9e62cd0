"""`warden saga`: list sagas and show one, from the saga log (docs/runtime.md, "Sagas").

These commands only read: they open the log without recovering anything,
since recovery needs the registry of compensations only the application has.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from warden.cli._common import console, fail, print_json
from warden.errors import ConfigurationError, SagaError
from warden.runtime.saga import SAGA_STATES, SagaRecord, SagaStore, open_saga_store
from warden.store import FleetConfig

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."

home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _store(home: str) -> SagaStore:
    try:
        config = FleetConfig.from_env()
        path = Path(home) / "sagas.db"
        if config.database_url is None and not path.exists():
            fail(f"`{path}`: no saga log (has a program with this home run a saga?)")
        return open_saga_store(home, config, recover=False)
    except (SagaError, ConfigurationError) as exc:
        fail(str(exc))


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _progress(rec: SagaRecord) -> str:
    done = sum(1 for s in rec.steps if s.state in ("done", "compensating", "compensated"))
    undone = sum(1 for s in rec.steps if s.state == "compensated")
    text = f"{len(rec.steps)} ({done} done"
    return text + (f", {undone} undone)" if undone else ")")


@click.group()
def saga() -> None:
    """Durable sagas: workflows whose completed steps are undone when one fails."""


@saga.command(name="list")
@click.option(
    "--state", type=click.Choice(SAGA_STATES), default=None, help="Only sagas in this state."
)
@json_option
@home_option
def list_(state: str | None, as_json: bool, home: str) -> None:
    """List sagas, newest first."""
    store = _store(home)
    try:
        records = store.list(state)
    except SagaError as exc:
        fail(str(exc))
    finally:
        store.close()
    if as_json:
        print_json([r.to_dict() for r in records])
        return
    if not records:
        click.echo(f"no {state} sagas" if state else "no sagas")
        return
    from rich.table import Table

    table = Table()
    table.add_column("id", no_wrap=True)  # whole, so it can be pasted into `saga show`
    for col in ("name", "key", "state", "steps", "updated", "error"):
        table.add_column(col, overflow="fold")
    for r in records:
        table.add_row(
            r.id,
            r.name,
            r.key or "-",
            r.state,
            _progress(r),
            _when(r.updated_at),
            r.compensation_error or r.error or "",
        )
    console().print(table)


@saga.command()
@click.argument("saga_id", metavar="ID")
@json_option
@home_option
def show(saga_id: str, as_json: bool, home: str) -> None:
    """Show one saga: its state, its steps and their history."""
    store = _store(home)
    try:
        rec = store.get(saga_id)
    except SagaError as exc:
        fail(str(exc))
    finally:
        store.close()
    if as_json:
        print_json(rec.to_dict())
        return
    click.echo(f"saga {rec.id} `{rec.name}`" + (f" (key `{rec.key}`)" if rec.key else ""))
    click.echo(f"  state:    {rec.state}")
    click.echo(f"  created:  {_when(rec.created_at)}   updated: {_when(rec.updated_at)}")
    if rec.error:
        click.echo(f"  stopped:  {rec.error}")
    if rec.compensation_error:
        click.echo(f"  failed:   {rec.compensation_error}")
        click.echo(
            "  an operator must finish the undo; a compensation's key is its step's key + `:undo`"
        )
    if rec.holder_pid is not None:
        click.echo(
            f"  held by:  pid {rec.holder_pid} on {(rec.holder_node or '?').split('/')[0]} "
            f"(heartbeat {_when(rec.heartbeat)})"
        )
    if not rec.steps:
        click.echo("  no steps")
    else:
        from rich.table import Table

        table = Table()
        for col in ("#", "action", "state", "compensate"):
            table.add_column(col, overflow="fold")
        table.add_column("idempotency key", no_wrap=True)
        for col in ("tries", "error"):
            table.add_column(col, overflow="fold")
        for s in rec.steps:
            table.add_row(
                str(s.index),
                s.action,
                s.state,
                s.compensate or "-",
                s.idempotency_key,
                str(s.attempts) if s.attempts else "",
                s.error or "",
            )
        console().print(table)
    click.echo("history:")
    for e in rec.events:
        where = f"step {e.step}" if e.step is not None else "saga"
        detail = f": {e.detail}" if e.detail else ""
        click.echo(f"  {_when(e.at)}  {where} {e.state}{detail}")
