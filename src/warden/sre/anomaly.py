"""Per-agent anomaly detection (docs/sre.md, "Anomalies").

Four signals per agent id, fed by every decision of the Governor:

- ``rate``: calls in the last minute above ``rate_factor`` times the baseline and
  above ``rate_min``. A call is any decision (allowed, denied or held for
  approval): a runaway agent that is being denied still hammers. The
  baseline is an exponentially weighted mean of calls per completed minute
  with a 30-minute half-life; minutes without calls count as 0.
- ``new_tool``: a tool the agent never asked for before, whatever the
  decision (a denied probe of a new tool is as telling as an allowed one).
- ``denial_rate``: denials / decisions over the last 5 min above
  ``denial_ratio``, with at least 10 decisions. ``require_approval`` is not a
  denial.
- ``egress``: bytes in the last 5 min above ``egress_factor`` times the baseline
  and above ``egress_min``. Egress bytes are the length of the JSON of the
  arguments of *allowed* calls to tools ``egress(tool)`` marks; the baseline
  is an exponentially weighted mean of bytes per completed 5-min period
  (half-life 30 min, empty periods count as 0).

Time is cut in 10 s buckets counted from the agent's first decision, so the
first minute and the first 5-min period are whole. "The last minute" is the
current bucket and the 5 before it; "the last 5 min" the current one and the
29 before it (a window is precise to one bucket at its start). Each mean is
bias-corrected (divided by the total weight of the periods seen), so it is
the plain mean after one period rather than a fraction of it. Bounds are
computed when a period closes and rounded to 6 decimals (a steady 20 calls a
minute bounds at exactly 100 with ``rate_factor: 5``).

Nothing alerts during the first ``learning`` decisions of an agent, and
``rate`` and ``egress`` also wait for their first completed period (a
baseline of nothing is not a baseline). Each signal fires at most once per
5 min per agent. A new tool is remembered when it alerts (or during
learning), so it alerts once; a new tool first called while ``new_tool`` is
held back by those 5 min is not remembered and alerts when next called after
them.

Cost: O(1) per decision (amortised; a jump over k idle buckets costs
min(k, 30)). Memory is bounded: 10,000 agents, least recently seen evicted
first (an evicted agent learns again from scratch), and 256 remembered tools
per agent (beyond them, new tools are not remembered: each call to one is a
``new_tool`` candidate, still at most one alert per 5 min): about 2 kB an
agent plus its remembered tool names. ``egress(tool)`` is asked once per
tool name (8,192 remembered) and must not change its mind. Deterministic:
the same decisions at the same clock readings give the same alerts.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

import msgspec

from warden.action import Effect

if TYPE_CHECKING:
    from warden.action import Action, Decision
    from warden.policy.sections import AnomalySpec

__all__ = ["MAX_AGENTS", "MAX_TOOLS", "Anomalies", "AnomalyAlert", "args_size"]

MAX_AGENTS: Final = 10_000
MAX_TOOLS: Final = 256
REFIRE: Final = 300.0  # seconds between two alerts of one signal for one agent
DENIAL_MIN: Final = 10  # decisions in the window before the denial ratio means anything
_BUCKET: Final = 10.0  # seconds
_SLOTS: Final = 30  # buckets in 5 min
_MINUTE: Final = 6  # buckets in a minute
_HALF_LIFE: Final = 1800.0
_DECAY_MINUTE: Final = 0.5 ** (60.0 / _HALF_LIFE)
_DECAY_PERIOD: Final = 0.5 ** (300.0 / _HALF_LIFE)
_INF: Final = math.inf
_ALLOW: Final = Effect.ALLOW
_DENY: Final = Effect.DENY
_ENC: Final = msgspec.json.Encoder()


@dataclass(frozen=True, slots=True)
class AnomalyAlert:
    """One anomaly: ``value`` went past ``bound``, which derives from ``baseline``.

    ``signal`` is ``rate`` (calls in the last minute; baseline calls per minute),
    ``new_tool`` (tools known; baseline and bound: tools known before),
    ``denial_rate`` (denials / decisions in the last 5 min; no baseline: 0) or
    ``egress`` (bytes in the last 5 min; baseline bytes per 5 min). ``at`` is the
    clock reading of the decision that raised it.
    """

    signal: str
    agent: str
    value: float
    baseline: float
    bound: float
    detail: str
    at: float


@dataclass(slots=True)
class _Agent:
    t0: float  # first decision: bucket 0 starts here
    decisions: int = 0
    bucket: int = 0
    calls: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    denials: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    egress: list[int] = field(default_factory=lambda: [0] * _SLOTS)
    calls_1m: int = 0
    calls_5m: int = 0
    denials_5m: int = 0
    egress_5m: int = 0
    minute: int = 0
    minute_calls: int = 0
    rate_sum: float = 0.0  # EWMA numerator and total weight (bias correction)
    rate_weight: float = 0.0
    rate_bound: float = _INF
    period: int = 0
    period_egress: int = 0
    egress_sum: float = 0.0
    egress_weight: float = 0.0
    egress_bound: float = _INF
    tools: set[str] = field(default_factory=set)
    fired: dict[str, float] = field(default_factory=dict)


def args_size(args: Mapping[str, Any]) -> int:
    """Bytes of the JSON of ``args`` (UTF-8, no spaces; what cannot be JSON counts as its repr).

    The same length as the RFC 8785 bytes the audit log records for JSON data,
    up to the spelling of some floats.
    """
    try:
        return len(_ENC.encode(args))
    except (TypeError, ValueError, OverflowError, msgspec.EncodeError):
        text = json.dumps(dict(args), ensure_ascii=False, default=repr, separators=(",", ":"))
        return len(text.encode("utf-8", "surrogatepass"))


class Anomalies:
    """Per-agent baselines and the alerts they raise; ``observe_decision`` on every decision."""

    def __init__(
        self,
        spec: AnomalySpec,
        egress: Callable[[str], bool] = lambda tool: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self._egress = egress
        self._egress_cache: dict[str, bool] = {}
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: OrderedDict[str, _Agent] = OrderedDict()

    def _is_egress(self, tool: str) -> bool:
        found = self._egress_cache.get(tool)
        if found is None:
            found = bool(self._egress(tool))
            if len(self._egress_cache) >= 8192:
                self._egress_cache.clear()
            self._egress_cache[tool] = found
        return found

    def observe_decision(self, action: Action, decision: Decision) -> list[AnomalyAlert]:
        """Count one decision of ``action.agent["id"]``; the alerts it raises (usually none).

        Actions without a string agent id are not tracked.
        """
        agent = action.agent.get("id") if action.agent else None
        if type(agent) is not str:
            return []
        effect = decision.effect
        tool = action.tool
        size = 0
        if effect is _ALLOW:
            egress = self._egress_cache.get(tool)
            if egress is None:
                egress = self._is_egress(tool)
            if egress:
                size = args_size(action.args)
        now = self._clock()
        spec = self.spec
        with self._lock:
            agents = self._agents
            st = agents.get(agent)
            if st is None:
                st = agents[agent] = _Agent(now)
                if len(agents) > MAX_AGENTS:
                    agents.popitem(last=False)
            else:
                agents.move_to_end(agent)
            b = int((now - st.t0) / _BUCKET)
            if b > st.bucket:
                _advance(st, b, spec)
            i = st.bucket % _SLOTS
            st.calls[i] += 1
            st.calls_1m += 1
            st.calls_5m += 1
            st.minute_calls += 1
            if effect is _DENY:
                st.denials[i] += 1
                st.denials_5m += 1
            if size:
                st.egress[i] += size
                st.egress_5m += size
                st.period_egress += size
            st.decisions += 1
            new_tool = spec.new_tool and tool not in st.tools
            if st.decisions <= spec.learning:
                if new_tool and len(st.tools) < MAX_TOOLS:
                    st.tools.add(tool)
                return []
            if (
                new_tool
                or st.calls_1m > st.rate_bound
                or (size and st.egress_5m > st.egress_bound)
                or (
                    st.denials_5m
                    and st.calls_5m >= DENIAL_MIN
                    and st.denials_5m > spec.denial_ratio * st.calls_5m
                )
            ):
                return self._alerts(agent, st, now, new_tool, tool, bool(size))
            return []

    def _alerts(
        self, agent: str, st: _Agent, now: float, new_tool: bool, tool: str, egress: bool
    ) -> list[AnomalyAlert]:
        spec = self.spec
        out: list[AnomalyAlert] = []

        def fire(signal: str, value: float, baseline: float, bound: float, detail: str) -> bool:
            last = st.fired.get(signal)
            if last is not None and now - last < REFIRE:
                return False
            st.fired[signal] = now
            out.append(AnomalyAlert(signal, agent, value, baseline, bound, detail, now))
            return True

        if st.calls_1m > st.rate_bound:
            base = st.rate_sum / st.rate_weight
            fire(
                "rate",
                st.calls_1m,
                base,
                st.rate_bound,
                f"agent `{agent}` made {st.calls_1m} calls in the last minute, above "
                f"{st.rate_bound:g} ({spec.rate_factor:g} x baseline {base:.1f} per minute, "
                f"at least {spec.rate_min})",
            )
        if new_tool:
            known = len(st.tools)
            fired = fire(
                "new_tool",
                known + 1,
                known,
                known,
                f"agent `{agent}` called `{tool}` for the first time, after "
                f"{st.decisions - 1} decisions with {known} known tools",
            )
            if fired and known < MAX_TOOLS:
                st.tools.add(tool)
        if st.calls_5m >= DENIAL_MIN and st.denials_5m > spec.denial_ratio * st.calls_5m:
            ratio = st.denials_5m / st.calls_5m
            fire(
                "denial_rate",
                ratio,
                0.0,
                spec.denial_ratio,
                f"agent `{agent}` was denied {st.denials_5m} of {st.calls_5m} decisions in "
                f"the last 5 min ({ratio:.2f}, above {spec.denial_ratio:g})",
            )
        if egress and st.egress_5m > st.egress_bound:
            base = st.egress_sum / st.egress_weight
            fire(
                "egress",
                st.egress_5m,
                base,
                st.egress_bound,
                f"agent `{agent}` sent {st.egress_5m} bytes to egress tools in the last 5 min, "
                f"above {st.egress_bound:.0f} ({spec.egress_factor:g} x baseline {base:.0f} "
                f"per 5 min, at least {spec.egress_min})",
            )
        return out

    def baselines(self, agent: str) -> dict[str, float]:
        """What is known of ``agent`` now (empty when it is not tracked).

        ``rate`` (calls per minute) and ``egress`` (bytes per 5 min) are the
        baselines, 0 before their first completed period; ``calls_1m``,
        ``decisions_5m``, ``denials_5m`` and ``egress_5m`` the current windows;
        ``decisions`` the total seen, ``learning`` the decisions left to learn,
        ``tools`` the tools remembered.
        """
        now = self._clock()
        with self._lock:
            st = self._agents.get(agent)
            if st is None:
                return {}
            b = int((now - st.t0) / _BUCKET)
            if b > st.bucket:
                _advance(st, b, self.spec)
            return {
                "decisions": float(st.decisions),
                "learning": float(max(self.spec.learning - st.decisions, 0)),
                "rate": st.rate_sum / st.rate_weight if st.rate_weight else 0.0,
                "egress": st.egress_sum / st.egress_weight if st.egress_weight else 0.0,
                "calls_1m": float(st.calls_1m),
                "decisions_5m": float(st.calls_5m),
                "denials_5m": float(st.denials_5m),
                "egress_5m": float(st.egress_5m),
                "tools": float(len(st.tools)),
            }

    def __len__(self) -> int:
        return len(self._agents)


def _advance(st: _Agent, b: int, spec: AnomalySpec) -> None:
    """Move ``st`` to bucket ``b`` (> its current one): slide the windows, close periods."""
    cur = st.bucket
    if b - cur >= _SLOTS:
        for ring in (st.calls, st.denials, st.egress):
            ring[:] = [0] * _SLOTS
        st.calls_1m = st.calls_5m = st.denials_5m = st.egress_5m = 0
    else:
        calls, denials, egress = st.calls, st.denials, st.egress
        for s in range(cur + 1, b + 1):
            st.calls_1m -= calls[(s - _MINUTE) % _SLOTS]  # bucket s - 6 leaves the minute
            i = s % _SLOTS  # bucket s - 30 leaves the 5 min and makes room for s
            st.calls_5m -= calls[i]
            st.denials_5m -= denials[i]
            st.egress_5m -= egress[i]
            calls[i] = denials[i] = egress[i] = 0
    st.bucket = b
    changed = False
    minute = b // _MINUTE
    if minute > st.minute:
        idle = minute - st.minute - 1  # whole minutes without a call
        st.rate_sum = st.rate_sum * _DECAY_MINUTE + (1 - _DECAY_MINUTE) * st.minute_calls
        st.rate_weight = st.rate_weight * _DECAY_MINUTE + (1 - _DECAY_MINUTE)
        if idle:
            decay = _DECAY_MINUTE**idle
            st.rate_sum *= decay
            st.rate_weight = st.rate_weight * decay + (1 - decay)
        st.minute, st.minute_calls = minute, 0
        changed = True
    period = b // _SLOTS
    if period > st.period:
        idle = period - st.period - 1
        st.egress_sum = st.egress_sum * _DECAY_PERIOD + (1 - _DECAY_PERIOD) * st.period_egress
        st.egress_weight = st.egress_weight * _DECAY_PERIOD + (1 - _DECAY_PERIOD)
        if idle:
            decay = _DECAY_PERIOD**idle
            st.egress_sum *= decay
            st.egress_weight = st.egress_weight * decay + (1 - decay)
        st.period, st.period_egress = period, 0
        changed = True
    if changed:  # the bounds move only when a period closes: the hot path compares, no more
        # Rounded: a steady 20 calls a minute must bound at 100, not 99.99999999999994.
        if st.rate_weight:
            rate = spec.rate_factor * st.rate_sum / st.rate_weight
            st.rate_bound = round(max(rate, float(spec.rate_min)), 6)
        if st.egress_weight:
            sent = spec.egress_factor * st.egress_sum / st.egress_weight
            st.egress_bound = round(max(sent, float(spec.egress_min)), 6)
