"""The routes of ``warden serve`` (docs/fleet.md, "`warden serve`: the decision service").

Each route is a plain async function wrapped by ``_Service.route``, which
authenticates the bearer token, checks the route's scope, turns ``ApiError``
into the error body, and, for the routes that decide or change state, appends
the ``warden.api/v1`` record that attributes the request to its subject.

Anything that may wait on a file lock, a network store or an fsync runs in
a worker thread (``run_in_threadpool``), so the event loop keeps answering;
``Governor.check`` too when its path can reach the approval gate or another
store that may wait (``_Service.check``), and on the loop otherwise.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Any, Final

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from warden.action import Action, Decision, Effect
from warden.audit import leaf_hash, parse_checkpoint, verify_inclusion, verify_log
from warden.errors import (
    ApprovalNotFound,
    ApprovalStateError,
    AuditError,
    CheckpointError,
    ConfigurationError,
    InvalidActionError,
    RuntimeStateError,
    SelfApprovalError,
    VerificationError,
)
from warden.server._console import console_routes
from warden.server._metrics import CONTENT_TYPE, Metrics
from warden.server._tokens import Token, TokenStore
from warden.server._wire import (
    MAX_BODY,
    ApiError,
    decision_json,
    error_response,
    field_error,
    invalid,
    json_response,
    only_fields,
    optional_text,
    read_json,
)

if TYPE_CHECKING:
    from warden.audit import AuditLog
    from warden.governor import Governor

__all__ = ["API_V1", "create_app"]

API_V1: Final = "warden.api/v1"
"""The audit record type of a request that decided or changed state."""

_log = logging.getLogger("warden.server")
_STATUSES: Final = frozenset({"pending", "approved", "denied", "consumed", "expired"})
_STORE_ERRORS: Final = (AuditError, RuntimeStateError, sqlite3.Error, OSError)
_AUDIT_FILTERS: Final = frozenset({"tool", "agent", "session", "effect", "type", "since", "limit"})
_RELATIVE: Final = re.compile(r"(\d{1,9})([smhdw])", re.ASCII)
_UNITS: Final = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_KILL_FIELDS: Final = frozenset({"scope", "target", "reason"})
_MAX_LIMIT: Final = 1000

Handler = Callable[[Request, Token], Awaitable[Response]]


def create_app(governor: Governor, tokens: TokenStore, *, max_body: int = MAX_BODY) -> Starlette:
    """The decision service for ``governor``, authenticating with ``tokens``.

    The Governor must keep an audit log (the service attributes every request
    that decides or changes state in it). The app does not close the Governor
    or the token store: whoever made them does.
    """
    if governor.audit is None:
        raise ConfigurationError("warden serve needs a Governor with an audit log (audit=True)")
    svc = _Service(governor, governor.audit, tokens, max_body)
    r = svc.route
    routes = [
        Route("/v1/decide", r(svc.decide, "decide", attributed=True), methods=["POST"]),
        Route("/v1/approvals", r(svc.approvals, "read"), methods=["GET"]),
        Route(
            "/v1/approvals/{id}/approve",
            r(svc.approve, "approve", attributed=True),
            methods=["POST"],
        ),
        Route("/v1/approvals/{id}/deny", r(svc.deny, "approve", attributed=True), methods=["POST"]),
        Route("/v1/kill", r(svc.kill, "operate", attributed=True), methods=["POST"]),
        Route("/v1/restore", r(svc.restore, "operate", attributed=True), methods=["POST"]),
        Route("/v1/audit", r(svc.audit_query, "read"), methods=["GET"]),
        Route("/v1/audit/verify", r(svc.audit_verify, "read"), methods=["GET"]),
        Route("/v1/audit/{seq:int}/proof", r(svc.audit_proof, "read"), methods=["GET"]),
        Route("/healthz", svc.healthz, methods=["GET"]),
        Route("/metrics", svc.metrics_text, methods=["GET"]),
        *console_routes(svc),  # the web console (docs/fleet.md, "The console")
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.service = svc
    return app


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 and 405 (no such route or method), in the service's error form."""
    status = exc.status_code if isinstance(exc, HTTPException) else 500
    if status == 404:
        err = ApiError(404, "not_found", f"no route `{request.url.path}`")
    elif status == 405:
        err = ApiError(405, "method_not_allowed", f"`{request.method}` is not allowed here")
    else:
        err = ApiError(status, "bad_request", str(getattr(exc, "detail", exc)).lower())
    response = error_response(err)
    if isinstance(exc, HTTPException) and exc.headers:
        response.headers.update(exc.headers)  # `Allow` for a 405
    return response


class _Service:
    """The routes' shared state: the Governor, its audit log, the tokens and the metrics."""

    def __init__(self, governor: Governor, log: AuditLog, tokens: TokenStore, max_body: int):
        self.gov = governor
        self.log = log
        self.tokens = tokens
        self.max_body = max_body
        self.metrics = Metrics()
        self._verifying = anyio.Lock()

    # --- authentication, errors and attribution ----------------------------------------------

    def route(self, handler: Handler, scope: str, *, attributed: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            token: Token | None = None
            request.state.decision_id = None
            try:
                token = self._authenticate(request)
                if scope not in token.scopes:
                    raise ApiError(403, "missing_scope", f"this token lacks the `{scope}` scope")
                response = await handler(request, token)
            except ApiError as err:
                response = error_response(err)
                if err.status == 503:
                    self.metrics.store_error()
            except Exception:  # noqa: BLE001 - a bug still answers in the error form, logged
                _log.exception("%s %s failed", request.method, request.url.path)
                response = error_response(
                    ApiError(500, "internal_error", "the server failed; see its log")
                )
            if attributed and token is not None:
                response = await self._attribute(request, token, response)
            return response

        return endpoint

    def _authenticate(self, request: Request) -> Token:
        header = request.headers.get("authorization")
        if header is None:
            raise ApiError(401, "unauthenticated", "no token: send `Authorization: Bearer <token>`")
        kind, _, value = header.partition(" ")
        if kind.lower() != "bearer" or not value.strip():
            raise ApiError(
                401, "unauthenticated", "the authorization header is not `Bearer <token>`"
            )
        try:
            token = self.tokens.authenticate(value.strip())
        except (sqlite3.Error, OSError) as exc:  # OSError: PostgreSQL's StoreUnavailable
            raise ApiError(
                503, "store_unavailable", f"the token store cannot be read: {exc}"
            ) from None
        if token is None:
            raise ApiError(401, "unauthenticated", "unknown or revoked token")
        return token

    async def _attribute(self, request: Request, token: Token, response: Response) -> Response:
        """Append the request's ``warden.api/v1`` record; if that fails, the answer is a 503.

        A decision already made stands (its own record failed too, so it was a
        deny); a change already made stands, and the answer says so.
        """
        status = response.status_code
        record = {
            "type": API_V1,
            "subject": token.subject,
            "token": token.id,
            "method": request.method,
            "path": request.url.path,
            "status": status,
            "decision_id": request.state.decision_id,
        }
        try:
            self.log.append(record)
        except AuditError as exc:
            self.metrics.store_error()
            done = " (the change is in effect)" if status < 300 else ""
            return error_response(
                ApiError(
                    503,
                    "audit_unavailable",
                    f"the audit log cannot record this request{done}: {exc}",
                )
            )
        return response

    async def _store(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn`` in a worker thread; a store that does not answer is a 503."""
        try:
            return await run_in_threadpool(fn, *args, **kwargs)
        except _STORE_ERRORS as exc:
            raise ApiError(503, "store_unavailable", f"a store did not answer: {exc}") from None

    # --- deciding ----------------------------------------------------------------------------

    async def decide(self, request: Request, token: Token) -> Response:
        data = await read_json(request, self.max_body)
        try:
            action = Action.from_dict(data, where="action")
        except InvalidActionError as exc:
            raise ApiError(400, "invalid_action", str(exc), [field_error(str(exc))]) from None
        decision = await self.check(action)
        request.state.decision_id = decision.id
        return json_response(decision_json(decision))

    async def check(self, action: Action) -> Decision:
        """``Governor.check``, on the event loop when it cannot wait on I/O, else in a thread.

        A check takes microseconds, and a worker-thread hop per decision costs
        about a third of the service's throughput (measured: 4,800 against
        3,300 decisions/s on one worker). But the approval gate runs a ``BEGIN
        IMMEDIATE`` transaction with an fsync on a SQLite file other processes
        write too, which can wait up to the busy timeout: on the event loop that
        would stall every request. So the check runs in a thread whenever
        ``_may_block`` says the path can reach a store that may wait.
        """
        started = perf_counter()
        if self._may_block(action):
            decision: Decision = await run_in_threadpool(self.gov.check, action)
        else:
            decision = self.gov.check(action)
        self.metrics.decided(decision.effect.value, perf_counter() - started)
        return decision

    def _may_block(self, action: Action) -> bool:
        """Whether ``check(action)`` may reach a store that can wait (a lock, an fsync, a network).

        Conservative: anything but the plain path (kill switch and rings from
        memory, policy rules, budgets in memory, the audit queue) counts. The
        approval gate is reachable when a `require_approval` rule may match the
        tool (whatever its `when` says), through the SRE layer, or through the
        flow layer; the identity step reads the trust store; other sinks are
        unknown code.
        """
        gov = self.gov
        policy = gov.policy
        if policy is None or gov.sinks or gov.identity is not None or gov.sre is not None:
            return True
        if policy.flows.present:
            return True
        return bool(policy.candidates(action.tool, action.kind)[1])

    # --- approvals ---------------------------------------------------------------------------

    async def approvals(self, request: Request, token: Token) -> Response:
        params = request.query_params
        _only_params(params, frozenset({"status", "limit"}))
        status = params.get("status", "pending")
        if status not in _STATUSES and status != "all":
            raise invalid(
                f"`status` must be one of {', '.join(sorted(_STATUSES))} or all, not `{status}`",
                "status",
            )
        limit = _limit(params.get("limit"), 200)
        reqs = await self._store(
            self.gov.approvals.list, None if status == "all" else status, limit
        )
        return json_response({"approvals": [r.to_dict() for r in reqs]})

    async def approve(self, request: Request, token: Token) -> Response:
        return await self._decide_approval(request, token, approve=True)

    async def deny(self, request: Request, token: Token) -> Response:
        return await self._decide_approval(request, token, approve=False)

    async def _decide_approval(self, request: Request, token: Token, *, approve: bool) -> Response:
        data = await read_json(request, self.max_body)
        only_fields(data, frozenset({"reason"}))
        reason = optional_text(data, "reason")
        store = self.gov.approvals
        request_id = request.path_params["id"]
        try:
            req = await self._store(
                store.approve if approve else store.deny, request_id, token.subject, reason
            )
        except ApprovalNotFound as exc:
            raise ApiError(404, "not_found", str(exc)) from None
        except SelfApprovalError as exc:
            raise ApiError(403, "self_approval", str(exc)) from None
        except ApprovalStateError as exc:
            raise ApiError(409, "wrong_state", str(exc)) from None
        return json_response(req.to_dict())

    # --- the kill switch ---------------------------------------------------------------------

    async def kill(self, request: Request, token: Token) -> Response:
        scope, target, reason = _kill_body(await read_json(request, self.max_body), kill=True)
        assert reason is not None
        cancelled = await self._store(
            self.gov.runtime.kill, **_target(scope, target), reason=reason, by=token.subject
        )
        return json_response(
            {
                "scope": scope,
                "target": target,
                "reason": reason,
                "by": token.subject,
                "cancelled": cancelled,
            }
        )

    async def restore(self, request: Request, token: Token) -> Response:
        scope, target, reason = _kill_body(await read_json(request, self.max_body), kill=False)
        reason = reason or "restored"
        lifted = await self._store(
            self.gov.runtime.restore, **_target(scope, target), reason=reason, by=token.subject
        )
        if not lifted:
            shown = f"{scope} `{target}`" if target is not None else "all"
            raise ApiError(409, "wrong_state", f"no kill of {shown} is in effect")
        return json_response(
            {"scope": scope, "target": target, "reason": reason, "by": token.subject}
        )

    # --- the audit log -----------------------------------------------------------------------

    async def audit_query(self, request: Request, token: Token) -> Response:
        params = request.query_params
        _only_params(params, _AUDIT_FILTERS)
        effect = params.get("effect")
        if effect is not None and effect not in {e.value for e in Effect}:
            raise invalid(f"`effect` must be allow, deny or require_approval, not `{effect}`")
        filters = {
            "tool": params.get("tool"),
            "agent": params.get("agent"),
            "session": params.get("session"),
            "effect": effect,
            "record_type": params.get("type"),
            "since": _since(params.get("since")),
        }
        limit = _limit(params.get("limit"), 100)
        rows = await self._store(self._select, filters, limit)
        return json_response({"records": [_record(seq, data) for seq, data in rows]})

    def _select(self, filters: dict[str, Any], limit: int) -> list[tuple[int, bytes]]:
        self.log.flush()  # read what was decided before this request
        found: list[tuple[int, bytes]] = []
        for row in self.log.store.select_records(newest=True, **filters):
            found.append(row)
            if len(found) >= limit:
                break
        found.reverse()
        return found

    async def audit_proof(self, request: Request, token: Token) -> Response:
        seq: int = request.path_params["seq"]
        out = await self._store(self._prove, seq)
        if out is None:
            raise ApiError(404, "not_found", f"no audit record {seq}")
        return json_response(out)

    def _prove(self, seq: int) -> dict[str, Any] | None:
        """The record, its inclusion proof and a signed checkpoint covering it (signed if none)."""
        log, store = self.log, self.log.store
        log.flush()
        if seq >= store.size():
            return None
        latest = store.latest_checkpoint()
        if latest is None or latest[0] <= seq:
            log.checkpoint()
            latest = store.latest_checkpoint()
            assert latest is not None
        size, note = latest
        data = store.record(seq)
        leaf = leaf_hash(data)
        proof = store.inclusion_proof(seq, size)
        root = store.root(size)
        try:
            verify_inclusion(leaf, seq, size, proof, root)
            if parse_checkpoint(note, log.verifier, store.origin).root != root:
                raise CheckpointError(
                    f"the stored checkpoint of size {size} does not match the tree"
                )
        except VerificationError as exc:
            raise ApiError(500, "log_integrity", f"audit record {seq}: {exc}") from None
        return {
            "index": seq,
            "size": size,
            "leaf_hash": leaf.hex(),
            "proof": [h.hex() for h in proof],
            "root": root.hex(),
            "checkpoint": note,
            "key": log.verifier.to_string(),
            "record": _record(seq, data),
        }

    async def audit_verify(self, request: Request, token: Token) -> Response:
        _only_params(request.query_params, frozenset())
        async with self._verifying:  # one full pass at a time: it reads the whole log
            out = await self._store(self._verify)
        return json_response(out)

    def _verify(self) -> dict[str, Any]:
        log = self.log
        log.flush()
        try:
            report = verify_log(log.store, log.verifier)
        except VerificationError as exc:
            return {
                "ok": False,
                "error": str(exc),
                "index": getattr(exc, "index", None),
                "expected": _plain(exc.expected),
                "found": _plain(exc.found),
            }
        return {
            "ok": True,
            "size": report.size,
            "root": report.root.hex(),
            "batches": report.batches,
            "checkpoints": report.checkpoints,
            "nodes": report.nodes,
        }

    # --- operations --------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        down = await run_in_threadpool(self._down)
        if not down:
            return json_response({"ok": True})
        errors: list[dict[str, str | None]] = [
            {"field": what, "message": why} for what, why in down
        ]
        body = {
            "ok": False,
            "code": "unhealthy",
            "message": "; ".join(f"{what}: {why}" for what, why in down),
            "errors": errors,
        }
        return json_response(body, 503)

    def _down(self) -> list[tuple[str, str]]:
        """What does not answer, as (component, why)."""
        down: list[tuple[str, str]] = []
        if self.gov.policy is None:
            down.append(("policy", "no policy is loaded"))
        checks: list[tuple[str, Callable[[], object]]] = [
            ("audit", lambda: self.log.flush(timeout=5.0)),
            ("runtime", self.gov.runtime.state.refresh),
            ("approvals", lambda: self.gov.approvals.list("pending", 1)),
            ("tokens", self.tokens.list),
        ]
        for name, probe in checks:
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - anything a store raises means it is down
                down.append((name, str(exc) or type(exc).__name__))
        return down

    async def metrics_text(self, request: Request) -> Response:
        pending = await run_in_threadpool(self._pending)
        text = self.metrics.render(lambda: pending)
        return PlainTextResponse(text, media_type=CONTENT_TYPE)

    def _pending(self) -> int | None:
        try:
            return len(self.gov.approvals.list("pending", 100_000))
        except Exception:  # noqa: BLE001 - the gauge is left out while the store is down
            self.metrics.store_error()
            return None


# --- request parsing -------------------------------------------------------------------------


def _only_params(params: Any, known: frozenset[str]) -> None:
    unknown = sorted(set(params.keys()) - known)
    if unknown:
        hint = f" (known: {', '.join(sorted(known))})" if known else ""
        raise invalid(f"unknown query parameter `{unknown[0]}`{hint}", unknown[0])


def _limit(value: str | None, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= _MAX_LIMIT:
        raise invalid(f"`limit` must be a whole number from 1 to {_MAX_LIMIT}, not `{value}`")
    return int(value)


def _since(value: str | None) -> str | None:
    """An ISO 8601 time (UTC unless it has an offset) or an age such as `15m`, as record time."""
    if value is None:
        return None
    text = value.strip()
    try:
        if m := _RELATIVE.fullmatch(text):
            ago = timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
            dt = datetime.fromtimestamp(time.time(), UTC) - ago
        else:
            dt = datetime.fromisoformat(text)
            dt = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise invalid(
            f"`since` must be an ISO 8601 time or an age like 15m, not `{text}`"
        ) from None
    u = dt.astimezone(UTC)
    return (
        f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}"
        f".{u.microsecond:06d}Z"
    )


def _kill_body(data: dict[str, Any], *, kill: bool) -> tuple[str, str | None, str | None]:
    only_fields(data, _KILL_FIELDS)
    scope = data.get("scope")
    if scope not in ("agent", "session", "all"):
        raise invalid("`scope` must be agent, session or all", "scope")
    target = data.get("target")
    if scope == "all":
        if target is not None:
            raise invalid("`target` must be null when `scope` is all", "target")
    elif not isinstance(target, str) or not target.strip() or len(target) > 1024:
        raise invalid(f"`target` must name the {scope} (a string of 1-1024 characters)", "target")
    reason = optional_text(data, "reason")
    if kill and (reason is None or not reason.strip()):
        raise invalid("`reason` is required: it is recorded and shown in every denial", "reason")
    return scope, target, reason


def _target(scope: str, target: str | None) -> dict[str, Any]:
    if scope == "all":
        return {"all": True}
    return {scope: target}


def _plain(value: object) -> object:
    if value is None or isinstance(value, int | str):
        return value
    return value.hex() if isinstance(value, bytes) else str(value)


def _record(seq: int, data: bytes) -> Any:
    """A stored record as JSON, or a stand-in naming its seq when it is not JSON (tampered)."""
    try:
        return msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {"seq": seq, "unreadable": "the stored record is not JSON"}
