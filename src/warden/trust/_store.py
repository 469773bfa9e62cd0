"""The embedded trust store: scores, signed events and revocations in SQLite.

Each agent row holds ``(s0, t0)``: the score at the time of its last change
(an integer, 0-1000) and that time (store clock, Unix seconds). Reads decay
it toward the baseline, ``baseline + (s0 - baseline) · 2^(-(t - t0)/h)``,
rounded down. Every change appends a row to ``events`` (the signed event
JSON for reported events, so each can be verified again) and stamps the
agent row with that row's ``seq`` (AUTOINCREMENT: never reused, so a reader
that has loaded up to ``seq`` n needs only the rows above n).

Readers never touch SQLite on the hot path: the process keeps every agent
row and every revoked ``jti`` in memory. At most once per
``refresh_interval`` (monotonic time) a read checks ``PRAGMA data_version``;
when another connection has committed, the rows with a ``seq`` above the
last one seen are loaded. Writers run in one ``BEGIN IMMEDIATE``
transaction, load the same way before computing (so the numbers they use
are current across processes) and again after committing (so the writing
process sees its change at once).

Thread safety: writes and refreshes hold one lock. Reads take no lock: they
read a dict whose values are immutable tuples, replaced one key at a time.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, Self, runtime_checkable

import msgspec

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden._text import is_utf8
from warden.errors import TrustError
from warden.identity.did import is_did
from warden.trust._events import _TIER_BY_SCORE, MAX_NOTE, MAX_SCORE, TrustEvent, verify_event

if TYPE_CHECKING:
    from warden.store import FleetConfig

__all__ = [
    "DEFAULT_BASELINE",
    "SCHEMA_VERSION",
    "AgentTrust",
    "RevokedCredential",
    "TrustBackend",
    "TrustRecord",
    "TrustStore",
    "default_trust_path",
    "open_trust_store",
]

SCHEMA_VERSION: Final = 1
DEFAULT_BASELINE: Final = 500
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS agents (
    did TEXT PRIMARY KEY,
    score INTEGER NOT NULL,
    since REAL NOT NULL,
    revoked INTEGER NOT NULL,
    reason TEXT,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_seq ON agents (seq);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE,
    subject TEXT NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    delta INTEGER NOT NULL,
    score INTEGER NOT NULL,
    at REAL NOT NULL,
    note TEXT NOT NULL,
    event TEXT
);
CREATE INDEX IF NOT EXISTS events_subject ON events (subject, seq);
CREATE TABLE IF NOT EXISTS revoked_credentials (
    n INTEGER PRIMARY KEY AUTOINCREMENT,
    jti TEXT NOT NULL UNIQUE,
    reason TEXT NOT NULL,
    revoked_by TEXT NOT NULL,
    at REAL NOT NULL
);
"""

_JTI: Final = re.compile(r"[0-9a-f]{32}\Z")
_ENCODE: Final = msgspec.json.Encoder()
_DECODE: Final = msgspec.json.Decoder(TrustEvent)
_monotonic: Final = time.monotonic
_SNAPSHOT_CACHE: Final = 65536

_Agent = tuple[int, float, bool, str | None]
"""In-memory agent state: (s0, t0, revoked, reason). Immutable, replaced whole."""


def default_trust_path() -> Path:
    """``$WARDEN_HOME/trust.db`` (``.warden/trust.db`` when WARDEN_HOME is unset)."""
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "trust.db"


@dataclass(frozen=True, slots=True)
class AgentTrust:
    """An agent's trust at one moment. ``reason`` says why when ``revoked``, else None."""

    did: str
    score: int
    tier: str
    revoked: bool
    reason: str | None


@dataclass(frozen=True, slots=True)
class TrustRecord:
    """One change to an agent, as logged.

    ``kind`` is an event kind or ``revoke`` / ``restore``; ``actor`` is the
    attester's DID or the operator's name; ``delta`` is the change actually
    applied (0 for an ignored attestation) and ``score`` the score after it;
    ``at`` is store-clock Unix seconds. ``event`` is the signed event, None
    for operator actions.
    """

    seq: int
    subject: str
    kind: str
    actor: str
    delta: int
    score: int
    at: float
    note: str
    event: TrustEvent | None


@dataclass(frozen=True, slots=True)
class RevokedCredential:
    """A revoked credential ``jti``; ``at`` is store-clock Unix seconds."""

    jti: str
    reason: str
    by: str
    at: float


@runtime_checkable
class TrustBackend(Protocol):
    """What the identity gate and ``warden trust`` use of a trust store.

    ``TrustStore`` (SQLite, embedded) and ``warden.store.trust.PostgresTrustStore``
    (fleet) implement it and pass the same tests. The reads above ``agents``
    are the decision path: in memory, no round trip.
    """

    def snapshot(self, did: str) -> AgentTrust: ...

    def score(self, did: str) -> int: ...

    def tier(self, did: str) -> str: ...

    def is_revoked(self, did: str) -> bool: ...

    def is_credential_revoked(self, jti: str) -> bool: ...

    @property
    def version(self) -> int: ...

    def agents(self) -> list[AgentTrust]: ...

    def events(self, did: str, limit: int = 50) -> list[TrustRecord]: ...

    def revoked_credentials(self) -> list[RevokedCredential]: ...

    def record(self, event: TrustEvent) -> AgentTrust: ...

    def revoke(self, did: str, reason: str, *, by: str = "operator") -> AgentTrust: ...

    def restore(self, did: str, *, by: str = "operator") -> AgentTrust: ...

    def revoke_credential(self, jti: str, reason: str, *, by: str = "operator") -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def open_trust_store(
    home: str | os.PathLike[str],
    config: FleetConfig | None = None,
    **kwargs: Any,
) -> TrustBackend:
    """The trust store the environment names: PostgreSQL or ``home/trust.db``.

    PostgreSQL when ``WARDEN_DATABASE_URL`` is set (namespace from
    ``WARDEN_FLEET_NAMESPACE``). ``config`` defaults to ``FleetConfig.from_env()``;
    a malformed URL is a ConfigurationError, never a fallback to the embedded
    store. ``kwargs`` go to the store (``clock``, ``baseline``, ...).
    """
    if config is None:
        from warden.store import FleetConfig

        config = FleetConfig.from_env()
    if config.database_url is not None:
        from warden.store.trust import PostgresTrustStore

        return PostgresTrustStore(config.database_url, config.namespace, **kwargs)
    return TrustStore(Path(home) / "trust.db", **kwargs)


class TrustStore(Closing):
    """Per-agent trust scores and revocations in a SQLite file, shared across processes.

    ``snapshot``, ``score``, ``tier``, ``is_revoked``, ``is_credential_revoked``
    and ``version`` are the hot path: a dict or set lookup and the decay
    arithmetic, plus the throttled ``data_version`` check. They raise
    TrustError only when that check cannot read the file (fail closed).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        baseline: int = DEFAULT_BASELINE,
        half_life: float = 7 * 86400.0,
        revoke_below: int = 100,
        attest_min: int = 500,
        refresh_interval: float = 1.0,
        skew: float = 30.0,
        max_age: float = 86400.0,
        reporters: Collection[str] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        for name, value in (
            ("baseline", baseline),
            ("revoke_below", revoke_below),
            ("attest_min", attest_min),
        ):
            if type(value) is not int or not 0 <= value <= MAX_SCORE:
                raise TrustError(f"{name} must be an integer from 0 to {MAX_SCORE}, not `{value}`")
        if revoke_below > baseline:
            raise TrustError(
                f"revoke_below ({revoke_below}) must not exceed the baseline ({baseline})"
            )
        for name, seconds, low in (
            ("half_life", half_life, 1e-9),
            ("refresh_interval", refresh_interval, 0.0),
            ("skew", skew, 0.0),
            ("max_age", max_age, 1e-9),
        ):
            if not isinstance(seconds, int | float) or not low <= seconds < math.inf:
                raise TrustError(f"{name} must be a finite number of seconds, not `{seconds}`")
        self.path = Path(path) if path is not None else default_trust_path()
        self.baseline = baseline
        self.half_life = float(half_life)
        self.revoke_below = revoke_below
        self.attest_min = attest_min
        self.refresh_interval = float(refresh_interval)
        self.skew = float(skew)
        self.max_age = float(max_age)
        self.reporters = frozenset(reporters) if reporters is not None else None
        self.clock = clock
        self._baseline_tier = _TIER_BY_SCORE[baseline]
        self._lock = threading.Lock()
        self._agents: dict[str, _Agent] = {}
        self._jtis: set[str] = set()
        # did -> (the entry it was built from, the snapshot); valid while the entry is the same
        # object (every change replaces it) and the decayed score is the same.
        self._snapshots: dict[str, tuple[_Agent | None, AgentTrust]] = {}
        self._seq = 0  # highest events.seq loaded
        self._cred_seq = 0  # highest revoked_credentials.n loaded
        self._version = 0
        self._data_version = 0
        self._closed = False
        self._db = self._open()
        self._next_check = _monotonic() + self.refresh_interval

    def _open(self) -> sqlite3.Connection:
        db = open_store(self.path, _SCHEMA, SCHEMA_VERSION, "trust store", TrustError)
        try:
            self._data_version = db.execute("PRAGMA data_version").fetchone()[0]
            self._catch_up(db)
        except sqlite3.Error as exc:
            db.close()
            raise TrustError(f"{self.path}: cannot open the trust store: {exc}") from None
        except TrustError:
            db.close()
            raise
        return db

    def __repr__(self) -> str:
        return f"TrustStore({str(self.path)!r})"

    def close(self) -> None:
        """Close the file; any later read or write raises TrustError."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._next_check = -math.inf  # the next read refreshes, and so raises
                self._db.close()

    # -- reads (hot path) -------------------------------------------------

    def snapshot(self, did: str) -> AgentTrust:
        """``did``'s trust now; an agent never seen has the baseline."""
        if _monotonic() >= self._next_check:
            self._refresh()
        entry = self._agents.get(did)
        score = self.baseline if entry is None else self._decayed(entry, self.clock())
        # Building a frozen dataclass costs ~0.4 us; the score changes rarely, so reuse it.
        cached = self._snapshots.get(did)
        if cached is not None and cached[0] is entry and cached[1].score == score:
            return cached[1]
        if entry is None:
            trust = AgentTrust(did, score, _TIER_BY_SCORE[score], False, None)
        else:
            trust = AgentTrust(did, score, _TIER_BY_SCORE[score], entry[2], entry[3])
        if len(self._snapshots) >= _SNAPSHOT_CACHE:
            self._snapshots.clear()
        self._snapshots[did] = (entry, trust)
        return trust

    def score(self, did: str) -> int:
        """``did``'s score now, 0-1000."""
        if _monotonic() >= self._next_check:
            self._refresh()
        entry = self._agents.get(did)
        return self.baseline if entry is None else self._decayed(entry, self.clock())

    def tier(self, did: str) -> str:
        """``did``'s tier name now."""
        return _TIER_BY_SCORE[self.score(did)]

    def is_revoked(self, did: str) -> bool:
        """True while ``did`` is revoked (automatically or by an operator)."""
        if _monotonic() >= self._next_check:
            self._refresh()
        entry = self._agents.get(did)
        return entry is not None and entry[2]

    def is_credential_revoked(self, jti: str) -> bool:
        """True when the credential with this ``jti`` has been revoked."""
        if _monotonic() >= self._next_check:
            self._refresh()
        return jti in self._jtis

    @property
    def version(self) -> int:
        """A number that changes whenever the state this store has loaded changes.

        Caches keyed on it are invalidated by this process's writes at once and
        by other processes' writes within ``refresh_interval``.
        """
        if _monotonic() >= self._next_check:
            self._refresh()
        return self._version

    def agents(self) -> list[AgentTrust]:
        """Every agent the store has a row for, by DID."""
        if _monotonic() >= self._next_check:
            self._refresh()
        return [self.snapshot(did) for did in sorted(self._agents)]

    def events(self, did: str, limit: int = 50) -> list[TrustRecord]:
        """The last ``limit`` changes to ``did``, newest first."""
        if type(limit) is not int or limit < 1:
            raise TrustError(f"limit must be a positive integer, not `{limit!r}`")
        rows = self._read(
            "SELECT seq, subject, kind, actor, delta, score, at, note, event FROM events "
            "WHERE subject = ? ORDER BY seq DESC LIMIT ?",
            (did, limit),
        )
        return [
            TrustRecord(
                seq=r[0],
                subject=r[1],
                kind=r[2],
                actor=r[3],
                delta=r[4],
                score=r[5],
                at=r[6],
                note=r[7],
                event=None if r[8] is None else self._decode_event(r[0], r[8]),
            )
            for r in rows
        ]

    def revoked_credentials(self) -> list[RevokedCredential]:
        """Every revoked credential, oldest revocation first."""
        rows = self._read(
            "SELECT jti, reason, revoked_by, at FROM revoked_credentials ORDER BY n", ()
        )
        return [RevokedCredential(jti=r[0], reason=r[1], by=r[2], at=r[3]) for r in rows]

    # -- writes -----------------------------------------------------------

    def record(self, event: TrustEvent) -> AgentTrust:
        """Verify and apply a signed event; the subject's trust after it.

        Refused (TrustError): a bad signature or field, an agent reporting a
        success or attestation about itself, an event dated more than
        ``skew`` in the future or older than ``max_age``, an ``id`` already
        recorded, a violation or success from a signer not in ``reporters``
        (when that is set). A violation subtracts its weight, a success adds it; an
        attestation adds ``weight * attester trust / 1000`` (rounded toward
        zero), or nothing when the attester is revoked or below
        ``attest_min``. The result is clamped to 0-1000 and, below
        ``revoke_below``, revokes the agent.
        """
        verify_event(event)
        if (
            self.reporters is not None
            and event.kind != "attestation"
            and event.attester not in self.reporters
        ):
            raise TrustError(
                f"trust event `{event.id}`: `{event.attester}` is not an accepted reporter "
                f"of {event.kind}s"
            )
        if event.attester == event.subject and event.kind != "violation":
            raise TrustError(
                f"trust event `{event.id}`: `{event.subject}` cannot report a {event.kind} "
                "about itself"
            )
        now = self.clock()
        now_ms = now * 1000.0
        if event.time > now_ms + self.skew * 1000.0:
            raise TrustError(
                f"trust event `{event.id}` is dated {(event.time - now_ms) / 1000.0:.3f} s "
                f"in the future (more than the {self.skew:g} s skew)"
            )
        if event.time < now_ms - self.max_age * 1000.0:
            raise TrustError(
                f"trust event `{event.id}` is older than the {self.max_age:g} s maximum age"
            )
        data = _ENCODE.encode(event).decode("utf-8")

        def apply(db: sqlite3.Connection) -> None:
            if db.execute("SELECT 1 FROM events WHERE id = ?", (event.id,)).fetchone():
                raise TrustError(f"trust event `{event.id}` was already recorded")
            entry = self._agents.get(event.subject)
            before = self.baseline if entry is None else self._decayed(entry, now)
            revoked, reason = (False, None) if entry is None else (entry[2], entry[3])
            after = min(MAX_SCORE, max(0, before + self._delta(event, now)))
            if not revoked and after < self.revoke_below:
                revoked = True
                reason = (
                    f"trust fell to {after}, below {self.revoke_below}, "
                    f"on {event.kind} `{event.id}` by `{event.attester}`"
                )
            seq = self._log(
                db,
                event.subject,
                event.kind,
                event.attester,
                after - before,
                after,
                now,
                event.note,
                event.id,
                data,
            )
            self._put(db, event.subject, (after, now, revoked, reason), seq)

        self._write(apply)
        return self._trust(event.subject, now)

    def revoke(self, did: str, reason: str, *, by: str = "operator") -> AgentTrust:
        """Revoke ``did`` until a ``restore``; its score is left as it is."""
        _check_did(did)
        _check_text("reason", reason)
        _check_text("by", by)
        now = self.clock()

        def apply(db: sqlite3.Connection) -> None:
            entry = self._agents.get(did) or (self.baseline, now, False, None)
            score = self._decayed(entry, now)
            seq = self._log(db, did, "revoke", by, 0, score, now, reason, None, None)
            self._put(db, did, (entry[0], entry[1], True, reason), seq)

        self._write(apply)
        return self._trust(did, now)

    def restore(self, did: str, *, by: str = "operator") -> AgentTrust:
        """Clear ``did``'s revocation and reset its score to the baseline."""
        _check_did(did)
        _check_text("by", by)
        now = self.clock()

        def apply(db: sqlite3.Connection) -> None:
            entry = self._agents.get(did)
            before = self.baseline if entry is None else self._decayed(entry, now)
            delta = self.baseline - before
            seq = self._log(db, did, "restore", by, delta, self.baseline, now, "", None, None)
            self._put(db, did, (self.baseline, now, False, None), seq)

        self._write(apply)
        return self._trust(did, now)

    def revoke_credential(self, jti: str, reason: str, *, by: str = "operator") -> None:
        """Revoke the credential with this ``jti``; revoking it again changes nothing."""
        if type(jti) is not str or not _JTI.match(jti):
            raise TrustError(f"credential id `{jti!r}` is not 32 lowercase hex characters")
        _check_text("reason", reason)
        _check_text("by", by)
        now = self.clock()

        def apply(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR IGNORE INTO revoked_credentials (jti, reason, revoked_by, at) "
                "VALUES (?, ?, ?, ?)",
                (jti, reason, by, now),
            )

        self._write(apply)

    # -- internals --------------------------------------------------------

    def _decayed(self, entry: _Agent, now: float) -> int:
        s0, t0 = entry[0], entry[1]
        if s0 == self.baseline or now <= t0:
            return s0
        remaining: float = 2.0 ** ((t0 - now) / self.half_life)
        # Lies between s0 and the baseline (|(s0 - b) * f| <= |s0 - b| for f <= 1), so in
        # 0..1000. Rounded half up: a score neither drops a point the moment time passes nor
        # stops one short of the baseline.
        return math.floor(self.baseline + (s0 - self.baseline) * remaining + 0.5)

    def _delta(self, event: TrustEvent, now: float) -> int:
        if event.kind == "violation":
            return -event.weight
        if event.kind == "success":
            return event.weight
        attester = self._agents.get(event.attester)
        if attester is not None and attester[2]:
            return 0
        trust = self.baseline if attester is None else self._decayed(attester, now)
        if trust < self.attest_min:
            return 0
        magnitude = abs(event.weight) * trust // 1000
        return magnitude if event.weight > 0 else -magnitude

    def _trust(self, did: str, now: float) -> AgentTrust:
        entry = self._agents.get(did)
        if entry is None:
            return AgentTrust(did, self.baseline, self._baseline_tier, False, None)
        score = self._decayed(entry, now)
        return AgentTrust(did, score, _TIER_BY_SCORE[score], entry[2], entry[3])

    def _refresh(self) -> None:
        """Load other connections' commits if there are any; throttled by the caller."""
        if not self._lock.acquire(blocking=False):
            return  # a writer or another reader holds it and is loading the same rows
        try:
            if self._closed:
                raise TrustError(f"{self.path}: the trust store is closed")
            try:
                data_version = self._db.execute("PRAGMA data_version").fetchone()[0]
                if data_version != self._data_version:
                    self._catch_up(self._db)
                    self._data_version = data_version
            except sqlite3.Error as exc:
                raise TrustError(f"{self.path}: cannot read the trust store: {exc}") from None
            self._next_check = _monotonic() + self.refresh_interval
        finally:
            self._lock.release()

    def _catch_up(self, db: sqlite3.Connection) -> None:
        """Load agent rows and revoked credentials newer than those loaded; lock held."""
        rows = db.execute(
            "SELECT did, score, since, revoked, reason, seq FROM agents WHERE seq > ? ORDER BY seq",
            (self._seq,),
        ).fetchall()
        for did, score, since, revoked, reason, seq in rows:
            if type(score) is not int or not 0 <= score <= MAX_SCORE or type(since) is not float:
                raise TrustError(f"{self.path}: stored trust of `{did}` is corrupt")
            self._agents[did] = (score, since, bool(revoked), reason)
            self._seq = seq
        creds = db.execute(
            "SELECT n, jti FROM revoked_credentials WHERE n > ? ORDER BY n", (self._cred_seq,)
        ).fetchall()
        for n, jti in creds:
            self._jtis.add(jti)
            self._cred_seq = n
        if rows or creds:
            self._version += 1

    def _write(self, apply: Callable[[sqlite3.Connection], None]) -> None:
        """Run ``apply`` in one write transaction on fresh state, then load what it wrote."""
        if self._closed:
            raise TrustError(f"{self.path}: the trust store is closed")
        try:
            with write_transaction(self._db, self._lock) as db:
                self._catch_up(db)
                apply(db)
            with self._lock:
                self._catch_up(self._db)
        except sqlite3.Error as exc:
            raise TrustError(f"{self.path}: cannot write the trust store: {exc}") from None

    def _read(self, query: str, params: tuple[object, ...]) -> list[Any]:
        with self._lock:
            if self._closed:
                raise TrustError(f"{self.path}: the trust store is closed")
            try:
                rows: list[Any] = self._db.execute(query, params).fetchall()
            except sqlite3.Error as exc:
                raise TrustError(f"{self.path}: cannot read the trust store: {exc}") from None
        return rows

    @staticmethod
    def _log(
        db: sqlite3.Connection,
        subject: str,
        kind: str,
        actor: str,
        delta: int,
        score: int,
        at: float,
        note: str,
        event_id: str | None,
        data: str | None,
    ) -> int:
        cursor = db.execute(
            "INSERT INTO events (id, subject, kind, actor, delta, score, at, note, event) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (event_id, subject, kind, actor, delta, score, at, note, data),
        )
        seq = cursor.lastrowid
        assert seq is not None  # an INSERT into a rowid table always sets it
        return seq

    @staticmethod
    def _put(db: sqlite3.Connection, did: str, entry: _Agent, seq: int) -> None:
        db.execute(
            "INSERT INTO agents (did, score, since, revoked, reason, seq) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (did) DO UPDATE SET "
            "score = excluded.score, since = excluded.since, revoked = excluded.revoked, "
            "reason = excluded.reason, seq = excluded.seq",
            (did, entry[0], float(entry[1]), int(entry[2]), entry[3], seq),
        )

    def _decode_event(self, seq: object, data: object) -> TrustEvent:
        try:
            if not isinstance(data, str):
                raise TypeError("not text")
            return _DECODE.decode(data)
        except (msgspec.DecodeError, TypeError):
            raise TrustError(f"{self.path}: stored event {seq} is corrupt") from None


def _check_did(did: object) -> None:
    if not is_did(did):
        raise TrustError(f"`{did!r}` is not an Ed25519 did:key")


def _check_text(name: str, value: object) -> None:
    if type(value) is not str or not value.strip() or len(value) > MAX_NOTE or not is_utf8(value):
        raise TrustError(f"{name} must be non-empty UTF-8 text of at most {MAX_NOTE} characters")
