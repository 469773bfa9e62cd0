"""Durable sagas on both backends: SQLite (embedded) and PostgreSQL (fleet).

docs/runtime.md's sagas must hold whichever store keeps the log: steps recorded
before and after each call, compensation newest first after a failure,
recovery of an abandoned saga exactly once, idempotent keys. docs/fleet.md adds
what only a shared store has: a saga begun on one replica (store instance) is
recovered by another after the first dies, by one replica only when several
race, and a store that does not answer refuses to run a step.

The PostgreSQL tests use ``$WARDEN_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each gets its own namespace,
``wt_<12 hex>``, whose tables it drops. They are skipped when PostgreSQL does not
answer, and fail instead when ``CI`` or ``WARDEN_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from warden.cli.saga import saga as saga_cli
from warden.errors import SagaError
from warden.runtime.saga import Saga, SagaBackend, SagaRecord, SagaStore, open_saga_store
from warden.store import FleetConfig
from warden.store.sagas import PostgresSagaStore

try:
    import psycopg
except ImportError:  # pragma: no cover - the fleet extra is not installed: SQLite only
    psycopg = None

DATABASE_URL = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/test"


def _postgres_answers() -> bool:
    if psycopg is None:
        return False
    try:
        psycopg.connect(DATABASE_URL, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


_PG_UP = _postgres_answers()
_MUST_RUN = bool(os.environ.get("WARDEN_REQUIRE_POSTGRES") or os.environ.get("CI"))
"""In CI PostgreSQL is there: a test that cannot reach it fails instead of skipping."""


def _skip_without_postgres() -> None:
    if not _PG_UP:
        if _MUST_RUN:
            pytest.fail(f"PostgreSQL does not answer at {DATABASE_URL} (required in CI)")
        pytest.skip(f"PostgreSQL does not answer at {DATABASE_URL}")


@dataclass
class Effects:
    """What a remote system saw: every call, and effects deduplicated by idempotency key."""

    calls: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    gate: threading.Event | None = None

    def actions(self) -> dict[str, Callable[..., Any]]:
        def make(name: str) -> Callable[..., Any]:
            def act(idempotency_key: str, **args: Any) -> dict[str, Any]:
                with self.lock:
                    self.calls.append((name, idempotency_key))
                if self.gate is not None and name in ("release", "refund"):
                    self.gate.wait(5)
                return {"done": name, "args": args}

            return act

        def decline(idempotency_key: str, **args: Any) -> None:
            with self.lock:
                self.calls.append(("decline", idempotency_key))
            raise RuntimeError("card declined")

        registry = {n: make(n) for n in ("reserve", "release", "charge", "refund", "ship")}
        registry["decline"] = decline
        return registry


@dataclass
class Backend:
    """One backend under test: opens replicas of the saga store."""

    kind: str
    home: Path
    namespace: str = "warden"

    def store(self, effects: Effects | None = None, **kwargs: Any) -> SagaStore:
        """A replica: another store instance (another connection) on the same shared log."""
        kwargs.setdefault("backoff", 0.001)
        acts = effects.actions() if effects is not None else None
        if self.kind == "sqlite":
            return SagaStore(self.home / "sagas.db", actions=acts, **kwargs)
        return PostgresSagaStore(DATABASE_URL, self.namespace, actions=acts, **kwargs)

    @property
    def config(self) -> FleetConfig:
        url = DATABASE_URL if self.kind == "postgres" else None
        return FleetConfig(database_url=url, namespace=self.namespace)

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                for table in ("sagas", "steps", "events"):
                    db.execute(f"DROP TABLE IF EXISTS {self.namespace}_{table}")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        _skip_without_postgres()
        b = Backend("postgres", tmp_path / "home", f"wt_{uuid.uuid4().hex[:12]}")
    else:
        b = Backend("sqlite", tmp_path / "home")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def effects() -> Effects:
    return Effects()


@pytest.fixture
def store(backend: Backend, effects: Effects) -> Iterator[SagaStore]:
    s = backend.store(effects)
    try:
        yield s
    finally:
        s.close()


def states(rec: SagaRecord) -> list[tuple[str, str]]:
    return [(s.action, s.state) for s in rec.steps]


def history(rec: SagaRecord, step: int | None) -> list[str]:
    return [e.state for e in rec.events if e.step == step]


def abandon(store: SagaStore, name: str = "checkout", key: str | None = None) -> str:
    """Begin a saga, do two steps, and die (close the store without leaving the block)."""
    saga = store.begin(name, key=key)
    saga.step("reserve", {"sku": "A1"}, compensate="release")
    saga.step("charge", {"amount": 30}, compensate="refund")
    store.close()  # the replica is gone: its lease is no longer held
    return saga.id


def declined(saga: Saga) -> None:
    """Two steps, then one that raises, inside the saga's block."""
    with saga:
        saga.step("reserve", {"sku": "A1"}, compensate="release")
        saga.step("charge", {"amount": 30}, compensate="refund")
        saga.step("decline", {})


# --- the same saga behaviour on both --------------------------------------------------------


def test_both_stores_are_saga_backends(store: SagaStore) -> None:
    assert isinstance(store, SagaBackend)


def test_open_saga_store_follows_the_configuration(backend: Backend, effects: Effects) -> None:
    store = open_saga_store(backend.home, backend.config, actions=effects.actions())
    try:
        assert type(store) is (PostgresSagaStore if backend.kind == "postgres" else SagaStore)
        with store.begin("checkout") as saga:
            saga.step("reserve", {"sku": "A1"}, compensate="release")
    finally:
        store.close()
    replica = backend.store(recover=False)
    try:
        assert replica.get(saga.id).state == "completed"
    finally:
        replica.close()


def test_happy_path_records_each_step_and_runs_it_once(store: SagaStore, effects: Effects) -> None:
    with store.begin("checkout", key="order-1") as saga:
        assert saga.step("reserve", {"sku": "A1"}, compensate="release")["done"] == "reserve"
        saga.step("charge", {"amount": 30}, compensate="refund")
    rec = store.get(saga.id)
    assert rec.state == "completed" and rec.key == "order-1"
    assert states(rec) == [("reserve", "done"), ("charge", "done")]
    assert effects.calls == [("reserve", f"{saga.id}:1"), ("charge", f"{saga.id}:2")]
    assert history(rec, 1) == ["started", "done"]
    assert history(rec, None) == ["running", "completed"]
    assert rec.holder_pid is None
    assert [r.id for r in store.list()] == [saga.id]
    assert [r.id for r in store.list(state="completed")] == [saga.id]
    assert store.list(state="running") == []


def test_failure_compensates_in_reverse_order(store: SagaStore, effects: Effects) -> None:
    saga = store.begin("checkout")
    with pytest.raises(RuntimeError, match="declined"):
        declined(saga)
    rec = store.get(saga.id)
    assert rec.state == "compensated"
    assert states(rec) == [
        ("reserve", "compensated"),
        ("charge", "compensated"),
        ("decline", "error"),
    ]
    assert effects.calls[3:] == [
        ("refund", f"{saga.id}:2:undo"),
        ("release", f"{saga.id}:1:undo"),
    ]
    assert history(rec, 2) == ["started", "done", "compensating", "compensated"]


def test_a_compensation_that_keeps_failing_leaves_the_saga_failed(
    backend: Backend, effects: Effects
) -> None:
    acts = effects.actions()

    def broken(idempotency_key: str, **args: Any) -> None:
        raise ConnectionError("ledger unreachable")

    acts["refund"] = broken
    store = (
        SagaStore(backend.home / "sagas.db", actions=acts, retries=1, backoff=0.001)
        if backend.kind == "sqlite"
        else PostgresSagaStore(
            DATABASE_URL, backend.namespace, actions=acts, retries=1, backoff=0.001
        )
    )
    try:
        saga = store.begin("checkout")
        with pytest.raises(RuntimeError):
            declined(saga)
        rec = store.get(saga.id)
    finally:
        store.close()
    assert rec.state == "failed"
    assert rec.compensation_error is not None and "ledger unreachable" in rec.compensation_error
    assert states(rec) == [("reserve", "done"), ("charge", "compensating"), ("decline", "error")]
    assert rec.steps[1].attempts == 2


def test_keys_replay_a_completed_saga_and_refuse_a_settled_one(
    store: SagaStore, effects: Effects
) -> None:
    with store.begin("checkout", key="k1") as saga:
        first = saga.step("reserve", {"sku": "A1"})
    with store.begin("checkout", key="k1") as again:
        assert again.replaying and again.id == saga.id
        assert again.step("reserve", {"sku": "A1"}) == first
    assert len(effects.calls) == 1
    with pytest.raises(RuntimeError), store.begin("checkout", key="k2") as failing:
        failing.step("decline", {})
    with pytest.raises(SagaError, match="already ended compensated"):
        store.begin("checkout", key="k2")
    with pytest.raises(SagaError, match="belongs to saga"):
        store.begin("other", key="k1")


def test_a_running_saga_is_not_recovered_by_a_replica(backend: Backend, effects: Effects) -> None:
    a = backend.store(effects)
    b = backend.store(effects)
    try:
        with a.begin("checkout", key="live") as saga:
            saga.step("reserve", {"sku": "A1"}, compensate="release")
            assert b.recover() == []
            with pytest.raises(SagaError, match="still running"):
                b.begin("checkout", key="live")
            saga.step("charge", {"amount": 30}, compensate="refund")
        assert b.get(saga.id).state == "completed"
    finally:
        a.close()
        b.close()


def test_a_saga_abandoned_by_a_dead_replica_is_compensated_by_another(
    backend: Backend, effects: Effects
) -> None:
    saga_id = abandon(backend.store(effects))
    reader = backend.store(recover=False)
    try:
        assert reader.get(saga_id).state == "running"
    finally:
        reader.close()
    b = backend.store(effects)  # recovery runs on open
    try:
        rec = b.get(saga_id)
        assert b.recover() == []  # and only once
    finally:
        b.close()
    assert rec.state == "compensated"
    assert rec.error is not None and "abandoned" in rec.error
    assert states(rec) == [("reserve", "compensated"), ("charge", "compensated")]
    assert effects.calls[2:] == [
        ("refund", f"{saga_id}:2:undo"),
        ("release", f"{saga_id}:1:undo"),
    ]


def test_an_abandoned_key_is_recovered_before_it_is_refused(
    backend: Backend, effects: Effects
) -> None:
    saga_id = abandon(backend.store(effects), key="order-7")
    b = backend.store(effects, recover=False)
    try:
        with pytest.raises(SagaError, match="abandoned by its process and is now compensated"):
            b.begin("checkout", key="order-7")
        assert b.get(saga_id).state == "compensated"
    finally:
        b.close()


def test_two_replicas_racing_recover_an_abandoned_saga_exactly_once(
    backend: Backend, effects: Effects
) -> None:
    saga_id = abandon(backend.store(effects))
    effects.gate = threading.Event()  # hold the first compensation while the other races
    replicas = [backend.store(effects, recover=False) for _ in range(2)]
    barrier = threading.Barrier(len(replicas))
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def race(store: SagaStore) -> None:
        try:
            barrier.wait(5)
            results.append(store.recover())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=race, args=(r,)) for r in replicas]
    for t in threads:
        t.start()
    threading.Timer(0.5, effects.gate.set).start()
    for t in threads:
        t.join(30)
    try:
        assert not errors, errors
        assert sorted(results) == [[], [saga_id]]
        rec = replicas[0].get(saga_id)
    finally:
        for r in replicas:
            r.close()
    assert rec.state == "compensated"
    undos = [c for c in effects.calls if c[1].endswith(":undo")]
    assert undos == [("refund", f"{saga_id}:2:undo"), ("release", f"{saga_id}:1:undo")]
    assert history(rec, None).count("compensating") == 1


def test_a_stalled_holder_loses_its_lease_to_a_replica(backend: Backend, effects: Effects) -> None:
    now = [1000.0]
    a = backend.store(effects, clock=lambda: now[0], lease=5.0)
    b = backend.store(effects, clock=lambda: now[0] + 10.0, lease=5.0, recover=False)
    try:
        saga = a.begin("checkout")
        saga.step("reserve", {"sku": "A1"}, compensate="release")
        assert b.recover() == [saga.id]  # its heartbeat is older than the lease
        with pytest.raises(SagaError, match="no longer held"):
            saga.step("charge", {"amount": 30}, compensate="refund")
        assert b.get(saga.id).state == "compensated"
        assert ("charge", f"{saga.id}:2") not in effects.calls  # never ran
    finally:
        a.close()
        b.close()


def test_the_cli_lists_and_shows_sagas(
    backend: Backend, effects: Effects, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = backend.store(effects)
    try:
        with store.begin("checkout") as saga:
            saga.step("reserve", {"sku": "A1"}, compensate="release")
    finally:
        store.close()
    if backend.kind == "postgres":
        monkeypatch.setenv("WARDEN_DATABASE_URL", DATABASE_URL)
        monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", backend.namespace)
    else:
        monkeypatch.delenv("WARDEN_DATABASE_URL", raising=False)
    runner = CliRunner()
    listed = runner.invoke(saga_cli, ["list", "--home", str(backend.home)])
    assert listed.exit_code == 0, listed.output
    assert saga.id in listed.output
    shown = runner.invoke(saga_cli, ["show", saga.id, "--home", str(backend.home), "--json"])
    assert shown.exit_code == 0, shown.output
    assert '"completed"' in shown.output


# --- PostgreSQL only: fail closed -------------------------------------------------------------


def test_an_unreachable_database_refuses_to_begin(effects: Effects) -> None:
    with pytest.raises(SagaError, match="cannot read the saga log"):
        PostgresSagaStore(UNREACHABLE_URL, "wt_unreachable", actions=effects.actions())
    store = PostgresSagaStore(
        UNREACHABLE_URL, "wt_unreachable", actions=effects.actions(), recover=False
    )
    try:
        with pytest.raises(SagaError, match="cannot"):
            store.begin("checkout")
        with pytest.raises(SagaError):
            store.recover()
    finally:
        store.close()
    assert effects.calls == []


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    _skip_without_postgres()
    b = Backend("postgres", tmp_path / "home", f"wt_{uuid.uuid4().hex[:12]}")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


def test_a_step_that_cannot_be_recorded_does_not_run(pg: Backend, effects: Effects) -> None:
    from warden.store._pg import Database

    store = pg.store(effects)
    try:
        saga = store.begin("checkout")
        good = store._db
        store._db = Database(UNREACHABLE_URL, pg.namespace, what="sagas", names=(), ddl=())
        with pytest.raises(SagaError, match="cannot"), saga:
            saga.step("reserve", {"sku": "A1"}, compensate="release")
        assert effects.calls == []
        store._db.close()
        store._db = good
        assert store.get(saga.id).steps == ()
    finally:
        store.close()
