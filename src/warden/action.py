"""The vocabulary: what an agent asks to do (Action) and the answer (Decision)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from warden.errors import InvalidActionError

__all__ = ["KINDS", "Action", "Decision", "Effect", "FlowLabels", "with_agent", "with_flow"]


KINDS: Final = frozenset({"tool_call", "message", "delegate"})
"""The action kinds policy v1 knows."""


class Effect(enum.StrEnum):
    """What a decision lets happen."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class FlowLabels(msgspec.Struct, frozen=True, gc=False):
    """Where an action's values came from (docs/flows.md, "The action's labels").

    ``args`` maps the path of each labelled string or number in the arguments
    (``iban``, ``payment.to``, ``recipients[1]``) to its sorted labels;
    ``session`` is every label the session has touched so far; ``redact``
    names the arguments in which the scanners found a secret or a card number.
    """

    args: Mapping[str, tuple[str, ...]] = msgspec.field(default_factory=dict)
    session: tuple[str, ...] = ()
    redact: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Any, where: str) -> FlowLabels:
        """The JSON form (``{"args": {path: [labels]}, "session": [labels]}``), checked."""
        if not isinstance(data, Mapping):
            raise InvalidActionError(f"{where}: `flow` must be a JSON object")
        unknown = sorted(set(data) - {"args", "session"})
        if unknown:
            raise InvalidActionError(f"{where}: unknown field `flow.{unknown[0]}`")
        args = data.get("args") or {}
        if not isinstance(args, Mapping):
            raise InvalidActionError(f"{where}: `flow.args` must map argument paths to labels")
        out: dict[str, tuple[str, ...]] = {}
        for path, labels in args.items():
            out[str(path)] = _labels(labels, f"{where}: `flow.args.{path}`")
        return cls(out, _labels(data.get("session") or [], f"{where}: `flow.session`"))

    def to_dict(self) -> dict[str, Any]:
        return {"args": {k: list(v) for k, v in self.args.items()}, "session": list(self.session)}


def _labels(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(type(x) is str and x for x in value):
        raise InvalidActionError(f"{where} must be a list of labels (non-empty strings)")
    return tuple(sorted(set(value)))


class Action(msgspec.Struct, frozen=True):
    """One thing an agent asks to do.

    ``agent`` holds what the host application asserts about the agent: ``id``
    (a DID), ``trust`` (0-1000), ``ring`` (0-3) and ``labels``. Policies read
    all of it by key. Mappings are not copied: do not mutate them while the
    action is being checked.
    """

    tool: str
    args: Mapping[str, Any] = msgspec.field(default_factory=dict)
    agent: Mapping[str, Any] = msgspec.field(default_factory=dict)
    session: str | None = None
    kind: str = "tool_call"
    context: Mapping[str, Any] = msgspec.field(default_factory=dict)
    flow: FlowLabels | None = None

    def __post_init__(self) -> None:
        if type(self.tool) is not str or not self.tool:
            raise InvalidActionError(f"action `tool` must be a non-empty string, not {self.tool!r}")
        if self.kind not in KINDS:
            raise InvalidActionError(
                f"action `kind` must be one of {', '.join(sorted(KINDS))}, not `{self.kind}`"
            )
        for name in ("args", "agent", "context"):
            if not isinstance(getattr(self, name), Mapping):
                raise InvalidActionError(f"action `{name}` must be a mapping")
        if self.session is not None and type(self.session) is not str:
            raise InvalidActionError("action `session` must be a string or null")
        if self.flow is not None and not isinstance(self.flow, FlowLabels):
            raise InvalidActionError("action `flow` must be a FlowLabels")

    @classmethod
    def from_dict(cls, data: Any, *, where: str = "action") -> Action:
        """Build an Action from its JSON form, rejecting unknown or mistyped fields."""
        if not isinstance(data, Mapping):
            raise InvalidActionError(f"{where}: an action must be a JSON object")
        unknown = sorted(set(data) - _FIELDS)
        if unknown:
            raise InvalidActionError(
                f"{where}: unknown field `{unknown[0]}` (known: {', '.join(sorted(_FIELDS))})"
            )
        if "tool" not in data:
            raise InvalidActionError(f"{where}: missing field `tool`")
        try:
            flow = data.get("flow")
            return cls(
                tool=data["tool"],
                args=data.get("args") or {},
                agent=data.get("agent") or {},
                session=data.get("session"),
                kind=data.get("kind", "tool_call"),
                context=data.get("context") or {},
                flow=FlowLabels.from_dict(flow, "action") if flow is not None else None,
            )
        except InvalidActionError as exc:
            raise InvalidActionError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``flow`` only when the action carries labels)."""
        out = {
            "kind": self.kind,
            "tool": self.tool,
            "args": dict(self.args),
            "agent": dict(self.agent),
            "session": self.session,
            "context": dict(self.context),
        }
        if self.flow is not None:
            out["flow"] = self.flow.to_dict()
        return out


_FIELDS: Final = frozenset({"tool", "args", "agent", "session", "kind", "context", "flow"})


def with_agent(action: Action, agent: dict[str, Any]) -> Action:
    """A copy of ``action`` whose ``agent`` is ``agent`` (a dict, so valid without re-checking).

    The decision path uses it to put verified attributes in place; it costs less
    than half of ``msgspec.structs.replace``, which validates every field again.
    """
    copy: Action = action.__copy__()  # type: ignore[attr-defined]  # msgspec Structs have it
    msgspec.structs.force_setattr(copy, "agent", agent)
    return copy


def with_flow(action: Action, flow: FlowLabels) -> Action:
    """A copy of ``action`` carrying ``flow`` (the labels the Governor computed)."""
    copy: Action = action.__copy__()  # type: ignore[attr-defined]  # msgspec Structs have it
    msgspec.structs.force_setattr(copy, "flow", flow)
    return copy


class Decision(msgspec.Struct, frozen=True, gc=False):
    """The answer to an Action; an immutable value, safe to log and compare.

    ``rules`` lists, in document order, every matching rule whose effect is the
    winning one (empty when the policy default decided). ``errors`` lists the
    evaluation errors met on the way; an error never turns into an allow.
    ``elapsed_ns`` is the wall time the Governor spent deciding. ``id`` is a
    random 32-hex name the Governor gives each decision (the audit log and
    outcomes refer to it); decisions made by ``warden.policy.evaluate`` alone
    have none.
    """

    effect: Effect
    rules: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()
    errors: tuple[str, ...] = ()
    obligations: tuple[str, ...] = ()
    policy_hash: str = ""
    elapsed_ns: int = 0
    approval_id: str | None = None
    id: str = ""

    @property
    def allowed(self) -> bool:
        return self.effect is Effect.ALLOW

    def to_dict(self) -> dict[str, Any]:
        """The JSON form printed by `warden policy eval`."""
        out: dict[str, Any] = {
            "effect": self.effect.value,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "errors": list(self.errors),
        }
        if self.approval_id is not None:
            out["approval_id"] = self.approval_id
        if self.id:
            out["id"] = self.id
        out["policy_hash"] = self.policy_hash
        return out
