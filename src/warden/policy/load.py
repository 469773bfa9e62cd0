"""Stage 1: a policy file (YAML) to a checked PolicyDocument, collecting every error.

The document schema is written down in docs/policy-language.md. This stage
checks structure and types field by field, compiles each ``when`` condition
(:mod:`warden.policy.expr`), and reports problems as :class:`Diagnostic` values
sorted by location; it never stops at the first.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from warden._re import PatternError, compile_glob
from warden.action import KINDS, Effect
from warden.policy._diagnostics import Diagnostic
from warden.policy._yaml import YNode, parse_yaml
from warden.policy.expr import CompiledExpr, ExprCompileError, compile_expr
from warden.policy.flowspec import NO_FLOWS, FlowSpec, parse_flows
from warden.policy.sections import (
    DEFAULT_MCP,
    NO_SRE,
    AgentSpec,
    BudgetSpec,
    MCPSpec,
    SRESpec,
    ToolSpec,
    check_id,
    parse_agents,
    parse_budgets,
    parse_mcp,
    parse_sre,
    parse_tools,
)

__all__ = [
    "API_VERSION",
    "MAX_FILE_BYTES",
    "PolicyDocument",
    "RuleSpec",
    "check_tree",
    "load_file",
    "parse_policy",
    "read_text",
]

API_VERSION: Final = "warden/v1"
MAX_FILE_BYTES: Final = 32 << 20
_TOP_FIELDS: Final = (
    "apiVersion",
    "kind",
    "name",
    "description",
    "default",
    "rules",
    "tools",
    "agents",
    "budgets",
    "sre",
    "mcp",
    "flows",
)
_RULE_FIELDS: Final = (
    "id",
    "description",
    "tool",
    "agent",
    "kind",
    "when",
    "effect",
    "reason",
    "redact",
)
_DEFAULTS: Final = (Effect.ALLOW.value, Effect.DENY.value)
_EFFECTS: Final = tuple(e.value for e in Effect)


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One rule as written, with its condition compiled."""

    id: str
    effect: Effect
    reason: str
    tools: tuple[str, ...] | None
    agents: tuple[str, ...] | None
    kinds: tuple[str, ...] | None
    when: CompiledExpr | None
    description: str | None
    line: int
    col: int
    position: int
    redact: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PolicyDocument:
    """A policy that loaded without errors; ``hash`` is ``sha256:`` + hex of the file bytes."""

    name: str
    default: Effect
    rules: tuple[RuleSpec, ...]
    file: str
    hash: str
    description: str | None = None
    tools: tuple[ToolSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    budgets: tuple[BudgetSpec, ...] = ()
    sre: SRESpec = NO_SRE
    mcp: MCPSpec = DEFAULT_MCP
    flows: FlowSpec = NO_FLOWS


def read_text(path: str | os.PathLike[str]) -> tuple[str | None, bytes, list[Diagnostic]]:
    """Read a UTF-8 file for parsing; problems come back as diagnostics, never raised."""
    name = str(path)
    try:
        size = os.stat(path).st_size
        if size > MAX_FILE_BYTES:
            return (
                None,
                b"",
                [
                    Diagnostic(
                        name,
                        0,
                        0,
                        "policy_file_error",
                        f"file is larger than {MAX_FILE_BYTES >> 20} MiB",
                    )
                ],
            )
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None, b"", [Diagnostic(name, 0, 0, "policy_file_error", "no such file")]
    except IsADirectoryError:
        return None, b"", [Diagnostic(name, 0, 0, "policy_file_error", "is a directory")]
    except OSError as exc:
        return (
            None,
            b"",
            [Diagnostic(name, 0, 0, "policy_file_error", (exc.strerror or str(exc)).lower())],
        )
    try:
        return data.decode("utf-8"), data, []
    except UnicodeDecodeError as exc:
        return (
            None,
            data,
            [
                Diagnostic(
                    name, 0, 0, "policy_file_error", f"file is not valid UTF-8 (byte {exc.start})"
                )
            ],
        )


class _Checker:
    def __init__(self, filename: str) -> None:
        self.file = filename
        self.diags: list[Diagnostic] = []

    def err(self, node: YNode, code: str, message: str, hint: str | None = None) -> None:
        self.diags.append(Diagnostic(self.file, node.line, node.col, code, message, hint=hint))

    def fields(self, node: YNode, allowed: tuple[str, ...], what: str) -> None:
        for key, (knode, _) in node.items.items():
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean `{close[0]}`?"
                    if close
                    else "known fields: " + ", ".join(allowed)
                )
                self.err(knode, "policy_unknown_field", f"unknown field `{key}` in {what}", hint)

    def string(self, node: YNode, what: str, *, allow_empty: bool = False) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str):
            self.err(node, "policy_type_error", f"{what} must be a string")
            return None
        if not allow_empty and not node.value.strip():
            self.err(node, "policy_invalid_value", f"{what} must not be empty")
            return None
        return node.value

    def choice(self, node: YNode, what: str, choices: tuple[str, ...]) -> str | None:
        value = node.value if node.kind == "scalar" else None
        if not isinstance(value, str) or value not in choices:
            shown = f"`{value}`" if node.kind == "scalar" else f"a {node.kind}"
            # a list, map, number, boolean or null is the wrong type, not a wrong word
            code = "policy_invalid_value" if isinstance(value, str) else "policy_type_error"
            self.err(node, code, f"{what} must be one of {', '.join(choices)}, not {shown}")
            return None
        return value

    def patterns(
        self, node: YNode, what: str, check: Callable[[YNode, str], bool] | None = None
    ) -> tuple[str, ...] | None:
        items = node.seq if node.kind == "seq" else [node]
        if node.kind == "seq" and not items:
            self.err(
                node,
                "policy_invalid_value",
                f"{what} must not be an empty list",
                "leave the field out to match any value",
            )
            return None
        out: list[str] = []
        ok = True
        for item in items:
            value = self.string(item, f"each {what} pattern")
            if value is None or (check is not None and not check(item, value)):
                ok = False
                continue
            out.append(value)
        return tuple(out) if ok else None


def parse_policy(
    text: str, filename: str = "<policy>", raw: bytes | None = None
) -> tuple[PolicyDocument | None, list[Diagnostic]]:
    """Check a policy's text; return the document (None on any error) and all diagnostics."""
    tree, diags = parse_yaml(text, filename)
    if tree is None:
        return None, diags
    digest = hashlib.sha256(raw if raw is not None else text.encode("utf-8")).hexdigest()
    return check_tree(tree, filename, "sha256:" + digest, diags)


def check_tree(
    tree: YNode, filename: str, content_hash: str, diags: list[Diagnostic] | None = None
) -> tuple[PolicyDocument | None, list[Diagnostic]]:
    """Check an already parsed policy mapping (for policies embedded in test files)."""
    ck = _Checker(filename)
    ck.diags.extend(diags or ())
    if tree.kind != "map":
        ck.err(
            tree,
            "policy_type_error",
            "a policy must be a mapping with `apiVersion`, `kind`, `default` and `rules`",
        )
        return None, ck.diags
    top = tree.items
    ck.fields(tree, _TOP_FIELDS, "the policy")

    def need(key: str) -> YNode | None:
        if key not in top:
            ck.err(tree, "policy_missing_field", f"missing required field `{key}`")
            return None
        return top[key][1]

    node = need("apiVersion")
    if (
        node is not None
        and ck.string(node, "`apiVersion`") is not None
        and (node.value != API_VERSION)
    ):
        ck.err(
            node,
            "policy_invalid_value",
            f"unsupported `apiVersion` `{node.value}`; this warden reads `{API_VERSION}`",
        )
    node = need("kind")
    if node is not None and ck.string(node, "`kind`") is not None and node.value != "Policy":
        ck.err(node, "policy_invalid_value", f"`kind` must be `Policy`, not `{node.value}`")
    name = Path(filename).stem
    if "name" in top:
        name = ck.string(top["name"][1], "`name`") or name
    description = None
    if "description" in top:
        description = ck.string(top["description"][1], "`description`", allow_empty=True)
    default: str | None = None
    if (node := need("default")) is not None:
        default = ck.choice(node, "`default`", _DEFAULTS)
    rules: list[RuleSpec] = []
    if "rules" in top:
        rnode = top["rules"][1]
        if rnode.kind == "seq":
            seen: dict[str, int] = {}
            for pos, item in enumerate(rnode.seq):
                rule = _rule(ck, item, pos, seen)
                if rule is not None:
                    rules.append(rule)
        elif not (rnode.kind == "scalar" and rnode.value is None):
            ck.err(rnode, "policy_type_error", "`rules` must be a list")
    else:
        ck.err(
            tree,
            "policy_missing_field",
            "missing required field `rules`",
            "write `rules: []` for a policy that only applies its default",
        )
    tools = parse_tools(ck, top["tools"][1]) if "tools" in top else ()
    agents = parse_agents(ck, top["agents"][1]) if "agents" in top else ()
    budgets = parse_budgets(ck, top["budgets"][1]) if "budgets" in top else ()
    sre = parse_sre(ck, top["sre"][1]) if "sre" in top else NO_SRE
    mcp = parse_mcp(ck, top["mcp"][1]) if "mcp" in top else DEFAULT_MCP
    flows = parse_flows(ck, top["flows"][1]) if "flows" in top else NO_FLOWS
    ck.diags.sort()
    if any(d.severity == "error" for d in ck.diags) or default is None:
        return None, ck.diags
    doc = PolicyDocument(
        name,
        Effect(default),
        tuple(rules),
        filename,
        content_hash,
        description,
        tools=tools,
        agents=agents,
        budgets=budgets,
        sre=sre,
        mcp=mcp,
        flows=flows,
    )
    return doc, ck.diags


def _rule(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> RuleSpec | None:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "each rule must be a mapping")
        return None
    errors_before = len(ck.diags)
    f = node.items
    rid = check_id(ck, node, pos, seen, "rule")
    ck.fields(node, _RULE_FIELDS, f"rule {rid}")
    effect: str | None = None
    if "effect" not in f:
        ck.err(node, "policy_missing_field", f"rule {rid} is missing required field `effect`")
    else:
        effect = ck.choice(f["effect"][1], "`effect`", _EFFECTS)
    tools = agents = kinds = None

    def valid_glob(item: YNode, value: str) -> bool:
        if "[" not in value:  # only a character class can make a glob invalid
            return True
        try:
            compile_glob(value)
        except PatternError as exc:
            ck.err(item, "expr_regex_error", f"invalid glob pattern `{value}`: {exc}")
            return False
        return True

    if "tool" in f:
        tools = ck.patterns(f["tool"][1], "`tool`", valid_glob)
    if "agent" in f:
        agents = ck.patterns(f["agent"][1], "`agent`", valid_glob)
    if "kind" in f:

        def known_kind(item: YNode, value: str) -> bool:
            if value not in KINDS:
                ck.err(
                    item,
                    "policy_invalid_value",
                    f"`kind` must be one of {', '.join(sorted(KINDS))}, not `{value}`",
                )
                return False
            return True

        kinds = ck.patterns(f["kind"][1], "`kind`", known_kind)
    when: CompiledExpr | None = None
    if "when" in f:
        wnode = f["when"][1]
        if wnode.kind == "scalar" and type(wnode.value) is bool:
            ck.err(
                wnode,
                "policy_type_error",
                "`when` must be a condition string",
                f'write `when: "{str(wnode.value).lower()}"`, or leave `when` out',
            )
        else:
            source = ck.string(wnode, "`when`")
            if source is not None:
                when = _condition(ck, wnode, source)
    reason = None
    if "reason" in f:
        reason = ck.string(f["reason"][1], "`reason`")
    description = None
    if "description" in f:
        description = ck.string(f["description"][1], "`description`", allow_empty=True)
    redact: tuple[str, ...] | None = ()
    if "redact" in f:
        redact = ck.patterns(f["redact"][1], "`redact`", _arg_name(ck))
    if len(ck.diags) > errors_before or effect is None or "id" not in f or redact is None:
        return None
    rule_id = f["id"][1].value
    return RuleSpec(
        id=rule_id,
        effect=Effect(effect),
        reason=reason or f"rule `{rule_id}`",
        tools=tools,
        agents=agents,
        kinds=kinds,
        when=when,
        description=description,
        line=node.line,
        col=node.col,
        position=pos,
        redact=tuple(dict.fromkeys(redact)),
    )


def _arg_name(ck: _Checker) -> Callable[[YNode, str], bool]:
    def check(item: YNode, value: str) -> bool:
        if not value.strip() or value != value.strip():
            ck.err(
                item,
                "policy_invalid_value",
                f"`redact` names an argument; `{value}` is not an argument name",
            )
            return False
        return True

    return check


def _condition(ck: _Checker, node: YNode, source: str) -> CompiledExpr | None:
    try:
        return compile_expr(source)
    except ExprCompileError as exc:
        cols = _value_columns(node, source)
        for issue in exc.issues:
            if cols is not None and issue.line == 1:
                i = issue.col - 1  # may point just past the end (unexpected end of input)
                col = (
                    cols[i]
                    if i < len(cols)
                    else (cols[-1] if cols else node.col) + i - len(cols) + 1
                )
                line = node.line
            else:  # the scalar spans lines or was folded: point at the scalar itself
                line, col = node.line, node.col
            ck.diags.append(
                Diagnostic(ck.file, line, col, issue.code, issue.message, hint=issue.hint)
            )
        return None


def _value_columns(node: YNode, source: str) -> list[int] | None:
    """The file column of each character of a one-line scalar's value, or None if unknown."""
    if node.end_line != node.line:
        return None
    if node.style in (None, ""):
        return [node.col + i for i in range(len(source))] if node.span == len(source) else None
    if node.style not in ("'", '"'):
        return None
    if node.raw is None:
        if node.span != len(source) + 2:
            return None
        return [node.col + 1 + i for i in range(len(source))]
    raw, cols, i = node.raw, [], 1
    while i < len(raw) - 1:
        cols.append(node.col + i)
        if node.style == "'" and raw[i] == "'":
            i += 2  # '' is one quote
        elif node.style == '"' and raw[i] == "\\":
            i += 2 + {"x": 2, "u": 4, "U": 8}.get(raw[i + 1 : i + 2], 0)
        else:
            i += 1
    return cols if len(cols) == len(source) else None


def load_file(path: str | os.PathLike[str]) -> tuple[PolicyDocument | None, list[Diagnostic]]:
    """Read and check one policy file."""
    text, raw, diags = read_text(path)
    if text is None:
        return None, diags
    return parse_policy(text, str(path), raw)
