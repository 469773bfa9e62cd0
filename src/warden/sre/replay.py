"""Replay: decide every recorded action again under a candidate policy and count what changes.

docs/sre.md ("Replay and shadow mode") is the specification. The log is read
in ``seq`` order, one chunk of entries at a time: memory holds one chunk, the
counters and the first ``show`` changes, whatever the size of the log.

What is compared is the verdict of the policy's rules on both sides. The
Governor also denies for reasons that are runtime state, not policy (the kill
switch, identity, rings, budgets, breakers, SLOs, an internal error, no policy
loaded): such a recorded decision does not say what the policy's rules
decided, so it is counted in ``runtime`` and not compared. A decision that went
through the approval gate (it has an approval id, or its deny says the gate
could not run) was ``require_approval`` as far as the policy goes, whatever
the approver did afterwards.

The action is rebuilt from the record: ``kind``, ``tool``, ``args``, the agent's
recorded ``id``, ``trust`` and ``ring`` (a null one left out, as it most
likely was absent), and ``session``. The record does not hold the action's
``context`` or the agent's ``labels``, so a candidate rule that reads them sees
them missing.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any, Final

import msgspec

from warden.action import Action, Effect, FlowLabels
from warden.audit import DECISION_V1, open_for_verify
from warden.errors import AuditError, InvalidActionError
from warden.policy import Policy, evaluate
from warden.policy.evaluate import _DEFAULT_REASON

__all__ = ["ReplayChange", "ReplayReport", "replay"]

_EFFECTS: Final = frozenset(e.value for e in Effect)
_POLICY_DEFAULT_REASONS: Final = frozenset(_DEFAULT_REASON.values())
_RUNTIME_RULES: Final = ("budget:", "breaker:", "slo:")
"""Rule-id prefixes the Governor gives denies made from runtime state, not by a policy rule."""
_GATE_FAILURES: Final = ("approval store unavailable", "no approval can be bound")
"""How the Governor's reason begins when the approval gate could not run (the deny keeps the
require_approval rules)."""
_INEXACT_MARKS: Final = (b'"redacted":"sha256:', b'"non_json', b'"unrecordable"')
DEFAULT_RULE: Final = "(default)"
"""The ``by_rule`` name of the policy default (no rule id can be spelled like it)."""


@dataclass(frozen=True, slots=True)
class ReplayChange:
    """One recorded decision whose effect the candidate policy changes.

    ``old_rules`` are the recorded rules, ``new_rules`` the candidate's (both
    empty when the policy default decided). ``approximate``: the recorded
    arguments hold a digest or marker in place of a value, so the candidate
    saw that instead of the value.
    """

    seq: int
    tool: str
    agent: str | None
    old_effect: str
    new_effect: str
    old_rules: tuple[str, ...]
    new_rules: tuple[str, ...]
    approximate: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "tool": self.tool,
            "agent": self.agent,
            "old_effect": self.old_effect,
            "new_effect": self.new_effect,
            "old_rules": list(self.old_rules),
            "new_rules": list(self.new_rules),
            "approximate": self.approximate,
        }


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of replaying one log under one policy.

    - ``records``: the ``warden.decision/v1`` records read (other types are
      ignored); ``records == changed + unchanged + runtime``.
    - ``changed`` / ``unchanged``: compared records whose effect the candidate
      changes / keeps. A different rule with the same effect is unchanged.
    - ``runtime``: records decided by runtime state, not compared (module docstring).
    - ``approximate``: compared records (changed or not) whose arguments hold a
      redacted digest, a non-JSON marker or the unrecordable stub.
    - ``transitions``: ``"old->new"`` effect to the number of changed records.
    - ``by_rule``: for the changed records only, ``"old:<rule id>"`` counts the
      changes whose recorded decision names that rule, ``"new:<rule id>"`` the
      changes whose candidate decision names it, and ``old:(default)`` /
      ``new:(default)`` the changes where that side's policy default decided.
      A change counts once under every name on each side, so a side's counts
      can add up to more than ``changed``. The side is the text before the
      first `:` (rule ids may hold `:` too).
    - ``examples``: the first ``show`` changes, by ``seq``.
    - ``old_policies``: the policy hashes of the records, in order of first appearance.
    - ``new_policy``: the candidate's hash. ``seconds``: wall time of the replay.

    ``transitions`` and ``by_rule`` are ordered by count, largest first, then by name.
    """

    records: int
    changed: int
    transitions: dict[str, int]
    by_rule: dict[str, int]
    approximate: int
    unchanged: int
    examples: tuple[ReplayChange, ...]
    old_policies: tuple[str, ...]
    new_policy: str
    seconds: float
    runtime: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The JSON form `warden replay --json` prints."""
        return {
            "records": self.records,
            "changed": self.changed,
            "unchanged": self.unchanged,
            "runtime": self.runtime,
            "approximate": self.approximate,
            "transitions": dict(self.transitions),
            "by_rule": dict(self.by_rule),
            "examples": [c.to_dict() for c in self.examples],
            "old_policies": list(self.old_policies),
            "new_policy": self.new_policy,
            "seconds": round(self.seconds, 3),
        }


def _ranked(counts: dict[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _inexact(args: dict[str, Any]) -> bool:
    """Whether ``args`` hold, at any depth, a value the log did not record as it was.

    That is a redacted digest ``{"redacted": "sha256:..."}``, a non-JSON marker
    (``{"non_json": ...}`` or a ``non_json_key:`` key) or the writer's
    ``{"unrecordable": ...}`` stub. Iterative: a deep record cannot overflow the stack.
    """
    if len(args) == 1 and type(args.get("unrecordable")) is str:
        return True
    stack: list[Any] = [args]
    while stack:
        value = stack.pop()
        if type(value) is dict:
            redacted = value.get("redacted")
            if len(value) == 1 and type(redacted) is str and redacted.startswith("sha256:"):
                return True
            if "non_json" in value:
                return True
            for key, item in value.items():
                if key.startswith("non_json_key:"):
                    return True
                stack.append(item)
        elif type(value) is list:
            stack.extend(value)
    return False


def _strings(value: Any) -> tuple[str, ...] | None:
    if type(value) is not list or any(type(v) is not str for v in value):
        return None
    return tuple(value)


def _policy_effect(
    effect: str, rules: tuple[str, ...], reasons: tuple[str, ...], approval: Any
) -> str | None:
    """What the recorded policy's rules decided, or None when runtime state decided."""
    if any(r.startswith(_RUNTIME_RULES) for r in rules):
        return None
    if not rules:
        # the policy default names no rule and says so; every other rule-less
        # decision (kill switch, identity, ring, internal error, no policy) is runtime
        return effect if reasons and reasons[0] in _POLICY_DEFAULT_REASONS else None
    if approval is not None:
        return Effect.REQUIRE_APPROVAL.value
    if effect == Effect.DENY.value and reasons and reasons[-1].startswith(_GATE_FAILURES):
        return Effect.REQUIRE_APPROVAL.value
    return effect


class _Replayer:
    """The counters of one replay; ``add`` takes one log entry."""

    def __init__(self, policy: Policy, show: int, where: str) -> None:
        self.policy = policy
        self.show = show
        self.where = where
        self.records = self.changed = self.unchanged = self.runtime = self.approximate = 0
        self.transitions: dict[str, int] = {}
        self.by_rule: dict[str, int] = {}
        self.examples: list[ReplayChange] = []
        self.policies: dict[str, None] = {}
        self._decode = msgspec.json.decode

    def _bad(self, seq: int, what: str) -> AuditError:
        return AuditError(f"{self.where}: entry {seq}: {what}")

    def add(self, seq: int, raw: object) -> None:
        if type(raw) is bytes:
            data = raw
        elif type(raw) is str:
            data = raw.encode("utf-8", "surrogatepass")
        else:
            raise self._bad(seq, "the stored record is not text")
        try:
            rec = self._decode(data)
        except msgspec.DecodeError:
            raise self._bad(seq, "not a JSON record") from None
        if type(rec) is not dict or rec.get("type") != DECISION_V1:
            return
        self.records += 1
        action = rec.get("action")
        decision = rec.get("decision")
        if type(action) is not dict or type(decision) is not dict:
            raise self._bad(seq, "a decision record without an `action` or `decision` object")
        old = decision.get("effect")
        old_rules = _strings(decision.get("rules"))
        reasons = _strings(decision.get("reasons"))
        if old not in _EFFECTS or old_rules is None or reasons is None:
            raise self._bad(seq, "a decision record with a malformed `decision`")
        policy_hash = rec.get("policy")
        if type(policy_hash) is str and policy_hash and policy_hash not in self.policies:
            self.policies[policy_hash] = None
        old_effect = _policy_effect(old, old_rules, reasons, rec.get("approval"))
        if old_effect is None:
            self.runtime += 1
            return
        args = action.get("args")
        who = rec.get("agent")
        if type(args) is not dict or not (who is None or type(who) is dict):
            raise self._bad(seq, "a decision record with malformed `args` or `agent`")
        agent = {} if who is None else {k: v for k, v in who.items() if v is not None}
        try:
            flow = action.get("flow")
            act = Action(
                tool=action.get("tool"),  # type: ignore[arg-type]  # checked by __post_init__
                args=args,
                agent=agent,
                session=rec.get("session"),
                kind=action.get("kind"),  # type: ignore[arg-type]  # checked by __post_init__
                flow=FlowLabels.from_dict(flow, "action") if flow is not None else None,
            )
        except InvalidActionError as exc:
            raise self._bad(seq, f"a decision record with a malformed action ({exc})") from None
        approximate = any(m in data for m in _INEXACT_MARKS) and _inexact(args)
        if approximate:
            self.approximate += 1
        new = evaluate(self.policy, act)
        new_effect = new.effect.value
        if new_effect == old_effect:
            self.unchanged += 1
            return
        self.changed += 1
        key = f"{old_effect}->{new_effect}"
        self.transitions[key] = self.transitions.get(key, 0) + 1
        by_rule = self.by_rule
        for side, rules in (("old", old_rules), ("new", new.rules)):
            for rule in dict.fromkeys(rules or (DEFAULT_RULE,)):
                name = f"{side}:{rule}"
                by_rule[name] = by_rule.get(name, 0) + 1
        if len(self.examples) < self.show:
            agent_id = agent.get("id")
            self.examples.append(
                ReplayChange(
                    seq=seq,
                    tool=act.tool,
                    agent=agent_id if type(agent_id) is str else None,
                    old_effect=old_effect,
                    new_effect=new_effect,
                    old_rules=old_rules,
                    new_rules=new.rules,
                    approximate=approximate,
                )
            )

    def report(self, seconds: float) -> ReplayReport:
        return ReplayReport(
            records=self.records,
            changed=self.changed,
            transitions=_ranked(self.transitions),
            by_rule=_ranked(self.by_rule),
            approximate=self.approximate,
            unchanged=self.unchanged,
            examples=tuple(self.examples),
            old_policies=tuple(self.policies),
            new_policy=self.policy.hash,
            seconds=seconds,
            runtime=self.runtime,
        )


def replay(
    audit_path: str | os.PathLike[str],
    policy: Policy,
    *,
    show: int = 20,
    progress: Callable[[int], None] | None = None,
) -> ReplayReport:
    """Decide every ``warden.decision/v1`` record of the log again under ``policy``.

    Streams the entries in ``seq`` order (bounded memory; O(1) work per entry
    besides the policy's). ``progress`` is called after each chunk of entries
    with the number of entries read so far, of every type. The log is opened
    read-only. A missing or foreign file, a storage error or a malformed
    decision record raises AuditError naming the file (and the entry).
    """
    if show < 0:
        raise ValueError("show must be >= 0")
    started = perf_counter()
    store = open_for_verify(Path(audit_path))
    replayer = _Replayer(policy, show, str(store.path))
    read = 0
    try:
        for rows in store.scan_chunks():
            for seq, _, data, _ in rows:
                replayer.add(seq, data)
            read += len(rows)
            if progress is not None:
                progress(read)
    except sqlite3.DatabaseError as exc:
        raise AuditError(f"{store.path}: not a readable audit log ({exc})") from None
    finally:
        store.close()
    return replayer.report(perf_counter() - started)
