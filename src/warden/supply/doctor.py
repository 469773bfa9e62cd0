"""`warden doctor`: the enforcement really in force, checked (docs/supply-chain.md).

Every check reads real state and changes none of it. The audit log is opened
the way ``AuditLog`` opens it and a write transaction is begun and rolled back
(no record is ever written); it is verified in full with ``verify_log``. Key
files are stat'ed; bubblewrap runs ``true``; the kill and trust stores are
opened without being created; fleet services are connected to. A check that
crashes becomes an error finding naming the exception: doctor itself never
fails half-way.

Finding ids are those of the spec's table. ``runtime.store`` and
``fleet.services`` give one finding per store or service. Checks that do not
apply are left out: the policy checks when no policy loaded, ``fleet.services``
without ``WARDEN_DATABASE_URL`` / ``WARDEN_REDIS_URL``, ``bom.signature``
without a BOM, ``bundle.signature`` for a plain policy file (unless strict mode
is on, which refuses one).
"""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import stat
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from warden.errors import PolicyError, SupplyChainError

if TYPE_CHECKING:
    from warden.policy.compile import CompiledRule, Policy
    from warden.supply.bundle import Bundle
    from warden.supply.deployment import Deployment

__all__ = [
    "APPROVAL_GLOBS",
    "HIGH_RISK_GLOBS",
    "HIGH_RISK_SAMPLES",
    "Finding",
    "run_doctor",
]

HIGH_RISK_GLOBS: Final = (
    "shell.*", "*.exec", "exec", "fs.write*", "file.write*", "*.delete*", "bank.*",
    "payments.*", "*.pay*", "*.transfer*", "id.*", "identity.*", "iam.*",
)  # fmt: skip
"""Shell and exec, file writes, payments, identity changes (the spec's table)."""

HIGH_RISK_SAMPLES: Final = (
    "shell.exec", "shell.run", "code.exec", "exec", "fs.write", "fs.write_file",
    "file.write", "fs.delete", "db.delete_rows", "bank.pay", "bank.transfer",
    "payments.refund", "payments.charge", "card.pay", "wallet.transfer", "id.rotate_key",
    "identity.update", "iam.set_role",
)  # fmt: skip
"""Representative tool names, tried against every rule besides the names the policy writes."""

APPROVAL_GLOBS: Final = (
    "*.delete*", "*.drop*", "*.destroy*", "*.remove*", "*.purge*", "*.truncate*", "*.wipe*",
    "bank.*", "payments.*", "*.pay*", "*.refund*", "*.transfer*", "*.charge*", "*.withdraw*",
)  # fmt: skip
"""Destructive and financial tools, which want an approval step or a condition."""

ERROR: Final = "error"
WARNING: Final = "warning"
OK: Final = "ok"

_CONNECT_SECONDS: Final = 2.0
_SQLITE_SECONDS: Final = 2.0
_LISTED: Final = 5  # names listed in one message before "and N more"
_PG_SSL_REQUEST: Final = struct.pack("!ii", 8, 80877103)
_PRIVATE_MARK: Final = b"PRIVATE KEY"
_KEY_SUFFIXES: Final = (".pem", ".key")


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's verdict: ``severity`` is ``error``, ``warning`` or ``ok``; ``fix`` says what
    to do (empty when ok)."""

    id: str
    severity: str
    message: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"id": self.id, "severity": self.severity, "message": self.message, "fix": self.fix}


@dataclass(slots=True)
class _Context:
    deployment: Deployment | None
    policy_path: Path | None
    home: Path
    bom: Path | None
    env: Mapping[str, str]
    policy: Policy | None = None
    bundle: Bundle | None = None
    bundle_error: SupplyChainError | None = None
    is_bundle: bool = False

    @property
    def signers(self) -> tuple[str, ...]:
        """The signers a Governor trusts here: the manifest's, else ``$WARDEN_SIGNERS``."""
        if self.deployment is not None and self.deployment.signers:
            return self.deployment.signers
        raw = self.env.get("WARDEN_SIGNERS", "")
        return tuple(dict.fromkeys(s.strip() for s in raw.split(",") if s.strip()))


def run_doctor(
    *,
    deployment: Deployment | None = None,
    policy: str | os.PathLike[str] | None = None,
    home: str | os.PathLike[str] | None = None,
    bom: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> list[Finding]:
    """Run every check, in the spec's order; never raises for what it finds.

    ``home`` defaults to the deployment's, else ``$WARDEN_HOME`` (from ``env``), else
    ``.warden``. ``env`` (default: the process environment) supplies ``PATH`` (where
    ``bwrap`` is looked up), ``WARDEN_STRICT``, ``WARDEN_SIGNERS`` and the fleet URLs.
    """
    from warden.errors import ConfigurationError

    if deployment is not None and policy is not None:
        raise ConfigurationError("give a deployment or a policy, not both")
    environ: Mapping[str, str] = os.environ if env is None else env
    if home is not None:
        home_path = Path(home)
    elif deployment is not None:
        home_path = deployment.home
    else:
        home_path = Path(environ.get("WARDEN_HOME") or ".warden")
    if deployment is not None:
        policy_path: Path | None = deployment.policy
    else:
        policy_path = Path(policy) if policy is not None else None
    ctx = _Context(
        deployment=deployment,
        policy_path=policy_path,
        home=home_path,
        bom=Path(bom) if bom is not None else None,
        env=environ,
    )
    findings: list[Finding] = []
    for check_id, check in _CHECKS:
        try:
            findings.extend(check(ctx))
        except Exception as exc:  # noqa: BLE001 - a crashing check must not hide the others
            findings.append(
                Finding(
                    check_id,
                    ERROR,
                    f"the check crashed: {type(exc).__name__}: {exc}",
                    "this is a bug in `warden doctor`; check what it names by hand meanwhile",
                )
            )
    return findings


# --- small helpers ----------------------------------------------------------------------------


def _listed(names: Sequence[str], *, quote: bool = True) -> str:
    shown = ", ".join(f"`{n}`" if quote else n for n in names[:_LISTED])
    more = len(names) - _LISTED
    return shown + (f" and {more} more" if more > 0 else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _why(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        return (exc.strerror or str(exc)).lower()
    return str(exc)


def _nearest_dir(path: Path) -> Path | None:
    """``path`` or its nearest existing ancestor, when that is a directory."""
    for p in (path, *path.parents):
        if p.exists():
            return p if p.is_dir() else None
    return None


def _creatable(path: Path) -> tuple[bool, Path | None]:
    """Whether ``path`` (missing) could be created: its nearest existing directory is writable."""
    where = _nearest_dir(path.parent)
    return where is not None and os.access(where, os.W_OK | os.X_OK), where


def _missing(path: Path) -> bool:
    return not path.exists() and not path.is_symlink()


def _open_rw(path: Path) -> sqlite3.Connection:
    """An existing SQLite file, read-write, never created (``mode=rw``)."""
    uri = path.absolute().as_uri() + "?mode=rw"
    return sqlite3.connect(uri, uri=True, isolation_level=None, timeout=_SQLITE_SECONDS)


def _write_lock(db: sqlite3.Connection) -> None:
    """Take the write lock and let it go: proves a write could commit, writes nothing."""
    db.execute("BEGIN IMMEDIATE")
    db.execute("ROLLBACK")


# --- policy -----------------------------------------------------------------------------------


def _policy_loaded(ctx: _Context) -> list[Finding]:
    fid = "policy.loaded"
    path = ctx.policy_path
    if path is None:
        return [
            Finding(
                fid,
                ERROR,
                "no policy given: nothing says what agents may do",
                "pass `--deployment FILE` or `--policy FILE`",
            )
        ]
    from warden.policy import load_policy
    from warden.supply.bundle import is_bundle, policy_of, read_bundle

    ctx.is_bundle = is_bundle(path)
    try:
        if ctx.is_bundle:
            try:
                ctx.bundle = read_bundle(path, ctx.signers)
            except SupplyChainError as exc:
                ctx.bundle_error = exc
                return [
                    Finding(
                        fid,
                        ERROR,
                        f"bundle `{path}` does not verify, so no policy loads from it",
                        "see `bundle.signature`",
                    )
                ]
            loaded = policy_of(ctx.bundle)
        else:
            loaded = load_policy(path)
    except PolicyError as exc:
        return [
            Finding(
                fid,
                ERROR,
                f"the policy does not load: {exc}",
                f"run `warden policy check {path}` for every problem, and fix them",
            )
        ]
    ctx.policy = loaded
    return [
        Finding(
            fid,
            OK,
            f"`{loaded.name}` loaded from `{path}` ({_plural(len(loaded.rules), 'rule')}, "
            f"default `{loaded.default.value}`, {loaded.hash})",
        )
    ]


def _policy_default(ctx: _Context) -> list[Finding]:
    from warden.action import Effect

    policy = ctx.policy
    if policy is None:
        return []
    if policy.default is Effect.ALLOW:
        return [
            Finding(
                "policy.default",
                ERROR,
                "the policy allows by default: any action no rule denies is allowed",
                "write `default: deny` and allow what agents need",
            )
        ]
    return [Finding("policy.default", OK, "default `deny`: what no rule allows is denied")]


def _instances(pattern: str) -> list[str]:
    """Names a glob matches, for trying it against other globs (``*`` as "" and as "x")."""
    from warden._re import is_literal

    if is_literal(pattern):
        return [pattern]
    if "[" in pattern:
        return []
    return list(dict.fromkeys(pattern.replace("?", "x").replace("*", f) for f in ("", "x")))


def _policy_names(policy: Policy) -> list[str]:
    """Tool names the policy itself writes (rules, ``tools:``, budgets), glob instances included."""
    patterns: list[str] = []
    for rule in policy.rules:
        patterns.extend(rule.spec.tools or ())
    patterns.extend(t.pattern for t in policy.tools)
    for budget in policy.budgets:
        patterns.extend(budget.tools or ())
    names: dict[str, None] = {}
    for p in patterns:
        names.update(dict.fromkeys(_instances(p)))
    names.pop("", None)
    return list(names)


def _matcher(globs: Iterable[str]) -> Callable[[str], bool]:
    from warden._re import compile_glob, search

    compiled = [compile_glob(g) for g in globs]
    return lambda name: any(search(rx, name) for rx in compiled)


@dataclass(slots=True)
class _Reach:
    """How a tool name fares under a policy, over every action kind."""

    blocked: bool = True  # an unconditional deny or approval applies to every agent
    bare_allows: list[CompiledRule] = field(default_factory=list)
    conditional_allow: bool = False
    approval: bool = False
    by_default: bool = False  # reaches the default with nothing in the way


def _reach(policy: Policy, name: str) -> _Reach:
    from warden.action import KINDS, Effect

    out = _Reach()
    for kind in sorted(KINDS):
        deny, approve, allow, _, _ = policy.candidates(name, kind)
        if approve:
            out.approval = True
        if any(r.when is None and r.agent_match is None for r in (*deny, *approve)):
            continue
        out.blocked = False
        for rule in allow:
            if rule.when is None:
                if rule not in out.bare_allows:
                    out.bare_allows.append(rule)
            else:
                out.conditional_allow = True
        if policy.default is Effect.ALLOW:
            out.by_default = True
    return out


def _policy_high_risk(ctx: _Context) -> list[Finding]:
    fid = "policy.high_risk"
    policy = ctx.policy
    if policy is None:
        return []
    risky = _matcher(HIGH_RISK_GLOBS)
    names = [n for n in dict.fromkeys((*HIGH_RISK_SAMPLES, *_policy_names(policy))) if risky(n)]
    by_rule: dict[str, tuple[CompiledRule, list[str]]] = {}
    by_default: list[str] = []
    for name in names:
        reach = _reach(policy, name)
        if reach.blocked:
            continue
        for rule in reach.bare_allows:
            by_rule.setdefault(rule.id, (rule, []))[1].append(name)
        if reach.by_default:
            by_default.append(name)
    if not by_rule and not by_default:
        return [
            Finding(
                fid,
                OK,
                "no shell, exec, file-write, payment or identity tool is allowed without a "
                f"condition or an approval ({_plural(len(names), 'tool name')} tried)",
            )
        ]
    parts = []
    for rule, hits in by_rule.values():
        scope = " for the agents it names" if rule.agent_match is not None else ""
        parts.append(
            f"rule `{rule.id}` (line {rule.spec.line}) allows {_listed(hits)}{scope} "
            "with no condition"
        )
    if by_default:
        parts.append(f"the default `allow` lets {_listed(by_default)} through")
    return [
        Finding(
            fid,
            ERROR,
            "high-risk tools are allowed without a condition or an approval: " + "; ".join(parts),
            "give those allow rules a `when` condition, or put a `require_approval` or `deny` "
            "rule in front of these tools",
        )
    ]


def _policy_approvals(ctx: _Context) -> list[Finding]:
    fid = "policy.approvals"
    policy = ctx.policy
    if policy is None:
        return []
    sensitive = _matcher(APPROVAL_GLOBS)
    names = [n for n in _policy_names(policy) if sensitive(n)]
    if not names:
        return [Finding(fid, OK, "the policy names no destructive or financial tool")]
    ungated = []
    for name in names:
        reach = _reach(policy, name)
        # allowed only under a condition, or never: gated; allowed bare or by default: not
        if not reach.blocked and not reach.approval and (reach.bare_allows or reach.by_default):
            ungated.append(name)
    if ungated:
        return [
            Finding(
                fid,
                WARNING,
                f"destructive or financial tools run with neither an approval step nor a "
                f"condition: {_listed(ungated)}",
                "add a `require_approval` rule for them, or a `when` condition to the rule "
                "that allows them",
            )
        ]
    return [
        Finding(
            fid,
            OK,
            f"{_plural(len(names), 'destructive or financial tool')} the policy names "
            "are denied, need an approval, or are allowed only under a condition",
        )
    ]


# --- audit log --------------------------------------------------------------------------------


def _audit_path(ctx: _Context) -> Path:
    return ctx.home / "audit.db"


def _no_log_yet(fid: str, path: Path, what: str) -> Finding:
    return Finding(
        fid,
        WARNING,
        f"no audit log yet at `{path}`: {what} is checked once it exists",
        "start the deployment once (its first decision creates the log), then run doctor again",
    )


def _audit_key_problem(path: Path, db: sqlite3.Connection) -> str | None:
    """Why ``AuditLog`` would refuse its signing key (``audit-key.pem`` beside the log), if so."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    from warden.audit import NoteSigner

    meta = dict(db.execute("SELECT key, value FROM meta WHERE key IN ('origin', 'verifier')"))
    recorded, origin = meta.get("verifier"), meta.get("origin")
    key_file = path.with_name(path.stem + "-key.pem")
    try:
        st = os.stat(key_file)
    except FileNotFoundError:
        if recorded is None:
            return None  # made on first open
        return (
            f"its signing key `{key_file}` is missing: a Governor would make a new one, "
            "which this log refuses"
        )
    if not stat.S_ISREG(st.st_mode):
        return f"its signing key `{key_file}` is not a file"
    if st.st_mode & 0o077:
        return (
            f"its signing key `{key_file}` is open to group or others "
            f"(mode {stat.S_IMODE(st.st_mode):04o}), which AuditLog refuses"
        )
    try:
        key = load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        return f"its signing key `{key_file}` does not load: {_why(exc)}"
    if not isinstance(key, Ed25519PrivateKey):
        return f"its signing key `{key_file}` is not an Ed25519 key"
    if (
        recorded is not None
        and origin is not None
        and NoteSigner(origin, key).verifier.to_string() != recorded
    ):
        return f"the log is signed by another key than `{key_file}`"
    return None


def _audit_writable(ctx: _Context) -> list[Finding]:
    fid = "audit.writable"
    path = _audit_path(ctx)
    fix = f"make `{path}` and its directory writable by the user the Governor runs as"
    if _missing(path):
        ok, where = _creatable(path)
        if not ok:
            return [
                Finding(
                    fid,
                    ERROR,
                    f"no audit log at `{path}`, and it cannot be created there "
                    f"(`{where or path.parent}` is not a writable directory)",
                    fix,
                )
            ]
        return [
            Finding(
                fid,
                OK,
                f"no audit log yet; `{where}` is writable, so the first decision creates it",
            )
        ]
    if not path.is_file():
        return [Finding(fid, ERROR, f"`{path}` is not a file: no audit log can be kept there", fix)]
    try:
        with open(path, "r+b"):
            pass
    except OSError as exc:
        return [
            Finding(fid, ERROR, f"`{path}` cannot be opened for writing: {_why(exc)}", fix),
        ]
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return [
            Finding(
                fid,
                ERROR,
                f"`{path.parent}` is not writable: SQLite cannot make the log's `-wal` file",
                fix,
            )
        ]
    from warden.audit._store import SCHEMA_VERSION

    try:
        db = _open_rw(path)
    except sqlite3.Error as exc:
        return [Finding(fid, ERROR, f"`{path}` does not open: {exc}", fix)]
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            return [
                Finding(
                    fid,
                    ERROR,
                    f"`{path}` is not a warden audit log this version writes "
                    f"(schema version {version}, not {SCHEMA_VERSION})",
                    "point the deployment at its own audit log",
                )
            ]
        problem = _audit_key_problem(path, db)
        if problem is not None:
            return [
                Finding(
                    fid,
                    ERROR,
                    f"`{path}`: {problem}",
                    "restore the log's signing key (`audit-key.pem` beside it) with mode 0600",
                )
            ]
        _write_lock(db)
    except sqlite3.Error as exc:
        if "locked" in str(exc):
            return [
                Finding(
                    fid,
                    WARNING,
                    f"`{path}`: another process held the write lock for {_SQLITE_SECONDS:g} s",
                    "run doctor again; if it persists, find the process holding the log",
                )
            ]
        return [Finding(fid, ERROR, f"`{path}` does not take a write: {exc}", fix)]
    finally:
        db.close()
    return [Finding(fid, OK, f"`{path}` opens for writing and takes the write lock")]


def _header_mode(path: Path) -> str | None:
    """The journal mode the file's header records (``wal`` or ``rollback``), read directly."""
    with open(path, "rb") as fh:
        header = fh.read(100)
    if len(header) < 100 or not header.startswith(b"SQLite format 3\x00"):
        return None
    return "wal" if header[18] == 2 and header[19] == 2 else "rollback"


def _audit_durable(ctx: _Context) -> list[Finding]:
    fid = "audit.durable"
    path = _audit_path(ctx)
    if _missing(path):
        return [_no_log_yet(fid, path, "durability")]
    if not path.is_file():
        return [Finding(fid, ERROR, f"`{path}` is not a file", "see `audit.writable`")]
    fix = (
        "keep the home on a local filesystem (WAL needs shared memory), and open the log "
        "only through warden"
    )
    try:
        on_disk = _header_mode(path)
    except OSError as exc:
        return [Finding(fid, ERROR, f"`{path}` cannot be read: {_why(exc)}", fix)]
    if on_disk is None:
        return [Finding(fid, ERROR, f"`{path}` is not an SQLite database", fix)]
    if on_disk != "wal":
        return [Finding(fid, ERROR, f"`{path}` is not in WAL mode on disk ({on_disk})", fix)]
    from warden._sqlite import connect

    # opened the way AuditLog opens it: the pragmas read back are what its writer commits with
    try:
        db = connect(path, timeout=_SQLITE_SECONDS)
    except sqlite3.Error as exc:
        return [Finding(fid, ERROR, f"`{path}` does not open as AuditLog opens it: {exc}", fix)]
    try:
        mode = str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower()
        sync = int(db.execute("PRAGMA synchronous").fetchone()[0])
    finally:
        db.close()
    names = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}
    if mode != "wal" or sync < 2:
        return [
            Finding(
                fid,
                ERROR,
                f"`{path}` commits with journal_mode={mode}, synchronous="
                f"{names.get(sync, sync)}: a crash can lose records",
                fix,
            )
        ]
    return [Finding(fid, OK, f"WAL on disk, and commits with synchronous={names.get(sync, sync)}")]


def _audit_verifies(ctx: _Context) -> list[Finding]:
    fid = "audit.verifies"
    path = _audit_path(ctx)
    if _missing(path):
        return [_no_log_yet(fid, path, "verification")]
    from warden.audit import open_for_verify, trusted_verifier, verify_log
    from warden.errors import AuditError, ConfigurationError, VerificationError

    fix = (
        f"run `warden audit verify --db {path}` for the first bad entry; keep the file "
        "as evidence and start a new log"
    )
    try:
        store = open_for_verify(path)
        try:
            verifier, source = trusted_verifier(store, None)
            report = verify_log(store, verifier)
        finally:
            store.close()
    except (AuditError, ConfigurationError, VerificationError, OSError) as exc:
        return [Finding(fid, ERROR, f"`{path}` does not verify: {_why(exc)}", fix)]
    return [
        Finding(
            fid,
            OK,
            f"{_plural(report.size, 'record')} and {_plural(report.checkpoints, 'checkpoint')} "
            f"verify (key from {source})",
        )
    ]


# --- keys -------------------------------------------------------------------------------------


def _is_private_key(path: Path) -> bool:
    """A PEM private key, or a key file that cannot be read (assume the worst)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return True
    return _PRIVATE_MARK in head or b"-----BEGIN" not in head


def _key_files(root: Path, recursive: bool) -> list[Path]:
    if not root.is_dir():
        return []
    found = root.rglob("*") if recursive else root.iterdir()
    return [p for p in found if p.suffix in _KEY_SUFFIXES and p.is_file()]


def _keys_permissions(ctx: _Context) -> list[Finding]:
    fid = "keys.permissions"
    home = ctx.home
    store = Path(ctx.env.get("WARDEN_HOME") or ".warden") / "keys"
    dirs = list(dict.fromkeys(p.resolve() for p in (home / "keys", store) if p.is_dir()))
    files = dict.fromkeys(_key_files(home, recursive=True))
    for d in dirs:
        files.update(dict.fromkeys(_key_files(d, recursive=False)))
    keys = sorted({p.resolve() for p in files if _is_private_key(p)})
    wide: list[str] = []
    for key in keys:
        mode = stat.S_IMODE(key.stat().st_mode)
        if mode & ~0o600:
            wide.append(f"`{key}` (mode {mode:04o})")
    open_dirs: list[str] = []
    writable_dirs: list[str] = []
    for d in dirs:
        mode = stat.S_IMODE(d.stat().st_mode)
        if mode & 0o022:
            writable_dirs.append(f"`{d}` (mode {mode:04o})")
        elif mode & 0o077:
            open_dirs.append(f"`{d}` (mode {mode:04o})")
    problems = []
    if wide:
        problems.append(f"private key files wider than 0600: {_listed(wide, quote=False)}")
    if writable_dirs:
        problems.append(
            f"key directories others can write to: {_listed(writable_dirs, quote=False)}"
        )
    if open_dirs:
        problems.append(f"key directories others can list: {_listed(open_dirs, quote=False)}")
    fix = "run `chmod 600` on each key file and `chmod 700` on the key directory"
    if wide or writable_dirs:
        return [Finding(fid, ERROR, "; ".join(problems), fix)]
    if open_dirs:
        return [Finding(fid, WARNING, "; ".join(problems), fix)]
    if not keys:
        return [Finding(fid, OK, f"no private key files under `{home}` or in the key store")]
    return [
        Finding(
            fid,
            OK,
            f"{_plural(len(keys), 'private key file')}, each mode 0600 or narrower"
            + (f"; {_plural(len(dirs), 'key directory')} 0700 or narrower" if dirs else ""),
        )
    ]


# --- sandbox ----------------------------------------------------------------------------------


def _sandbox_starts(ctx: _Context) -> list[Finding]:
    fid = "sandbox.starts"
    policy = ctx.policy
    exec_tools = [t.pattern for t in policy.tools if t.exec] if policy is not None else []
    if exec_tools:
        severity, why = ERROR, f"the policy's `exec` tools ({_listed(exec_tools)}) cannot run"
    elif policy is None:
        severity, why = WARNING, "whether the policy has `exec` tools is unknown (no policy)"
    else:
        severity, why = WARNING, "the policy has no `exec` tools, so nothing needs it now"
    fix = (
        "install bubblewrap (`apt-get install bubblewrap`) and allow unprivileged user "
        "namespaces (`sysctl kernel.unprivileged_userns_clone=1`, or the AppArmor profile)"
    )
    bwrap = shutil.which("bwrap", path=ctx.env.get("PATH", os.defpath))
    if bwrap is None:
        return [Finding(fid, severity, f"`bwrap` is not on PATH: {why}", fix)]
    from warden.errors import ConfigurationError, SandboxError
    from warden.runtime.sandbox import Limits, Sandbox

    started = time.monotonic()
    try:
        # the sandbox Governor.exec uses (bubblewrap, failing closed), on a short leash
        result = Sandbox(bwrap=bwrap, limits=Limits(cpu_seconds=2, wall_seconds=5)).run(["true"])
    except (SandboxError, ConfigurationError) as exc:
        return [Finding(fid, severity, f"{exc}: {why}", fix)]
    if not result.ok:
        detail = (result.stderr.decode("utf-8", "replace").strip().splitlines() or [""])[-1]
        how = "timed out" if result.timed_out else f"exited {result.returncode}"
        return [
            Finding(
                fid,
                severity,
                f"`true` in the sandbox {how}" + (f" ({detail})" if detail else "") + f": {why}",
                fix,
            )
        ]
    ms = (time.monotonic() - started) * 1000
    return [Finding(fid, OK, f"bubblewrap (`{bwrap}`) ran `true` in the sandbox in {ms:.0f} ms")]


# --- runtime stores ---------------------------------------------------------------------------


def _store_finding(
    path: Path, what: str, version: int, counts: Sequence[tuple[str, str]], absent: str
) -> Finding:
    fid = "runtime.store"
    fix = f"make `{path}` and its directory readable and writable by the Governor's user"
    if _missing(path):
        ok, where = _creatable(path)
        if not ok:
            return Finding(
                fid,
                ERROR,
                f"no {what} at `{path}`, and `{where or path.parent}` is not writable: "
                "it cannot be created",
                fix,
            )
        return Finding(fid, OK, f"`{path}` not created yet ({absent}); `{where}` is writable")
    if not path.is_file():
        return Finding(fid, ERROR, f"`{path}` is not a file: the {what} is unreachable", fix)
    try:
        db = _open_rw(path)
    except sqlite3.Error as exc:
        return Finding(fid, ERROR, f"the {what} `{path}` does not open: {exc}", fix)
    try:
        found = db.execute("PRAGMA user_version").fetchone()[0]
        if found != version:
            return Finding(
                fid,
                ERROR,
                f"`{path}` is not a {what} this version reads (schema version {found}, "
                f"not {version})",
                "point the deployment at its own home",
            )
        read = [  # the table names are this module's constants, never input
            _plural(int(db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]), label)
            for table, label in counts
        ]
        _write_lock(db)
    except sqlite3.Error as exc:
        if "locked" in str(exc):
            return Finding(
                fid,
                WARNING,
                f"`{path}`: another process held the write lock for {_SQLITE_SECONDS:g} s",
                "run doctor again; if it persists, find the process holding the store",
            )
        return Finding(fid, ERROR, f"the {what} `{path}` cannot be read or written: {exc}", fix)
    finally:
        db.close()
    return Finding(fid, OK, f"`{path}` opens, reads ({', '.join(read)}) and takes the write lock")


def _runtime_store(ctx: _Context) -> list[Finding]:
    from warden.runtime.state import SCHEMA_VERSION as RUNTIME_VERSION
    from warden.trust._store import SCHEMA_VERSION as TRUST_VERSION

    return [
        _store_finding(
            ctx.home / "runtime.db",
            "kill switch store",
            RUNTIME_VERSION,
            (("kills", "active kill"), ("ring_ceilings", "ring hold")),
            "no kill has been recorded; the first Governor creates it",
        ),
        _store_finding(
            ctx.home / "trust.db",
            "trust and revocation store",
            TRUST_VERSION,
            (("agents", "agent"), ("revoked_credentials", "revoked credential")),
            "no identity step has run here",
        ),
    ]


# --- fleet ------------------------------------------------------------------------------------


def _endpoint(url: str, schemes: tuple[str, ...], port: int) -> tuple[str, int, str]:
    """(host, port, how to name it without credentials) of a service URL; ValueError if bad."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower().split("+")[0]
    if scheme not in schemes:
        raise ValueError(f"scheme `{parts.scheme}` is not one of {', '.join(schemes)}")
    host = parts.hostname or "localhost"
    real_port = parts.port or port
    shown = f"[{host}]" if ":" in host else host
    return host, real_port, f"{scheme}://{shown}:{real_port}"


def _have(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _postgres(url: str) -> Finding:
    import importlib

    fid = "fleet.services"
    fix = "start PostgreSQL, or correct `WARDEN_DATABASE_URL` (host, port, credentials)"
    try:
        host, port, shown = _endpoint(url, ("postgres", "postgresql"), 5432)
    except ValueError as exc:
        return Finding(fid, ERROR, f"`WARDEN_DATABASE_URL` is not a PostgreSQL URL: {exc}", fix)
    for name in ("psycopg", "psycopg2"):
        if not _have(name):
            continue
        client: Any = importlib.import_module(name)
        try:
            conn = client.connect(url, connect_timeout=int(_CONNECT_SECONDS))
            try:
                conn.cursor().execute("SELECT 1")
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - any client failure means unreachable
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return Finding(
                fid, ERROR, f"PostgreSQL at {shown} is unreachable ({name}): {first}", fix
            )
        return Finding(fid, OK, f"PostgreSQL at {shown} answers `SELECT 1` ({name})")
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_SECONDS) as sock:
            sock.settimeout(_CONNECT_SECONDS)
            sock.sendall(_PG_SSL_REQUEST)
            answer = sock.recv(1)
    except OSError as exc:
        return Finding(
            fid,
            ERROR,
            f"PostgreSQL at {shown} is unreachable: {_why(exc)} (plain TCP: no client library "
            "installed)",
            fix,
        )
    if answer not in (b"S", b"N"):
        return Finding(
            fid,
            ERROR,
            f"something listens at {shown}, but it does not answer as PostgreSQL",
            fix,
        )
    return Finding(
        fid,
        OK,
        f"PostgreSQL at {shown} answers (TCP and an SSL request, no client library installed; "
        "credentials not checked)",
    )


def _redis(url: str) -> Finding:
    import importlib

    fid = "fleet.services"
    fix = "start Redis, or correct `WARDEN_REDIS_URL` (host, port, credentials)"
    try:
        host, port, shown = _endpoint(url, ("redis", "rediss"), 6379)
    except ValueError as exc:
        return Finding(fid, ERROR, f"`WARDEN_REDIS_URL` is not a Redis URL: {exc}", fix)
    if _have("redis"):
        client: Any = importlib.import_module("redis")
        try:
            conn = client.Redis.from_url(
                url, socket_timeout=_CONNECT_SECONDS, socket_connect_timeout=_CONNECT_SECONDS
            )
            try:
                conn.ping()
            finally:
                conn.close()
        except Exception as exc:  # noqa: BLE001 - any client failure means unreachable
            return Finding(fid, ERROR, f"Redis at {shown} is unreachable (redis-py): {exc}", fix)
        return Finding(fid, OK, f"Redis at {shown} answers PING (redis-py)")
    tls = urlsplit(url).scheme.lower() == "rediss"
    try:
        with socket.create_connection((host, port), timeout=_CONNECT_SECONDS) as sock:
            answer = b""
            if not tls:
                sock.settimeout(_CONNECT_SECONDS)
                sock.sendall(b"PING\r\n")
                answer = sock.recv(64)
    except OSError as exc:
        return Finding(
            fid,
            ERROR,
            f"Redis at {shown} is unreachable: {_why(exc)} (plain TCP: no client library "
            "installed)",
            fix,
        )
    if tls:
        return Finding(
            fid,
            OK,
            f"Redis at {shown} accepts TCP connections (TLS not checked: no client library "
            "installed)",
        )
    if answer.startswith(b"+PONG"):
        return Finding(fid, OK, f"Redis at {shown} answers PING (plain TCP, no client library)")
    if answer.startswith(b"-"):
        said = answer.decode("ascii", "replace").strip()[1:]
        return Finding(
            fid,
            OK,
            f"Redis at {shown} answers, wanting authentication first (`{said.split()[0]}`; "
            "plain TCP, no client library)",
        )
    return Finding(
        fid, ERROR, f"something listens at {shown}, but it does not answer as Redis", fix
    )


def _fleet_services(ctx: _Context) -> list[Finding]:
    out = []
    database = ctx.env.get("WARDEN_DATABASE_URL")
    if database:
        out.append(_postgres(database))
    cache = ctx.env.get("WARDEN_REDIS_URL")
    if cache:
        out.append(_redis(cache))
    return out


# --- signatures -------------------------------------------------------------------------------


def _bom_signature(ctx: _Context) -> list[Finding]:
    fid = "bom.signature"
    path = ctx.bom
    if path is None:
        return []
    if ctx.deployment is None:
        return [
            Finding(
                fid,
                ERROR,
                f"`{path}` cannot be checked without the deployment it describes",
                "pass `--deployment FILE` with `--bom`",
            )
        ]
    from warden.supply.bom import check_bom
    from warden.supply.dsse import MAX_ENVELOPE

    fix = (
        f"if the change was meant, generate and sign a new BOM (`warden bom generate "
        f"{ctx.deployment.file}`, `warden bom sign`); if not, restore what changed"
    )
    try:
        if path.stat().st_size > MAX_ENVELOPE:
            raise SupplyChainError(f"larger than {MAX_ENVELOPE >> 20} MiB: not a signed BOM")
        envelope = path.read_bytes()
    except OSError as exc:
        return [Finding(fid, ERROR, f"`{path}` cannot be read: {_why(exc)}", "pass a signed BOM")]
    except SupplyChainError as exc:
        return [Finding(fid, ERROR, f"`{path}`: {exc}", "pass a signed BOM")]
    try:
        differences = check_bom(ctx.deployment, envelope)
    except SupplyChainError as exc:
        return [
            Finding(
                fid,
                ERROR,
                f"`{path}` does not verify: {exc}",
                "sign the BOM with a key the manifest's `trust.signers` lists",
            )
        ]
    if differences:
        n = len(differences)
        return [
            Finding(
                fid,
                ERROR,
                f"the deployment differs from its signed BOM in {_plural(n, 'place')}: "
                + "; ".join(differences[:_LISTED])
                + (f"; and {n - _LISTED} more" if n > _LISTED else ""),
                fix,
            )
        ]
    return [Finding(fid, OK, f"`{path}` verifies, and the deployment matches it")]


def _bundle_signature(ctx: _Context) -> list[Finding]:
    from warden.governor import _STRICT_VALUES  # how a Governor reads WARDEN_STRICT

    fid = "bundle.signature"
    if ctx.is_bundle:
        if ctx.bundle_error is not None:
            exc = ctx.bundle_error
            signers = ctx.signers
            fix = (
                "name the bundle's signer in the manifest's `trust.signers` (or $WARDEN_SIGNERS)"
                if not signers
                else "rebuild the bundle from reviewed sources with `warden policy bundle` "
                "and a trusted key"
            )
            return [Finding(fid, ERROR, str(exc), fix)]
        if ctx.bundle is not None:
            b = ctx.bundle
            return [
                Finding(
                    fid,
                    OK,
                    f"signed by `{b.signer}`; {_plural(len(b.files), 'file')} match their "
                    f"digests ({b.digest})",
                )
            ]
        return []
    raw = ctx.env.get("WARDEN_STRICT", "").strip().lower()
    if raw not in _STRICT_VALUES:
        return [
            Finding(
                fid,
                ERROR,
                f"`WARDEN_STRICT` is `{raw}`, which a Governor refuses (1 or 0)",
                "set `WARDEN_STRICT=1` (signed bundles only) or `0`",
            )
        ]
    if _STRICT_VALUES[raw] and ctx.policy_path is not None:
        return [
            Finding(
                fid,
                ERROR,
                f"strict mode (`WARDEN_STRICT`) loads only signed bundles, and "
                f"`{ctx.policy_path}` is not one: the Governor will not start",
                "build and sign a bundle with `warden policy bundle DIR --key NAME`",
            )
        ]
    return []


_CHECKS: Final[tuple[tuple[str, Callable[[_Context], list[Finding]]], ...]] = (
    ("policy.loaded", _policy_loaded),
    ("policy.default", _policy_default),
    ("policy.high_risk", _policy_high_risk),
    ("policy.approvals", _policy_approvals),
    ("audit.writable", _audit_writable),
    ("audit.durable", _audit_durable),
    ("audit.verifies", _audit_verifies),
    ("keys.permissions", _keys_permissions),
    ("sandbox.starts", _sandbox_starts),
    ("runtime.store", _runtime_store),
    ("fleet.services", _fleet_services),
    ("bom.signature", _bom_signature),
    ("bundle.signature", _bundle_signature),
)
