"""A deliberately naive policy evaluator, written from docs/policy-language.md alone.

It shares no code with ``warden.policy`` beyond the vocabulary (``Action``, ``Effect``)
and the document loader (``parse_policy`` gives the rules with their ``when`` source).
Everything else is done the slow, obvious way: every rule is looked at for every
action, globs are ``fnmatch.fnmatchcase``, and conditions are interpreted by walking
``ast.parse(source, mode="eval")`` with the spec's rules written out one by one.

Where the spec is silent, this file takes the plain reading and says so:

* function arguments are evaluated left to right before the call, like Python calls;
* a list index must be ``0 <= i < len``; negative indexes are out of range;
* ``//`` and ``%`` are Python's (floor) operations; an overflow is an evaluation error.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from warden.action import Action, Effect
from warden.policy.load import PolicyDocument, RuleSpec, parse_policy

__all__ = ["RefDecision", "RefError", "condition", "decide", "decide_text", "scope_admits"]


class RefError(Exception):
    """An evaluation error, in the spec's sense."""


@dataclass(frozen=True)
class RefDecision:
    effect: Effect
    rules: tuple[str, ...]
    errors: int


# --- values -------------------------------------------------------------------------------


def kind_of(v: Any) -> str:
    """The spec's value kinds. Booleans are not numbers."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, (list, tuple)):
        return "list"
    if isinstance(v, Mapping):
        return "map"
    return "other"


def equal(x: Any, y: Any) -> bool:
    """Strict equality: different kinds are never equal, numbers by value, containers deeply."""
    kx, ky = kind_of(x), kind_of(y)
    if kx != ky:
        return False
    if kx == "list":
        return len(x) == len(y) and all(equal(a, b) for a, b in zip(x, y, strict=True))
    if kx == "map":
        return set(x.keys()) == set(y.keys()) and all(equal(x[k], y[k]) for k in x)
    return bool(x == y)


def need(v: Any, *kinds: str) -> Any:
    if kind_of(v) not in kinds:
        raise RefError(f"expected {' or '.join(kinds)}, got {kind_of(v)}")
    return v


# --- the interpreter ----------------------------------------------------------------------

LITERAL_NAMES = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}


class Interpreter:
    def __init__(self, action: Action) -> None:
        self.names = {
            "tool": action.tool,
            "kind": action.kind,
            "args": action.args,
            "agent": action.agent,
            "session": action.session,
            "context": action.context,
        }

    def run(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return self.run(node.body)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in LITERAL_NAMES:
                return LITERAL_NAMES[node.id]
            return self.names[node.id]
        if isinstance(node, (ast.List, ast.Tuple)):
            return [self.run(e) for e in node.elts]
        if isinstance(node, ast.Attribute):
            return self.lookup(self.run(node.value), node.attr)
        if isinstance(node, ast.Subscript):
            base = self.run(node.value)
            return self.lookup(base, self.run(node.slice))
        if isinstance(node, ast.BoolOp):
            return self.boolop(node)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.Compare):
            return self.compare(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        raise AssertionError(f"a policy that loaded holds {ast.dump(node)}")

    @staticmethod
    def lookup(base: Any, key: Any) -> Any:
        if kind_of(base) == "map":
            if kind_of(key) != "string":
                raise RefError("map keys are strings")
            if key not in base:
                raise RefError(f"missing key {key!r}")
            return base[key]
        if kind_of(base) == "list":
            if type(key) is not int:
                raise RefError("list indexes are integers")
            if not 0 <= key < len(base):
                raise RefError("index out of range")
            return base[key]
        raise RefError(f"cannot look up in a {kind_of(base)}")

    def boolop(self, node: ast.BoolOp) -> bool:
        stop_at = isinstance(node.op, ast.Or)  # `or` stops at True, `and` at False
        for operand in node.values:
            v = need(self.run(operand), "bool")
            if v is stop_at:
                return stop_at
        return not stop_at

    def unary(self, node: ast.UnaryOp) -> Any:
        v = self.run(node.operand)
        if isinstance(node.op, ast.Not):
            return not need(v, "bool")
        need(v, "number")
        if isinstance(node.op, ast.USub):
            return -v
        if isinstance(node.op, ast.UAdd):
            return v
        raise AssertionError(ast.dump(node))

    def binop(self, node: ast.BinOp) -> Any:
        x, y = self.run(node.left), self.run(node.right)
        kx, ky = kind_of(x), kind_of(y)
        if isinstance(node.op, ast.Add) and kx == ky and kx in ("string", "list"):
            return x + y if kx == "string" else [*x, *y]
        if kx != "number" or ky != "number":
            raise RefError(f"arithmetic on a {kx} and a {ky}")
        try:
            if isinstance(node.op, ast.Add):
                return x + y
            if isinstance(node.op, ast.Sub):
                return x - y
            if isinstance(node.op, ast.Mult):
                return x * y
            if y == 0 and isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)):
                raise RefError("division by zero")
            if isinstance(node.op, ast.Div):
                return x / y
            if isinstance(node.op, ast.FloorDiv):
                return x // y
            if isinstance(node.op, ast.Mod):
                return x % y
        except OverflowError:
            raise RefError("overflow") from None
        raise AssertionError(ast.dump(node))

    def compare(self, node: ast.Compare) -> bool:
        left = self.run(node.left)
        for op, right_node in zip(node.ops, node.comparators, strict=True):
            right = self.run(right_node)
            if not self.compare_one(op, left, right):
                return False  # `a < b < c` is `a < b and b < c`: stop at the first false
            left = right
        return True

    @staticmethod
    def compare_one(op: ast.cmpop, x: Any, y: Any) -> bool:
        if isinstance(op, ast.Eq):
            return equal(x, y)
        if isinstance(op, ast.NotEq):
            return not equal(x, y)
        if isinstance(op, (ast.In, ast.NotIn)):
            ky = kind_of(y)
            if ky == "list":
                found = any(equal(x, e) for e in y)
            elif ky in ("string", "map"):
                need(x, "string")
                found = x in y
            else:
                raise RefError(f"`in` a {ky}")
            return found if isinstance(op, ast.In) else not found
        kx, ky = kind_of(x), kind_of(y)
        if not (kx == ky and kx in ("number", "string")):
            raise RefError(f"ordering a {kx} and a {ky}")
        if kx == "number" and (math.isnan(x) or math.isnan(y)):
            raise RefError("NaN has no order")
        if isinstance(op, ast.Lt):
            return bool(x < y)
        if isinstance(op, ast.LtE):
            return bool(x <= y)
        if isinstance(op, ast.Gt):
            return bool(x > y)
        if isinstance(op, ast.GtE):
            return bool(x >= y)
        raise AssertionError(ast.dump(op))

    def call(self, node: ast.Call) -> Any:
        assert isinstance(node.func, ast.Name)
        name = node.func.id
        if name == "regex":  # the pattern is a literal, compiled "at load"
            s = need(self.run(node.args[0]), "string")
            pattern = node.args[1]
            assert isinstance(pattern, ast.Constant)
            return re.search(pattern.value, s) is not None
        args = [self.run(a) for a in node.args]
        if name == "glob":
            return fnmatch.fnmatchcase(need(args[0], "string"), need(args[1], "string"))
        if name == "startswith":
            return bool(need(args[0], "string").startswith(need(args[1], "string")))
        if name == "endswith":
            return bool(need(args[0], "string").endswith(need(args[1], "string")))
        if name == "lower":
            return need(args[0], "string").lower()
        if name == "upper":
            return need(args[0], "string").upper()
        if name == "len":
            return len(need(args[0], "string", "list", "map"))
        if name == "has":
            return need(args[1], "string") in need(args[0], "map")
        if name == "get":
            m, k = need(args[0], "map"), need(args[1], "string")
            return m[k] if k in m else args[2]
        raise AssertionError(f"unknown function {name}")


@functools.lru_cache(maxsize=4096)
def parse(source: str) -> ast.Expression:
    text = source.strip()
    if "\n" in text:
        text = "(" + text + "\n)"
    return ast.parse(text, mode="eval")


def condition(source: str, action: Action) -> bool:
    """Evaluate a condition; a non-boolean result is an evaluation error."""
    try:
        value = Interpreter(action).run(parse(source))
    except RecursionError:
        raise RefError("too deep") from None
    if not isinstance(value, bool):
        raise RefError(f"the condition produced a {kind_of(value)}")
    return value


# --- scope and decisions ------------------------------------------------------------------


def scope_admits(rule: RuleSpec, action: Action) -> bool:
    if rule.tools is not None and not any(fnmatch.fnmatchcase(action.tool, p) for p in rule.tools):
        return False
    if rule.agents is not None:
        agent_id = action.agent.get("id")
        if not isinstance(agent_id, str):
            return False
        if not any(fnmatch.fnmatchcase(agent_id, p) for p in rule.agents):
            return False
    return rule.kinds is None or action.kind in rule.kinds


def outcome(rule: RuleSpec, action: Action) -> bool | None:
    """True or False, or None for an evaluation error."""
    if rule.when is None:
        return True
    try:
        return condition(rule.when.source, action)
    except RefError:
        return None


def decide(doc: PolicyDocument, action: Action) -> RefDecision:
    """Linear scan: evaluate every candidate, then combine by tier as the spec says."""
    results = [(r, outcome(r, action)) for r in doc.rules if scope_admits(r, action)]
    errors = 0
    for effect in (Effect.DENY, Effect.REQUIRE_APPROVAL):
        tier = [(r, o) for r, o in results if r.effect is effect]
        errors += sum(1 for _, o in tier if o is None)
        matched = tuple(r.id for r, o in tier if o is not False)  # an error counts as a match
        if matched:
            return RefDecision(effect, matched, errors)
    tier = [(r, o) for r, o in results if r.effect is Effect.ALLOW]
    errors += sum(1 for _, o in tier if o is None)
    allowed = tuple(r.id for r, o in tier if o is True)  # an error does not allow
    if allowed:
        return RefDecision(Effect.ALLOW, allowed, errors)
    return RefDecision(doc.default, (), errors)


def decide_text(policy_text: str, action: Action) -> RefDecision:
    doc, diags = parse_policy(policy_text)
    assert doc is not None, [d.render() for d in diags]
    return decide(doc, action)
