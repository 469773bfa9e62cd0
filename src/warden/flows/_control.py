"""The flow step of the decision path: labels on actions, egress, sequences, scope, stores.

One ``Flows`` per Governor. It holds the open sessions' flow state, applies
the policy's ``flows:`` section, and remembers what ``stores`` tools write.
Semantics: docs/flows.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from time import perf_counter_ns
from typing import Any, Final

import msgspec

from warden._re import ByTool, compile_glob, search
from warden.action import Action, Decision, Effect, FlowLabels, with_flow
from warden.errors import ConfigurationError
from warden.flows._session import DROPPED, INTEGRITY, USER, Scope, SessionFlow, keys_of_leaf, leaves
from warden.flows._store import FlowStore
from warden.policy import Policy, evaluate
from warden.policy.expr import CompiledExpr, ExprCompileError, compile_expr
from warden.policy.flowspec import NO_FLOWS, EgressSpec, FlowSpec, SequenceSpec
from warden.scan.identifiers import destination_forms

__all__ = ["FlowHit", "Flows", "compile_scope", "evaluate_with_flows"]

FlowHit = tuple[str, str, str]
"""What the flow step says about an action: (``deny`` or ``approval``, rule, reason)."""

DEFAULT_SOURCE: Final = frozenset({"untrusted"})
"""The labels of a tool's results when neither code nor policy labels them."""


def compile_scope(scope: Mapping[str, Any] | None) -> Scope | None:
    """A scope from ``{tool glob: True or condition}``; ConfigurationError when it is wrong."""
    if scope is None:
        return None
    if not isinstance(scope, Mapping) or not scope:
        raise ConfigurationError("a scope maps tool globs to True or a condition (not empty)")
    entries: list[tuple[str, Any, CompiledExpr | None]] = []
    for glob, cond in scope.items():
        if type(glob) is not str or not glob.strip():
            raise ConfigurationError(f"scope: `{glob!r}` is not a tool glob")
        rx = compile_glob(glob)
        if cond is True:
            entries.append((glob, rx, None))
            continue
        if type(cond) is not str:
            raise ConfigurationError(
                f"scope `{glob}`: give True or a condition in the policy language, not {cond!r}"
            )
        try:
            entries.append((glob, rx, compile_expr(cond)))
        except ExprCompileError as exc:
            issue = exc.issues[0]
            raise ConfigurationError(
                f"scope `{glob}`: {issue.line}:{issue.col}: {issue.code}: {issue.message}"
            ) from None
    return Scope(entries)


_NO_LABELS: Final = FlowLabels()


def _never(tool: str) -> bool:
    return False


class Flows:
    """The open sessions' flow state and the policy's ``flows:`` section."""

    def __init__(
        self,
        home: Path,
        spec: FlowSpec = NO_FLOWS,
        is_egress: Callable[[str], bool] | None = None,  # the runtime's ring table
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._home = home
        self._clock = clock or time.time
        self._sessions: dict[str, SessionFlow] = {}
        self._lock = threading.Lock()
        self._store: FlowStore | None = None
        self._tools_egress = is_egress or _never
        self._apply(spec)

    def _apply(self, spec: FlowSpec) -> None:
        self.spec = spec
        self.integrity = INTEGRITY | frozenset(spec.integrity)
        sources = [(compile_glob(p), frozenset(labels)) for p, labels in spec.sources]
        egress = [(compile_glob(e.pattern), e) for e in spec.egress]
        stores = [compile_glob(p) for p in spec.stores]
        self._sources: ByTool[tuple[Any, frozenset[str]]] = ByTool(
            sources, lambda item, tool: search(item[0], tool)
        )
        self._egress: ByTool[tuple[Any, EgressSpec]] = ByTool(
            egress, lambda item, tool: search(item[0], tool)
        )
        self._stores: ByTool[Any] = ByTool(stores, search)
        self._sequences: ByTool[SequenceSpec] = ByTool(spec.sequences, self._sequence_applies)
        self._allow = {e.pattern: [compile_glob(g) for g in e.allow or ()] for e in spec.egress}

    def reload(self, spec: FlowSpec) -> None:
        with self._lock:
            self._apply(spec)

    def _sequence_applies(self, seq: SequenceSpec, tool: str) -> bool:
        if seq.tools is None:
            return self.is_egress(tool)
        return any(search(compile_glob(g), tool) for g in seq.tools)

    def is_egress(self, tool: str) -> bool:
        """True when the `flows.egress` or `tools:` section says ``tool`` sends data out."""
        return self._tools_egress(tool)

    # --- sessions --------------------------------------------------------------------------

    def open(self, session_id: str, user_request: str | None, scope: Scope | None) -> SessionFlow:
        """Open (or join) the flow state of ``session_id``."""
        with self._lock:
            flow = self._sessions.get(session_id)
            if flow is None:
                flow = SessionFlow(session_id, self.integrity, self._persisted)
                self._sessions[session_id] = flow
            flow.refs += 1
        if user_request is not None:
            flow.record_user(user_request)
        if scope is not None:
            flow.begin_task(scope)
        return flow

    def close(self, flow: SessionFlow, scope: Scope | None) -> None:
        if scope is not None:
            flow.end_task(scope)
        with self._lock:
            flow.refs -= 1
            if flow.refs <= 0 and self._sessions.get(flow.id) is flow:
                del self._sessions[flow.id]

    def get(self, session_id: str | None) -> SessionFlow | None:
        return None if session_id is None else self._sessions.get(session_id)

    # --- the decision path -----------------------------------------------------------------

    def annotate(self, action: Action) -> Action:
        """``action`` carrying the labels of its arguments, when its session has flow state."""
        flow = self._sessions.get(action.session) if action.session is not None else None
        if flow is None:
            return action
        return with_flow(action, flow.action_flow(action.args, self.spec.scan_arguments))

    def check(self, action: Action) -> list[FlowHit]:
        """What the flow step says about an action (empty: nothing to add).

        Egress allowlists read the arguments alone, so they hold for an action
        without labels too (no session state, or a caller that sent none).
        """
        labelled = action.flow if action.flow is not None else _NO_LABELS
        hits: list[FlowHit] = []
        for _, spec in self._egress(action.tool):
            if spec.allow is not None:
                refusal = self._egress_refusal(action, spec)
                if refusal is not None:
                    hits.append(("deny", f"flow:egress:{action.tool}", refusal))
        dropped = [p for p, labels in labelled.args.items() if DROPPED in labels]
        if dropped:
            hits.append(
                (
                    "deny",
                    "flow:dropped",
                    f"argument `{dropped[0]}` holds a credential dropped when its task ended",
                )
            )
        sequences = self._sequences(action.tool)
        if sequences:
            seen = set(labelled.session)
            for labels in labelled.args.values():
                seen.update(labels)
            for seq in sequences:
                if not seen.isdisjoint(seq.after):
                    kind = "deny" if seq.effect is Effect.DENY else "approval"
                    hits.append((kind, f"flow:{seq.id}", seq.reason))
        flow = self._sessions.get(action.session) if action.session is not None else None
        if flow is not None and flow.scopes:
            outside = flow.outside_scope(action)
            if outside is not None:
                hits.append(("approval", "flow:scope", outside))
        return hits

    def decide(self, decision: Decision, action: Action, started: int = 0) -> Decision:
        """``decision`` after the flow step: its denies win; its approvals join the rules'.

        A deny from the rules is returned as it is (docs/flows.md, "Order").
        """
        if decision.effect is Effect.DENY:
            return decision
        hits = self.check(action)
        if not hits:
            return decision
        elapsed = perf_counter_ns() - started if started else decision.elapsed_ns
        denies = [(rule, reason) for kind, rule, reason in hits if kind == "deny"]
        if denies:
            return Decision(
                Effect.DENY,
                tuple(r for r, _ in denies),
                tuple(reason for _, reason in denies),
                decision.errors,
                obligations=decision.obligations,
                policy_hash=decision.policy_hash,
                elapsed_ns=elapsed,
                id=decision.id,
            )
        rules = tuple(r for _, r, _ in hits)
        reasons = tuple(reason for _, _, reason in hits)
        if decision.effect is Effect.REQUIRE_APPROVAL:
            rules, reasons = (*decision.rules, *rules), (*decision.reasons, *reasons)
        return msgspec.structs.replace(
            decision,
            effect=Effect.REQUIRE_APPROVAL,
            rules=rules,
            reasons=reasons,
            elapsed_ns=elapsed,
        )

    def _egress_refusal(self, action: Action, spec: EgressSpec) -> str | None:
        allow = self._allow[spec.pattern]
        found = False
        for name in spec.to:
            value: Any = action.args
            for part in name.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            if value is None or (isinstance(value, (list, tuple)) and not value):
                continue  # an optional destination (cc) left out
            dests = [value] if isinstance(value, str) else value
            if not isinstance(dests, (list, tuple)):
                return f"egress: `{action.tool}` has a destination in `{name}` that is not text"
            found = True
            for dest in dests:
                if not isinstance(dest, str) or not dest.strip():
                    return f"egress: `{action.tool}` has an empty or non-text destination `{name}`"
                forms = destination_forms(dest)
                if not any(search(rx, form) for rx in allow for form in forms):
                    shown = dest if len(dest) <= 80 else dest[:77] + "..."
                    return (
                        f"egress: `{action.tool}` to `{shown}` is outside its allowlist "
                        f"({', '.join(spec.allow or ())})"
                    )
        if not found:
            return f"egress: `{action.tool}` names no destination (in {', '.join(spec.to)})"
        return None

    # --- after a call ----------------------------------------------------------------------

    def source_labels(self, tool: str, given: Iterable[str] | None) -> frozenset[str]:
        """The labels of ``tool``'s results: ``tool:NAME``, code's and policy's, or the default."""
        labels: set[str] = set(given or ())
        for _, more in self._sources(tool):
            labels.update(more)
        if given is None and not self._sources(tool):
            labels.update(DEFAULT_SOURCE)
        labels.add(f"tool:{tool}")
        return frozenset(labels)

    def after_call(self, action: Action, result: Any, given: Iterable[str] | None) -> None:
        """A call of ``action`` returned ``result``: remember stored values, record the result."""
        flow = self._sessions.get(action.session) if action.session is not None else None
        if flow is None:
            return
        labels = self.source_labels(action.tool, given)
        try:
            if self._stores(action.tool):
                self._remember(flow, action)
            if result is not None:
                flow.record(result, labels)
        except Exception:  # noqa: BLE001 - fail closed: the session now carries every label
            flow.degrade(labels)

    def _remember(self, flow: SessionFlow, action: Action) -> None:
        confidential = frozenset(
            label
            for label in flow.touched
            if label not in self.integrity and not label.startswith("tool:") and label != USER
        )
        items: dict[str, frozenset[str]] = {}
        for _, leaf in leaves(action.args):
            labels, _ = flow.leaf_labels(leaf)
            labels = (labels - {USER}) | confidential
            if not labels:
                continue
            exact, ids = keys_of_leaf(leaf)
            for key in (exact, *ids):
                if key is not None:
                    items[key] = items.get(key, frozenset()) | labels
        if items:
            self._open_store().remember(items, self._clock())

    def _open_store(self) -> FlowStore:
        if self._store is None:
            with self._lock:
                if self._store is None:
                    self._store = FlowStore(self._home / "flows.db")
        return self._store

    def _persisted(self, keys: list[str]) -> Mapping[str, frozenset[str]]:
        if not self.spec.stores:
            return {}
        return self._open_store().lookup(keys)

    def close_store(self) -> None:
        if self._store is not None:
            self._store.close()


def evaluate_with_flows(policy: Policy, action: Action) -> Decision:
    """The rules' decision, then the flow step with the labels ``action`` carries (no session).

    What `warden policy eval` and `warden policy test` decide: egress and
    sequence rules apply; task scopes, which live in a session, do not.
    """
    decision = evaluate(policy, action)
    if not policy.flows.present:
        return decision
    from warden.runtime.rings import RingTable

    flows = Flows(Path("."), policy.flows, RingTable(policy).is_egress)
    return flows.decide(decision, action)
