"""MCP tool pins on both backends: SQLite (embedded) and PostgreSQL (fleet).

docs/mcp.md's pinning must hold whichever store keeps the pins: trust on first
use, a changed tool hidden until an operator approves the digest seen, reset
forgets. docs/fleet.md adds what only a shared store has: gateway replicas
(store instances on one namespace) see each other's pins and approvals, and a
store that does not answer hides every unpinned tool, never shows it.

The PostgreSQL tests use ``$WARDEN_TEST_DATABASE_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); each gets its own namespace,
``wt_<12 hex>``, whose tables it drops. They are skipped when PostgreSQL does not
answer, and fail instead when ``CI`` or ``WARDEN_REQUIRE_POSTGRES`` is set.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from click.testing import CliRunner

from warden.gateway.pins import Pin, PinBackend, PinError, PinStore, open_pin_store
from warden.store import FleetConfig
from warden.store.pins import PostgresPinStore

try:
    import psycopg
except ImportError:  # pragma: no cover - the fleet extra is not installed: SQLite only
    psycopg = None

DATABASE_URL = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
UNREACHABLE_URL = "postgresql://postgres@127.0.0.1:1/test"
BENIGN = Path(__file__).parent.parent / "gateway" / "servers" / "benign.py"
BENIGN_TOOLS = ["echo", "add", "slow", "fail", "lookup", "readme"]
POLICY = """\
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: mcp-tools
    tool: "mcp.*"
    effect: allow
"""


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
class Backend:
    """One backend under test: opens replicas of the pin store."""

    kind: str
    home: Path
    namespace: str = "warden"

    def store(self, clock: Callable[[], float] = lambda: 1000.0) -> PinBackend:
        """A replica: another store instance (another connection) on the same shared pins."""
        if self.kind == "sqlite":
            return PinStore(self.home / "mcp-pins.db", clock=clock)
        return PostgresPinStore(DATABASE_URL, self.namespace, clock=clock)

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
            # every table of the namespace: the gateway tests' Governors log there too
            with psycopg.connect(DATABASE_URL, autocommit=True) as db:
                rows = db.execute(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' "
                    "AND starts_with(tablename, %s)",
                    (self.namespace + "_",),
                ).fetchall()
                for (table,) in rows:
                    db.execute(f'DROP TABLE IF EXISTS "{table}"')


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
def store(backend: Backend) -> Iterator[PinBackend]:
    s = backend.store()
    try:
        yield s
    finally:
        s.close()


def pin_of(store: PinBackend, server: str, tool: str) -> Pin:
    pin = store.get(server, tool)
    assert pin is not None
    return pin


# --- the same pin behaviour on both ----------------------------------------------------------


def test_both_stores_are_pin_backends(store: PinBackend) -> None:
    assert isinstance(store, PinBackend)


def test_open_pin_store_follows_the_configuration(backend: Backend) -> None:
    store = open_pin_store(backend.home, backend.config)
    try:
        assert type(store) is (PostgresPinStore if backend.kind == "postgres" else PinStore)
        store.observe("s", {"t": "sha256:a"}, pin_new={"t"})
    finally:
        store.close()
    replica = backend.store()
    try:
        assert pin_of(replica, "s", "t").status == "pinned"
    finally:
        replica.close()


def test_open_pin_store_reads_the_environment(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_env(monkeypatch)
    store = open_pin_store(backend.home)
    try:
        assert type(store) is (PostgresPinStore if backend.kind == "postgres" else PinStore)
    finally:
        store.close()


def test_first_sight_is_new_then_pinned_then_a_change_is_changed(store: PinBackend) -> None:
    assert store.record_seen("s", "t", "sha256:a") == "new"
    assert pin_of(store, "s", "t").pinned is None
    store.pin("s", "t", "sha256:a")
    assert store.record_seen("s", "t", "sha256:a") == "pinned"
    assert store.record_seen("s", "t", "sha256:b") == "changed"
    pin = pin_of(store, "s", "t")
    assert (pin.pinned, pin.seen, pin.status) == ("sha256:a", "sha256:b", "changed")
    assert store.record_seen("s", "t", "sha256:a") == "pinned"  # changed back: shown again


def test_pin_of_a_tool_never_seen_records_it_as_seen(store: PinBackend) -> None:
    pin = store.pin("s", "t", "sha256:a", by="alice")
    assert pin == Pin("s", "t", "sha256:a", 1000.0, "alice", "sha256:a", 1000.0)
    assert store.get("s", "t") == pin
    assert store.get("s", "other") is None


def test_observe_pins_new_clean_tools_in_one_transaction(store: PinBackend) -> None:
    assert store.observe("s", {}) == {}
    got = store.observe("s", {"a": "sha256:1", "b": "sha256:2"}, pin_new={"a"})
    assert got == {"a": "new", "b": "new"}
    assert pin_of(store, "s", "a").status == "pinned"
    assert pin_of(store, "s", "a").pinned_by == "tofu"
    assert pin_of(store, "s", "b").status == "new"
    assert store.observe("s", {"a": "sha256:1", "b": "sha256:2"}) == {"a": "pinned", "b": "new"}
    # a tool seen unpinned is pinned by a later clean listing
    assert store.observe("s", {"b": "sha256:2"}, pin_new={"b"}) == {"b": "new"}
    assert pin_of(store, "s", "b").status == "pinned"


def test_an_unchanged_listing_writes_nothing(backend: Backend) -> None:
    times = iter([1.0, 2.0, 3.0])
    store = backend.store(clock=lambda: next(times))
    try:
        store.observe("s", {"a": "sha256:1"}, pin_new={"a"})
        before = store.get("s", "a")
        for _ in range(5):
            assert store.observe("s", {"a": "sha256:1"}, pin_new={"a"}) == {"a": "pinned"}
        assert store.get("s", "a") == before  # the clock was not read again: no write
    finally:
        store.close()


def test_approve_pins_the_digest_last_seen(store: PinBackend) -> None:
    store.observe("s", {"t": "sha256:a"}, pin_new={"t"})
    store.record_seen("s", "t", "sha256:b")
    pin = store.approve("s", "t", by="alice")
    assert (pin.pinned, pin.pinned_by, pin.status) == ("sha256:b", "alice", "pinned")
    assert store.record_seen("s", "t", "sha256:b") == "pinned"
    assert store.get("s", "t") == pin


def test_approve_of_a_tool_never_seen_is_refused(store: PinBackend) -> None:
    with pytest.raises(PinError, match="no tool `t` of server `s` has been seen"):
        store.approve("s", "t")
    assert store.list() == []


def test_reset_forgets_so_the_next_listing_pins_again(store: PinBackend) -> None:
    store.observe("s", {"a": "sha256:1", "b": "sha256:2"}, pin_new={"a", "b"})
    store.observe("other", {"a": "sha256:1"}, pin_new={"a"})
    assert store.reset("s", "a") == 1
    assert store.record_seen("s", "a", "sha256:9") == "new"
    assert store.reset("s") == 2
    assert store.reset("s") == 0
    assert [(p.server, p.tool) for p in store.list()] == [("other", "a")]


def test_list_orders_by_server_and_tool_bytewise(store: PinBackend) -> None:
    store.observe("b", {"z": "sha256:1", "a": "sha256:2", "B": "sha256:4", "_x": "sha256:5"})
    store.observe("a", {"m": "sha256:3"})
    store.observe("C", {"m": "sha256:3"})
    assert [(p.server, p.tool) for p in store.list()] == [
        ("C", "m"),
        ("a", "m"),
        ("b", "B"),
        ("b", "_x"),
        ("b", "a"),
        ("b", "z"),
    ]
    assert [p.tool for p in store.list("b")] == ["B", "_x", "a", "z"]
    assert store.list("none") == []


def test_unusual_names_and_digests_round_trip(store: PinBackend) -> None:
    server, tool = "srv'; DROP TABLE x; --", 'tööl \u200b"quoted"'
    store.observe(server, {tool: "sha256:é"}, pin_new={tool})
    pin = pin_of(store, server, tool)
    assert (pin.server, pin.tool, pin.pinned) == (server, tool, "sha256:é")
    assert store.reset(server, tool) == 1


# --- replicas ----------------------------------------------------------------------------------


def test_a_pin_approved_on_one_replica_is_seen_by_another(backend: Backend) -> None:
    gateway, operator = backend.store(), backend.store()
    try:
        assert gateway.observe("s", {"t": "sha256:a"}, pin_new={"t"}) == {"t": "new"}
        assert pin_of(operator, "s", "t").status == "pinned"
        assert gateway.record_seen("s", "t", "sha256:b") == "changed"  # a rug pull
        assert pin_of(operator, "s", "t").status == "changed"
        approved = operator.approve("s", "t", by="ops")
        assert approved.pinned == "sha256:b"
        assert gateway.get("s", "t") == approved
        assert gateway.record_seen("s", "t", "sha256:b") == "pinned"
        assert operator.reset("s") == 1
        assert gateway.list() == []
    finally:
        gateway.close()
        operator.close()


def test_replicas_observing_one_server_at_once_pin_each_tool_once(backend: Backend) -> None:
    tools = {f"t{i}": f"sha256:{i}" for i in range(20)}
    stores = [backend.store() for _ in range(4)]
    results: list[dict[str, str]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def listing(s: PinBackend) -> None:
        try:
            start.wait()
            results.append(dict(s.observe("s", tools, pin_new=set(tools))))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=listing, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        assert len(results) == len(stores)
        # each result is either the first listing (all new) or a later one (all pinned)
        assert all(set(r.values()) in ({"new"}, {"pinned"}) for r in results)
        pins = stores[0].list("s")
        assert len(pins) == len(tools)
        assert all(p.status == "pinned" and p.pinned_by == "tofu" for p in pins)
    finally:
        for s in stores:
            s.close()


# --- PostgreSQL only: namespaces, failure ----------------------------------------------------


def test_namespaces_do_not_share_pins(pg: Backend) -> None:
    other = Backend("postgres", pg.home, f"wt_{uuid.uuid4().hex[:12]}")
    mine, theirs = pg.store(), other.store()
    try:
        mine.observe("s", {"t": "sha256:a"}, pin_new={"t"})
        assert theirs.get("s", "t") is None
        assert theirs.list() == []
    finally:
        mine.close()
        theirs.close()
        other.drop()


def test_an_unreachable_database_is_a_pin_error_for_every_call() -> None:
    store = open_pin_store("/nonexistent", FleetConfig(database_url=UNREACHABLE_URL))
    assert isinstance(store, PostgresPinStore)  # made while the database is down: connects lazily
    calls: list[Callable[[], Any]] = [
        lambda: store.get("s", "t"),
        store.list,
        lambda: store.list("s"),
        lambda: store.record_seen("s", "t", "sha256:a"),
        lambda: store.observe("s", {"t": "sha256:a"}, pin_new={"t"}),
        lambda: store.pin("s", "t", "sha256:a"),
        lambda: store.approve("s", "t"),
        lambda: store.reset("s"),
    ]
    try:
        for call in calls:
            with pytest.raises(PinError, match=r"cannot (read|write) the pin store"):
                call()
    finally:
        store.close()


def test_a_closed_store_is_a_pin_error(pg: Backend) -> None:
    store = pg.store()
    store.observe("s", {"t": "sha256:a"})
    store.close()
    with pytest.raises(PinError, match="closed"):
        store.get("s", "t")


def test_a_bad_namespace_or_url_is_a_configuration_error() -> None:
    from warden.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="namespace"):
        PostgresPinStore(DATABASE_URL, "Bad-Name")
    with pytest.raises(ConfigurationError):
        open_pin_store("/nonexistent", FleetConfig.from_env({"WARDEN_DATABASE_URL": "mysql://x"}))


# --- the gateway and `warden mcp pins` on the configured store --------------------------------


def _gateway_listing(home: Path) -> tuple[list[str], dict[str, str]]:
    from mcp import Client

    from warden import Governor, load_policy_text
    from warden.gateway.proxy import Gateway, Upstream

    gov = Governor(load_policy_text(POLICY), home=home, audit=False)
    upstreams = [Upstream("upstream", command=(sys.executable, str(BENIGN)))]

    async def main() -> tuple[list[str], dict[str, str]]:
        gw = Gateway(gov, upstreams, home=home)
        async with gw, Client(gw.server(), cache=None) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            return names, gw.hidden()

    return anyio.run(main)


def test_the_gateway_pins_in_the_configured_store(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    backend.set_env(monkeypatch)
    names, hidden = _gateway_listing(backend.home)
    assert sorted(names) == sorted(BENIGN_TOOLS)
    assert hidden == {}
    replica = backend.store()
    try:
        pins = replica.list("upstream")
    finally:
        replica.close()
    assert sorted(p.tool for p in pins) == sorted(BENIGN_TOOLS)
    assert all(p.status == "pinned" and p.pinned_by == "tofu" for p in pins)
    assert (backend.home / "mcp-pins.db").exists() is (backend.kind == "sqlite")


def test_the_gateway_hides_every_tool_when_postgres_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARDEN_DATABASE_URL", UNREACHABLE_URL)
    monkeypatch.delenv("WARDEN_REDIS_URL", raising=False)
    names, hidden = _gateway_listing(tmp_path)
    assert names == []
    assert sorted(hidden) == sorted(BENIGN_TOOLS)
    assert all("the pin store failed" in why for why in hidden.values())
    assert not (tmp_path / "mcp-pins.db").exists()  # no fallback to the embedded store


def test_the_pins_command_uses_the_configured_store(
    backend: Backend, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden.cli.mcp import pins

    backend.set_env(monkeypatch)
    gateway = backend.store()
    try:
        gateway.observe("s", {"t": "sha256:a"}, pin_new={"t"})
        gateway.record_seen("s", "t", "sha256:b")
    finally:
        gateway.close()
    runner = CliRunner()
    home = ["--home", str(backend.home)]
    listed = runner.invoke(pins, ["list", *home, "--json"])
    assert listed.exit_code == 0, listed.output
    assert '"changed"' in listed.output
    approved = runner.invoke(pins, ["approve", "s", "t", *home, "--by", "ops"])
    assert approved.exit_code == 0, approved.output
    assert "pinned `t` of `s`: sha256:b" in approved.output
    replica = backend.store()
    try:
        assert pin_of(replica, "s", "t").pinned == "sha256:b"
    finally:
        replica.close()
    reset = runner.invoke(pins, ["reset", "s", *home])
    assert reset.exit_code == 0, reset.output
    again = runner.invoke(pins, ["reset", "s", *home])
    assert again.exit_code != 0 and "no pins of server `s`" in again.output


def test_the_pins_command_fails_when_postgres_is_unreachable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden.cli.mcp import pins

    monkeypatch.setenv("WARDEN_DATABASE_URL", UNREACHABLE_URL)
    result = CliRunner().invoke(pins, ["approve", "s", "t", "--home", str(tmp_path)])
    assert result.exit_code != 0
    assert "cannot read the pin store" in result.output  # `approve` reads the pin first
