"""Agent trust on PostgreSQL, shared by every replica of a fleet (docs/fleet.md, issue 9).

The same store as the SQLite ``TrustStore`` (warden/trust/_store.py), whose
code it runs: scores ``(s0, t0)`` decaying toward the baseline, signed events
recorded once, automatic revocation below ``revoke_below``, operator revoke
and restore, credential revocation by ``jti``. Three tables of namespace
``N``: ``N_agents``, ``N_events`` and ``N_revoked_credentials``, with the
SQLite store's columns.

**Writes** run in one transaction holding ``pg_advisory_xact_lock(hash of N)``:
replicas' writes queue, so each computes on the rows as they are, and the
``seq`` / ``n`` numbers commit in the order they are drawn (a reader that has
loaded up to ``seq`` n never misses a row below it). Each write sends
``NOTIFY warden_trust_N`` with its commit.

**Reads** on the decision path (``is_revoked``, ``is_credential_revoked``,
``snapshot``, ``score``, ``version``) never touch the database: they read the
in-memory rows. A background thread holds its own connection, ``LISTEN``\\ s
on the channel and loads the rows above the last ``seq`` on every
notification and at least every ``poll`` seconds (the catch-up, which is
also its liveness check).

**Fail closed.** The memory is *fresh* until ``stale_after`` seconds after the
start of the last catch-up that succeeded with the listening connection up.
While it is not, ``is_revoked`` and ``is_credential_revoked`` answer True for
everyone, ``snapshot`` shows every agent revoked, and writes raise
TrustError. The thread reconnects by itself; the first catch-up after that
makes the store fresh again.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections.abc import Callable, Collection
from typing import Any, Final, cast

from warden.errors import TrustError
from warden.store._pg import Database, StoreUnavailable, lock_key, one_line
from warden.trust._store import DEFAULT_BASELINE, AgentTrust, TrustStore

__all__ = ["PostgresTrustStore"]

_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {agents} (did TEXT PRIMARY KEY, score INTEGER NOT NULL, "
    "since DOUBLE PRECISION NOT NULL, revoked INTEGER NOT NULL, reason TEXT, "
    "seq BIGINT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS {agents_seq} ON {agents} (seq)",
    "CREATE TABLE IF NOT EXISTS {events} (seq BIGSERIAL PRIMARY KEY, id TEXT UNIQUE, "
    "subject TEXT NOT NULL, kind TEXT NOT NULL, actor TEXT NOT NULL, delta INTEGER NOT NULL, "
    "score INTEGER NOT NULL, at DOUBLE PRECISION NOT NULL, note TEXT NOT NULL, event TEXT)",
    "CREATE INDEX IF NOT EXISTS {events_subject} ON {events} (subject, seq)",
    "CREATE TABLE IF NOT EXISTS {revoked_credentials} (n BIGSERIAL PRIMARY KEY, "
    "jti TEXT NOT NULL UNIQUE, reason TEXT NOT NULL, revoked_by TEXT NOT NULL, "
    "at DOUBLE PRECISION NOT NULL)",
)
_NAMES: Final = ("agents", "agents_seq", "events", "events_subject", "revoked_credentials")
_TABLE: Final = re.compile(r"\b(agents|events|revoked_credentials)\b")
_INSERT_OR_IGNORE: Final = re.compile(r"\AINSERT OR IGNORE (.*)\Z", re.DOTALL)
_monotonic: Final = time.monotonic
_UNAVAILABLE: Final = "the trust store is unavailable (fail closed)"


class _Tx:
    """The SQLite store's statements on a PostgreSQL connection.

    ``TrustStore``'s code is written for ``sqlite3``: ``?`` placeholders, bare
    table names, ``INSERT OR IGNORE``. This runs the same statements against
    the namespace's tables, so both backends share one implementation.
    """

    def __init__(self, conn: Any, q: Callable[[str], Any]) -> None:
        self._conn = conn
        self._q = q
        self._cache: dict[str, Any] = {}

    def execute(self, query: str, params: tuple[Any, ...] = ()) -> Any:
        composed = self._cache.get(query)
        if composed is None:
            text = query.replace("{", "{{").replace("}", "}}")
            text = _TABLE.sub(r"{\1}", text).replace("?", "%s")
            ignore = _INSERT_OR_IGNORE.match(text)
            if ignore is not None:
                text = f"INSERT {ignore.group(1)} ON CONFLICT DO NOTHING"
            composed = self._cache[query] = self._q(text)
        return self._conn.execute(composed, params)


class PostgresTrustStore(TrustStore):
    """The trust of one fleet namespace (a ``TrustBackend``). Thread-safe.

    Takes ``TrustStore``'s keyword arguments (``refresh_interval`` is accepted
    and unused: changes arrive by notification), plus ``poll`` (the periodic
    catch-up, seconds) and ``stale_after`` (how long the memory is trusted
    without a successful catch-up). A store made while PostgreSQL is down
    denies everyone until it answers.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
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
        poll: float = 0.25,
        stale_after: float = 1.0,
    ) -> None:
        if not 0 < poll < stale_after < math.inf:
            raise TrustError(f"need 0 < poll ({poll}) < stale_after ({stale_after})")
        self._pgdb = Database(url, namespace, what="trust", names=_NAMES, ddl=_DDL)
        self.name = self._pgdb.name
        self.poll = float(poll)
        self.stale_after = float(stale_after)
        self._channel = f"warden_trust_{namespace}"
        self._write_key = lock_key("warden.trust", namespace)
        self._fresh_until = -math.inf
        self._stop = threading.Event()
        self._listener: threading.Thread | None = None
        super().__init__(
            None,
            baseline=baseline,
            half_life=half_life,
            revoke_below=revoke_below,
            attest_min=attest_min,
            refresh_interval=refresh_interval,
            skew=skew,
            max_age=max_age,
            reporters=reporters,
            clock=clock,
        )
        self._next_check = math.inf  # the hot path never refreshes: the listener does

    def _open(self) -> Any:
        started = _monotonic()
        try:
            self._pgdb.run(self._load)
            self._fresh_until = started + self.stale_after
        except StoreUnavailable:
            pass  # stale: deny until the listener reaches the database
        self._listener = threading.Thread(
            target=self._listen, name=f"warden-trust-{self._pgdb.namespace}", daemon=True
        )
        self._listener.start()
        return cast(Any, None)  # TrustStore's SQLite handle: every method using it is overridden

    def __repr__(self) -> str:
        return f"PostgresTrustStore({self.name!r})"

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._next_check = -math.inf  # the next read refreshes, and so raises
        self._stop.set()
        if self._listener is not None and self._listener is not threading.current_thread():
            self._listener.join(timeout=5.0)
        self._pgdb.close()

    @property
    def fresh(self) -> bool:
        """Whether the memory is current (within ``stale_after``); when not, everyone is denied."""
        return _monotonic() < self._fresh_until

    # -- reads (hot path) ---------------------------------------------------

    def is_revoked(self, did: str) -> bool:
        if _monotonic() >= self._fresh_until:
            if self._closed:
                self._refresh()  # raises
            return True
        entry = self._agents.get(did)
        return entry is not None and entry[2]

    def is_credential_revoked(self, jti: str) -> bool:
        if _monotonic() >= self._fresh_until:
            if self._closed:
                self._refresh()  # raises
            return True
        return jti in self._jtis

    def snapshot(self, did: str) -> AgentTrust:
        trust = super().snapshot(did)
        if _monotonic() >= self._fresh_until:
            return AgentTrust(did, trust.score, trust.tier, True, _UNAVAILABLE)
        return trust

    # -- the background listener -------------------------------------------

    def _load(self, conn: Any) -> None:
        with self._lock:
            self._catch_up(cast(Any, _Tx(conn, self._pgdb.q)))

    def _listen(self) -> None:
        db = self._pgdb
        pg = db._pg
        while not self._stop.is_set():
            conn: Any = None
            try:
                conn = pg.connect(db.url, autocommit=True, **db._options)
                conn.execute(pg.sql.SQL("LISTEN {}").format(pg.sql.Identifier(self._channel)))
                while not self._stop.is_set():
                    started = _monotonic()
                    db.run(self._load)
                    if conn.closed or conn.broken:
                        break
                    self._fresh_until = started + self.stale_after
                    # wakes at the first notification, or after `poll` to catch up anyway
                    for _ in conn.notifies(timeout=self.poll, stop_after=1):
                        pass
            except (pg.Error, StoreUnavailable, TrustError):
                pass
            finally:
                if conn is not None:
                    conn.close()
            self._fresh_until = -math.inf
            self._stop.wait(0.1)

    # -- TrustStore's storage, on PostgreSQL -------------------------------

    def _refresh(self) -> None:
        if self._closed:
            raise TrustError(f"{self.name}: the trust store is closed")
        self._next_check = math.inf

    def _write(self, apply: Callable[[Any], None]) -> None:
        if self._closed:
            raise TrustError(f"{self.name}: the trust store is closed")
        if not self.fresh:
            raise TrustError(f"{self.name}: {_UNAVAILABLE}")

        def tx(conn: Any) -> None:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (self._write_key,))
            db = _Tx(conn, self._pgdb.q)
            with self._lock:
                self._catch_up(cast(Any, db))
                apply(db)
            conn.execute("SELECT pg_notify(%s, '')", (self._channel,))

        try:
            self._pgdb.run(tx)
        except StoreUnavailable as exc:
            raise TrustError(f"cannot write the trust store: {one_line(exc)}") from None
        try:
            self._pgdb.run(self._load)  # this replica sees its own change at once
        except StoreUnavailable:
            self._fresh_until = -math.inf  # the listener loads it when the database is back

    def _read(self, query: str, params: tuple[object, ...]) -> list[Any]:
        if self._closed:
            raise TrustError(f"{self.name}: the trust store is closed")
        try:
            rows: list[Any] = self._pgdb.run(
                lambda conn: _Tx(conn, self._pgdb.q).execute(query, params).fetchall()
            )
        except StoreUnavailable as exc:
            raise TrustError(f"cannot read the trust store: {one_line(exc)}") from None
        return rows

    @staticmethod
    def _log(
        db: Any,
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
        row = db.execute(
            "INSERT INTO events (id, subject, kind, actor, delta, score, at, note, event) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
            (event_id, subject, kind, actor, delta, score, at, note, data),
        ).fetchone()
        seq: int = row[0]
        return seq
