"""Warnings about policies that load but probably do not say what their author meant."""

from __future__ import annotations

from warden._re import compile_glob, glob_literal_prefix, is_literal
from warden.action import KINDS, Effect
from warden.policy._diagnostics import Diagnostic
from warden.policy.load import PolicyDocument, RuleSpec

__all__ = ["lint"]


def _covers(p: str, q: str) -> bool:
    """True when glob ``p`` provably matches every string glob ``q`` matches."""
    if p in ("*", q):
        return True
    if is_literal(q):
        return compile_glob(p).search(q) is not None
    head = glob_literal_prefix(p)
    return p == head + "*" and glob_literal_prefix(q).startswith(head)


def _scope_covers(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None or "*" in a:
        return True
    if b is None:
        return False
    return all(any(_covers(p, q) for p in a) for q in b)


def _kinds_cover(a: tuple[str, ...] | None, b: tuple[str, ...] | None) -> bool:
    if a is None or set(a) >= KINDS:
        return True
    return b is not None and set(b) <= set(a)


def _warn(
    doc: PolicyDocument, rule: RuleSpec | None, code: str, message: str, hint: str | None = None
) -> Diagnostic:
    line, col = (rule.line, rule.col) if rule else (0, 0)
    return Diagnostic(doc.file, line, col, code, message, "warning", hint)


def lint(doc: PolicyDocument) -> list[Diagnostic]:
    """Return warnings for ``doc``, sorted by location."""
    out: list[Diagnostic] = []
    if doc.default is Effect.ALLOW:
        out.append(
            _warn(
                doc,
                None,
                "lint_default_allow",
                "the policy allows by default: any action no rule denies is allowed",
                "write `default: deny` and allow what agents need",
            )
        )
    blanket_denies = [r for r in doc.rules if r.effect is Effect.DENY and r.when is None]
    for rule in doc.rules:
        if rule.when is not None and rule.when.constant:
            out.append(
                _warn(
                    doc,
                    rule,
                    "lint_constant_condition",
                    f"the condition of rule `{rule.id}` does not depend on the action",
                )
            )
        if (
            rule.effect is Effect.ALLOW
            and rule.when is None
            and rule.agents is None
            and _scope_covers(rule.tools, None)
            and rule.kinds is None
        ):
            out.append(
                _warn(
                    doc,
                    rule,
                    "lint_broad_allow",
                    f"rule `{rule.id}` allows every action of every agent",
                    "scope it with `tool`, `agent`, `kind` or `when`",
                )
            )
        if rule.effect is not Effect.DENY:
            for deny in blanket_denies:
                if (
                    _scope_covers(deny.tools, rule.tools)
                    # a deny with `agent` patterns never admits an agent without an id
                    and (
                        deny.agents is None
                        or (rule.agents is not None and _scope_covers(deny.agents, rule.agents))
                    )
                    and _kinds_cover(deny.kinds, rule.kinds)
                ):
                    out.append(
                        _warn(
                            doc,
                            rule,
                            "lint_unreachable_rule",
                            f"rule `{rule.id}` can never apply: deny rule `{deny.id}` (line "
                            f"{deny.line}) has no condition and covers every action it could match",
                            "deny wins over every other effect, whatever the rule order",
                        )
                    )
                    break
        for field, patterns in (("tool", rule.tools), ("agent", rule.agents)):
            if patterns is None:
                continue
            for i, q in enumerate(patterns):
                others = [p for j, p in enumerate(patterns) if j != i]
                if (
                    any(
                        _covers(p, q) and (p != q or j < i)
                        for j, p in enumerate(patterns)
                        if j != i
                    )
                    and others
                ):
                    out.append(
                        _warn(
                            doc,
                            rule,
                            "lint_redundant_pattern",
                            f"`{field}` pattern `{q}` of rule `{rule.id}` is already "
                            "covered by another pattern of the same rule",
                        )
                    )
    out.sort()
    return out
