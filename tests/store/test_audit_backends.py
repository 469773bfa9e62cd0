"""One audit test suite, run on both backends: SQLite (embedded) and PostgreSQL (fleet).

docs/audit.md's guarantees must hold whichever store holds the log: one gap-free
sequence that verifies, proofs that verify against signed checkpoints, tampering
caught, the Governor's decisions and outcomes recorded, `warden audit verify`
passing. docs/fleet.md adds what only PostgreSQL has: several writers sharing one
namespace, and the local spool that keeps every record while the database is away.

The PostgreSQL tests use ``$WARDEN_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``) and are skipped when it does not
answer. Each test gets its own namespace, ``wt_<12 hex>``, whose tables it drops.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from click.testing import CliRunner

from warden import Action, ActionDenied, Effect, Governor, load_policy_text
from warden.audit import (
    AuditBackend,
    AuditLog,
    AuditStore,
    leaf_hash,
    parse_checkpoint,
    trusted_verifier,
    verify_consistency,
    verify_inclusion,
    verify_log,
)
from warden.cli.audit import audit as audit_command
from warden.errors import AuditError, LogIntegrityError
from warden.store import PostgresAuditStore

try:
    import psycopg
except ImportError:  # pragma: no cover - the fleet extra is not installed: SQLite only
    psycopg = None

DATABASE_URL = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REC = "test.record/v1"
POLICY = load_policy_text(
    """
apiVersion: warden/v1
kind: Policy
name: backend-tests
default: deny
rules:
  - id: ok
    tool: "t.*"
    effect: allow
"""
)
TABLES = ("records", "nodes", "batches", "checkpoints", "meta")


def _postgres_answers() -> bool:
    if psycopg is None:
        return False
    try:
        psycopg.connect(DATABASE_URL, connect_timeout=3).close()
    except psycopg.Error:
        return False
    return True


_PG_UP = _postgres_answers()


def _rec(n: int, **extra: Any) -> dict[str, Any]:
    return {"type": REC, "n": n, **extra}


def _wait(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _verify(store: AuditBackend, earlier: str | None = None) -> Any:
    verifier, _ = trusted_verifier(store, None)
    return verify_log(store, verifier, earlier=earlier)


def _records(store: AuditBackend) -> list[dict[str, Any]]:
    """Every record, checking that its seq is its position and its leaf its hash."""
    out = []
    for pos, (seq, leaf, data, _) in enumerate(store.scan()):
        assert seq == pos
        assert leaf == leaf_hash(data)
        rec = json.loads(data)
        assert rec["seq"] == pos
        out.append(rec)
    return out


# --- the two backends ------------------------------------------------------------------------


@dataclass
class Backend:
    """One backend under test: opens stores and logs, sets the environment, edits raw rows."""

    kind: str
    home: Path
    url: str | None = None
    namespace: str | None = None

    @property
    def path(self) -> Path:
        return self.home / "audit.db"

    def open(self, url: str | None = None, **kwargs: Any) -> AuditBackend:
        if self.kind == "sqlite":
            return AuditStore(self.path)
        assert self.namespace is not None
        return PostgresAuditStore(
            url or self.url or DATABASE_URL, self.namespace, path=self.path, **kwargs
        )

    def reader(self) -> AuditBackend:
        """The log opened read-only, as `warden audit` opens it."""
        if self.kind == "sqlite":
            return AuditStore(self.path, readonly=True)
        return self.open(readonly=True)

    def log(
        self, *, url: str | None = None, options: dict[str, Any] | None = None, **kw: Any
    ) -> AuditLog:
        return AuditLog(self.path, store=self.open(url, **(options or {})), **kw)

    def set_env(self, monkeypatch: pytest.MonkeyPatch, url: str | None = None) -> None:
        monkeypatch.setenv("WARDEN_HOME", str(self.home))
        if self.kind == "sqlite":
            monkeypatch.delenv("WARDEN_DATABASE_URL", raising=False)
            monkeypatch.delenv("WARDEN_FLEET_NAMESPACE", raising=False)
        else:
            assert self.namespace is not None
            monkeypatch.setenv("WARDEN_DATABASE_URL", url or self.url or DATABASE_URL)
            monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", self.namespace)

    def tamper(self, seq: int, data: bytes) -> None:
        """Overwrite one stored record's bytes, as someone with write access to the store."""
        if self.kind == "sqlite":
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("UPDATE entries SET data = ? WHERE seq = ?", (data, seq))
            db.close()
        else:
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                db.execute(
                    f"UPDATE {self.namespace}_records SET data = %s WHERE seq = %s", (data, seq)
                )

    def drop(self) -> None:
        if self.kind == "postgres":
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                for table in TABLES:
                    db.execute(f"DROP TABLE IF EXISTS {self.namespace}_{table}")


_MUST_RUN = bool(os.environ.get("WARDEN_REQUIRE_POSTGRES") or os.environ.get("CI"))
"""In CI PostgreSQL is there: a test that cannot reach it fails instead of skipping."""


def _skip_without_postgres() -> None:
    if not _PG_UP:
        if _MUST_RUN:
            pytest.fail(f"PostgreSQL does not answer at {DATABASE_URL} (required in CI)")
        pytest.skip(f"PostgreSQL does not answer at {DATABASE_URL}")


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "postgres":
        _skip_without_postgres()
    b = Backend(request.param, tmp_path / "home")
    if b.kind == "postgres":
        b.url = DATABASE_URL
        b.namespace = f"wt_{uuid.uuid4().hex[:12]}"
    try:
        yield b
    finally:
        b.drop()


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Backend]:
    _skip_without_postgres()
    b = Backend("postgres", tmp_path / "home", DATABASE_URL, f"wt_{uuid.uuid4().hex[:12]}")
    try:
        yield b
    finally:
        b.drop()


# --- the same suite on both ------------------------------------------------------------------


def test_both_stores_are_audit_backends(backend: Backend) -> None:
    store = backend.open()
    try:
        assert isinstance(store, AuditBackend)
    finally:
        store.close()


def test_append_then_verify(backend: Backend) -> None:
    with backend.log(batch_size=7, batch_interval=0.001) as log:
        for n in range(250):
            log.append(_rec(n))
        assert log.flush() == 250
        assert [r["n"] for r in _records(log.store)] == list(range(250))
    store = backend.reader()
    try:
        report = _verify(store)
        assert report.size == 250
        assert report.batches >= 250 // 70  # group commit: at most 10 batches' worth at once
        latest = store.latest_checkpoint()
        assert latest is not None
        assert latest[0] == 250  # close() signed the final tree
    finally:
        store.close()


def test_batches_from_direct_appends_verify(backend: Backend) -> None:
    with backend.log(checkpoint_every=0) as log:
        n = 0
        for k in (1, 2, 3, 1, 8, 5, 16, 1, 33):
            first, size = log.store.append_batch([_rec(n + i) for i in range(k)])
            assert (first, size) == (n, n + k)
            n += k
        report = _verify(log.store)
        assert report.size == n
        assert report.batches == 9


def test_inclusion_and_consistency_proofs_verify(backend: Backend) -> None:
    with backend.log(batch_size=5, batch_interval=0.001) as log:
        notes = {}
        for n in range(1, 40):
            log.append(_rec(n))
            if n in (1, 7, 16, 23, 39):
                note = log.checkpoint()
                notes[n] = parse_checkpoint(note, log.verifier, log.store.origin)
        store = log.store
        for size, cp in notes.items():
            assert store.root(size) == cp.root
            for index in {0, size // 2, size - 1}:
                proof = store.inclusion_proof(index, size)
                verify_inclusion(leaf_hash(store.record(index)), index, size, proof, cp.root)
        sizes = sorted(notes)
        for old in sizes:
            for new in sizes:
                if old <= new:
                    proof = store.consistency_proof(old, new)
                    verify_consistency(old, new, notes[old].root, notes[new].root, proof)
        with pytest.raises(ValueError, match="never shrinks"):
            store.consistency_proof(39, 7)
        with pytest.raises(ValueError, match="not in a tree"):
            store.inclusion_proof(39, 39)


def test_a_tampered_record_is_detected(backend: Backend) -> None:
    with backend.log(batch_size=4, batch_interval=0.001) as log:
        for n in range(30):
            log.append(_rec(n))
        log.flush()
        kept = log.checkpoint()
    original = json.loads(_record_bytes(backend, 17))
    original["n"] = 999
    backend.tamper(17, json.dumps(original, separators=(",", ":"), sort_keys=True).encode())
    store = backend.reader()
    try:
        with pytest.raises(LogIntegrityError) as caught:
            _verify(store, earlier=kept)
        assert caught.value.index == 17
        assert "leaf hash does not match" in str(caught.value)
    finally:
        store.close()


def _record_bytes(backend: Backend, seq: int) -> bytes:
    store = backend.reader()
    try:
        return store.record(seq)
    finally:
        store.close()


def test_checkpoints_are_signed_stored_and_extended(backend: Backend) -> None:
    with backend.log(batch_size=10, batch_interval=0.001, checkpoint_every=25) as log:
        for n in range(60):
            log.append(_rec(n))
            if n % 10 == 9:
                log.flush()  # one batch of 10 at a time
        early = log.checkpoint()
        cp = parse_checkpoint(early, log.verifier, log.store.origin)
        assert cp.size == 60
        for n in range(60, 75):
            log.append(_rec(n))
        log.flush()
        stored = log.store.checkpoints()
        sizes = [s for s, _ in stored]
        assert sizes == sorted(sizes)
        assert 60 in sizes
        assert [s for s in sizes if s < 60] == [30]  # checkpoint_every signed it (and 60)
        for size, note in stored:
            assert parse_checkpoint(note, log.verifier, log.store.origin).size == size
        report = _verify(log.store, earlier=early)
        assert report.extends is not None
        assert report.extends.size == 60
        assert report.size == 75


def test_select_records_filters_alike(backend: Backend) -> None:
    rows = [
        {
            "type": "warden.decision/v1",
            "agent": {"id": "a1"},
            "action": {"tool": "t.x"},
            "decision": {"effect": "allow"},
            "session": "s1",
        },
        {"type": "warden.outcome/v1", "agent": "a1", "tool": "t.x", "session": "s1"},
        {
            "type": "warden.decision/v1",
            "agent": {"id": "a2"},
            "action": {"tool": "t.y"},
            "decision": {"effect": "deny"},
            "session": "s2",
        },
        {
            "type": "warden.decision/v1",
            "agent": None,
            "action": {"tool": None},
            "tool": "t.z",
            "decision": {"effect": "allow"},
            "session": None,
        },
        {"type": "other/v1", "agent": {"id": 5}, "note": 'a1 "quoted" \u00e9'},
    ]
    for day, row in enumerate(rows, 1):
        row["time"] = f"2026-01-0{day}T00:00:00.000000Z"
    rows[3]["time"] = 5  # not a time: matches no `since`
    with backend.log(checkpoint_every=0) as log:
        log.store.append_batch(rows)
        store = log.store

        def seqs(**filters: Any) -> list[int]:
            return [s for s, _ in store.select_records(**filters, chunk=2)]

        assert seqs() == [0, 1, 2, 3, 4]
        assert seqs(newest=True) == [4, 3, 2, 1, 0]
        assert seqs(agent="a1") == [0, 1]
        assert seqs(tool="t.x") == [0, 1]
        assert seqs(tool="t.z") == [3]
        assert seqs(effect="allow") == [0, 3]
        assert seqs(record_type="warden.decision/v1", session="s2") == [2]
        assert seqs(agent="5") == []
        assert seqs(since="2000-01-01T00:00:00.000000Z") == [0, 1, 2, 4]
        assert seqs(since="2026-01-02T00:00:00.000000Z", agent="a1") == [1]
        assert seqs(since="2999-01-01T00:00:00.000000Z") == []
        assert seqs(agent="a1", newest=True) == [1, 0]


def test_governor_records_and_warden_audit_verify_passes(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_env(monkeypatch)
    gov = Governor(POLICY, home=backend.home)
    assert gov.audit is not None
    kind = PostgresAuditStore if backend.kind == "postgres" else AuditStore
    assert isinstance(gov.audit.store, kind)

    @gov.tool("t.read")
    def read(table: str) -> str:
        return "rows"

    @gov.tool("x.write")
    def write(table: str) -> None:  # pragma: no cover - denied
        raise AssertionError

    with gov.session("s1"):
        for _ in range(3):
            assert read("t") == "rows"
        with pytest.raises(ActionDenied):
            write("t")
    assert gov.check(Action(tool="t.other")).effect is Effect.ALLOW
    gov.audit.close()

    runner = CliRunner()
    result = runner.invoke(audit_command, ["verify", "--home", str(backend.home), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["ok"] is True
    assert out["size"] == 9  # 3 x (decision, outcome), deny decision and outcome, a check
    assert out["newest_checkpoint"] == 9

    result = runner.invoke(
        audit_command, ["show", "--home", str(backend.home), "--type", "outcome", "--json"]
    )
    assert result.exit_code == 0, result.output
    outcomes = [json.loads(line) for line in result.output.splitlines()]
    assert [o["status"] for o in outcomes] == ["ok", "ok", "ok", "denied"]

    result = runner.invoke(audit_command, ["prove", "4", "--home", str(backend.home)])
    assert result.exit_code == 0, result.output
    proof = json.loads(result.output[result.output.index("{") :])
    assert proof["size"] == 9
    assert proof["checkpoint"] is not None

    backend.tamper(2, b'{"seq":2,"type":"warden.decision/v1"}')
    result = runner.invoke(audit_command, ["verify", "--home", str(backend.home)])
    assert result.exit_code == 1
    assert "entry 2: leaf hash does not match the record" in result.output


# --- PostgreSQL only: several writers, the spool --------------------------------------------


def test_a_missing_namespace_is_an_error_not_a_new_log(
    pg: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(AuditError, match="no audit log here"):
        pg.open(readonly=True)
    pg.set_env(monkeypatch)
    result = CliRunner().invoke(audit_command, ["verify", "--home", str(pg.home)])
    assert result.exit_code == 1
    assert "no audit log here" in result.output
    assert "Traceback" not in result.output


def test_two_writers_share_one_sequence(pg: Backend) -> None:
    per_writer = 400
    logs = [pg.log(batch_size=3, batch_interval=0.0005) for _ in range(2)]
    start = threading.Barrier(4)

    def write(w: int, part: int) -> None:
        start.wait()
        for n in range(part, per_writer, 2):
            logs[w].append(_rec(n, w=w))

    threads = [threading.Thread(target=write, args=(w, p)) for w in (0, 1) for p in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for log in logs:
        log.flush()
    store = logs[0].store
    recs = _records(store)
    assert len(recs) == 2 * per_writer
    assert sorted((r["w"], r["n"]) for r in recs) == sorted(
        (w, n) for w in (0, 1) for n in range(per_writer)
    )
    switches = sum(a["w"] != b["w"] for a, b in itertools.pairwise(recs))
    assert switches >= 2, "the writers did not actually interleave"
    # batches interleave whole: every batch holds one writer's records
    for _, first, count, _, _ in store.batches():
        assert len({recs[i]["w"] for i in range(first, first + count)}) == 1
    assert _verify(store).size == 2 * per_writer
    for log in logs:
        log.close()
    reader = pg.open(readonly=True)
    try:
        assert _verify(reader).size == 2 * per_writer
    finally:
        reader.close()


def test_a_log_verifies_while_other_writers_extend_it(pg: Backend) -> None:
    logs = [pg.log(batch_size=2, batch_interval=0.0005, checkpoint_every=7) for _ in range(2)]
    stop = threading.Event()

    def write(log: AuditLog) -> None:
        n = 0
        while not stop.is_set():
            log.append(_rec(n))
            if n % 3 == 0:
                log.flush()
            n += 1

    threads = [threading.Thread(target=write, args=(log,)) for log in logs]
    for t in threads:
        t.start()
    reader = pg.open(readonly=True)
    sizes = set()
    try:
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline or len(sizes) < 3:
            sizes.add(_verify(reader).size)  # one snapshot, whatever commits meanwhile
    finally:
        stop.set()
        for t in threads:
            t.join()
        for log in logs:
            log.close()
        reader.close()
    assert len(sizes) >= 3


_WRITER = """
import sys
from warden.audit import AuditLog
log = AuditLog(sys.argv[1], batch_size=5, batch_interval=0.0005)
for n in range(int(sys.argv[3])):
    log.append({"type": "test.record/v1", "w": int(sys.argv[2]), "n": n})
log.close()
"""


def test_two_processes_share_one_sequence(pg: Backend) -> None:
    with pg.log():
        pass  # the tables and the signing key exist before the replicas start
    env = {
        **os.environ,
        "WARDEN_DATABASE_URL": DATABASE_URL,
        "WARDEN_FLEET_NAMESPACE": str(pg.namespace),
    }
    procs = [
        subprocess.Popen([sys.executable, "-c", _WRITER, str(pg.path), str(w), "300"], env=env)
        for w in (0, 1)
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0
    store = pg.open(readonly=True)
    try:
        recs = _records(store)
        assert sorted((r["w"], r["n"]) for r in recs) == sorted(
            (w, n) for w in (0, 1) for n in range(300)
        )
        for w in (0, 1):  # each replica's records keep its order
            assert [r["n"] for r in recs if r["w"] == w] == list(range(300))
        assert _verify(store).size == 600
    finally:
        store.close()


class Proxy:
    """A TCP forwarder to PostgreSQL that a test can cut (every connection dropped) and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self.closed = False
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):  # as libpq does: no Nagle delay on small messages
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.sockets += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self.lock:
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()

    def url(self, base: str) -> str:
        parts = urlsplit(base)
        user = f"{parts.username}@" if parts.username else ""
        return urlunsplit(parts._replace(netloc=f"{user}127.0.0.1:{self.port}"))


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    parts = urlsplit(DATABASE_URL)
    p = Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    try:
        yield p
    finally:
        p.close()


FAST_RETRY = {"retry_interval": 0.02, "retry_max": 0.2}


def test_an_outage_spools_then_ships_every_record_once_in_order(
    pg: Backend, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    pg.set_env(monkeypatch, proxy.url(DATABASE_URL))
    gov = Governor(POLICY, home=pg.home)
    log = gov.audit
    assert log is not None
    store = log.store
    assert isinstance(store, PostgresAuditStore)
    store.retry_interval, store.retry_max = 0.02, 0.2
    made: list[str] = []

    @gov.tool("t.act")
    def act(n: int) -> int:
        return n

    def decide(n: int) -> None:
        decision = gov.check(Action(tool="t.check", args={"n": n}))
        assert decision.effect is Effect.ALLOW, decision.reasons
        made.append(decision.id)
        assert act(n) == n

    for n in range(10):
        decide(n)
    before = log.flush()
    assert before == 30  # 10 checks, 10 tool decisions, 10 outcomes

    proxy.cut()
    for n in range(10, 60):
        decide(n)  # the Governor keeps deciding: the batches go to the spool
        # durable in the spool, one batch each; the log's size is the one last seen
        assert log.flush() == before
    assert store.spooling
    assert store.pending() == 150
    assert store.spool_path.is_file()
    with pytest.raises(AuditError):
        store.size()  # reads say PostgreSQL is away, they do not guess

    proxy.restore()
    _wait(lambda: store.pending() == 0 and not store.spooling, "the spool to drain")
    for n in range(60, 70):
        decide(n)  # straight to PostgreSQL again
    assert log.flush() == 210
    log.close()

    reader = pg.open(readonly=True)
    try:
        assert _verify(reader).size == 210
        recs = _records(reader)
        checks = [
            r["id"]
            for r in recs
            if r["type"] == "warden.decision/v1" and r["action"]["tool"] == "t.check"
        ]
        assert checks == made  # every decision exactly once, in the order it was made
        outcomes = [r for r in recs if r["type"] == "warden.outcome/v1"]
        assert [r["status"] for r in outcomes] == ["ok"] * 70
        assert len({r["decision"] for r in outcomes}) == 70
        assert reader.latest_checkpoint() == (210, reader.checkpoints()[-1][1])
    finally:
        reader.close()


def test_a_batch_shipped_but_not_deleted_is_not_shipped_twice(pg: Backend, proxy: Proxy) -> None:
    url = proxy.url(DATABASE_URL)
    store = pg.open(url, **FAST_RETRY)
    assert isinstance(store, PostgresAuditStore)
    assert store.append_batch([_rec(0), _rec(1)]) == (0, 2)
    proxy.cut()
    assert store.append_batch([_rec(2), _rec(3), _rec(4)]) == (-1, 2)
    spool = sqlite3.connect(store.spool_path)
    row = spool.execute("SELECT namespace, uid, count, records FROM spool").fetchone()
    proxy.restore()
    _wait(lambda: store.pending() == 0 and not store.spooling, "the spool to drain")
    store.close()

    # a crash between the commit and the delete leaves the batch in the spool
    spool.execute("INSERT INTO spool (namespace, uid, count, records) VALUES (?, ?, ?, ?)", row)
    spool.commit()
    spool.close()
    again = pg.open(url, **FAST_RETRY)
    assert isinstance(again, PostgresAuditStore)
    try:
        _wait(lambda: again.pending() == 0 and not again.spooling, "the spool to drain")
        assert [r["n"] for r in _records(again)] == [0, 1, 2, 3, 4]
        assert again.append_batch([_rec(5)]) == (5, 6)
    finally:
        again.close()


def test_records_spooled_at_close_ship_when_the_log_opens_again(pg: Backend, proxy: Proxy) -> None:
    url = proxy.url(DATABASE_URL)
    log = pg.log(url=url, options={**FAST_RETRY, "drain_timeout": 0.3})
    for n in range(5):
        log.append(_rec(n))
    log.flush()
    proxy.cut()
    for n in range(5, 12):
        log.append(_rec(n))
        log.flush()  # a spooled batch each
    log.close()  # PostgreSQL is still away: the tail stays in the spool

    proxy.restore()
    store = pg.open(url, **FAST_RETRY)
    assert isinstance(store, PostgresAuditStore)
    try:
        _wait(lambda: store.pending() == 0 and not store.spooling, "the spool to drain")
        assert [r["n"] for r in _records(store)] == list(range(12))
        assert _verify(store).size == 12
    finally:
        store.close()


def test_a_spool_that_cannot_be_written_makes_the_governor_deny(
    pg: Backend, proxy: Proxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    import warden.store.postgres_audit as module

    pg.set_env(monkeypatch, proxy.url(DATABASE_URL))
    gov = Governor(POLICY, home=pg.home)
    assert gov.audit is not None
    assert gov.check(Action(tool="t.ok")).effect is Effect.ALLOW
    gov.audit.flush()

    def disk_failed(*args: Any, **kwargs: Any) -> Any:
        raise sqlite3.OperationalError("disk I/O error")

    monkeypatch.setattr(module, "write_transaction", disk_failed)
    proxy.cut()
    gov.check(Action(tool="t.ok"))  # taken before the writer learns the spool is broken
    with pytest.raises(AuditError, match="spool cannot be written"):
        gov.audit.flush(timeout=20)
    denied = gov.check(Action(tool="t.ok"))
    assert denied.effect is Effect.DENY
    assert any("audit" in r for r in denied.reasons), denied.reasons
    gov.audit.close()  # must not hang or raise
