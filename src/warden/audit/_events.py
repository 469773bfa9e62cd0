"""Audit records: building DecisionEventV1 / OutcomeEventV1 and their canonical bytes.

Record bytes are RFC 8785 (JCS) canonical JSON. The reference encoder
(``rfc8785``) is pure Python and costs ~55 µs a record; msgspec's sorted-key
encoder produces byte-identical output for records without floats, without
integers beyond ±(2^53 - 1) and without object keys outside the Basic
Multilingual Plane (tests/audit/test_events.py checks the equivalence with
Hypothesis). ``canonical`` therefore takes the fast path when a record is
free of those, and the reference encoder otherwise.

Values that JSON cannot carry (bytes, objects, NaN, lone surrogates, integers
beyond the JCS range) are replaced by a marker naming their type and the
SHA-256 of their ``repr``, so every action can be recorded and nothing is
silently dropped.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Mapping
from typing import Any, Final

import msgspec
import rfc8785

from warden._text import is_utf8

__all__ = [
    "DECISION_V1",
    "OUTCOME_V1",
    "canonical",
    "decision_event",
    "digest_output",
    "json_safe",
    "outcome_event",
    "rfc3339",
]

DECISION_V1: Final = "warden.decision/v1"
OUTCOME_V1: Final = "warden.outcome/v1"
_MAX_SAFE: Final = 2**53 - 1
_MAX_DEPTH: Final = 64
_ENC: Final = msgspec.json.Encoder(order="sorted")


_last_second: list[Any] = [None, ""]


def rfc3339(t: float) -> str:
    """UTC time with microseconds: ``2026-11-25T23:51:13.123456Z``."""
    whole = int(t)
    micros = round((t - whole) * 1_000_000)
    if micros == 1_000_000:
        whole, micros = whole + 1, 0
    cache = _last_second
    if cache[0] != whole:  # records come in bursts within one second: format it once
        cache[1] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        cache[0] = whole
    return f"{cache[1]}.{micros:06d}Z"


def _marker(value: Any) -> dict[str, str]:
    try:
        text = repr(value)
    except Exception:  # noqa: BLE001 - a repr that raises still gets recorded
        text = f"<unrepresentable {type(value).__name__}>"
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return {"non_json": type(value).__name__, "repr_sha256": digest}


def _big_int(value: int) -> dict[str, Any]:
    """An integer JCS cannot carry exactly: its decimal text, or a digest when that is huge."""
    if value.bit_length() <= 1024:
        return {"non_json": "int", "value": str(value)}
    raw = value.to_bytes(value.bit_length() // 8 + 1, "big", signed=True)
    return {
        "non_json": "int",
        "bits": value.bit_length(),
        "sha256": hashlib.sha256(raw).hexdigest(),
    }


def _flat_plain(value: dict[Any, Any]) -> bool:
    """True for the common argument map: ASCII string keys, ASCII/int/bool/null values."""
    for k, v in value.items():
        if type(k) is not str or not k.isascii():
            return False
        tv = type(v)
        if tv is str:
            if not v.isascii():
                return False
        elif tv is int:
            if not -_MAX_SAFE <= v <= _MAX_SAFE:
                return False
        elif v is not None and tv is not bool:
            return False
    return True


def json_safe(value: Any, depth: int = 0) -> tuple[Any, bool]:
    """``(value as JSON data, fast)``: ``fast`` is False when the JCS slow path is needed.

    A flat map of plain values is returned as it is (not copied).
    """
    t = type(value)
    if t is dict and _flat_plain(value):
        return value, True
    if t is str:
        return (value, True) if value.isascii() or is_utf8(value) else (_marker(value), True)
    if value is None or t is bool:
        return value, True
    if t is int:
        if -_MAX_SAFE <= value <= _MAX_SAFE:
            return value, True
        return _big_int(value), True
    if t is float:
        if math.isfinite(value):
            return value, False
        return {"non_json": "float", "value": repr(value)}, True
    if depth >= _MAX_DEPTH:
        return _marker(value), True
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        fast = True
        for key, v in value.items():
            k = key
            if type(k) is not str or not is_utf8(k):
                raw = repr(k).encode("utf-8", "surrogatepass")
                k = "non_json_key:" + hashlib.sha256(raw).hexdigest()
            elif not k.isascii() and any(ord(c) > 0xFFFF for c in k):
                fast = False
            sv, f = json_safe(v, depth + 1)
            out[k] = sv
            fast = fast and f
        return out, fast
    if isinstance(value, (list, tuple)):
        items = []
        fast = True
        for v in value:
            sv, f = json_safe(v, depth + 1)
            items.append(sv)
            fast = fast and f
        return items, fast
    if isinstance(value, str):
        return json_safe(str(value), depth)
    if isinstance(value, bool):
        return bool(value), True
    if isinstance(value, int):
        return json_safe(int(value), depth)
    if isinstance(value, float):
        return json_safe(float(value), depth)
    return _marker(value), True


def canonical(record: Mapping[str, Any], *, safe: bool = False) -> bytes:
    """The JCS bytes of a record (any value; non-JSON parts become markers).

    ``safe=True`` promises the record is already JSON data that takes the fast
    path (as :func:`decision_event` and :func:`outcome_event` build them): it
    is encoded directly, and walked only if the encoder refuses it.
    """
    if safe:
        try:
            return _ENC.encode(record)
        except (TypeError, ValueError, UnicodeEncodeError, msgspec.EncodeError):
            pass  # e.g. a lone surrogate in a reason: take the careful path
    return _encode(*json_safe(record))


def _encode(clean: Any, fast: bool) -> bytes:
    """JCS bytes of JSON data from :func:`json_safe`: msgspec when ``fast``, else rfc8785."""
    return _ENC.encode(clean) if fast else bytes(rfc8785.dumps(clean))


def digest_output(result: Any) -> dict[str, Any] | None:
    """``{"size", "digest"}`` of a tool's result (docs/audit.md, OutcomeEventV1)."""
    if result is None:
        return None
    if isinstance(result, (bytes, bytearray, memoryview)):
        data = bytes(result)
    elif isinstance(result, str):
        data = result.encode("utf-8", "surrogatepass")
    else:
        safe, fast = json_safe(result)
        if isinstance(safe, dict) and "non_json" in safe and not isinstance(result, Mapping):
            data = repr(result).encode("utf-8", "surrogatepass")
        else:
            data = _encode(safe, fast)
    return {"size": len(data), "digest": "sha256:" + hashlib.sha256(data).hexdigest()}


def _redact(args: Mapping[str, Any], names: frozenset[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in args.items():
        if k in names:
            safe, _ = json_safe(v)
            try:
                data = canonical({"v": safe})
            except (TypeError, ValueError):
                data = repr(v).encode("utf-8", "surrogatepass")
            out[k] = {"redacted": "sha256:" + hashlib.sha256(data).hexdigest()}
        else:
            out[k] = v
    return out


def _action_json(action: Any, args: Any) -> dict[str, Any]:
    out = {"kind": action.kind, "tool": action.tool, "args": args}
    flow = getattr(action, "flow", None)
    if flow is not None:
        out["flow"] = flow.to_dict()
    return out


def decision_event(
    *,
    t: float,
    decision_id: str,
    action: Any,
    decision: Any,
    args: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """A ``warden.decision/v1`` record without its ``seq`` (the store assigns it).

    ``args`` overrides ``action.args`` (the sink passes the copy it took).

    Returns the record and whether it is safe for the fast encoder (see
    :func:`canonical`): only the arguments and agent attributes can hold
    values that need the slow path.
    """
    agent = action.agent
    raw = action.args if args is None else args
    if decision.obligations:
        redact = frozenset(
            o.removeprefix("redact:args.")
            for o in decision.obligations
            if o.startswith("redact:args.")
        )
        raw = _redact(raw, redact) if redact else raw
    safe_args, fast_args = json_safe(raw)
    who, fast_agent = json_safe(
        {"id": agent.get("id"), "trust": agent.get("trust"), "ring": agent.get("ring")}
        if agent
        else None
    )
    record = {
        "type": DECISION_V1,
        "time": rfc3339(t),
        "id": decision_id,
        "agent": who,
        "session": action.session,
        "action": _action_json(action, safe_args),
        "decision": {
            # a StrEnum member and tuples: both encoders write them as a string and arrays
            "effect": decision.effect,
            "rules": decision.rules,
            "reasons": decision.reasons,
            "errors": decision.errors,
        },
        "policy": decision.policy_hash,
        "approval": decision.approval_id,
        "elapsed_ns": decision.elapsed_ns,
    }
    return record, fast_args and fast_agent


def outcome_event(
    *,
    t: float,
    decision_id: str,
    action: Any,
    status: str,
    duration_ns: int,
    result: Any = None,
    error: BaseException | None = None,
) -> tuple[dict[str, Any], bool]:
    """A ``warden.outcome/v1`` record without its ``seq``, and whether it is fast-path safe."""
    agent_id, fast = json_safe(action.agent.get("id") if action.agent else None)
    record = {
        "type": OUTCOME_V1,
        "time": rfc3339(t),
        "decision": decision_id,
        "agent": agent_id,
        "session": action.session,
        "tool": action.tool,
        "status": status,
        "duration_ns": duration_ns,
        "output": digest_output(result) if status == "ok" else None,
        "error": (
            {"type": type(error).__name__, "message": str(error)[:1000]}
            if error is not None
            else None
        ),
    }
    return record, fast
