"""`warden audit`: verify catches each attack in docs/audit.md, the readers filter, proofs verify.

Logs are real (Governor + AuditLog in tmp dirs); tampering edits the SQLite file directly.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from warden import Action, Governor, load_policy
from warden.audit import (
    AuditLog,
    AuditStore,
    Checkpoint,
    NoteSigner,
    NoteVerifier,
    generate_key,
    leaf_hash,
    parse_checkpoint,
    sign_checkpoint,
    verify_inclusion,
)
from warden.cli import cli

POLICY = """\
apiVersion: warden/v1
kind: Policy
name: audit-cli
default: deny
rules:
  - id: read
    tool: "db.read*"
    effect: allow
  - id: no-drop
    tool: "db.drop*"
    effect: deny
  - id: refund
    tool: pay.refund
    effect: require_approval
"""

AGENTS = ["did:key:alice", "did:key:bob", "svc-carol"]
TOOLS = ["db.read", "db.drop_table", "pay.refund", "db.read_all"]
T0 = 1_600_000_000.0  # 2020-09-13T12:26:40Z, in the past wherever the tests run
STEP = 60.0


def run(*args: str) -> Result:
    r = CliRunner().invoke(cli, ["audit", *args], catch_exceptions=False)
    assert "Traceback" not in r.output
    return r


def one_line(r: Result) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


def build(home: Path, actions: int = 12) -> list[dict[str, Any]]:
    """A closed log under ``home``; returns what each seq holds, in order."""
    policy = home.parent / "policy.yaml"
    policy.write_text(POLICY)
    clock = Clock()
    gov = Governor(load_policy(policy), home=home, clock=clock)
    made: list[dict[str, Any]] = []
    for i in range(actions):
        clock.t = T0 + i * STEP
        agent, tool, session = AGENTS[i % 3], TOOLS[i % 4], f"s{i % 2}"
        act = Action(tool=tool, args={"i": i}, agent={"id": agent}, session=session)
        d = gov.check(act)
        made.append(
            {
                "type": "decision",
                "agent": agent,
                "tool": tool,
                "session": session,
                "effect": d.effect.value,
                "time": clock.t,
            }
        )
        if d.allowed:
            status = "ok" if i % 3 else "error"
            gov.record_outcome(act, d, status, 1000, result={"i": i})
            made.append(
                {
                    "type": "outcome",
                    "agent": agent,
                    "tool": tool,
                    "session": session,
                    "status": status,
                    "time": clock.t,
                }
            )
    assert gov.audit is not None
    gov.audit.close()
    return made


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("base")
    made = build(root / "home")
    return root, made


@pytest.fixture
def log(base: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> Path:
    """A private copy of the base log; returns its audit.db."""
    shutil.copytree(base[0], tmp_path / "copy")
    return tmp_path / "copy" / "home" / "audit.db"


def sql(db: Path, statement: str, params: tuple[Any, ...] = ()) -> list[Any]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute(statement, params).fetchall()
        con.commit()
    finally:
        con.close()
    return rows


def seqs_of(r: Result) -> list[int]:
    assert r.exit_code == 0, r.output
    return [json.loads(line)["seq"] for line in r.stdout.splitlines()]


# --- verify ------------------------------------------------------------------------------------


def test_verify_ok(log: Path, base: tuple[Path, list[dict[str, Any]]]) -> None:
    n = len(base[1])
    r = run("verify", "--db", str(log))
    assert r.exit_code == 0, r.output
    pattern = (
        rf"{re.escape(str(log))}: {n} entries verified, \d+ batch(es)?, 1 checkpoint, "
        rf"\d+ nodes; root [0-9a-f]{{64}}; signed by warden/[0-9a-f]{{16}}\+[0-9a-f]{{8}} "
        rf"\(from {re.escape(str(log.with_name('audit-key.pub')))}\)"
    )
    assert re.fullmatch(pattern, r.stdout.strip()), r.stdout
    out = json.loads(run("verify", "--db", str(log), "--json").stdout)
    assert (out["ok"], out["size"], out["newest_checkpoint"]) == (True, n, n)


def test_verify_uses_home(log: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_HOME", str(log.parent))
    assert run("verify").exit_code == 0
    assert run("verify", "--home", str(log.parent.parent)).exit_code == 1


def _flip(db: Path, seq: int) -> None:
    data = bytearray(sql(db, "SELECT data FROM entries WHERE seq = ?", (seq,))[0][0])
    data[data.index(b'"seq"') + 1] ^= 0x20  # "seq" -> "Seq": still JSON, a different record
    sql(db, "UPDATE entries SET data = ? WHERE seq = ?", (bytes(data), seq))


def _swap(db: Path, a: int, b: int) -> None:
    found = sql(db, "SELECT seq, leaf, data FROM entries WHERE seq IN (?, ?)", (a, b))
    rows = {seq: (leaf, data) for seq, leaf, data in found}
    for seq, other in ((a, b), (b, a)):
        sql(db, "UPDATE entries SET leaf = ?, data = ? WHERE seq = ?", (*rows[other], seq))


def _truncate(db: Path, *, drop_batch_row: bool) -> None:
    bid, first = sql(db, "SELECT id, first_seq FROM batches ORDER BY id DESC LIMIT 1")[0]
    sql(db, "DELETE FROM entries WHERE seq >= ?", (first,))
    if drop_batch_row:
        sql(db, "DELETE FROM batches WHERE id = ?", (bid,))


@pytest.mark.parametrize(
    ("tamper", "message"),
    [
        (lambda db: _flip(db, 5), re.escape("entry 5: leaf hash does not match the record")),
        (
            lambda db: sql(db, "DELETE FROM entries WHERE seq = 5"),
            re.escape("entry 5: missing (the next stored entry is 6)"),
        ),
        (
            lambda db: _swap(db, 3, 4),
            re.escape("entry 3: the record says it is entry 4 (moved or swapped)"),
        ),
        (
            lambda db: _truncate(db, drop_batch_row=False),
            r"batch \d+ covers entries \d+\.\.\d+ but the log has \d+ entries "
            r"\(truncated, or a torn batch\)",
        ),
        (
            lambda db: _truncate(db, drop_batch_row=True),
            r"a checkpoint covers \d+ entries but the log has \d+ \(truncated\)",
        ),
        (
            lambda db: sql(db, "UPDATE entries SET data = 'text, not a blob' WHERE seq = 5"),
            ".+",
        ),
        (lambda db: sql(db, "UPDATE entries SET leaf = 7 WHERE seq = 2"), ".+"),
    ],
    ids=["byte", "deleted", "swapped", "truncated", "truncated-batch", "text", "int"],
)
def test_verify_catches_tampering(log: Path, tamper: Any, message: str) -> None:
    assert run("verify", "--db", str(log)).exit_code == 0
    tamper(log)
    r = run("verify", "--db", str(log))
    assert r.exit_code == 1
    assert r.stdout == ""
    lines = r.stderr.splitlines()
    assert re.fullmatch(re.escape(f"{log}: ") + message, lines[0]), lines
    assert len(lines) <= 2
    if len(lines) == 2:
        assert re.fullmatch(r"  (expected \S+, found \S+|expected \S+|found \S+)", lines[1])
    out = json.loads(run("verify", "--db", str(log), "--json").stdout)
    assert out["ok"] is False


def test_verify_byte_flip_reports_hashes(log: Path) -> None:
    _flip(log, 5)
    r = run("verify", "--db", str(log))
    assert r.stderr.splitlines()[1] == (
        f"  expected {leaf_hash(sql(log, 'SELECT data FROM entries WHERE seq = 5')[0][0]).hex()}, "
        f"found {sql(log, 'SELECT leaf FROM entries WHERE seq = 5')[0][0].hex()}"
    )
    out = json.loads(run("verify", "--db", str(log), "--json").stdout)
    assert out["index"] == 5


def test_verify_not_a_log(tmp_path: Path) -> None:
    junk = tmp_path / "audit.db"
    junk.write_bytes(bytes(range(256)) * 8)
    cases = {
        junk: "not a readable audit log (file is not a database)",
        tmp_path: "no audit log here",
        tmp_path / "missing.db": "no audit log here",
    }
    for path, message in cases.items():
        r = run("verify", "--db", str(path))
        assert (r.exit_code, one_line(r)) == (1, f"{path}: {message}")
    other = tmp_path / "other.db"
    sql(other, "CREATE TABLE t (x)")
    r = run("verify", "--db", str(other))
    assert (r.exit_code, one_line(r)) == (1, f"{other}: not a warden audit log (schema version 0)")


def test_verify_path_with_uri_characters(
    base: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    odd = tmp_path / "a#b?c%d"
    shutil.copytree(base[0] / "home", odd)
    assert run("verify", "--db", str(odd / "audit.db")).exit_code == 0


# --- verify --checkpoint ---------------------------------------------------------------------


def _checkpoint(log: Path, tmp_path: Path) -> Path:
    out = tmp_path / "cp.txt"
    r = run("checkpoint", "--db", str(log), "--out", str(out))
    assert r.exit_code == 0, r.output
    assert out.read_text() == r.stdout
    return out


def test_checkpoint_extended_later(log: Path, tmp_path: Path) -> None:
    cp = _checkpoint(log, tmp_path)
    size = int(cp.read_text().splitlines()[1])
    with AuditLog(log) as more:
        for i in range(7):
            more.append({"type": "test.note/v1", "i": i})
    r = run("verify", "--db", str(log), "--checkpoint", str(cp))
    assert r.exit_code == 0, r.output
    assert r.stdout.strip().endswith(f"; extends the checkpoint of size {size}")
    assert f"{size + 7} entries verified, " in r.stdout


def test_checkpoint_catches_rewritten_history(log: Path, tmp_path: Path) -> None:
    """Someone with the signing key rebuilds the log: its own checkpoints verify, ours does not."""
    cp = _checkpoint(log, tmp_path)
    size = int(cp.read_text().splitlines()[1])
    store = AuditStore(log, readonly=True)
    log_id, origin = store.meta("log_id"), store.origin
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{log}{suffix}").unlink(missing_ok=True)
    forged = AuditStore(log)
    forged.set_meta("log_id", str(log_id))
    forged.set_meta("origin", origin)
    forged.close()
    with AuditLog(log) as rewritten:  # same key file, same origin: the same signer
        for i in range(size + 3):
            rewritten.append({"type": "test.note/v1", "i": i})
    assert run("verify", "--db", str(log)).exit_code == 0  # consistent with itself
    r = run("verify", "--db", str(log), "--checkpoint", str(cp))
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0] == (
        f"{log}: the first {size} entries do not match the signed checkpoint of that size "
        "(history rewritten)"
    )


def test_checkpoint_of_a_shorter_rewrite(log: Path, tmp_path: Path) -> None:
    cp = _checkpoint(log, tmp_path)
    _truncate(log, drop_batch_row=True)  # and tidy up, so the log is consistent again:
    size = int(sql(log, "SELECT COUNT(*) FROM entries")[0][0])
    sql(log, "DELETE FROM nodes WHERE ((idx + 1) << level) > ?", (size,))
    sql(log, "DELETE FROM checkpoints")
    assert run("verify", "--db", str(log)).exit_code == 0  # only the kept checkpoint knows
    r = run("verify", "--db", str(log), "--checkpoint", str(cp))
    assert r.exit_code == 1
    assert re.fullmatch(
        re.escape(f"{log}: ")
        + r"a checkpoint covers \d+ entries but the log has \d+ \(truncated\)",
        r.stderr.splitlines()[0],
    )


def test_checkpoint_signed_by_another_key(log: Path, tmp_path: Path) -> None:
    store = AuditStore(log, readonly=True)
    origin, size, root = store.origin, store.size(), store.root()
    store.close()
    forged = tmp_path / "forged.txt"
    forged.write_text(
        sign_checkpoint(Checkpoint(origin, size, root), NoteSigner(origin, generate_key()))
    )
    r = run("verify", "--db", str(log), "--checkpoint", str(forged))
    assert r.exit_code == 1
    assert r.stderr.splitlines()[0].startswith(
        f"{log}: the given checkpoint: checkpoint has no signature by key `{origin}+"
    )


def test_checkpoint_from_another_log(log: Path, tmp_path: Path) -> None:
    other = tmp_path / "other" / "audit.db"
    with AuditLog(other) as o:
        o.append({"type": "test.note/v1"})
    note = AuditStore(other, readonly=True).latest_checkpoint()
    assert note is not None
    cp = tmp_path / "other.txt"
    cp.write_text(note[1])
    r = run("verify", "--db", str(log), "--checkpoint", str(cp))
    assert r.exit_code == 1
    assert re.fullmatch(
        re.escape(f"{log}: the given checkpoint: checkpoint origin `")
        + r"warden/[0-9a-f]{16}` is not this log's `warden/[0-9a-f]{16}`",
        r.stderr.splitlines()[0],
    )
    # and the other log's key is not this log's key
    r = run("verify", "--db", str(log), "--key", str(other.with_name("audit-key.pub")))
    assert r.exit_code == 1
    assert "the log was re-signed" in r.stderr.splitlines()[0]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello\n", "the given checkpoint: signed note has no blank line before its signatures"),
        (b"\xff\xfe\x00garbage", "the checkpoint is not valid UTF-8"),
        (None, "cannot read the checkpoint: no such file or directory"),
    ],
)
def test_checkpoint_file_that_is_not_one(
    log: Path, tmp_path: Path, content: bytes | None, message: str
) -> None:
    cp = tmp_path / "cp.txt"
    if content is not None:
        cp.write_bytes(content)
    r = run("verify", "--db", str(log), "--checkpoint", str(cp))
    assert r.exit_code == 1
    assert one_line(r).endswith(message)


def test_bad_key(log: Path) -> None:
    r = run("verify", "--db", str(log), "--key", "not+a+key")
    assert r.exit_code == 1
    assert "not a verifier key (verifier key id `a` is not 8 lowercase hex" in one_line(r)


# --- checkpoint ------------------------------------------------------------------------------


def test_checkpoint_command(log: Path, tmp_path: Path) -> None:
    before = len(sql(log, "SELECT size FROM checkpoints"))
    with AuditLog(log) as more:
        more.append({"type": "test.note/v1"})
    cp = _checkpoint(log, tmp_path)
    pub = NoteVerifier.from_string(log.with_name("audit-key.pub").read_text())
    store = AuditStore(log, readonly=True)
    parsed = parse_checkpoint(cp.read_text(), pub, store.origin)
    assert (parsed.size, parsed.root) == (store.size(), store.root())
    store.close()
    assert len(sql(log, "SELECT size FROM checkpoints")) == before + 1
    assert not list(tmp_path.glob(".cp.txt.*"))  # no temporary file left behind


def test_checkpoint_needs_the_key(log: Path, tmp_path: Path) -> None:
    key = log.with_name("audit-key.pem")
    key.unlink()
    r = run("checkpoint", "--db", str(log))
    assert (r.exit_code, one_line(r)) == (
        1,
        f"warden: error: {key}: no signing key beside the log; only the log's own key can sign",
    )
    assert not key.exists()  # never made up a new one
    r = run("checkpoint", "--db", str(tmp_path / "none.db"))
    assert r.exit_code == 1 and "no audit log here" in one_line(r)
    assert not (tmp_path / "none.db").exists()


def test_checkpoint_key_readable_by_others(log: Path) -> None:
    log.with_name("audit-key.pem").chmod(0o644)
    r = run("checkpoint", "--db", str(log))
    assert r.exit_code == 1
    assert "is readable by others (mode 0644)" in one_line(r)


# --- show and tail ---------------------------------------------------------------------------


def _want(made: list[dict[str, Any]], **f: str) -> list[int]:
    def ok(m: dict[str, Any]) -> bool:
        return (
            ("agent" not in f or fnmatchcase(m["agent"], f["agent"]))
            and ("tool" not in f or fnmatchcase(m["tool"], f["tool"]))
            and ("session" not in f or m["session"] == f["session"])
            and ("effect" not in f or m.get("effect") == f["effect"])
            and ("type" not in f or m["type"] == f["type"])
        )

    return [seq for seq, m in enumerate(made) if ok(m)]


@pytest.mark.parametrize(
    "filters",
    [
        {},
        {"agent": "did:key:*"},
        {"agent": "svc-carol"},
        {"agent": "did:key:[ab]?*"},
        {"tool": "db.read*"},
        {"tool": "pay.refund"},
        {"session": "s1"},
        {"effect": "deny"},
        {"effect": "require_approval"},
        {"type": "outcome"},
        {"type": "decision", "agent": "did:key:bob", "session": "s0"},
        {"tool": "db.*", "type": "outcome", "agent": "*a*"},
    ],
)
def test_show_and_tail_filter(
    base: tuple[Path, list[dict[str, Any]]], filters: dict[str, str]
) -> None:
    db = base[0] / "home" / "audit.db"
    want = _want(base[1], **filters)
    assert want or not filters  # every case selects something
    args = [x for k, v in filters.items() for x in (f"--{k}", v)]
    assert seqs_of(run("show", "--db", str(db), "--json", "-n", "100", *args)) == want
    assert seqs_of(run("show", "--db", str(db), "--json", "-n", "2", *args)) == want[:2]
    assert seqs_of(run("tail", "--db", str(db), "--json", "-n", "2", *args)) == want[-2:]
    assert seqs_of(run("tail", "--db", str(db), "--json", *args)) == want[-20:]


def test_since(base: tuple[Path, list[dict[str, Any]]]) -> None:
    db = base[0] / "home" / "audit.db"
    made = base[1]
    cut = T0 + 5 * STEP
    want = [seq for seq, m in enumerate(made) if m["time"] >= cut]
    assert 0 < len(want) < len(made)
    iso = datetime.fromtimestamp(cut, UTC).isoformat()
    assert seqs_of(run("show", "--db", str(db), "--json", "-n", "99", "--since", iso)) == want
    naive = datetime.fromtimestamp(cut, UTC).replace(tzinfo=None).isoformat()  # UTC, no offset
    assert seqs_of(run("show", "--db", str(db), "--json", "-n", "99", "--since", naive)) == want
    assert seqs_of(run("show", "--db", str(db), "--json", "--since", "2999-01-01")) == []
    assert seqs_of(run("tail", "--db", str(db), "--json", "--since", "1s", "-n", "99")) == []
    days = int((datetime.now(UTC).timestamp() - T0) // 86400) + 2
    assert len(
        seqs_of(run("tail", "--db", str(db), "--json", "--since", f"{days}d", "-n", "99"))
    ) == len(made)
    r = run("tail", "--db", str(db), "--since", "yesterday")
    assert r.exit_code == 2 and "`yesterday` is not an ISO 8601 time" in r.stderr


def test_show_seqs_and_table(base: tuple[Path, list[dict[str, Any]]]) -> None:
    db = base[0] / "home" / "audit.db"
    stored = dict(sql(db, "SELECT seq, data FROM entries"))
    r = run("show", "--db", str(db), "--json", "3", "1")
    assert r.stdout_bytes == stored[3] + b"\n" + stored[1] + b"\n"
    full = json.loads(run("show", "--db", str(db), "2").stdout)
    assert full == json.loads(stored[2])
    r = run("show", "--db", str(db), "99")
    assert (r.exit_code, one_line(r)) == (1, f"warden: error: {db}: no audit record 99")
    r = run("show", "--db", str(db), "3", "--agent", "x")
    assert r.exit_code == 2 and "SEQ cannot be combined with --agent" in r.stderr
    table = run("tail", "--db", str(db), "-n", "3").stdout
    assert "effect/status" in table and "did:key:" in table
    assert run("show", "--db", str(db), "--tool", "nothing").stdout.strip() == "no matching records"


def test_show_escapes_hostile_records(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    with AuditLog(db) as log_:
        log_.append(
            {
                "type": "warden.outcome/v1",
                "tool": "[bold red]x\x1b[2J",
                "agent": "a",
                "status": "ok",
            }
        )
    out = run("show", "--db", str(db)).stdout
    assert "\x1b" not in out
    assert "[bold red]x\\x1b[2J" in out


# --- prove -----------------------------------------------------------------------------------


def test_prove(log: Path) -> None:
    n = int(sql(log, "SELECT COUNT(*) FROM entries")[0][0])
    pub = NoteVerifier.from_string(log.with_name("audit-key.pub").read_text())
    origin = AuditStore(log, readonly=True).origin
    for index in (0, 7, n - 1):
        r = run("prove", str(index), "--db", str(log))
        assert r.exit_code == 0, r.output
        out = json.loads(r.stdout)
        assert (out["index"], out["size"]) == (index, n)
        raw = sql(log, "SELECT data FROM entries WHERE seq = ?", (index,))[0][0]
        assert json.loads(raw) == out["record"]
        assert out["leaf_hash"] == leaf_hash(raw).hex()
        root = bytes.fromhex(out["root"])
        verify_inclusion(leaf_hash(raw), index, n, [bytes.fromhex(h) for h in out["proof"]], root)
        cp = parse_checkpoint(out["checkpoint"], pub, origin)  # the size is pinned by this
        assert (cp.size, cp.root) == (n, root)
    out = json.loads(run("prove", "1", "--size", "3", "--db", str(log)).stdout)
    assert out["checkpoint"] is None
    verify_inclusion(
        bytes.fromhex(out["leaf_hash"]), 1, 3, [bytes.fromhex(h) for h in out["proof"]],
        bytes.fromhex(out["root"]),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-1"], "entry -1 is not in a tree of"),
        (["--", "-1"], "entry -1 is not in a tree of"),
        (["999"], "entry 999 is not in a tree of"),
        (["5", "--size", "5"], "entry 5 is not in a tree of 5 entries (0..4)"),
        (["0", "--size", "0"], "--size 0 is not between 1 and"),
        (["0", "--size", "9999"], "--size 9999 is not between 1 and"),
    ],
)
def test_prove_bad_index(log: Path, args: list[str], message: str) -> None:
    r = run("prove", "--db", str(log), *args)
    assert r.exit_code == 1
    assert message in one_line(r)


def test_prove_tampered_record_fails(log: Path) -> None:
    _flip(log, 4)
    r = run("prove", "4", "--db", str(log))
    assert r.exit_code == 1
    assert r.stdout == ""
    assert r.stderr.splitlines()[0].startswith(f"{log}: entry 4: inclusion proof for leaf 4 of ")


# --- export ----------------------------------------------------------------------------------


def test_export_jsonl_round_trips_bytes(log: Path, tmp_path: Path) -> None:
    want = b"".join(d + b"\n" for (d,) in sql(log, "SELECT data FROM entries ORDER BY seq"))
    assert run("export", "--format", "jsonl", "--db", str(log)).stdout_bytes == want
    out = tmp_path / "x.jsonl"
    r = run("export", "--format", "jsonl", "--db", str(log), "--out", str(out))
    assert r.exit_code == 0 and out.read_bytes() == want
    assert r.stderr.strip() == f"wrote {len(want.splitlines())} records to {out}"
    cut = datetime.fromtimestamp(T0 + 9 * STEP, UTC).isoformat()
    since = run("export", "--format", "jsonl", "--db", str(log), "--since", cut).stdout_bytes
    assert since and want.endswith(since) and since != want


def test_export_otel(log: Path, base: tuple[Path, list[dict[str, Any]]]) -> None:
    made = base[1]
    with AuditLog(log) as more:
        for i in range(1000):
            more.append({"type": "test.note/v1", "i": i})
    total = len(made) + 1000
    r = run("export", "--format", "otel", "--db", str(log))
    assert r.exit_code == 0, r.output
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 2
    records = []
    for req in lines:
        (rl,) = req["resourceLogs"]
        assert rl["resource"] == {
            "attributes": [{"key": "service.name", "value": {"stringValue": "warden"}}]
        }
        (sl,) = rl["scopeLogs"]
        assert sl["scope"] == {"name": "warden.audit"}
        records.extend(sl["logRecords"])
    assert [len(req["resourceLogs"][0]["scopeLogs"][0]["logRecords"]) for req in lines] == [
        1000,
        total - 1000,
    ]
    stored = [d for (d,) in sql(log, "SELECT data FROM entries ORDER BY seq")]
    for seq, (rec, data) in enumerate(zip(records, stored, strict=True)):
        assert rec["body"] == {"stringValue": data.decode()}
        attrs = {a["key"]: a["value"] for a in rec["attributes"]}
        assert attrs["warden.seq"] == {"intValue": str(seq)}
        if seq < len(made):
            m = made[seq]
            assert rec["timeUnixNano"] == str(int(m["time"]) * 10**9)
            assert attrs["warden.tool"] == {"stringValue": m["tool"]}
            assert attrs["warden.agent"] == {"stringValue": m["agent"]}
            assert attrs["warden.session"] == {"stringValue": m["session"]}
            if m["type"] == "decision":
                assert attrs["warden.effect"] == {"stringValue": m["effect"]}
                warn = m["effect"] in ("deny", "require_approval")
            else:
                assert attrs["warden.status"] == {"stringValue": m["status"]}
                warn = m["status"] == "error"
            assert (rec["severityText"], rec["severityNumber"]) == (
                ("WARN", 13) if warn else ("INFO", 9)
            )
        else:
            assert attrs["warden.type"] == {"stringValue": "test.note/v1"}
            assert rec["severityText"] == "INFO"


# --- the installed command -------------------------------------------------------------------


def test_installed_command_on_garbage(tmp_path: Path) -> None:
    junk = tmp_path / "audit.db"
    junk.write_bytes(b"\x00garbage" * 100)
    exe = Path(sys.executable).parent / "warden"
    r = subprocess.run(
        [str(exe), "audit", "verify", "--db", str(junk)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert r.returncode == 1
    assert r.stderr == f"{junk}: not a readable audit log (file is not a database)\n"
    assert "Traceback" not in r.stderr
