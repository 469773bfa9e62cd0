"""The vocabulary: what an agent asks to do (Action) and the answer (Decision)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from warden.errors import InvalidActionError

__all__ = ["KINDS", "Action", "Decision", "Effect", "with_agent"]


KINDS: Final = frozenset({"tool_call", "message", "delegate"})
"""The action kinds policy v1 knows."""


class Effect(enum.StrEnum):
    """What a decision lets happen."""

    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


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
            return cls(
                tool=data["tool"],
                args=data.get("args") or {},
                agent=data.get("agent") or {},
                session=data.get("session"),
                kind=data.get("kind", "tool_call"),
                context=data.get("context") or {},
            )
        except InvalidActionError as exc:
            raise InvalidActionError(f"{where}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the one approvals bind to)."""
        return {
            "kind": self.kind,
            "tool": self.tool,
            "args": dict(self.args),
            "agent": dict(self.agent),
            "session": self.session,
            "context": dict(self.context),
        }


_FIELDS: Final = frozenset({"tool", "args", "agent", "session", "kind", "context"})


def with_agent(action: Action, agent: dict[str, Any]) -> Action:
    """A copy of ``action`` whose ``agent`` is ``agent`` (a dict, so valid without re-checking).

    The decision path uses it to put verified attributes in place; it costs less
    than half of ``msgspec.structs.replace``, which validates every field again.
    """
    copy: Action = action.__copy__()  # type: ignore[attr-defined]  # msgspec Structs have it
    msgspec.structs.force_setattr(copy, "agent", agent)
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
