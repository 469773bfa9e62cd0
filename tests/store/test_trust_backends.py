"""Agent trust on both backends: SQLite (embedded) and PostgreSQL (fleet).

docs/identity.md's trust must hold whichever store keeps it: decaying scores,
signed events recorded once, automatic revocation below the threshold,
operator revoke and restore, credentials revoked by ``jti``. docs/fleet.md
adds what only a shared store has: replicas (store instances on one
namespace) see each other's revocations within a notification (well under
2 s), and a store that cannot reach PostgreSQL denies everyone and refuses
writes.

The PostgreSQL tests use ``$WARDEN_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each gets its own namespace,
``wt_<12 hex>``, whose tables it drops. They are skipped when PostgreSQL does
not answer, and fail instead when ``CI`` or ``WARDEN_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from warden import Action, Effect, Governor, load_policy_text
from warden.errors import TrustError
from warden.identity import Identity, issue, make_proof
from warden.identity.gate import IdentityConfig
from warden.store import FleetConfig
from warden.store.trust import PostgresTrustStore
from warden.trust import TrustBackend, TrustStore, open_trust_store, sign_event

try:
    import psycopg
except ImportError:  # pragma: no cover - the fleet extra is not installed: SQLite only
    psycopg = None

DATABASE_URL = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/test"
T0 = 1_800_000_000.0
WEEK = 7 * 86400.0
REPORTER = Identity.from_seed(bytes([1]) * 32)
ALICE = Identity.from_seed(bytes([2]) * 32)
BOB = Identity.from_seed(bytes([3]) * 32)
JTI = "0123456789abcdef" * 2


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


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class Backend:
    """One backend under test: opens replicas of the trust store."""

    kind: str
    home: Path
    namespace: str = "warden"

    def store(self, clock: Callable[[], float] = time.time, **kwargs: object) -> TrustBackend:
        """A replica: another store instance (another connection) on the same trust."""
        return open_trust_store(self.home, self.config, clock=clock, refresh_interval=0, **kwargs)

    @property
    def config(self) -> FleetConfig:
        url = DATABASE_URL if self.kind == "postgres" else None
        return FleetConfig(database_url=url, namespace=self.namespace)

    def set_env(self, monkeypatch: pytest.MonkeyPatch) -> None:
        if self.kind == "sqlite":
            monkeypatch.delenv("WARDEN_DATABASE_URL", raising=False)
            monkeypatch.delenv("WARDEN_FLEET_NAMESPACE", raising=False)
        else:
            monkeypatch.setenv("WARDEN_DATABASE_URL", DATABASE_URL)
            monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", self.namespace)
        monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                for table in ("agents", "events", "revoked_credentials"):
                    db.execute(f"DROP TABLE IF EXISTS {self.namespace}_{table}")


def _new_backend(kind: str, home: Path) -> Backend:
    if kind == "postgres":
        _skip_without_postgres()
        return Backend(kind, home, f"wt_{uuid.uuid4().hex[:12]}")
    return Backend(kind, home)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    b = _new_backend(request.param, tmp_path / "home")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    b = _new_backend("postgres", tmp_path / "home")
    b.home.mkdir()
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(backend: Backend, clock: Clock) -> Iterator[TrustBackend]:
    s = backend.store(clock)
    try:
        yield s
    finally:
        s.close()


def until(check: Callable[[], bool], timeout: float = 2.0) -> float:
    """Seconds until ``check()`` holds; fails after ``timeout``."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "not seen in time"
        time.sleep(0.001)
    return time.monotonic() - start


# --- the same trust behaviour on both ---------------------------------------------------------


def test_both_stores_are_trust_backends(store: TrustBackend, backend: Backend) -> None:
    assert isinstance(store, TrustBackend)
    assert isinstance(store, PostgresTrustStore if backend.kind == "postgres" else TrustStore)


def test_scores_decay_toward_the_baseline_and_tiers_follow(
    store: TrustBackend, clock: Clock
) -> None:
    assert store.score(ALICE.did) == 500 and not store.is_revoked(ALICE.did)
    snap = store.record(sign_event(REPORTER, ALICE.did, "success", 300, now=clock()))
    assert snap.score == 800 and store.score(ALICE.did) == 800
    assert store.snapshot(ALICE.did).tier == store.tier(ALICE.did)
    clock.now += WEEK  # one half-life
    assert store.score(ALICE.did) == 650
    assert [a.did for a in store.agents()] == [ALICE.did]


def test_an_event_is_recorded_once_and_listed_newest_first(
    store: TrustBackend, clock: Clock
) -> None:
    first = sign_event(REPORTER, ALICE.did, "success", 10, note="one", now=clock())
    store.record(first)
    with pytest.raises(TrustError, match="already recorded"):
        store.record(first)
    store.record(sign_event(REPORTER, ALICE.did, "violation", 30, now=clock()))
    log = store.events(ALICE.did)
    assert [(r.kind, r.delta, r.score) for r in log] == [
        ("violation", -30, 480),
        ("success", 10, 510),
    ]
    assert log[1].event == first and log[1].note == "one" and log[0].seq > log[1].seq
    assert store.score(ALICE.did) == 480


def test_falling_below_the_threshold_revokes(store: TrustBackend, clock: Clock) -> None:
    snap = store.record(sign_event(REPORTER, ALICE.did, "violation", 450, now=clock()))
    assert snap.revoked and snap.score == 50 and "below 100" in (snap.reason or "")
    assert store.is_revoked(ALICE.did) and store.snapshot(ALICE.did).revoked
    assert not store.is_revoked(BOB.did)


def test_attestations_of_a_revoked_attester_add_nothing(store: TrustBackend, clock: Clock) -> None:
    store.revoke(BOB.did, "compromised")
    snap = store.record(sign_event(BOB, ALICE.did, "attestation", 100, now=clock()))
    assert snap.score == 500
    store.restore(BOB.did)
    assert store.record(sign_event(BOB, ALICE.did, "attestation", 100, now=clock())).score == 550


def test_operator_revoke_and_restore(store: TrustBackend, clock: Clock) -> None:
    store.record(sign_event(REPORTER, ALICE.did, "success", 100, now=clock()))
    snap = store.revoke(ALICE.did, "stolen key", by="ops")
    assert snap.revoked and snap.reason == "stolen key" and snap.score == 600
    assert store.is_revoked(ALICE.did)
    snap = store.restore(ALICE.did, by="ops")
    assert not snap.revoked and snap.score == 500 and not store.is_revoked(ALICE.did)
    assert [(r.kind, r.actor) for r in store.events(ALICE.did, limit=2)] == [
        ("restore", "ops"),
        ("revoke", "ops"),
    ]
    with pytest.raises(TrustError):
        store.revoke("not-a-did", "x")


def test_credentials_are_revoked_by_jti(store: TrustBackend) -> None:
    assert not store.is_credential_revoked(JTI)
    version = store.version
    store.revoke_credential(JTI, "leaked", by="ops")
    store.revoke_credential(JTI, "again", by="ops")  # changes nothing
    assert store.is_credential_revoked(JTI) and store.version != version
    [rc] = store.revoked_credentials()
    assert (rc.jti, rc.reason, rc.by) == (JTI, "leaked", "ops")
    with pytest.raises(TrustError, match="32 lowercase hex"):
        store.revoke_credential("XYZ", "bad")


def test_a_revocation_reaches_another_replica(backend: Backend) -> None:
    a, b = backend.store(), backend.store()
    try:
        assert not b.is_revoked(ALICE.did)
        a.revoke(ALICE.did, "compromised")
        until(lambda: b.is_revoked(ALICE.did))
        a.revoke_credential(JTI, "leaked")
        until(lambda: b.is_credential_revoked(JTI))
        b.restore(ALICE.did)
        until(lambda: not a.is_revoked(ALICE.did))
        assert a.snapshot(ALICE.did).score == 500
    finally:
        a.close()
        b.close()


def test_a_closed_store_refuses(backend: Backend) -> None:
    s = backend.store()
    s.close()
    with pytest.raises(TrustError, match="closed"):
        s.is_revoked(ALICE.did)
    with pytest.raises(TrustError, match="closed"):
        s.revoke(ALICE.did, "x")


def test_open_trust_store_follows_the_environment(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_env(monkeypatch)
    with open_trust_store(backend.home) as s:
        assert isinstance(s, PostgresTrustStore if backend.kind == "postgres" else TrustStore)


# --- PostgreSQL only: propagation and fail closed ---------------------------------------------


def test_propagation_is_fast(pg: Backend) -> None:
    a, b = pg.store(), pg.store()
    try:
        latencies = []
        for i in range(20):
            did = Identity.from_seed(bytes([10 + i]) * 32).did
            start = time.monotonic()
            a.revoke(did, "test")  # one write transaction, then a reload: two round trips
            until(lambda did=did: b.is_revoked(did))  # type: ignore[misc]
            latencies.append(time.monotonic() - start)
        median = statistics.median(latencies)
        print(
            "\ntrust propagation (revoke call to seen on another replica): "
            f"median {median * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
        )
        assert median < 0.1
    finally:
        a.close()
        b.close()


def test_an_unreachable_database_denies_everyone(clock: Clock) -> None:
    _skip_without_postgres()  # psycopg is needed
    s = PostgresTrustStore(UNREACHABLE_URL, "wt_unreachable", clock=clock)
    try:
        assert s.is_revoked(ALICE.did) and s.is_credential_revoked(JTI)
        assert s.snapshot(ALICE.did).revoked
        with pytest.raises(TrustError, match="unavailable"):
            s.revoke(ALICE.did, "x")
        with pytest.raises(TrustError):
            s.revoke_credential(JTI, "x")
        with pytest.raises(TrustError):
            s.events(ALICE.did)
    finally:
        s.close()


def test_a_store_that_loses_its_listener_fails_closed_then_recovers(pg: Backend) -> None:
    s = pg.store()
    try:
        assert isinstance(s, PostgresTrustStore)
        until(lambda: not s.is_revoked(ALICE.did))
        query = (
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND query ILIKE %s"
        )
        pattern = f"LISTEN%warden_trust_{pg.namespace}%"
        with psycopg.connect(DATABASE_URL, autocommit=True) as db:
            until(lambda: bool(db.execute(query, (pattern,)).fetchall()))  # the listener's
        until(lambda: s.is_revoked(ALICE.did), timeout=3.0)  # stale: deny
        until(lambda: not s.is_revoked(ALICE.did), timeout=3.0)  # reconnected by itself
    finally:
        s.close()


# --- the identity gate: two Governors share revocations ---------------------------------------

POLICY = """
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: read
    tool: "fs.read"
    effect: allow
"""


def test_a_revocation_on_one_governor_denies_on_another(
    pg: Backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set_env(monkeypatch)
    root, agent = Identity.generate(), Identity.generate()
    govs = [
        Governor(
            load_policy_text(POLICY),
            home=tmp_path / f"home{i}",
            identity=IdentityConfig(roots=[root.did], audience="aud"),
            audit=False,
        )
        for i in range(2)
    ]
    try:
        sessions = []
        for gov in govs:
            assert gov.identity is not None
            assert isinstance(gov.identity.trust, PostgresTrustStore)
            token = issue(root, agent.did, ["fs.*"], audience="aud", ttl=600)
            nonce = gov.identity.challenge()
            va = gov.identity.authenticate(token, make_proof(agent, token, nonce, "aud"))
            sessions.append(va.session)
            assert gov.check(Action(tool="fs.read", session=va.session)).allowed
        assert govs[0].identity is not None
        govs[0].identity.trust.revoke(agent.did, "compromised")

        def denied() -> bool:
            d = govs[1].check(Action(tool="fs.read", session=sessions[1]))
            return d.effect is Effect.DENY

        until(denied)
    finally:
        for gov in govs:
            if gov.identity is not None:
                gov.identity.trust.close()
