"""`warden doctor`: check the enforcement really in force (docs/supply-chain.md)."""

from __future__ import annotations

import re
import sys

import click

from warden.cli._common import print_json

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_LABEL = {"ok": "ok", "warning": "warn", "error": "FAIL"}


def _clean(text: str) -> str:
    """One line, control characters escaped: paths and names come from the files checked."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@click.command()
@click.option(
    "--deployment",
    "deployment_file",
    default=None,
    metavar="FILE",
    help="The deployment manifest to check: its policy (or bundle), its home, its signers.",
)
@click.option(
    "--policy",
    "policy_file",
    default=None,
    metavar="FILE",
    help="A policy file or signed bundle to check, instead of a deployment.",
)
@click.option(
    "--home",
    default=None,
    metavar="DIR",
    help="The warden state directory (default: the deployment's home, else $WARDEN_HOME, "
    "else .warden).",
)
@click.option(
    "--bom",
    "bom_file",
    default=None,
    metavar="FILE",
    help="A signed AI-BOM (DSSE) the deployment must verify against and match.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(
    deployment_file: str | None,
    policy_file: str | None,
    home: str | None,
    bom_file: str | None,
    as_json: bool,
) -> None:
    """Check the enforcement really in force; exit 1 when any check fails.

    Reads the real state and changes none of it: the policy, the audit log
    (writable, durable, verifies), key file modes, the sandbox (bubblewrap
    runs `true`), the kill and trust stores, PostgreSQL and Redis when
    WARDEN_DATABASE_URL / WARDEN_REDIS_URL are set, the BOM and the bundle
    signature.
    """
    from warden.errors import DeploymentError
    from warden.supply.doctor import Finding, run_doctor

    if deployment_file is not None and policy_file is not None:
        raise click.UsageError("give --deployment or --policy, not both")
    if bom_file is not None and deployment_file is None:
        raise click.UsageError("--bom needs --deployment: a BOM describes a deployment")
    findings: list[Finding]
    if deployment_file is not None:
        from warden.supply.deployment import load_deployment

        try:
            deployment = load_deployment(deployment_file)
        except DeploymentError as exc:
            more = "; ".join(exc.report[1:])
            findings = [
                Finding(
                    "deployment.loaded",
                    "error",
                    f"the deployment does not load: {exc.report[0] if exc.report else exc}"
                    + (f" (also: {more})" if more else ""),
                    "fix the manifest; nothing else can be checked until it loads",
                )
            ]
        else:
            findings = run_doctor(deployment=deployment, home=home, bom=bom_file)
    else:
        findings = run_doctor(policy=policy_file, home=home)
    errors = sum(f.severity == "error" for f in findings)
    warnings = sum(f.severity == "warning" for f in findings)
    if as_json:
        print_json(
            {"findings": [f.to_dict() for f in findings], "errors": errors, "warnings": warnings}
        )
    else:
        width = max((len(f.id) for f in findings), default=0)
        for f in findings:
            click.echo(
                f"{_LABEL.get(f.severity, f.severity):<6}{f.id:<{width}}  {_clean(f.message)}"
            )
            if f.severity != "ok" and f.fix:
                click.echo(f"{'':<6}{'':<{width}}  fix: {_clean(f.fix)}")
        ok = len(findings) - errors - warnings
        click.echo(
            f"{len(findings)} findings: {errors} failed, {warnings} "
            f"warning{'' if warnings == 1 else 's'}, {ok} ok"
        )
    if errors:
        sys.exit(1)
