"""`warden replay`: what a candidate policy would have decided on the recorded traffic.

docs/sre.md ("Replay and shadow mode") is the specification. Exit 0 when no
recorded decision would change, 3 when one would (for CI gates), 1 on a bad
input, 2 on a usage error. Record content is attacker-controlled as far as a
terminal is concerned: it is printed with control characters escaped.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import click

from warden.cli._common import fail, print_json
from warden.cli.policy import _load as load_policy_or_exit
from warden.errors import WardenError
from warden.sre.replay import ReplayReport
from warden.sre.replay import replay as run_replay

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
CHANGED_EXIT = 3


def _clean(text: object) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def _rules(rules: tuple[str, ...]) -> str:
    return ", ".join(_clean(r) for r in rules) if rules else "(default)"


@click.command()
@click.option(
    "--audit",
    "audit_db",
    default=None,
    metavar="DB",
    help="The audit log to replay (default: HOME/audit.db).",
)
@click.option(
    "--policy",
    "policy_file",
    required=True,
    metavar="NEW.yaml",
    type=click.Path(dir_okay=False),
    help="The candidate policy.",
)
@click.option(
    "--show",
    default=20,
    show_default=True,
    metavar="N",
    type=click.IntRange(min=0),
    help="List the first N changed records (by seq).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@click.option(
    "--home",
    default=".warden",
    envvar="WARDEN_HOME",
    show_default=True,
    help="The warden state directory (default: .warden, or $WARDEN_HOME).",
)
def replay(audit_db: str | None, policy_file: str, show: int, as_json: bool, home: str) -> None:
    """Decide every recorded action again under a candidate policy; exit 3 if any would change.

    Compares the verdict of the policy's rules only: decisions made by the
    kill switch, identity, rings, budgets or breakers are counted apart, not
    compared. Records whose arguments were logged redacted are replayed with
    the digest in place of the value, and marked approximate.
    """
    path = Path(audit_db) if audit_db else Path(home) / "audit.db"
    policy = load_policy_or_exit(policy_file)
    try:
        report = run_replay(path, policy, show=show)
    except WardenError as exc:
        fail(_clean(exc))
    if as_json:
        print_json({"audit": str(path), "policy": policy_file, **report.to_dict()})
    else:
        _print(report, path, policy_file)
    if report.changed:
        sys.exit(CHANGED_EXIT)


def _print(r: ReplayReport, path: Path, policy_file: str) -> None:
    echo = click.echo
    echo(
        f"replayed {r.records:,} decisions from {_clean(path)} under {_clean(policy_file)} "
        f"({r.new_policy}) in {r.seconds:.2f} s"
    )
    if r.old_policies:
        echo(f"  recorded under: {', '.join(_clean(p) for p in r.old_policies)}")
    echo(
        f"  changed {r.changed:,}, unchanged {r.unchanged:,}, "
        f"decided by runtime state (not compared) {r.runtime:,}, "
        f"approximate (redacted arguments) {r.approximate:,}"
    )
    if not r.changed:
        echo("no decision would change")
        return
    echo("")
    echo("effect changes (old -> new):")
    width = max(len(k) for k in r.transitions)
    for key, n in r.transitions.items():
        echo(f"  {key:<{width}}  {n:>10,}")
    echo("")
    echo("rules behind the changes:")
    names = [(*key.partition(":")[::2], n) for key, n in r.by_rule.items()]
    width = max(len(_clean(rule)) for _, rule, _ in names)
    for side, rule, n in names:
        echo(f"  {side}  {_clean(rule):<{width}}  {n:>10,}")
    if r.examples:
        echo("")
        shown = len(r.examples)
        echo(f"first {shown:,} of {r.changed:,} changes (by seq):")
        for c in r.examples:
            mark = "  (approximate)" if c.approximate else ""
            echo(
                f"  #{c.seq}  {_clean(c.tool)}  agent {_clean(c.agent or '-')}  "
                f"{c.old_effect} -> {c.new_effect}  "
                f"old: {_rules(c.old_rules)}  new: {_rules(c.new_rules)}{mark}"
            )
