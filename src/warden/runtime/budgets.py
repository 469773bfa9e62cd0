"""Budgets and rate limits declared in a policy (docs/runtime.md, "Budgets").

Counters live in the process (embedded mode). A rate (`calls` with `per`) is
GCRA: one "theoretical arrival time" per key. It allows a burst of `calls`,
then one call per `per / calls`: any k allowed calls span at least
(k - calls) * per / calls, and a call is always allowed when fewer than
`calls` were allowed in the `per` before it. The arithmetic is in integers
(nanoseconds scaled by `calls`), so a burst is exactly `calls` long. Lifetime
counters (`calls` without `per`, `tokens`, `cost`) grow until the process ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from warden._re import ByTool, compile_glob, search

if TYPE_CHECKING:
    from warden.action import Action
    from warden.policy.sections import BudgetSpec

__all__ = ["Budgets"]

_MAX_RATE_KEYS: Final = 100_000


@dataclass(slots=True)
class _Budget:
    spec: BudgetSpec
    tools: list[Any] | None
    calls: dict[tuple[Any, ...], int] = field(default_factory=dict)  # count, or GCRA TAT
    tokens: dict[tuple[Any, ...], int] = field(default_factory=dict)
    cost: dict[tuple[Any, ...], float] = field(default_factory=dict)

    def applies(self, tool: str) -> bool:
        return self.tools is None or any(search(rx, tool) for rx in self.tools)

    def key(self, action: Action) -> tuple[Any, ...]:
        out: list[Any] = []
        for scope in self.spec.scope:
            if scope == "agent":
                agent_id = action.agent.get("id") if action.agent else None
                out.append(agent_id if type(agent_id) is str else None)
            elif scope == "session":
                out.append(action.session)
            elif scope == "tool":
                out.append(action.tool)
        return tuple(out)


def _where(spec: BudgetSpec, key: tuple[Any, ...]) -> str:
    if spec.scope == ("global",):
        return "in all"
    shown = ("null" if k is None else k for k in key)
    return "for " + ", ".join(f"{s} {k}" for s, k in zip(spec.scope, shown, strict=True))


class Budgets:
    """The budgets of one policy. ``check`` consumes a call when every budget admits it."""

    def __init__(
        self, specs: tuple[BudgetSpec, ...], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._budgets = [
            _Budget(s, [compile_glob(g) for g in s.tools] if s.tools else None) for s in specs
        ]
        self._clock = clock
        self._lock = threading.Lock()
        self._for = ByTool(self._budgets, _Budget.applies)

    def __bool__(self) -> bool:
        return bool(self._budgets)

    def check(self, action: Action) -> tuple[str, str] | None:
        """None when the call fits every budget (and is counted); else (budget id, reason)."""
        budgets = self._for(action.tool)
        if not budgets:
            return None
        with self._lock:
            now_ns = round(self._clock() * 1e9)
            updates: list[tuple[_Budget, tuple[Any, ...], int]] = []
            for b in budgets:
                spec, key = b.spec, b.key(action)
                if spec.tokens is not None and b.tokens.get(key, 0) >= spec.tokens:
                    used = b.tokens[key]
                    return spec.id, (
                        f"budget `{spec.id}`: {used} of {spec.tokens} tokens used "
                        f"{_where(spec, key)}"
                    )
                if spec.cost is not None and b.cost.get(key, 0.0) >= spec.cost:
                    return spec.id, (
                        f"budget `{spec.id}`: cost {b.cost[key]:g} of {spec.cost:g} used "
                        f"{_where(spec, key)}"
                    )
                if spec.calls is None:
                    continue
                if spec.per is None:
                    used = int(b.calls.get(key, 0))
                    if used >= spec.calls:
                        return spec.id, (
                            f"budget `{spec.id}`: {used} of {spec.calls} calls used "
                            f"{_where(spec, key)}"
                        )
                    updates.append((b, key, used + 1))
                    continue
                # Units of 1/calls ns: one call's step is exactly `per` in ns, the window
                # `per * calls`; no rounding can shorten a burst.
                now_u = now_ns * spec.calls
                step_u = round(spec.per * 1e9)
                tat = max(int(b.calls.get(key, now_u)), now_u) + step_u
                if tat - now_u > step_u * spec.calls:
                    wait = (tat - now_u - step_u * spec.calls) / spec.calls / 1e9
                    return spec.id, (
                        f"budget `{spec.id}`: more than {spec.calls} calls per "
                        f"{spec.per:g} s {_where(spec, key)} (next in {wait:.2f} s)"
                    )
                updates.append((b, key, tat))
            for b, key, value in updates:
                if b.spec.per is not None and b.spec.calls and len(b.calls) >= _MAX_RATE_KEYS:
                    now_u = now_ns * b.spec.calls
                    for k in [k for k, t in b.calls.items() if t <= now_u]:
                        del b.calls[k]  # an idle key's state equals a fresh one
                b.calls[key] = value
        return None

    def report(self, action: Action, tokens: int = 0, cost: float = 0.0) -> None:
        """Add reported usage to every budget that counts it for this action."""
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
            raise ValueError("tokens must be a non-negative integer")
        if (
            isinstance(cost, bool)
            or not isinstance(cost, int | float)
            or not 0 <= cost < float("inf")
        ):
            raise ValueError("cost must be a non-negative, finite number")
        with self._lock:
            for b in self._for(action.tool):
                key = b.key(action)
                if b.spec.tokens is not None and tokens:
                    b.tokens[key] = b.tokens.get(key, 0) + tokens
                if b.spec.cost is not None and cost:
                    b.cost[key] = b.cost.get(key, 0.0) + float(cost)

    def usage(self) -> list[Mapping[str, Any]]:
        """A snapshot of every counter, for `warden status` and tests."""
        with self._lock:
            return [
                {
                    "budget": b.spec.id,
                    "calls": dict(b.calls),
                    "tokens": dict(b.tokens),
                    "cost": dict(b.cost),
                }
                for b in self._budgets
            ]
