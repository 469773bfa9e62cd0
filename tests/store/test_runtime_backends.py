"""One behavioural suite for both runtime stores (docs/fleet.md, "Runtime state on Redis").

Every test taking ``backend`` runs against two ``RuntimeState`` on one SQLite
file and against two ``RedisRuntimeState`` on one fresh namespace: the same
kills, rings, listings, listeners and errors, seen from this instance and
from the other (another process, or another replica). The tests after them
are Redis's own: the key layout, entries it cannot read, and failing closed
while Redis is unreachable, cut through a TCP proxy the test controls.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis

from warden import Action, Governor, load_policy_text
from warden.errors import ActionKilled, ConfigurationError, RuntimeStateError
from warden.runtime.state import MAX_TEXT, Kill, RuntimeState
from warden.store import FleetConfig, RedisRuntimeState, RuntimeStore, open_runtime_store
from warden.store._redis import redact

REDIS_URL = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
T = TypeVar("T")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


# As the sandbox tests do with bubblewrap: skipped without Redis, except in CI where it must run.
needs_redis = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_REDIS") or os.environ.get("CI")) and not _redis_up(),
    reason=f"no Redis at {REDIS_URL} (set WARDEN_TEST_REDIS_URL)",
)


def eventually(check: Callable[[], T], timeout: float = 2.0) -> T:
    """``check()`` once it is truthy; fails after ``timeout`` seconds (a generous bound)."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: last {value!r}")
        time.sleep(0.002)


@pytest.fixture
def namespace() -> Iterator[str]:
    """A namespace of its own for one test; its keys are deleted afterwards."""
    name = f"wt_{uuid.uuid4().hex[:12]}"
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()


class Backend:
    """Instances of one store sharing their state, closed at teardown."""

    def __init__(self, kind: str, tmp_path: Path, namespace: str) -> None:
        self.kind = kind
        self._path = tmp_path / "runtime.db"
        self._namespace = namespace
        ticks = itertools.count(1_000_000)
        self.clock: Callable[[], float] = lambda: float(next(ticks))  # strictly increasing
        self.opened: list[RuntimeStore] = []
        self.a = self.open()
        self.b = self.open()

    def open(self) -> RuntimeStore:
        store: RuntimeStore
        if self.kind == "sqlite":
            store = RuntimeState(self._path, clock=self.clock)
        else:
            store = RedisRuntimeState(REDIS_URL, self._namespace, clock=self.clock)
        self.opened.append(store)
        return store

    def close(self) -> None:
        for store in self.opened:
            store.close()


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=needs_redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    namespace = request.getfixturevalue("namespace") if request.param == "redis" else "unused"
    made = Backend(request.param, tmp_path, namespace)
    yield made
    made.close()


# --- both backends ---------------------------------------------------------------------------


def test_a_kill_denies_its_target_at_once_and_nobody_else(backend: Backend) -> None:
    a = backend.a
    agent = a.kill("agent", "bot-1", "exfiltration", "alice")
    assert (agent.scope, agent.target, agent.reason, agent.by) == (
        "agent",
        "bot-1",
        "exfiltration",
        "alice",
    )
    assert a.killed("bot-1", None) == agent
    assert a.killed("bot-1", "s9") == agent
    assert a.killed("bot-2", "s9") is None
    assert a.killed(None, None) is None
    assert a.killed(["bot-1"], None) is None  # not an id
    session = a.kill("session", "s1", "runaway", "bob")
    assert a.killed("bot-2", "s1") == session
    assert a.killed(None, "s1") == session
    assert a.killed("bot-2", "s2") is None
    everything = a.kill("all", "ignored", "incident", "carol")
    assert everything.target == ""
    assert a.killed("anyone", None) == everything
    assert a.killed(None, None) == everything
    assert everything.describe() == "killed: incident (by carol)"


def test_killing_a_target_again_replaces_its_kill(backend: Backend) -> None:
    a = backend.a
    a.kill("agent", "bot-1", "first", "alice")
    second = a.kill("agent", "bot-1", "second", "bob")
    assert a.killed("bot-1", None) == second
    assert a.kills() == [second]


def test_restore_lifts_one_kill_from_either_instance(backend: Backend) -> None:
    a, b = backend.a, backend.b
    agent = a.kill("agent", "bot-1", "r", "ops")
    a.kill("session", "s1", "r", "ops")
    a.kill("all", None, "r", "ops")
    assert a.restore("all", None)
    assert a.killed("bot-2", None) is None
    assert a.restore("session", "s1")
    assert not a.restore("session", "s1")  # nothing left to lift
    assert a.killed("bot-2", "s1") is None
    assert a.killed("bot-1", None) == agent
    assert not a.restore("agent", "bot-2")
    assert b.restore("agent", "bot-1")  # the other instance lifts this one's kill
    eventually(lambda: a.killed("bot-1", None) is None)
    assert a.kills() == []


def test_a_kill_reaches_the_other_instance(backend: Backend) -> None:
    a, b = backend.a, backend.b
    assert b.killed("bot-1", None) is None
    before = b.version
    kill = a.kill("agent", "bot-1", "remote", "ops")
    assert eventually(lambda: b.killed("bot-1", None)) == kill
    assert b.version > before
    everything = a.kill("all", None, "incident", "ops")
    assert eventually(lambda: b.killed("bot-7", "s7")) == everything
    a.restore("all", None)
    eventually(lambda: b.killed("bot-7", "s7") is None)
    assert b.killed("bot-1", None) == kill


def test_a_newly_opened_instance_has_the_state_at_once(backend: Backend) -> None:
    kill = backend.a.kill("agent", "bot-1", "rogue", "ops")
    backend.a.set_ceiling("bot-1", 2, "held", "ops")
    fresh = backend.open()  # a restarted process, or a new replica
    assert fresh.killed("bot-1", None) == kill
    assert fresh.ceiling("bot-1") == 2


def test_ring_ceilings_are_set_and_demotion_only_ever_lowers_privilege(backend: Backend) -> None:
    a, b = backend.a, backend.b
    assert a.ceiling("bot-1") is None
    held = a.set_ceiling("bot-1", 1, "probation", "alice")
    assert (held.agent, held.ring, held.reason, held.by) == ("bot-1", 1, "probation", "alice")
    assert a.ceiling("bot-1") == 1
    demoted = a.demote("bot-1", "killed: x")
    assert demoted is not None
    assert (demoted.ring, demoted.by) == (3, "warden")
    assert a.ceiling("bot-1") == 3
    version = a.version
    assert a.demote("bot-1", "again") is None  # already at ring 3: nothing is written
    assert a.version == version
    other = a.demote("bot-2", "trust fell", "ops")
    assert other is not None and other.ring == 3
    a.set_ceiling("bot-1", 0, "reviewed", "bob")  # only an operator promotes
    assert a.ceiling("bot-1") == 0
    eventually(lambda: b.ceiling("bot-1") == 0 and b.ceiling("bot-2") == 3)
    assert a.ceiling(None) is None
    assert a.ceiling(7) is None


@pytest.mark.parametrize("ring", [-1, 4, "2", True, 1.0, None])
def test_a_ring_is_an_integer_from_0_to_3(backend: Backend, ring: Any) -> None:
    with pytest.raises(RuntimeStateError, match="a ring is an integer from 0 to 3"):
        backend.a.set_ceiling("bot-1", ring, "r", "me")
    assert backend.a.ceilings() == []


def test_kills_and_ceilings_are_listed_oldest_first_by_either_instance(backend: Backend) -> None:
    a, b = backend.a, backend.b
    assert a.kills() == [] and a.ceilings() == []
    k1 = a.kill("agent", "bot-1", "one", "alice")
    k2 = b.kill("session", "s1", "two", "bob")
    k3 = a.kill("all", None, "three", "carol")
    c1 = b.set_ceiling("bot-1", 3, "killed", "bob")
    c2 = a.set_ceiling("bot-2", 1, "trusted", "alice")
    for store in (a, b):
        assert store.kills() == [k1, k2, k3]
        assert store.ceilings() == [c1, c2]
    assert [k.to_dict() for k in b.kills()][2] == {
        "scope": "all",
        "target": None,
        "reason": "three",
        "by": "carol",
        "at": k3.at,
    }
    assert a.restore("session", "s1")
    assert b.kills() == [k1, k3]


def test_on_kill_listeners_hear_each_kill_once(backend: Backend) -> None:
    a, b = backend.a, backend.b
    heard_a: list[Kill] = []
    heard_b: list[Kill] = []
    a.on_kill(heard_a.extend)
    b.on_kill(heard_b.extend)
    k1 = a.kill("agent", "bot-1", "one", "ops")
    assert heard_a == [k1]  # before kill returns, in the process that killed
    eventually(lambda: heard_b == [k1])
    k2 = b.kill("session", "s1", "two", "ops")
    assert heard_b == [k1, k2]
    eventually(lambda: heard_a == [k1, k2])
    # Reloads, listings, ring changes and restores announce nothing new.
    for store in (a, b):
        store.refresh()
        store.kills()
    a.set_ceiling("bot-1", 3, "held", "ops")
    assert a.restore("agent", "bot-1")
    eventually(lambda: b.killed("bot-1", None) is None and b.ceiling("bot-1") == 3)
    time.sleep(0.2)  # room for a late duplicate to show
    assert heard_a == [k1, k2]
    assert heard_b == [k1, k2]
    # The same target killed again is a new kill; a listener added late hears only new ones.
    late: list[Kill] = []
    b.on_kill(late.extend)
    k3 = a.kill("agent", "bot-1", "again", "ops")
    eventually(lambda: heard_b == [k1, k2, k3] and late == [k3])
    assert heard_a == [k1, k2, k3]


BAD_KILLS = [
    (("agent", "", "r", "me"), "`target` must be a non-empty string"),
    (("session", "  ", "r", "me"), "`target` must be a non-empty string"),
    (("agent", None, "r", "me"), "`target` must be a non-empty string"),
    (("agent", "bot-1", "x" * (MAX_TEXT + 1), "me"), f"`reason` is longer than {MAX_TEXT}"),
    (("agent", "bot-1", "", "me"), "`reason` must be a non-empty string"),
    (("agent", "bot-1", "r", ""), "`by` must be a non-empty string"),
    (("agent", "t" * (MAX_TEXT + 1), "r", "me"), f"`target` is longer than {MAX_TEXT}"),
    (("team", "bot-1", "r", "me"), "a kill targets an agent, a session or all, not 'team'"),
]


@pytest.mark.parametrize(("args", "message"), BAD_KILLS)
def test_a_bad_kill_is_refused_and_nothing_is_stored(
    backend: Backend, args: tuple[Any, ...], message: str
) -> None:
    with pytest.raises(RuntimeStateError, match=message) as info:
        backend.a.kill(*args)
    assert "\n" not in str(info.value)
    assert backend.a.kills() == []
    assert backend.a.killed("bot-1", None) is None


def test_bad_restores_and_ceilings_are_refused(backend: Backend) -> None:
    a = backend.a
    with pytest.raises(RuntimeStateError, match="`target` must be a non-empty string"):
        a.restore("agent", "")
    with pytest.raises(RuntimeStateError, match="`agent` must be a non-empty string"):
        a.set_ceiling("", 2, "r", "me")
    with pytest.raises(RuntimeStateError, match=f"`reason` is longer than {MAX_TEXT}"):
        a.set_ceiling("bot-1", 2, "x" * (MAX_TEXT + 1), "me")
    assert a.ceilings() == []


def test_a_closed_store_refuses_everything_and_the_other_goes_on(backend: Backend) -> None:
    a, b = backend.a, backend.b
    kill = a.kill("agent", "bot-1", "r", "ops")
    with a:
        pass  # leaving `with` closes it
    a.close()  # closing twice is harmless
    calls: list[Callable[[], object]] = [
        lambda: a.kill("agent", "bot-2", "r", "ops"),
        lambda: a.restore("agent", "bot-1"),
        lambda: a.set_ceiling("bot-1", 1, "r", "ops"),
        a.kills,
        a.ceilings,
        a.refresh,
    ]
    for call in calls:
        with pytest.raises(RuntimeStateError, match="closed"):
            call()
    assert eventually(lambda: b.killed("bot-1", None)) == kill
    b.kill("agent", "bot-2", "r", "ops")
    assert [k.target for k in b.kills()] == ["bot-1", "bot-2"]


# --- choosing the backend --------------------------------------------------------------------

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


def test_embedded_mode_without_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)
    gov = Governor(POLICY, home=tmp_path, audit=False)
    assert type(gov.runtime.state) is RuntimeState
    assert Path(gov.runtime.state.path) == tmp_path / "runtime.db"
    gov.runtime.close()
    store = open_runtime_store(tmp_path, config=FleetConfig())
    assert type(store) is RuntimeState
    store.close()


def test_a_redis_url_that_does_not_parse_stops_the_governor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_REDIS_URL", "redis://127.0.0.1:notaport/0")
    with pytest.raises(ConfigurationError, match="WARDEN_REDIS_URL"):
        Governor(POLICY, home=tmp_path, audit=False)


def test_an_explicit_state_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_REDIS_URL", "redis://127.0.0.1:1/0")  # never contacted
    from warden.runtime.control import Runtime

    state = RuntimeState(tmp_path / "other.db")
    runtime = Runtime(tmp_path, POLICY, state=state)
    assert runtime.state is state
    runtime.close()


def test_the_password_never_shows() -> None:
    assert redact("redis://:hunter2@db.example:6380/2?password=x#y") == "redis://db.example:6380/2"
    assert redact("rediss://ops:hunter2@[::1]:6379/0") == "rediss://ops@[::1]:6379/0"
    assert redact("unix:///run/redis.sock?db=1") == "unix:///run/redis.sock"
    assert redact("unix://:hunter2@/run/redis.sock") == "unix:///run/redis.sock"
    assert "hunter2" not in redact("redis://:hunter2@host:port/0")


# --- Redis only ------------------------------------------------------------------------------


class Proxy:
    """A TCP forwarder to Redis on 127.0.0.1 that a test can cut and restore.

    ``cut("reset")`` closes every connection and closes new ones at once (Redis
    stopped); ``cut("silent")`` drops every byte and answers nothing while the
    connections stay open (a partition). ``restore()`` forwards again; the
    connections that lived through the cut are ended, as peers would have.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self._upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        self._mode = "open"
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, password: str | None = None) -> str:
        auth = f":{password}@" if password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            with self._lock:
                mode = self._mode
                if mode != "reset":
                    self._socks.add(client)
            if mode == "reset":
                client.close()
                continue
            if mode == "silent":
                continue  # held open, never answered
            try:
                upstream = socket.create_connection(self._upstream, timeout=2)
            except OSError:
                self._drop(client)
                continue
            upstream.settimeout(None)
            with self._lock:
                self._socks.add(upstream)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                if self._mode == "open":
                    dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src)
            self._drop(dst)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self, how: str) -> None:
        with self._lock:
            self._mode = how
            socks = list(self._socks) if how == "reset" else []
        for sock in socks:
            self._drop(sock)

    def restore(self) -> None:
        with self._lock:
            self._mode = "open"
            socks = list(self._socks)
        for sock in socks:
            self._drop(sock)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._server.shutdown(socket.SHUT_RDWR)
        self._server.close()
        self.restore()


@pytest.fixture
def proxy() -> Iterator[Proxy]:
    upstream = redis.connection.parse_url(REDIS_URL)
    made = Proxy((upstream.get("host", "127.0.0.1"), int(upstream.get("port", 6379))))
    yield made
    made.close()


def _raw() -> redis.Redis:
    return redis.Redis.from_url(REDIS_URL, decode_responses=True)


@needs_redis
def test_the_redis_layout_is_the_one_documented(namespace: str) -> None:
    raw = _raw()
    events = raw.pubsub()
    events.subscribe(f"{namespace}:events")
    assert events.get_message(timeout=2)["type"] == "subscribe"
    with RedisRuntimeState(REDIS_URL, namespace) as store:
        kill = store.kill("agent", "bot-1", "rogue", "alice")
        store.kill("session", "s1", "runaway", "bob")
        store.kill("all", None, "incident", "carol")
        ring = store.set_ceiling("bot-1", 3, "killed", "alice")
        store.restore("session", "s1")
        assert store.version == 5
    kills = raw.hgetall(f"{namespace}:kills")
    assert sorted(kills) == ["agent:bot-1", "all:*"]
    assert json.loads(kills["agent:bot-1"]) == kill.to_dict()
    assert json.loads(kills["all:*"])["target"] is None
    assert json.loads(raw.hget(f"{namespace}:rings", "bot-1")) == ring.to_dict()
    assert raw.get(f"{namespace}:version") == "5"
    published = []
    while (message := events.get_message(timeout=0.2)) is not None:
        published.append(json.loads(message["data"]))
    assert published == [
        {"type": "kill", "version": 1},
        {"type": "kill", "version": 2},
        {"type": "kill", "version": 3},
        {"type": "ring", "version": 4},
        {"type": "restore", "version": 5},
    ]
    events.close()
    raw.close()


@needs_redis
def test_changes_written_as_documented_by_anyone_are_followed(namespace: str) -> None:
    raw = _raw()
    with RedisRuntimeState(REDIS_URL, namespace) as store:
        heard: list[Kill] = []
        store.on_kill(heard.extend)
        body = {"scope": "agent", "target": "bot-1", "reason": "r", "by": "ops", "at": 5.0}
        with raw.pipeline(transaction=True) as pipe:
            pipe.hset(f"{namespace}:kills", "agent:bot-1", json.dumps(body))
            pipe.incr(f"{namespace}:version")
            pipe.execute()
        raw.publish(f"{namespace}:events", json.dumps({"type": "kill", "version": 1}))
        kill = Kill("agent", "bot-1", "r", "ops", 5.0)
        assert eventually(lambda: store.killed("bot-1", None)) == kill
        assert heard == [kill]
        raw.hset(f"{namespace}:rings", "bot-1", json.dumps({**body, "ring": 1}))
        raw.incr(f"{namespace}:version")
        raw.publish(f"{namespace}:events", "not json")  # still a reason to reload
        eventually(lambda: store.ceiling("bot-1") == 1)
    raw.close()


@needs_redis
def test_entries_that_do_not_parse_deny_what_they_name(namespace: str) -> None:
    raw = _raw()
    raw.hset(
        f"{namespace}:kills",
        mapping={"agent:bot-1": "{not json", "session:s1": json.dumps({"reason": 3}), "x": "y"},
    )
    raw.hset(f"{namespace}:rings", mapping={"bot-2": json.dumps({"ring": 9}), "bot-3": "["})
    with RedisRuntimeState(REDIS_URL, namespace) as store:
        agent = store.killed("bot-1", None)
        assert agent is not None
        assert agent.reason == "unreadable kill record `agent:bot-1`: denying"
        assert store.killed("bot-9", "s1") is not None
        assert store.killed("bot-9", "s2") is None  # a field naming nobody denies nobody
        assert store.ceiling("bot-2") == 3
        assert store.ceiling("bot-3") == 3
    raw.close()


@needs_redis
@pytest.mark.parametrize("how", ["reset", "silent"])
def test_while_redis_is_unreachable_everyone_is_denied_until_it_recovers_by_itself(
    namespace: str, proxy: Proxy, how: str
) -> None:
    cut_off = RedisRuntimeState(
        proxy.url(), namespace, timeout=0.3, heartbeat=0.2, reconnect=(0.02, 0.2)
    )
    other = RedisRuntimeState(REDIS_URL, namespace)  # a replica that keeps its connection
    try:
        heard: list[Kill] = []
        cut_off.on_kill(heard.extend)
        assert cut_off.killed("bot-1", None) is None
        cut_off.set_ceiling("bot-2", 1, "trusted", "ops")
        assert cut_off.ceiling("bot-2") == 1

        proxy.cut(how)
        outage = eventually(lambda: cut_off.killed("bot-1", None), timeout=5)
        assert (outage.scope, outage.target, outage.by) == ("all", "", "warden")
        assert outage.reason == f"runtime store unreachable ({proxy.url()}): denying"
        assert cut_off.killed(None, None) == outage
        assert cut_off.killed("bot-9", "s9") == outage
        assert cut_off.ceiling("bot-2") == 3  # the least privilege while the state is unknown
        assert cut_off.ceiling("nobody") == 3
        writes: list[Callable[[], object]] = [
            lambda: cut_off.kill("agent", "bot-8", "lost", "ops"),
            lambda: cut_off.restore("agent", "bot-1"),
            lambda: cut_off.set_ceiling("bot-2", 0, "r", "ops"),
            cut_off.kills,
            cut_off.ceilings,
            cut_off.refresh,
        ]
        for write in writes:
            with pytest.raises(RuntimeStateError, match=r"cannot (write|read) the runtime state"):
                write()
        lost = cut_off.killed("bot-8", None)
        assert lost is not None  # the unwritten kill still denies here, meanwhile
        landed = other.kill("agent", "bot-3", "during the outage", "ops")
        assert heard == []  # the outage itself cancels no call in flight

        proxy.restore()
        eventually(lambda: cut_off.killed("bot-1", None) is None, timeout=5)
        assert cut_off.killed("bot-3", None) == landed
        assert cut_off.killed("bot-8", None) is None  # it never landed: the reload says so
        assert heard == [landed]
        assert cut_off.ceiling("bot-2") == 1
        again = cut_off.kill("agent", "bot-4", "after", "ops")
        assert eventually(lambda: other.killed("bot-4", None)) == again
    finally:
        cut_off.close()
        other.close()


@needs_redis
def test_a_quiet_subscription_is_not_mistaken_for_a_lost_one(namespace: str) -> None:
    with RedisRuntimeState(REDIS_URL, namespace, heartbeat=0.05) as store:
        deadline = time.monotonic() + 1.0  # twenty heartbeats without an event
        while time.monotonic() < deadline:
            assert store.killed("bot-1", None) is None
            time.sleep(0.005)


@needs_redis
def test_a_store_opened_while_redis_is_down_denies_until_it_answers(
    namespace: str, proxy: Proxy
) -> None:
    proxy.cut("reset")
    store = RedisRuntimeState(
        proxy.url("hunter2"), namespace, timeout=0.3, heartbeat=0.2, reconnect=(0.02, 0.2)
    )
    try:
        outage = store.killed("bot-1", None)
        assert outage is not None
        assert "hunter2" not in outage.reason and "hunter2" not in store.path
        with pytest.raises(RuntimeStateError) as info:
            store.kill("agent", "bot-1", "r", "ops")
        assert "hunter2" not in str(info.value)
    finally:
        store.close()
    with RedisRuntimeState(proxy.url(), namespace, reconnect=(0.02, 0.2)) as store:
        assert store.killed("bot-1", None) is not None
        proxy.restore()
        eventually(lambda: store.killed("bot-1", None) is None, timeout=5)


# --- Governors as replicas -------------------------------------------------------------------


@pytest.fixture
def fleet_env(namespace: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("WARDEN_REDIS_URL", REDIS_URL)
    monkeypatch.setenv("WARDEN_FLEET_NAMESPACE", namespace)
    return namespace


@needs_redis
def test_a_kill_on_one_replica_denies_the_next_check_on_another(
    tmp_path: Path, fleet_env: str
) -> None:
    one = Governor(POLICY, home=tmp_path / "machine-1", audit=False)
    two = Governor(POLICY, home=tmp_path / "machine-2", audit=False)
    try:
        assert isinstance(one.runtime.state, RedisRuntimeState)
        action = Action(tool="fs.read", agent={"id": "bot-1"}, session="s1")
        eventually(lambda: two.check(action).allowed)  # subscribed and loaded
        one.runtime.kill(agent="bot-1", reason="exfiltration", by="alice")
        # Under load a late heartbeat can briefly deny everyone (fail closed, with another
        # reason): wait for the kill itself.
        eventually(lambda: two.check(action).reasons == ("killed: exfiltration (by alice)",))
        eventually(lambda: two.runtime.state.ceiling("bot-1") == 3)  # the demotion travelled
        assert two.runtime.restore(agent="bot-1", by="bob")
        eventually(lambda: one.check(action).allowed)
        assert not (tmp_path / "machine-1" / "runtime.db").exists()
    finally:
        one.runtime.close()
        two.runtime.close()


@needs_redis
def test_a_kill_on_one_replica_cancels_calls_in_flight_on_another(
    tmp_path: Path, fleet_env: str
) -> None:
    one = Governor(POLICY, home=tmp_path / "machine-1", audit=False)
    two = Governor(POLICY, home=tmp_path / "machine-2", audit=False)
    started = threading.Event()

    @two.tool("slow.fetch")
    async def fetch() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    async def main() -> None:
        with two.session("s5", agent={"id": "bot-5"}):
            task = asyncio.ensure_future(fetch())
            while not started.is_set():
                await asyncio.sleep(0.001)
            one.runtime.kill(agent="bot-5", reason="remote", by="ops")
            with pytest.raises(ActionKilled, match="remote"):
                await asyncio.wait_for(task, 2)

    try:
        asyncio.run(main())
    finally:
        one.runtime.close()
        two.runtime.close()


@needs_redis
def test_warden_kill_from_the_command_line_reaches_the_fleet(
    tmp_path: Path, fleet_env: str
) -> None:
    from click.testing import CliRunner

    from warden.cli.runtime import kill, restore
    from warden.cli.status import status

    replica = Governor(POLICY, home=tmp_path / "machine-1", audit=False)
    try:
        action = Action(tool="fs.read", agent={"id": "bot-1"}, session="s1")
        assert replica.check(action).allowed
        ops = str(tmp_path / "operator")  # another machine: nothing shared but Redis
        done = CliRunner().invoke(kill, ["bot-1", "--reason", "leak", "--home", ops])
        assert done.exit_code == 0, done.output
        eventually(lambda: not replica.check(action).allowed)
        shown = CliRunner().invoke(status, ["--home", ops, "--json"])
        assert json.loads(shown.output)["kills"][0]["target"] == "bot-1"
        back = CliRunner().invoke(restore, ["bot-1", "--home", ops])
        assert back.exit_code == 0, back.output
        eventually(lambda: replica.check(action).allowed)
        assert not (tmp_path / "operator" / "runtime.db").exists()
    finally:
        replica.runtime.close()
