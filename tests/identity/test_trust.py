"""Trust store: signed events, decay, tiers, revocation, attestations (docs/identity.md)."""

from __future__ import annotations

import base64
import math
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warden.errors import TrustError
from warden.identity.keys import Identity
from warden.trust import (
    TIERS,
    AgentTrust,
    TrustEvent,
    TrustStore,
    sign_event,
    tier_of,
    verify_event,
)

T0 = 1_800_000_000.0
HOUR = 3600.0
WEEK = 7 * 86400.0
REPORTER = Identity.from_seed(bytes([1]) * 32)
ALICE = Identity.from_seed(bytes([2]) * 32)
BOB = Identity.from_seed(bytes([3]) * 32)
CAROL = Identity.from_seed(bytes([4]) * 32)


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Iterator[TrustStore]:
    with TrustStore(tmp_path / "trust.db", clock=clock, refresh_interval=0) as s:
        yield s


def event(
    clock: Clock,
    subject: Identity,
    kind: str,
    weight: int | None = None,
    by: Identity = REPORTER,
    note: str = "",
) -> TrustEvent:
    return sign_event(by, subject.did, kind, weight, note=note, now=clock())


def raw_signed(by: Identity, **fields: object) -> TrustEvent:
    """An event signed as given, bypassing sign_event's checks (to test record's)."""
    base: dict[str, object] = {
        "subject": ALICE.did,
        "kind": "success",
        "weight": 10,
        "attester": by.did,
        "time": int(T0 * 1000),
        "id": "0" * 31 + "1",
        "note": "",
    }
    unsigned = TrustEvent(**(base | fields))  # type: ignore[arg-type]
    sig = base64.urlsafe_b64encode(by.sign(unsigned.signed_bytes())).rstrip(b"=").decode()
    return msgspec.structs.replace(unsigned, sig=sig)


def boost(store: TrustStore, clock: Clock, who: Identity, to: int) -> None:
    """Bring ``who`` from the baseline to ``to`` with one success or violation."""
    delta = to - store.score(who.did)
    if delta > 0:
        store.record(event(clock, who, "success", delta))
    elif delta < 0:
        store.record(event(clock, who, "violation", -delta))
    assert store.score(who.did) == to


# -- events: signing, fields, signatures ------------------------------------


def test_sign_event_defaults_and_signature_verify(clock: Clock) -> None:
    v = event(clock, ALICE, "violation")
    s = event(clock, ALICE, "success")
    assert (v.weight, s.weight) == (100, 10)
    assert v.attester == REPORTER.did
    assert v.time == int(T0 * 1000)
    assert len(v.id) == 32 and v.id != s.id
    assert "=" not in v.sig and len(v.sig) == 86
    verify_event(v)
    verify_event(s)
    with pytest.raises(TrustError, match="an attestation needs an explicit weight"):
        event(clock, ALICE, "attestation")


def test_signed_bytes_are_domain_tagged_jcs(clock: Clock) -> None:
    ev = event(clock, ALICE, "success", 7, note="shipped")
    expected = (
        b"warden-trust-event/v1\n"
        + (
            f'{{"attester":"{REPORTER.did}","id":"{ev.id}","kind":"success","note":"shipped",'
            f'"subject":"{ALICE.did}","time":{ev.time},"weight":7}}'
        ).encode()
    )
    assert ev.signed_bytes() == expected


@pytest.mark.parametrize(
    "change",
    [
        {"weight": 11},
        {"subject": BOB.did},
        {"kind": "violation"},
        {"note": "edited"},
        {"time": int(T0 * 1000) + 1},
        {"id": "f" * 32},
        {"attester": BOB.did},
    ],
    ids=lambda c: next(iter(c)),
)
def test_tampered_event_is_refused(
    store: TrustStore, clock: Clock, change: dict[str, object]
) -> None:
    ev = event(clock, ALICE, "success", 10)
    tampered = msgspec.structs.replace(ev, **change)
    with pytest.raises(TrustError, match="signature does not verify"):
        store.record(tampered)
    assert store.snapshot(ALICE.did).score == 500
    assert store.events(ALICE.did) == []
    store.record(ev)  # the original still verifies
    assert store.score(ALICE.did) == 510


def test_signature_encoding_is_strict(store: TrustStore, clock: Clock) -> None:
    ev = event(clock, ALICE, "success")
    with pytest.raises(TrustError, match="is not signed"):
        store.record(msgspec.structs.replace(ev, sig=""))
    with pytest.raises(TrustError, match="unpadded base64url"):
        store.record(msgspec.structs.replace(ev, sig=ev.sig + "=="))
    # Same bytes, but the unused low bits of the last character are set.
    last = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    bumped = ev.sig[:-1] + last[last.index(ev.sig[-1]) ^ 1]
    with pytest.raises(TrustError, match="not canonical base64url"):
        store.record(msgspec.structs.replace(ev, sig=bumped))
    with pytest.raises(TrustError, match="must be a TrustEvent"):
        store.record({"kind": "success"})  # type: ignore[arg-type]


def test_unknown_kind_is_refused_even_when_signed(store: TrustStore, clock: Clock) -> None:
    with pytest.raises(TrustError, match="unknown kind `'bribe'`"):
        store.record(raw_signed(REPORTER, kind="bribe"))
    with pytest.raises(TrustError, match="unknown kind"):
        sign_event(REPORTER, ALICE.did, "bribe", 10)
    with pytest.raises(TrustError, match="unknown kind"):
        sign_event(REPORTER, ALICE.did, "bribe")


@pytest.mark.parametrize(
    ("kind", "weight"),
    [
        ("violation", 0),
        ("violation", -5),
        ("violation", 1001),
        ("success", 0),
        ("success", 1001),
        ("attestation", 0),
        ("attestation", 1001),
        ("attestation", -1001),
        ("success", True),
        ("success", 1.0),
    ],
)
def test_out_of_range_weight_is_refused(store: TrustStore, kind: str, weight: object) -> None:
    with pytest.raises(TrustError, match="weight"):
        store.record(raw_signed(REPORTER, kind=kind, weight=weight))
    with pytest.raises(TrustError, match="weight"):
        sign_event(REPORTER, ALICE.did, kind, weight)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"subject": "did:key:zNope"}, "subject .* is not an Ed25519 did:key"),
        ({"id": "ABC"}, "id .* is not 32 lowercase hex"),
        ({"time": -1}, "time must be integer milliseconds"),
        ({"time": 1.5}, "time must be integer milliseconds"),
        ({"note": "x" * 1025}, "note must be UTF-8 text"),
        ({"note": "\udc80"}, "note must be UTF-8 text"),
    ],
)
def test_malformed_fields_are_refused(
    store: TrustStore, fields: dict[str, object], message: str
) -> None:
    base = raw_signed(REPORTER)
    with pytest.raises(TrustError, match=message):
        store.record(msgspec.structs.replace(base, **fields))


def test_boundary_weights_are_accepted(store: TrustStore, clock: Clock) -> None:
    boost(store, clock, BOB, 1000)
    store.record(event(clock, ALICE, "attestation", -1000, by=BOB))
    assert store.score(ALICE.did) == 0
    store.restore(ALICE.did)
    store.record(event(clock, ALICE, "success", 1000))
    assert store.score(ALICE.did) == 1000  # clamped
    store.record(event(clock, ALICE, "violation", 1))
    assert store.score(ALICE.did) == 999


def test_replayed_event_id_is_refused_here_elsewhere_and_after_reopen(
    tmp_path: Path, clock: Clock
) -> None:
    path = tmp_path / "trust.db"
    ev = event(clock, ALICE, "success", 50)
    with TrustStore(path, clock=clock) as first:
        first.record(ev)
        with pytest.raises(TrustError, match=f"`{ev.id}` was already recorded"):
            first.record(ev)
        with TrustStore(path, clock=clock) as second, pytest.raises(TrustError, match="already"):
            second.record(ev)
        assert first.score(ALICE.did) == 550
    with TrustStore(path, clock=clock) as reopened:
        with pytest.raises(TrustError, match="already recorded"):
            reopened.record(ev)
        # A fresh event with a different id and the same content is new evidence.
        reopened.record(event(clock, ALICE, "success", 50))
        assert reopened.score(ALICE.did) == 600


def test_event_time_window(store: TrustStore, clock: Clock) -> None:
    ahead = sign_event(REPORTER, ALICE.did, "success", 1, now=T0 + 31)
    with pytest.raises(TrustError, match="in the future"):
        store.record(ahead)
    store.record(sign_event(REPORTER, ALICE.did, "success", 1, now=T0 + 29))
    store.record(sign_event(REPORTER, ALICE.did, "success", 1, now=T0 - 86400 + 1))
    with pytest.raises(TrustError, match="older than the 86400 s maximum age"):
        store.record(sign_event(REPORTER, ALICE.did, "success", 1, now=T0 - 86400 - 1))
    assert store.score(ALICE.did) == 502
    clock.now += 2  # the clock reaches it: the same event is now within the skew
    store.record(ahead)
    log = store.events(ALICE.did)
    assert len(log) == 3
    assert log[0].event == ahead


# -- scores, decay and tiers --------------------------------------------------


def test_unknown_agent_has_the_baseline(store: TrustStore) -> None:
    assert store.snapshot(ALICE.did) == AgentTrust(ALICE.did, 500, "standard", False, None)
    assert store.score(ALICE.did) == 500
    assert store.tier(ALICE.did) == "standard"
    assert not store.is_revoked(ALICE.did)
    assert store.agents() == []


def test_decay_halves_the_distance_per_half_life_and_rounds_half_up(
    store: TrustStore, clock: Clock
) -> None:
    store.record(event(clock, ALICE, "success", 400))  # 900
    store.record(event(clock, BOB, "success", 401))  # 901
    store.record(event(clock, CAROL, "violation", 399))  # 101
    clock.now += WEEK
    assert store.score(ALICE.did) == 700
    assert store.score(BOB.did) == 701  # 700.5 rounded half up
    assert store.score(CAROL.did) == 301  # 300.5 rounded half up
    clock.now += WEEK
    assert store.score(ALICE.did) == 600
    assert store.score(CAROL.did) == 400  # 500 - 399/4 = 400.25
    clock.now += 10 * WEEK  # 12 half-lives: 1/4096 of the distance remains
    assert store.score(ALICE.did) == 500  # 500.098
    assert store.score(CAROL.did) == 500  # 499.903: decay from below reaches the baseline


def test_decay_applies_before_the_next_event(store: TrustStore, clock: Clock) -> None:
    store.record(event(clock, ALICE, "success", 400))  # 900 at T0
    clock.now += WEEK  # 700
    store.record(event(clock, ALICE, "violation", 100))  # 600 at T0 + WEEK
    assert store.score(ALICE.did) == 600
    clock.now += WEEK
    assert store.score(ALICE.did) == 550
    assert store.events(ALICE.did)[0].delta == -100


def test_a_clock_going_backwards_does_not_decay(store: TrustStore, clock: Clock) -> None:
    store.record(event(clock, ALICE, "success", 400))
    clock.now -= WEEK
    assert store.score(ALICE.did) == 900


def test_custom_half_life_and_baseline(tmp_path: Path, clock: Clock) -> None:
    with TrustStore(tmp_path / "t.db", baseline=300, half_life=HOUR, clock=clock) as s:
        assert s.score(ALICE.did) == 300
        s.record(event(clock, ALICE, "success", 100))
        clock.now += HOUR
        assert s.score(ALICE.did) == 350


def test_tiers_match_the_documented_table() -> None:
    assert TIERS == (
        (0, "untrusted"),
        (200, "probation"),
        (400, "standard"),
        (600, "trusted"),
        (800, "verified"),
    )
    edges = {
        0: "untrusted",
        199: "untrusted",
        200: "probation",
        399: "probation",
        400: "standard",
        599: "standard",
        600: "trusted",
        799: "trusted",
        800: "verified",
        1000: "verified",
    }
    for score, name in edges.items():
        assert tier_of(score) == name
    for bad in (-1, 1001, True, 500.0, "500"):
        with pytest.raises(TrustError, match="integer from 0 to 1000"):
            tier_of(bad)  # type: ignore[arg-type]


def test_snapshot_tier_follows_decay(store: TrustStore, clock: Clock) -> None:
    store.record(event(clock, ALICE, "success", 300))  # 800: verified
    assert store.snapshot(ALICE.did).tier == "verified"
    clock.now += 0.01 * WEEK  # 800 - 300 * (1 - 2**-0.01) = 797.93
    snap = store.snapshot(ALICE.did)
    assert (snap.score, snap.tier) == (798, "trusted")


# -- revocation ---------------------------------------------------------------


def test_auto_revocation_below_threshold_persists_through_decay(
    store: TrustStore, clock: Clock
) -> None:
    store.record(event(clock, ALICE, "violation", 400))  # 100: not below 100
    assert not store.is_revoked(ALICE.did)
    ev = event(clock, ALICE, "violation", 1)
    after = store.record(ev)  # 99
    assert after.revoked
    assert (
        after.reason == f"trust fell to 99, below 100, on violation `{ev.id}` by `{REPORTER.did}`"
    )
    clock.now += 50 * WEEK
    snap = store.snapshot(ALICE.did)
    assert snap.score == 500  # back at the baseline, and still revoked
    assert snap.revoked and snap.reason == after.reason
    store.record(event(clock, ALICE, "success", 1000))
    assert store.snapshot(ALICE.did).score == 1000
    assert store.is_revoked(ALICE.did)


def test_clamped_to_zero_and_revoked(store: TrustStore, clock: Clock) -> None:
    trust = store.record(event(clock, ALICE, "violation", 1000))
    assert (trust.score, trust.tier, trust.revoked) == (0, "untrusted", True)
    assert store.events(ALICE.did)[0].delta == -500  # the change applied, not the weight


def test_manual_revoke_and_restore(store: TrustStore, clock: Clock) -> None:
    store.record(event(clock, ALICE, "success", 300))
    revoked = store.revoke(ALICE.did, "key leaked", by="alice@ops")
    assert revoked == AgentTrust(ALICE.did, 800, "verified", True, "key leaked")
    assert store.is_revoked(ALICE.did)
    clock.now += WEEK
    assert store.snapshot(ALICE.did).score == 650  # revoking keeps the score and its decay
    restored = store.restore(ALICE.did, by="bob@ops")
    assert restored == AgentTrust(ALICE.did, 500, "standard", False, None)
    log = store.events(ALICE.did)
    assert [(r.kind, r.actor, r.delta, r.score, r.note) for r in log] == [
        ("restore", "bob@ops", -150, 500, ""),
        ("revoke", "alice@ops", 0, 800, "key leaked"),
        ("success", REPORTER.did, 300, 800, ""),
    ]
    assert log[0].event is None and log[2].event is not None


def test_revoke_an_agent_never_seen(store: TrustStore) -> None:
    assert store.revoke(BOB.did, "preemptive").revoked
    assert store.agents() == [AgentTrust(BOB.did, 500, "standard", True, "preemptive")]


def test_restore_after_auto_revocation_resets_to_baseline(store: TrustStore, clock: Clock) -> None:
    store.record(event(clock, ALICE, "violation", 450))
    assert store.is_revoked(ALICE.did)
    assert store.restore(ALICE.did).score == 500
    store.record(event(clock, ALICE, "violation", 100))
    assert not store.is_revoked(ALICE.did)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.revoke("alice", "x"), "is not an Ed25519 did:key"),
        (lambda s: s.revoke(ALICE.did, ""), "reason must be non-empty"),
        (lambda s: s.revoke(ALICE.did, "x", by="  "), "by must be non-empty"),
        (lambda s: s.restore("did:key:z6Mk"), "is not an Ed25519 did:key"),
        (lambda s: s.revoke_credential("nope", "x"), "credential id .* is not 32 lowercase hex"),
        (lambda s: s.revoke_credential("a" * 32, ""), "reason must be non-empty"),
        (lambda s: s.events(ALICE.did, limit=0), "limit must be a positive integer"),
    ],
)
def test_operator_input_is_checked(store: TrustStore, call: object, message: str) -> None:
    with pytest.raises(TrustError, match=message):
        call(store)  # type: ignore[operator]


# -- attestations -------------------------------------------------------------


def test_attestation_is_weighted_by_the_attesters_trust(store: TrustStore, clock: Clock) -> None:
    boost(store, clock, BOB, 800)
    assert store.record(event(clock, ALICE, "attestation", 100, by=BOB)).score == 580
    assert store.record(event(clock, ALICE, "attestation", -100, by=BOB)).score == 500
    boost(store, clock, CAROL, 777)
    # 333 * 777 / 1000 = 258.741: rounded toward zero, both ways
    assert store.record(event(clock, ALICE, "attestation", 333, by=CAROL)).score == 758
    assert store.record(event(clock, ALICE, "attestation", -333, by=CAROL)).score == 500
    assert [r.delta for r in store.events(ALICE.did)] == [-258, 258, -80, 80]


def test_attester_trust_is_read_with_decay(store: TrustStore, clock: Clock) -> None:
    boost(store, clock, BOB, 900)
    clock.now += WEEK  # BOB decays to 700
    assert store.record(event(clock, ALICE, "attestation", 100, by=BOB)).score == 570


def test_an_unknown_attester_counts_at_the_baseline(store: TrustStore, clock: Clock) -> None:
    assert store.record(event(clock, ALICE, "attestation", 100, by=CAROL)).score == 550


def test_revoked_or_low_trust_attester_counts_for_nothing(store: TrustStore, clock: Clock) -> None:
    boost(store, clock, BOB, 900)
    store.revoke(BOB.did, "compromised")
    ev = event(clock, ALICE, "attestation", 500, by=BOB)
    assert store.record(ev).score == 500
    recorded = store.events(ALICE.did)[0]
    assert (recorded.kind, recorded.delta, recorded.event) == ("attestation", 0, ev)
    boost(store, clock, CAROL, 499)
    assert store.record(event(clock, ALICE, "attestation", -500, by=CAROL)).score == 500
    boost(store, clock, CAROL, 500)  # exactly attest_min counts
    assert store.record(event(clock, ALICE, "attestation", -500, by=CAROL)).score == 250


def test_attest_min_is_configurable(tmp_path: Path, clock: Clock) -> None:
    with TrustStore(tmp_path / "t.db", attest_min=600, clock=clock) as s:
        assert s.record(event(clock, ALICE, "attestation", 100, by=BOB)).score == 500


def test_an_agent_cannot_raise_itself(store: TrustStore, clock: Clock) -> None:
    with pytest.raises(TrustError, match="cannot report a attestation about itself"):
        store.record(event(clock, ALICE, "attestation", 100, by=ALICE))
    with pytest.raises(TrustError, match="cannot report a success about itself"):
        store.record(event(clock, ALICE, "success", 100, by=ALICE))
    assert store.events(ALICE.did) == []
    assert store.record(event(clock, ALICE, "violation", 100, by=ALICE)).score == 400


# -- credentials --------------------------------------------------------------


def test_credential_revocation_by_jti(store: TrustStore, clock: Clock) -> None:
    jti = "0123456789abcdef0123456789abcdef"
    assert not store.is_credential_revoked(jti)
    version = store.version
    store.revoke_credential(jti, "leaked in a log", by="alice@ops")
    assert store.is_credential_revoked(jti)
    assert not store.is_credential_revoked("f" * 32)
    assert store.version != version
    clock.now += 5
    store.revoke_credential(jti, "again")  # already revoked: the first record stands
    [cred] = store.revoked_credentials()
    assert (cred.jti, cred.reason, cred.by, cred.at) == (jti, "leaked in a log", "alice@ops", T0)


# -- storage, processes, threads ---------------------------------------------


def test_persistence_across_reopen(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "trust.db"
    with TrustStore(path, clock=clock) as s:
        s.record(event(clock, ALICE, "success", 300))
        s.record(event(clock, BOB, "violation", 450))
        s.revoke(CAROL.did, "manual")
        s.revoke_credential("a" * 32, "leak")
        before = s.agents()
        log = s.events(ALICE.did)
    clock.now += WEEK
    with TrustStore(path, clock=clock) as s:
        assert [a.did for a in s.agents()] == [a.did for a in before]
        assert s.snapshot(ALICE.did).score == 650
        assert s.snapshot(BOB.did).revoked
        assert s.snapshot(CAROL.did).reason == "manual"
        assert s.is_credential_revoked("a" * 32)
        assert s.events(ALICE.did) == log
        for record in log:
            assert record.event is not None
            verify_event(record.event)


def test_stored_events_can_be_verified_again(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "trust.db"
    with TrustStore(path, clock=clock) as s:
        s.record(event(clock, ALICE, "success", 10, note="delivered"))
    db = sqlite3.connect(path)
    [(data,)] = db.execute("SELECT event FROM events").fetchall()
    db.close()
    stored = msgspec.json.decode(data, type=TrustEvent)
    verify_event(stored)
    forged = msgspec.structs.replace(stored, weight=1000)
    with pytest.raises(TrustError, match="signature does not verify"):
        verify_event(forged)


def test_another_store_sees_changes_after_refresh(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "trust.db"
    with (
        TrustStore(path, clock=clock) as writer,
        TrustStore(path, clock=clock, refresh_interval=0) as fresh,
        TrustStore(path, clock=clock, refresh_interval=3600) as cached,
    ):
        assert not fresh.is_revoked(ALICE.did)
        assert not cached.is_revoked(ALICE.did)
        v_fresh, v_cached = fresh.version, cached.version
        writer.revoke(ALICE.did, "stolen key")
        writer.record(event(clock, BOB, "success", 100))
        writer.revoke_credential("b" * 32, "leak")
        assert fresh.is_revoked(ALICE.did)
        assert fresh.snapshot(BOB.did).score == 600
        assert fresh.is_credential_revoked("b" * 32)
        assert fresh.version != v_fresh
        # Within its refresh interval a reader keeps its cached state.
        assert not cached.is_revoked(ALICE.did)
        assert cached.version == v_cached
        # A write by the cached store brings it up to date at once.
        cached.record(event(clock, CAROL, "success", 1))
        assert cached.is_revoked(ALICE.did)
        assert cached.is_credential_revoked("b" * 32)


def test_writes_use_state_committed_by_another_store(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "trust.db"
    with (
        TrustStore(path, clock=clock, refresh_interval=3600) as a,
        TrustStore(path, clock=clock, refresh_interval=3600) as b,
    ):
        a.record(event(clock, ALICE, "violation", 300))  # 200
        assert b.record(event(clock, ALICE, "violation", 150)).score == 50
        assert a.score(ALICE.did) == 200  # a's reads are still within their interval
        assert a.record(event(clock, BOB, "success", 1)).score == 501
        assert a.snapshot(ALICE.did).revoked


def test_a_subprocess_revocation_is_seen(tmp_path: Path) -> None:
    path = tmp_path / "trust.db"
    with TrustStore(path, refresh_interval=0) as parent:
        assert not parent.is_revoked(ALICE.did)
        version = parent.version
        code = textwrap.dedent(
            f"""
            from warden.trust import TrustStore
            with TrustStore({str(path)!r}) as s:
                s.revoke({ALICE.did!r}, "revoked by another process", by="cli")
                s.revoke_credential({"c" * 32!r}, "leak")
            """
        )
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
        )
        assert done.returncode == 0, done.stderr
        snap = parent.snapshot(ALICE.did)
        assert snap.revoked and snap.reason == "revoked by another process"
        assert parent.is_credential_revoked("c" * 32)
        assert parent.version != version


def test_version_changes_only_with_state(store: TrustStore, clock: Clock) -> None:
    v0 = store.version
    store.snapshot(ALICE.did)
    assert store.version == v0
    store.record(event(clock, ALICE, "success"))
    v1 = store.version
    assert v1 != v0
    with pytest.raises(TrustError):
        store.record(event(clock, ALICE, "success", 0))
    assert store.version == v1
    store.revoke(ALICE.did, "x")
    assert store.version != v1


def test_concurrent_writers_lose_no_update(tmp_path: Path, clock: Clock) -> None:
    path = tmp_path / "trust.db"
    events = [event(clock, ALICE, "success", 1) for _ in range(40)]
    with TrustStore(path, clock=clock) as s, TrustStore(path, clock=clock) as other:
        stores = [s, other]

        def work(i: int) -> None:
            for ev in events[i::4]:
                stores[i % 2].record(ev)
                stores[i % 2].snapshot(ALICE.did)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert s.record(event(clock, BOB, "success", 1)).score == 501
        assert s.score(ALICE.did) == 540
        assert len(s.events(ALICE.did, limit=100)) == 40


def test_default_path_is_under_warden_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WARDEN_HOME", str(tmp_path / "home"))
    with TrustStore() as s:
        assert s.path == tmp_path / "home" / "trust.db"
        s.revoke(ALICE.did, "x")
    assert (tmp_path / "home" / "trust.db").is_file()


def test_a_store_that_cannot_be_opened(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(TrustError, match="cannot open the trust store"):
        TrustStore(garbage)
    with pytest.raises(TrustError, match="cannot open the trust store"):
        TrustStore(tmp_path)  # a directory
    newer = tmp_path / "newer.db"
    db = sqlite3.connect(newer)
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(TrustError, match="schema version 99"):
        TrustStore(newer)


def test_a_closed_store_fails_closed(tmp_path: Path, clock: Clock) -> None:
    s = TrustStore(tmp_path / "t.db", clock=clock, refresh_interval=3600)
    s.close()
    s.close()
    with pytest.raises(TrustError, match="closed"):
        s.snapshot(ALICE.did)
    with pytest.raises(TrustError, match="closed"):
        s.is_credential_revoked("a" * 32)
    with pytest.raises(TrustError, match="closed"):
        s.record(event(clock, ALICE, "success"))
    with pytest.raises(TrustError, match="closed"):
        s.events(ALICE.did)


@pytest.mark.parametrize(
    "options",
    [
        {"baseline": 1001},
        {"baseline": 50},  # below revoke_below
        {"revoke_below": -1},
        {"attest_min": 500.0},
        {"half_life": 0},
        {"half_life": math.inf},
        {"refresh_interval": -1},
        {"max_age": math.nan},
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, options: dict[str, object]) -> None:
    with pytest.raises(TrustError, match=next(iter(options))):
        TrustStore(tmp_path / "t.db", **options)  # type: ignore[arg-type]
    assert not (tmp_path / "t.db").exists()


# -- property: the store against a naive model --------------------------------

AGENTS = (REPORTER, ALICE, BOB, CAROL)
step = st.tuples(
    st.sampled_from(["violation", "success", "attestation", "revoke", "restore", "wait"]),
    st.integers(0, 3),  # attester
    st.integers(1, 3),  # subject
    st.integers(1, 1000),
    st.booleans(),  # attestation sign
    st.floats(0, 3 * WEEK),
)


class Model:
    """The doc's rules, replayed naively: recompute each read from (s0, t0)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[int, float, bool]] = {}

    def score(self, did: str, now: float) -> int:
        s0, t0, _ = self.rows.get(did, (500, now, False))
        return math.floor(500 + (s0 - 500) * 2 ** (-max(0.0, now - t0) / WEEK) + 0.5)

    def revoked(self, did: str) -> bool:
        return self.rows.get(did, (0, 0.0, False))[2]

    def apply(self, kind: str, by: str, did: str, weight: int, now: float) -> None:
        before = self.score(did, now)
        revoked = self.revoked(did)
        if kind == "violation":
            delta = -weight
        elif kind == "success":
            delta = weight
        else:
            trust = self.score(by, now)
            counts = not self.revoked(by) and trust >= 500
            delta = int(weight * trust / 1000) if counts else 0
        after = max(0, min(1000, before + delta))
        self.rows[did] = (after, now, revoked or after < 100)


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(st.lists(step, max_size=12))
def test_store_matches_a_naive_model(steps: list[tuple[str, int, int, int, bool, float]]) -> None:
    clock = Clock()
    model = Model()
    with tempfile.TemporaryDirectory() as home:
        path = Path(home) / "trust.db"
        with TrustStore(path, clock=clock, refresh_interval=0) as s:
            for kind, by_i, subject_i, weight, negative, wait in steps:
                by, subject = AGENTS[by_i], AGENTS[subject_i]
                if kind == "wait":
                    clock.now += wait
                elif kind == "revoke":
                    s.revoke(subject.did, "r")
                    s0, t0, _ = model.rows.get(subject.did, (500, clock.now, False))
                    model.rows[subject.did] = (s0, t0, True)
                elif kind == "restore":
                    s.restore(subject.did)
                    model.rows[subject.did] = (500, clock.now, False)
                elif by is subject and kind != "violation":
                    with pytest.raises(TrustError, match="about itself"):
                        s.record(event(clock, subject, kind, weight, by=by))
                else:
                    w = -weight if kind == "attestation" and negative else weight
                    s.record(event(clock, subject, kind, w, by=by))
                    model.apply(kind, by.did, subject.did, w, clock.now)
                for agent in AGENTS:
                    snap = s.snapshot(agent.did)
                    assert 0 <= snap.score <= 1000
                    assert snap.score == model.score(agent.did, clock.now)
                    assert snap.revoked == model.revoked(agent.did)
                    assert snap.tier == tier_of(snap.score)
        with TrustStore(path, clock=clock) as reopened:
            for agent in AGENTS:
                assert reopened.score(agent.did) == model.score(agent.did, clock.now)
                assert reopened.is_revoked(agent.did) == model.revoked(agent.did)


def test_reporters_limit_who_may_report_violations_and_successes(
    tmp_path: Path, clock: Clock
) -> None:
    store = TrustStore(tmp_path / "r.db", clock=clock, reporters=[BOB.did])
    with pytest.raises(TrustError, match="not an accepted reporter"):
        store.record(event(clock, CAROL, "violation", 1000))  # by REPORTER
    assert store.score(CAROL.did) == 500 and not store.is_revoked(CAROL.did)
    store.record(event(clock, CAROL, "violation", 100, by=BOB))
    assert store.score(CAROL.did) == 400
    # Attestations stay open to any agent, weighted by its own trust.
    store.record(event(clock, CAROL, "attestation", 100, by=ALICE))
    assert store.score(CAROL.did) == 450
    store.close()
