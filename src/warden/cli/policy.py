"""`warden policy`: check, eval, explain and test policies."""

from __future__ import annotations

import json
from pathlib import Path

import click

from warden.cli._common import console, fail, print_json, read_action
from warden.errors import PolicyError
from warden.policy import Policy, evaluate, explain, lint, load_policy
from warden.policy.load import load_file


def _load(path: str) -> Policy:
    try:
        return load_policy(path)
    except PolicyError as exc:
        for diag in exc.diagnostics:
            click.echo(diag.render(), err=True)
        fail(
            f"policy `{path}` did not load ({len(exc.diagnostics)} "
            f"error{'s' if len(exc.diagnostics) != 1 else ''})"
        )


@click.group()
def policy() -> None:
    """Check, evaluate, explain and test policy files."""


@policy.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="Output format."
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def check(files: tuple[str, ...], fmt: str, strict: bool) -> None:
    """Validate and lint policy FILES; exit 1 on any error."""
    all_diags = []
    for name in files:
        doc, diags = load_file(name)
        if doc is not None:
            diags = diags + lint(doc)
        all_diags.extend(sorted(diags))
    errors = sum(1 for d in all_diags if d.severity == "error")
    warnings = len(all_diags) - errors
    if fmt == "json":
        print_json(
            {
                "errors": errors,
                "warnings": warnings,
                "diagnostics": [d.to_dict() for d in all_diags],
            }
        )
    else:
        for d in all_diags:
            click.echo(d.render())
            if d.hint:
                click.echo(f"    hint: {d.hint}")
        n = len(files)
        click.echo(
            f"{n} file{'s' if n != 1 else ''} checked: {errors} "
            f"error{'s' if errors != 1 else ''}, {warnings} "
            f"warning{'s' if warnings != 1 else ''}",
            err=True,
        )
    if errors or (strict and warnings):
        raise SystemExit(1)


@policy.command(name="eval")
@click.argument("policy_file", metavar="POLICY", type=click.Path(dir_okay=False))
@click.option(
    "--action",
    "action_arg",
    required=True,
    metavar="JSON|@FILE|@-",
    help="The action as JSON, or @FILE, or @- for stdin.",
)
def eval_(policy_file: str, action_arg: str) -> None:
    """Print the decision for one action as JSON."""
    action = read_action(action_arg)
    compiled = _load(policy_file)
    if compiled.flows.present and action.flow is not None:
        from warden.flows import evaluate_with_flows

        decision = evaluate_with_flows(compiled, action)
    else:
        decision = evaluate(compiled, action)
    out = decision.to_dict()
    print_json({k: out[k] for k in ("effect", "rules", "reasons", "errors", "policy_hash")})


@policy.command(name="explain")
@click.argument("policy_file", metavar="POLICY", type=click.Path(dir_okay=False))
@click.option(
    "--action",
    "action_arg",
    required=True,
    metavar="JSON|@FILE|@-",
    help="The action as JSON, or @FILE, or @- for stdin.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def explain_(policy_file: str, action_arg: str, as_json: bool) -> None:
    """Show which rules matched an action, which were skipped, and why."""
    action = read_action(action_arg)
    compiled = _load(policy_file)
    trace = explain(compiled, action)
    if as_json:
        print_json(trace.to_dict())
        return
    from rich.table import Table

    con = console()
    table = Table(title=f"{compiled.name}  ({compiled.hash[:19]}…)", title_justify="left")
    for col in ("line", "rule", "effect", "status", "why"):
        table.add_column(col, overflow="fold")
    colours = {"matched": "bold", "not_matched": "", "skipped": "dim"}
    for r in trace.rules:
        table.add_row(
            str(r.line), r.id, r.effect.value, r.status, r.detail, style=colours.get(r.status, "")
        )
    con.print(table)
    d = trace.decision
    con.print(
        f"decision: [bold]{d.effect.value}[/bold]"
        + (f" by {', '.join(d.rules)}" if d.rules else " (policy default)")
    )
    for reason in d.reasons:
        con.print(f"  reason: {reason}", markup=False)
    for err in d.errors:
        con.print(f"  error:  {err}", markup=False)


@policy.command(name="test")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@click.option("-v", "--verbose", is_flag=True, help="List passing cases too.")
@click.option("--json", "as_json", is_flag=True, help="Print results as JSON.")
def test_(paths: tuple[str, ...], verbose: bool, as_json: bool) -> None:
    """Run policy test files (*_test.yaml) under PATHS; exit 1 on any failure."""
    from warden.policy.testing import discover, run_test_file

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        fail(f"`{missing[0]}`: no such file or directory")
    files = discover(paths)
    if not files:
        fail("no test files found (names end in `_test.yaml` or `.test.yaml`)")
    passed = failed = 0
    report = []
    for f in files:
        res = run_test_file(f)
        for d in res.diagnostics:
            failed += 1
            if not as_json:
                click.echo(f"ERROR {d.render()}")
        for case in res.cases:
            if case.passed:
                passed += 1
                if verbose and not as_json:
                    click.echo(f"ok    {case.file}:{case.line}: {case.note}")
            else:
                failed += 1
                if not as_json:
                    click.echo(f"FAIL  {case.file}:{case.line}: {case.note}")
                    for line in case.diff:
                        click.echo(f"        {line}")
        report.append(
            {
                "file": res.file,
                "diagnostics": [d.to_dict() for d in res.diagnostics],
                "cases": [
                    {"line": c.line, "note": c.note, "passed": c.passed, "diff": list(c.diff)}
                    for c in res.cases
                ],
            }
        )
    if as_json:
        click.echo(json.dumps({"passed": passed, "failed": failed, "files": report}, indent=2))
    else:
        click.echo(f"{passed} passed, {failed} failed")
    if failed:
        raise SystemExit(1)
