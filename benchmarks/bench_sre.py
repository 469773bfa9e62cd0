"""SRE benchmarks: a breaker check, recording an outcome into SLO windows, the decision path."""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path
from typing import Any

from timing import time_calls
from warden import Action, Governor, load_policy_text
from warden.sre.breakers import Breakers
from warden.sre.slo import SLOs

POLICY = """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
sre:
  breakers:
    - {id: pay, scope: downstream, tool: "payments.*", failure_ratio: 0.5, min_calls: 20}
  slos:
    - {id: refunds, scope: tool, tool: "payments.*", target: 0.995}
  anomaly: {}
"""


def run(max_samples: int, budget_s: float) -> dict[str, Any]:
    print("warden sre:", file=sys.stderr)
    budget = int(budget_s * 1e9 / 4)
    policy = load_policy_text(POLICY)
    action = Action(tool="payments.refund", args={"amount": 5}, agent={"id": "bot-1"})
    breakers = Breakers(policy.sre.breakers)
    slos = SLOs(policy.sre.slos)
    ticks = itertools.count()
    with tempfile.TemporaryDirectory() as tmp:
        plain = Governor(
            load_policy_text(POLICY.partition("sre:")[0]), home=Path(tmp) / "a", audit=False
        )
        gov = Governor(policy, home=Path(tmp) / "b", audit=False)
        out = {
            "breaker_check": time_calls(lambda: breakers.check(action), max_samples, budget),
            "slo_record": time_calls(
                lambda: slos.record(action, "ok" if next(ticks) % 50 else "error", 2_000_000),
                max_samples,
                budget,
            ),
            "check_plain": time_calls(lambda: plain.check(action), max_samples, budget),
            "check_sre": time_calls(lambda: gov.check(action), max_samples, budget),
        }
        plain.runtime.close()
        gov.runtime.close()
    return out


def render(r: dict[str, Any]) -> list[str]:
    def us(s: dict[str, Any]) -> str:
        return f"{s['p50_ns'] / 1e3:.2f} µs"

    return [
        "",
        "### SRE",
        "",
        "| measure | p50 | target |",
        "|---|---:|---:|",
        f"| breaker check, closed (`Breakers.check`) | {us(r['breaker_check'])} | < 1 µs |",
        f"| recording an outcome into SLO windows (`SLOs.record`, 3 burn-rate alerts) | "
        f"{us(r['slo_record'])} | < 5 µs |",
        f"| `Governor.check`, one allow rule, no `sre:` section | {us(r['check_plain'])} | |",
        f"| `Governor.check`, with a breaker, an SLO and anomaly detection | "
        f"{us(r['check_sre'])} | |",
    ]
