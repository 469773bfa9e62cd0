"""`warden bom`: generate, sign and verify a deployment's AI-BOM (docs/supply-chain.md).

`verify` exits 0 when the deployment matches its signed BOM, 1 with one line
per difference (on stdout) when it does not, and 2 when nothing can be
compared: the envelope does not verify or cannot be read, or the manifest
does not load.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from warden.cli._common import fail
from warden.cli.identity import home_option, key_option, load_identity, pass_option
from warden.errors import DeploymentError, WardenError

if TYPE_CHECKING:
    from warden.supply.deployment import Deployment

_NO_VERDICT = 2


def _deployment(path: str, code: int = 1) -> Deployment:
    from warden.supply.deployment import load_deployment

    try:
        return load_deployment(path)
    except DeploymentError as exc:
        for line in exc.report:
            click.echo(line, err=True)
        fail(f"deployment `{path}` did not load", code)


def _write(data: Any, output: str) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if output == "-":
        click.echo(text, nl=False)
        return
    try:
        Path(output).write_text(text, encoding="utf-8")
    except OSError as exc:
        fail(f"{output}: cannot write: {(exc.strerror or str(exc)).lower()}")


@click.group()
def bom() -> None:
    """The AI-BOM: what a deployment runs, in CycloneDX, signed and checked."""


@bom.command()
@click.argument("deployment", metavar="DEPLOYMENT")
@click.option(
    "-o",
    "--output",
    default="bom.json",
    show_default=True,
    help="Where to write the BOM (`-` for stdout).",
)
def generate(deployment: str, output: str) -> None:
    """Write the CycloneDX 1.6 BOM of DEPLOYMENT (a deployment manifest) as it is now."""
    from warden.supply.bom import generate_bom

    dep = _deployment(deployment)
    try:
        doc = generate_bom(dep)
    except WardenError as exc:
        fail(str(exc))
    _write(doc, output)
    if output != "-":
        click.echo(
            f"wrote {output}: `{dep.name}`, {len(doc.get('components', []))} components, "
            f"{len(doc.get('services', []))} MCP servers"
        )


@bom.command()
@click.argument("bom_file", metavar="BOM")
@key_option
@home_option
@pass_option
@click.option(
    "-o",
    "--output",
    default=None,
    help="Where to write the envelope (default: BOM's name with .dsse.json; `-` for stdout).",
)
def sign(
    bom_file: str, key_name: str, home: str, passphrase_env: str | None, output: str | None
) -> None:
    """Sign BOM (a CycloneDX JSON file) with key --key: a DSSE envelope of an in-toto statement."""
    from warden.supply.bom import sign_bom

    try:
        data = json.loads(Path(bom_file).read_bytes())
    except OSError as exc:
        fail(f"{bom_file}: cannot read: {(exc.strerror or str(exc)).lower()}")
    except (ValueError, RecursionError) as exc:
        fail(f"{bom_file}: not JSON ({exc})")
    if not isinstance(data, dict):
        fail(f"{bom_file}: not a CycloneDX BOM (not a JSON object)")
    identity = load_identity(home, key_name, passphrase_env)
    try:
        envelope = sign_bom(data, identity)
    except WardenError as exc:
        fail(f"{bom_file}: {exc}")
    if output is None:
        path = Path(bom_file)
        output = str(path.with_name(path.name.removesuffix(".json") + ".dsse.json"))
    _write(envelope, output)
    if output != "-":
        click.echo(f"signed {output} as {identity.did}")


@bom.command()
@click.argument("envelope", metavar="BOM_DSSE")
@click.argument("deployment", metavar="DEPLOYMENT")
@click.option(
    "--trust",
    "trusted",
    multiple=True,
    metavar="DID",
    help="A signer whose BOMs are accepted (repeatable; default: the manifest's trust.signers).",
)
def verify(envelope: str, deployment: str, trusted: tuple[str, ...]) -> None:
    """Check that DEPLOYMENT matches the signed BOM in BOM_DSSE; exit 1 on any difference.

    Exit 2 when the envelope does not verify (bad signature, untrusted signer,
    malformed) or the manifest does not load.
    """
    from warden.supply.bom import compare_bom, generate_bom, verify_bom

    dep = _deployment(deployment, _NO_VERDICT)
    try:
        data = Path(envelope).read_bytes()
    except OSError as exc:
        fail(f"{envelope}: cannot read: {(exc.strerror or str(exc)).lower()}", _NO_VERDICT)
    try:
        verified = verify_bom(data, list(trusted) or dep.signers)
    except WardenError as exc:
        fail(f"{envelope}: {exc}", _NO_VERDICT)
    try:
        current = generate_bom(dep)
    except WardenError as exc:
        fail(f"{deployment}: cannot describe the deployment now: {exc}", _NO_VERDICT)
    try:
        lines = compare_bom(verified.statement["predicate"], current)
    except WardenError as exc:
        fail(f"{envelope}: {exc}", _NO_VERDICT)
    if lines:
        for line in lines:
            click.echo(line)
        count = f"{len(lines)} difference{'s' if len(lines) != 1 else ''}"
        fail(f"deployment `{dep.name}` differs from its signed BOM ({count})")
    click.echo(f"ok: deployment `{dep.name}` matches its BOM, signed by {verified.signer}")
