"""OpenTelemetry spans and metrics for decisions and outcomes (docs/sre.md, "Telemetry").

Off by default and optional: ``pip install 'warden[otel]'``. ``instrument``
uses the OpenTelemetry API only; the application picks the SDK and exporters
(or passes providers). A span costs tens of microseconds with the SDK, more
than a decision, which is why nothing is traced unless asked.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from warden.action import Action, Decision
from warden.errors import ConfigurationError

if TYPE_CHECKING:
    from warden.governor import Governor

__all__ = ["instrument"]

_NAME = "warden"


def instrument(
    gov: Governor, tracer_provider: Any = None, meter_provider: Any = None
) -> DecisionTelemetry:
    """Emit a span and metrics for every decision and outcome of ``gov``; returns the sink."""
    try:
        from opentelemetry import metrics, trace
    except ImportError:
        raise ConfigurationError(
            "telemetry needs OpenTelemetry: pip install 'warden[otel]'"
        ) from None
    tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_NAME)
    meter = (meter_provider or metrics.get_meter_provider()).get_meter(_NAME)
    sink = DecisionTelemetry(tracer, meter)
    gov.sinks.append(sink)
    gov.outcome_listeners.append(sink.outcome)
    return sink


class DecisionTelemetry:
    """A decision sink and outcome listener that report to OpenTelemetry; never raises."""

    def __init__(self, tracer: Any, meter: Any) -> None:
        self._tracer = tracer
        self._decisions = meter.create_counter(
            "warden.decisions", unit="{decision}", description="Decisions, by effect"
        )
        self._outcomes = meter.create_counter(
            "warden.outcomes", unit="{call}", description="Governed calls, by outcome status"
        )
        self._latency = meter.create_histogram(
            "warden.decision.duration", unit="us", description="Time to decide"
        )

    def _span(self, name: str, duration_ns: int, attrs: dict[str, Any]) -> None:
        """A span that ends now and lasted ``duration_ns`` (reported after the fact)."""
        end = time.time_ns()
        span = self._tracer.start_span(name, start_time=end - duration_ns, attributes=attrs)
        span.end(end_time=end)

    def record(self, action: Action, decision: Decision) -> None:
        with contextlib.suppress(Exception):  # telemetry must never turn into a deny
            attrs = {
                "warden.tool": action.tool,
                "warden.kind": action.kind,
                "warden.effect": decision.effect.value,
                "warden.rules": list(decision.rules),
                "warden.policy": decision.policy_hash,
                "warden.decision_id": decision.id,
            }
            agent = action.agent.get("id") if action.agent else None
            if type(agent) is str:
                attrs["warden.agent"] = agent
            self._span("warden.decision", decision.elapsed_ns, attrs)
            self._decisions.add(1, {"effect": decision.effect.value})
            self._latency.record(decision.elapsed_ns / 1000, {"effect": decision.effect.value})

    def outcome(self, action: Action, decision: Decision, status: str, duration_ns: int) -> None:
        with contextlib.suppress(Exception):
            attrs = {
                "warden.tool": action.tool,
                "warden.status": status,
                "warden.duration_us": duration_ns / 1000,
                "warden.decision_id": decision.id,
            }
            self._span("warden.outcome", duration_ns, attrs)
            self._outcomes.add(1, {"status": status})
