"""The SRE layer of one Governor: breakers, SLOs, anomalies, cascades, shadow mode.

It is fed by the Governor's decisions and outcomes and acts back on it
(docs/sre.md): an open breaker or an exhausted error budget changes the
decision, an anomaly can quarantine an agent through the kill switch, a
cascade opens the source's breaker. Every alert, transition and shadow
disagreement is an audit record and a row of the status store.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from warden.action import Action, Decision
from warden.sre.status import StatusStore

if TYPE_CHECKING:
    from warden.policy import Policy
    from warden.runtime.control import Runtime
    from warden.runtime.state import Kill
    from warden.sre.anomaly import Anomalies
    from warden.sre.breakers import Breakers
    from warden.sre.cascade import Cascades
    from warden.sre.slo import SLOs
    from warden.store.breakers import RedisBreakers

__all__ = ["SRE"]

CASCADE_BREAKER = "cascade"
CASCADE_OPEN_FOR = 300.0


class SRE:
    """Breakers, SLOs, anomalies, cascades and shadow mode for one Governor."""

    def __init__(
        self,
        home: str | os.PathLike[str],
        policy: Policy | None,
        runtime: Runtime,
        record: Callable[[dict[str, Any]], None] | None = None,
        *,
        shadow: Policy | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._home = Path(home)
        self._runtime = runtime
        self._record = record
        self._clock = clock
        self.shadow = shadow
        self._shadow_counts = {"decisions": 0, "disagreements": 0, "errors": 0}
        self._status: StatusStore | None = None
        self.errors = 0
        self._build(policy)
        runtime.state.on_kill(self._on_kills)

    def _build(self, policy: Policy | None) -> None:
        spec = policy.sre if policy is not None else None
        self.breakers: Breakers | RedisBreakers | None = None
        self.slos: SLOs | None = None
        self.anomalies: Anomalies | None = None
        self.cascades: Cascades | None = None
        if spec is not None and (spec.breakers or spec.cascade is not None):
            from warden.sre.breakers import Breakers
            from warden.store._config import FleetConfig

            config = FleetConfig.from_env()
            if config.redis_url is not None:  # shared by the fleet (docs/fleet.md)
                from warden.store.breakers import RedisBreakers

                self.breakers = RedisBreakers(
                    spec.breakers,
                    config.redis_url,
                    config.namespace,
                    clock=self._clock,
                    wall=self._clock,
                    implicit={CASCADE_BREAKER: CASCADE_OPEN_FOR} if spec.cascade else None,
                )
            else:
                self.breakers = Breakers(spec.breakers, wall=self._clock)
        if spec is not None and spec.slos:
            from warden.sre.slo import SLOs

            self.slos = SLOs(spec.slos, clock=self._clock)
        if spec is not None and spec.anomaly is not None:
            from warden.sre.anomaly import Anomalies

            rings = self._runtime.rings
            self.anomalies = Anomalies(spec.anomaly, egress=rings.is_egress, clock=self._clock)
        if spec is not None and spec.cascade is not None:
            from warden.sre.cascade import Cascades

            self.cascades = Cascades(spec.cascade, clock=self._clock)
        self._breaker_scopes = {b.id: b.scope for b in spec.breakers} if spec else {}
        self.enabled = any(
            x is not None for x in (self.breakers, self.slos, self.anomalies, self.cascades)
        ) or (self.shadow is not None)

    def reload(self, policy: Policy) -> None:
        """Take the new policy's `sre:` section (breaker and SLO state starts again)."""
        self._build(policy)

    # --- the decision path --------------------------------------------------------------

    def check(self, action: Action) -> tuple[str, str, str] | None:
        """For a call the policy allowed: (effect, rule id, reason) to apply instead, or None.

        ``effect`` is ``deny`` (an open breaker, an exhausted budget that denies, or
        a demotion below the tool's ring) or ``require_approval``.
        """
        if self.breakers is not None:
            hit = self.breakers.check(action)
            if hit is not None:
                return "deny", f"breaker:{hit[0]}", hit[1]
        if self.slos is not None:
            found = self.slos.enforcement(action)
            if found is not None:
                spec, reason = found
                if spec.enforce == "deny":
                    self.release(action)
                    return "deny", f"slo:{spec.id}", reason
                if spec.enforce == "require_approval":
                    return "require_approval", f"slo:{spec.id}", reason
                if spec.enforce == "demote":
                    return self._demote(action, spec.id, reason)
        return None

    def release(self, action: Action) -> None:
        """A call ``check`` admitted will not run: free its half-open trial, if it took one."""
        if self.breakers is not None:
            self.breakers.release(action)

    def _demote(self, action: Action, slo: str, reason: str) -> tuple[str, str, str] | None:
        agent = action.agent.get("id") if action.agent else None
        if type(agent) is str:
            self._runtime._demote(agent, f"error budget of `{slo}` exhausted")
        refusal, _ = self._runtime.ring_refusal(action, 3)
        if refusal is not None:
            self.release(action)
            return "deny", f"slo:{slo}", f"{reason}; demoted: {refusal}"
        return None

    def after_decision(self, action: Action, decision: Decision) -> None:
        """Anomalies, the call graph and shadow mode; never raises (the decision stands)."""
        try:
            if self.cascades is not None:
                self.cascades.observe_action(action)
            if self.anomalies is not None:
                for alert in self.anomalies.observe_decision(action, decision):
                    self._anomaly(alert)
            if self.shadow is not None:
                self._shadow(action, decision)
        except Exception:  # noqa: BLE001 - an observer must not change the decision
            self.errors += 1

    def after_outcome(
        self, action: Action, status: str, duration_ns: int, admitted: bool = True
    ) -> None:
        """Feed breakers, SLOs and cascades with what happened; never raises.

        ``admitted``: the decision allowed the call (so ``check`` may have given it a
        half-open trial, which a ``denied`` outcome, e.g. a sandbox refusal, frees).
        """
        try:
            if self.breakers is not None:
                if status == "denied" and admitted:
                    self.breakers.release(action)
                for t in self.breakers.record(action, status):
                    self._transition(t)
            if self.slos is not None:
                for event in self.slos.record(action, status, duration_ns):
                    self._slo_alert(event)
                store = self._store()
                if store is not None and store.slos_due():
                    # Once a second: resolve alerts of keys that went quiet, then snapshot.
                    for event in self.slos.evaluate():
                        self._slo_alert(event)
                    store.slos(dataclasses.asdict(s) for s in self.slos.status())
            if self.cascades is not None:
                alert = self.cascades.observe_outcome(action, status)
                if alert is not None:
                    self._cascade(alert)
        except Exception:  # noqa: BLE001 - the action already happened
            self.errors += 1

    # --- events ---------------------------------------------------------------------------

    def _transition(self, t: Any) -> None:
        self._audit(
            {
                "type": "warden.breaker/v1",
                "breaker": t.breaker,
                "key": t.key,
                "from": t.from_state,
                "to": t.to_state,
                "reason": t.reason,
            }
        )
        store = self._store()
        if store is not None:
            store.breaker(t.breaker, t.key, t.to_state, t.at, t.reason)
        if (
            t.to_state == "open"
            and self.cascades is not None
            and self._breaker_scopes.get(t.breaker) == "agent"
        ):
            alert = self.cascades.failure(t.key, "breaker")
            if alert is not None:
                self._cascade(alert)

    def _slo_alert(self, e: Any) -> None:
        detail = {
            "severity": e.severity,
            "burn": e.burn,
            "long": e.long,
            "short": e.short,
            "burn_long": e.burn_long,
            "burn_short": e.burn_short,
        }
        self._audit(
            {
                "type": "warden.alert/v1",
                "kind": "slo",
                "id": e.slo,
                "key": e.key,
                "state": e.state,
                **detail,
            }
        )
        store = self._store()
        if store is not None:
            name = f"{e.slo}@{e.burn:g}x/{e.long:g}s"
            store.alert("slo", name, e.key, e.state, {"slo": e.slo, **detail})

    def _anomaly(self, a: Any) -> None:
        detail = {
            "signal": a.signal,
            "value": a.value,
            "baseline": a.baseline,
            "bound": a.bound,
            "detail": a.detail,
        }
        self._audit({"type": "warden.alert/v1", "kind": "anomaly", "agent": a.agent, **detail})
        store = self._store()
        if store is not None:
            store.alert("anomaly", a.signal, a.agent, "firing", detail)
        spec = self.anomalies.spec if self.anomalies is not None else None
        if spec is not None and spec.quarantine:
            self._runtime.kill(agent=a.agent, reason=f"quarantined: {a.signal}", by="warden.sre")

    def _cascade(self, c: Any) -> None:
        path = [list(edge) for edge in c.path]
        self._audit(
            {
                "type": "warden.alert/v1",
                "kind": "cascade",
                "source": c.source,
                "agents": list(c.agents),
                "path": path,
            }
        )
        store = self._store()
        if store is not None:
            store.alert("cascade", c.source, ",".join(c.agents), "firing", {"path": path})
        spec = self.cascades.spec if self.cascades is not None else None
        if spec is not None and spec.contain and self.breakers is not None:
            t = self.breakers.force_open(
                CASCADE_BREAKER,
                c.source,
                f"cascade from {c.source} reached {len(c.agents)} agents",
                open_for=CASCADE_OPEN_FOR,
            )
            if t is not None:
                self._transition(t)

    def _on_kills(self, kills: list[Kill]) -> None:
        if self.cascades is None:
            return
        for kill in kills:
            if kill.scope == "agent":
                with contextlib.suppress(Exception):
                    alert = self.cascades.failure(kill.target, "kill")
                    if alert is not None:
                        self._cascade(alert)

    def _shadow(self, action: Action, decision: Decision) -> None:
        from warden.policy.evaluate import evaluate

        assert self.shadow is not None
        self._shadow_counts["decisions"] += 1
        try:
            other = evaluate(self.shadow, action)
            theirs: dict[str, Any] = {"effect": other.effect.value, "rules": list(other.rules)}
            differs = other.effect is not decision.effect
        except Exception as exc:  # noqa: BLE001 - a broken candidate is a finding, not a deny
            self._shadow_counts["errors"] += 1
            theirs = {"effect": None, "rules": [], "error": f"{type(exc).__name__}: {exc}"}
            differs = True
        if not differs:
            return
        self._shadow_counts["disagreements"] += 1
        self._audit(
            {
                "type": "warden.shadow/v1",
                "decision": decision.id,
                "enforced": {"effect": decision.effect.value, "rules": list(decision.rules)},
                "shadow": theirs,
                "policy": self.shadow.hash,
            }
        )

    def shadow_stats(self) -> dict[str, int]:
        """Decisions compared with the shadow policy, disagreements, and shadow errors."""
        return dict(self._shadow_counts)

    def _audit(self, record: dict[str, Any]) -> None:
        if self._record is not None:
            self._record(record)

    def _store(self) -> StatusStore | None:
        if self._status is None:
            try:
                self._status = StatusStore(self._home / "sre.db")
            except OSError:
                return None
        return self._status

    def close(self) -> None:
        if self._status is not None:
            self._status.close()
