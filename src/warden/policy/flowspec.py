"""The ``flows:`` section of a policy: sources, egress allowlists, stores and sequence rules.

Semantics in docs/flows.md ("The `flows` section"); syntax in
docs/policy-language.md. Checked like the rest of the document: every problem
is a located diagnostic, none stops the others.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from warden.action import Effect
from warden.policy.sections import _Fields, _glob_key, check_id

if TYPE_CHECKING:
    from warden.policy._yaml import YNode
    from warden.policy.load import _Checker

__all__ = ["NO_FLOWS", "EgressSpec", "FlowSpec", "SequenceSpec", "parse_flows"]

_LABEL: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/-]{0,127}")
_ARG_PATH: Final = re.compile(r"[^.\s\[\]]+(?:\.[^.\s\[\]]+)*")
_FIELDS: Final = (
    "sources",
    "integrity",
    "egress",
    "stores",
    "sequences",
    "scan_arguments",
    "redact_results",
)
_SEQUENCE_FIELDS: Final = ("id", "description", "after", "tools", "effect", "reason")
_REDACTABLE: Final = ("secret", "pii")


@dataclass(frozen=True, slots=True)
class EgressSpec:
    """Tools matching ``pattern`` send data to the destinations in arguments ``to``.

    ``allow`` is the allowlist of destination globs; ``None`` means any
    destination (the tool is still egress for sequence rules).
    """

    pattern: str
    to: tuple[str, ...]
    allow: tuple[str, ...] | None
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class SequenceSpec:
    """Once the session touched a label in ``after``, calls of ``tools`` get ``effect``.

    ``tools`` is ``None`` for the word ``egress``: every egress tool.
    """

    id: str
    after: tuple[str, ...]
    tools: tuple[str, ...] | None
    effect: Effect
    reason: str
    line: int
    col: int


@dataclass(frozen=True, slots=True)
class FlowSpec:
    """A policy's ``flows:`` section; ``present`` is false when the policy has none."""

    sources: tuple[tuple[str, tuple[str, ...]], ...] = ()
    integrity: tuple[str, ...] = ()
    egress: tuple[EgressSpec, ...] = ()
    stores: tuple[str, ...] = ()
    sequences: tuple[SequenceSpec, ...] = ()
    scan_arguments: bool = True
    redact_results: tuple[str, ...] = ()
    present: bool = False


NO_FLOWS: Final = FlowSpec()


def _labels(ck: _Checker, node: YNode, what: str) -> tuple[str, ...] | None:
    """A list of labels (an empty list is allowed: "no labels")."""
    items = node.seq if node.kind == "seq" else [node]
    out: list[str] = []
    ok = True
    for item in items:
        value = ck.string(item, f"each label of {what}")
        if value is None:
            ok = False
        elif not _LABEL.fullmatch(value):
            ck.err(
                item,
                "policy_invalid_value",
                f"`{value}` in {what} is not a valid label",
                "labels are 1-128 letters, digits and `_.:@/-`, starting with a letter or digit",
            )
            ok = False
        else:
            out.append(value)
    return tuple(dict.fromkeys(out)) if ok else None


def _sources(ck: _Checker, node: YNode) -> tuple[tuple[str, tuple[str, ...]], ...]:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`flows.sources` must map tool globs to label lists")
        return ()
    out = []
    for key, (knode, vnode) in node.items.items():
        if not _glob_key(ck, knode, key, "`flows.sources`"):
            continue
        labels = _labels(ck, vnode, f"`flows.sources` entry `{key}`")
        if labels is not None:
            out.append((key, labels))
    return tuple(out)


def _egress(ck: _Checker, node: YNode) -> tuple[EgressSpec, ...]:
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`flows.egress` must map tool globs to `{to, allow}`")
        return ()
    out = []
    for key, (knode, vnode) in node.items.items():
        what = f"`flows.egress` entry `{key}`"
        if not _glob_key(ck, knode, key, "`flows.egress`"):
            continue
        if vnode.kind != "map":
            ck.err(vnode, "policy_type_error", f"{what} must be a mapping with `to`")
            continue
        ck.fields(vnode, ("to", "allow"), what)
        if "to" not in vnode.items:
            ck.err(
                vnode,
                "policy_missing_field",
                f"{what} is missing required field `to`",
                "name the arguments that hold the destinations, e.g. `to: [to, cc]`",
            )
            continue

        def arg_path(item: YNode, value: str, what: str = what) -> bool:
            if _ARG_PATH.fullmatch(value) is None:
                ck.err(
                    item,
                    "policy_invalid_value",
                    f"`to` of {what}: `{value}` is not an argument name or dotted path",
                )
                return False
            return True

        to = ck.patterns(vnode.items["to"][1], f"`to` of {what}", arg_path)
        allow = _Fields(ck, vnode, what).globs("allow")
        if to is not None and ("allow" not in vnode.items or allow is not None):
            out.append(EgressSpec(key, to, allow, knode.line, knode.col))
    return tuple(out)


def _sequence(ck: _Checker, node: YNode, pos: int, seen: dict[str, int]) -> SequenceSpec | None:
    before = len(ck.diags)
    name = check_id(ck, node, pos, seen, "sequence rule")
    what = f"sequence rule {name}"
    ck.fields(node, _SEQUENCE_FIELDS, what)
    items = node.items
    after: tuple[str, ...] | None = None
    if "after" not in items:
        ck.err(node, "policy_missing_field", f"{what} is missing required field `after`")
    else:
        after = _labels(ck, items["after"][1], f"`after` of {what}")
        if after == ():
            ck.err(items["after"][1], "policy_invalid_value", f"`after` of {what} is empty")
    tools: tuple[str, ...] | None = None
    if "tools" not in items:
        ck.err(
            node,
            "policy_missing_field",
            f"{what} is missing required field `tools`",
            "write `tools: egress` for every egress tool, or tool globs",
        )
    elif not (items["tools"][1].kind == "scalar" and items["tools"][1].value == "egress"):
        tools = _Fields(ck, node, what).globs("tools")
    effect = "deny"
    if "effect" in items:
        effect = (
            ck.choice(items["effect"][1], f"`effect` of {what}", ("deny", "require_approval"))
            or effect
        )
    reason = ""
    if "reason" in items:
        reason = ck.string(items["reason"][1], f"`reason` of {what}") or ""
    if "description" in items:
        ck.string(items["description"][1], f"`description` of {what}", allow_empty=True)
    if len(ck.diags) > before or after is None:
        return None
    rule_id = items["id"][1].value
    default_reason = f"the session has touched data labelled {', '.join(after)}"
    return SequenceSpec(
        rule_id, after, tools, Effect(effect), reason or default_reason, node.line, node.col
    )


def parse_flows(ck: _Checker, node: YNode) -> FlowSpec:
    if node.kind == "scalar" and node.value is None:
        return FlowSpec(present=True)
    if node.kind != "map":
        ck.err(node, "policy_type_error", "`flows` must be a mapping")
        return FlowSpec(present=True)
    ck.fields(node, _FIELDS, "`flows`")
    items = node.items
    sources = _sources(ck, items["sources"][1]) if "sources" in items else ()
    integrity: tuple[str, ...] = ()
    if "integrity" in items:
        integrity = _labels(ck, items["integrity"][1], "`flows.integrity`") or ()
    egress = _egress(ck, items["egress"][1]) if "egress" in items else ()
    f = _Fields(ck, node, "`flows`")
    stores = f.globs("stores") or ()
    sequences: list[SequenceSpec] = []
    if "sequences" in items:
        snode = items["sequences"][1]
        if snode.kind == "seq":
            seen: dict[str, int] = {}
            for pos, item in enumerate(snode.seq):
                if item.kind != "map":
                    ck.err(item, "policy_type_error", "each of `flows.sequences` must be a mapping")
                    continue
                spec = _sequence(ck, item, pos, seen)
                if spec is not None:
                    sequences.append(spec)
        elif not (snode.kind == "scalar" and snode.value is None):
            ck.err(snode, "policy_type_error", "`flows.sequences` must be a list")
    redact: tuple[str, ...] = ()
    if "redact_results" in items:
        rnode = items["redact_results"][1]
        chosen = []
        for item in rnode.seq if rnode.kind == "seq" else [rnode]:
            value = ck.choice(item, "each of `flows.redact_results`", _REDACTABLE)
            if value is not None:
                chosen.append(value)
        redact = tuple(dict.fromkeys(chosen))
    return FlowSpec(
        sources=sources,
        integrity=integrity,
        egress=egress,
        stores=stores,
        sequences=tuple(sequences),
        scan_arguments=f.flag("scan_arguments", True),
        redact_results=redact,
        present=True,
    )
