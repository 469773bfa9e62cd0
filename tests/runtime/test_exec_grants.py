"""The policy grants a sandboxed tool its paths and network (docs/runtime.md, "Sandbox")."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from warden import Action, Governor, load_policy_text
from warden.errors import PolicyError, SandboxError
from warden.runtime.sandbox import bwrap_available

needs_bwrap = pytest.mark.skipif(
    not (os.environ.get("WARDEN_REQUIRE_BWRAP") or os.environ.get("CI")) and not bwrap_available(),
    reason="bubblewrap is not available here",
)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory the sandbox's `nobody` can reach (tmp_path is root's own when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="warden-grant-", dir="/tmp"))
    path.chmod(0o777)
    (path / "in.txt").write_text("granted data\n")
    (path / "in.txt").chmod(0o644)
    out = path / "out"
    out.mkdir()
    out.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def governor(home: Path, shared: Path) -> Governor:
    policy = f"""apiVersion: warden/v1
kind: Policy
default: deny
rules:
  - {{id: all, tool: "*", effect: allow}}
tools:
  "data.read":  {{exec: true, paths: {{read: ["{shared}"]}}}}
  "data.write": {{exec: true, paths: {{read: ["{shared}"], write: ["{shared / "out"}"]}}}}
  "data.none":  {{exec: true}}
agents:
  "bot": {{ring: 2}}
"""
    return Governor(load_policy_text(policy), home=home, audit=False)


@needs_bwrap
def test_a_tool_sees_only_the_paths_its_entry_grants(tmp_path: Path, shared: Path) -> None:
    gov = governor(tmp_path, shared)
    agent = {"id": "bot"}
    r = gov.exec(Action(tool="data.read", agent=agent), ["cat", str(shared / "in.txt")])
    assert r.ok and r.stdout == b"granted data\n"
    r = gov.exec(Action(tool="data.none", agent=agent), ["cat", str(shared / "in.txt")])
    assert not r.ok  # not granted: the sandbox's private /tmp has no such file
    target = shared / "out" / "x.txt"
    r = gov.exec(Action(tool="data.read", agent=agent), ["sh", "-c", f"echo hi > {target}"])
    assert not r.ok and not target.exists()  # read-only grant
    r = gov.exec(Action(tool="data.write", agent=agent), ["sh", "-c", f"echo hi > {target}"])
    assert r.ok and target.read_text() == "hi\n"


@needs_bwrap
def test_a_granted_path_that_is_missing_fails_closed(tmp_path: Path, shared: Path) -> None:
    gov = governor(tmp_path, shared)
    shutil.rmtree(shared)
    with pytest.raises(SandboxError):
        gov.exec(Action(tool="data.read", agent={"id": "bot"}), ["true"])


def test_paths_must_be_absolute_and_well_formed() -> None:
    head = "apiVersion: warden/v1\nkind: Policy\ndefault: deny\nrules: []\n"
    with pytest.raises(PolicyError) as info:
        load_policy_text(
            head + 'tools:\n  a: {paths: {read: ["rel/path"], exec: [1]}, network: 1}\n'
        )
    codes = sorted(d.code for d in info.value.diagnostics)
    assert codes == ["policy_invalid_value", "policy_type_error", "policy_unknown_field"]
    p = load_policy_text(head + 'tools:\n  a: {paths: {write: ["/srv/out"]}, network: true}\n')
    assert (p.tools[0].read, p.tools[0].write, p.tools[0].network) == ((), ("/srv/out",), True)
