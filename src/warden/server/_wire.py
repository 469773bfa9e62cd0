"""Wire types of the decision service (v1): reading request bodies, writing answers and errors.

Every error is ``{"code", "message", "errors": [{"field", "message"}]}``;
``message`` is the first (usually only) entry of ``errors``, one lowercase
sentence in the style of the rest of warden. Request bodies are JSON objects
of at most ``MAX_BODY`` bytes, counted while they are read.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from warden.action import Decision

__all__ = [
    "MAX_BODY",
    "ApiError",
    "decision_json",
    "error_response",
    "json_response",
    "read_json",
]

MAX_BODY: Final = 1 << 20
"""The largest request body accepted, in bytes (1 MiB)."""

_JSON_TYPE: Final = re.compile(r"application/(?:[\w.+-]+\+)?json", re.ASCII | re.IGNORECASE)
_FIELD: Final = re.compile(r"`([^`]+)`")
_encode: Final = msgspec.json.Encoder().encode


class ApiError(Exception):
    """An answer other than success: its status, a stable code and what was wrong."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        errors: list[dict[str, str | None]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors if errors is not None else [{"field": None, "message": message}]


def field_error(message: str, field: str | None = None) -> dict[str, str | None]:
    """One entry of ``errors``; ``field`` defaults to the first name in backticks of ``message``."""
    if field is None:
        m = _FIELD.search(message)
        field = m.group(1) if m else None
    return {"field": field, "message": message}


def json_response(data: Any, status: int = 200) -> Response:
    return Response(_encode(data), status, media_type="application/json")


def error_response(err: ApiError) -> Response:
    body = {"code": err.code, "message": err.message, "errors": err.errors}
    headers = {"WWW-Authenticate": 'Bearer realm="warden"'} if err.status == 401 else None
    return Response(_encode(body), err.status, headers=headers, media_type="application/json")


async def read_json(request: Request, limit: int = MAX_BODY) -> dict[str, Any]:
    """The request's body as a JSON object: 415 unless it says JSON, 413 past ``limit``, else 400.

    The size is checked against Content-Length before anything is read and
    again as every chunk arrives, so no more than ``limit`` bytes are held.
    """
    ctype = request.headers.get("content-type", "").split(";", 1)[0].strip()
    if not _JSON_TYPE.fullmatch(ctype):
        shown = f"`{ctype}`" if ctype else "no content type"
        raise ApiError(
            415, "unsupported_media_type", f"the body must be application/json, not {shown}"
        )
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise ApiError(400, "bad_request", f"content-length `{declared}` is not a number")
        if int(declared) > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "bad_request", "the client went away before sending the body") from None
    body = b"".join(chunks)
    if not body:
        raise ApiError(400, "invalid_json", "the body is empty; send a JSON object")
    try:
        data = msgspec.json.decode(body)
    except msgspec.DecodeError as exc:
        raise ApiError(
            400, "invalid_json", f"the body is not valid JSON: {_lower(str(exc))}"
        ) from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the body's JSON nests too deeply") from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "the body must be a JSON object")
    return data


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "body_too_large", f"the body is larger than {limit >> 20} MiB")


def _lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def invalid(message: str, field: str | None = None) -> ApiError:
    """A 400 for a well-formed JSON body that does not say what the route needs."""
    return ApiError(400, "invalid_request", message, [field_error(message, field)])


def optional_text(data: Mapping[str, Any], name: str, limit: int = 1024) -> str | None:
    value = data.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"`{name}` must be a string", name)
    if len(value) > limit:
        raise invalid(f"`{name}` is longer than {limit} characters", name)
    return value


def only_fields(data: Mapping[str, Any], known: frozenset[str]) -> None:
    unknown = sorted(set(data) - known)
    if unknown:
        raise invalid(
            f"unknown field `{unknown[0]}` (known: {', '.join(sorted(known))})", unknown[0]
        )


def decision_json(decision: Decision) -> dict[str, Any]:
    """A decision on the wire (v1): ``Decision.to_dict()`` with every key always present."""
    return {
        "effect": decision.effect.value,
        "rules": list(decision.rules),
        "reasons": list(decision.reasons),
        "errors": list(decision.errors),
        "obligations": list(decision.obligations),
        "policy_hash": decision.policy_hash,
        "id": decision.id,
        "approval_id": decision.approval_id,
    }
