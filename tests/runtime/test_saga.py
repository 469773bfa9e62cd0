"""Durable sagas (docs/runtime.md, "Sagas"): compensation, governance, kills, crashes, the CLI.

The actions write to an effects file (``saga_worker.Effects``) that counts
every call and dedupes effects by idempotency key, as a remote system would.
Crash tests run the saga in a real subprocess that dies with ``os._exit``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from warden import Action, Decision, Governor, load_policy_text
from warden.cli.saga import saga as saga_cli
from warden.errors import (
    ActionDenied,
    ActionKilled,
    ApprovalRequired,
    ConfigurationError,
    SagaError,
)
from warden.runtime import inflight as inflight_mod
from warden.runtime.inflight import InFlight
from warden.runtime.saga import Saga, SagaRecord, SagaStore

WORKER = Path(__file__).with_name("saga_worker.py")
_spec = importlib.util.spec_from_file_location("warden_test_saga_worker", WORKER)
assert _spec is not None and _spec.loader is not None
worker = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(worker)

POLICY = """
apiVersion: warden/v1
kind: Policy
name: shop
default: deny
rules:
  - id: shop
    tool: ["reserve", "charge", "slow_charge"]
    effect: allow
  - id: big-charges
    tool: "ship"
    when: "args.to == 'Oslo'"
    effect: require_approval
    reason: shipping to Oslo needs a human
  - id: ship
    tool: "ship"
    effect: allow
"""


@pytest.fixture
def home() -> Path:
    return Path(os.environ["WARDEN_HOME"])


@pytest.fixture
def effects(tmp_path: Path) -> Any:
    return worker.Effects(tmp_path / "effects.db")


@pytest.fixture
def store(effects: Any) -> Iterator[SagaStore]:
    with SagaStore(actions=worker.actions(effects), backoff=0.001) as s:
        yield s


def states(rec: SagaRecord) -> list[tuple[str, str]]:
    return [(s.action, s.state) for s in rec.steps]


def history(rec: SagaRecord, step: int | None) -> list[str]:
    return [e.state for e in rec.events if e.step == step]


def run(saga: Saga, *steps: tuple[Any, ...], then: BaseException | None = None) -> None:
    """Run ``(action, args[, compensate[, compensate_args]])`` steps in the saga's block."""
    with saga:
        for action, args, *undo in steps:
            saga.step(
                action,
                args,
                compensate=undo[0] if undo else None,
                compensate_args=undo[1] if len(undo) > 1 else None,
            )
        if then is not None:
            raise then


# -- running and compensating ---------------------------------------------------------------


def test_happy_path_runs_each_step_once_with_its_key(store: SagaStore, effects: Any) -> None:
    with store.begin("checkout", key="order-1") as saga:
        first = saga.step("reserve", {"sku": "A1"}, compensate="release")
        saga.step("charge", {"amount": 30.0}, compensate="refund")
        saga.step("ship", {"to": "Bergen"})
    assert first == {"done": "reserve", "key": f"{saga.id}:1", "args": {"sku": "A1"}}
    assert saga.state == "completed"
    assert effects.calls() == [
        ("reserve", f"{saga.id}:1"),
        ("charge", f"{saga.id}:2"),
        ("ship", f"{saga.id}:3"),
    ]
    rec = store.get(saga.id)
    assert rec.state == "completed"
    assert rec.key == "order-1"
    assert rec.holder_pid is None  # the lease is released
    assert states(rec) == [("reserve", "done"), ("charge", "done"), ("ship", "done")]
    assert rec.steps[1].args == {"amount": 30.0}
    assert type(rec.steps[1].args["amount"]) is float  # JSON kept, not canonicalised to 30
    assert rec.steps[0].result == first
    assert history(rec, None) == ["running", "completed"]
    assert history(rec, 2) == ["started", "done"]
    assert store.list() == [store.list("completed")[0]]


def test_failure_at_step_3_compensates_2_then_1(store: SagaStore, effects: Any) -> None:
    saga = store.begin("checkout")
    with pytest.raises(RuntimeError, match="card declined"):
        run(
            saga,
            ("reserve", {"sku": "A1"}, "release"),
            ("charge", {"amount": 30}, "refund", {"amount": 29}),
            ("decline", {"card": "4242"}),
            ("ship", {"to": "Bergen"}),
        )
    assert effects.calls() == [
        ("reserve", f"{saga.id}:1"),
        ("charge", f"{saga.id}:2"),
        ("decline", f"{saga.id}:3"),
        ("refund", f"{saga.id}:2:undo"),
        ("release", f"{saga.id}:1:undo"),
    ]
    rec = store.get(saga.id)
    assert rec.state == "compensated"
    assert rec.error == "step 3 `decline` raised RuntimeError: card declined"
    assert states(rec) == [
        ("reserve", "compensated"),
        ("charge", "compensated"),
        ("decline", "error"),
    ]
    assert rec.steps[1].compensate_args == {"amount": 29}
    assert rec.steps[0].compensate_args == {"sku": "A1"}  # defaults to the step's args
    assert history(rec, 1) == ["started", "done", "compensating", "compensated"]
    assert history(rec, 3) == ["started", "error"]
    assert history(rec, None) == ["running", "compensating", "compensated"]
    with pytest.raises(SagaError, match="is compensated and takes no more steps"):
        saga.step("reserve", {"sku": "A2"})


def test_an_exception_in_the_block_compensates_and_is_reraised(
    store: SagaStore, effects: Any
) -> None:
    class Oops(Exception):
        pass

    saga = store.begin("checkout")
    with pytest.raises(Oops):
        run(
            saga,
            ("reserve", {"sku": "A1"}, "release"),
            ("ship", {"to": "Bergen"}),  # no compensation: nothing to undo
            then=Oops("the agent changed its mind"),
        )
    rec = store.get(saga.id)
    assert rec.state == "compensated"
    assert rec.error == "the saga block raised Oops: the agent changed its mind"
    assert states(rec) == [("reserve", "compensated"), ("ship", "done")]
    assert effects.calls()[-1] == ("release", f"{saga.id}:1:undo")


def test_compensation_is_retried_with_the_same_key(effects: Any) -> None:
    failures = iter([ConnectionError("timeout"), ConnectionError("timeout again")])

    def flaky_refund(idempotency_key: str, **args: Any) -> None:
        effects.record("refund", idempotency_key)
        exc = next(failures, None)
        if exc is not None:
            raise exc

    registry = worker.actions(effects) | {"refund": flaky_refund}
    with SagaStore(actions=registry, retries=3, backoff=0.001) as store:
        saga = store.begin("checkout")
        with pytest.raises(RuntimeError):
            run(
                saga,
                ("reserve", {"sku": "A1"}, "release"),
                ("charge", {"amount": 30}, "refund"),
                ("decline", {}),
            )
        rec = store.get(saga.id)
    assert rec.state == "compensated"
    assert rec.steps[1].attempts == 3
    assert rec.steps[0].attempts == 1
    undo = f"{saga.id}:2:undo"
    assert [c for c in effects.calls() if c[0] == "refund"] == [("refund", undo)] * 3
    assert list(effects.effects()).count(undo) == 1
    assert history(rec, 2)[-4:] == ["compensating", "compensating", "compensating", "compensated"]


def test_a_compensation_that_keeps_failing_leaves_the_saga_failed(effects: Any, home: Path) -> None:
    registry = worker.actions(effects)
    with SagaStore(actions=registry, retries=2, backoff=0.001) as store:
        saga = store.begin("checkout", key="o-7")
        with pytest.raises(RuntimeError) as info:
            run(
                saga,
                ("reserve", {"sku": "A1"}, "release"),
                ("charge", {"amount": 30}, "broken"),
                ("decline", {}),
            )
        assert any("could not be compensated and is failed" in n for n in info.value.__notes__)
        rec = store.get(saga.id)
        assert rec.state == "failed"
        assert rec.compensation_error == (
            "compensation `broken` of step 2 failed 3 times: ConnectionError: ledger unreachable"
        )
        # Undoing step 1 while step 2 still stands would break the reverse order: it waits.
        assert states(rec) == [
            ("reserve", "done"),
            ("charge", "compensating"),
            ("decline", "error"),
        ]
        assert rec.steps[1].attempts == 3
        assert [s.id for s in store.list(state="failed")] == [saga.id]
        assert store.recover() == []  # failed needs an operator, not recovery
    assert [c[0] for c in effects.calls()].count("broken") == 3
    assert "release" not in [c[0] for c in effects.calls()]

    runner = CliRunner()
    out = runner.invoke(saga_cli, ["list", "--state", "failed", "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert saga.id in out.output
    assert "failed" in out.output
    out = runner.invoke(saga_cli, ["show", saga.id, "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert "state:    failed" in out.output
    assert "compensation `broken` of step 2 failed 3 times" in out.output
    assert f"{saga.id}:2" in out.output
    shown = json.loads(runner.invoke(saga_cli, ["show", saga.id, "--json"]).output)
    assert shown["state"] == "failed"
    assert [s["state"] for s in shown["steps"]] == ["done", "compensating", "error"]


def test_bad_steps_are_refused_before_anything_runs(store: SagaStore, effects: Any) -> None:
    with store.begin("checkout") as saga:
        with pytest.raises(SagaError, match="no action `teleport`"):
            saga.step("teleport", {})
        with pytest.raises(SagaError, match="no compensation `unreserve`"):
            saga.step("reserve", {"sku": "A1"}, compensate="unreserve")
        with pytest.raises(SagaError, match="not JSON data"):
            saga.step("reserve", {"sku": b"A1"}, compensate="release")
        with pytest.raises(SagaError, match="not JSON data"):
            saga.step("reserve", {"qty": float("nan")})
        with pytest.raises(SagaError, match="compensate_args of step `reserve` are not JSON"):
            saga.step("reserve", {"sku": "A1"}, compensate="release", compensate_args={"x": {1}})
        with pytest.raises(SagaError, match="compensate_args but no compensate"):
            saga.step("reserve", {"sku": "A1"}, compensate_args={"sku": "A1"})
        with pytest.raises(SagaError, match="must not contain `idempotency_key`"):
            saga.step("reserve", {"idempotency_key": "mine"})
        assert effects.calls() == []
        assert store.get(saga.id).steps == ()
        assert saga.step("reserve", {"sku": "A1"})["key"] == f"{saga.id}:1"  # numbering intact


def test_store_arguments_are_checked() -> None:
    with pytest.raises(ConfigurationError, match="retries"):
        SagaStore(retries=-1)
    with pytest.raises(ConfigurationError, match="not callable"):
        SagaStore(actions={"x": 3})  # type: ignore[dict-item]  # the mistake under test
    with pytest.raises(ConfigurationError, match="lease"):
        SagaStore(lease=float("inf"))


# -- governance and kills -------------------------------------------------------------------


class RecordingGovernor(Governor):
    """A real Governor that also keeps the outcomes it records (through an outcome listener)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.outcomes: list[tuple[str, str, str | None, str]] = []
        self.outcome_listeners.append(
            lambda a, d, status, _ns: self.outcomes.append((a.tool, status, a.session, d.id))
        )


@pytest.fixture
def gov(home: Path) -> RecordingGovernor:
    return RecordingGovernor(
        load_policy_text(POLICY), audit=False, home=home, agent={"id": "shop-bot"}
    )


def test_a_denied_step_does_not_run_and_the_saga_compensates(
    gov: RecordingGovernor, effects: Any
) -> None:
    checked: list[Action] = []

    class Sink:
        def record(self, action: Action, decision: Decision) -> None:
            checked.append(action)

    gov.sinks.append(Sink())
    registry = worker.actions(effects)
    with SagaStore(actions=registry, governor=gov) as store:
        saga = store.begin("checkout")
        with pytest.raises(ActionDenied) as info:
            run(
                saga,
                ("reserve", {"sku": "A1"}, "release"),
                ("charge", {"amount": 30}, "refund"),
                ("unship", {"to": "Bergen"}),  # no rule allows it: default deny
                ("ship", {"to": "Bergen"}),
            )
        rec = store.get(saga.id)
    assert info.value.decision.effect == "deny"
    assert [c[0] for c in effects.calls()] == ["reserve", "charge", "refund", "release"]
    assert rec.state == "compensated"
    assert states(rec)[2] == ("unship", "error")
    assert rec.steps[2].error is not None and "refused by the governor" in rec.steps[2].error
    assert rec.steps[2].started_at == rec.steps[2].finished_at
    assert "step 3 `unship` was refused by the governor: deny" in (rec.error or "")
    # Every step was checked as an Action in the saga's session; compensations were not.
    assert [(a.tool, a.session, dict(a.args)) for a in checked] == [
        ("reserve", saga.id, {"sku": "A1"}),
        ("charge", saga.id, {"amount": 30}),
        ("unship", saga.id, {"to": "Bergen"}),
    ]
    assert checked[0].agent["id"] == "shop-bot"
    assert checked[1].context["saga"] == {"id": saga.id, "name": "checkout", "step": 2}
    # ... and compensations were recorded as outcomes, against the decision they undo.
    by_tool = {tool: (status, session, did) for tool, status, session, did in gov.outcomes}
    assert by_tool["unship"][0] == "denied"
    assert by_tool["refund"] == ("ok", saga.id, rec.steps[1].decision_id)
    assert by_tool["release"] == ("ok", saga.id, rec.steps[0].decision_id)
    assert [t for t, *_ in gov.outcomes] == ["reserve", "charge", "unship", "refund", "release"]


def test_a_step_needing_approval_compensates_and_raises_approval_required(
    gov: RecordingGovernor, effects: Any
) -> None:
    with SagaStore(actions=worker.actions(effects), governor=gov) as store:
        saga = store.begin("checkout")
        with pytest.raises(ApprovalRequired) as info:
            run(saga, ("reserve", {"sku": "A1"}, "release"), ("ship", {"to": "Oslo"}))
        assert info.value.approval_id is not None
        assert store.get(saga.id).state == "compensated"
    assert [c[0] for c in effects.calls()] == ["reserve", "release"]


def test_a_kill_mid_step_cancels_it_and_compensates(gov: RecordingGovernor, effects: Any) -> None:
    inflight = InFlight()
    entered, stop = threading.Event(), threading.Event()

    def slow_charge(idempotency_key: str, **args: Any) -> str:
        effects.record("slow_charge", idempotency_key)
        call = inflight_mod.current()
        assert call is not None
        call.add_hook(stop.set)  # how a cancellable action learns of the kill
        entered.set()
        assert stop.wait(10), "the kill never reached the call"
        return "charged"

    registry = worker.actions(effects) | {"slow_charge": slow_charge}
    with SagaStore(actions=registry, governor=gov, inflight=inflight) as store:
        saga = store.begin("checkout")

        cancelled: list[int] = []

        def killer() -> None:
            entered.wait(10)
            cancelled.append(
                inflight.cancel(lambda c: c.session == saga.id, "killed: runaway (by ops)")
            )

        thread = threading.Thread(target=killer)
        thread.start()
        with pytest.raises(ActionKilled) as info:
            run(
                saga,
                ("reserve", {"sku": "A1"}, "release"),
                ("slow_charge", {"amount": 30}, "refund"),
                ("ship", {"to": "Bergen"}),
            )
        thread.join()
        rec = store.get(saga.id)
    assert cancelled == [1]
    assert info.value.decision.reasons[-1] == "killed: runaway (by ops)"
    assert info.value.decision.id == rec.steps[1].decision_id
    assert len(inflight) == 0
    # The killed step may have taken effect, so it is compensated too, newest first.
    assert [c[0] for c in effects.calls()] == ["reserve", "slow_charge", "refund", "release"]
    assert states(rec) == [("reserve", "compensated"), ("slow_charge", "compensated")]
    assert history(rec, 2) == ["started", "compensating", "compensated"]  # never `done`
    assert rec.steps[1].error == "killed: runaway (by ops)"
    assert ("slow_charge", "killed", saga.id, rec.steps[1].decision_id) in gov.outcomes


def test_the_governors_own_kill_switch_stops_a_step_and_the_undo_still_runs(
    gov: RecordingGovernor, effects: Any
) -> None:
    entered, stop = threading.Event(), threading.Event()

    def slow_charge(idempotency_key: str, **args: Any) -> None:
        effects.record("slow_charge", idempotency_key)
        call = inflight_mod.current()
        assert call is not None
        call.add_hook(stop.set)
        entered.set()
        stop.wait(10)

    registry = worker.actions(effects) | {"slow_charge": slow_charge}
    with SagaStore(actions=registry, governor=gov) as store:  # no inflight=: the Governor's
        saga = store.begin("checkout")
        cancelled: list[int] = []

        def operator() -> None:
            entered.wait(10)
            cancelled.append(gov.runtime.kill(session=saga.id, reason="runaway", by="ops"))

        thread = threading.Thread(target=operator)
        thread.start()
        with pytest.raises(ActionKilled, match="killed: runaway"):
            run(
                saga,
                ("reserve", {"sku": "A1"}, "release"),
                ("slow_charge", {"amount": 30}, "refund"),
            )
        thread.join()
        rec = store.get(saga.id)
    assert cancelled == [1]
    assert rec.state == "compensated"  # the kill denies new steps, not the undo
    assert [c[0] for c in effects.calls()] == ["reserve", "slow_charge", "refund", "release"]
    # Anything more in that session is now refused at the check, before it runs.
    assert gov.check(Action(tool="reserve", session=saga.id)).effect == "deny"


def test_a_step_cancelled_before_it_starts_never_runs(effects: Any) -> None:
    inflight = InFlight()
    registry = worker.actions(effects)
    orig = inflight.track

    def track_and_kill(agent: str | None, session: str | None, tool: str) -> Any:
        cm = orig(agent, session, tool)
        call = cm.__enter__()
        if tool == "charge":  # a kill that lands after the call is registered, before it runs
            call.cancel("killed: --all (by ops)")
        return _Entered(cm, call)

    inflight.track = track_and_kill  # type: ignore[method-assign]  # the race, made certain
    with SagaStore(actions=registry, inflight=inflight) as store:
        saga = store.begin("checkout")
        with pytest.raises(ActionKilled):
            run(saga, ("reserve", {"sku": "A1"}, "release"), ("charge", {"amount": 30}, "refund"))
        assert states(store.get(saga.id)) == [
            ("reserve", "compensated"),
            ("charge", "compensated"),
        ]
    assert [c[0] for c in effects.calls()] == ["reserve", "refund", "release"]


class _Entered:
    def __init__(self, cm: Any, call: Any) -> None:
        self.cm, self.call = cm, call

    def __enter__(self) -> Any:
        return self.call

    def __exit__(self, *exc: Any) -> Any:
        return self.cm.__exit__(*exc)


# -- idempotent begin ---------------------------------------------------------------------


def test_begin_with_a_completed_key_replays_without_calling(store: SagaStore, effects: Any) -> None:
    with store.begin("checkout", key="order-9") as saga:
        a = saga.step("reserve", {"sku": "A1"}, compensate="release")
        b = saga.step("charge", {"amount": 30}, compensate="refund")
    before = effects.calls()
    with store.begin("checkout", key="order-9") as again:
        assert again.replaying
        assert again.id == saga.id
        assert again.step("reserve", {"sku": "A1"}, compensate="release") == a
        assert again.step("charge", {"amount": 30}, compensate="refund") == b
        with pytest.raises(SagaError, match="completed with 2 steps"):
            again.step("ship", {"to": "Bergen"})
    assert effects.calls() == before
    third = store.begin("checkout", key="order-9")
    with pytest.raises(SagaError, match="does not match step 1 `reserve`"):
        third.step("reserve", {"sku": "B2"})
    with pytest.raises(SagaError, match="key `order-9` belongs to saga"):
        store.begin("refund-flow", key="order-9")
    assert [s.id for s in store.list()] == [saga.id]


def test_begin_with_a_settled_or_running_key_raises(store: SagaStore, effects: Any) -> None:
    with pytest.raises(RuntimeError):
        run(store.begin("checkout", key="order-5"), ("decline", {}))
    with pytest.raises(SagaError, match="already ended compensated; a new attempt needs a new key"):
        store.begin("checkout", key="order-5")
    with store.begin("checkout", key="order-6") as running:
        with pytest.raises(SagaError, match=f"saga `{running.id}` with key `order-6` is still"):
            store.begin("checkout", key="order-6")
        # Nor may a second store in this live process take it over.
        with SagaStore(actions=worker.actions(effects)) as other:
            assert other.recover() == []
        running.step("reserve", {"sku": "A1"})
    assert store.get(running.id).state == "completed"


# -- crashes and leases (real subprocesses) ----------------------------------------------------


def run_worker(home: Path, effects: Any, scenario: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(WORKER), str(home), str(effects.path), scenario],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def begun(out: str) -> str:
    return next(line.split()[1] for line in out.splitlines() if line.startswith("BEGUN "))


def test_a_crash_between_steps_is_compensated_on_the_next_open(home: Path, effects: Any) -> None:
    proc = run_worker(home, effects, "crash-after-step2")
    assert proc.returncode == 1, proc.stderr
    saga_id = begun(proc.stdout)
    assert [c[0] for c in effects.calls()] == ["reserve", "charge"]

    with SagaStore(actions=worker.actions(effects)) as store:  # recovery runs on open
        rec = store.get(saga_id)
        assert store.recover() == []  # and only once
    assert rec.state == "compensated"
    assert rec.error is not None and "abandoned" in rec.error
    assert states(rec) == [("reserve", "compensated"), ("charge", "compensated")]
    assert effects.calls()[2:] == [
        ("refund", f"{saga_id}:2:undo"),
        ("release", f"{saga_id}:1:undo"),
    ]
    for step in (1, 2):
        assert history(rec, step) == ["started", "done", "compensating", "compensated"]


def test_a_crash_inside_a_step_compensates_that_uncertain_step(home: Path, effects: Any) -> None:
    proc = run_worker(home, effects, "crash-in-step2")
    assert proc.returncode == 1, proc.stderr
    saga_id = begun(proc.stdout)
    with SagaStore(recover=False) as reader:
        assert states(reader.get(saga_id)) == [("reserve", "done"), ("charge", "started")]

    with SagaStore(actions=worker.actions(effects)) as store:
        rec = store.get(saga_id)
    assert states(rec) == [("reserve", "compensated"), ("charge", "compensated")]
    assert history(rec, 2) == ["started", "compensating", "compensated"]
    assert effects.calls()[2:] == [
        ("refund", f"{saga_id}:2:undo"),
        ("release", f"{saga_id}:1:undo"),
    ]


def test_a_crash_during_compensation_reruns_it_with_the_same_key(home: Path, effects: Any) -> None:
    proc = run_worker(home, effects, "crash-in-undo2")
    assert proc.returncode == 1, proc.stderr
    saga_id = begun(proc.stdout)
    undo2, undo1 = f"{saga_id}:2:undo", f"{saga_id}:1:undo"
    with SagaStore(recover=False) as reader:
        rec = reader.get(saga_id)
    assert rec.state == "compensating"
    assert states(rec) == [("reserve", "done"), ("charge", "compensating"), ("decline", "error")]
    assert effects.calls()[-1] == ("refund", undo2)  # its effect happened; its record did not

    with SagaStore(actions=worker.actions(effects)) as store:
        rec = store.get(saga_id)
    assert rec.state == "compensated"
    assert states(rec) == [
        ("reserve", "compensated"),
        ("charge", "compensated"),
        ("decline", "error"),
    ]
    calls = effects.calls()
    assert calls.count(("refund", undo2)) == 2  # re-run after the crash, with the same key
    assert calls.count(("release", undo1)) == 1
    assert effects.effects()[undo2] == "refund"  # ... so the remote side did it once
    assert history(rec, 2).count("compensated") == 1  # and it is recorded once
    assert history(rec, 1) == ["started", "done", "compensating", "compensated"]


def test_recovery_skips_sagas_whose_compensations_it_does_not_have(
    home: Path, effects: Any
) -> None:
    proc = run_worker(home, effects, "crash-after-step2")
    saga_id = begun(proc.stdout)
    with SagaStore(actions={"release": worker.actions(effects)["release"]}) as partial:
        assert partial.recover() == []
        assert partial.get(saga_id).state == "running"
    assert len(effects.calls()) == 2
    with SagaStore(actions=worker.actions(effects), recover=False) as full:
        assert full.recover() == [saga_id]


@pytest.fixture
def holder(home: Path, effects: Any) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = subprocess.Popen(
        [sys.executable, str(WORKER), str(home), str(effects.path), "hold"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    saga_id = ""
    for line in proc.stdout:
        if line.startswith("HELD "):
            saga_id = line.split()[1]
            break
    assert saga_id, proc.stderr.read() if proc.stderr else ""
    try:
        yield proc, saga_id
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def test_a_saga_held_by_a_live_process_is_not_recovered(
    holder: tuple[subprocess.Popen[str], str], effects: Any
) -> None:
    proc, saga_id = holder
    with SagaStore(actions=worker.actions(effects)) as store:
        assert store.get(saga_id).state == "running"
        assert store.get(saga_id).holder_pid == proc.pid
        assert store.recover() == []
        with pytest.raises(SagaError, match="is still running"):
            store.begin("checkout", key="order-hold")
        out, err = proc.communicate("go\n", timeout=30)
        assert proc.returncode == 0, err
        assert "completed" in out
        assert store.get(saga_id).state == "completed"
    assert [c[0] for c in effects.calls()] == ["reserve", "charge", "ship"]


def test_a_killed_holder_is_recovered_even_before_it_is_reaped(
    holder: tuple[subprocess.Popen[str], str], effects: Any
) -> None:
    proc, saga_id = holder
    proc.send_signal(signal.SIGKILL)
    stat = Path(f"/proc/{proc.pid}/stat")
    deadline = time.monotonic() + 10
    while stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, "the worker did not die"
        time.sleep(0.01)
    # The PID still exists (a zombie: nobody has waited for it), but its holder is gone.
    with SagaStore(actions=worker.actions(effects), recover=False) as store:
        assert store.recover() == [saga_id]
        rec = store.get(saga_id)
    assert rec.state == "compensated"
    assert f"pid {proc.pid}" in (rec.error or "")
    assert effects.calls() == [("reserve", f"{saga_id}:1"), ("release", f"{saga_id}:1:undo")]


def test_a_stale_heartbeat_loses_the_lease_and_the_old_holder_cannot_record(
    holder: tuple[subprocess.Popen[str], str], effects: Any
) -> None:
    proc, saga_id = holder
    later = lambda: time.time() + 3600  # noqa: E731 - a clock an hour ahead: the heartbeat is stale
    with SagaStore(actions=worker.actions(effects), clock=later, recover=False) as store:
        assert store.recover() == [saga_id]
        rec = store.get(saga_id)
    assert rec.state == "compensated"
    assert "no heartbeat from pid" in (rec.error or "")
    out, _ = proc.communicate("go\n", timeout=30)
    assert proc.returncode != 0
    assert "SagaError: saga" in out and "is no longer held by this process" in out
    assert "charge" not in [c[0] for c in effects.calls()]  # it never ran step 2


def test_a_long_step_keeps_its_lease_by_heartbeat(effects: Any) -> None:
    seen: list[list[str]] = []
    with SagaStore(actions={}, lease=0.4, recover=False) as other:

        def long_step(idempotency_key: str) -> None:
            time.sleep(1.0)  # 2.5 leases: only the heartbeat thread keeps it fresh
            seen.append(other.recover())

        registry = worker.actions(effects) | {"long_step": long_step}
        with SagaStore(actions=registry, lease=0.4) as store, store.begin("batch") as saga:
            saga.step("long_step")
        assert seen == [[]]
        assert other.get(saga.id).state == "completed"


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_list_and_show(store: SagaStore, home: Path) -> None:
    with store.begin("checkout", key="order-1") as ok:
        ok.step("reserve", {"sku": "A1"}, compensate="release")
    bad = store.begin("refund-flow")
    with pytest.raises(RuntimeError):
        run(bad, ("charge", {"amount": 5}, "refund"), ("decline", {}))
    runner = CliRunner()

    out = runner.invoke(saga_cli, ["list", "--home", str(home)])
    assert out.exit_code == 0, out.output
    assert ok.id in out.output and bad.id in out.output
    out = runner.invoke(saga_cli, ["list", "--state", "completed", "--json"])
    assert out.exit_code == 0, out.output
    assert [r["id"] for r in json.loads(out.output)] == [ok.id]
    out = runner.invoke(saga_cli, ["list", "--state", "failed"])
    assert out.output.strip() == "no failed sagas"

    out = runner.invoke(saga_cli, ["show", bad.id])
    assert out.exit_code == 0, out.output
    assert f"saga {bad.id} `refund-flow`" in out.output
    assert "state:    compensated" in out.output
    assert "stopped:  step 2 `decline` raised RuntimeError: card declined" in out.output
    assert "step 1 compensated" in out.output
    data = json.loads(runner.invoke(saga_cli, ["show", ok.id, "--json"]).output)
    assert data["key"] == "order-1"
    assert data["steps"][0]["idempotency_key"] == f"{ok.id}:1"
    assert [e["state"] for e in data["events"]] == ["running", "started", "done", "completed"]


def test_cli_errors_are_one_line(tmp_path: Path, store: SagaStore) -> None:
    runner = CliRunner()
    with store.begin("checkout"):
        pass
    out = runner.invoke(saga_cli, ["show", "saga-nope"])
    assert out.exit_code == 1
    assert out.output == "warden: error: no saga `saga-nope`\n"
    empty = tmp_path / "empty-home"
    out = runner.invoke(saga_cli, ["list", "--home", str(empty)])
    assert out.exit_code == 1
    assert out.output.startswith("warden: error: `")
    assert "no saga log" in out.output
    assert out.output.count("\n") == 1
    out = runner.invoke(saga_cli, ["list", "--state", "bogus"])
    assert out.exit_code == 2  # a usage error, as click reports it


def test_steps_run_in_the_callers_verified_session(tmp_path: Path) -> None:
    """With identity on, a step is checked in the agent's verified session, not the saga id."""
    from warden.identity import Identity, issue, make_proof
    from warden.identity.gate import IdentityConfig

    root, agent = Identity.generate(), Identity.generate()
    gov = Governor(
        load_policy_text(
            "apiVersion: warden/v1\nkind: Policy\ndefault: deny\n"
            "rules:\n  - {id: all, tool: '*', effect: allow}\n"
        ),
        home=tmp_path / "home",
        audit=False,
        identity=IdentityConfig(roots=[root.did], audience="t"),
    )
    assert gov.identity is not None
    token = issue(root, agent.did, ["reserve"], audience="t", ttl=600)
    va = gov.identity.authenticate(token, make_proof(agent, token, gov.identity.challenge(), "t"))
    calls: list[str] = []

    def reserve(sku: str, idempotency_key: str) -> str:
        calls.append(idempotency_key)
        return sku

    store = SagaStore(tmp_path / "s.db", actions={"reserve": reserve}, governor=gov)
    with gov.session(va.session), store.begin("checkout") as saga:
        assert saga.step("reserve", {"sku": "A1"}) == "A1"
    assert len(calls) == 1
    with pytest.raises(ActionDenied), store.begin("outside") as saga:
        saga.step("reserve", {"sku": "B2"})  # no verified session: the saga id is not one
    assert len(calls) == 1
    store.close()
