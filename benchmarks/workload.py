"""Neutral benchmark workload shared by the warden benchmark and the AGT comparison runner.

Stdlib only and independent of warden, so that the same rules and actions can be fed to
any engine (the AGT runner imports this file by path inside a venv without warden).

Workload for size ``n``:

* ``n`` tool-specific rules. Rule ``i`` (0-based) matches tools globbing ``tool{i}.*``, has
  the condition ``args.amount > i * 10`` and the effect ``deny`` when ``i % 3 == 0`` and
  ``allow`` otherwise.
* One trailing global rule ``low-trust``: any tool, ``agent.trust < 100`` -> ``deny``.
* The policy's default effect is ``deny``.

Named actions (see :func:`make_actions`) are built so that at most one rule can match each
of them, which makes the expected decision independent of rule-combining semantics
(first-match, deny-overrides, priority order ...):

* ``allow_hit``: the tool of the allow rule nearest to the middle of the list, with an
  amount above its threshold -> ``allow``.
* ``deny_hit``: the tool of the deny rule (``i % 3 == 0``) nearest to the middle, with an
  amount above its threshold -> ``deny``.
* ``default``: tool ``unknown.op``, which no tool-specific rule matches -> default ``deny``.

For ``n == 1`` the only rule is ``r0`` (a deny rule), so both ``allow_hit`` and ``deny_hit``
target ``r0`` and the expected effect of ``allow_hit`` is ``deny`` there. Use
:func:`expected_effects` rather than hard-coding expectations.
"""

from __future__ import annotations

from typing import Any, Final

SIZES: Final[tuple[int, ...]] = (1, 10, 100, 1000, 10000)
DEFAULT_EFFECT: Final[str] = "deny"
ACTION_NAMES: Final[tuple[str, ...]] = ("allow_hit", "deny_hit", "default")

AGENT: Final[dict[str, Any]] = {"id": "did:key:z6MkBench", "trust": 700, "ring": 2}
SESSION: Final[str] = "s1"
DEFAULT_TOOL: Final[str] = "unknown.op"
LOW_TRUST_THRESHOLD: Final[int] = 100

# Comparison operators used by the workload, keyed by their symbolic name.
OP_SYMBOLS: Final[dict[str, str]] = {
    "gt": ">",
    "gte": ">=",
    "lt": "<",
    "lte": "<=",
    "eq": "==",
    "ne": "!=",
}


def _check_size(n: int) -> None:
    if n < 1:
        raise ValueError(f"workload size must be >= 1, got {n}")


def rule_effect(i: int) -> str:
    """Effect of tool-specific rule ``i``."""
    return "deny" if i % 3 == 0 else "allow"


def rule_threshold(i: int) -> int:
    """Amount threshold of tool-specific rule ``i`` (condition is ``amount > threshold``)."""
    return i * 10


def rule_tool(i: int) -> str:
    """Concrete tool name matched by the glob of rule ``i`` (``tool{i}.*``)."""
    return f"tool{i}.op"


def make_rules(n: int) -> list[dict[str, Any]]:
    """Return the ``n`` tool-specific rules followed by the global ``low-trust`` rule."""
    _check_size(n)
    rules: list[dict[str, Any]] = [
        {
            "id": f"r{i}",
            "tool": f"tool{i}.*",
            "source": "args",
            "field": "amount",
            "op": "gt",
            "value": rule_threshold(i),
            "effect": rule_effect(i),
            "reason": f"rule {i}",
        }
        for i in range(n)
    ]
    rules.append(
        {
            "id": "low-trust",
            "tool": "*",
            "source": "agent",
            "field": "trust",
            "op": "lt",
            "value": LOW_TRUST_THRESHOLD,
            "effect": "deny",
            "reason": "low trust",
        }
    )
    return rules


def target_rule_index(n: int, action: str) -> int | None:
    """Index of the tool-specific rule a named action is built to hit (``None`` for default).

    ``allow_hit``: first ``i >= n // 2`` with ``i % 3 != 0``, else the last such ``i`` below
    ``n // 2``, else rule 0 (only possible for ``n == 1``).
    ``deny_hit``: largest ``i <= n // 2`` with ``i % 3 == 0`` (always exists: ``i == 0``).
    """
    _check_size(n)
    mid = n // 2
    if action == "allow_hit":
        for i in range(mid, n):
            if rule_effect(i) == "allow":
                return i
        for i in range(mid - 1, -1, -1):
            if rule_effect(i) == "allow":
                return i
        return 0
    if action == "deny_hit":
        return mid - mid % 3
    if action == "default":
        return None
    raise KeyError(f"unknown action {action!r}; expected one of {ACTION_NAMES}")


def _action(tool: str, amount: int) -> dict[str, Any]:
    return {
        "tool": tool,
        "kind": "tool_call",
        "args": {"amount": amount},
        "agent": dict(AGENT),
        "session": SESSION,
    }


def make_actions(n: int) -> dict[str, dict[str, Any]]:
    """Return the named actions ``allow_hit``, ``deny_hit`` and ``default`` for size ``n``."""
    actions: dict[str, dict[str, Any]] = {}
    for name in ACTION_NAMES:
        idx = target_rule_index(n, name)
        if idx is None:
            actions[name] = _action(DEFAULT_TOOL, 5)
        else:
            actions[name] = _action(rule_tool(idx), rule_threshold(idx) + 5)
    return actions


def expected_effects(n: int) -> dict[str, str]:
    """Effect each named action must receive under the workload policy of size ``n``."""
    out: dict[str, str] = {}
    for name in ACTION_NAMES:
        idx = target_rule_index(n, name)
        out[name] = DEFAULT_EFFECT if idx is None else rule_effect(idx)
    return out


def rule_condition(rule: dict[str, Any]) -> str:
    """The rule's condition as a warden ``when`` expression, e.g. ``args.amount > 30``."""
    return f"{rule['source']}.{rule['field']} {OP_SYMBOLS[rule['op']]} {rule['value']!r}"


def to_warden_yaml(n: int) -> str:
    """Render the size-``n`` workload in the warden policy language (``warden/v1``)."""
    lines = [
        "apiVersion: warden/v1",
        "kind: Policy",
        f"name: bench-{n}",
        f"default: {DEFAULT_EFFECT}",
        "rules:",
    ]
    for rule in make_rules(n):
        lines += [
            f"  - id: {rule['id']}",
            f'    tool: "{rule["tool"]}"',
            f'    when: "{rule_condition(rule)}"',
            f"    effect: {rule['effect']}",
            f"    reason: {rule['reason']}",
        ]
    return "\n".join(lines) + "\n"


MISSING: Final = object()
"""Stands for "the argument is absent" in :data:`PROBE_AMOUNTS`."""

PROBE_AMOUNTS: Final[dict[str, Any]] = {
    "amount=5000 (int, control)": 5000,
    "amount missing": MISSING,
    "amount=None": None,
    "amount='5000' (str)": "5000",
    "amount='abc' (str)": "abc",
    "amount=nan": float("nan"),
}
"""The fail-closed probe: values of ``amount`` sent to a deny rule ``amount > 1000``."""


__all__ = [
    "ACTION_NAMES",
    "AGENT",
    "DEFAULT_EFFECT",
    "DEFAULT_TOOL",
    "MISSING",
    "PROBE_AMOUNTS",
    "SIZES",
    "expected_effects",
    "make_actions",
    "make_rules",
    "rule_condition",
    "target_rule_index",
    "to_warden_yaml",
]
