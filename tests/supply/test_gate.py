"""The start-up gate (docs/supply-chain.md, "The start-up gate"): enforce, warn, and the MCP
gateway's component gate with a real proxy process and real upstream servers.
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from warden.errors import ConfigurationError, SupplyChainError
from warden.gateway._config import Upstream
from warden.gateway.pins import PinStore, tool_digest
from warden.identity.keys import Identity
from warden.supply import bom as bom_module
from warden.supply.bom import generate_bom, sign_bom
from warden.supply.deployment import Deployment, load_deployment
from warden.supply.dsse import sha256_hex
from warden.supply.gate import (
    BANNER,
    BomDriftWarning,
    drift_record,
    enforce_bom,
    enforce_gateway_bom,
)

GATEWAY_TESTS = Path(__file__).resolve().parents[1] / "gateway"
sys.path.insert(0, str(GATEWAY_TESTS))
from proxy_util import (  # noqa: E402 - the gateway tests' helpers, found through sys.path
    PY,
    SERVERS,
    ProxyClient,
    records,
    run_cli,
    text,
    wait_for,
    warden_mcp,
    write_policy,
)

PACKAGES = [("requests", "2.31.0", "11" * 32), ("rich", "13.7.1", "22" * 32)]
POLICY = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\nrules: []\n"
AUTHORITY = Identity.from_seed(b"\x02" * 32)
STRANGER = Identity.from_seed(b"\x03" * 32)


def manifest(mcp: bool = False) -> str:
    return (
        "apiVersion: warden/v1\nkind: Deployment\nname: support-bot\npolicy: policy.yaml\n"
        + ("mcp: servers.yaml\n" if mcp else "")
        + "home: home\nmodels:\n  - name: claude-sonnet-4-5\n    provider: anthropic\n"
        + f"trust:\n  signers: [{AUTHORITY.did}]\n"
    )


@pytest.fixture
def fixture_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bom_module, "installed_packages", lambda: list(PACKAGES))


@pytest.fixture
def site(tmp_path: Path) -> Path:
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "deployment.yaml").write_text(manifest())
    return tmp_path


def sign(dep: Deployment, path: Path, identity: Identity = AUTHORITY) -> Path:
    path.write_text(json.dumps(sign_bom(generate_bom(dep), identity)))
    return path


def load(site: Path) -> Deployment:
    return load_deployment(site / "deployment.yaml")


EDITED = POLICY.replace("deny", "allow")
POLICY_LINE = (
    f"policy: sha256:{sha256_hex(POLICY.encode())} in the BOM, "
    f"sha256:{sha256_hex(EDITED.encode())} now (policy.yaml)"
)


# --- enforce_bom ---------------------------------------------------------------------------


@pytest.mark.usefixtures("fixture_env")
def test_a_matching_deployment_passes_in_both_modes(site: Path) -> None:
    envelope = sign(load(site), site / "bom.dsse.json")
    assert enforce_bom(load(site), envelope) == []
    stream = io.StringIO()
    assert enforce_bom(load(site), envelope, "warn", stream=stream) == []
    assert stream.getvalue() == ""


@pytest.mark.usefixtures("fixture_env")
def test_enforce_refuses_a_deployment_that_differs_with_the_whole_report(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    envelope = sign(load(site), site / "bom.dsse.json")
    (site / "policy.yaml").write_text(EDITED)
    monkeypatch.setattr(bom_module, "installed_packages", lambda: [*PACKAGES, ("evil", "1", None)])
    with pytest.raises(SupplyChainError) as caught:
        enforce_bom(load(site), envelope)
    assert str(caught.value) == "deployment `support-bot` differs from its signed BOM"
    assert caught.value.report == (POLICY_LINE, "package evil: installed, not in the BOM")


@pytest.mark.usefixtures("fixture_env")
def test_enforce_refuses_an_envelope_that_does_not_verify_or_read(site: Path) -> None:
    untrusted = sign(load(site), site / "stranger.dsse.json", STRANGER)
    with pytest.raises(SupplyChainError, match="no valid signature by a trusted signer") as caught:
        enforce_bom(load(site), untrusted)
    assert caught.value.report == (str(caught.value),)
    assert str(caught.value).startswith(f"{untrusted}: ")
    assert enforce_bom(load(site), untrusted, trusted=[STRANGER.did]) == []
    with pytest.raises(SupplyChainError, match="cannot read the signed BOM: no such file"):
        enforce_bom(load(site), site / "missing.json")
    (site / "garbage.json").write_text("{")
    with pytest.raises(SupplyChainError, match="not JSON"):
        enforce_bom(load(site), site / "garbage.json")


@pytest.mark.usefixtures("fixture_env")
def test_warn_writes_the_banner_and_report_and_raises_a_warning(site: Path) -> None:
    envelope = sign(load(site), site / "bom.dsse.json")
    (site / "policy.yaml").write_text(EDITED)
    stream = io.StringIO()
    with pytest.warns(BomDriftWarning, match="`support-bot` differs from its signed BOM"):
        lines = enforce_bom(load(site), envelope, "warn", stream=stream)
    assert lines == [POLICY_LINE]
    assert stream.getvalue().splitlines() == [BANNER, f"  {POLICY_LINE}"]
    assert BANNER == (
        "warden: WARNING: running a deployment that differs from its signed BOM "
        "(warn mode, for development only)"
    )


@pytest.mark.usefixtures("fixture_env")
def test_warn_only_warns_about_an_envelope_that_does_not_verify(site: Path) -> None:
    untrusted = sign(load(site), site / "stranger.dsse.json", STRANGER)
    stream = io.StringIO()
    with pytest.warns(BomDriftWarning):
        lines = enforce_bom(load(site), untrusted, "warn", stream=stream)
    assert len(lines) == 1 and "no valid signature by a trusted signer" in lines[0]
    assert stream.getvalue().splitlines()[0] == BANNER


def test_an_unknown_mode_is_a_configuration_error(site: Path) -> None:
    with pytest.raises(ConfigurationError, match="`enforce` or `warn`, not `audit`"):
        enforce_bom(load(site), site / "bom.dsse.json", "audit")


def test_the_drift_record() -> None:
    assert drift_record("support-bot", Path("bom.dsse.json"), ["a", "b"]) == {
        "type": "warden.bom_drift/v1",
        "deployment": "support-bot",
        "bom": "bom.dsse.json",
        "mode": "warn",
        "differences": ["a", "b"],
    }


# --- the gateway's gate, in-process ---------------------------------------------------------


@pytest.mark.usefixtures("fixture_env")
def test_the_gateway_gate_checks_packages_and_policy_and_returns_the_tools(site: Path) -> None:
    envelope = sign(load(site), site / "bom.dsse.json")
    policy = site / "policy.yaml"
    gate = enforce_gateway_bom(envelope, policy=policy, trusted=[AUTHORITY.did], packages=PACKAGES)
    assert (gate.tools, gate.report, gate.deployment, gate.signer) == (
        {},
        (),
        "support-bot",
        AUTHORITY.did,
    )
    policy.write_text(EDITED)
    with pytest.raises(SupplyChainError, match="differs from its signed BOM") as caught:
        enforce_gateway_bom(envelope, policy=policy, trusted=[AUTHORITY.did], packages=PACKAGES)
    assert caught.value.report == (POLICY_LINE,)
    with pytest.warns(BomDriftWarning):
        gate = enforce_gateway_bom(
            envelope,
            policy=policy,
            trusted=[AUTHORITY.did],
            mode="warn",
            stream=io.StringIO(),
            packages=PACKAGES,
        )
    assert gate.tools == {} and gate.report == (POLICY_LINE,)
    with pytest.raises(SupplyChainError, match="no valid signature"):
        enforce_gateway_bom(envelope, policy=policy, trusted=[STRANGER.did], packages=PACKAGES)
    with pytest.warns(BomDriftWarning):
        gate = enforce_gateway_bom(
            envelope, policy=policy, trusted=[], mode="warn", stream=io.StringIO()
        )
    assert gate.tools is None  # nothing verified: no component gate


# --- the gateway's gate, end to end ---------------------------------------------------------


def _servers_file(path: Path, servers: dict[str, list[str]]) -> Path:
    lines = ["servers:"]
    for name, argv in servers.items():
        lines += [f"  {name}:", f"    command: {json.dumps(argv)}"]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def gated(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A proxy started with a signed BOM, after the `weather` tool changed its description.

    BOM: `weather` (tools weather, clock) and `extra` (tool echo only). The
    proxy also runs `rogue`, which the BOM does not name.
    """
    work = tmp_path_factory.mktemp("gated")
    flag = work / "flag"
    weather = [PY, str(SERVERS / "rugpull.py"), str(flag)]
    extra = [PY, str(SERVERS / "benign.py")]
    write_policy(work)
    _servers_file(work / "servers.yaml", {"weather": weather, "extra": extra})
    (work / "deployment.yaml").write_text(manifest(mcp=True).replace("support-bot", "gateway-bot"))
    dep = load_deployment(work / "deployment.yaml")
    from warden.gateway.proxy import fetch_tools

    listed = anyio.run(
        lambda: fetch_tools([Upstream("weather", tuple(weather)), Upstream("extra", tuple(extra))])
    )
    with PinStore(dep.home / "mcp-pins.db") as pins:
        for server, keep in (("weather", {"weather", "clock"}), ("extra", {"echo"})):
            for t in listed[server]:
                if t.name in keep:
                    pins.pin(server, t.name, tool_digest(t.name, t.description, t.input_schema))
    envelope = sign(dep, work / "bom.dsse.json")
    flag.touch()  # now `weather` lists another description
    proxy_servers = _servers_file(
        work / "proxy-servers.yaml", {"weather": weather, "extra": extra, "rogue": extra}
    )
    argv = [
        *warden_mcp(),
        "proxy",
        "--policy",
        str(work / "policy.yaml"),
        "--home",
        str(dep.home),
        "--config",
        str(proxy_servers),
        "--bom",
        str(envelope),
        "--bom-trust",
        AUTHORITY.did,
    ]
    with ProxyClient(argv, errlog=work / "proxy.err") as client:
        client.home = dep.home
        yield client


def test_the_gateway_serves_only_what_the_signed_bom_describes(gated: Any) -> None:
    assert gated.names() == ["weather__clock", "extra__echo"]
    assert text(gated.call("weather__clock")) == "12:00"
    assert text(gated.call("extra__echo", {"text": "hi"})) == "hi"


def test_a_tool_that_changed_since_the_bom_is_hidden_with_the_reason(gated: Any) -> None:
    result = gated.call("weather__weather", {"city": "Oslo"})
    assert result.is_error
    assert text(result).startswith(
        "warden: denied: tool `weather__weather` is hidden: differs from the signed BOM "
        "(description digest sha256:"
    )
    alerts = wait_for(
        lambda: [
            r
            for r in records(gated.home, "warden.alert/v1")
            if r.get("kind") == "mcp_bom_mismatch" and r["tool"] == "weather"
        ],
        what="the BOM mismatch alert",
    )
    assert alerts[0]["signed"] != alerts[0]["seen"]


def test_a_tool_or_a_server_not_in_the_bom_is_hidden(gated: Any) -> None:
    result = gated.call("extra__add", {"a": 1, "b": 2})
    assert text(result) == "warden: denied: tool `extra__add` is hidden: not in the signed BOM"
    result = gated.call("rogue__echo", {"text": "hi"})
    assert text(result) == (
        "warden: denied: tool `rogue__echo` is hidden: server `rogue` is not in the signed BOM"
    )
    assert "server `rogue` refused: not in the signed BOM" in gated.stderr()


def _gateway_site(tmp_path: Path) -> tuple[Path, Path]:
    write_policy(tmp_path)
    (tmp_path / "deployment.yaml").write_text(manifest())
    envelope = sign(load(tmp_path), tmp_path / "bom.dsse.json")
    return tmp_path / "policy.yaml", envelope


def _proxy(policy: Path, envelope: Path, *extra: str) -> Any:
    return run_cli(
        "proxy",
        "--policy",
        str(policy),
        "--home",
        str(policy.parent / "home"),
        "--bom",
        str(envelope),
        *extra,
        "--",
        PY,
        str(SERVERS / "benign.py"),
    )


def test_the_gateway_refuses_to_start_when_the_policy_differs(tmp_path: Path) -> None:
    policy, envelope = _gateway_site(tmp_path)
    policy.write_text(policy.read_text() + "# edited\n")
    done = _proxy(policy, envelope, "--bom-trust", AUTHORITY.did)
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    assert lines[0].startswith("policy: sha256:") and lines[0].endswith(" now (policy.yaml)")
    assert lines[-1] == "warden: error: deployment `support-bot` differs from its signed BOM"


def test_the_gateway_refuses_to_start_with_an_untrusted_bom(tmp_path: Path) -> None:
    policy, envelope = _gateway_site(tmp_path)
    done = _proxy(policy, envelope, "--bom-trust", STRANGER.did)
    assert done.returncode == 1
    assert done.stderr.startswith(f"warden: error: {envelope}: no valid signature by a trusted")
    assert len(done.stderr.splitlines()) == 1
    done = _proxy(policy, envelope)
    assert done.returncode == 1
    assert done.stderr == (
        "warden: error: --bom needs --bom-trust DID: the signers whose BOMs are accepted\n"
    )


def test_the_gateway_starts_in_warn_mode_and_records_the_drift(tmp_path: Path) -> None:
    policy, envelope = _gateway_site(tmp_path)
    policy.write_text(policy.read_text() + "# edited\n")
    home = tmp_path / "home"
    argv = [
        *warden_mcp(),
        "proxy",
        "--policy",
        str(policy),
        "--home",
        str(home),
        "--bom",
        str(envelope),
        "--bom-trust",
        AUTHORITY.did,
        "--bom-mode",
        "warn",
        "--",
        PY,
        str(SERVERS / "benign.py"),
    ]
    with ProxyClient(argv, errlog=tmp_path / "proxy.err") as client:
        # the BOM names no server: the one upstream is refused, but the gateway runs
        assert client.names() == []
        assert BANNER in client.stderr()
        drift = wait_for(lambda: records(home, "warden.bom_drift/v1"), what="the drift record")
    assert drift[0]["deployment"] == "support-bot"
    assert drift[0]["differences"][0].startswith("policy: sha256:")


def test_warden_serve_refuses_to_start_when_the_policy_differs_from_its_bom(
    site: Path, fixture_env: None
) -> None:
    from click.testing import CliRunner

    from warden.cli.serve import serve

    bom = sign(load(site), site / "bom.dsse.json")
    (site / "policy.yaml").write_text(POLICY.replace("rules: []", "rules: []\n# edited"))
    args = ["--policy", str(site / "policy.yaml"), "--home", str(site / "home"),
            "--listen", "127.0.0.1:0", "--bom", str(bom), "--bom-trust", AUTHORITY.did]  # fmt: skip
    refused = CliRunner().invoke(serve, args)
    assert refused.exit_code == 1
    assert "policy: sha256:" in refused.output
    assert "differs from its signed BOM" in refused.output
    assert not (site / "home" / "audit.db").exists()  # nothing started
    untrusted = CliRunner().invoke(serve, [*args[:-1], STRANGER.did])
    assert untrusted.exit_code == 1 and "trusted signer" in untrusted.output
