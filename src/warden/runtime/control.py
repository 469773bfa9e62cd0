"""The runtime step of the Governor: kills, rings and budgets (docs/runtime.md).

``Runtime`` belongs to one Governor. It owns the kill switch and ring state
(a ``RuntimeStore``: ``RuntimeState`` on disk, or ``RedisRuntimeState`` when
``WARDEN_REDIS_URL`` is set; docs/fleet.md), the calls in flight, the
policy's ring table and its budgets. Kills, restores and ring changes are
appended to the audit log.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from warden.errors import RuntimeStateError
from warden.runtime.budgets import Budgets
from warden.runtime.inflight import Call, InFlight
from warden.runtime.rings import UNTRUSTED, RingTable
from warden.runtime.state import Kill, RingCeiling
from warden.store._config import FleetConfig
from warden.store.budgets import BudgetCounters, RedisBudgets
from warden.store.runtime import RuntimeStore, open_runtime_store

if TYPE_CHECKING:
    from warden.action import Action
    from warden.policy import Policy
    from warden.policy.sections import BudgetSpec

__all__ = ["DEMOTE_BELOW_TRUST", "Runtime"]

DEMOTE_BELOW_TRUST = 400
"""With identity, trust below this (the probation and untrusted tiers) demotes to ring 3."""


def _matches(kill: Kill, call: Call) -> bool:
    if kill.scope == "all":
        return True
    if kill.scope == "agent":
        return call.agent == kill.target
    return call.session == kill.target


class Runtime:
    """Kill switch, rings, budgets and calls in flight for one Governor."""

    def __init__(
        self,
        home: str | os.PathLike[str],
        policy: Policy | None,
        record: Callable[[dict[str, Any]], None] | None = None,
        clock: Callable[[], float] = time.time,
        *,
        state: RuntimeStore | None = None,
    ) -> None:
        """``state``: the kill and ring store to use (default: the one the environment names)."""
        self.state: RuntimeStore = (
            state if state is not None else open_runtime_store(home, clock=clock)
        )
        self.inflight = InFlight()
        self._record = record
        self._clock = clock
        self.rings = RingTable(policy)
        self.budgets = _open_budgets(policy.budgets if policy is not None else ())
        self.state.on_kill(self._cancel_matching)

    def reload(self, policy: Policy) -> None:
        """Take the new policy's rings and budgets (embedded budget counters start again)."""
        self.rings = RingTable(policy)
        self.budgets = _open_budgets(policy.budgets)

    @property
    def budgets(self) -> BudgetCounters:
        """The policy's budgets and their counters (assignable, e.g. with another clock)."""
        return self._budgets

    @budgets.setter
    def budgets(self, value: BudgetCounters) -> None:
        old = getattr(self, "_budgets", None)
        if isinstance(old, RedisBudgets) and old is not value:
            old.close()
        self._budgets = value
        self.has_budgets = bool(value)

    # --- operator actions ----------------------------------------------------------------

    def kill(
        self,
        *,
        agent: str | None = None,
        session: str | None = None,
        all: bool = False,
        reason: str,
        by: str = "operator",
    ) -> int:
        """Kill an agent, a session or everything; the number of calls in flight cancelled.

        New actions of the target are denied from the moment this returns, in this
        process at once and in others within the refresh interval (embedded) or as
        soon as the event reaches them (Redis); the kill is stored.
        """
        scope, target = _target(agent, session, all)
        record = self.state.kill(scope, target, reason, by)  # listeners cancel calls in flight
        cancelled = self.inflight.cancel(functools.partial(_matches, record), record.describe())
        self._audit(
            {
                "type": "warden.kill/v1",
                "scope": scope,
                "target": target,
                "reason": reason,
                "by": by,
                "cancelled": cancelled,
            }
        )
        if scope == "agent" and target is not None:
            self._demote(target, f"killed: {reason}", by)
        return cancelled

    def restore(
        self,
        *,
        agent: str | None = None,
        session: str | None = None,
        all: bool = False,
        by: str = "operator",
        reason: str = "restored",
    ) -> bool:
        """Lift a kill (a restored agent stays at ring 3 until its ring is set)."""
        scope, target = _target(agent, session, all)
        lifted = self.state.restore(scope, target)
        if lifted:
            self._audit(
                {
                    "type": "warden.restore/v1",
                    "scope": scope,
                    "target": target,
                    "reason": reason,
                    "by": by,
                }
            )
        return lifted

    def set_ring(self, agent: str, ring: int, *, by: str, reason: str) -> RingCeiling:
        """An operator's promotion (or demotion): hold ``agent`` to ``ring``."""
        ceiling = self.state.set_ceiling(agent, ring, reason, by)
        self._audit(
            {"type": "warden.ring/v1", "agent": agent, "ring": ring, "reason": reason, "by": by}
        )
        return ceiling

    def _demote(self, agent: str, reason: str, by: str = "warden") -> None:
        if self.state.demote(agent, reason, by) is not None:
            self._audit(
                {"type": "warden.ring/v1", "agent": agent, "ring": 3, "reason": reason, "by": by}
            )

    def _cancel_matching(self, kills: list[Kill]) -> None:
        for kill in kills:
            self.inflight.cancel(functools.partial(_matches, kill), kill.describe())

    def _audit(self, record: dict[str, Any]) -> None:
        if self._record is not None:
            self._record(record)

    # --- the decision path ---------------------------------------------------------------

    def killed(self, agent: object, session: object) -> Kill | None:
        return self.state.killed(agent, session)

    def effective_ring(self, agent: Mapping[str, Any], verified: bool) -> int:
        """The ring policy sees: the base ring held to the agent's ceiling.

        ``verified``: the agent mapping came from the identity step, so its ``ring``
        is the credential's and its ``trust`` the trust store's.
        """
        agent_id = agent.get("id")
        if verified:
            base = agent.get("ring")
            base = base if type(base) is int and 0 <= base <= 3 else UNTRUSTED
            trust = agent.get("trust")
            if type(trust) is int and trust < DEMOTE_BELOW_TRUST and type(agent_id) is str:
                self._demote(agent_id, f"trust fell to {trust}, below {DEMOTE_BELOW_TRUST}")
        else:
            base = self.rings.agent_ring(agent_id)
        ceiling = self.state.ceiling(agent_id)
        return base if ceiling is None or ceiling <= base else ceiling

    def ring_refusal(self, action: Action, ring: int) -> tuple[str | None, bool]:
        """(why the ring may not call this tool or None, whether the tool runs code)."""
        if not self.rings.has_tools:
            return None, False
        needs, is_exec = self.rings.tool_needs(action.tool)
        if ring > needs:
            who = action.agent.get("id") if action.agent else None
            return (
                f"ring: `{action.tool}` needs ring {needs}; agent {who or '(none)'} is ring {ring}",
                is_exec,
            )
        return None, is_exec

    def close(self) -> None:
        self.state.close()
        if isinstance(self._budgets, RedisBudgets):
            self._budgets.close()


def _open_budgets(specs: tuple[BudgetSpec, ...]) -> BudgetCounters:
    """In Redis, shared by the fleet, when ``WARDEN_REDIS_URL`` is set; else in this process."""
    config = FleetConfig.from_env()
    if config.redis_url is None or not specs:
        return Budgets(specs)
    return RedisBudgets(specs, config.redis_url, config.namespace)


def _target(agent: str | None, session: str | None, all_: bool) -> tuple[str, str | None]:
    given = sum(x is not None for x in (agent, session)) + bool(all_)
    if given != 1:
        raise RuntimeStateError("name exactly one of an agent, a session, or all")
    if all_:
        return "all", None
    if agent is not None:
        return "agent", agent
    return "session", session
