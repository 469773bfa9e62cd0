"""The SRE layer on the Governor's path (docs/sre.md): it changes decisions, and it records."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from warden import Action, ActionDenied, Effect, Governor, load_policy_text
from warden.cli import cli

HEAD = """apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
  - {id: no-drop, tool: "db.drop", effect: deny}
"""


class Clock:
    def __init__(self, t: float = 1_900_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def records(gov: Governor, kind: str | None = None) -> list[dict[str, Any]]:
    assert gov.audit is not None
    gov.audit.flush()
    out = [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]
    return [r for r in out if kind is None or r["type"] == kind]


def fail_calls(gov: Governor, tool: str, n: int, agent: str = "bot-1") -> None:
    @gov.tool(tool)
    def broken() -> None:
        raise RuntimeError("downstream 503")

    with gov.session("s1", agent={"id": agent}):
        for _ in range(n):
            with pytest.raises((RuntimeError, ActionDenied)):
                broken()


def test_an_open_breaker_denies_and_is_recorded(tmp_path: Path) -> None:
    gov = Governor(
        load_policy_text(
            HEAD
            + """sre:
  breakers:
    - {id: pay, scope: downstream, tool: "payments.*", consecutive: 3, open_for: 30s}
"""
        ),
        home=tmp_path,
    )
    fail_calls(gov, "payments.charge", 3)
    d = gov.check(Action(tool="payments.refund", agent={"id": "bot-2"}))
    assert d.effect is Effect.DENY and d.rules == ("breaker:pay",)
    assert "payments" in d.reasons[0] and "probes again" in d.reasons[0]
    assert gov.check(Action(tool="mail.send", agent={"id": "bot-2"})).allowed
    (t,) = records(gov, "warden.breaker/v1")
    assert (t["breaker"], t["key"], t["from"], t["to"]) == ("pay", "payments", "closed", "open")
    out = CliRunner().invoke(cli, ["status", "--home", str(tmp_path), "--json"])
    assert out.exit_code == 0, out.output
    assert [(b["breaker"], b["state"]) for b in json.loads(out.output)["breakers"]] == [
        ("pay", "open")
    ]


def test_an_exhausted_error_budget_requires_approval(tmp_path: Path) -> None:
    clock = Clock()
    gov = Governor(
        load_policy_text(
            HEAD
            + """sre:
  slos:
    - {id: refunds, tool: "payments.refund", target: 0.9, min_events: 10,
       enforce: require_approval}
"""
        ),
        home=tmp_path,
        clock=clock,
    )

    @gov.tool("payments.refund")
    def refund(fail: bool) -> str:
        if fail:
            raise RuntimeError("ledger down")
        return "ok"

    with gov.session("s1", agent={"id": "bot-1"}):
        for i in range(10):
            with contextlib.suppress(RuntimeError):
                refund(fail=i < 2)  # 2 bad of 10: budget (1 - 0.9) * 10 = 1, exhausted
            clock.t += 1
    assert gov.sre is not None and gov.sre.slos is not None
    gov.sre.slos.evaluate()
    d = gov.check(Action(tool="payments.refund", args={"fail": False}, agent={"id": "bot-1"}))
    assert d.effect is Effect.REQUIRE_APPROVAL and d.rules == ("slo:refunds",)
    assert gov.check(Action(tool="mail.send", agent={"id": "bot-1"})).allowed


def test_an_anomaly_quarantines_through_the_kill_switch(tmp_path: Path) -> None:
    gov = Governor(
        load_policy_text(HEAD + "sre:\n  anomaly: {learning: 3, quarantine: true}\n"),
        home=tmp_path,
    )
    for _ in range(3):
        gov.check(Action(tool="tickets.read", agent={"id": "bot-1"}))
    gov.check(Action(tool="payments.export_all", agent={"id": "bot-1"}))  # a first-ever tool
    d = gov.check(Action(tool="tickets.read", agent={"id": "bot-1"}))
    assert d.effect is Effect.DENY and d.reasons[0].startswith("killed: quarantined: new_tool")
    (alert,) = records(gov, "warden.alert/v1")
    assert alert["kind"] == "anomaly" and alert["signal"] == "new_tool"
    assert records(gov, "warden.kill/v1")[0]["by"] == "warden.sre"


def test_a_cascade_opens_the_sources_breaker(tmp_path: Path) -> None:
    gov = Governor(
        load_policy_text(HEAD + "sre:\n  cascade: {window: 5m, min_agents: 3}\n"),
        home=tmp_path,
    )
    for caller, callee in (("a", "b"), ("b", "c")):
        gov.check(Action(tool="work", agent={"id": callee}, context={"caller": caller}))
    for agent in ("c", "b", "a"):
        gov.runtime.kill(agent=agent, reason="failing")
    (alert,) = [r for r in records(gov, "warden.alert/v1") if r["kind"] == "cascade"]
    assert alert["source"] == "c" and sorted(alert["agents"]) == ["a", "b", "c"]
    transitions = records(gov, "warden.breaker/v1")
    assert [(t["breaker"], t["key"], t["to"]) for t in transitions] == [("cascade", "c", "open")]


def test_shadow_mode_records_disagreements_and_never_decides(tmp_path: Path) -> None:
    candidate = load_policy_text(
        """apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: read-only, tool: "*.read", effect: allow}
"""
    )
    gov = Governor(load_policy_text(HEAD), home=tmp_path, shadow=candidate)
    assert gov.check(Action(tool="db.read")).allowed
    assert gov.check(Action(tool="db.write")).allowed  # the candidate would deny
    assert not gov.check(Action(tool="db.drop")).allowed  # both deny
    assert gov.sre is not None
    assert gov.sre.shadow_stats() == {"decisions": 3, "disagreements": 1, "errors": 0}
    (rec,) = records(gov, "warden.shadow/v1")
    assert rec["enforced"] == {"effect": "allow", "rules": ["all"]}
    assert rec["shadow"] == {"effect": "deny", "rules": []}
    assert rec["policy"] == candidate.hash


def test_without_an_sre_section_there_is_no_sre_layer(tmp_path: Path) -> None:
    gov = Governor(load_policy_text(HEAD), home=tmp_path, audit=False)
    assert gov.sre is None
    gov.reload(load_policy_text(HEAD + "sre:\n  cascade: {}\n"))
    assert gov.sre is not None and gov.sre.enabled


def test_telemetry_spans_and_metrics(tmp_path: Path) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from warden.sre.telemetry import instrument

    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    gov = Governor(load_policy_text(HEAD), home=tmp_path, audit=False)
    instrument(gov, tracer_provider, MeterProvider(metric_readers=[reader]))

    @gov.tool("db.read")
    def read() -> str:
        return "rows"

    with gov.session("s1", agent={"id": "bot-1"}):
        read()
    gov.check(Action(tool="db.drop"))
    names = [
        (s.name, s.attributes.get("warden.effect") or s.attributes.get("warden.status"))
        for s in spans.get_finished_spans()
    ]
    assert names == [
        ("warden.decision", "allow"),
        ("warden.outcome", "ok"),
        ("warden.decision", "deny"),
    ]
    decision = spans.get_finished_spans()[0]
    assert decision.attributes["warden.agent"] == "bot-1"
    assert decision.end_time >= decision.start_time
    data = reader.get_metrics_data()
    metrics = {
        m.name: m for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    }
    counts = {
        dp.attributes["effect"]: dp.value for dp in metrics["warden.decisions"].data.data_points
    }
    assert counts == {"allow": 1, "deny": 1}


def test_status_without_state_and_with_kills(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["status", "--home", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "no warden state directory" in r.output
    gov = Governor(load_policy_text(HEAD), home=tmp_path, audit=False)
    gov.runtime.kill(agent="bot-9", reason="looping")
    r = CliRunner().invoke(cli, ["status", "--home", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "agent bot-9: looping" in r.output
    assert "bot-9: ring 3" in r.output
