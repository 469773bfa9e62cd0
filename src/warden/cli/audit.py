"""`warden audit`: verify, read, prove, checkpoint and export the tamper-evident audit log.

docs/audit.md is the specification ("Verification", "The command"). Every
subcommand except `checkpoint` opens the log read-only. Record content is
attacker-controlled as far as a terminal is concerned: it reaches the screen
with control characters escaped and never as rich markup.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import sqlite3
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any, NoReturn

import click
import msgspec

from warden._re import PatternError, compile_glob, is_literal
from warden.audit import (
    DECISION_V1,
    OUTCOME_V1,
    AuditBackend,
    AuditLog,
    NoteVerifier,
    leaf_hash,
    open_for_verify,
    parse_checkpoint,
    trusted_verifier,
    verify_inclusion,
    verify_log,
)
from warden.cli._common import console, fail, print_json
from warden.errors import (
    ConfigurationError,
    LogIntegrityError,
    VerificationError,
    WardenError,
)

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."
_TYPES = {"decision": DECISION_V1, "outcome": OUTCOME_V1}
_SHORT_TYPES = {v: k for k, v in _TYPES.items()}
_OTLP_CHUNK = 1000
# OTLP SeverityNumber (opentelemetry-proto logs.proto): enums are integers in OTLP/JSON
_INFO, _WARN = 9, 13
_WARN_EFFECTS = frozenset({"deny", "require_approval"})
_WARN_STATUSES = frozenset({"error", "killed"})
_STORAGE_ERRORS = (WardenError, sqlite3.DatabaseError, OSError, UnicodeDecodeError)
# What a verifier raising on malformed stored values looks like (a bug in it, but a
# tampered file must still get one line and exit 1, not a traceback).
_VERIFIER_BUGS = (TypeError, ValueError, AttributeError, IndexError, KeyError, OverflowError)
_READ_FAILURES = (*_STORAGE_ERRORS, *_VERIFIER_BUGS)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")

home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
db_option = click.option(
    "--db", default=None, metavar="PATH", help="The audit log file (default: HOME/audit.db)."
)


# --- small helpers ---------------------------------------------------------------------------


def _db_path(home: str, db: str | None) -> Path:
    return Path(db) if db else Path(home) / "audit.db"


def _clean(value: object) -> str:
    """``value`` as one line of text with control characters escaped (no terminal tricks)."""
    text = ", ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _reason(path: Path, exc: BaseException) -> str:
    """A one-line reason for a storage or verification error, naming ``path`` once."""
    if isinstance(exc, OSError):
        where = exc.filename if exc.filename is not None else path
        return _clean(f"{where}: {(exc.strerror or str(exc)).lower()}")
    if isinstance(exc, UnicodeDecodeError):
        return f"{path}: not valid UTF-8"
    if isinstance(exc, sqlite3.DatabaseError):
        return f"{path}: not a readable audit log ({str(exc).lower()})"
    if isinstance(exc, _VERIFIER_BUGS):
        return _clean(f"{path}: the log holds a stored value of the wrong type or form ({exc})")
    text = str(exc)
    prefix = f"{path}: "
    return _clean(text if text.startswith(prefix) else prefix + text)


def _open(path: Path) -> AuditBackend:
    try:
        return open_for_verify(path)
    except _READ_FAILURES as exc:
        fail(_reason(path, exc))


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[AuditBackend]:
    """The log, opened read-only; a storage error inside the block exits with one line."""
    store = _open(path)
    try:
        yield store
    except _READ_FAILURES as exc:
        fail(_reason(path, exc))
    finally:
        store.close()


def _trusted(store: AuditBackend, key: str | None) -> tuple[NoteVerifier, str]:
    """``trusted_verifier``, with a malformed key reported as the user's mistake."""
    try:
        return trusted_verifier(store, key)
    except ConfigurationError as exc:
        # NoteVerifier.from_string raises ConfigurationError, which trusted_verifier
        # does not wrap: it is about the key given (or audit-key.pub), not the log
        fail(_clean(str(exc)))


def _read_text(name: str, what: str) -> str:
    try:
        return Path(name).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        fail(f"{name}: {what} is not valid UTF-8")
    except OSError as exc:
        fail(f"{name}: cannot read {what}: {(exc.strerror or str(exc)).lower()}")


def _plural(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _decode(data: bytes) -> Any:
    """The record's JSON, or None if it is not JSON (a tampered entry)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None


def _get(obj: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def _agent_of(rec: Any) -> Any:
    agent = _get(rec, "agent")
    return agent.get("id") if isinstance(agent, dict) else agent


def _tool_of(rec: Any) -> Any:
    tool = _get(rec, "action", "tool")
    return tool if tool is not None else _get(rec, "tool")


def _effect_of(rec: Any) -> Any:
    """A decision's effect, or an outcome's status."""
    effect = _get(rec, "decision", "effect")
    return effect if effect is not None else _get(rec, "status")


def _quiet_exit() -> NoReturn:
    """The reader of our stdout (`| head`) went away: stop quietly, as Unix tools do."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    sys.exit(1)


class _Sink:
    """A binary output whose write errors end the command with one line."""

    def __init__(self, stream: IO[bytes], name: str) -> None:
        self._stream = stream
        self._name = name

    def write(self, data: bytes) -> None:
        try:
            self._stream.write(data)
        except BrokenPipeError:
            _quiet_exit()
        except OSError as exc:
            fail(f"{self._name}: cannot write: {(exc.strerror or str(exc)).lower()}")

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            _quiet_exit()
        except OSError as exc:
            fail(f"{self._name}: cannot write: {(exc.strerror or str(exc)).lower()}")


@contextlib.contextmanager
def _output(out: str | None) -> Iterator[_Sink]:
    """Binary stdout, or ``out`` written atomically (a temporary file, then a rename).

    If the body fails, ``out`` is left as it was.
    """
    if out is None:
        sys.stdout.flush()
        sink = _Sink(sys.stdout.buffer, "<stdout>")
        yield sink
        sink.flush()
        return
    target = Path(out)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        f = tmp.open("xb")
    except OSError as exc:
        fail(f"{out}: cannot write: {(exc.strerror or str(exc)).lower()}")
    try:
        yield _Sink(f, out)
    except BaseException:
        f.close()
        tmp.unlink(missing_ok=True)
        raise
    try:
        f.flush()
        os.fsync(f.fileno())
        f.close()
        os.replace(tmp, target)
    except OSError as exc:
        f.close()
        tmp.unlink(missing_ok=True)
        fail(f"{out}: cannot write: {(exc.strerror or str(exc)).lower()}")


def _rfc3339(dt: datetime) -> str:
    """The fixed-width form records use, so that times compare as text."""
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


_RELATIVE = re.compile(r"(\d{1,9})([smhdw])", re.ASCII)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def _since(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--since``: an ISO 8601 time (UTC unless it has an offset) or an age such as `15m`.

    Returns the record time format, so that the comparison is a text comparison.
    """
    if value is None:
        return None
    text = value.strip()
    try:
        if m := _RELATIVE.fullmatch(text):
            ago = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
            return _rfc3339(datetime.fromtimestamp(time.time(), UTC) - ago)
        dt = datetime.fromisoformat(text)
        return _rfc3339(dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC))
    except (ValueError, OverflowError):
        raise click.BadParameter(
            f"`{_clean(text)}` is not an ISO 8601 time or an age like 15m, 2h or 1d"
        ) from None


def _time_ns(value: Any) -> int | None:
    """Nanoseconds since the epoch for a record's RFC 3339 time, exactly (no float)."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    return (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


# --- the group -------------------------------------------------------------------------------


@click.group()
def audit() -> None:
    """Verify, read, prove, checkpoint and export the tamper-evident audit log."""


# --- verify ----------------------------------------------------------------------------------


def _verify_failed(path: Path, exc: BaseException, as_json: bool) -> NoReturn:
    index = exc.index if isinstance(exc, LogIntegrityError) and exc.index >= 0 else None
    expected = exc.expected if isinstance(exc, VerificationError) else None
    found = exc.found if isinstance(exc, VerificationError) else None
    message = _reason(path, exc)
    if as_json:
        print_json(
            {
                "ok": False,
                "path": str(path),
                "error": message,
                "index": index,
                "expected": expected,
                "found": found,
            }
        )
        sys.exit(1)
    click.echo(message, err=True)
    parts = []
    if expected is not None:
        parts.append(f"expected {_clean(expected)}")
    if found is not None:
        parts.append(f"found {_clean(found)}")
    if parts:
        click.echo("  " + ", ".join(parts), err=True)
    sys.exit(1)


@audit.command()
@home_option
@db_option
@click.option(
    "--checkpoint",
    "checkpoint_file",
    default=None,
    metavar="FILE",
    help="An earlier signed checkpoint kept elsewhere; the log must extend it.",
)
@click.option(
    "--key",
    default=None,
    metavar="PUB_OR_FILE",
    help="The verifier key (`name+id+key`, or a file holding it) to trust "
    "(default: audit-key.pub beside the log, else the key the log records).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    home: str, db: str | None, checkpoint_file: str | None, key: str | None, as_json: bool
) -> None:
    """Check the whole log; exit 1 at the first problem.

    Re-hashes every record and checks every batch, Merkle node and signed
    checkpoint, streaming the log (O(log n) memory). With --checkpoint, also
    proves that the log extends that earlier checkpoint, which catches a
    rewritten history even when the rewriter holds the signing key.
    """
    path = _db_path(home, db)
    earlier = _read_text(checkpoint_file, "the checkpoint") if checkpoint_file else None
    if key is not None and Path(key).is_file():
        _read_text(key, "the key")
    try:
        store = open_for_verify(path)
        try:
            verifier, source = _trusted(store, key)
            report = verify_log(store, verifier, earlier=earlier)
            latest = store.latest_checkpoint()
        finally:
            store.close()
    except _READ_FAILURES as exc:
        _verify_failed(path, exc, as_json)
    newest = None if latest is None else latest[0]
    signer = f"{verifier.name}+{verifier.key_id.hex()}"
    if as_json:
        print_json(
            {
                "ok": True,
                "path": str(path),
                "size": report.size,
                "root": report.root.hex(),
                "batches": report.batches,
                "checkpoints": report.checkpoints,
                "nodes": report.nodes,
                "key": signer,
                "key_source": source,
                "newest_checkpoint": newest,
                "extends": None if report.extends is None else report.extends.size,
            }
        )
        return
    line = (
        f"{path}: {_plural(report.size, 'entry', 'entries')} verified, "
        f"{_plural(report.batches, 'batch', 'batches')}, "
        f"{_plural(report.checkpoints, 'checkpoint', 'checkpoints')}, "
        f"{_plural(report.nodes, 'node', 'nodes')}; root {report.root.hex()}; "
    )
    if newest is None and report.extends is None:
        line += f"no signed checkpoint yet, so nothing pins the root (key {signer} from {source})"
    else:
        line += f"signed by {signer} (from {source})"
    if newest is not None and newest < report.size:
        line += f"; entries {newest:,}..{report.size - 1:,} are not in a checkpoint yet"
    if report.extends is not None:
        line += f"; extends the checkpoint of size {report.extends.size:,}"
    click.echo(_clean(line))


# --- show and tail ---------------------------------------------------------------------------


def _filter_options(fn: Any) -> Any:
    options = [
        click.option("--agent", metavar="GLOB", help="Agent id glob (`*`, `?`, `[...]`)."),
        click.option("--session", metavar="ID", help="Session id."),
        click.option("--tool", metavar="GLOB", help="Tool name glob."),
        click.option(
            "--effect",
            type=click.Choice(["allow", "deny", "require_approval"]),
            help="Decisions with this effect (outcomes have none).",
        ),
        click.option(
            "--type",
            "record_type",
            type=click.Choice(sorted(_TYPES)),
            help="Only decisions, or only outcomes.",
        ),
        click.option(
            "--since",
            metavar="TIME",
            callback=_since,
            help="Records from TIME on: ISO 8601 (UTC unless it has an offset) or an age "
            "such as 15m, 2h, 1d.",
        ),
        click.option(
            "-n",
            "--limit",
            type=click.IntRange(min=1),
            default=20,
            show_default=True,
            help="How many records.",
        ),
        click.option("--json", "as_json", is_flag=True, help="JSON Lines: the stored bytes."),
        db_option,
        home_option,
    ]
    for option in reversed(options):  # click lists the last decorator applied first
        fn = option(fn)
    return fn


def _select(
    store: AuditBackend,
    *,
    agent: str | None,
    session: str | None,
    tool: str | None,
    effect: str | None,
    record_type: str | None,
    since: str | None,
    limit: int,
    newest: bool,
) -> list[tuple[int, bytes]]:
    """Up to ``limit`` matching records, in ascending seq order.

    Equality filters (and globs without wildcards) run in SQL; wildcard globs are
    matched here with the policy engine's glob semantics, over the streamed rows.
    """
    try:
        agent_re = None if agent is None or is_literal(agent) else compile_glob(agent)
        tool_re = None if tool is None or is_literal(tool) else compile_glob(tool)
    except PatternError as exc:
        raise click.BadParameter(f"bad glob: {exc}") from None
    rows = store.select_records(
        record_type=_TYPES[record_type] if record_type else None,
        agent=agent if agent is not None and agent_re is None else None,
        session=session,
        tool=tool if tool is not None and tool_re is None else None,
        effect=effect,
        since=since,
        newest=newest,
    )
    found: list[tuple[int, bytes]] = []
    for seq, data in rows:
        if agent_re is not None or tool_re is not None:
            rec = _decode(data)
            if agent_re is not None:
                value = _agent_of(rec)
                if not isinstance(value, str) or agent_re.search(value) is None:
                    continue
            if tool_re is not None:
                value = _tool_of(rec)
                if not isinstance(value, str) or tool_re.search(value) is None:
                    continue
        found.append((seq, data))
        if len(found) >= limit:
            break
    found.sort()
    return found


def _short(value: Any, width: int = 24) -> str:
    if value is None:
        return "-"
    text = _clean(value)
    return text if len(text) <= width else text[: width - 7] + "…" + text[-6:]


_STYLES = {
    "allow": "green",
    "ok": "green",
    "deny": "red",
    "error": "red",
    "killed": "red",
    "timeout": "red",
    "require_approval": "yellow",
}


def _print_table(rows: list[tuple[int, bytes]]) -> None:
    if not rows:
        click.echo("no matching records")
        return
    from rich.table import Table
    from rich.text import Text

    table = Table()
    columns = ("seq", "time (UTC)", "type", "agent", "session", "tool", "effect/status", "rules")
    for col in columns:
        table.add_column(
            col,
            overflow="fold",
            no_wrap=col in {"seq", "time (UTC)", "type", "effect/status"},
            justify="right" if col == "seq" else "left",
        )
    for seq, data in rows:
        rec = _decode(data)
        if not isinstance(rec, dict):
            table.add_row(str(seq), "", Text("not a JSON record", style="red"))
            continue
        stamp = rec.get("time")
        when = stamp.replace("T", " ")[:23] if isinstance(stamp, str) else "-"
        kind = rec.get("type")
        effect = _effect_of(rec)
        rules = _get(rec, "decision", "rules")
        table.add_row(
            str(seq),
            Text(_clean(when)),
            Text(_clean(_SHORT_TYPES.get(kind, kind) if isinstance(kind, str) else "-")),
            Text(_short(_agent_of(rec))),
            Text(_short(rec.get("session"))),
            Text(_clean(_tool_of(rec) or "-")),
            Text(_clean(effect or "-"), style=_STYLES.get(str(effect), "")),
            Text(_clean(", ".join(map(str, rules)) or "-") if isinstance(rules, list) else "-"),
        )
    console().print(table)


def _print_lines(rows: list[tuple[int, bytes]]) -> None:
    with _output(None) as f:
        for _, data in rows:
            f.write(data + b"\n")


def _list(home: str, db: str | None, as_json: bool, newest: bool, **filters: Any) -> None:
    with _reading(_db_path(home, db)) as store:
        rows = _select(store, newest=newest, **filters)
    if as_json:
        _print_lines(rows)
    else:
        _print_table(rows)


@audit.command()
@click.argument("seqs", nargs=-1, type=click.IntRange(min=0), metavar="[SEQ]...")
@_filter_options
def show(seqs: tuple[int, ...], home: str, db: str | None, as_json: bool, **filters: Any) -> None:
    """Show records SEQ in full, or the oldest N that match.

    Filters combine (all must match). Agent and tool globs use the policy
    language's glob rules; a decision's agent is `agent.id`. A time without
    an offset is UTC.
    """
    if not seqs:
        _list(home, db, as_json, newest=False, **filters)
        return
    ctx = click.get_current_context()
    given = [
        param.opts[0]
        for param in ctx.command.params
        if param.name in filters
        and ctx.get_parameter_source(param.name) is not click.core.ParameterSource.DEFAULT
    ]
    if given:
        raise click.UsageError(f"SEQ cannot be combined with {given[0]}")
    with _reading(_db_path(home, db)) as store:
        records = [(seq, store.record(seq)) for seq in seqs]
    if as_json:
        _print_lines(records)
        return
    for seq, data in records:
        rec = _decode(data)
        if rec is None:
            click.echo(f"{seq}: not a JSON record: {_clean(data.decode('utf-8', 'replace'))}")
        else:
            print_json(rec)


@audit.command()
@_filter_options
def tail(home: str, db: str | None, as_json: bool, **filters: Any) -> None:
    """Show the newest N records that match, oldest first."""
    _list(home, db, as_json, newest=True, **filters)


# --- prove -----------------------------------------------------------------------------------


@audit.command(context_settings={"ignore_unknown_options": True})
@click.argument("index", type=int)
@click.option(
    "--size",
    type=int,
    default=None,
    help="Tree size to prove against (default: the newest signed checkpoint's size when it "
    "covers INDEX, else the log's current size).",
)
@click.option(
    "--key",
    default=None,
    metavar="PUB_OR_FILE",
    help="The verifier key for the stored checkpoint (default: as for verify).",
)
@db_option
@home_option
def prove(index: int, size: int | None, key: str | None, home: str, db: str | None) -> None:
    """Print an RFC 9162 inclusion proof of record INDEX, as JSON.

    The proof is checked before it is printed. An inclusion proof alone does
    not pin the tree size: `root` means something only when a signed checkpoint
    of `size` entries vouches for it. The output carries that checkpoint when
    one is stored (its signature is checked here); otherwise check `root`
    against a checkpoint you trust, or write one with `warden audit checkpoint`.
    """
    path = _db_path(home, db)
    if key is not None and Path(key).is_file():
        _read_text(key, "the key")
    with _reading(path) as store:
        try:
            out = _prove(store, path, index, size, key)
        except VerificationError as exc:
            _verify_failed(path, exc, as_json=False)
    print_json(out)


def _prove(
    store: AuditBackend, path: Path, index: int, size: int | None, key: str | None
) -> dict[str, Any]:
    n = store.size()
    if n == 0:
        fail(f"{path}: the log is empty")
    if size is None:
        latest = store.latest_checkpoint()
        size = latest[0] if latest is not None and latest[0] > index else n
    if not 1 <= size <= n:
        fail(f"--size {size} is not between 1 and the log's {n:,} entries")
    if not 0 <= index < size:
        fail(f"entry {index} is not in a tree of {size:,} entries (0..{size - 1})")
    data = store.record(index)
    leaf = leaf_hash(data)
    proof = store.inclusion_proof(index, size)
    root = store.root(size)
    try:
        verify_inclusion(leaf, index, size, proof, root)
    except VerificationError as exc:
        raise LogIntegrityError(f"entry {index}: {exc}", index=index) from None
    note = dict(store.checkpoints()).get(size)
    if note is not None:
        verifier, _ = _trusted(store, key)
        cp = parse_checkpoint(note, verifier, store.origin)
        if cp.root != root:
            raise LogIntegrityError(
                f"the stored checkpoint of size {size} does not match the tree",
                expected=cp.root.hex(),
                found=root.hex(),
            )
    else:
        click.echo(
            f"note: no signed checkpoint of size {size} is stored; the root is not pinned "
            "(run `warden audit checkpoint`)",
            err=True,
        )
    record = _decode(data)
    if record is None:
        fail(f"{path}: entry {index} is not a JSON record")
    return {
        "index": index,
        "size": size,
        "leaf_hash": leaf.hex(),
        "proof": [h.hex() for h in proof],
        "root": root.hex(),
        "checkpoint": note,
        "record": record,
    }


# --- checkpoint ------------------------------------------------------------------------------


@audit.command()
@click.option("--out", default=None, metavar="FILE", help="Also write the note to FILE.")
@db_option
@home_option
def checkpoint(out: str | None, home: str, db: str | None) -> None:
    """Sign, store and print a checkpoint of the log now.

    Needs the log's signing key (audit-key.pem beside the log). Keep the
    printed note somewhere the log's host cannot rewrite: `verify --checkpoint`
    then proves that later versions of the log extend it.
    """
    path = _db_path(home, db)
    _open(path).close()  # an existing warden log, or a one-line error (never create one)
    key_file = path.with_name("audit-key.pem")
    if not key_file.is_file():
        fail(f"{key_file}: no signing key beside the log; only the log's own key can sign")
    try:
        log = AuditLog(path)
    except _READ_FAILURES as exc:
        fail(_reason(path, exc))
    try:
        try:
            note = log.checkpoint()
        finally:
            log.close()
    except _READ_FAILURES as exc:
        fail(_reason(path, exc))
    if out is not None:
        with _output(out) as f:
            f.write(note.encode("utf-8"))
    click.echo(note, nl=False)


# --- export ----------------------------------------------------------------------------------


def _otlp_record(seq: int, data: bytes) -> dict[str, Any]:
    """One OTLP/JSON LogRecord: lowerCamelCase, int64 as decimal strings, enums as integers."""
    rec = _decode(data)
    kind = _get(rec, "type")
    effect = _get(rec, "decision", "effect")
    status = _get(rec, "status") if kind != DECISION_V1 else None
    warn = effect in _WARN_EFFECTS or status in _WARN_STATUSES
    attributes: list[dict[str, Any]] = [{"key": "warden.seq", "value": {"intValue": str(seq)}}]
    for name, value in (
        ("warden.type", kind),
        ("warden.effect", effect),
        ("warden.status", status),
        ("warden.tool", _tool_of(rec)),
        ("warden.agent", _agent_of(rec)),
        ("warden.session", _get(rec, "session")),
    ):
        if isinstance(value, str):
            attributes.append({"key": name, "value": {"stringValue": value}})
    out: dict[str, Any] = {}
    ns = _time_ns(_get(rec, "time"))
    if ns is not None:
        out["timeUnixNano"] = str(ns)
    out["severityNumber"] = _WARN if warn else _INFO
    out["severityText"] = "WARN" if warn else "INFO"
    out["body"] = {"stringValue": data.decode("utf-8", "replace")}
    out["attributes"] = attributes
    return out


def _otlp_request(log_records: list[dict[str, Any]]) -> bytes:
    """An ExportLogsServiceRequest holding ``log_records``, as one line of JSON."""
    request = {
        "resourceLogs": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "warden"}}]
                },
                "scopeLogs": [{"scope": {"name": "warden.audit"}, "logRecords": log_records}],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode("ascii") + b"\n"


def _records_since(store: AuditBackend, since: str | None) -> Iterator[tuple[int, bytes]]:
    for seq, _, raw, _ in store.scan():
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        if since is not None:
            stamp = _get(_decode(data), "time")
            if not isinstance(stamp, str) or stamp < since:
                continue
        yield seq, data


@audit.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "otel"]),
    required=True,
    help="jsonl: the stored record bytes, one per line. otel: OTLP/JSON "
    "ExportLogsServiceRequest objects, one per line, up to 1000 records each.",
)
@click.option("--out", default=None, metavar="FILE", help="Write to FILE (atomically).")
@click.option(
    "--since", metavar="TIME", callback=_since, help="Only records from TIME on (as for show)."
)
@db_option
@home_option
def export(fmt: str, out: str | None, since: str | None, home: str, db: str | None) -> None:
    """Stream the log out as JSON Lines or OpenTelemetry logs.

    Reads the log in chunks: memory does not grow with its size. The otel
    output is what an OpenTelemetry Collector's otlpjsonfile receiver reads:
    each record's body is the record JSON, its attributes are warden.seq,
    warden.type, warden.effect or warden.status, warden.tool, warden.agent and
    warden.session, and deny, require_approval, error and killed records have
    severity WARN.
    """
    count = 0
    with _reading(_db_path(home, db)) as store, _output(out) as f:
        if fmt == "jsonl":
            for _, data in _records_since(store, since):
                f.write(data + b"\n")
                count += 1
        else:
            batch: list[dict[str, Any]] = []
            for seq, data in _records_since(store, since):
                batch.append(_otlp_record(seq, data))
                count += 1
                if len(batch) == _OTLP_CHUNK:
                    f.write(_otlp_request(batch))
                    batch = []
            if batch:  # OTLP: senders should not send empty envelopes
                f.write(_otlp_request(batch))
    if out is not None:
        click.echo(f"wrote {_plural(count, 'record', 'records')} to {out}", err=True)
