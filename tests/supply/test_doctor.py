"""`warden doctor`: each check against a deliberately misconfigured deployment, and a clean one."""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from warden import Action, Governor
from warden.cli.doctor import doctor
from warden.identity.keys import Identity, KeyStore
from warden.runtime.sandbox import bwrap_available
from warden.supply.bom import generate_bom, sign_bom
from warden.supply.bundle import build_bundle
from warden.supply.deployment import Deployment, load_deployment
from warden.supply.doctor import HIGH_RISK_GLOBS, Finding, run_doctor

EXAMPLES = Path(__file__).parents[2] / "src" / "warden" / "examples"
IS_ROOT = os.geteuid() == 0
needs_bwrap = pytest.mark.skipif(not bwrap_available(), reason="bubblewrap cannot run here")

CLEAN = """apiVersion: warden/v1
kind: Policy
name: shop
default: deny
tools:
  "shell.*": {ring: 3, exec: true}
rules:
  - id: read
    tool: ["tickets.read", "db.read"]
    effect: allow
  - id: small-refunds
    tool: payments.refund
    when: "args.amount <= 50"
    effect: allow
  - id: large-refunds
    tool: payments.refund
    when: "args.amount > 50"
    effect: require_approval
  - id: scripts
    tool: shell.run
    when: "args.script in ['report.sh']"
    effect: allow
  - id: no-drop
    tool: db.drop*
    effect: deny
"""


def policy_text(default: str = "deny", rules: str = "") -> str:
    text = f"apiVersion: warden/v1\nkind: Policy\nname: p\ndefault: {default}\n"
    return text + "rules:\n" + (rules or "  - id: read\n    tool: db.read\n    effect: allow\n")


def deploy(tmp_path: Path, policy: str = CLEAN, *, signers: str = "") -> Deployment:
    """A manifest and its policy in ``tmp_path``; home ``tmp_path/.warden``."""
    (tmp_path / "policy.yaml").write_text(policy)
    trust = f"trust:\n  signers: [{signers}]\n" if signers else ""
    (tmp_path / "deployment.yaml").write_text(
        "apiVersion: warden/v1\nkind: Deployment\nname: shop\npolicy: policy.yaml\n"
        "home: .warden\nmodels:\n  - {name: m, provider: p, version: '1'}\n" + trust
    )
    return load_deployment(tmp_path / "deployment.yaml")


def run_once(policy: Path, home: Path) -> None:
    """What a deployment's first minutes leave in its home: an audit log, the kill store, a key."""
    gov = Governor.from_policy(policy, home=home)
    for tool in ("db.read", "db.drop_table", "tickets.read"):
        gov.check(Action(tool=tool))
    assert gov.audit is not None
    gov.audit.close()  # flushes
    gov.runtime.state.close()
    KeyStore(home / "keys").create("ops")


def by_id(findings: list[Finding], fid: str) -> list[Finding]:
    return [f for f in findings if f.id == fid]


def one(findings: list[Finding], fid: str) -> Finding:
    found = by_id(findings, fid)
    assert len(found) == 1, (fid, findings)
    return found[0]


def errors(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


@pytest.fixture(autouse=True)
def _no_supply_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads the process environment: keep this machine's settings out of it."""
    for name in ("WARDEN_DATABASE_URL", "WARDEN_REDIS_URL", "WARDEN_STRICT", "WARDEN_SIGNERS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A controlled environment: the system PATH, a key store inside tmp_path, no fleet."""
    return {"PATH": os.environ.get("PATH", os.defpath), "WARDEN_HOME": str(tmp_path / ".warden")}


# --- a clean deployment -----------------------------------------------------------------------


@needs_bwrap
def test_a_clean_deployment_has_no_errors_and_every_check_reports(
    tmp_path: Path, env: dict[str, str]
) -> None:
    dep = deploy(tmp_path)
    run_once(dep.policy, dep.home)
    findings = run_doctor(deployment=dep, env=env)
    assert errors(findings) == []
    assert [f.severity for f in findings] == ["ok"] * len(findings), findings
    ids = [f.id for f in findings]
    assert ids == [
        "policy.loaded",
        "policy.default",
        "policy.high_risk",
        "policy.approvals",
        "audit.writable",
        "audit.durable",
        "audit.verifies",
        "keys.permissions",
        "sandbox.starts",
        "runtime.store",
        "runtime.store",
    ]
    assert "3 records" in one(findings, "audit.verifies").message
    assert "2 private key files" in one(findings, "keys.permissions").message  # ops + audit key


def test_the_demo_policy_has_no_errors(tmp_path: Path, env: dict[str, str]) -> None:
    dep = deploy(tmp_path, (EXAMPLES / "support-agent.yaml").read_text())
    run_once(dep.policy, dep.home)
    findings = run_doctor(deployment=dep, env=env)
    # the demo has no `exec` tools: a sandbox that cannot start is at most a warning here
    assert errors(findings) == []


def test_doctor_changes_nothing_it_checks(tmp_path: Path, env: dict[str, str]) -> None:
    dep = deploy(tmp_path)
    run_once(dep.policy, dep.home)

    def snapshot() -> dict[str, bytes]:
        return {
            str(p.relative_to(dep.home)): p.read_bytes()
            for p in sorted(dep.home.rglob("*"))
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))
        }

    before = snapshot()
    run_doctor(deployment=dep, env=env)
    assert snapshot() == before


# --- policy -----------------------------------------------------------------------------------


def test_a_missing_policy_file_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    findings = run_doctor(policy=tmp_path / "nowhere.yaml", home=tmp_path / "h", env=env)
    f = one(findings, "policy.loaded")
    assert f.severity == "error"
    assert "nowhere.yaml" in f.message and "no such file" in f.message
    assert f.fix
    # nothing to judge without a policy: the policy checks are left out, the rest still run
    assert not by_id(findings, "policy.default") and not by_id(findings, "policy.high_risk")
    assert by_id(findings, "audit.writable")


def test_a_policy_removed_after_the_manifest_loaded_is_an_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    dep = deploy(tmp_path)
    dep.policy.unlink()
    assert one(run_doctor(deployment=dep, env=env), "policy.loaded").severity == "error"


def test_a_policy_that_does_not_load_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(rules="  - id: x\n    tool: a\n    effect: maybe\n"))
    f = one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.loaded")
    assert f.severity == "error"
    assert "p.yaml:" in f.message


def test_no_policy_at_all_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    f = one(run_doctor(home=tmp_path / "h", env=env), "policy.loaded")
    assert f.severity == "error"
    assert "--policy" in f.fix


def test_default_allow_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(default="allow"))
    findings = run_doctor(policy=path, home=tmp_path / "h", env=env)
    assert one(findings, "policy.default").severity == "error"
    risk = one(findings, "policy.high_risk")
    assert risk.severity == "error"
    assert "the default `allow`" in risk.message and "`shell.exec`" in risk.message


@pytest.mark.parametrize(
    ("rule", "named"),
    [
        ("tool: shell.*", "`shell.exec`"),
        ("tool: bank.pay", "`bank.pay`"),
        ("tool: '*'", "`shell.exec`"),
        ("{}", "`shell.exec`"),  # no `tool`: every tool
        ("tool: payments.*\n    agent: billing-*", "for the agents it names"),
        ("tool: db.delete_rows", "`db.delete_rows`"),
    ],
)
def test_an_unconditional_allow_of_a_high_risk_tool_is_an_error(
    tmp_path: Path, env: dict[str, str], rule: str, named: str
) -> None:
    rules = f"  - id: wide\n    {rule}\n    effect: allow\n".replace("    {}\n", "")
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(rules=rules))
    f = one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.high_risk")
    assert f.severity == "error", f
    assert "rule `wide` (line" in f.message and named in f.message
    assert "`when`" in f.fix


@pytest.mark.parametrize(
    "rules",
    [
        # a condition
        "  - id: pay\n    tool: bank.pay\n    when: args.amount < 10\n    effect: allow\n",
        # an approval in front of it
        "  - id: pay\n    tool: bank.*\n    effect: allow\n"
        "  - id: ask\n    tool: bank.*\n    effect: require_approval\n",
        # an unconditional deny in front of it (deny overrides allow)
        "  - id: all\n    tool: '*'\n    effect: allow\n"
        f"  - id: block\n    tool: {json.dumps(list(HIGH_RISK_GLOBS))}\n    effect: deny\n",
        # low-risk tools only
        "  - id: read\n    tool: ['db.read', 'tickets.*']\n    effect: allow\n",
    ],
)
def test_high_risk_tools_behind_a_condition_an_approval_or_a_deny_pass(
    tmp_path: Path, env: dict[str, str], rules: str
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(rules=rules))
    f = one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.high_risk")
    assert f.severity == "ok", f
    assert "tool names tried" in f.message


def test_a_deny_for_some_agents_does_not_cover_the_others(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(
        policy_text(
            rules="  - id: pay\n    tool: bank.pay\n    effect: allow\n"
            "  - id: not-bots\n    tool: bank.pay\n    agent: bot-*\n    effect: deny\n"
        )
    )
    f = one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.high_risk")
    assert f.severity == "error"


def test_destructive_tools_without_approval_or_condition_are_a_warning(
    tmp_path: Path, env: dict[str, str]
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(rules="  - id: drop\n    tool: db.drop_table\n    effect: allow\n"))
    f = one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.approvals")
    assert f.severity == "warning"
    assert "`db.drop_table`" in f.message
    assert "require_approval" in f.fix
    path.write_text(
        policy_text(
            rules="  - id: drop\n    tool: db.drop_table\n    effect: allow\n"
            "  - id: ask\n    tool: db.drop*\n    when: args.table != 'tmp'\n"
            "    effect: require_approval\n"
        )
    )
    assert (
        one(run_doctor(policy=path, home=tmp_path / "h", env=env), "policy.approvals").severity
        == "ok"
    )


# --- audit log --------------------------------------------------------------------------------


@pytest.fixture
def used_home(tmp_path: Path) -> Iterator[Path]:
    policy = tmp_path / "p.yaml"
    policy.write_text(CLEAN)
    home = tmp_path / "h"
    run_once(policy, home)
    yield home
    for p in (home, home / "audit.db"):  # let tmp_path be removed after a chmod test
        if p.exists():
            p.chmod(0o700)


def audit(tmp_path: Path, home: Path, env: dict[str, str]) -> dict[str, Finding]:
    findings = run_doctor(policy=tmp_path / "p.yaml", home=home, env=env)
    return {f.id: f for f in findings if f.id.startswith("audit.")}


def test_an_audit_log_that_cannot_be_written_is_an_error(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    log = used_home / "audit.db"
    if IS_ROOT:
        # root writes through any mode: a log that is a directory cannot be opened at all
        for side in used_home.glob("audit.db*"):
            side.unlink()
        log.mkdir()
    else:
        log.chmod(0o444)
        used_home.chmod(0o555)
    found = audit(tmp_path, used_home, env)
    assert found["audit.writable"].severity == "error", found
    assert str(log) in found["audit.writable"].message
    assert found["audit.writable"].fix
    if IS_ROOT:
        assert found["audit.verifies"].severity == "error"


@pytest.mark.skipif(IS_ROOT, reason="root writes through file modes")
def test_a_read_only_audit_log_is_an_error(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    (used_home / "audit.db").chmod(0o444)
    assert audit(tmp_path, used_home, env)["audit.writable"].severity == "error"


def test_a_log_whose_write_lock_stays_taken_is_a_warning(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    holder = sqlite3.connect(used_home / "audit.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        f = audit(tmp_path, used_home, env)["audit.writable"]
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert f.severity == "warning"
    assert "write lock" in f.message


def test_a_log_whose_signing_key_is_gone_cannot_append(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    (used_home / "audit-key.pem").unlink()
    f = audit(tmp_path, used_home, env)["audit.writable"]
    assert f.severity == "error"
    assert "signing key" in f.message and "missing" in f.message


def test_a_fresh_home_can_create_its_log(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "p.yaml").write_text(CLEAN)
    found = audit(tmp_path, tmp_path / "new-home", env)
    assert found["audit.writable"].severity == "ok"
    assert found["audit.durable"].severity == "warning"
    assert found["audit.verifies"].severity == "warning"
    assert not (tmp_path / "new-home").exists()


def test_a_log_not_in_wal_mode_is_not_durable(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    db = sqlite3.connect(used_home / "audit.db")
    assert db.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    db.close()
    f = audit(tmp_path, used_home, env)["audit.durable"]
    assert f.severity == "error"
    assert "not in WAL mode" in f.message


def test_a_tampered_log_does_not_verify(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    db = sqlite3.connect(used_home / "audit.db")
    data = db.execute("SELECT data FROM entries WHERE seq = 1").fetchone()[0]
    db.execute("UPDATE entries SET data = ? WHERE seq = 1", (data.replace(b"drop", b"dump"),))
    db.commit()
    db.close()
    found = audit(tmp_path, used_home, env)
    assert found["audit.verifies"].severity == "error"
    assert "does not verify" in found["audit.verifies"].message
    assert found["audit.writable"].severity == "ok"


# --- keys -------------------------------------------------------------------------------------


def keys_finding(tmp_path: Path, home: Path, env: dict[str, str]) -> Finding:
    return one(run_doctor(policy=tmp_path / "p.yaml", home=home, env=env), "keys.permissions")


def test_a_key_file_readable_by_others_is_an_error(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    key = used_home / "keys" / "ops.pem"
    key.chmod(0o644)
    f = keys_finding(tmp_path, used_home, env)
    assert f.severity == "error"
    assert "ops.pem" in f.message and "0644" in f.message
    assert "``" not in f.message
    assert "chmod 600" in f.fix


def test_the_audit_signing_key_is_a_key_file_too(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    (used_home / "audit-key.pem").chmod(0o640)
    f = keys_finding(tmp_path, used_home, env)
    assert f.severity == "error"
    assert "audit-key.pem" in f.message


def test_public_files_beside_the_keys_are_not_flagged(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    (used_home / "keys" / "ops.did").chmod(0o644)
    (used_home / "audit-key.pub").chmod(0o644)
    (used_home / "keys" / "ca.pem").write_text(
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    )
    (used_home / "keys" / "ca.pem").chmod(0o644)
    assert keys_finding(tmp_path, used_home, env).severity == "ok"


@pytest.mark.parametrize(("mode", "severity"), [(0o755, "warning"), (0o777, "error")])
def test_a_key_directory_wider_than_0700(
    tmp_path: Path, used_home: Path, env: dict[str, str], mode: int, severity: str
) -> None:
    (used_home / "keys").chmod(mode)
    f = keys_finding(tmp_path, used_home, env)
    assert f.severity == severity
    assert f"{mode:04o}" in f.message


def test_the_key_store_named_by_warden_home_is_checked(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    store = Path(env["WARDEN_HOME"]) / "keys"
    KeyStore(store).create("elsewhere")
    (store / "elsewhere.pem").chmod(0o604)
    f = keys_finding(tmp_path, used_home, env)
    assert f.severity == "error"
    assert "elsewhere.pem" in f.message


# --- sandbox ----------------------------------------------------------------------------------


def test_no_bubblewrap_is_an_error_when_the_policy_has_exec_tools(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "p.yaml").write_text(CLEAN)
    env["PATH"] = str(tmp_path / "no-bin")
    f = one(run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "sandbox.starts")
    assert f.severity == "error"
    assert "`bwrap` is not on PATH" in f.message and "`shell.*`" in f.message
    assert "bubblewrap" in f.fix


def test_no_bubblewrap_is_a_warning_without_exec_tools(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "p.yaml").write_text(policy_text())
    env["PATH"] = str(tmp_path / "no-bin")
    f = one(run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "sandbox.starts")
    assert f.severity == "warning"
    assert "no `exec` tools" in f.message


def test_a_bwrap_that_does_not_run_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "p.yaml").write_text(CLEAN)
    fake = tmp_path / "bin" / "bwrap"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    env["PATH"] = str(fake.parent)
    f = one(run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "sandbox.starts")
    assert f.severity == "error"
    assert "Permission denied" in f.message


@needs_bwrap
def test_a_working_bubblewrap_runs_true(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "p.yaml").write_text(CLEAN)
    f = one(run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "sandbox.starts")
    assert f.severity == "ok"
    assert "ran `true`" in f.message


# --- runtime stores ---------------------------------------------------------------------------


def test_the_kill_store_is_read_and_its_kills_counted(
    tmp_path: Path, used_home: Path, env: dict[str, str]
) -> None:
    from warden.runtime.state import RuntimeState

    with RuntimeState(used_home / "runtime.db") as state:
        state.kill("agent", "a1", "test", "me")
    stores = by_id(run_doctor(policy=tmp_path / "p.yaml", home=used_home, env=env), "runtime.store")
    assert [f.severity for f in stores] == ["ok", "ok"]
    assert "1 active kill" in stores[0].message
    assert "trust.db" in stores[1].message and "not created yet" in stores[1].message


@pytest.mark.parametrize("damage", ["directory", "garbage", "foreign"])
def test_an_unreachable_kill_store_is_an_error(
    tmp_path: Path, used_home: Path, env: dict[str, str], damage: str
) -> None:
    db = used_home / "runtime.db"
    for side in used_home.glob("runtime.db*"):
        side.unlink()
    if damage == "directory":
        db.mkdir()
    elif damage == "garbage":
        db.write_bytes(b"not a database" * 100)
    else:
        sqlite3.connect(db).execute("PRAGMA user_version=7").connection.close()
    stores = by_id(run_doctor(policy=tmp_path / "p.yaml", home=used_home, env=env), "runtime.store")
    assert stores[0].severity == "error"
    assert "runtime.db" in stores[0].message


# --- fleet ------------------------------------------------------------------------------------


def fleet(tmp_path: Path, env: dict[str, str]) -> list[Finding]:
    (tmp_path / "p.yaml").write_text(CLEAN)
    return by_id(
        run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "fleet.services"
    )


def test_fleet_services_are_checked_only_when_configured(
    tmp_path: Path, env: dict[str, str]
) -> None:
    assert fleet(tmp_path, env) == []


def test_unreachable_fleet_services_are_errors(tmp_path: Path, env: dict[str, str]) -> None:
    port = unused_port()
    env["WARDEN_DATABASE_URL"] = f"postgresql://warden:s3cret@127.0.0.1:{port}/warden"
    env["WARDEN_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    pg, redis = fleet(tmp_path, env)
    assert pg.severity == redis.severity == "error"
    assert f"127.0.0.1:{port}" in pg.message and "PostgreSQL" in pg.message
    assert "Redis" in redis.message
    assert "s3cret" not in pg.message  # credentials are never shown


def test_a_port_that_is_not_the_service_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        env["WARDEN_REDIS_URL"] = f"redis://127.0.0.1:{port}"
        # the connection is accepted by the backlog; nobody answers the PING in time
        (f,) = fleet(tmp_path, env)
    assert f.severity == "error"


def test_a_malformed_fleet_url_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    env["WARDEN_DATABASE_URL"] = "mysql://db:3306/x"
    (f,) = fleet(tmp_path, env)
    assert f.severity == "error"
    assert "not a PostgreSQL URL" in f.message


@pytest.mark.skipif(not listening(5432) or not listening(6379), reason="no local PostgreSQL/Redis")
def test_reachable_fleet_services_are_ok(tmp_path: Path, env: dict[str, str]) -> None:
    env["WARDEN_DATABASE_URL"] = "postgresql://postgres@127.0.0.1:5432/test"  # this machine's
    env["WARDEN_REDIS_URL"] = "redis://127.0.0.1:6379/0"
    pg, redis = fleet(tmp_path, env)
    assert pg.severity == redis.severity == "ok", (pg, redis)
    assert "no client library" in pg.message or "(psycopg" in pg.message


# --- BOM and bundle signatures ----------------------------------------------------------------

SIGNER = Identity.from_seed(b"d" * 32)
STRANGER = Identity.from_seed(b"e" * 32)


def test_a_bom_that_verifies_and_matches_is_ok_and_drift_is_an_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    dep = deploy(tmp_path, signers=SIGNER.did)
    bom = tmp_path / "bom.dsse.json"
    bom.write_text(json.dumps(sign_bom(generate_bom(dep), SIGNER)))
    assert one(run_doctor(deployment=dep, bom=bom, env=env), "bom.signature").severity == "ok"
    dep.policy.write_text(CLEAN + "  - id: extra\n    tool: x\n    effect: deny\n")
    f = one(run_doctor(deployment=dep, bom=bom, env=env), "bom.signature")
    assert f.severity == "error"
    assert "policy" in f.message and "differs" in f.message


def test_a_bom_signed_by_a_stranger_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    dep = deploy(tmp_path, signers=SIGNER.did)
    bom = tmp_path / "bom.dsse.json"
    bom.write_text(json.dumps(sign_bom(generate_bom(dep), STRANGER)))
    f = one(run_doctor(deployment=dep, bom=bom, env=env), "bom.signature")
    assert f.severity == "error"
    assert "does not verify" in f.message


def bundle_deployment(tmp_path: Path, signer: Identity) -> Deployment:
    src = tmp_path / "src"
    src.mkdir()
    (src / "policy.yaml").write_text(CLEAN)
    envelope = build_bundle(src, signer)
    deploy(tmp_path, signers=SIGNER.did)
    (tmp_path / "policy.bundle.json").write_text(json.dumps(envelope))
    manifest = tmp_path / "deployment.yaml"
    manifest.write_text(manifest.read_text().replace("policy.yaml", "policy.bundle.json"))
    return load_deployment(manifest)


def test_a_bundle_signed_by_a_trusted_signer_is_ok(tmp_path: Path, env: dict[str, str]) -> None:
    findings = run_doctor(deployment=bundle_deployment(tmp_path, SIGNER), env=env)
    assert one(findings, "policy.loaded").severity == "ok"
    f = one(findings, "bundle.signature")
    assert f.severity == "ok"
    assert SIGNER.did in f.message


def test_a_bundle_from_an_untrusted_signer_is_an_error(tmp_path: Path, env: dict[str, str]) -> None:
    findings = run_doctor(deployment=bundle_deployment(tmp_path, STRANGER), env=env)
    assert one(findings, "bundle.signature").severity == "error"
    assert one(findings, "policy.loaded").severity == "error"


def test_strict_mode_with_a_plain_policy_file_is_an_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    (tmp_path / "p.yaml").write_text(CLEAN)
    env["WARDEN_STRICT"] = "1"
    f = one(
        run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "bundle.signature"
    )
    assert f.severity == "error"
    assert "strict mode" in f.message
    env["WARDEN_STRICT"] = "0"
    assert (
        by_id(
            run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env), "bundle.signature"
        )
        == []
    )


# --- crashes ----------------------------------------------------------------------------------


def test_a_check_that_crashes_is_an_error_finding_and_the_others_run(
    tmp_path: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from warden.runtime import sandbox

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(sandbox.Sandbox, "run", boom)
    (tmp_path / "p.yaml").write_text(CLEAN)
    fake = tmp_path / "bin" / "bwrap"  # a bwrap on PATH, so that the check reaches run()
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    env["PATH"] = str(fake.parent)
    findings = run_doctor(policy=tmp_path / "p.yaml", home=tmp_path / "h", env=env)
    f = one(findings, "sandbox.starts")
    assert f.severity == "error"
    assert f.message == "the check crashed: RuntimeError: boom"
    assert by_id(findings, "runtime.store")  # checks after it still ran


# --- the command ------------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(doctor, list(args), catch_exceptions=False)


def test_the_command_exits_0_when_clean_and_1_on_an_error(tmp_path: Path) -> None:
    dep = deploy(tmp_path, (EXAMPLES / "support-agent.yaml").read_text())
    run_once(dep.policy, dep.home)
    clean = invoke("--deployment", str(dep.file))
    assert clean.exit_code == 0, clean.output
    lines = clean.output.splitlines()
    assert lines[0].startswith("ok    policy.loaded ")
    assert lines[-1].endswith(" ok") and " 0 failed" in lines[-1]
    dep.policy.write_text(policy_text(default="allow"))
    broken = invoke("--deployment", str(dep.file))
    assert broken.exit_code == 1
    fail = [line for line in broken.output.splitlines() if line.startswith("FAIL  policy.default")]
    assert len(fail) == 1
    after = broken.output.splitlines()[broken.output.splitlines().index(fail[0]) + 1]
    assert after.startswith(" " * 8) and "fix: write `default: deny`" in after


def test_json_output(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(policy_text(default="allow"))
    result = invoke("--policy", str(tmp_path / "p.yaml"), "--home", str(tmp_path / "h"), "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert set(data) == {"findings", "errors", "warnings"}
    for f in data["findings"]:
        assert set(f) == {"id", "severity", "message", "fix"}
        assert f["severity"] in ("ok", "warning", "error")
    assert data["errors"] == sum(f["severity"] == "error" for f in data["findings"]) >= 2
    assert data["warnings"] == sum(f["severity"] == "warning" for f in data["findings"])
    assert {"id": "policy.default", "severity": "error"}.items() <= next(
        f for f in data["findings"] if f["id"] == "policy.default"
    ).items()


def test_a_deployment_that_does_not_load_is_one_error(tmp_path: Path) -> None:
    dep = deploy(tmp_path)
    dep.policy.unlink()
    result = invoke("--deployment", str(dep.file), "--json")
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert [f["id"] for f in data["findings"]] == ["deployment.loaded"]
    assert "no such file" in data["findings"][0]["message"]


@pytest.mark.parametrize(
    "args",
    [
        ["--deployment", "d.yaml", "--policy", "p.yaml"],
        ["--policy", "p.yaml", "--bom", "bom.json"],
    ],
)
def test_usage_errors_exit_2(args: list[str]) -> None:
    assert CliRunner().invoke(doctor, args).exit_code == 2
