"""Timing helpers shared by warden's benchmark and the comparison runner (stdlib only).

Both sides time the same way so their numbers can be divided: warm up, then
``perf_counter_ns`` around each individual call (the ~50-100 ns timer overhead
is included, on both sides), samples until a count or a time budget is
reached, nearest-rank percentiles, medians reported.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from typing import Any


def percentile(sorted_ns: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, math.ceil(q * len(sorted_ns)))
    return sorted_ns[rank - 1]


def time_calls(call: Callable[[], Any], max_samples: int, budget_ns: int) -> dict[str, Any]:
    """Warm up, then time individual calls until ``max_samples`` or the budget is spent.

    Warm-up takes up to 10% of the budget (at most 1000 calls, at least 1). At least 3
    samples are always taken, even if that overruns the budget.
    """
    gc.collect()
    perf = time.perf_counter_ns
    start = perf()
    warm_deadline = start + budget_ns // 10
    warm = 0
    while warm < 1000:
        call()
        warm += 1
        if perf() >= warm_deadline:
            break
    deadline = start + budget_ns
    samples: list[int] = []
    append = samples.append
    while len(samples) < max_samples:
        t0 = perf()
        call()
        t1 = perf()
        append(t1 - t0)
        if t1 >= deadline and len(samples) >= 3:
            break
    samples.sort()
    mean = statistics.fmean(samples)
    return {
        "p50_ns": int(statistics.median(samples)),
        "p99_ns": percentile(samples, 0.99),
        "ops_per_s": round(1e9 / mean, 1),
        "mean_ns": round(mean),
        "samples": len(samples),
        "warmup_calls": warm,
    }


def time_once_ms(fn: Callable[[], Any], reps: int = 5, budget_s: float = 2.0) -> float:
    """Median wall time in ms of up to ``reps`` runs of ``fn`` within ``budget_s``."""
    times: list[float] = []
    start = time.perf_counter()
    for _ in range(reps):
        gc.collect()
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) / 1e6)
        if time.perf_counter() - start >= budget_s:
            break
    return round(statistics.median(times), 3)


def package_versions(names: tuple[str, ...]) -> dict[str, str | None]:
    """Installed version of each distribution (None when absent), for the results' header."""
    from importlib import metadata

    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def ms_stats(samples: list[int]) -> dict[str, float]:
    """Median and p90 in milliseconds of a list of nanosecond samples (for slow operations)."""
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) / 1e6, 3),
        "p90_ms": round(ordered[int(len(ordered) * 0.9)] / 1e6, 3),
        "n": len(ordered),
    }
