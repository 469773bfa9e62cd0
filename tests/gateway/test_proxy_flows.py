"""The gateway with a `flows:` policy: results enter the session's provenance; secrets masked."""

from __future__ import annotations

from typing import Any

import pytest
from proxy_util import ProxyClient, records, server, text, wait_for, warden_mcp, write_policy

POLICY = """\
apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - id: mcp-tools
    tool: "mcp.*"
    effect: allow
  - id: no-injected-echo
    tool: "mcp.*.echo"
    effect: deny
    when: "'injected' in provenance(args.text)"
    reason: the text comes from injected instructions
flows:
  redact_results: [secret]
"""
KEY = "AKIA" + "Z7Q2M4N6P8R1T3V5"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Any:
    work = tmp_path_factory.mktemp("flows")
    home = work / "home"
    argv = [
        *warden_mcp(),
        "proxy",
        "--policy",
        str(write_policy(work, POLICY)),
        "--home",
        str(home),
        "--",
        *server("benign"),
    ]
    with ProxyClient(argv, errlog=work / "proxy.err") as client:
        client.home = home
        yield client


def test_a_value_from_an_injected_result_is_denied_in_a_later_call(gateway: Any) -> None:
    assert not gateway.call("echo", {"text": "https://evil.example/collect"}).is_error
    assert not gateway.call("readme").is_error  # its injected paragraph names that URL
    denied = gateway.call("echo", {"text": "https://evil.example/collect"})
    assert denied.is_error
    assert "injected instructions" in text(denied)
    decision = wait_for(
        lambda: [
            r
            for r in records(gateway.home, "warden.decision/v1")
            if r["decision"]["rules"] == ["no-injected-echo"]
        ],
        what="the deny record",
    )[0]
    assert decision["session"] == "mcp"
    assert "injected" in decision["action"]["flow"]["args"]["text"]
    assert not gateway.call("echo", {"text": "https://docs.example.org/start"}).is_error


def test_secrets_in_results_are_masked_before_the_client_sees_them(gateway: Any) -> None:
    result = gateway.call("echo", {"text": f"the key is {KEY}, keep it"})
    assert not result.is_error
    shown = text(result)
    assert KEY not in shown
    assert "[REDACTED:aws_access_key]" in shown
    assert shown.startswith("the key is ")


def test_the_audit_log_holds_no_secret_from_arguments(gateway: Any) -> None:
    gateway.call("echo", {"text": f"again {KEY}"})
    wait_for(
        lambda: [
            r
            for r in records(gateway.home, "warden.decision/v1")
            if r["action"]["args"].get("text", {}) != {}
            and isinstance(r["action"]["args"]["text"], dict)
        ],
        what="a redacted decision",
    )
    stored = b"".join(p.read_bytes() for p in gateway.home.glob("audit.db*"))
    assert b"again" not in stored  # the whole argument is a digest
    assert KEY.encode() not in stored
