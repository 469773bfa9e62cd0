"""`warden policy`: check, eval, explain, test and bundle policies."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import click

from warden.cli._common import console, fail, print_json, read_action
from warden.cli.identity import home_option, load_identity, pass_option
from warden.errors import PolicyError, SupplyChainError
from warden.policy import Diagnostic, Policy, evaluate, explain, lint, load_policy
from warden.policy.load import PolicyDocument, load_file
from warden.supply.bundle import (
    Bundle,
    build_bundle,
    document_of,
    env_signers,
    is_bundle,
    policy_of,
    read_bundle,
    unpacked,
)

trust_option = click.option(
    "--trust",
    "trust",
    multiple=True,
    metavar="DID",
    help="A signer whose bundles are accepted (repeatable; default: $WARDEN_SIGNERS).",
)


def _bundle(path: str, trust: tuple[str, ...]) -> Bundle:
    """A verified bundle, or exit 1 saying why not."""
    trusted = trust or env_signers()
    if not trusted:
        fail(f"`{path}` is a signed bundle: name its trusted signers with --trust DID")
    try:
        return read_bundle(path, trusted)
    except SupplyChainError as exc:
        fail(str(exc))


def _print_diagnostics(path: str, exc: PolicyError) -> NoReturn:
    for diag in exc.diagnostics:
        click.echo(diag.render(), err=True)
    fail(
        f"policy `{path}` did not load ({len(exc.diagnostics)} "
        f"error{'s' if len(exc.diagnostics) != 1 else ''})"
    )


def _load(path: str, trust: tuple[str, ...] = ()) -> Policy:
    try:
        if is_bundle(path):
            return policy_of(_bundle(path, trust))
        return load_policy(path)
    except PolicyError as exc:
        _print_diagnostics(path, exc)


def _check_file(
    name: str, trust: tuple[str, ...]
) -> tuple[PolicyDocument | None, list[Diagnostic]]:
    if not is_bundle(name):
        return load_file(name)
    trusted = trust or env_signers()
    if not trusted:
        fail(f"`{name}` is a signed bundle: name its trusted signers with --trust DID")
    try:
        bundle = read_bundle(name, trusted)
    except SupplyChainError as exc:
        return None, [Diagnostic(name, 0, 0, "bundle_invalid", str(exc))]
    return document_of(bundle)


@click.group()
def policy() -> None:
    """Check, evaluate, explain and test policy files."""


@policy.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option(
    "--format", "fmt", type=click.Choice(["text", "json"]), default="text", help="Output format."
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@trust_option
def check(files: tuple[str, ...], fmt: str, strict: bool, trust: tuple[str, ...]) -> None:
    """Validate and lint policy FILES (or signed bundles); exit 1 on any error."""
    all_diags = []
    for name in files:
        doc, diags = _check_file(name, trust)
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
@trust_option
def eval_(policy_file: str, action_arg: str, trust: tuple[str, ...]) -> None:
    """Print the decision for one action as JSON (POLICY: a file or a signed bundle)."""
    action = read_action(action_arg)
    compiled = _load(policy_file, trust)
    if compiled.flows.present:
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
@trust_option
def explain_(policy_file: str, action_arg: str, as_json: bool, trust: tuple[str, ...]) -> None:
    """Show which rules matched an action, which were skipped, and why."""
    action = read_action(action_arg)
    compiled = _load(policy_file, trust)
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
@trust_option
def test_(paths: tuple[str, ...], verbose: bool, as_json: bool, trust: tuple[str, ...]) -> None:
    """Run policy test files (*_test.yaml) under PATHS, or in signed bundles; exit 1 on failure."""
    from warden.policy.testing import discover, run_test_file

    missing = [p for p in paths if not Path(p).exists()]
    if missing:
        fail(f"`{missing[0]}`: no such file or directory")
    with contextlib.ExitStack() as stack:
        files: list[Path] = []
        renames: list[tuple[str, str]] = []
        for p in paths:
            if Path(p).is_file() and is_bundle(p):
                root = stack.enter_context(unpacked(_bundle(p, trust).files))
                renames.append((str(root) + os.sep, f"{p}#"))
                files.extend(discover([root]))
            else:
                files.extend(discover([p]))
        if not files:
            fail("no test files found (names end in `_test.yaml` or `.test.yaml`)")

        def show(text: str) -> str:
            """Name a file unpacked from a bundle as BUNDLE#path."""
            for tmp, name in renames:
                if text.startswith(tmp):
                    return name + text[len(tmp) :]
            return text

        _run_tests(files, run_test_file, show, verbose=verbose, as_json=as_json)


def _run_tests(
    files: list[Path],
    run_test_file: Callable[[Path], Any],
    show: Callable[[str], str],
    *,
    verbose: bool,
    as_json: bool,
) -> None:
    passed = failed = 0
    report = []
    for f in files:
        res = run_test_file(f)
        for d in res.diagnostics:
            failed += 1
            if not as_json:
                click.echo(f"ERROR {show(d.render())}")
        for case in res.cases:
            if case.passed:
                passed += 1
                if verbose and not as_json:
                    click.echo(f"ok    {show(case.file)}:{case.line}: {case.note}")
            else:
                failed += 1
                if not as_json:
                    click.echo(f"FAIL  {show(case.file)}:{case.line}: {case.note}")
                    for line in case.diff:
                        click.echo(f"        {line}")
        report.append(
            {
                "file": show(res.file),
                "diagnostics": [{**d.to_dict(), "file": show(d.file)} for d in res.diagnostics],
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


@policy.command(name="bundle")
@click.argument("directory", metavar="DIR", type=click.Path(file_okay=False))
@click.option("--key", "key_name", required=True, help="Name of the signing key (warden id new).")
@click.option(
    "--main", "main", default=None, help="The main policy, relative to DIR (default: the only one)."
)
@click.option(
    "-o",
    "--output",
    default="policy.bundle.json",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Where to write the bundle.",
)
@home_option
@pass_option
def bundle_(
    directory: str,
    key_name: str,
    main: str | None,
    output: str,
    home: str,
    passphrase_env: str | None,
) -> None:
    """Test, pack and sign the policies and tests of DIR into one bundle (a DSSE envelope)."""
    identity = load_identity(home, key_name, passphrase_env)
    try:
        envelope = build_bundle(directory, identity, main)
    except SupplyChainError as exc:
        for line in exc.report:
            click.echo(line, err=True)
        if exc.report:
            n = len(exc.report)
            fail(f"the bundle was not built ({n} problem{'s' if n != 1 else ''})")
        fail(str(exc))
    data = json.dumps(envelope, indent=2).encode() + b"\n"
    try:
        _write_atomically(Path(output), data)
    except OSError as exc:
        fail(f"`{output}`: cannot write: {(exc.strerror or str(exc)).lower()}")
    stmt = json.loads(base64.b64decode(envelope["payload"]))
    n = len(stmt["subject"])
    click.echo(
        f"wrote {output}: {n} file{'s' if n != 1 else ''}, main policy "
        f"`{stmt['predicate']['main']}`, signed by {identity.did}"
    )


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


@policy.command(name="publish")
@click.argument("policy_file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option("--by", default=None, help="Who publishes it (recorded; default: $USER).")
@trust_option
def publish_(policy_file: str, by: str | None, trust: tuple[str, ...]) -> None:
    """Publish FILE (a policy or a signed bundle) to every replica of the fleet.

    It is loaded first, and refused (exit 1, with its diagnostics) if it does
    not load. Needs WARDEN_REDIS_URL (and WARDEN_FLEET_NAMESPACE, if not `warden`).
    """
    from warden.cli._common import who
    from warden.errors import ConfigurationError, RuntimeStateError
    from warden.store import FleetConfig
    from warden.store.policy import publish_policy

    try:
        config = FleetConfig.from_env()
    except ConfigurationError as exc:
        fail(str(exc))
    if config.redis_url is None:
        fail("publishing a policy needs the fleet's Redis: set WARDEN_REDIS_URL")
    try:
        data = Path(policy_file).read_bytes()
    except OSError as exc:
        fail(f"`{policy_file}`: cannot read: {(exc.strerror or str(exc)).lower()}")
    compiled = _load(policy_file, trust)
    with contextlib.suppress(OSError):
        if Path(policy_file).read_bytes() != data:
            fail(f"`{policy_file}` changed while it was checked: not published")
    actor = who(by)
    try:
        publish_policy(config.redis_url, config.namespace, data, compiled.hash, actor)
    except (ConfigurationError, RuntimeStateError) as exc:
        fail(str(exc))
    click.echo(f"published `{policy_file}` ({compiled.hash}) to namespace `{config.namespace}`")
