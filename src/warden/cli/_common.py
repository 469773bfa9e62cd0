"""Helpers shared by the subcommands: error exits, reading actions, JSON output."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from warden.action import Action
from warden.errors import InvalidActionError

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
