"""The `warden` command. Each subcommand group lives in its own module.

Conventions: user mistakes print one line `warden: error: ...` on stderr and
exit 1 (usage errors exit 2, as click does); no traceback reaches a user for
a mistake of theirs.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from warden import __version__


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("warden: interrupted", err=True)
            sys.exit(130)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="warden")
def cli() -> None:
    """warden: deny-by-default governance for AI agent actions."""


def _register() -> None:
    from warden.cli.approvals import approvals
    from warden.cli.audit import audit
    from warden.cli.bom import bom
    from warden.cli.demo import demo
    from warden.cli.doctor import doctor
    from warden.cli.hook import hook
    from warden.cli.identity import cred, id_, trust
    from warden.cli.mcp import mcp
    from warden.cli.policy import policy
    from warden.cli.replay import replay
    from warden.cli.runtime import kill, restore, ring
    from warden.cli.saga import saga
    from warden.cli.serve import serve
    from warden.cli.status import status
    from warden.cli.verify import verify

    cli.add_command(policy)
    cli.add_command(approvals)
    cli.add_command(audit)
    cli.add_command(demo)
    cli.add_command(id_)
    cli.add_command(cred)
    cli.add_command(trust)
    cli.add_command(kill)
    cli.add_command(restore)
    cli.add_command(ring)
    cli.add_command(saga)
    cli.add_command(status)
    cli.add_command(replay)
    cli.add_command(hook)
    cli.add_command(mcp)
    cli.add_command(bom)
    cli.add_command(doctor)
    cli.add_command(verify)
    cli.add_command(serve)


_register()


def main() -> None:
    """Entry point of the `warden` script."""
    cli(prog_name="warden")
