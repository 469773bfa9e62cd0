"""Capabilities: tool globs with argument constraints, and the subset test for delegation.

Semantics in docs/identity.md ("Capabilities and argument constraints",
"Delegation"). The subset test is conservative: what cannot be proved a
subset is not one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from warden._re import PatternError, compile_glob, glob_literal_prefix, is_literal, search
from warden.errors import CredentialError

__all__ = ["Capability", "Constraint", "capabilities_within", "parse_capabilities"]

MAX_CAPABILITIES: Final = 64
MAX_VALUES: Final = 256
_KEYS: Final = frozenset({"eq", "in", "max", "min", "glob"})


def _is_number(v: Any) -> bool:
    return type(v) is int or (type(v) is float and not math.isnan(v))


def _same(a: Any, b: Any) -> bool:
    """JSON equality: ``1`` and ``true`` differ, ``1`` and ``1.0`` do not."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    if _is_number(a) and _is_number(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is dict:
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return bool(a == b)


@dataclass(frozen=True, slots=True)
class Constraint:
    """A conjunction of checks on one argument."""

    eq: Any = None
    has_eq: bool = False
    values: tuple[Any, ...] | None = None
    max: float | None = None
    min: float | None = None
    glob: str | None = None

    def holds(self, value: Any) -> bool:
        if self.has_eq and not _same(value, self.eq):
            return False
        if self.values is not None and not any(_same(value, v) for v in self.values):
            return False
        if self.max is not None and not (_is_number(value) and value <= self.max):
            return False
        if self.min is not None and not (_is_number(value) and value >= self.min):
            return False
        return not (
            self.glob is not None
            and not (type(value) is str and search(compile_glob(self.glob), value))
        )

    def implies(self, parent: Constraint) -> bool:
        """True when every value this constraint admits is admitted by ``parent``."""
        if self.has_eq:
            return parent.holds(self.eq) and self.holds(self.eq)
        if self.values is not None:
            return all(parent.holds(v) for v in self.values)
        if parent.has_eq or parent.values is not None:
            return False
        if parent.max is not None and (self.max is None or self.max > parent.max):
            return False
        if parent.min is not None and (self.min is None or self.min < parent.min):
            return False
        return parent.glob is None or (
            self.glob is not None and glob_within(self.glob, parent.glob)
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.has_eq:
            out["eq"] = self.eq
        if self.values is not None:
            out["in"] = list(self.values)
        if self.max is not None:
            out["max"] = self.max
        if self.min is not None:
            out["min"] = self.min
        if self.glob is not None:
            out["glob"] = self.glob
        return out


@dataclass(frozen=True, slots=True)
class Capability:
    """May call tools matching ``tool`` with arguments meeting ``args``."""

    tool: str
    args: tuple[tuple[str, Constraint], ...] = ()

    def covers(self, tool: str, args: Mapping[str, Any]) -> bool:
        if not search(compile_glob(self.tool), tool):
            return False
        for name, constraint in self.args:
            if name not in args or not constraint.holds(args[name]):
                return False
        return True

    def within(self, parent: Capability) -> bool:
        if not glob_within(self.tool, parent.tool):
            return False
        mine = dict(self.args)
        for name, constraint in parent.args:
            child = mine.get(name)
            if child is None or not child.implies(constraint):
                return False
        return True

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"tool": self.tool}
        if self.args:
            out["args"] = {name: c.to_json() for name, c in self.args}
        return out


def glob_within(child: str, parent: str) -> bool:
    """True when every string ``child`` matches is matched by ``parent`` (conservative)."""
    if child == parent or parent in ("*", "**"):
        return True
    if is_literal(child):
        return search(compile_glob(parent), child)
    prefix = glob_literal_prefix(parent)
    return parent == prefix + "*" and child.startswith(prefix)


def capabilities_within(
    child: tuple[Capability, ...], parent: tuple[Capability, ...]
) -> str | None:
    """None when each child capability is within some parent one; else why not."""
    for cap in child:
        if not any(cap.within(p) for p in parent):
            return f"capability {cap.to_json()} is not within the parent's capabilities"
    return None


def parse_capabilities(data: object, where: str = "capabilities") -> tuple[Capability, ...]:
    """Validate the JSON form; CredentialError naming the offending path."""
    if not isinstance(data, list) or not data:
        raise CredentialError(f"{where}: must be a non-empty list")
    if len(data) > MAX_CAPABILITIES:
        raise CredentialError(f"{where}: more than {MAX_CAPABILITIES} capabilities")
    return tuple(_parse_one(item, f"{where}[{i}]") for i, item in enumerate(data))


def _parse_one(item: object, where: str) -> Capability:
    if isinstance(item, str):
        item = {"tool": item}
    if not isinstance(item, dict):
        raise CredentialError(f"{where}: a capability is an object with `tool` (and `args`)")
    unknown = set(item) - {"tool", "args"}
    if unknown:
        raise CredentialError(f"{where}: unknown field `{sorted(unknown)[0]}`")
    tool = item.get("tool")
    if type(tool) is not str or not tool or len(tool) > 256:
        raise CredentialError(f"{where}.tool: must be a glob of 1-256 characters")
    _check_glob(tool, f"{where}.tool")
    raw_args = item.get("args", {})
    if not isinstance(raw_args, dict):
        raise CredentialError(f"{where}.args: must be an object of argument constraints")
    args = tuple(
        (name, _parse_constraint(c, f"{where}.args.{name}")) for name, c in sorted(raw_args.items())
    )
    return Capability(tool, args)


def _parse_constraint(c: object, where: str) -> Constraint:
    if not isinstance(c, dict) or not c:
        raise CredentialError(f"{where}: a constraint is an object with eq, in, max, min or glob")
    unknown = set(c) - _KEYS
    if unknown:
        raise CredentialError(f"{where}: unknown constraint `{sorted(unknown)[0]}`")
    values = c.get("in")
    if values is not None and (
        not isinstance(values, list) or not values or len(values) > MAX_VALUES
    ):
        raise CredentialError(f"{where}.in: must be a list of 1-{MAX_VALUES} values")
    for key in ("max", "min"):
        bound: Any = c.get(key)
        if key in c and (not _is_number(bound) or not math.isfinite(bound)):
            raise CredentialError(f"{where}.{key}: must be a finite number")
    glob = c.get("glob")
    if "glob" in c:
        if type(glob) is not str:
            raise CredentialError(f"{where}.glob: must be a string")
        _check_glob(glob, f"{where}.glob")
    return Constraint(
        eq=c.get("eq"),
        has_eq="eq" in c,
        values=tuple(values) if values is not None else None,
        max=c.get("max"),
        min=c.get("min"),
        glob=glob,
    )


def _check_glob(glob: str, where: str) -> None:
    try:
        compile_glob(glob)
    except PatternError as exc:
        raise CredentialError(f"{where}: invalid glob: {exc}") from None
