"""The pin store: trust on first use, rug-pull detection, approve and reset, across processes."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from warden.gateway.pins import Pin, PinError, PinStore, default_pins_path, tool_digest

SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[PinStore]:
    s = PinStore(tmp_path / "mcp-pins.db", clock=lambda: 1000.0)
    yield s
    s.close()


def pin_of(store: PinStore, server: str, tool: str) -> Pin:
    pin = store.get(server, tool)
    assert pin is not None
    return pin


def test_digest_is_sha256_of_the_jcs_form() -> None:
    # For ASCII text without floats, JCS is sorted keys and no whitespace.
    doc = {"name": "weather", "description": "Get the weather.", "inputSchema": SCHEMA}
    jcs = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    want = "sha256:" + hashlib.sha256(jcs).hexdigest()
    assert tool_digest("weather", "Get the weather.", SCHEMA) == want
    assert want == (
        "sha256:"
        + hashlib.sha256(
            b'{"description":"Get the weather.","inputSchema":{"properties":{"city":'
            b'{"type":"string"}},"required":["city"],"type":"object"},"name":"weather"}'
        ).hexdigest()
    )


def test_digest_covers_name_description_and_schema_only() -> None:
    base = tool_digest("t", "d", SCHEMA)
    assert tool_digest("t", "d", dict(reversed(list(SCHEMA.items())))) == base  # key order
    assert tool_digest("u", "d", SCHEMA) != base
    assert tool_digest("t", "d ", SCHEMA) != base
    assert tool_digest("t", "d", {**SCHEMA, "required": []}) != base
    assert tool_digest("t", None, SCHEMA) != tool_digest("t", "", SCHEMA)


def test_digest_refuses_what_jcs_cannot_encode() -> None:
    with pytest.raises(ValueError, match="canonicalised"):
        tool_digest("t", "d", {"type": "object", "maximum": 2**60})


def test_first_sight_is_new_then_pinned_then_a_change_is_changed(store: PinStore) -> None:
    assert store.record_seen("s", "t", "sha256:a") == "new"
    assert pin_of(store, "s", "t").pinned is None
    store.pin("s", "t", "sha256:a")
    assert store.record_seen("s", "t", "sha256:a") == "pinned"
    assert store.record_seen("s", "t", "sha256:b") == "changed"
    pin = store.get("s", "t")
    assert pin is not None
    assert (pin.pinned, pin.seen, pin.status) == ("sha256:a", "sha256:b", "changed")
    assert store.record_seen("s", "t", "sha256:a") == "pinned"  # changed back: shown again


def test_observe_pins_new_clean_tools_in_one_transaction(store: PinStore) -> None:
    got = store.observe("s", {"a": "sha256:1", "b": "sha256:2"}, pin_new={"a"})
    assert got == {"a": "new", "b": "new"}
    assert pin_of(store, "s", "a").status == "pinned"
    assert pin_of(store, "s", "a").pinned_by == "tofu"
    assert pin_of(store, "s", "b").status == "new"
    assert store.observe("s", {"a": "sha256:1", "b": "sha256:2"}) == {"a": "pinned", "b": "new"}


def test_an_unchanged_listing_writes_nothing(tmp_path: Path) -> None:
    times = iter([1.0, 2.0, 3.0])
    store = PinStore(tmp_path / "p.db", clock=lambda: next(times))
    try:
        store.observe("s", {"a": "sha256:1"}, pin_new={"a"})
        before = store.get("s", "a")
        for _ in range(5):
            assert store.observe("s", {"a": "sha256:1"}, pin_new={"a"}) == {"a": "pinned"}
        assert store.get("s", "a") == before  # the clock was not read again: no write
    finally:
        store.close()


def test_approve_pins_the_digest_last_seen(store: PinStore) -> None:
    store.observe("s", {"t": "sha256:a"}, pin_new={"t"})
    store.record_seen("s", "t", "sha256:b")
    pin = store.approve("s", "t", by="alice")
    assert (pin.pinned, pin.pinned_by, pin.status) == ("sha256:b", "alice", "pinned")
    assert store.record_seen("s", "t", "sha256:b") == "pinned"
    assert store.get("s", "t") == pin


def test_approve_of_a_tool_never_seen_is_refused(store: PinStore) -> None:
    with pytest.raises(PinError, match="no tool `t` of server `s` has been seen"):
        store.approve("s", "t")


def test_reset_forgets_so_the_next_listing_pins_again(store: PinStore) -> None:
    store.observe("s", {"a": "sha256:1", "b": "sha256:2"}, pin_new={"a", "b"})
    store.observe("other", {"a": "sha256:1"}, pin_new={"a"})
    assert store.reset("s", "a") == 1
    assert store.record_seen("s", "a", "sha256:9") == "new"
    assert store.reset("s") == 2
    assert store.reset("s") == 0
    assert [(p.server, p.tool) for p in store.list()] == [("other", "a")]


def test_list_orders_by_server_and_tool(store: PinStore) -> None:
    store.observe("b", {"z": "sha256:1", "a": "sha256:2"})
    store.observe("a", {"m": "sha256:3"})
    assert [(p.server, p.tool) for p in store.list()] == [("a", "m"), ("b", "a"), ("b", "z")]
    assert [p.tool for p in store.list("b")] == ["a", "z"]
    assert store.list("none") == []


def test_a_file_of_another_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "mcp-pins.db"
    db = sqlite3.connect(path)
    db.execute("PRAGMA user_version=7")
    db.close()
    with pytest.raises(PinError, match="schema version 7"):
        PinStore(path)


def test_the_default_path_is_under_warden_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_HOME", "/srv/warden")
    assert default_pins_path() == Path("/srv/warden/mcp-pins.db")


def test_another_process_sees_an_approval(tmp_path: Path) -> None:
    path = tmp_path / "mcp-pins.db"
    store = PinStore(path)
    try:
        store.observe("s", {"t": "sha256:a"}, pin_new={"t"})
        store.record_seen("s", "t", "sha256:b")
        code = (
            "import sys; from warden.gateway.pins import PinStore; "
            "s = PinStore(sys.argv[1]); print(s.approve('s', 't', by='ops').pinned)"
        )
        out = subprocess.run(
            [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "sha256:b"
        assert store.record_seen("s", "t", "sha256:b") == "pinned"
    finally:
        store.close()
