"""`warden kill`, `warden restore` and `warden ring`: the operator's runtime controls.

They write `runtime.db` under --home (or, with WARDEN_REDIS_URL set, the
fleet's Redis: docs/fleet.md), which every Governor sharing it reads
(decisions at once in-process, other processes within 100 ms), and append
the event to the audit log there.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from warden.cli._common import audit_event, fail, print_json, who
from warden.errors import ConfigurationError, RuntimeStateError
from warden.runtime.rings import RING_NAMES

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."
home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
by_option = click.option("--by", default=None, help="Who does it (default: $USER).")


def _target(agent: str | None, session: str | None, all_: bool) -> tuple[str, str | None]:
    if sum(x is not None for x in (agent, session)) + bool(all_) != 1:
        fail("name exactly one target: AGENT, --session ID or --all")
    if all_:
        return "all", None
    return ("agent", agent) if agent is not None else ("session", session)


def _state(home: str) -> Any:
    from warden.store import open_runtime_store

    try:
        return open_runtime_store(Path(home))
    except (RuntimeStateError, ConfigurationError) as exc:
        fail(str(exc))


@click.command()
@click.argument("agent", required=False)
@click.option("--session", default=None, help="Kill one session instead of an agent.")
@click.option("--all", "all_", is_flag=True, help="Kill every agent and session.")
@click.option("--reason", default=None, help="Why (recorded, and shown in every denial).")
@click.option("--list", "show", is_flag=True, help="List the kills in effect and exit.")
@by_option
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --list).")
def kill(
    agent: str | None,
    session: str | None,
    all_: bool,
    reason: str | None,
    show: bool,
    by: str | None,
    home: str,
    as_json: bool,
) -> None:
    """Stop AGENT (or --session ID, or --all) now: new actions are denied, calls in flight end."""
    state = _state(home)
    try:
        if show:
            kills = [k.to_dict() for k in state.kills()]
            if as_json:
                print_json(kills)
            elif not kills:
                click.echo("no kills in effect")
            for k in [] if as_json else kills:
                when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(k["at"]))
                click.echo(
                    f"{when}  {k['scope']:<7} {k['target'] or '*'}  {k['reason']}  (by {k['by']})"
                )
            return
        scope, target = _target(agent, session, all_)
        if not reason:
            fail("--reason is required: it is recorded and shown in every denial")
        actor = who(by)
        state.kill(scope, target, reason, actor)
        if scope == "agent" and target is not None:
            state.demote(target, f"killed: {reason}", actor)
    except RuntimeStateError as exc:
        fail(str(exc))
    finally:
        state.close()
    audit_event(
        home,
        {
            "type": "warden.kill/v1",
            "scope": scope,
            "target": target,
            "reason": reason,
            "by": actor,
            "cancelled": None,
        },
    )
    click.echo(f"killed {scope} {target or '(all)'}: {reason}")


@click.command()
@click.argument("agent", required=False)
@click.option("--session", default=None, help="Restore one session instead of an agent.")
@click.option("--all", "all_", is_flag=True, help="Lift a `kill --all`.")
@click.option("--reason", default="restored", help="Why (recorded).")
@by_option
@home_option
def restore(
    agent: str | None, session: str | None, all_: bool, reason: str, by: str | None, home: str
) -> None:
    """Lift a kill. A restored agent stays at ring 3 until `warden ring set`."""
    scope, target = _target(agent, session, all_)
    state = _state(home)
    try:
        lifted = state.restore(scope, target)
    except RuntimeStateError as exc:
        fail(str(exc))
    finally:
        state.close()
    if not lifted:
        fail(f"no kill of {scope} {target or '(all)'} is in effect")
    audit_event(
        home,
        {
            "type": "warden.restore/v1",
            "scope": scope,
            "target": target,
            "reason": reason,
            "by": who(by),
        },
    )
    click.echo(f"restored {scope} {target or '(all)'}")


@click.group()
def ring() -> None:
    """Agents' rings: 0 supervisor, 1 privileged, 2 standard, 3 untrusted."""


@ring.command(name="set")
@click.argument("agent")
@click.argument("level", type=click.IntRange(0, 3))
@click.option("--reason", required=True, help="Why (recorded).")
@by_option
@home_option
def ring_set(agent: str, level: int, reason: str, by: str | None, home: str) -> None:
    """Hold AGENT to ring LEVEL: promote it after a demotion, or demote it."""
    state = _state(home)
    try:
        state.set_ceiling(agent, level, reason, who(by))
    except RuntimeStateError as exc:
        fail(str(exc))
    finally:
        state.close()
    audit_event(
        home,
        {
            "type": "warden.ring/v1",
            "agent": agent,
            "ring": level,
            "reason": reason,
            "by": who(by),
        },
    )
    click.echo(f"{agent}: ring {level} ({RING_NAMES[level]})")


@ring.command(name="list")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def ring_list(home: str, as_json: bool) -> None:
    """List the agents an operator or a demotion holds to a ring."""
    state = _state(home)
    try:
        rows = [c.to_dict() for c in state.ceilings()]
    finally:
        state.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no ring holds")
    for r in rows:
        click.echo(
            f"{r['agent']}  ring {r['ring']} ({RING_NAMES[r['ring']]})  {r['reason']}  "
            f"(by {r['by']})"
        )
