"""`warden status`: breakers, error budgets, alerts, killed agents and ring holds, at a glance."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import click

from warden.cli._common import fail, print_json
from warden.errors import ConfigurationError, RuntimeStateError

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def collect(home: Path) -> dict[str, Any]:
    """Everything `warden status` shows, read without writing (missing stores are empty)."""
    out: dict[str, Any] = {"breakers": [], "alerts": [], "slos": [], "kills": [], "rings": []}
    sre_db = home / "sre.db"
    if sre_db.exists():
        from warden.sre.status import read_status

        try:
            out.update(read_status(sre_db))
        except sqlite3.Error as exc:
            fail(f"{sre_db}: cannot read the SRE status: {exc}")
    from warden.store import FleetConfig, open_runtime_store

    try:
        config = FleetConfig.from_env()
    except ConfigurationError as exc:
        fail(str(exc))
    if config.redis_url is not None or (home / "runtime.db").exists():
        try:
            with open_runtime_store(home, config=config) as state:
                out["kills"] = [k.to_dict() for k in state.kills()]
                out["rings"] = [c.to_dict() for c in state.ceilings()]
        except RuntimeStateError as exc:
            fail(str(exc))
    return out


@click.command()
@click.option("--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(home: str, as_json: bool) -> None:
    """Show open breakers, error budgets, firing alerts, kills and ring holds."""
    path = Path(home)
    if not path.is_dir():
        fail(f"`{path}`: no warden state directory (has a Governor run with this home?)")
    data = collect(path)
    if as_json:
        print_json(data)
        return
    click.echo("breakers:")
    for b in data["breakers"]:
        click.echo(
            f"  {b['state']:<9} {b['breaker']} [{b['key']}] since {_when(b['since'])}: "
            f"{b['reason']}"
        )
    if not data["breakers"]:
        click.echo("  all closed")
    click.echo("error budgets:")
    for s in data["slos"]:
        burns = ", ".join(f"{w} {r:.1f}x" for w, r in (s.get("burn_rates") or {}).items())
        flag = "  EXHAUSTED" if s.get("exhausted") else ""
        click.echo(
            f"  {s['slo']} [{s['key']}] target {s['target']}: {s['remaining'] * 100:.1f}% left "
            f"({s['bad']} bad of {s['eligible']}); burn {burns or '-'}{flag}"
        )
    if not data["slos"]:
        click.echo("  none recorded")
    click.echo("alerts:")
    for a in data["alerts"]:
        what = {k: v for k, v in a.items() if k not in ("kind", "name", "key", "at")}
        click.echo(f"  {_when(a['at'])} {a['kind']} {a['name']} [{a['key']}] {what}")
    if not data["alerts"]:
        click.echo("  none firing")
    click.echo("killed and quarantined:")
    for k in data["kills"]:
        click.echo(
            f"  {k['scope']} {k['target'] or '*'}: {k['reason']} (by {k['by']}, {_when(k['at'])})"
        )
    if not data["kills"]:
        click.echo("  none")
    click.echo("ring holds:")
    for r in data["rings"]:
        click.echo(f"  {r['agent']}: ring {r['ring']} ({r['reason']}, by {r['by']})")
    if not data["rings"]:
        click.echo("  none")
