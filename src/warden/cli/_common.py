"""Helpers shared by the subcommands: error exits, reading actions, JSON output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from warden.action import Action
from warden.errors import InvalidActionError, SupplyChainError, WardenError

MAX_ACTION_BYTES = 8 << 20


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``warden: error: message`` on stderr and exit with ``code``."""
    click.echo(f"warden: error: {message}", err=True)
    sys.exit(code)


def read_action(value: str, option: str = "--action") -> Action:
    """An Action from inline JSON, ``@FILE`` or ``@-`` (stdin); exits 1 with a message if bad."""
    where = option
    text = value
    if value.startswith("@"):
        name = value[1:]
        where = "<stdin>" if name == "-" else name
        try:
            raw = (
                sys.stdin.buffer.read(MAX_ACTION_BYTES + 1)
                if name == "-"
                else (Path(name).read_bytes())
            )
        except OSError as exc:
            fail(f"{where}: cannot read: {(exc.strerror or str(exc)).lower()}")
        if len(raw) > MAX_ACTION_BYTES:
            fail(f"{where}: action is larger than {MAX_ACTION_BYTES >> 20} MiB")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            fail(f"{where}: not valid UTF-8")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        fail(f"{where}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg.lower()}")
    except RecursionError:
        fail(f"{where}: JSON nests too deeply")
    try:
        return Action.from_dict(data, where=where)
    except InvalidActionError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def console() -> Any:
    """A rich Console for tables: no emoji codes (`did:key:` is not an emoji), at least 120 wide."""
    import shutil

    from rich.console import Console

    width = max(120, shutil.get_terminal_size((120, 24)).columns)
    return Console(highlight=False, emoji=False, width=width)


def who(by: str | None) -> str:
    """Who an operator command acts as: ``--by``, else $USER, else ``operator``."""
    return by or os.environ.get("USER") or "operator"


def audit_event(home: str, record: dict[str, Any]) -> None:
    """Append an operator event to the audit log under ``home`` (created if missing)."""
    from warden.audit import AuditLog
    from warden.errors import AuditError

    try:
        log = AuditLog(Path(home) / "audit.db")
        try:
            log.append(record)
            log.flush()
        finally:
            log.close()
    except (AuditError, OSError) as exc:
        fail(f"the change is in effect, but the audit log could not record it: {exc}")


def bom_gate(path: str | None, trusted: tuple[str, ...], mode: str, policy: str) -> Any:
    """The start-up gate of a served policy (a GatewayBom), or None without --bom; exits 1 if
    refused (docs/supply-chain.md, "The start-up gate"): packages and the policy must match."""
    if path is None:
        if trusted:
            fail("--bom-trust applies to a --bom")
        return None
    if not trusted and mode == "enforce":
        fail("--bom needs --bom-trust DID: the signers whose BOMs are accepted")
    import warnings

    from warden.supply.gate import BomDriftWarning, enforce_gateway_bom

    try:
        with warnings.catch_warnings():  # the banner on stderr says it already
            warnings.simplefilter("ignore", BomDriftWarning)
            return enforce_gateway_bom(path, policy=policy, trusted=trusted, mode=mode)
    except SupplyChainError as exc:
        if exc.report != (str(exc),):  # the differences, then what they amount to
            for line in exc.report:
                click.echo(line, err=True)
        fail(str(exc))
    except WardenError as exc:
        fail(str(exc))


def bom_options(fn: Any) -> Any:
    """``--bom``, ``--bom-trust`` and ``--bom-mode``: the start-up gate's options."""
    for option in reversed(_BOM_OPTIONS):
        fn = option(fn)
    return fn


_BOM_OPTIONS: Any = (
    click.option(
        "--bom",
        "bom_path",
        metavar="FILE",
        default=None,
        help="A signed BOM (warden bom sign): refuse to start if packages or the policy differ "
        "(the MCP gateway also hides tools that differ from it).",
    ),
    click.option(
        "--bom-trust",
        multiple=True,
        metavar="DID",
        help="A signer whose BOMs are accepted (repeatable; needed with --bom).",
    ),
    click.option(
        "--bom-mode",
        type=click.Choice(("enforce", "warn")),
        default="enforce",
        show_default=True,
        help="`warn`: start despite differences or a BOM that does not verify, and say so.",
    ),
)
