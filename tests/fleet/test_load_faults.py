"""Two `warden serve` replicas under load, while Redis and PostgreSQL restart (docs/fleet.md).

Behaviour only: how fast is benchmarks/bench_fleet.py's business. These tests
restart the machine's shared PostgreSQL (``pg_ctlcluster 15 main restart``)
and Redis (``service redis-server restart``), so they are deselected unless
``WARDEN_FAULT_TESTS=1`` and run serially: `make fault-test`. Each test has
its own namespace, dropped afterwards.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from warden.audit import DECISION_V1, NoteVerifier, verify_log
from warden.examples.fleet.replicas import DATABASE_URL, Answer, Fleet, decide_request, load
from warden.server import API_V1, MAX_BODY
from warden.store import PostgresAuditStore

pytestmark = pytest.mark.fleet_faults

READ = {"tool": "db.read", "args": {"table": "orders"}}
DROP = {"tool": "db.drop_table", "args": {"table": "orders"}}
UNREACHABLE = "runtime store unreachable"
PG_RESTART = os.environ.get("WARDEN_TEST_PG_RESTART", "pg_ctlcluster 15 main restart")
# `service redis-server restart` is not used: on a machine where Redis was not started by
# its init script it stops nothing (the pid file is empty) and the test would see no outage.
# Redis is stopped and started again as it runs here (daemonized, no persistence).
REDIS_STOP = "redis-cli -p 6379 shutdown nosave"
REDIS_START = (
    "redis-server --bind 127.0.0.1 --port 6379 --daemonize yes --save '' --appendonly no "
    "--dir /var/lib/redis"
)


@dataclass
class Setup:
    fleet: Fleet
    agent: str  # decide
    ops: str  # decide, read, operate
    reader: str  # read only

    def url(self, i: int) -> str:
        return self.fleet.replicas[i].url


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    fleet = Fleet(tmp_path, "wf_" + secrets.token_hex(6))
    try:
        made = Setup(
            fleet,
            fleet.token("agents", "decide"),
            fleet.token("ops", "decide,read,operate"),
            fleet.token("auditor", "read"),
        )
        fleet.start(2)
        yield made
    finally:
        fleet.stop()
        fleet.clean()


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (got := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
    return got


def _sh(command: str) -> None:
    subprocess.run(shlex.split(command), check=True, capture_output=True, timeout=120)


def _redis_run_id() -> str:
    info = subprocess.run(
        ["redis-cli", "-p", "6379", "info", "server"],
        check=False,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return next(
        (ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("run_id:")), ""
    )


def start_redis() -> None:
    if os.environ.get("WARDEN_TEST_REDIS_START"):
        _sh(os.environ["WARDEN_TEST_REDIS_START"])
    else:
        _sh(REDIS_START)
    wait_for(_redis_run_id, 30, "Redis to answer")


def restart_redis() -> tuple[float, float]:
    """Stop Redis and start it again (a new run id); when that began and ended (monotonic)."""
    before = _redis_run_id()
    began = time.monotonic()
    _sh(os.environ.get("WARDEN_TEST_REDIS_STOP", REDIS_STOP))
    start_redis()
    ended = time.monotonic()
    assert _redis_run_id() not in ("", before), "Redis did not restart"
    return began, ended


def _pg_started() -> object:
    import psycopg

    with psycopg.connect(DATABASE_URL, connect_timeout=10) as conn:
        row = conn.execute("SELECT pg_postmaster_start_time()").fetchone()
    assert row is not None
    return row[0]


def restart_postgres() -> tuple[float, float]:
    """Restart PostgreSQL (a new postmaster); when that began and ended (monotonic)."""
    before = _pg_started()
    began = time.monotonic()
    _sh(PG_RESTART)
    ended = time.monotonic()
    assert wait_for(_pg_answers, 30, "PostgreSQL to answer")
    assert _pg_started() != before, "PostgreSQL did not restart"
    return began, ended


def _pg_answers() -> bool:
    import psycopg

    try:
        psycopg.connect(DATABASE_URL, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


def requests_for(setup: Setup, actions: list[dict[str, Any]]) -> list[tuple[str, int, bytes]]:
    """One connection per (replica, action, agent): 2 x len(actions) x 2 connections."""
    out = []
    for r in setup.fleet.replicas:
        for n, action in enumerate(actions):
            for k in range(2):
                agent = {"id": f"{r.name}-agent-{n}-{k}"}
                body = {**action, "agent": agent, "session": f"{r.name}-s{k}"}
                out.append((r.host, r.port, decide_request(r.host, r.port, setup.agent, body)))
    return out


def under_load(
    setup: Setup, actions: list[dict[str, Any]], during: Callable[[], Any]
) -> tuple[list[Answer], Any]:
    """Load both replicas while ``during()`` runs; the answers and what ``during`` returned."""
    stop = threading.Event()
    box: dict[str, list[Answer]] = {}
    thread = threading.Thread(
        target=lambda: box.setdefault("answers", load(requests_for(setup, actions), stop=stop))
    )
    thread.start()
    try:
        got = during()
    finally:
        stop.set()
        thread.join(60)
    assert not thread.is_alive()
    return box["answers"], got


def log_store(setup: Setup, where: Path) -> PostgresAuditStore:
    where.mkdir(exist_ok=True)
    return PostgresAuditStore(setup.fleet.database_url, setup.fleet.namespace, path=where / "a.db")


def records(store: PostgresAuditStore, record_type: str) -> list[dict[str, Any]]:
    out = []
    for _, _, data, _ in store.scan():
        rec = json.loads(data)
        if rec.get("type") == record_type:
            out.append(rec)
    return out


def assert_recorded_once(setup: Setup, ids: list[str], tmp_path: Path) -> list[dict[str, Any]]:
    """After the replicas stop: each decision id in the log exactly once, no others; it verifies.

    Returns the ``warden.api/v1`` records.
    """
    assert setup.fleet.stop() == [0, 0], [r.log() for r in setup.fleet.replicas]
    store = log_store(setup, tmp_path / "check")
    try:
        counted = Counter(r["id"] for r in records(store, DECISION_V1))
        assert counted == Counter(ids), "decisions missing from or repeated in the audit log"
        key = (setup.fleet.home(0) / "audit-key.pub").read_text().strip()
        verify_log(store, NoteVerifier.from_string(key))
        return records(store, API_V1)
    finally:
        store.close()


def ids_of(answers: list[Answer]) -> list[str]:
    return [a.json()["id"] for a in answers]


# --- load ------------------------------------------------------------------------------------


def test_under_load_every_decision_is_answered_and_recorded_once(
    setup: Setup, tmp_path: Path
) -> None:
    answers, _ = under_load(setup, [READ, DROP], lambda: time.sleep(3))
    assert len(answers) > 1000
    assert {a.status for a in answers} == {200}
    by_tool: dict[str, set[str]] = {"db.read": set(), "db.drop_table": set()}
    for a in answers:
        body = a.json()
        by_tool["db.read" if body["rules"] == ["reads"] else "db.drop_table"].add(body["effect"])
    assert by_tool == {"db.read": {"allow"}, "db.drop_table": {"deny"}}
    api = assert_recorded_once(setup, ids_of(answers), tmp_path)
    # each decision linked to exactly one request record, made with the agents' token
    linked = Counter(r["decision_id"] for r in api if r["path"] == "/v1/decide")
    assert linked == Counter(ids_of(answers))
    assert {r["subject"] for r in api} == {"agents"}


# --- Redis restart ---------------------------------------------------------------------------


def test_a_redis_restart_fails_closed_then_recovers_by_itself(setup: Setup, tmp_path: Path) -> None:
    def during() -> tuple[float, float]:
        time.sleep(1)
        window = restart_redis()
        time.sleep(4)
        return window

    answers, (began, ended) = under_load(setup, [READ], during)
    assert {a.status for a in answers} == {200}
    outage: Counter[int] = Counter()
    for a in answers:
        body = a.json()
        if body["effect"] == "allow":
            continue
        assert body["effect"] == "deny", body
        assert any(UNREACHABLE in reason for reason in body["reasons"]), body
        assert began - 1 <= a.sent <= ended + 3, "a deny outside the outage"
        outage[a.port] += 1
    assert len(outage) == 2, f"not both replicas denied while Redis restarted: {outage}"
    # before the restart and well after it, the same actions are allowed
    assert all(a.json()["effect"] == "allow" for a in answers if a.sent < began - 0.1)
    late = [a for a in answers if a.sent > ended + 3]
    assert late and all(a.json()["effect"] == "allow" for a in late)
    # the outage denies were decisions too: recorded once each like the rest
    assert_recorded_once(setup, ids_of(answers), tmp_path)


def test_denies_during_a_redis_restart_reach_both_replicas(setup: Setup) -> None:
    """Each replica loses its own subscription: both deny, both recover."""
    with httpx.Client(timeout=10) as client:
        auth = {"Authorization": f"Bearer {setup.agent}"}

        def effects() -> list[str]:
            return [
                client.post(f"{setup.url(i)}/v1/decide", json={**READ, "agent": {"id": "x"}},
                            headers=auth).json()["effect"]
                for i in (0, 1)
            ]  # fmt: skip

        assert effects() == ["allow", "allow"]
        _sh(os.environ.get("WARDEN_TEST_REDIS_STOP", REDIS_STOP))
        try:
            wait_for(lambda: effects() == ["deny", "deny"], 5, "both replicas to deny")
        finally:
            start_redis()
        wait_for(lambda: effects() == ["allow", "allow"], 10, "both replicas to allow again")


# --- PostgreSQL restart ----------------------------------------------------------------------


def test_a_postgres_restart_spools_then_ships_every_decision_once(
    setup: Setup, tmp_path: Path
) -> None:
    def during() -> tuple[float, float]:
        time.sleep(1)
        window = restart_postgres()
        time.sleep(2)
        return window

    everything, (began, ended) = under_load(setup, [READ], during)
    # the fleet's tokens live on PostgreSQL too (warden/store/tokens.py): a snapshot older
    # than a second is not trusted, so during a restart requests may be refused (fail
    # closed) with 503 store_unavailable, never with a decision or a 401.
    refused = [a for a in everything if a.status != 200]
    assert {a.status for a in refused} <= {503}
    assert all(began <= a.sent <= ended + 2 for a in refused), "refused outside the restart"
    answers = [a for a in everything if a.status == 200]
    assert {a.json()["effect"] for a in answers} == {"allow"}, "a decision failed"
    assert [a for a in answers if began <= a.sent <= ended], "no decision during the restart"
    # the spools drain by themselves, with the replicas still running
    ids = ids_of(answers)
    store = log_store(setup, tmp_path / "drain")
    try:
        wait_for(lambda: len(records(store, DECISION_V1)) >= len(ids), 60, "the spools to drain")
    finally:
        store.close()
    for r in setup.fleet.replicas:
        health = httpx.get(f"{r.url}/healthz", timeout=10)
        assert health.status_code == 200, health.text
    api = assert_recorded_once(setup, ids, tmp_path)
    assert len([r for r in api if r["path"] == "/v1/decide"]) == len(ids)


# --- kill propagation ------------------------------------------------------------------------


def test_a_kill_on_one_replica_denies_on_the_other(setup: Setup, tmp_path: Path) -> None:
    ops = {"Authorization": f"Bearer {setup.ops}"}
    victim = {**READ, "agent": {"id": "victim"}}
    bystander = {**READ, "agent": {"id": "bystander"}}
    ids: list[str] = []
    with httpx.Client(timeout=10, headers=ops) as client:

        def decide(i: int, action: dict[str, Any]) -> dict[str, Any]:
            body: dict[str, Any] = client.post(f"{setup.url(i)}/v1/decide", json=action).json()
            ids.append(body["id"])
            return body

        assert decide(1, victim)["effect"] == "allow"
        killed = client.post(
            f"{setup.url(0)}/v1/kill",
            json={"scope": "agent", "target": "victim", "reason": "went rogue"},
        )
        assert killed.status_code == 200 and killed.json()["by"] == "ops"
        denied = wait_for(
            lambda: (b := decide(1, victim))["effect"] == "deny" and b, 2, "the kill on B"
        )
        assert any("went rogue" in r for r in denied["reasons"]), denied
        assert decide(1, bystander)["effect"] == "allow"
        assert decide(0, victim)["effect"] == "deny"

        restored = client.post(
            f"{setup.url(1)}/v1/restore", json={"scope": "agent", "target": "victim"}
        )
        assert restored.status_code == 200
        wait_for(lambda: decide(0, victim)["effect"] == "allow", 2, "the restore on A")
    assert_recorded_once(setup, ids, tmp_path)


# --- bad requests ----------------------------------------------------------------------------


def test_bad_requests_are_refused_with_their_status_and_decide_nothing(
    setup: Setup, tmp_path: Path
) -> None:
    url = f"{setup.url(0)}/v1/decide"
    agent = {"Authorization": f"Bearer {setup.agent}", "Content-Type": "application/json"}
    action = json.dumps({**READ, "agent": {"id": "bot"}}).encode()
    oversized = json.dumps({**READ, "args": {"blob": "x" * MAX_BODY}}).encode()
    cases = [
        (b'{"tool": "db.read", ', agent, 400, "invalid_json"),
        (b'{"tool": 5}', agent, 400, "invalid_action"),
        (oversized, agent, 413, "body_too_large"),
        (action, {"Content-Type": "application/json"}, 401, "unauthenticated"),
        (action, {**agent, "Authorization": "Bearer wdn_" + "A" * 43}, 401, "unauthenticated"),
        (action, {**agent, "Authorization": "Basic YWxpY2U6eA=="}, 401, "unauthenticated"),
        (action, {**agent, "Authorization": f"Bearer {setup.reader}"}, 403, "missing_scope"),
    ]
    for body, headers, status, code in cases:
        with httpx.Client(timeout=30) as client:  # a refused body may close the connection
            got = client.post(url, content=body, headers=headers)
        assert (got.status_code, got.json()["code"]) == (status, code), got.text
    # then one good decision: the only one the log holds
    good = httpx.post(url, content=action, headers=agent, timeout=10)
    assert good.status_code == 200
    api = assert_recorded_once(setup, [good.json()["id"]], tmp_path)
    # authenticated refusals are attributed (no decision id); unauthenticated ones leave nothing
    seen = sorted((r["subject"], r["status"], r["decision_id"]) for r in api)
    assert seen == sorted(
        [
            ("agents", 400, None),
            ("agents", 400, None),
            ("agents", 413, None),
            ("auditor", 403, None),
            ("agents", 200, good.json()["id"]),
        ]
    )
