"""The interception path: every governed action goes through ``Governor.check``.

Order of the path (DESIGN.md): policy (compiled, indexed rules), then the
approval gate for ``require_approval``, then the sinks: the audit log (on by
default, docs/audit.md) and any others. ``run``/``arun`` and wrapped tools
also record what happened (the outcome), linked by ``Decision.id``.

Fail closed throughout: an exception anywhere on the path, a store that
cannot be reached or a sink that cannot record becomes a deny with a reason;
only WardenError subclasses ever reach the caller.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import functools
import inspect
import os
import threading
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final, ParamSpec, Protocol, TypeVar, overload

import msgspec

from warden.action import Action, Decision, Effect, with_agent
from warden.approvals import DEFAULT_TTL, ApprovalBackend, action_digest, open_approval_store
from warden.errors import (
    ActionDenied,
    ActionKilled,
    ApprovalRequired,
    ConfigurationError,
    SupplyChainError,
)
from warden.policy import Policy, load_policy
from warden.policy.evaluate import evaluate, redactions
from warden.policy.sections import NO_SRE
from warden.runtime.control import Runtime

if TYPE_CHECKING:
    from warden.audit import AuditLog
    from warden.flows import Flows, SessionFlow
    from warden.identity.gate import IdentityConfig, IdentityGate
    from warden.runtime.sandbox import Sandbox, SandboxResult
    from warden.sre.control import SRE

__all__ = ["DecisionLog", "DecisionSink", "Governor", "Session"]

SANDBOX: Final = "sandbox"
"""The obligation a ring-3 call of an exec tool carries: run it only through Governor.exec."""

_STRICT_VALUES: Final = {"": False, "0": False, "false": False, "no": False, "off": False,
                         "1": True, "true": True, "yes": True, "on": True}  # fmt: skip

P = ParamSpec("P")
R = TypeVar("R")


class DecisionSink(Protocol):
    """Receives every decision; raising makes the decision a deny (nothing unrecorded runs)."""

    def record(self, action: Action, decision: Decision) -> None: ...


class DecisionLog:
    """An in-memory, bounded list of the latest decisions (for demos and tests).

    Not tamper-evident and not durable: use the audit log for evidence.
    """

    def __init__(self, maxlen: int = 10_000) -> None:
        self.entries: collections.deque[tuple[float, Action, Decision]] = collections.deque(
            maxlen=maxlen
        )

    def record(self, action: Action, decision: Decision) -> None:
        self.entries.append((time.time(), action, decision))


@dataclass(frozen=True, slots=True)
class Session:
    """Who is acting and in which session, for calls made inside ``with gov.session(...)``.

    ``flow`` is the session's flow state (docs/flows.md): what entered it and
    with which labels; ``record``, ``labels_of``, ``user_said`` and ``task``
    read and change it.
    """

    id: str | None
    agent: Mapping[str, Any] = field(default_factory=dict)
    context: Mapping[str, Any] = field(default_factory=dict)
    flow: SessionFlow | None = None

    def _state(self) -> SessionFlow:
        if self.flow is None:
            raise ConfigurationError("this is not a session opened with Governor.session")
        return self.flow

    def record(self, value: Any, labels: Sequence[str]) -> None:
        """Record ``value`` and its identifiers with ``labels`` (``user``: the user typed it)."""
        if isinstance(labels, str):
            raise ConfigurationError("labels must be a list of strings, not one string")
        self._state().record(value, labels)

    def labels_of(self, value: Any) -> frozenset[str]:
        """The labels an argument holding ``value`` carries in this session."""
        return self._state().labels_of(value)

    def user_said(self, value: Any) -> bool:
        """True when the user typed ``value`` (every string and number in it)."""
        return self._state().user_said(value)

    @contextmanager
    def task(self, scope: Mapping[str, Any] | None = None) -> Iterator[None]:
        """A sub-task: calls must also fit ``scope``; its secrets are dropped when it ends."""
        from warden.flows import compile_scope

        flow = self._state()
        compiled = compile_scope(scope)
        flow.begin_task(compiled)
        try:
            yield
        finally:
            flow.end_task(compiled)


class Governor:
    """Checks actions against a policy before they run.

    >>> gov = Governor.from_policy("policy.yaml")          # doctest: +SKIP
    >>> gov.check(Action(tool="db.drop_table")).effect     # doctest: +SKIP
    <Effect.DENY: 'deny'>
    """

    def __init__(
        self,
        policy: Policy | None,
        *,
        allow_unconfigured: bool = False,
        agent: Mapping[str, Any] | None = None,
        approvals: ApprovalBackend | None = None,
        home: str | os.PathLike[str] | None = None,
        approval_ttl: float = DEFAULT_TTL,
        sinks: Sequence[DecisionSink] = (),
        audit: AuditLog | bool = True,
        identity: IdentityConfig | None = None,
        shadow: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if policy is None and not allow_unconfigured:
            raise ConfigurationError(
                "a Governor needs a policy; pass allow_unconfigured=True to run without one "
                "(every action is then allowed)"
            )
        if policy is not None and not isinstance(policy, Policy):
            raise ConfigurationError(
                f"policy must be a warden.policy.Policy, not {type(policy).__name__}; "
                "use Governor.from_policy(path)"
            )
        if policy is None:
            warnings.warn(
                "warden Governor running WITHOUT a policy: every action is allowed",
                stacklevel=2,
            )
        self._policy = policy
        self._strict = False  # set by from_policy, followed by reload
        self._signers: tuple[str, ...] | None = None  # None: $WARDEN_SIGNERS when needed
        self._default_session = Session(None, dict(agent or {}), {})
        self._current: contextvars.ContextVar[Session | None] = contextvars.ContextVar(
            "warden_session", default=None
        )
        self._approvals = approvals
        self._approvals_lock = threading.Lock()
        self._home = Path(home if home is not None else os.environ.get("WARDEN_HOME", ".warden"))
        self._approval_ttl = approval_ttl
        self._clock = clock
        self.sinks: list[DecisionSink] = list(sinks)
        from warden.audit import AuditLog  # imported here: keeps `import warden` light

        self.audit: AuditLog | None
        if audit is True:
            self.audit = AuditLog(self._home / "audit.db", clock=clock)
        elif audit is False:
            self.audit = None
        elif isinstance(audit, AuditLog):
            self.audit = audit
        else:
            raise ConfigurationError("audit must be True, False or an AuditLog")
        self._identity: IdentityGate | None = None
        if identity is not None:
            from warden.identity.gate import IdentityGate  # loads cryptography and joserfc

            self._identity = IdentityGate(identity, self._home, clock)
        self.runtime = Runtime(
            self._home, policy, self.audit.append if self.audit is not None else None, clock
        )
        self._sandbox: Sandbox | None = None
        self.outcome_listeners: list[Callable[[Action, Decision, str, int], None]] = []
        self.sre: SRE | None = None
        if shadow is not None or (policy is not None and policy.sre is not NO_SRE):
            self.sre = self._new_sre(policy, shadow)
        self._flows: Flows | None = None
        if policy is not None and policy.flows.present:
            self._flows = self._new_flows(policy)

    @classmethod
    def from_policy(
        cls,
        policy: str | os.PathLike[str] | Policy,
        *,
        strict: bool | None = None,
        signers: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> Governor:
        """A Governor for a policy file, a signed bundle, or an already loaded Policy.

        A bundle (docs/supply-chain.md) is verified against ``signers`` (default:
        ``$WARDEN_SIGNERS``, comma-separated did:key). In strict mode (default:
        ``$WARDEN_STRICT=1``) only such a bundle is accepted, here and in
        ``reload``. PolicyError or SupplyChainError if it does not load.
        """
        strict, trusted = _supply_settings(strict, signers)
        gov = cls(_load_source(policy, strict, trusted), **kwargs)
        gov._strict, gov._signers = strict, trusted
        return gov

    @classmethod
    def from_deployment(
        cls,
        path: str | os.PathLike[str],
        *,
        bom: str | os.PathLike[str] | None = None,
        bom_mode: str = "enforce",
        bom_trust: Sequence[str] | None = None,
        strict: bool | None = None,
        **kwargs: Any,
    ) -> Governor:
        """A Governor for a deployment manifest: its policy (or bundle), its home, its signers.

        With ``bom``, the signed AI-BOM is checked against the environment before
        the Governor exists (docs/supply-chain.md, "The start-up gate"): in
        ``enforce`` mode any difference raises SupplyChainError; in ``warn`` mode
        the differences are reported and recorded in the audit log as
        ``warden.bom_drift/v1``. ``signers`` (a keyword) overrides the manifest's
        ``trust.signers`` for the bundle.
        """
        from warden.supply.deployment import load_deployment

        if bom_mode not in ("enforce", "warn"):
            raise ConfigurationError(f"bom_mode must be `enforce` or `warn`, not `{bom_mode}`")
        deployment = load_deployment(path)
        differences: list[str] = []
        if bom is not None:
            from warden.supply.gate import enforce_bom

            differences = enforce_bom(deployment, bom, bom_mode, trusted=bom_trust)
        signers = kwargs.pop("signers", None)
        if signers is None and deployment.signers:
            signers = deployment.signers
        kwargs.setdefault("home", deployment.home)
        gov = cls.from_policy(deployment.policy, strict=strict, signers=signers, **kwargs)
        if bom is not None and differences and gov.audit is not None:
            from warden.supply.gate import drift_record

            gov.audit.append(drift_record(deployment.name, bom, differences))
        return gov

    @property
    def policy(self) -> Policy | None:
        return self._policy

    def reload(self, policy: str | os.PathLike[str] | Policy) -> None:
        """Swap in a new policy atomically; on any error the old one stays.

        Follows the rules the Governor was built with (``from_policy``): a strict
        Governor takes only a bundle signed by one of its signers.
        """
        loaded = _load_source(policy, *_supply_settings(self._strict, self._signers))
        self.runtime.reload(loaded)
        if self.sre is not None:
            self.sre.reload(loaded)
        elif loaded.sre is not NO_SRE:
            self.sre = self._new_sre(loaded, None)
        if self._flows is not None:
            self._flows.reload(loaded.flows)
        elif loaded.flows.present:
            self._flows = self._new_flows(loaded)
        self._policy = loaded

    def _new_flows(self, policy: Policy | None) -> Flows:
        from warden.flows import Flows  # imported here: loads the scanners

        flows = Flows(self._home, is_egress=self._is_egress, clock=self._clock)
        if policy is not None:
            flows.reload(policy.flows)
        return flows

    def _is_egress(self, tool: str) -> bool:
        return self.runtime.rings.is_egress(tool)  # the table of the policy in force

    @property
    def flows(self) -> Flows:
        """The flow layer (docs/flows.md): sessions' labels and the policy's `flows:` section."""
        if self._flows is None:
            with self._approvals_lock:  # the same once-only creation as the approval store
                if self._flows is None:
                    self._flows = self._new_flows(self._policy)
        return self._flows

    def _new_sre(self, policy: Policy | None, shadow: Policy | None) -> SRE:
        from warden.sre.control import SRE  # imported here: only policies with `sre:` need it

        record = self.audit.append if self.audit is not None else None
        return SRE(self._home, policy, self.runtime, record, shadow=shadow, clock=self._clock)

    @property
    def identity(self) -> IdentityGate | None:
        """The identity step (challenge, authenticate, admit, trust), when configured."""
        return self._identity

    @property
    def approvals(self) -> ApprovalBackend:
        """The approval store: the one given, else as the environment says (docs/fleet.md).

        PostgreSQL when ``WARDEN_DATABASE_URL`` is set, else ``home/approvals.db``.
        """
        if self._approvals is None:
            with self._approvals_lock:
                if self._approvals is None:
                    self._approvals = open_approval_store(
                        self._home, ttl=self._approval_ttl, clock=self._clock
                    )
        return self._approvals

    # --- the decision path ----------------------------------------------------------------

    def check(self, action: Action) -> Decision:
        """Decide one action. Never raises for the action's content; errors are denies.

        The path (docs/runtime.md, "Order of the decision path"): kill switch,
        identity, ring, policy rules (with the approval gate), the SRE layer's
        breakers and error budgets, budgets, then the sinks.
        """
        started = perf_counter_ns()
        decision_id = _new_id()
        policy = self._policy
        try:
            decision, action = self._decide(action, policy, started, decision_id)
            flow = action.flow
            if flow is not None and flow.redact:
                decision = _with_redactions(decision, flow.redact)
        except Exception as exc:  # noqa: BLE001 - fail closed on anything unexpected
            decision = _internal_deny(exc, started, policy, decision_id, action)
        for sink in self._sinks_now():
            try:
                sink.record(action, decision)
            except Exception as exc:  # noqa: BLE001 - an unrecorded action must not run
                decision = Decision(
                    Effect.DENY,
                    decision.rules,
                    (*decision.reasons, f"the decision could not be recorded ({exc})"),
                    decision.errors,
                    obligations=decision.obligations,
                    policy_hash=decision.policy_hash,
                    elapsed_ns=perf_counter_ns() - started,
                    id=decision_id,
                )
                break
        sre = self.sre
        if sre is not None and sre.enabled:
            sre.after_decision(action, decision)
        return decision

    def _decide(
        self, action: Action, policy: Policy | None, started: int, decision_id: str
    ) -> tuple[Decision, Action]:
        """The decision, and the action as the path saw it (verified agent, effective ring)."""
        runtime = self.runtime
        gate = self._identity
        flows = self._flows
        if flows is not None and action.session is not None:
            action = flows.annotate(action)  # first: a deny must redact what scanning found too
        agent = action.agent
        kill = runtime.killed(None if gate is not None else agent.get("id"), action.session)
        if kill is not None:
            return _deny(kill.describe(), (), policy, started, decision_id, action), action
        if gate is not None:
            resolved = gate.resolve(action)
            if type(resolved) is str:
                return _deny(
                    f"identity: {resolved}", (), policy, started, decision_id, action
                ), action
            action = resolved  # type: ignore[assignment]  # not a str: an Action
            agent = action.agent
            kill = runtime.killed(agent.get("id"), None)
            if kill is not None:
                return _deny(kill.describe(), (), policy, started, decision_id, action), action
        ring = runtime.effective_ring(agent, gate is not None)
        if agent.get("ring") != ring or type(agent.get("ring")) is not int:
            action = with_agent(action, {**agent, "ring": ring})
        is_exec = False
        if runtime.rings.has_tools:
            refusal, is_exec = runtime.ring_refusal(action, ring)
            if refusal is not None:
                return _deny(refusal, (), policy, started, decision_id, action), action
        if policy is None:
            decision = Decision(
                Effect.ALLOW,
                reasons=("no policy loaded (allow_unconfigured=True)",),
                elapsed_ns=perf_counter_ns() - started,
                id=decision_id,
            )
        else:
            decision = evaluate(policy, action, started, decision_id)
        if flows is not None and decision.effect is not Effect.DENY:
            decision = flows.decide(decision, action, started)
        if decision.effect is Effect.REQUIRE_APPROVAL:
            decision = self._approval_gate(action, decision, started)
        elif gate is not None and decision.rules and decision.effect is Effect.DENY:
            with contextlib.suppress(Exception):  # the deny stands either way
                gate.report_violation(action.agent, decision.rules)
        if decision.effect is not Effect.ALLOW:
            return decision, action
        sre = self.sre
        if sre is not None and sre.enabled:
            hit = sre.check(action)
            if hit is not None:
                kind, rule, reason = hit
                if kind == "deny":
                    return _deny(reason, (rule,), policy, started, decision_id, action), action
                gated = msgspec.structs.replace(
                    decision, effect=Effect.REQUIRE_APPROVAL, rules=(rule,), reasons=(reason,)
                )
                decision = self._approval_gate(action, gated, started)
                if decision.effect is not Effect.ALLOW:
                    sre.release(action)
                    return decision, action
        if runtime.has_budgets:
            over = runtime.budgets.check(action)
            if over is not None:
                if sre is not None:
                    sre.release(action)
                reason, rules = over[1], (f"budget:{over[0]}",)
                return _deny(reason, rules, policy, started, decision_id, action), action
        if is_exec and ring == 3:
            decision = msgspec.structs.replace(
                decision, obligations=(*decision.obligations, SANDBOX)
            )
        return decision, action

    def _sinks_now(self) -> list[DecisionSink]:
        return [self.audit, *self.sinks] if self.audit is not None else self.sinks

    def record_outcome(
        self,
        action: Action,
        decision: Decision,
        status: str,
        duration_ns: int,
        result: Any = None,
        error: BaseException | None = None,
    ) -> None:
        """Record what happened to an action (the wrappers call this); never raises.

        A failure to record is not raised here: the action already happened. A
        broken log makes the next decision a deny instead.
        """
        if self.audit is not None:
            with contextlib.suppress(Exception):  # see the docstring
                self.audit.record_outcome(action, decision, status, duration_ns, result, error)
        sre = self.sre
        if sre is not None and sre.enabled:
            with contextlib.suppress(Exception):
                sre.after_outcome(self._as_seen(action), status, duration_ns, decision.allowed)
        for listener in self.outcome_listeners:
            with contextlib.suppress(Exception):
                listener(action, decision, status, duration_ns)

    def _refuse_unless_allowed(self, action: Action, decision: Decision) -> None:
        """Record a blocked call's outcome (``denied``) and raise; return if allowed."""
        if decision.effect is Effect.ALLOW and SANDBOX in decision.obligations:
            decision = msgspec.structs.replace(
                decision,
                effect=Effect.DENY,
                reasons=(
                    *decision.reasons,
                    f"ring 3 runs `{action.tool}` only in the sandbox (use Governor.exec)",
                ),
            )
        if decision.effect is not Effect.ALLOW:
            self.record_outcome(action, decision, "denied", 0)
            _raise_unless_allowed(decision)

    def _record_failure(
        self, action: Action, decision: Decision, start: int, exc: BaseException
    ) -> None:
        self.record_outcome(action, decision, _status_of(exc), perf_counter_ns() - start, error=exc)

    def _killed(self, action: Action, decision: Decision, start: int, call: Any) -> ActionKilled:
        """Record a call a kill stopped as ``killed``; the exception for its caller."""
        self.record_outcome(action, decision, "killed", perf_counter_ns() - start)
        return ActionKilled(
            msgspec.structs.replace(
                decision, effect=Effect.DENY, reasons=(*decision.reasons, call.reason)
            )
        )

    def _track(self, action: Action) -> Any:
        agent_id = action.agent.get("id") if action.agent else None
        return self.runtime.inflight.track(
            agent_id if type(agent_id) is str else None, action.session, action.tool
        )

    def _call(
        self,
        action: Action,
        decision: Decision,
        fn: Callable[..., R],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result_labels: Sequence[str] | None = None,
    ) -> R:
        self._refuse_unless_allowed(action, decision)
        start = perf_counter_ns()
        with self._track(action) as call:
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                if call.cancelled:
                    raise self._killed(action, decision, start, call) from exc
                self._record_failure(action, decision, start, exc)
                raise
            if call.cancelled:  # a sync function cannot be interrupted: withhold its result
                raise self._killed(action, decision, start, call)
        self.record_outcome(action, decision, "ok", perf_counter_ns() - start, result)
        self.record_result(action, result, result_labels)
        return result

    async def _acall(
        self,
        action: Action,
        decision: Decision,
        fn: Callable[..., Awaitable[R]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        result_labels: Sequence[str] | None = None,
    ) -> R:
        self._refuse_unless_allowed(action, decision)
        start = perf_counter_ns()
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        with self._track(action) as call:
            if task is not None:
                call.add_hook(lambda: loop.call_soon_threadsafe(task.cancel))
            try:
                result = await fn(*args, **kwargs)
            except BaseException as exc:
                if call.cancelled:
                    if isinstance(exc, asyncio.CancelledError) and task is not None:
                        task.uncancel()  # our cancel, answered with ActionKilled instead
                    raise self._killed(action, decision, start, call) from exc
                self._record_failure(action, decision, start, exc)
                raise
            if call.cancelled:
                raise self._killed(action, decision, start, call)
        self.record_outcome(action, decision, "ok", perf_counter_ns() - start, result)
        self.record_result(action, result, result_labels)
        return result

    # --- running code in the sandbox -------------------------------------------------------

    def exec(
        self,
        action: Action,
        argv: Sequence[str] | None = None,
        *,
        code: str | None = None,
        language: str = "python",
        stdin: bytes | None = None,
    ) -> SandboxResult:
        """Check ``action``, then run ``argv`` (or ``code``) in the sandbox (docs/runtime.md).

        Raises ActionBlocked when the decision is not allow, ActionKilled when a kill
        stops it. The outcome records the sandbox mode, and ``error`` when it failed.
        """
        if (argv is None) == (code is None):
            raise ConfigurationError("Governor.exec takes an argv or code=, not both")
        decision = self.check(action)
        if decision.effect is not Effect.ALLOW:
            self.record_outcome(action, decision, "denied", 0)
            _raise_unless_allowed(decision)
        sandbox = self.sandbox
        read, write, network = self.runtime.rings.sandbox_grants(action.tool)
        start = perf_counter_ns()
        with self._track(action) as call:
            try:
                if read or write or network:  # what the policy's `tools:` entry grants
                    sandbox = sandbox.with_grants(read, write, network)
                if code is not None:
                    result = sandbox.run_code(code, language, stdin=stdin)
                else:
                    assert argv is not None
                    result = sandbox.run(argv, stdin=stdin)
            except BaseException as exc:
                self._record_failure(action, decision, start, exc)
                raise
            if call.cancelled or result.killed:
                raise self._killed(action, decision, start, call)
        status = "ok" if result.ok else ("timeout" if result.timed_out else "error")
        self.record_outcome(
            action,
            decision,
            status,
            perf_counter_ns() - start,
            {"mode": result.mode, "returncode": result.returncode, "limit": result.limit},
        )
        self.record_result(action, {"stdout": result.stdout, "stderr": result.stderr})
        return result

    @property
    def sandbox(self) -> Sandbox:
        """The sandbox ``exec`` uses (bubblewrap, failing closed); assignable."""
        if self._sandbox is None:
            from warden.runtime.sandbox import Sandbox

            self._sandbox = Sandbox()
        return self._sandbox

    @sandbox.setter
    def sandbox(self, value: Sandbox) -> None:
        self._sandbox = value

    def report_usage(self, action: Action, *, tokens: int = 0, cost: float = 0.0) -> None:
        """Count usage (model tokens, money) against the policy's budgets for this action."""
        self.runtime.budgets.report(self._as_seen(action), tokens, cost)

    def _as_seen(self, action: Action) -> Action:
        """The action with the agent the decision path would see (for budget keys)."""
        if self._identity is None:
            return action
        resolved = self._identity.resolve(action)
        return action if type(resolved) is str else resolved  # type: ignore[return-value]

    def _approval_gate(self, action: Action, decision: Decision, started: int) -> Decision:
        def answer(effect: Effect, reason: str, approval_id: str | None) -> Decision:
            return Decision(
                effect,
                decision.rules,
                (*decision.reasons, reason),
                decision.errors,
                obligations=decision.obligations,
                policy_hash=decision.policy_hash,
                elapsed_ns=perf_counter_ns() - started,
                approval_id=approval_id,
                id=decision.id,
            )

        try:
            digest = action_digest(action)
        except ValueError as exc:
            return answer(Effect.DENY, f"no approval can be bound to this action: {exc}", None)
        try:
            result, req = self.approvals.gate(
                action,
                digest,
                decision.rules,
                (*decision.reasons, *decision.errors),
                decision.policy_hash,
            )
        except Exception as exc:  # noqa: BLE001 - a store that fails or is down: deny
            return answer(Effect.DENY, f"approval store unavailable: {exc}", None)
        if result == "approved":
            return answer(Effect.ALLOW, f"approved by `{req.decided_by}` ({req.id})", req.id)
        if result == "denied":
            note = f": {req.note}" if req.note else ""
            return answer(
                Effect.DENY, f"approval {req.id} denied by `{req.decided_by}`{note}", req.id
            )
        if result == "expired":
            return answer(Effect.DENY, f"approval {req.id} expired", req.id)
        return answer(Effect.REQUIRE_APPROVAL, f"waiting for approval {req.id}", req.id)

    # --- sessions and wrapped calls ---------------------------------------------------------

    @contextmanager
    def session(
        self,
        session_id: str,
        *,
        agent: Mapping[str, Any] | None = None,
        context: Mapping[str, Any] | None = None,
        user_request: str | None = None,
        scope: Mapping[str, Any] | None = None,
    ) -> Iterator[Session]:
        """Make governed calls inside the block belong to ``session_id`` and ``agent``.

        The block also opens the session's flow state (docs/flows.md):
        ``user_request`` is the user's own text (trusted: label ``user``);
        ``scope`` maps tool globs to True or a condition, and calls outside it
        need approval. Blocks with the same id share the state.
        """
        from warden.flows import compile_scope

        if type(session_id) is not str or not session_id:
            raise ConfigurationError("a session id must be a non-empty string")
        if user_request is not None and type(user_request) is not str:
            raise ConfigurationError("user_request must be the user's text (a string)")
        compiled = compile_scope(scope)
        flows = self.flows
        base = self._default_session
        flow = flows.open(session_id, user_request, compiled)
        sess = Session(
            session_id,
            dict(agent) if agent is not None else base.agent,
            dict(context or {}),
            flow,
        )
        token = self._current.set(sess)
        try:
            yield sess
        finally:
            self._current.reset(token)
            flows.close(flow, compiled)

    def record_result(
        self, action: Action, result: Any, labels: Sequence[str] | None = None
    ) -> None:
        """Record what a call of ``action`` returned into its session (wrapped tools do it).

        ``labels`` are the result's labels from code; the policy's
        ``flows.sources`` add theirs (docs/flows.md). Never raises: a failure
        makes the session carry every label it has seen (fail closed).
        """
        flows = self._flows
        if flows is not None:
            flows.after_call(action, result, labels)

    def current_session(self) -> Session:
        return self._current.get() or self._default_session

    def action_for(self, tool: str, args: Mapping[str, Any], kind: str = "tool_call") -> Action:
        """The Action a governed call of ``tool`` with ``args`` makes in the current session."""
        sess = self.current_session()
        return Action(
            tool=tool,
            args=args,
            agent=sess.agent,
            session=sess.id,
            kind=kind,
            context=sess.context,
        )

    def run(self, action: Action, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Check ``action``; call ``fn(*args, **kwargs)`` only when it is allowed."""
        return self._call(action, self.check(action), fn, args, kwargs)

    async def arun(
        self, action: Action, fn: Callable[..., Awaitable[R]], /, *args: Any, **kwargs: Any
    ) -> R:
        """The asyncio form of :meth:`run`."""
        return await self._acall(action, self.check(action), fn, args, kwargs)

    @overload
    def tool(self, fn: Callable[P, R], /) -> Callable[P, R]: ...

    @overload
    def tool(
        self,
        name: str | None = None,
        /,
        *,
        kind: str = "tool_call",
        approval_wait: float | None = None,
        result_labels: Sequence[str] | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]: ...

    def tool(
        self,
        name: str | Callable[P, R] | None = None,
        /,
        *,
        kind: str = "tool_call",
        approval_wait: float | None = None,
        result_labels: Sequence[str] | None = None,
    ) -> Any:
        """Decorator: govern every call of the function as tool ``name``.

        Denied calls raise ActionDenied; calls needing approval raise
        ApprovalRequired, or first wait up to ``approval_wait`` seconds for a
        human to decide. ``result_labels`` label what the tool returns
        (docs/flows.md): ``["untrusted"]`` for mail or web, ``["sensitive"]``
        for a customer database, ``["secret"]`` for credentials.
        """
        if callable(name):
            return self.wrap(name, tool=name.__name__, kind=kind, approval_wait=approval_wait)

        def deco(fn: Callable[P, R]) -> Callable[P, R]:
            return self.wrap(
                fn,
                tool=name or fn.__name__,
                kind=kind,
                approval_wait=approval_wait,
                result_labels=result_labels,
            )

        return deco

    def wrap(
        self,
        fn: Callable[P, R],
        *,
        tool: str,
        kind: str = "tool_call",
        approval_wait: float | None = None,
        result_labels: Sequence[str] | None = None,
    ) -> Callable[P, R]:
        """Return ``fn`` governed as ``tool``: sync and async callables both work."""
        Action(tool=tool, kind=kind)  # validates name and kind now, not at the first call
        if isinstance(result_labels, str) or (
            result_labels is not None
            and not all(type(label) is str and label for label in result_labels)
        ):
            raise ConfigurationError("result_labels must be a list of non-empty strings")
        labels = tuple(result_labels) if result_labels is not None else None
        to_args = _arguments_of(fn)

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def governed_async(*args: Any, **kwargs: Any) -> Any:
                action = self.action_for(tool, to_args(args, kwargs), kind)
                decision = self.check(action)
                if (
                    decision.effect is Effect.REQUIRE_APPROVAL
                    and approval_wait
                    and (decision.approval_id)
                ):
                    await self.approvals.wait_async(decision.approval_id, approval_wait)
                    decision = self.check(action)
                return await self._acall(action, decision, fn, args, kwargs, labels)

            return governed_async  # type: ignore[return-value]  # same signature, async

        @functools.wraps(fn)
        def governed(*args: P.args, **kwargs: P.kwargs) -> R:
            action = self.action_for(tool, to_args(args, kwargs), kind)
            decision = self.check(action)
            if (
                decision.effect is Effect.REQUIRE_APPROVAL
                and approval_wait
                and (decision.approval_id)
            ):
                self.approvals.wait(decision.approval_id, approval_wait)
                decision = self.check(action)
            return self._call(action, decision, fn, args, kwargs, labels)

        return governed


def _supply_settings(
    strict: bool | None, signers: Sequence[str] | None
) -> tuple[bool, tuple[str, ...]]:
    """Strict mode and trusted signers, from the arguments or else the environment."""
    if strict is None:
        value = os.environ.get("WARDEN_STRICT", "").strip().lower()
        if value not in _STRICT_VALUES:
            # a security switch: a value we cannot read must not quietly mean "off"
            raise ConfigurationError(f"WARDEN_STRICT must be 1 or 0, not `{value}`")
        strict = _STRICT_VALUES[value]
    if signers is None:
        from warden.supply.bundle import env_signers

        return strict, env_signers()
    if isinstance(signers, str):
        raise ConfigurationError("signers must be a list of did:key, not one string")
    return strict, tuple(dict.fromkeys(signers))


def _load_source(
    source: str | os.PathLike[str] | Policy, strict: bool, signers: Sequence[str]
) -> Policy:
    """The policy a path (a YAML file or a signed bundle) or a Policy stands for.

    Strict mode refuses anything but a bundle, so that what runs is what was
    signed: a Policy object may have come from anywhere.
    """
    if isinstance(source, Policy):
        if strict:
            raise SupplyChainError(
                "strict mode loads only signed bundles: a loaded Policy object is refused "
                "(pass the bundle's path)"
            )
        return source
    from warden.supply.bundle import is_bundle, load_bundle

    if is_bundle(source):
        if not signers:
            raise SupplyChainError(
                f"a bundle needs trusted signers: `{source}` cannot be verified "
                "(pass signers=[did, ...] or set WARDEN_SIGNERS)"
            )
        return load_bundle(source, signers)
    if strict:
        if not os.path.exists(source):
            raise SupplyChainError(
                f"strict mode loads only signed bundles: `{source}`: no such file"
            )
        raise SupplyChainError(
            f"strict mode loads only signed bundles: `{source}` is not one "
            "(build it with `warden policy bundle`)"
        )
    return load_policy(source)


def _raise_unless_allowed(decision: Decision) -> None:
    if decision.effect is Effect.ALLOW:
        return
    if decision.effect is Effect.REQUIRE_APPROVAL:
        raise ApprovalRequired(decision)
    raise ActionDenied(decision)


def _with_redactions(decision: Decision, names: tuple[str, ...]) -> Decision:
    """``decision`` also obliging the audit log to redact arguments ``names``."""
    extra = {f"redact:args.{n}" for n in names} - set(decision.obligations)
    if not extra:
        return decision
    return msgspec.structs.replace(
        decision, obligations=tuple(sorted({*decision.obligations, *extra}))
    )


def _deny(
    reason: str,
    rules: tuple[str, ...],
    policy: Policy | None,
    started: int,
    decision_id: str,
    action: Action,
) -> Decision:
    """A deny made outside the rules; it keeps the policy's ``redact`` obligations."""
    return Decision(
        Effect.DENY,
        rules,
        (reason,),
        obligations=redactions(policy, action) if policy is not None else (),
        policy_hash=policy.hash if policy is not None else "",
        elapsed_ns=perf_counter_ns() - started,
        id=decision_id,
    )


def _internal_deny(
    exc: BaseException, started: int, policy: Policy | None, decision_id: str, action: Action
) -> Decision:
    obligations: tuple[str, ...] = ()
    if policy is not None:
        with contextlib.suppress(Exception):  # the deny stands even if this fails too
            obligations = redactions(policy, action)
    return Decision(
        Effect.DENY,
        (),
        (f"internal error on the decision path ({type(exc).__name__}): denied",),
        (f"{type(exc).__name__}: {exc}",),
        obligations=obligations,
        policy_hash=policy.hash if policy is not None else "",
        elapsed_ns=perf_counter_ns() - started,
        id=decision_id,
    )


def _new_id() -> str:
    return os.urandom(16).hex()


def _status_of(exc: BaseException) -> str:
    """The outcome status for an exception that ended a governed call."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, Exception):
        return "error"
    return "killed"  # cancelled, interrupted or exiting: the call did not finish


def _arguments_of(
    fn: Callable[..., Any],
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """A function mapping a call's (args, kwargs) to the named arguments policies see."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        sig = None
    if sig is None:

        def raw(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            return {"args": list(args), **kwargs} if args else dict(kwargs)

        return raw
    params = list(sig.parameters.values())
    skip = params[0].name if params and params[0].name in ("self", "cls") else None
    var_pos = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), None)
    var_kw = next((p.name for p in params if p.kind is p.VAR_KEYWORD), None)

    def named(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = sig.bind(*args, **kwargs)  # a wrong call raises TypeError, as the bare call would
        bound.apply_defaults()
        out: dict[str, Any] = {}
        for key, value in bound.arguments.items():
            if key == skip:
                continue
            if key == var_kw:
                for k, v in value.items():
                    out.setdefault(k, v)
            elif key == var_pos:
                out[key] = list(value)
            else:
                out[key] = value
        return out

    simple = skip is None and all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params)
    if simple:
        # The common case, about 10x cheaper than Signature.bind: plain parameters only.
        names = tuple(p.name for p in params)
        known = frozenset(names)
        defaults = {p.name: p.default for p in params if p.default is not p.empty}

        def fast(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
            if len(args) <= len(names) and known.issuperset(kwargs):
                out = dict(zip(names, args, strict=False))
                if not kwargs or out.keys().isdisjoint(kwargs):
                    out.update(kwargs)
                    if len(out) == len(names):
                        return out
                    missing = [n for n in names if n not in out and n not in defaults]
                    if not missing:
                        return {n: out[n] if n in out else defaults[n] for n in names}
            return named(args, kwargs)  # raises the TypeError a bad call deserves

        return fast

    return named
