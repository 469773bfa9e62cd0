"""SLOs, error budgets and burn-rate alerts (docs/sre.md, "SLOs and error budgets").

Counts live in the process (embedded mode); a restart starts them empty.

* **Buckets.** Each key has two rings of buckets aligned to the clock: fine
  buckets of 10 s for the alert windows up to 6 h (the ring keeps as many as
  the longest such window needs), and coarse buckets of 5 min covering the SLO
  window. A ring stores only the buckets that saw events, each with the
  running totals of eligible and bad events up to it, so recording is an
  append or an increment (O(1) amortised), the SLO window total is one
  subtraction (a binary search when an alert window is longer), and any
  window is summed at evaluation with one binary search.
  A window of ``w`` seconds is the last ``ceil(w / bucket)`` buckets, the
  current one included: precise to one bucket at its start edge. An alert
  window over 6 h uses the coarse ring, which then also covers it when it is
  longer than the SLO window.
* **Budget arithmetic** (E eligible, B bad over a window; budget ``(1 -
  target) * E``; remaining ``1 - B / budget``; burn ``(B / E) / (1 -
  target)``) is rounded to 9 decimals, so that hand-computed boundaries such as
  ``0.0144 / 0.001 == 14.4`` hold exactly.
* **Exhaustion** (remaining <= 0 with at least ``min_events`` eligible events
  in the SLO window) is recomputed on every recorded event of the key, and
  again when ``enforcement`` finds it set, so enforcement lifts as soon as
  enough bad events have left the window, even with no new traffic.
* **Alerts** of a key are evaluated when an event of that key is recorded and
  ``evaluate_every`` seconds have passed since its last evaluation, when its
  exhaustion flag changes, and by ``evaluate()``. A key that sees no traffic
  is evaluated only by ``evaluate()``: call it periodically to resolve alerts
  of idle keys.
* **Keys** come from outside (agent ids), so each SLO keeps at most
  ``max_keys`` of them. A new key evicts the least recently recorded key that
  is neither exhausted nor alerting; only when none is left, the least
  recently recorded one, whose firing alerts are then reported resolved.
"""

from __future__ import annotations

import math
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from warden._re import ByTool, compile_glob, search

if TYPE_CHECKING:
    from warden.action import Action
    from warden.policy.sections import SLOSpec

__all__ = ["AlertEvent", "SLOStatus", "SLOs", "slo_key", "window_label"]

FINE: Final = 10.0
"""Seconds per fine bucket."""
COARSE: Final = 300.0
"""Seconds per coarse bucket."""
FINE_SPAN: Final = 6 * 3600.0
"""The longest window the fine ring serves."""

_ELIGIBLE: Final = frozenset({"ok", "error", "timeout"})
_MAX_KEYS: Final = 10_000
_MAX_TOOLS: Final = 8192
_MIN_ERROR: Final = 1e-9  # 1 - target when a target of 1 slips through: budget ~0, not a crash


def _buckets(seconds: float, width: float) -> int:
    return max(1, math.ceil(seconds / width - 1e-9))


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A burn-rate alert of one SLO key started (``firing``) or stopped (``resolved``)."""

    slo: str
    key: str
    severity: str
    burn: float
    long: float
    short: float
    state: str
    burn_long: float
    burn_short: float
    at: float


@dataclass(frozen=True, slots=True)
class SLOStatus:
    """One SLO key now: its budget over the SLO window and its burn rate per alert window.

    ``budget`` is the number of bad events allowed; ``remaining`` is ``1 -
    bad / budget`` (below 0 when overspent, 1.0 with no eligible event);
    ``burn_rates`` maps window labels (``"5m"``, ``"1h"``) to burn rates;
    ``firing`` names the firing alerts (``"14.4x 1h/5m"``).
    """

    slo: str
    key: str
    objective: str
    target: float
    eligible: int
    bad: int
    budget: float
    remaining: float
    burn_rates: dict[str, float]
    firing: tuple[str, ...]
    exhausted: bool


def slo_key(spec: SLOSpec, action: Action) -> str | None:
    """The key of ``action`` under ``spec``: tool name, agent id, or ``*`` for global.

    None when the SLO does not apply to it (scope agent without an agent id).
    """
    scope = spec.scope
    if scope == "tool":
        return action.tool
    if scope == "agent":
        agent_id = action.agent.get("id") if action.agent else None
        return agent_id if type(agent_id) is str else None
    return "*"


def window_label(seconds: float) -> str:
    """``300.0`` → ``5m``, ``3600.0`` → ``1h``: the policy-language spelling of a window."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        n = seconds / size
        if n >= 1 and n == int(n):
            return f"{int(n)}{unit}"
    return f"{seconds * 1000:g}ms"


class _Ring:
    """Buckets that saw events, oldest first, with running totals of (eligible, bad).

    Entries before ``head`` have left the ring; ``base_*`` are the totals up to
    the last of them. Invariant: the totals over buckets ``>= b`` are the last
    totals minus the totals of the last entry before ``b``.
    """

    __slots__ = ("bad", "base_b", "base_e", "eligible", "head", "nums", "span", "width")

    def __init__(self, width: float, span: int) -> None:
        self.width = width
        self.span = span
        self.nums = array("q")
        self.eligible = array("q")
        self.bad = array("q")
        self.head = 0
        self.base_e = 0
        self.base_b = 0

    def add(self, bucket: int, bad: bool) -> None:
        nums = self.nums
        if nums and bucket <= nums[-1]:  # this bucket (or the clock stepped back)
            self.eligible[-1] += 1
            if bad:
                self.bad[-1] += 1
            return
        if nums:
            e, b = self.eligible[-1], self.bad[-1]
        else:
            e, b = self.base_e, self.base_b
        nums.append(bucket)
        self.eligible.append(e + 1)
        self.bad.append(b + 1 if bad else b)
        self.expire(bucket)

    def expire(self, bucket: int) -> None:
        nums, head = self.nums, self.head
        limit = bucket - self.span
        n = len(nums)
        while head < n and nums[head] <= limit:
            head += 1
        if head != self.head:
            self.base_e = self.eligible[head - 1]
            self.base_b = self.bad[head - 1]
            if head >= 64 and 2 * head >= n:
                del nums[:head]
                del self.eligible[:head]
                del self.bad[:head]
                head = 0
            self.head = head

    def total(self) -> tuple[int, int]:
        """(eligible, bad) over the whole ring; call ``expire`` first."""
        if not self.nums:
            return 0, 0
        return self.eligible[-1] - self.base_e, self.bad[-1] - self.base_b

    def window(self, bucket: int, n: int) -> tuple[int, int]:
        """(eligible, bad) over the ``n`` buckets ending with ``bucket``."""
        nums = self.nums
        if not nums:
            return 0, 0
        i = bisect_left(nums, bucket - n + 1, self.head)
        if i >= len(nums):
            return 0, 0
        if i > self.head:
            e0, b0 = self.eligible[i - 1], self.bad[i - 1]
        else:
            e0, b0 = self.base_e, self.base_b
        return self.eligible[-1] - e0, self.bad[-1] - b0


@dataclass(frozen=True, slots=True)
class _Window:
    label: str
    fine: bool
    buckets: int


class _Key:
    __slots__ = ("coarse", "exhausted", "fine", "firing", "last_eval")

    def __init__(self, slo: _SLO) -> None:
        self.fine = _Ring(FINE, slo.fine_span) if slo.fine_span else None
        self.coarse = _Ring(COARSE, slo.coarse_span)
        self.exhausted = False
        self.firing = [False] * len(slo.spec.alerts)
        self.last_eval = -math.inf


class _SLO:
    __slots__ = (
        "alerts",
        "budget_span",
        "coarse_span",
        "error",
        "fine_span",
        "keys",
        "rx",
        "spec",
        "threshold_ns",
        "windows",
    )

    def __init__(self, spec: SLOSpec) -> None:
        self.spec = spec
        self.rx = [compile_glob(g) for g in spec.tools] if spec.tools else None
        self.error = max(1.0 - spec.target, _MIN_ERROR)
        self.threshold_ns: int | None = None
        if spec.objective == "latency" and spec.threshold is not None:
            self.threshold_ns = round(spec.threshold * 1e9)
        seconds = sorted({w for a in spec.alerts for w in (a.long, a.short)})
        self.windows = {
            w: _Window(
                window_label(w), w <= FINE_SPAN, _buckets(w, FINE if w <= FINE_SPAN else COARSE)
            )
            for w in seconds
        }
        self.fine_span = max((x.buckets for x in self.windows.values() if x.fine), default=0)
        self.budget_span = _buckets(spec.window, COARSE)
        self.coarse_span = max(
            [self.budget_span, *(x.buckets for x in self.windows.values() if not x.fine)]
        )
        self.alerts = [
            (a, f"{a.burn:g}x {window_label(a.long)}/{window_label(a.short)}") for a in spec.alerts
        ]
        self.keys: OrderedDict[str, _Key] = OrderedDict()

    def applies(self, tool: str) -> bool:
        return self.rx is None or any(search(rx, tool) for rx in self.rx)

    def where(self, key: str) -> str:
        return "in all calls" if self.spec.scope == "global" else f"for {self.spec.scope} {key}"

    def budget(self, eligible: int) -> float:
        return round(self.error * eligible, 9)

    def remaining(self, eligible: int, bad: int) -> float:
        if eligible == 0:
            return 1.0
        return round(1.0 - bad / (self.error * eligible), 9)

    def burn(self, eligible: int, bad: int) -> float:
        return round(bad / eligible / self.error, 9) if eligible else 0.0

    def is_exhausted(self, eligible: int, bad: int) -> bool:
        return (
            eligible >= self.spec.min_events
            and eligible > 0
            and (self.remaining(eligible, bad) <= 0)
        )

    def totals(self, k: _Key, now: float) -> tuple[int, int]:
        """(eligible, bad) over the SLO window now."""
        bucket = int(now // COARSE)
        if self.coarse_span == self.budget_span:
            k.coarse.expire(bucket)
            return k.coarse.total()
        return k.coarse.window(bucket, self.budget_span)

    def burns(self, k: _Key, now: float) -> dict[float, float]:
        fine_bucket, coarse_bucket = int(now // FINE), int(now // COARSE)
        out: dict[float, float] = {}
        for seconds, w in self.windows.items():
            if w.fine and k.fine is not None:
                e, b = k.fine.window(fine_bucket, w.buckets)
            else:
                e, b = k.coarse.window(coarse_bucket, w.buckets)
            out[seconds] = self.burn(e, b)
        return out


class SLOs:
    """The SLOs of one policy: error budgets per key, burn-rate alerts, enforcement."""

    def __init__(
        self,
        specs: tuple[SLOSpec, ...],
        clock: Callable[[], float] = time.time,
        evaluate_every: float = 10.0,
        *,
        max_keys: int = _MAX_KEYS,
    ) -> None:
        self._slos = [_SLO(s) for s in specs]
        self._clock = clock
        self._every = evaluate_every
        self._max_keys = max(1, max_keys)
        self._lock = threading.Lock()
        self._for = ByTool(self._slos, _SLO.applies, _MAX_TOOLS)

    def __bool__(self) -> bool:
        return bool(self._slos)

    def record(self, action: Action, status: str, duration_ns: int) -> list[AlertEvent]:
        """Count one outcome for every SLO covering ``action``; the alert changes it caused.

        Only ``ok``, ``error`` and ``timeout`` are eligible. O(1) amortised.
        """
        if status not in _ELIGIBLE:
            return []
        slos = self._for(action.tool)
        if not slos:
            return []
        out: list[AlertEvent] = []
        failed = status != "ok"
        with self._lock:
            now = self._clock()
            fine_bucket, coarse_bucket = int(now // FINE), int(now // COARSE)
            for s in slos:
                key = slo_key(s.spec, action)
                if key is None:
                    continue
                k = s.keys.get(key)
                if k is None:
                    k = self._new_key(s, key, now, out)
                else:
                    s.keys.move_to_end(key)
                bad = failed or (s.threshold_ns is not None and duration_ns > s.threshold_ns)
                if k.fine is not None:
                    k.fine.add(fine_bucket, bad)
                k.coarse.add(coarse_bucket, bad)
                eligible, bad_count = s.totals(k, now)
                exhausted = s.is_exhausted(eligible, bad_count)
                if exhausted != k.exhausted or now - k.last_eval >= self._every:
                    k.exhausted = exhausted
                    self._evaluate(s, key, k, now, out)
        return out

    def enforcement(self, action: Action) -> tuple[SLOSpec, str] | None:
        """The first enforcing SLO whose budget for ``action``'s key is exhausted, with why.

        O(1): a flag per key, checked again against the window when it is set.
        """
        slos = self._for(action.tool)
        for s in slos:
            if s.spec.enforce == "none":
                continue
            key = slo_key(s.spec, action)
            if key is None:
                continue
            k = s.keys.get(key)
            if k is None or not k.exhausted:
                continue
            with self._lock:
                eligible, bad = s.totals(k, self._clock())
                k.exhausted = s.is_exhausted(eligible, bad)
            if k.exhausted:
                spec = s.spec
                return spec, (
                    f"the error budget of slo `{spec.id}` is exhausted {s.where(key)}: "
                    f"remaining {s.remaining(eligible, bad):.4g} "
                    f"({bad} bad of {eligible} events in {window_label(spec.window)}, "
                    f"budget {s.budget(eligible):g})"
                )
        return None

    def evaluate(self) -> list[AlertEvent]:
        """Evaluate the alerts of every key now."""
        out: list[AlertEvent] = []
        with self._lock:
            now = self._clock()
            for s in self._slos:
                for key, k in s.keys.items():
                    k.exhausted = s.is_exhausted(*s.totals(k, now))
                    self._evaluate(s, key, k, now, out)
        return out

    def status(self) -> list[SLOStatus]:
        """Every key of every SLO now, by SLO then key; ``firing`` as of the last evaluation."""
        out: list[SLOStatus] = []
        with self._lock:
            now = self._clock()
            for s in self._slos:
                spec = s.spec
                for key in sorted(s.keys):
                    k = s.keys[key]
                    eligible, bad = s.totals(k, now)
                    k.exhausted = s.is_exhausted(eligible, bad)
                    burns = s.burns(k, now)
                    out.append(
                        SLOStatus(
                            slo=spec.id,
                            key=key,
                            objective=spec.objective,
                            target=spec.target,
                            eligible=eligible,
                            bad=bad,
                            budget=s.budget(eligible),
                            remaining=s.remaining(eligible, bad),
                            burn_rates={s.windows[w].label: r for w, r in burns.items()},
                            firing=tuple(
                                name for (_, name), on in zip(s.alerts, k.firing, strict=True) if on
                            ),
                            exhausted=k.exhausted,
                        )
                    )
        return out

    # --- under the lock ---------------------------------------------------------------------

    def _evaluate(self, s: _SLO, key: str, k: _Key, now: float, out: list[AlertEvent]) -> None:
        k.last_eval = now
        burns = s.burns(k, now)
        for i, (a, _) in enumerate(s.alerts):
            long, short = burns[a.long], burns[a.short]
            firing = long >= a.burn and short >= a.burn
            if firing != k.firing[i]:
                k.firing[i] = firing
                out.append(_event(s, key, i, firing, long, short, now))

    def _new_key(self, s: _SLO, key: str, now: float, out: list[AlertEvent]) -> _Key:
        keys = s.keys
        if len(keys) >= self._max_keys:
            for _ in range(len(keys)):
                old_key, old = next(iter(keys.items()))
                if not old.exhausted and not any(old.firing):
                    del keys[old_key]
                    break
                keys.move_to_end(old_key)
            else:
                old_key, old = keys.popitem(last=False)
                burns = s.burns(old, now)
                for i, (a, _) in enumerate(s.alerts):
                    if old.firing[i]:
                        out.append(_event(s, old_key, i, False, burns[a.long], burns[a.short], now))
        k = _Key(s)
        keys[key] = k
        return k


def _event(
    s: _SLO, key: str, i: int, firing: bool, long: float, short: float, at: float
) -> AlertEvent:
    a = s.spec.alerts[i]
    state = "firing" if firing else "resolved"
    return AlertEvent(s.spec.id, key, a.severity, a.burn, a.long, a.short, state, long, short, at)
