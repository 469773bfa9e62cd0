"""The web console of ``warden serve`` (docs/fleet.md, "The console").

Server-rendered HTML under ``/console``: the approvals inbox, the audit
explorer (a record with its inclusion proof, verified here against a signed
checkpoint), the agents (kills, rings, trust, budgets, breakers) and the
policy in force. One stylesheet and one small script are served from the
package; nothing is loaded from anywhere else (the Content-Security-Policy
says so to the browser too).

Authentication: the operator pastes an API token on the login page; it is
kept in an HttpOnly, SameSite=Strict cookie scoped to ``/console`` (Secure
when the request came over https) and checked on every request exactly as a
bearer token is, with the same scopes: ``read`` to see, ``approve`` to
approve or deny, ``operate`` to kill or restore.

CSRF: every form carries the value of a random ``warden_csrf`` cookie in a
hidden field (double submit); a POST whose field does not match the cookie,
whose ``Origin`` is another site's, or that the browser marks
``Sec-Fetch-Site: cross-site`` is refused before anything else is read.

Actions run the API's own handlers (``_Service.approve``, ``deny``, ``kill``,
``restore``) on the form's fields, so validation, errors and effects are the
API's, and each leaves the ``warden.api/v1`` record that names the token's
subject (its ``path`` is the console's).

Every value shown is escaped with ``html.escape``: the audit log and the
approval requests hold whatever agents sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs, quote, urlencode

import msgspec
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from warden.audit import DECISION_V1, parse_checkpoint, verify_inclusion
from warden.errors import CheckpointError, VerificationError
from warden.server._tokens import Token
from warden.server._wire import ApiError

if TYPE_CHECKING:
    from warden.server._app import _Service

__all__ = ["AUTH_COOKIE", "CSRF_COOKIE", "console_routes"]

AUTH_COOKIE: Final = "warden_console"
CSRF_COOKIE: Final = "warden_csrf"
_PREFIX: Final = "/console"
_MAX_FORM: Final = 64 * 1024
_AGENT_SCAN: Final = 5000
_AUDIT_LIMIT: Final = 100
_STATIC: Final = {"console.css": "text/css", "console.js": "text/javascript"}
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    # not no-referrer: with it Chromium sends `Origin: null` on the console's own posts
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_NAV: Final = (("inbox", "Inbox"), ("audit", "Audit"), ("agents", "Agents"), ("policy", "Policy"))
_DONE: Final = {
    "approved": "approved request",
    "denied": "denied request",
    "killed": "killed",
    "restored": "restored",
}
_EFFECTS: Final = ("allow", "deny", "require_approval")
_AUDIT_FIELDS: Final = ("tool", "agent", "session", "effect", "type")

_log = logging.getLogger("warden.server.console")

Page = Callable[[Request, Token, str], Awaitable[Response]]


class _Refused(Exception):
    """A console request answered with a page other than the one asked for."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def console_routes(svc: _Service) -> list[BaseRoute]:
    """The console's routes over the service ``svc`` (mounted by ``create_app``)."""
    c = _Console(svc)
    return [
        Route(_PREFIX, c.root, methods=["GET"]),
        Route(f"{_PREFIX}/", c.root, methods=["GET"]),
        Route(f"{_PREFIX}/login", c.login_form, methods=["GET"]),
        Route(f"{_PREFIX}/login", c.login, methods=["POST"]),
        Route(f"{_PREFIX}/logout", c.logout, methods=["POST"]),
        Route(f"{_PREFIX}/static/{{name}}", c.static, methods=["GET"]),
        Route(f"{_PREFIX}/inbox", c.page(c.inbox, "read"), methods=["GET"]),
        Route(
            f"{_PREFIX}/approvals/{{id}}/approve",
            c.action(c.approve, "approve"),
            methods=["POST"],
        ),
        Route(f"{_PREFIX}/approvals/{{id}}/deny", c.action(c.deny, "approve"), methods=["POST"]),
        Route(f"{_PREFIX}/audit", c.page(c.audit, "read"), methods=["GET"]),
        Route(f"{_PREFIX}/audit/{{seq:int}}", c.page(c.record, "read"), methods=["GET"]),
        Route(f"{_PREFIX}/agents", c.page(c.agents, "read"), methods=["GET"]),
        Route(f"{_PREFIX}/kill", c.action(c.kill, "operate"), methods=["POST"]),
        Route(f"{_PREFIX}/restore", c.action(c.restore, "operate"), methods=["POST"]),
        Route(f"{_PREFIX}/policy", c.page(c.policy, "read"), methods=["GET"]),
    ]


class _Console:
    """The console's pages and actions over one ``_Service``."""

    def __init__(self, svc: _Service) -> None:
        self.svc = svc
        base = resources.files("warden.server").joinpath("static")
        self.static_files = {name: base.joinpath(name).read_bytes() for name in _STATIC}

    # --- authentication and CSRF ---------------------------------------------------------------

    def _token(self, request: Request) -> Token | None:
        presented = request.cookies.get(AUTH_COOKIE)
        if not presented:
            return None
        try:
            return self.svc.tokens.authenticate(presented)
        except (sqlite3.Error, OSError) as exc:  # OSError: PostgreSQL's StoreUnavailable
            raise _Refused(
                _error_page(request, 503, f"the token store cannot be read: {exc}")
            ) from None

    def _csrf(self, request: Request) -> tuple[str, bool]:
        """The session's CSRF value, and whether it is new (then the answer sets the cookie)."""
        value = request.cookies.get(CSRF_COOKIE, "")
        if len(value) >= 32 and value.isascii():
            return value, False
        return secrets.token_urlsafe(32), True

    async def _form(self, request: Request) -> dict[str, str]:
        """A POSTed form, refused unless it came from a console page of this site.

        Order matters: the origin and the CSRF field are checked before the
        token, so a cross-site post learns nothing, not even whether the
        cookie it rode on is valid.
        """
        if request.headers.get("sec-fetch-site", "") == "cross-site":
            raise _Refused(_error_page(request, 403, "cross-site form posts are refused"))
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            raise _Refused(_error_page(request, 403, f"a form posted from `{origin}` is refused"))
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype != "application/x-www-form-urlencoded":
            raise _Refused(_error_page(request, 415, "the console takes only its own forms"))
        body = bytearray()
        try:
            async for chunk in request.stream():
                body += chunk
                if len(body) > _MAX_FORM:
                    raise _Refused(_error_page(request, 413, "the form is larger than 64 KiB"))
        except ClientDisconnect:
            raise _Refused(_error_page(request, 400, "the form was not sent whole")) from None
        try:
            parsed = parse_qs(
                body.decode("utf-8"),
                keep_blank_values=True,
                strict_parsing=False,
                max_num_fields=16,
            )
        except (UnicodeDecodeError, ValueError):
            raise _Refused(_error_page(request, 400, "the form is not valid")) from None
        form = {k: v[0] for k, v in parsed.items()}
        cookie = request.cookies.get(CSRF_COOKIE, "")
        field = form.get("csrf", "")
        if not cookie or not hmac.compare_digest(cookie.encode(), field.encode()):
            raise _Refused(
                _error_page(
                    request,
                    403,
                    "the form's CSRF token does not match this session; reload the page and retry",
                )
            )
        return form

    def _login_redirect(self, request: Request) -> Response:
        target = request.url.path
        if request.url.query:
            target += "?" + request.url.query
        return RedirectResponse(f"{_PREFIX}/login?{urlencode({'next': target})}", 303)

    # --- wrappers --------------------------------------------------------------------------------

    def page(self, render: Page, scope: str) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            csrf, new = self._csrf(request)
            try:
                token = self._token(request)
                if token is None:
                    return self._login_redirect(request)
                if scope not in token.scopes:
                    return _error_page(
                        request,
                        403,
                        f"this token lacks the `{scope}` scope",
                        token=token,
                        csrf=csrf,
                    )
                response = await render(request, token, csrf)
            except _Refused as refused:
                response = refused.response
            except ApiError as err:
                response = _error_page(request, err.status, err.message, csrf=csrf)
            except Exception:  # noqa: BLE001 - a bug still answers a page, and is logged
                _log.exception("GET %s failed", request.url.path)
                response = _error_page(request, 500, "the server failed; see its log", csrf=csrf)
            return _finish(request, response, csrf if new else None)

        return endpoint

    def action(
        self,
        run: Callable[[Request, Token, dict[str, str]], Awaitable[tuple[int, Response]]],
        scope: str,
    ) -> Callable[[Request], Awaitable[Response]]:
        """A POST: the form checked (origin, CSRF), the token and its scope, then ``run``.

        ``run`` answers the API handler's status with the page; the
        ``warden.api/v1`` record carries that status (200, 403, 409, ...), as
        for the API, not the 303 that sends the browser back to a page.
        """

        async def endpoint(request: Request) -> Response:
            request.state.decision_id = None
            try:
                form = await self._form(request)
                token = self._token(request)
                if token is None:  # back to the inbox after logging in: a POST cannot be replayed
                    return _finish(request, RedirectResponse(f"{_PREFIX}/login", 303), None)
                if scope not in token.scopes:
                    status, response = (
                        403,
                        _error_page(
                            request, 403, f"this token lacks the `{scope}` scope", token=token
                        ),
                    )
                else:
                    try:
                        status, response = await run(request, token, form)
                    except ApiError as err:  # the page after the action failed (a store is down)
                        status = err.status
                        response = _error_page(request, status, err.message, token=token)
            except _Refused as refused:
                return _finish(request, refused.response, None)
            except Exception:  # noqa: BLE001 - a bug still answers a page, and is logged
                _log.exception("POST %s failed", request.url.path)
                response = _error_page(request, 500, "the server failed; see its log")
                return _finish(request, response, None)
            # attributed like the API: refused requests (403, 409) leave a record too
            recorded = await self.svc._attribute(request, token, Response(status_code=status))
            if recorded.status_code != status:
                message = msgspec.json.decode(bytes(recorded.body))["message"]
                response = _error_page(request, recorded.status_code, message, token=token)
            return _finish(request, response, None)

        return endpoint

    async def _call(
        self,
        handler: Callable[[Request, Token], Awaitable[Response]],
        request: Request,
        token: Token,
        body: Mapping[str, Any],
        path_params: Mapping[str, Any] | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Run an API handler on ``body`` as its JSON request; (status, answer or error body)."""
        raw = json.dumps(dict(body)).encode()
        scope = dict(request.scope)
        scope["headers"] = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(raw)).encode()),
        ]
        scope["path_params"] = dict(path_params or {})
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        try:
            response = await handler(Request(scope, receive), token)
        except ApiError as err:
            if err.status == 503:
                self.svc.metrics.store_error()
            return err.status, {"code": err.code, "message": err.message}
        out: dict[str, Any] = msgspec.json.decode(bytes(response.body))
        return response.status_code, out

    # --- login -----------------------------------------------------------------------------------

    async def root(self, request: Request) -> Response:
        return RedirectResponse(f"{_PREFIX}/inbox", 303)

    async def login_form(self, request: Request) -> Response:
        csrf, new = self._csrf(request)
        page = _login_page(csrf, _safe_next(request.query_params.get("next")), None)
        return _finish(request, HTMLResponse(page), csrf if new else None)

    async def login(self, request: Request) -> Response:
        try:
            form = await self._form(request)
        except _Refused as refused:
            return _finish(request, refused.response, None)
        presented = form.get("token", "").strip()
        nxt = _safe_next(form.get("next"))
        try:
            token = self.svc.tokens.authenticate(presented) if presented else None
        except (sqlite3.Error, OSError) as exc:
            return _finish(
                request, _error_page(request, 503, f"the token store cannot be read: {exc}"), None
            )
        if token is None:
            page = _login_page(form["csrf"], nxt, "unknown or revoked token")
            return _finish(request, HTMLResponse(page, 401), None)
        response = RedirectResponse(nxt, 303)
        secure = request.url.scheme == "https"
        response.set_cookie(
            AUTH_COOKIE,
            presented,
            path=_PREFIX,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        # a fresh CSRF value for the new session
        response.set_cookie(
            CSRF_COOKIE,
            secrets.token_urlsafe(32),
            path=_PREFIX,
            httponly=True,
            samesite="strict",
            secure=secure,
        )
        return _finish(request, response, None)

    async def logout(self, request: Request) -> Response:
        try:
            await self._form(request)
        except _Refused as refused:
            return _finish(request, refused.response, None)
        response = RedirectResponse(f"{_PREFIX}/login", 303)
        response.delete_cookie(AUTH_COOKIE, path=_PREFIX, httponly=True, samesite="strict")
        response.delete_cookie(CSRF_COOKIE, path=_PREFIX, httponly=True, samesite="strict")
        return _finish(request, response, None)

    async def static(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in _STATIC:
            return _finish(request, _error_page(request, 404, f"no file `{name}`"), None)
        response = Response(self.static_files[name], media_type=_STATIC[name])
        response.headers.update(_HEADERS)
        response.headers["Cache-Control"] = "no-cache"
        return response

    # --- the inbox -------------------------------------------------------------------------------

    async def inbox(self, request: Request, token: Token, csrf: str, error: str = "") -> Response:
        store = self.svc.gov.approvals
        pending = await self.svc._store(store.list, "pending", 200)
        recent = [r for r in await self.svc._store(store.list, None, 50) if r.status != "pending"]
        parts = [_flash(request, error), "<h1>Approvals inbox</h1>"]
        if not pending:
            parts.append('<p class="muted" id="no-pending">no request is waiting</p>')
        can = "approve" in token.scopes
        for req in pending:
            action = dict(req.action)
            rid = escape(req.id)
            path = f"{_PREFIX}/approvals/{quote(req.id, safe='')}"
            tool = escape(str(action.get("tool")))
            parts.append(
                f'<section class="card approval" id="{rid}" data-tool="{tool}">'
                f"<h2><code>{tool}</code> "
                f'<span class="muted">{rid}</span></h2>'
                "<dl>"
                f"<dt>agent</dt><dd><code>{_text(req.agent_id)}</code></dd>"
                f"<dt>session</dt><dd><code>{_text(req.session)}</code></dd>"
                f"<dt>rules</dt><dd>{_codes(req.rules)}</dd>"
                f"<dt>why asked</dt><dd>{_lines(req.reasons)}</dd>"
                f"<dt>asked</dt><dd>{_when(req.created_at)}</dd>"
                f"<dt>expires</dt><dd>{_when(req.expires_at)}</dd>"
                f"<dt>policy</dt><dd><code>{escape(req.policy_hash)}</code></dd>"
                "</dl>"
                f'<h3>arguments</h3><pre class="args">{_json(action.get("args", {}))}</pre>'
                f"<details><summary>the whole action</summary><pre>{_json(action)}</pre></details>"
            )
            if can:
                parts.append(
                    f'<form class="inline" method="post" action="{escape(path)}/approve">'
                    f"{_csrf_field(csrf)}"
                    '<input class="reason" type="text" name="reason" maxlength="1024" '
                    'placeholder="reason (recorded)">'
                    '<button class="approve" type="submit">Approve</button>'
                    f'<button class="deny" type="submit" formaction="{escape(path)}/deny">'
                    "Deny</button></form>"
                )
            else:
                parts.append('<p class="muted">this token lacks the `approve` scope</p>')
            parts.append("</section>")
        parts.append("<h2>Recently decided</h2>")
        if recent:
            rows = [
                (
                    f"<code>{escape(r.id)}</code>",
                    f"<code>{_text(r.action.get('tool'))}</code>",
                    f"<code>{_text(r.agent_id)}</code>",
                    f'<span class="status-{escape(r.status)}">{escape(r.status)}</span>',
                    _text(r.decided_by),
                    _text(r.note),
                    _when(r.decided_at),
                )
                for r in recent[:20]
            ]
            parts.append(
                _table(("id", "tool", "agent", "status", "by", "reason", "when"), rows, "recent")
            )
        else:
            parts.append('<p class="muted">none</p>')
        return HTMLResponse(_layout("Inbox", "inbox", token, csrf, "".join(parts)))

    async def approve(
        self, request: Request, token: Token, form: dict[str, str]
    ) -> tuple[int, Response]:
        return await self._decide(request, token, form, approve=True)

    async def deny(
        self, request: Request, token: Token, form: dict[str, str]
    ) -> tuple[int, Response]:
        return await self._decide(request, token, form, approve=False)

    async def _decide(
        self, request: Request, token: Token, form: dict[str, str], *, approve: bool
    ) -> tuple[int, Response]:
        rid = request.path_params["id"]
        reason = form.get("reason", "").strip()
        handler = self.svc.approve if approve else self.svc.deny
        status, out = await self._call(
            handler, request, token, {"reason": reason or None}, {"id": rid}
        )
        if status == 200:
            done = "approved" if approve else "denied"
            return status, RedirectResponse(
                f"{_PREFIX}/inbox?{urlencode({'done': done, 'what': rid})}", 303
            )
        page = await self.inbox(request, token, form["csrf"], error=out["message"])
        page.status_code = status
        return status, page

    # --- the audit explorer ----------------------------------------------------------------------

    async def audit(self, request: Request, token: Token, csrf: str) -> Response:
        params = request.query_params
        given = {k: params.get(k, "").strip() for k in _AUDIT_FIELDS}
        error = ""
        if given["effect"] and given["effect"] not in _EFFECTS:
            error = f"`effect` must be allow, deny or require_approval, not `{given['effect']}`"
            given["effect"] = ""
        filters = {
            "tool": given["tool"] or None,
            "agent": given["agent"] or None,
            "session": given["session"] or None,
            "effect": given["effect"] or None,
            "record_type": given["type"] or None,
            "since": None,
        }
        rows: list[tuple[int, bytes]] = await self.svc._store(
            self.svc._select, filters, _AUDIT_LIMIT
        )
        parts = [_flash(request, error), "<h1>Audit log</h1>"]
        parts.append(f'<form class="inline" method="get" action="{_PREFIX}/audit">')
        for name in ("tool", "agent", "session", "type"):
            parts.append(
                f'<label>{name} <input type="text" name="{name}" '
                f'value="{escape(given[name])}"></label>'
            )
        options = "".join(
            f'<option value="{e}"{" selected" if given["effect"] == e else ""}>{e}</option>'
            for e in ("", *_EFFECTS)
        )
        parts.append(f'<label>effect <select name="effect">{options}</select></label>')
        parts.append('<button type="submit" class="primary">Filter</button></form>')
        parts.append(
            f'<p class="muted">the newest {_AUDIT_LIMIT} matching records, newest first; '
            "filters are exact values</p>"
        )
        table_rows = []
        for seq, data in reversed(rows):
            rec = _decode(data)
            table_rows.append(
                (
                    f'<a href="{_PREFIX}/audit/{seq}">{seq}</a>',
                    _text(rec.get("time")),
                    f"<code>{_text(rec.get('type'))}</code>",
                    f"<code>{_text(_agent_of(rec))}</code>",
                    f"<code>{_text(_tool_of(rec))}</code>",
                    _effect(_effect_of(rec)),
                    _text(_summary(rec)),
                )
            )
        if table_rows:
            parts.append(
                _table(
                    ("seq", "time", "type", "agent", "tool", "effect", "summary"),
                    table_rows,
                    "records",
                )
            )
        else:
            parts.append('<p class="muted">no record matches</p>')
        return HTMLResponse(_layout("Audit", "audit", token, csrf, "".join(parts)))

    async def record(self, request: Request, token: Token, csrf: str) -> Response:
        seq: int = request.path_params["seq"]
        failure: str | None = None
        try:
            out = await self.svc._store(self.svc._prove, seq)
        except ApiError as err:
            if err.code != "log_integrity":
                raise
            out, failure = None, err.message
        else:
            if out is None:
                return _error_page(request, 404, f"no audit record {seq}", token=token, csrf=csrf)
        parts = [f"<h1>Audit record {seq}</h1>"]
        if out is None:
            parts.append(
                f'<p class="unverified" id="verification">NOT verified: {escape(str(failure))}</p>'
            )
            return HTMLResponse(_layout("Audit", "audit", token, csrf, "".join(parts)), 500)
        verdict = self._verify(out)
        parts.append(verdict)
        parts.append(f'<h2>Record</h2><pre id="record">{_json(out["record"])}</pre>')
        parts.append("<h2>Inclusion proof</h2><dl>")
        parts.append(f"<dt>leaf index</dt><dd>{out['index']}</dd>")
        parts.append(f"<dt>tree size</dt><dd>{out['size']}</dd>")
        parts.append(f"<dt>leaf hash</dt><dd><code>{escape(out['leaf_hash'])}</code></dd>")
        parts.append(f"<dt>root</dt><dd><code>{escape(out['root'])}</code></dd>")
        parts.append(f"<dt>log key</dt><dd><code>{escape(out['key'])}</code></dd></dl>")
        proof = "\n".join(out["proof"]) or "(empty: the tree has one leaf)"
        parts.append(f"<h3>audit path</h3><pre>{escape(proof)}</pre>")
        parts.append(f"<h3>signed checkpoint</h3><pre>{escape(out['checkpoint'])}</pre>")
        return HTMLResponse(_layout("Audit", "audit", token, csrf, "".join(parts)))

    def _verify(self, out: Mapping[str, Any]) -> str:
        """Check the proof here, from the hex the page shows: the checkpoint's signature, then
        that its root is the proof's, then the audit path from the leaf to that root."""
        log = self.svc.log
        try:
            checkpoint = parse_checkpoint(out["checkpoint"], log.verifier, log.store.origin)
            root = bytes.fromhex(out["root"])
            if checkpoint.root != root or checkpoint.size != out["size"]:
                raise CheckpointError(
                    f"the checkpoint says size {checkpoint.size}, root {checkpoint.root.hex()}; "
                    f"the proof is for size {out['size']}, root {out['root']}"
                )
            verify_inclusion(
                bytes.fromhex(out["leaf_hash"]),
                out["index"],
                out["size"],
                [bytes.fromhex(h) for h in out["proof"]],
                root,
            )
        except VerificationError as exc:
            return f'<p class="unverified" id="verification">NOT verified: {escape(str(exc))}</p>'
        return (
            f'<p class="verified" id="verification">verified against checkpoint {out["size"]} '
            f"(signed by key <code>{escape(log.verifier.name)}</code>, "
            f"id <code>{escape(log.verifier.key_id.hex())}</code>)</p>"
        )

    # --- agents ----------------------------------------------------------------------------------

    async def agents(self, request: Request, token: Token, csrf: str) -> Response:
        data = await self.svc._store(self._agents_data)
        can = "operate" in token.scopes
        parts = [_flash(request, ""), "<h1>Agents</h1>"]
        rows = []
        for a in data["agents"]:
            aid = a["id"]
            if a["kill"] is not None:
                state = f'<span class="effect-deny">killed</span>: {_text(a["kill"])}'
                button = _kill_form(csrf, "restore", "agent", aid) if can else ""
            else:
                state = "active"
                button = _kill_form(csrf, "kill", "agent", aid) if can else ""
            rows.append(
                (
                    f"<code>{escape(aid)}</code>",
                    _text(a["last_seen"]),
                    str(a["decisions"]),
                    escape(a["trust"]),
                    f"{a['ring']}" + (f" (held: {escape(a['hold'])})" if a["hold"] else ""),
                    state,
                    button,
                )
            )
        if rows:
            parts.append(
                _table(
                    ("agent", "last seen", "decisions", "trust", "ring", "state", ""),
                    rows,
                    "agents",
                )
            )
        else:
            parts.append('<p class="muted">no agent has been seen</p>')
        parts.append("<h2>Kills in effect</h2>")
        if data["kills"]:
            kill_rows = [
                (
                    escape(k.scope),
                    f"<code>{escape(k.target or '*')}</code>",
                    escape(k.reason),
                    escape(k.by),
                    _when(k.at),
                    _kill_form(csrf, "restore", k.scope, k.target or "") if can else "",
                )
                for k in data["kills"]
            ]
            parts.append(
                _table(("scope", "target", "reason", "by", "since", ""), kill_rows, "kills")
            )
        else:
            parts.append('<p class="muted">none</p>')
        if can:
            parts.append(
                "<h2>Kill</h2>"
                f'<form class="inline" method="post" action="{_PREFIX}/kill" id="kill-any">'
                f"{_csrf_field(csrf)}"
                '<select name="scope"><option>agent</option><option>session</option>'
                "<option>all</option></select>"
                '<input type="text" name="target" placeholder="agent or session id">'
                '<input class="reason" type="text" name="reason" required maxlength="1024" '
                'placeholder="reason (required, shown in every denial)">'
                '<button class="kill" type="submit">Kill</button></form>'
            )
        parts.append("<h2>Budgets</h2>")
        parts.append(data["budgets"])
        parts.append("<h2>Breakers</h2>")
        parts.append(data["breakers"])
        return HTMLResponse(_layout("Agents", "agents", token, csrf, "".join(parts)))

    def _agents_data(self) -> dict[str, Any]:
        gov, log = self.svc.gov, self.svc.log
        runtime = gov.runtime
        runtime.state.refresh()
        log.flush()
        seen: dict[str, dict[str, Any]] = {}
        for n, (_, data) in enumerate(
            log.store.select_records(record_type=DECISION_V1, newest=True)
        ):
            if n >= _AGENT_SCAN:
                break
            rec = _decode(data)
            aid = _agent_of(rec)
            if not isinstance(aid, str):
                continue
            entry = seen.setdefault(aid, {"last_seen": rec.get("time"), "decisions": 0})
            entry["decisions"] += 1
        kills = runtime.state.kills()
        holds = {c.agent: c for c in runtime.state.ceilings()}
        ids = set(seen) | set(holds) | {k.target for k in kills if k.scope == "agent"}
        trust = gov.identity.trust if gov.identity is not None else None
        if trust is not None:
            ids |= {t.did for t in trust.agents()}
        agents = []
        for aid in sorted(ids):
            kill = runtime.state.killed(aid, None)
            hold = holds.get(aid)
            if trust is not None:
                snap = trust.snapshot(aid)
                shown = f"{snap.score} ({snap.tier})" + (
                    f", revoked: {snap.reason}" if snap.revoked else ""
                )
            else:
                shown = "not configured"
            agents.append(
                {
                    "id": aid,
                    "last_seen": seen.get(aid, {}).get("last_seen"),
                    "decisions": seen.get(aid, {}).get("decisions", 0),
                    "trust": shown,
                    "ring": runtime.effective_ring({"id": aid}, False),
                    "hold": f"ring {hold.ring}: {hold.reason}, by {hold.by}" if hold else "",
                    "kill": kill.describe() if kill is not None and kill.scope == "agent" else None,
                }
            )
        return {
            "agents": agents,
            "kills": kills,
            "budgets": self._budgets(),
            "breakers": self._breakers(),
        }

    def _budgets(self) -> str:
        policy = self.svc.gov.policy
        specs = policy.budgets if policy is not None else ()
        if not specs:
            return '<p class="muted" id="budgets">not configured</p>'
        usage = {u["budget"]: u for u in self.svc.gov.runtime.budgets.usage()}
        rows = []
        for b in specs:
            limits = ", ".join(
                f"{what} {value}"
                for what, value in (("calls", b.calls), ("tokens", b.tokens), ("cost", b.cost))
                if value is not None
            )
            per = f" per {b.per:g}s" if b.per is not None else ""
            used = usage.get(b.id, {})
            counters = "; ".join(
                f"{what} {_key(k)}: {v}" for what in ("calls", "tokens", "cost")
                for k, v in dict(used.get(what, {})).items()
            )  # fmt: skip
            rows.append(
                (
                    f"<code>{escape(b.id)}</code>",
                    escape(", ".join(b.scope)),
                    escape(", ".join(b.tools) if b.tools else "every tool"),
                    escape(limits + per),
                    escape(counters or "none used"),
                )
            )
        return _table(("budget", "per", "tools", "limits", "used (this server)"), rows, "budgets")

    def _breakers(self) -> str:
        gov = self.svc.gov
        policy = gov.policy
        specs = policy.sre.breakers if policy is not None else ()
        if gov.sre is None or not specs:
            return '<p class="muted" id="breakers">not configured</p>'
        opened: dict[str, list[dict[str, Any]]] = {}
        # the status the SRE layer writes next to the other stores (as `warden status` reads it)
        path = Path(gov._home) / "sre.db"  # no public accessor for the home yet
        if path.exists():
            from warden.sre.status import read_status

            for b in read_status(path)["breakers"]:
                opened.setdefault(b["breaker"], []).append(b)
        rows = []
        for spec in specs:
            states = opened.get(spec.id, [])
            shown = "; ".join(f"{b['state']} [{b['key']}]: {b['reason']}" for b in states)
            rows.append(
                (
                    f"<code>{escape(spec.id)}</code>",
                    escape(str(spec.scope)),
                    escape(shown or "closed"),
                )
            )
        return _table(("breaker", "scope", "state"), rows, "breakers")

    async def kill(
        self, request: Request, token: Token, form: dict[str, str]
    ) -> tuple[int, Response]:
        return await self._switch(request, token, form, kill=True)

    async def restore(
        self, request: Request, token: Token, form: dict[str, str]
    ) -> tuple[int, Response]:
        return await self._switch(request, token, form, kill=False)

    async def _switch(
        self, request: Request, token: Token, form: dict[str, str], *, kill: bool
    ) -> tuple[int, Response]:
        scope = form.get("scope", "")
        target: str | None = form.get("target", "").strip() or None
        if scope == "all":
            target = None
        reason = form.get("reason", "").strip() or None
        handler = self.svc.kill if kill else self.svc.restore
        body = {"scope": scope, "target": target, "reason": reason}
        status, out = await self._call(handler, request, token, body)
        if status == 200:
            done = "killed" if kill else "restored"
            what = f"{scope} {target}" if target is not None else "all"
            return status, RedirectResponse(
                f"{_PREFIX}/agents?{urlencode({'done': done, 'what': what})}", 303
            )
        page = _error_page(request, status, out["message"], token=token, csrf=form["csrf"])
        return status, page

    # --- the policy ------------------------------------------------------------------------------

    async def policy(self, request: Request, token: Token, csrf: str) -> Response:
        policy = self.svc.gov.policy
        if policy is None:
            body = '<h1>Policy</h1><p class="unverified">no policy is loaded</p>'
            return HTMLResponse(_layout("Policy", "policy", token, csrf, body))
        parts = [
            f"<h1>Policy <code>{escape(policy.name)}</code></h1><dl>",
            f'<dt>hash</dt><dd><code id="policy-hash">{escape(policy.hash)}</code></dd>',
            f"<dt>default</dt><dd>{_effect(policy.default.value)}</dd>",
            f"<dt>file</dt><dd><code>{escape(policy.file)}</code></dd>",
        ]
        if policy.description:
            parts.append(f"<dt>description</dt><dd>{escape(policy.description)}</dd>")
        parts.append("</dl><h2>Rules</h2>")
        rows = []
        for r in policy.rules:
            spec = r.spec
            rows.append(
                (
                    f"<code>{escape(r.id)}</code>",
                    _effect(r.effect.value),
                    _codes(spec.tools or ("*",)),
                    _codes(spec.agents or ("*",)),
                    _codes(spec.kinds or ("*",)),
                    f"<code>{escape(spec.when.source)}</code>" if spec.when is not None else "",
                    escape(r.reason),
                )
            )
        parts.append(
            _table(("id", "effect", "tools", "agents", "kinds", "when", "reason"), rows, "rules")
        )
        parts.append("<h2>Source</h2>")
        parts.append(await self.svc._store(_source, policy.file, policy.hash))
        return HTMLResponse(_layout("Policy", "policy", token, csrf, "".join(parts)))


# --- rendering ---------------------------------------------------------------------------------


def _finish(request: Request, response: Response, new_csrf: str | None) -> Response:
    """Add the console's security headers, and the CSRF cookie when this session had none."""
    for name, value in _HEADERS.items():
        response.headers.setdefault(name, value)
    if new_csrf is not None:
        response.set_cookie(
            CSRF_COOKIE,
            new_csrf,
            path=_PREFIX,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
    return response


def _own_origin(request: Request) -> str:
    host = request.headers.get("host", "")
    return f"{request.url.scheme}://{host}"


def _safe_next(value: str | None) -> str:
    """Where to go after logging in: a console path only (never another site)."""
    if (
        value
        and value.startswith(f"{_PREFIX}/")
        and not value.startswith("//")
        and "\\" not in value
        and all(0x20 < ord(ch) < 0x7F for ch in value)
    ):
        return value
    return f"{_PREFIX}/inbox"


def _layout(title: str, current: str, token: Token | None, csrf: str | None, body: str) -> str:
    nav = ""
    if token is not None:
        links = "".join(
            f'<a href="{_PREFIX}/{key}"{" class=current" if key == current else ""}>{label}</a>'
            for key, label in _NAV
        )
        logout = (
            f'<form method="post" action="{_PREFIX}/logout">{_csrf_field(csrf)}'
            '<button type="submit">Log out</button></form>'
            if csrf
            else ""
        )
        nav = (
            f'{links}<span class="who">{escape(token.subject)} '
            f"({escape(', '.join(sorted(token.scopes)))})</span>{logout}"
        )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} - warden</title>"
        f'<link rel="stylesheet" href="{_PREFIX}/static/console.css">'
        f'<script src="{_PREFIX}/static/console.js" defer></script>'
        f"</head><body><header><strong>warden</strong>{nav}</header><main>{body}</main>"
        "</body></html>"
    )


def _login_page(csrf: str, nxt: str, error: str | None) -> str:
    flash = f'<p class="flash error" id="error">{escape(error)}</p>' if error else ""
    body = (
        '<section class="card login"><h1>Log in</h1>'
        f"{flash}"
        "<p>Paste an API token (<code>warden serve token new --subject NAME --scope "
        "read,approve,operate</code>). It is kept in a cookie only this console reads.</p>"
        f'<form method="post" action="{_PREFIX}/login">{_csrf_field(csrf)}'
        f'<input type="hidden" name="next" value="{escape(nxt)}">'
        '<label for="token">token</label>'
        '<input id="token" type="password" name="token" autocomplete="off" required>'
        '<button class="primary" type="submit">Log in</button></form></section>'
    )
    return _layout("Log in", "", None, None, body)


def _error_page(
    request: Request,
    status: int,
    message: str,
    *,
    token: Token | None = None,
    csrf: str | None = None,
) -> Response:
    body = (
        f'<p class="flash error" id="error">{escape(message)}</p>'
        f'<p><a href="{_PREFIX}/inbox">back to the console</a></p>'
    )
    return HTMLResponse(_layout("Error", "", token, csrf, body), status)


def _flash(request: Request, error: str) -> str:
    if error:
        return f'<p class="flash error" id="error">{escape(error)}</p>'
    done = request.query_params.get("done")
    if done in _DONE:
        what = request.query_params.get("what", "")
        return f'<p class="flash ok" id="done">{_DONE[done]} <code>{escape(what)}</code></p>'
    return ""


def _csrf_field(csrf: str | None) -> str:
    return f'<input type="hidden" name="csrf" value="{escape(csrf or "")}">'


def _kill_form(csrf: str, verb: str, scope: str, target: str) -> str:
    required = " required" if verb == "kill" else ""
    hint = "reason (required)" if verb == "kill" else "reason"
    return (
        f'<form class="inline" method="post" action="{_PREFIX}/{verb}">{_csrf_field(csrf)}'
        f'<input type="hidden" name="scope" value="{escape(scope)}">'
        f'<input type="hidden" name="target" value="{escape(target)}">'
        f'<input type="text" name="reason" maxlength="1024" placeholder="{hint}"{required}>'
        f'<button class="{verb}" type="submit">{verb.capitalize()}</button></form>'
    )


def _table(head: Iterable[str], rows: Iterable[Iterable[str]], table_id: str) -> str:
    """A table of cells that are already HTML (every caller escapes what it puts in)."""
    th = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return (
        f'<table id="{escape(table_id)}"><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>'
    )


def _text(value: object) -> str:
    return '<span class="muted">-</span>' if value is None else escape(str(value))


def _codes(values: Iterable[str]) -> str:
    return ", ".join(f"<code>{escape(str(v))}</code>" for v in values) or _text(None)


def _lines(values: Iterable[str]) -> str:
    return "<br>".join(escape(str(v)) for v in values) or _text(None)


def _json(value: object) -> str:
    return escape(json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=str))


def _effect(value: object) -> str:
    if value is None:
        return _text(None)
    shown = escape(str(value))
    return f'<span class="effect-{shown}">{shown}</span>'


def _when(ts: float | None) -> str:
    if ts is None:
        return _text(None)
    return escape(time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)))


def _key(key: object) -> str:
    if isinstance(key, tuple):
        return "/".join(str(k) for k in key) or "*"
    return str(key)


def _decode(data: bytes) -> dict[str, Any]:
    try:
        rec = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return {"unreadable": "the stored record is not JSON"}
    return rec if isinstance(rec, dict) else {"value": rec}


def _agent_of(rec: Mapping[str, Any]) -> object:
    agent = rec.get("agent")
    if isinstance(agent, dict):
        return agent.get("id")
    if agent is None and rec.get("type") == "warden.api/v1":
        return None
    return agent


def _tool_of(rec: Mapping[str, Any]) -> object:
    action = rec.get("action")
    if isinstance(action, dict):
        return action.get("tool")
    return rec.get("tool")


def _effect_of(rec: Mapping[str, Any]) -> object:
    decision = rec.get("decision")
    return decision.get("effect") if isinstance(decision, dict) else None


def _summary(rec: Mapping[str, Any]) -> str:
    """One line about a record: its reasons, its request, or its kill."""
    decision = rec.get("decision")
    if isinstance(decision, dict):
        reasons = decision.get("reasons")
        if isinstance(reasons, list) and reasons:
            return "; ".join(str(r) for r in reasons)[:200]
    kind = rec.get("type")
    if kind == "warden.api/v1":
        return f"{rec.get('subject')}: {rec.get('method')} {rec.get('path')} {rec.get('status')}"
    if isinstance(kind, str) and kind.startswith(("warden.kill/", "warden.restore/")):
        target = rec.get("target") or "*"
        return f"{rec.get('scope')} {target}: {rec.get('reason')}, by {rec.get('by')}"
    return ""


def _source(file: str, expected: str) -> str:
    """The policy's YAML as loaded, when the file on disk still has the loaded hash."""
    try:
        data = Path(file).read_bytes()
    except OSError:
        return '<p class="muted" id="policy-source">the source is not available</p>'
    if "sha256:" + hashlib.sha256(data).hexdigest() != expected:
        return (
            '<p class="muted" id="policy-source">the file has changed since it was loaded '
            "(or is a bundle); its source is not shown</p>"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return '<p class="muted" id="policy-source">the source is not UTF-8 text</p>'
    return f'<pre id="policy-source">{escape(text)}</pre>'
