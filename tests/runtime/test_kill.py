"""The kill switch (docs/runtime.md, "Kill switch"): immediate, total, durable, audited."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from warden import Action, ActionDenied, Effect, Governor, load_policy_text
from warden.errors import ActionKilled, RuntimeStateError
from warden.runtime.inflight import InFlight, current
from warden.runtime.sandbox import bwrap_available
from warden.runtime.state import RuntimeState

# As in test_sandbox.py: skipped without bubblewrap, except in CI where it must run.
needs_bwrap = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_BWRAP") or os.environ.get("CI")) and not bwrap_available(),
    reason="bubblewrap is not available here",
)

POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
agents:
  "bot-*": {ring: 2}
"""
)


def make(home: Path, **kw: Any) -> Governor:
    return Governor(POLICY, home=home, **kw)


def records(gov: Governor) -> list[dict[str, Any]]:
    assert gov.audit is not None
    gov.audit.flush()
    return [json.loads(data) for _, _, data, _ in gov.audit.store.scan()]


def act(agent: str = "bot-1", session: str | None = "s1", tool: str = "fs.read") -> Action:
    return Action(tool=tool, agent={"id": agent}, session=session)


def test_a_killed_agent_is_denied_at_once_and_others_are_not(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    assert gov.check(act()).allowed
    gov.runtime.kill(agent="bot-1", reason="exfiltration", by="alice")
    d = gov.check(act())
    assert d.effect is Effect.DENY
    assert d.reasons == ("killed: exfiltration (by alice)",)
    assert d.rules == ()
    assert gov.check(act(agent="bot-2", session="s2")).allowed


def test_session_and_all_kills(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    gov.runtime.kill(session="s1", reason="runaway")
    assert not gov.check(act(agent="bot-2", session="s1")).allowed
    assert gov.check(act(agent="bot-2", session="s2")).allowed
    gov.runtime.kill(all=True, reason="incident")
    assert not gov.check(act(agent="bot-3", session=None)).allowed
    assert gov.runtime.restore(all=True)
    assert gov.check(act(agent="bot-3", session=None)).allowed
    assert gov.runtime.restore(session="s1")
    assert gov.check(act(agent="bot-2", session="s1")).allowed
    assert not gov.runtime.restore(session="s1")  # nothing left to lift


def test_a_kill_survives_a_restart(tmp_path: Path) -> None:
    make(tmp_path, audit=False).runtime.kill(agent="bot-1", reason="rogue")
    again = make(tmp_path, audit=False)
    d = again.check(act())
    assert d.effect is Effect.DENY and "rogue" in d.reasons[0]
    again.runtime.restore(agent="bot-1")
    assert make(tmp_path, audit=False).check(act()).allowed


def test_kill_demotes_and_restore_does_not_promote(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    seen: list[Action] = []

    class Sink:
        def record(self, action: Action, decision: object) -> None:
            seen.append(action)

    gov.sinks.append(Sink())
    gov.check(act())
    assert seen[-1].agent["ring"] == 2
    gov.runtime.kill(agent="bot-1", reason="x")
    gov.runtime.restore(agent="bot-1")
    gov.check(act())
    assert seen[-1].agent["ring"] == 3
    gov.runtime.set_ring("bot-1", 0, by="alice", reason="reviewed")
    gov.check(act())
    assert seen[-1].agent["ring"] == 2  # the ceiling lifted; the operator's base ring stands


def test_kills_restores_and_rings_are_audit_events(tmp_path: Path) -> None:
    gov = make(tmp_path)
    gov.runtime.kill(agent="bot-1", reason="rogue", by="alice")
    gov.runtime.restore(agent="bot-1", by="bob")
    gov.runtime.set_ring("bot-1", 2, by="bob", reason="ok")
    kinds = [(r["type"], r.get("by")) for r in records(gov)]
    assert kinds == [
        ("warden.kill/v1", "alice"),
        ("warden.ring/v1", "alice"),  # the demotion the kill caused
        ("warden.restore/v1", "bob"),
        ("warden.ring/v1", "bob"),
    ]
    kill = records(gov)[0]
    assert kill["scope"] == "agent" and kill["target"] == "bot-1" and kill["reason"] == "rogue"


def test_an_in_flight_async_call_is_cancelled_and_recorded_killed(tmp_path: Path) -> None:
    gov = make(tmp_path)
    started = threading.Event()

    @gov.tool("slow.fetch")
    async def fetch(url: str) -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    async def main() -> float:
        with gov.session("s9", agent={"id": "bot-7"}):
            task = asyncio.ensure_future(fetch("https://x"))
            while not started.is_set():
                await asyncio.sleep(0.001)
            t0 = time.perf_counter()
            threading.Thread(
                target=gov.runtime.kill, kwargs={"agent": "bot-7", "reason": "r"}
            ).start()
            with pytest.raises(ActionKilled) as info:
                await task
            assert "killed: r" in str(info.value)
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    assert elapsed < 2.0
    outcome = [r for r in records(gov) if r["type"] == "warden.outcome/v1"][-1]
    assert outcome["status"] == "killed" and outcome["tool"] == "slow.fetch"


def test_a_sync_call_in_flight_has_its_result_withheld(tmp_path: Path) -> None:
    gov = make(tmp_path)
    inside = threading.Event()
    release = threading.Event()
    box: dict[str, Any] = {}

    @gov.tool("slow.sync")
    def work() -> str:
        inside.set()
        release.wait(10)
        return "secret result"

    def run() -> None:
        with gov.session("s1", agent={"id": "bot-1"}):
            try:
                box["result"] = work()
            except ActionKilled as exc:
                box["killed"] = exc

    t = threading.Thread(target=run)
    t.start()
    assert inside.wait(10)
    gov.runtime.kill(session="s1", reason="stop")
    release.set()
    t.join(10)
    assert "result" not in box and isinstance(box["killed"], ActionKilled)
    assert [r["status"] for r in records(gov) if r["type"] == "warden.outcome/v1"] == ["killed"]


def test_kill_counts_the_calls_it_cancelled(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    hooks: list[str] = []
    with gov.runtime.inflight.track("bot-1", "s1", "a") as call:
        assert current() is call
        call.add_hook(lambda: hooks.append("stopped"))
        with gov.runtime.inflight.track("bot-2", "s2", "b"):
            assert gov.runtime.kill(agent="bot-1", reason="x") == 1
    assert hooks == ["stopped"]
    assert current() is None


def test_a_hook_added_after_the_kill_runs_at_once() -> None:
    flight = InFlight()
    ran: list[int] = []
    with flight.track("a", None, "t") as call:
        flight.cancel(lambda c: True, "gone")
        call.add_hook(lambda: ran.append(1))
    assert ran == [1] and call.cancelled and call.reason == "gone"


def test_a_kill_from_another_process_denies_and_cancels_in_flight(tmp_path: Path) -> None:
    gov = make(tmp_path)
    started = threading.Event()

    @gov.tool("slow.fetch")
    async def fetch() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    code = (
        "import sys\nfrom warden.runtime.state import RuntimeState\n"
        "s = RuntimeState(sys.argv[1]); s.kill('agent', 'bot-5', 'remote', 'ops'); s.close()"
    )

    async def main() -> float:
        with gov.session("s5", agent={"id": "bot-5"}):
            task = asyncio.ensure_future(fetch())
            while not started.is_set():
                await asyncio.sleep(0.001)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", code, str(tmp_path / "runtime.db")
            )
            assert await proc.wait() == 0
            t0 = time.perf_counter()
            with pytest.raises(ActionKilled):
                await asyncio.wait_for(task, 10)
            return time.perf_counter() - t0

    elapsed = asyncio.run(main())
    assert elapsed < 2.0  # the watcher polls every 50 ms; the bound is generous for CI
    d = gov.check(act(agent="bot-5", session="other"))
    assert d.effect is Effect.DENY and "remote" in d.reasons[0]


def test_a_runtime_state_that_cannot_be_read_denies(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    gov.runtime.state.close()
    gov.runtime.state._next_check = 0.0  # force the next read to touch the file
    d = gov.check(act())
    assert d.effect is Effect.DENY
    assert "RuntimeStateError" in d.errors[0]


def test_kill_arguments_are_checked(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)
    with pytest.raises(RuntimeStateError, match="exactly one"):
        gov.runtime.kill(agent="a", session="s", reason="x")
    with pytest.raises(RuntimeStateError, match="exactly one"):
        gov.runtime.kill(reason="x")
    with pytest.raises(RuntimeStateError, match="reason"):
        gov.runtime.kill(agent="a", reason=" ")
    state = RuntimeState(tmp_path / "r.db")
    with pytest.raises(RuntimeStateError, match="agent, a session or all"):
        state.kill("team", "x", "r", "me")
    state.close()


def test_killing_a_verified_agent_denies_its_session(tmp_path: Path) -> None:
    from warden.identity import Identity, issue, make_proof
    from warden.identity.gate import IdentityConfig

    root, agent = Identity.generate(), Identity.generate()
    gov = Governor(
        POLICY,
        home=tmp_path,
        audit=False,
        identity=IdentityConfig(roots=[root.did], audience="t"),
    )
    assert gov.identity is not None
    token = issue(root, agent.did, ["*"], audience="t", ttl=600, ring=1)
    va = gov.identity.authenticate(token, make_proof(agent, token, gov.identity.challenge(), "t"))
    assert gov.check(Action(tool="x", session=va.session)).allowed
    gov.runtime.kill(agent=agent.did, reason="compromised")
    d = gov.check(Action(tool="x", session=va.session))
    assert d.effect is Effect.DENY and "compromised" in d.reasons[0]


def test_denied_wrapped_call_of_a_killed_agent_raises_denied(tmp_path: Path) -> None:
    gov = make(tmp_path, audit=False)

    @gov.tool("fs.read")
    def read() -> str:
        return "data"

    gov.runtime.kill(agent="bot-1", reason="x")
    with gov.session("s1", agent={"id": "bot-1"}), pytest.raises(ActionDenied):
        read()


@needs_bwrap
def test_one_kill_stops_a_sandboxed_command_and_a_slow_async_tool(tmp_path: Path) -> None:
    gov = make(tmp_path)
    started = threading.Event()
    box: dict[str, Any] = {}

    @gov.tool("slow.fetch")
    async def fetch() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    def shell() -> None:
        try:
            box["result"] = gov.exec(
                Action(tool="shell.run", agent={"id": "bot-1"}, session="s1"), ["sleep", "30"]
            )
        except ActionKilled as exc:
            box["killed"] = exc
        box["done"] = time.perf_counter()

    async def main() -> float:
        with gov.session("s1", agent={"id": "bot-1"}):
            task = asyncio.ensure_future(fetch())
            worker = threading.Thread(target=shell)
            worker.start()
            while not started.is_set() or len(gov.runtime.inflight) < 2:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.2)  # let bubblewrap start `sleep`
            t0 = time.perf_counter()
            assert gov.runtime.kill(agent="bot-1", reason="runaway") == 2
            with pytest.raises(ActionKilled):
                await task
            worker.join(10)
            return t0

    t0 = asyncio.run(main())
    assert "killed" in box and "result" not in box
    assert box["done"] - t0 < 2.0
    statuses = {r["tool"]: r["status"] for r in records(gov) if r["type"] == "warden.outcome/v1"}
    assert statuses == {"slow.fetch": "killed", "shell.run": "killed"}
    kill = next(r for r in records(gov) if r["type"] == "warden.kill/v1")
    assert kill["cancelled"] == 2


@needs_bwrap
def test_exec_runs_in_the_sandbox_and_records_the_mode(tmp_path: Path) -> None:
    gov = make(tmp_path)
    result = gov.exec(Action(tool="python.run", agent={"id": "bot-1"}), code="print(6 * 7)")
    assert result.ok and result.stdout == b"42\n" and result.mode == "bwrap"
    outcome = [r for r in records(gov) if r["type"] == "warden.outcome/v1"][-1]
    assert outcome["status"] == "ok" and outcome["tool"] == "python.run"
    gov.runtime.kill(agent="bot-1", reason="x")
    with pytest.raises(ActionDenied):
        gov.exec(Action(tool="python.run", agent={"id": "bot-1"}), code="print(1)")
