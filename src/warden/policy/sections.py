"""The runtime sections of a policy: ``tools:``, ``agents:`` and ``budgets:``.

Semantics in docs/runtime.md ("Rings", "Budgets"); syntax in
docs/policy-language.md ("Runtime sections"). Checked like the rest of the
document: every problem is a located diagnostic, none stops the others.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from warden._re import PatternError, compile_glob

if TYPE_CHECKING:
    from warden.policy._yaml import YNode
    from warden.policy.load import _Checker

__all__ = ["SCOPES", "AgentSpec", "BudgetSpec", "ToolSpec", "check_id", "parse_duration"]

SCOPES: Final = ("global", "agent", "session", "tool")
_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_DURATION: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_BUDGET_FIELDS: Final = ("id", "scope", "tool", "calls", "per", "tokens", "cost", "description")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What calling tools that match ``pattern`` needs: ``ring`` or lower; ``exec`` = runs code."""

    pattern: str
    ring: int
    exec: bool
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class AgentSpec:
    """The operator's ring for agents whose id matches ``pattern``."""

    pattern: str
    ring: int
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    """One declared budget: limits per value of ``scope`` for calls matching ``tools``."""

    id: str
    scope: tuple[str, ...]
    tools: tuple[str, ...] | None
    calls: int | None
    per: float | None
    tokens: int | None
    cost: float | None
    line: int
    col: int


def check_id(ck: _Checker, node: YNode, pos: int, seen: dict[str, int], what: str) -> str:
    """Check the `id` of the ``pos``-th ``what`` (rule, budget); how to name it in messages."""
    f = node.items
    name = f"#{pos + 1}"
    if "id" not in f:
        ck.err(node, "policy_missing_field", f"{what} {name} is missing required field `id`")
        return name
    idnode = f["id"][1]
    value = ck.string(idnode, f"{what} `id`")
    if value is None:
        return name
    if not _ID.fullmatch(value):
        ck.err(
            idnode,
            "policy_invalid_value",
            f"{what} id `{value}` is not valid",
            "ids are 1-128 letters, digits and `_.:@/-`, starting with a letter or digit",
        )
    elif value in seen:
        ck.err(
            idnode,
            "policy_duplicate_id",
            f"duplicate {what} id `{value}` (first at line {seen[value]})",
        )
    else:
        seen[value] = idnode.line
    return f"`{value}`"


def parse_duration(text: str) -> float | None:
    """Seconds in ``500ms``, ``30s``, ``5m``, ``1h``, ``1d``; None when it is not one."""
    m = _DURATION.fullmatch(text.strip())
    if not m:
        return None
    seconds = float(m.group(1)) * _UNITS[m.group(2)]
    return seconds if seconds > 0 else None


def _ring(ck: _Checker, node: YNode, what: str) -> int | None:
    if node.kind != "scalar" or type(node.value) is not int:
        ck.err(node, "policy_type_error", f"{what} must be an integer from 0 to 3")
        return None
    if not 0 <= node.value <= 3:
        ck.err(node, "policy_invalid_value", f"{what} must be an integer from 0 to 3")
        return None
    return int(node.value)


def _glob_key(ck: _Checker, knode: YNode, key: str, what: str) -> bool:
    if not key.strip():
        ck.err(knode, "policy_invalid_value", f"an empty pattern in {what}")
        return False
    try:
        compile_glob(key)
    except PatternError as exc:
        ck.err(knode, "expr_regex_error", f"invalid glob pattern `{key}`: {exc}")
        return False
    return True


def parse_tools(ck: _Checker, node: YNode) -> tuple[ToolSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`tools` must map tool globs to `{ring, exec}`")
        return ()
    out: list[ToolSpec] = []
    for key, (knode, vnode) in node.items.items():
        what = f"`tools` entry `{key}`"
        if not _glob_key(ck, knode, key, "`tools`"):
            continue
        if vnode.kind != "map":
            ck.err(vnode, "policy_type_error", f"{what} must be a mapping with `ring` or `exec`")
            continue
        ck.fields(vnode, ("ring", "exec"), what)
        ring: int | None = 3
        if "ring" in vnode.items:
            ring = _ring(ck, vnode.items["ring"][1], f"`ring` of {what}")
        is_exec: bool | None = False
        if "exec" in vnode.items:
            enode = vnode.items["exec"][1]
            if enode.kind != "scalar" or type(enode.value) is not bool:
                ck.err(enode, "policy_type_error", f"`exec` of {what} must be true or false")
                is_exec = None
            else:
                is_exec = enode.value
        if ring is not None and is_exec is not None:
            out.append(ToolSpec(key, ring, is_exec, knode.line, knode.col))
    return tuple(out)


def parse_agents(ck: _Checker, node: YNode) -> tuple[AgentSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`agents` must map agent id globs to `{ring}`")
        return ()
    out: list[AgentSpec] = []
    for key, (knode, vnode) in node.items.items():
        what = f"`agents` entry `{key}`"
        if not _glob_key(ck, knode, key, "`agents`"):
            continue
        if vnode.kind != "map":
            ck.err(vnode, "policy_type_error", f"{what} must be a mapping with `ring`")
            continue
        ck.fields(vnode, ("ring",), what)
        if "ring" not in vnode.items:
            ck.err(vnode, "policy_missing_field", f"{what} is missing required field `ring`")
            continue
        ring = _ring(ck, vnode.items["ring"][1], f"`ring` of {what}")
        if ring is not None:
            out.append(AgentSpec(key, ring, knode.line, knode.col))
    return tuple(out)


def parse_budgets(ck: _Checker, node: YNode) -> tuple[BudgetSpec, ...]:
    if node.kind == "scalar" and node.value is None:
        return ()
    if node.kind != "seq":
        ck.err(node, "policy_type_error", "`budgets` must be a list")
        return ()
    out: list[BudgetSpec] = []
    seen: dict[str, int] = {}
    for pos, item in enumerate(node.seq):
        spec = _budget(ck, item, pos, seen)
        if spec is not None:
            out.append(spec)
    return tuple(out)


def _budget(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> BudgetSpec | None:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "each budget must be a mapping")
        return None
    before = len(ck.diags)
    f = node.items
    bid = check_id(ck, node, pos, seen, "budget")
    what = f"budget {bid}"
    ck.fields(node, _BUDGET_FIELDS, what)
    if "description" in f:
        ck.string(f["description"][1], f"`description` of {what}", allow_empty=True)
    scope: tuple[str, ...] | None = ("global",)
    if "scope" in f:
        scope = _scope(ck, f["scope"][1], what)
    tools = None
    if "tool" in f:

        def valid(item: YNode, value: str) -> bool:
            return _glob_key(ck, item, value, f"`tool` of {what}")

        tools = ck.patterns(f["tool"][1], f"`tool` of {what}", valid)
    calls = _count(ck, f, "calls", what)
    tokens = _count(ck, f, "tokens", what)
    cost: float | None = None
    if "cost" in f:
        cnode = f["cost"][1]
        v: Any = cnode.value if cnode.kind == "scalar" else None
        if type(v) not in (int, float):
            ck.err(cnode, "policy_type_error", f"`cost` of {what} must be a positive number")
        elif not math.isfinite(v) or v <= 0:
            ck.err(cnode, "policy_invalid_value", f"`cost` of {what} must be a positive number")
        else:
            cost = float(v)
    per: float | None = None
    if "per" in f:
        pnode = f["per"][1]
        text = pnode.value if pnode.kind == "scalar" and isinstance(pnode.value, str) else None
        per = parse_duration(text) if text is not None else None
        if text is None:
            ck.err(
                pnode,
                "policy_type_error",
                f"`per` of {what} must be a duration such as `30s`, `5m`, `1h` or `1d`",
            )
        elif per is None:
            ck.err(
                pnode,
                "policy_invalid_value",
                f"`per` of {what} must be a duration such as `30s`, `5m`, `1h` or `1d`",
            )
        elif "calls" not in f:
            ck.err(pnode, "policy_invalid_value", f"`per` of {what} needs `calls` (a rate)")
    if "calls" not in f and "tokens" not in f and "cost" not in f:
        ck.err(
            node,
            "policy_missing_field",
            f"{what} sets no limit",
            "give at least one of `calls`, `tokens` or `cost`",
        )
    if len(ck.diags) > before or "id" not in f or scope is None:
        return None
    return BudgetSpec(
        id=f["id"][1].value,
        scope=scope,
        tools=tools,
        calls=calls,
        per=per,
        tokens=tokens,
        cost=cost,
        line=node.line,
        col=node.col,
    )


def _scope(ck: _Checker, node: YNode, what: str) -> tuple[str, ...] | None:
    items = node.seq if node.kind == "seq" else [node]
    out: list[str] = []
    for item in items:
        value = ck.choice(item, f"`scope` of {what}", SCOPES)
        if value is None:
            return None
        out.append(value)
    if not out:
        ck.err(node, "policy_invalid_value", f"`scope` of {what} must not be empty")
        return None
    if "global" in out and len(out) > 1:
        ck.err(node, "policy_invalid_value", f"`scope` of {what}: `global` stands alone")
        return None
    if len(set(out)) != len(out):
        ck.err(node, "policy_invalid_value", f"`scope` of {what} repeats a value")
        return None
    return tuple(out)


def _count(ck: _Checker, f: dict[str, tuple[YNode, YNode]], name: str, what: str) -> int | None:
    if name not in f:
        return None
    node = f[name][1]
    if node.kind != "scalar" or type(node.value) is not int:
        ck.err(node, "policy_type_error", f"`{name}` of {what} must be a positive integer")
        return None
    if node.value < 1:
        ck.err(node, "policy_invalid_value", f"`{name}` of {what} must be a positive integer")
        return None
    return int(node.value)
