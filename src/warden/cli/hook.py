"""`warden hook claude-code`: govern Claude Code's tool calls through its PreToolUse hook.

Claude Code runs the hook with one JSON event on stdin and reads the answer on
stdout (docs/mcp.md, "Claude Code"). The hook always answers: input it cannot
read is answered with a deny and its reason, because a hook that fails is,
for Claude Code, a hook that did not object.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from warden.action import Action, Effect
from warden.errors import InvalidActionError, PolicyError, WardenError

MAX_EVENT_BYTES = 8 << 20


def tool_name(name: str) -> str:
    """The governed tool name: `mcp__server__tool` as the gateway names it, else `claude.NAME`."""
    if name.startswith("mcp__"):
        parts = name.split("__", 2)
        if len(parts) == 3 and parts[1] and parts[2]:
            return f"mcp.{parts[1]}.{parts[2]}"
    return f"claude.{name}"


def answer(decision: str, reason: str) -> None:
    out = {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": decision,
            "permissionDecisionReason": reason,
        }
    }
    click.echo(json.dumps(out, ensure_ascii=False))


def _event() -> dict[str, Any]:
    raw = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
    if len(raw) > MAX_EVENT_BYTES:
        raise ValueError(f"the hook event is larger than {MAX_EVENT_BYTES >> 20} MiB")
    data = json.loads(raw.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the hook event is not a JSON object")
    if data.get("hook_event_name", "PreToolUse") != "PreToolUse":
        raise ValueError(f"not a PreToolUse event: {data.get('hook_event_name')!r}")
    if not isinstance(data.get("tool_name"), str) or not data["tool_name"]:
        raise ValueError("the event has no `tool_name`")
    if not isinstance(data.get("tool_input", {}), dict):
        raise ValueError("`tool_input` is not a JSON object")
    return data


@click.group()
def hook() -> None:
    """Answer agent hosts' permission hooks with warden's decision."""


@hook.command(name="claude-code")
@click.option("--policy", "policy_path", required=True, type=click.Path(dir_okay=False))
@click.option(
    "--agent", default="claude-code", show_default=True, help="The agent id to decide for."
)
@click.option(
    "--home",
    default=".warden",
    envvar="WARDEN_HOME",
    show_default=True,
    help="The warden state directory (audit log, approvals, kills).",
)
def claude_code(policy_path: str, agent: str, home: str) -> None:
    """Read a PreToolUse event on stdin; print allow, deny or ask for Claude Code."""
    from warden.governor import Governor
    from warden.policy import load_policy

    try:
        event = _event()
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        answer("deny", f"warden: unreadable hook event: {exc}")
        return
    try:
        gov = Governor(load_policy(policy_path), home=Path(home))
    except PolicyError as exc:
        answer("deny", f"warden: the policy did not load: {exc}")
        return
    except WardenError as exc:
        answer("deny", f"warden: cannot start: {exc}")
        return
    session = event.get("session_id")
    try:
        action = Action(
            tool=tool_name(event["tool_name"]),
            args=event.get("tool_input") or {},
            agent={"id": agent},
            session=session if isinstance(session, str) else None,
            context={
                "claude_code": {"cwd": event.get("cwd"), "tool_use_id": event.get("tool_use_id")}
            },
        )
    except InvalidActionError as exc:
        answer("deny", f"warden: {exc}")
        return
    decision = gov.check(action)
    if gov.audit is not None:
        gov.audit.flush()
    reasons = "; ".join(decision.reasons) or decision.effect.value
    if decision.effect is Effect.ALLOW:
        answer("allow", f"warden: {reasons}")
    elif decision.effect is Effect.REQUIRE_APPROVAL:
        answer("ask", f"warden: approval required ({decision.approval_id}): {reasons}")
    else:
        answer("deny", f"warden: denied: {reasons}")
