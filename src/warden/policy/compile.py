"""Stage 2: a PolicyDocument to a Policy, a program indexed by tool pattern.

Rules are bucketed by their ``tool`` patterns so that a decision only looks at
the rules that can match the action's tool:

* literal names (``fs.delete``) go in a hash map;
* trailing-star prefixes (``db.drop*``, ``tool7.*``) go in one hash map per
  prefix length, probed with ``tool[:n]`` for each distinct length;
* ``*`` and absent patterns apply to every tool;
* any other glob is matched with RE2 (linear in the tool name).

The candidate lists for a (tool, kind) pair are computed once and memoised in a
bounded cache, so the steady-state cost of finding candidates is one dict
lookup, and the cost of a decision is O(rules that can match this tool).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from warden._re import compile_glob, glob_literal_prefix, is_literal, search
from warden.action import Effect
from warden.policy.flowspec import NO_FLOWS, FlowSpec
from warden.policy.load import PolicyDocument, RuleSpec
from warden.policy.sections import (
    DEFAULT_MCP,
    NO_SRE,
    AgentSpec,
    BudgetSpec,
    MCPSpec,
    SRESpec,
    ToolSpec,
)

__all__ = ["CompiledRule", "Policy", "compile_policy"]

CACHE_SIZE: Final = 8192
TIERS: Final = (Effect.DENY, Effect.REQUIRE_APPROVAL, Effect.ALLOW)


def _matcher(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """A predicate over strings for a list of globs."""
    if "*" in patterns:
        return lambda s: True
    literals = frozenset(p for p in patterns if is_literal(p))
    wild = [p for p in patterns if not is_literal(p)]
    prefixes = tuple(p[:-1] for p in wild if p == glob_literal_prefix(p) + "*")
    globs = tuple(compile_glob(p) for p in wild if p != glob_literal_prefix(p) + "*")
    if not globs and not prefixes:
        return literals.__contains__

    def match(s: str) -> bool:
        return (
            s in literals
            or (bool(prefixes) and s.startswith(prefixes))
            or any(search(g, s) for g in globs)
        )

    return match


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to evaluate: scope predicates and the condition closure."""

    spec: RuleSpec
    id: str
    effect: Effect
    reason: str
    position: int
    agent_match: Callable[[str], bool] | None
    kinds: frozenset[str] | None
    when: Callable[[Any], Any] | None
    tool_match: Callable[[str], bool]

    def agent_ok(self, agent: Mapping[str, Any]) -> bool:
        """True when the rule's ``agent`` patterns admit this agent (no patterns: any).

        An agent without a string ``id`` is admitted only by rules without patterns,
        even ``agent: "*"``.
        """
        if self.agent_match is None:
            return True
        aid = agent.get("id")
        return type(aid) is str and self.agent_match(aid)


Candidates = tuple[
    tuple[CompiledRule, ...],  # deny rules
    tuple[CompiledRule, ...],  # require_approval rules
    tuple[CompiledRule, ...],  # allow rules
    tuple[str, ...],  # obligations every action in scope carries (from `redact`)
    tuple[CompiledRule, ...],  # rules with `redact` whose `agent` scope is checked per action
]


@dataclass(slots=True)
class Policy:
    """A loaded, compiled policy; immutable once built and safe to share across threads."""

    name: str
    default: Effect
    hash: str
    file: str
    rules: tuple[CompiledRule, ...]
    description: str | None
    _exact: dict[str, list[int]]
    _prefix: dict[int, dict[str, list[int]]]
    _prefix_lengths: tuple[int, ...]
    _everywhere: list[int]
    _globbed: list[tuple[Any, int]]
    tools: tuple[ToolSpec, ...] = ()
    agents: tuple[AgentSpec, ...] = ()
    budgets: tuple[BudgetSpec, ...] = ()
    sre: SRESpec = NO_SRE
    mcp: MCPSpec = DEFAULT_MCP
    flows: FlowSpec = NO_FLOWS
    _cache: dict[tuple[str, str], Candidates] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def candidates(self, tool: str, kind: str) -> Candidates:
        """The rules that can apply to ``tool`` and ``kind``, split by effect, in document order."""
        key = (tool, kind)
        found = self._cache.get(key)
        if found is not None:
            return found
        positions: set[int] = set(self._everywhere)
        positions.update(self._exact.get(tool, ()))
        for n in self._prefix_lengths:
            if len(tool) >= n:
                positions.update(self._prefix[n].get(tool[:n], ()))
        for rx, pos in self._globbed:
            if search(rx, tool):
                positions.add(pos)
        ordered = [self.rules[p] for p in sorted(positions)]
        ordered = [r for r in ordered if r.kinds is None or kind in r.kinds]
        static = sorted(
            {f"redact:args.{n}" for r in ordered if r.agent_match is None for n in r.spec.redact}
        )
        result: Candidates = (
            tuple(r for r in ordered if r.effect is Effect.DENY),
            tuple(r for r in ordered if r.effect is Effect.REQUIRE_APPROVAL),
            tuple(r for r in ordered if r.effect is Effect.ALLOW),
            tuple(static),
            tuple(r for r in ordered if r.agent_match is not None and r.spec.redact),
        )
        with self._lock:
            if len(self._cache) >= CACHE_SIZE:
                # Tool names come from agents: bound the memory they can make us hold.
                self._cache.clear()
            self._cache[key] = result
        return result


def compile_policy(doc: PolicyDocument) -> Policy:
    """Build the indexed program for a checked document."""
    rules: list[CompiledRule] = []
    exact: dict[str, list[int]] = {}
    prefix: dict[int, dict[str, list[int]]] = {}
    everywhere: list[int] = []
    globbed: list[tuple[Any, int]] = []
    for pos, spec in enumerate(doc.rules):
        tools = spec.tools or ("*",)
        rules.append(
            CompiledRule(
                spec=spec,
                id=spec.id,
                effect=spec.effect,
                reason=spec.reason,
                position=pos,
                agent_match=_matcher(spec.agents) if spec.agents else None,
                kinds=frozenset(spec.kinds) if spec.kinds else None,
                when=spec.when.fn if spec.when else None,
                tool_match=_matcher(tools),
            )
        )
        if "*" in tools:
            everywhere.append(pos)
            continue
        for pattern in dict.fromkeys(tools):
            if is_literal(pattern):
                exact.setdefault(pattern, []).append(pos)
                continue
            head = glob_literal_prefix(pattern)
            if pattern == head + "*":
                prefix.setdefault(len(head), {}).setdefault(head, []).append(pos)
            else:
                globbed.append((compile_glob(pattern), pos))
    return Policy(
        name=doc.name,
        default=doc.default,
        hash=doc.hash,
        file=doc.file,
        rules=tuple(rules),
        description=doc.description,
        _exact=exact,
        _prefix=prefix,
        _prefix_lengths=tuple(sorted(prefix)),
        _everywhere=everywhere,
        _globbed=globbed,
        tools=doc.tools,
        agents=doc.agents,
        budgets=doc.budgets,
        sre=doc.sre,
        mcp=doc.mcp,
        flows=doc.flows,
    )
