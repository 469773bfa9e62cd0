"""`warden mcp scan`, `warden mcp pins` and the argument checks of `warden mcp proxy`."""

from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from proxy_util import records, run_cli, server, write_policy

from warden.cli.mcp import mcp
from warden.gateway.pins import PinStore


def invoke(*args: str) -> Result:
    return CliRunner().invoke(mcp, list(args), catch_exceptions=False)


# --- scan (real server processes) ------------------------------------------------------------


def test_scan_of_a_poisoned_server_prints_findings_and_exits_1() -> None:
    done = run_cli("scan", "--", *server("poisoned"))
    assert done.returncode == 1, done.stderr
    assert "hidden_instruction" in done.stdout
    assert "invisible_char" in done.stdout
    assert "\\u200b" in done.stdout  # the invisible character, made visible
    assert "\u200b" not in done.stdout
    assert "4 tools from `upstream`: 7 findings, 7 at or above `high`" in done.stdout


def test_scan_of_a_benign_server_exits_0() -> None:
    done = run_cli("scan", "--", *server("benign"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "6 tools from `upstream`: no findings"


def test_scan_json_parses_and_fail_on_sets_the_exit_status() -> None:
    done = run_cli("scan", "--json", "--fail-on", "critical", "--", *server("poisoned"))
    assert done.returncode == 0, done.stderr  # nothing critical in it
    data = json.loads(done.stdout)
    assert data["fail_on"] == "critical"
    assert data["failed"] is False
    assert [t["name"] for t in data["tools"]] == ["add", "search", "1ookup", "clock"]
    assert all(
        t["server"] == "upstream" and t["digest"].startswith("sha256:") for t in data["tools"]
    )
    codes = {(f["tool"], f["code"]) for f in data["findings"]}
    assert codes == {("add", "hidden_instruction"), ("search", "invisible_char")}
    assert all(
        set(f) >= {"severity", "field", "span", "excerpt", "message"} for f in data["findings"]
    )


def test_scan_of_several_servers_finds_a_typosquat_across_them(tmp_path: Path) -> None:
    config = tmp_path / "servers.yaml"
    config.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "benign": {"command": sys.executable, "args": server("benign")[1:]},
                    "poisoned": {"command": server("poisoned")},
                }
            }
        )
    )
    done = run_cli("scan", "--json", "--config", str(config))
    assert done.returncode == 1, done.stderr
    findings = json.loads(done.stdout)["findings"]
    squat = [f for f in findings if f["code"] == "typosquat"]
    assert [(f["server"], f["tool"]) for f in squat] == [("poisoned", "1ookup")]


def test_scan_of_a_server_that_cannot_start_is_one_error_line(tmp_path: Path) -> None:
    done = run_cli("scan", "--", str(tmp_path / "no-such-server"))
    assert done.returncode == 1
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("warden: error: upstream `upstream` failed: cannot connect: ")


# --- argument errors (no process started) --------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "name the upstream once"),
        (["--upstream", "http://127.0.0.1:1/mcp", "--", "python"], "name the upstream once"),
        (["--upstream", "ftp://x"], "--upstream must be an http(s) URL, not `ftp://x`"),
        (["--listen", "nowhere", "--", "python"], "--listen must be HOST:PORT"),
        (["--listen", "127.0.0.1:70000", "--", "python"], "--listen must be HOST:PORT"),
        (["--name", "a__b", "--", "python"], "must not contain `__`"),
        (["--name", "a.b", "--", "python"], "server name `a.b` must be"),
    ],
)
def test_proxy_argument_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = invoke("proxy", "--policy", str(write_policy(tmp_path)), *args)
    assert result.exit_code == 1
    assert result.stderr.startswith("warden: error: ")
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_proxy_with_a_policy_that_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: warden/v1\nkind: Policy\ndefault: maybe\nrules: []\n")
    result = invoke("proxy", "--policy", str(bad), "--", "python")
    assert result.exit_code == 1
    assert f"{bad}:3:" in result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"warden: error: policy `{bad}` did not load"


def test_a_bad_servers_file_lists_every_problem_with_its_location(tmp_path: Path) -> None:
    config = tmp_path / "servers.yaml"
    config.write_text(
        "servers:\n"
        "  ok:\n    command: [python, s.py]\n"
        "  a__b:\n    command: python\n"
        "  both:\n    command: python\n    url: http://x/mcp\n"
        "  remote:\n    url: http://x/mcp\n    args: [x]\n"
        "  typo:\n    comand: python\n"
    )
    result = invoke("proxy", "--policy", str(write_policy(tmp_path)), "--config", str(config))
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{config}:4:3: mcp_config_error: server name `a__b` must not contain `__` "
        "(it separates SERVER__TOOL)",
        f"{config}:7:5: mcp_config_error: server `both` needs exactly one of `command` or `url`",
        f"{config}:11:11: mcp_config_error: `args` applies to a `command`, not a `url`",
        f"{config}:13:5: mcp_config_error: server `typo` needs exactly one of `command` or `url`",
        f"{config}:13:5: mcp_config_error: unknown key `comand` in server `typo` "
        "(known: args, command, cwd, env, url)",
        f"warden: error: servers file `{config}` did not load",
    ]


def test_a_servers_file_that_is_not_yaml(tmp_path: Path) -> None:
    config = tmp_path / "servers.yaml"
    config.write_text("servers: [unclosed\n")
    result = invoke("scan", "--config", str(config))
    assert result.exit_code == 1
    first, last = result.stderr.splitlines()
    assert first.startswith(f"{config}:2:1: mcp_config_parse_error: ")
    assert last == f"warden: error: servers file `{config}` did not load"


# --- pins --------------------------------------------------------------------------------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "home"
    store = PinStore(home / "mcp-pins.db")
    try:
        store.observe(
            "files",
            {"read": "sha256:" + "a" * 64, "write": "sha256:" + "b" * 64},
            pin_new={"read", "write"},
        )
        store.record_seen("files", "write", "sha256:" + "c" * 64)
        store.observe("web", {"fetch": "sha256:" + "d" * 64})
    finally:
        store.close()
    return home


def test_pins_list(home: Path) -> None:
    result = invoke("pins", "list", "--home", str(home))
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    assert [line.split()[:3] for line in lines] == [
        ["files", "read", "pinned"],
        ["files", "write", "changed"],
        ["web", "fetch", "new"],
    ]
    data = json.loads(invoke("pins", "list", "--json", "--home", str(home)).stdout)
    assert {(r["tool"], r["status"]) for r in data} == {
        ("read", "pinned"),
        ("write", "changed"),
        ("fetch", "new"),
    }
    only = json.loads(
        invoke("pins", "list", "--json", "--server", "web", "--home", str(home)).stdout
    )
    assert [r["tool"] for r in only] == ["fetch"]


def test_pins_list_of_an_empty_home(tmp_path: Path) -> None:
    result = invoke("pins", "list", "--home", str(tmp_path))
    assert (result.exit_code, result.stdout) == (0, "no tools seen\n")


def test_pins_approve_pins_what_was_seen_and_records_it(home: Path) -> None:
    result = invoke("pins", "approve", "files", "write", "--home", str(home), "--by", "alice")
    assert result.exit_code == 0, result.stderr
    assert result.stdout == f"pinned `write` of `files`: sha256:{'c' * 64}\n"
    store = PinStore(home / "mcp-pins.db")
    try:
        pin = store.get("files", "write")
    finally:
        store.close()
    assert pin is not None and (pin.status, pin.pinned_by) == ("pinned", "alice")
    [record] = records(home, "warden.mcp_pin/v1")
    assert record["previous"] == "sha256:" + "b" * 64
    assert record["digest"] == "sha256:" + "c" * 64
    assert record["by"] == "alice"
    again = invoke("pins", "approve", "files", "write", "--home", str(home))
    assert again.stdout.startswith("already pinned `write` of `files`")


def test_pins_approve_of_an_unknown_tool_fails(home: Path) -> None:
    result = invoke("pins", "approve", "files", "nope", "--home", str(home))
    assert result.exit_code == 1
    assert result.stderr == "warden: error: no tool `nope` of server `files` has been seen\n"


def test_pins_reset(home: Path) -> None:
    one = invoke("pins", "reset", "files", "read", "--home", str(home), "--by", "bob")
    assert (one.exit_code, one.stdout) == (0, "forgot 1 pin of `read` of `files`\n")
    rest = invoke("pins", "reset", "files", "--home", str(home))
    assert (rest.exit_code, rest.stdout) == (0, "forgot 1 pin of server `files`\n")
    none = invoke("pins", "reset", "files", "--home", str(home))
    assert none.exit_code == 1
    assert none.stderr == "warden: error: no pins of server `files`\n"
    resets = records(home, "warden.mcp_pin_reset/v1")
    assert next((r["tool"], r["count"], r["by"]) for r in resets) == ("read", 1, "bob")
    assert len(resets) == 2


def test_proxy_on_a_port_in_use_is_one_error_line(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_cli(
            "proxy",
            "--policy",
            str(write_policy(tmp_path)),
            "--home",
            str(tmp_path / "home"),
            "--listen",
            f"127.0.0.1:{port}",
            "--",
            *server("benign"),
        )
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == (
        f"warden: error: cannot listen on `127.0.0.1:{port}`: address already in use"
    )
