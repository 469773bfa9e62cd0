"""`warden verify --threats`: attack the deployment once per threat, report what stopped each.

The scenarios, the controls and the tests behind them are in
docs/threat-model.md; the command is specified in docs/supply-chain.md.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from warden.cli._common import console, fail, print_json

if TYPE_CHECKING:
    from warden.supply.threats import ThreatResult

DEFAULT_DEPLOYMENT = "deployment.yaml"


@click.command()
@click.option(
    "--threats",
    is_flag=True,
    help="Attack the deployment once per threat (STRIDE, OWASP ASI01-ASI10).",
)
@click.option(
    "--deployment",
    "deployment_path",
    metavar="FILE",
    default=None,
    help=f"The deployment manifest (default: {DEFAULT_DEPLOYMENT} here).",
)
@click.option(
    "--policy",
    "policy_path",
    metavar="FILE",
    default=None,
    help="A policy file instead of a deployment (identity is then not configured).",
)
@click.option(
    "--scenario",
    "scenarios",
    multiple=True,
    metavar="ID",
    help="Run only this scenario (repeatable).",
)
@click.option("-v", "--verbose", is_flag=True, help="Say what happened in every scenario.")
@click.option("--json", "as_json", is_flag=True, help="Print every result as JSON.")
def verify(
    threats: bool,
    deployment_path: str | None,
    policy_path: str | None,
    scenarios: tuple[str, ...],
    verbose: bool,
    as_json: bool,
) -> None:
    """Check that the deployment's enforcement stops real attacks.

    With --threats, each scenario builds a Governor from the deployment's policy
    in a scratch home of its own (the deployment's home is never touched) and
    attacks it once. The report names the controls that stopped each attack and
    the audit record of the decision, proved by an inclusion proof. A scenario
    that went through, or could not run against this deployment, is a GAP.

    Exit 0 when every scenario was stopped, 1 when any is a gap.
    """
    if not threats:
        raise click.UsageError("say what to verify: --threats")
    if deployment_path is not None and policy_path is not None:
        raise click.UsageError("give --deployment or --policy, not both")
    from warden.errors import DeploymentError, PolicyError, SupplyChainError
    from warden.supply.deployment import Deployment, load_deployment
    from warden.supply.threats import run_threats

    target: Deployment | Path
    if policy_path is not None:
        target = Path(policy_path)
        shown = {"policy": str(target)}
    else:
        if deployment_path is None:
            if not Path(DEFAULT_DEPLOYMENT).is_file():
                raise click.UsageError(
                    f"no {DEFAULT_DEPLOYMENT} here: give --deployment FILE or --policy FILE"
                )
            deployment_path = DEFAULT_DEPLOYMENT
        try:
            target = load_deployment(deployment_path)
        except DeploymentError as exc:
            for diag in exc.diagnostics:
                click.echo(diag.render(), err=True)
            fail(f"deployment `{deployment_path}` did not load")
        shown = {"deployment": str(deployment_path), "name": target.name}
    with tempfile.TemporaryDirectory(prefix="warden-threats-") as scratch:
        try:
            results = run_threats(target, scratch=Path(scratch), select=scenarios or None)
        except PolicyError as exc:
            for diag in exc.diagnostics:
                click.echo(diag.render(), err=True)
            fail("the policy did not load")
        except SupplyChainError as exc:
            fail(str(exc))
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    gaps = [r for r in results if r.gap]
    if as_json:
        print_json(
            {
                "target": shown,
                "scenarios": len(results),
                "stopped": len(results) - len(gaps),
                "gaps": len(gaps),
                "results": [r.to_dict() for r in results],
            }
        )
    else:
        _print(results, verbose)
    if gaps:
        raise SystemExit(1)


def _letters(result: ThreatResult) -> str:
    from warden.supply.threats import STRIDE

    letter = {name: key for key, name in STRIDE.items()}
    stride = "".join(letter[name] for name in result.stride)
    return " ".join(x for x in (stride, *result.asi) if x) or "-"


def _print(results: list[ThreatResult], verbose: bool) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table()
    for col in ("id", "threat", "STRIDE/ASI", "result", "controls", "evidence"):
        table.add_column(col, overflow="fold")
    for r in results:
        verdict = Text("STOPPED", style="green") if r.stopped else Text("GAP", style="bold red")
        evidence: Any = f"seq {r.evidence.seq}" if r.evidence is not None else "-"
        table.add_row(r.id, r.title, _letters(r), verdict, ", ".join(r.controls) or "-", evidence)
    out = console()
    out.print(table)
    for r in results:
        if r.gap or verbose:
            label = "STOPPED" if r.stopped else "GAP"
            out.print(f"{label} {r.id}: {r.detail}", markup=False, highlight=False)
    gaps = sum(r.gap for r in results)
    out.print(
        f"{len(results)} scenarios: {len(results) - gaps} stopped, {gaps} "
        f"{'gap' if gaps == 1 else 'gaps'}",
        markup=False,
    )
