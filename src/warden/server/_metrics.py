"""The service's metrics, rendered in the Prometheus text exposition format (version 0.0.4).

Hand-written rather than prometheus-client: four metric families do not need
a dependency. Counters are per process (one uvicorn worker each); Prometheus
sums them across instances.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Callable
from typing import Final

from warden.action import Effect

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
BUCKETS: Final = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
)  # fmt: skip
"""Upper bounds of the decision latency histogram, in seconds (a decision takes microseconds)."""


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metrics:
    """Counters and the latency histogram; ``render`` reads the pending approvals gauge."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.decisions: dict[str, int] = {e.value: 0 for e in Effect}
        self._bucket_counts = [0] * (len(BUCKETS) + 1)  # the last one is +Inf
        self._sum = 0.0
        self._count = 0
        self.store_errors = 0

    def decided(self, effect: str, seconds: float) -> None:
        with self._lock:
            self.decisions[effect] = self.decisions.get(effect, 0) + 1
            self._bucket_counts[bisect_left(BUCKETS, seconds)] += 1
            self._sum += seconds
            self._count += 1

    def store_error(self) -> None:
        with self._lock:
            self.store_errors += 1

    def render(self, approvals_pending: Callable[[], int | None]) -> str:
        """The exposition text. ``approvals_pending`` None (store down) omits the gauge."""
        pending = approvals_pending()
        with self._lock:
            decisions = dict(self.decisions)
            buckets = list(self._bucket_counts)
            total, count, errors = self._sum, self._count, self.store_errors
        out = [
            "# HELP warden_decisions_total Decisions made by this server, by effect.",
            "# TYPE warden_decisions_total counter",
        ]
        out += [f'warden_decisions_total{{effect="{e}"}} {n}' for e, n in sorted(decisions.items())]
        out += [
            "# HELP warden_decision_seconds Time Governor.check took, in seconds.",
            "# TYPE warden_decision_seconds histogram",
        ]
        running = 0
        for bound, n in zip((*map(_number, BUCKETS), "+Inf"), buckets, strict=True):
            running += n
            out.append(f'warden_decision_seconds_bucket{{le="{bound}"}} {running}')
        out += [
            f"warden_decision_seconds_sum {total!r}",
            f"warden_decision_seconds_count {count}",
            "# HELP warden_approvals_pending Approval requests waiting for a human.",
            "# TYPE warden_approvals_pending gauge",
        ]
        if pending is not None:
            out.append(f"warden_approvals_pending {pending}")
        out += [
            "# HELP warden_store_errors_total Requests that failed because a store did not answer.",
            "# TYPE warden_store_errors_total counter",
            f"warden_store_errors_total {errors}",
        ]
        return "\n".join(out) + "\n"
