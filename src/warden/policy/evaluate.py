"""Stage 3: a Policy and an Action to a Decision, and the trace that explains it.

Combination (docs/policy-language.md, "Decisions"): any matching ``deny`` wins;
else any matching ``require_approval``; else any matching ``allow``; else the
policy default. Rules are looked at tier by tier in that order, so a decision
costs at most the candidate rules of the tiers it had to look at.

Fail closed: when a condition raises (missing key, type mismatch, ...), a
deny or require_approval rule counts as matching and an allow rule as not
matching. ``Decision.errors`` lists those errors for every tier that was
looked at, deny first, in document order within a tier. Nothing in this module
raises to its caller because of the action's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from time import perf_counter_ns
from typing import Any, Final

from warden.action import Action, Decision, Effect
from warden.policy.compile import CompiledRule, Policy
from warden.policy.expr import EvalError

__all__ = ["RuleTrace", "Trace", "evaluate", "explain"]


def _run(rule: CompiledRule, action: Action) -> tuple[bool | None, str | None]:
    """Evaluate a rule's condition: (True/False, None) or (None, error message)."""
    when = rule.when
    if when is None:
        return True, None
    try:
        value = when(action)
    except EvalError as exc:
        return None, f"rule `{rule.id}`: {exc}"
    except RecursionError:
        return None, f"rule `{rule.id}`: value nests too deeply"
    except Exception as exc:  # noqa: BLE001 - nothing on the decision path may escape
        return None, f"rule `{rule.id}`: internal error ({type(exc).__name__})"
    if value is True or value is False:
        return value, None
    return None, f"rule `{rule.id}`: condition produced a non-boolean value"


def _unique(items: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


_DEFAULT_REASON: Final = {
    Effect.ALLOW: "no rule matched; the policy allows by default",
    Effect.DENY: "no rule matched; the policy denies by default",
}


def _with_scoped(
    static: tuple[str, ...], rules: tuple[CompiledRule, ...], action: Action
) -> tuple[str, ...]:
    """Add the `redact` obligations of rules whose `agent` scope admits this action."""
    extra = {f"redact:args.{n}" for r in rules if r.agent_ok(action.agent) for n in r.spec.redact}
    return tuple(sorted(extra.union(static))) if extra else static


def redactions(policy: Policy, action: Action) -> tuple[str, ...]:
    """The ``redact`` obligations the policy puts on this action, whatever decides it.

    A deny made before the rules run (kill switch, identity, ring, budget) still
    carries them, so the audit log never holds a redacted argument in clear.
    """
    tiers = policy.candidates(action.tool, action.kind)
    return _with_scoped(tiers[3], tiers[4], action) if tiers[4] else tiers[3]


def _since(started_ns: int) -> int:
    return perf_counter_ns() - started_ns if started_ns else 0


def evaluate(
    policy: Policy, action: Action, started_ns: int = 0, decision_id: str = ""
) -> Decision:
    """Decide ``action`` under ``policy``.

    ``elapsed_ns`` is measured from ``started_ns`` (a ``perf_counter_ns`` reading
    taken by the caller), or left 0 when none is given.
    """
    tiers = policy.candidates(action.tool, action.kind)
    obligations = _with_scoped(tiers[3], tiers[4], action) if tiers[4] else tiers[3]
    errors: list[str] = []
    agent = action.agent
    for effect, rules in ((Effect.DENY, tiers[0]), (Effect.REQUIRE_APPROVAL, tiers[1])):
        matched: list[CompiledRule] = []
        for rule in rules:
            if rule.agent_match is not None and not rule.agent_ok(agent):
                continue
            ok, err = _run(rule, action)
            if err is not None:
                errors.append(err)
                matched.append(rule)  # fail closed: an unreadable deny still denies
            elif ok:
                matched.append(rule)
        if matched:
            return Decision(
                effect,
                tuple(r.id for r in matched),
                _unique([r.reason for r in matched]),
                tuple(errors),
                obligations=obligations,
                policy_hash=policy.hash,
                elapsed_ns=_since(started_ns),
                id=decision_id,
            )
    allowed: list[CompiledRule] = []
    for rule in tiers[2]:
        if rule.agent_match is not None and not rule.agent_ok(agent):
            continue
        ok, err = _run(rule, action)
        if err is not None:
            errors.append(err)  # fail closed: an unreadable allow does not allow
        elif ok:
            allowed.append(rule)
    if allowed:
        return Decision(
            Effect.ALLOW,
            tuple(r.id for r in allowed),
            _unique([r.reason for r in allowed]),
            tuple(errors),
            obligations=obligations,
            policy_hash=policy.hash,
            elapsed_ns=_since(started_ns),
            id=decision_id,
        )
    return Decision(
        policy.default,
        (),
        (_DEFAULT_REASON[policy.default],),
        tuple(errors),
        obligations=obligations,
        policy_hash=policy.hash,
        elapsed_ns=_since(started_ns),
        id=decision_id,
    )


@dataclass(frozen=True, slots=True)
class RuleTrace:
    """What happened to one rule: ``status`` is matched, not_matched or skipped."""

    id: str
    effect: Effect
    line: int
    status: str
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "effect": self.effect.value,
            "line": self.line,
            "status": self.status,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class Trace:
    """Every rule's fate for one action, in document order, and the decision."""

    decision: Decision
    rules: tuple[RuleTrace, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"decision": self.decision.to_dict(), "rules": [r.to_dict() for r in self.rules]}


def explain(policy: Policy, action: Action) -> Trace:
    """Evaluate every rule (not only the ones the fast path needs) and say why each applied."""
    decision = evaluate(policy, action)
    winners = set(decision.rules)
    out: list[RuleTrace] = []
    for rule in policy.rules:
        line = rule.spec.line

        def trace(status: str, detail: str, rule: CompiledRule = rule, line: int = line) -> None:
            out.append(RuleTrace(rule.id, rule.effect, line, status, detail))

        if not rule.tool_match(action.tool):
            trace("skipped", f"tool `{action.tool}` is not in {list(rule.spec.tools or ())}")
            continue
        if rule.kinds is not None and action.kind not in rule.kinds:
            trace("skipped", f"kind `{action.kind}` is not in {sorted(rule.kinds)}")
            continue
        if not rule.agent_ok(action.agent):
            trace(
                "skipped",
                f"agent `{action.agent.get('id')}` is not in {list(rule.spec.agents or ())}",
            )
            continue
        ok, err = _run(rule, action)
        decided = "; decides" if rule.id in winners else ""
        if err is not None:
            if rule.effect is Effect.ALLOW:
                trace(
                    "not_matched",
                    f"condition failed ({err}): an allow rule that cannot be "
                    "evaluated does not allow",
                )
            else:
                trace(
                    "matched", f"condition failed ({err}): counts as matching, fail closed{decided}"
                )
        elif rule.when is None:
            trace("matched", f"no condition{decided}")
        elif ok:
            trace(
                "matched",
                f"condition `{rule.spec.when.source if rule.spec.when else ''}` is true{decided}",
            )
        else:
            trace(
                "not_matched",
                f"condition `{rule.spec.when.source if rule.spec.when else ''}` is false",
            )
    return Trace(decision, tuple(out))
