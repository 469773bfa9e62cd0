"""The web console of `warden serve` (docs/fleet.md, "The console").

The first tests drive the Starlette app in process (TestClient): login and
its cookie, pages that need a token, scopes, CSRF, escaping, each action
through its own code path. The last drive Debian's Chromium with Playwright
against a real uvicorn server: approve, deny, kill, and a verified proof.
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from warden.governor import Governor
from warden.server import API_V1, TokenStore, create_app

POLICY = """\
apiVersion: warden/v1
kind: Policy
name: console-test
default: deny
rules:
  - id: reads
    tool: "db.read"
    effect: allow
  - id: no-drops
    tool: "db.drop_*"
    effect: deny
    reason: dropping tables is not allowed
  - id: refunds
    tool: "payments.refund"
    effect: require_approval
    reason: refunds need a human
"""

ALL = "read,approve,operate"
XSS = "<script>alert('pwned')</script>"


def refund(amount: object, agent: str = "bot-1", session: str = "s1") -> dict[str, Any]:
    return {
        "tool": "payments.refund",
        "args": {"amount": amount},
        "agent": {"id": agent},
        "session": session,
    }


def read(agent: str) -> dict[str, Any]:
    return {"tool": "db.read", "args": {"table": "users"}, "agent": {"id": agent}}


class Console:
    """One app over one home; an agent's bearer token; helpers to log a browser-like client in."""

    def __init__(self, policy: Path, home: Path) -> None:
        self.gov = Governor.from_policy(policy, home=home)
        self.tokens = TokenStore.for_home(home)
        self.app = create_app(self.gov, self.tokens)
        agent, _ = self.tokens.new("bot-host", "decide", by="test")
        self.agent = {"Authorization": f"Bearer {agent}"}

    def client(self) -> TestClient:
        return TestClient(self.app, follow_redirects=False)

    def token(self, subject: str = "alice", scopes: str = ALL) -> str:
        text, _ = self.tokens.new(subject, scopes, by="test")
        return text

    def login(self, client: TestClient, subject: str = "alice", scopes: str = ALL) -> str:
        """Log ``client`` in; the CSRF value its forms must carry."""
        csrf = csrf_of(client.get("/console/login"))
        response = client.post(
            "/console/login", data={"token": self.token(subject, scopes), "csrf": csrf}
        )
        assert response.status_code == 303, response.text
        return csrf_of(client.get("/console/login"))

    def decide(self, client: TestClient, action: dict[str, Any]) -> dict[str, Any]:
        response = client.post("/v1/decide", json=action, headers=self.agent)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def records(self, record_type: str) -> list[dict[str, Any]]:
        assert self.gov.audit is not None
        self.gov.audit.flush()
        rows = self.gov.audit.store.select_records(record_type=record_type)
        return [json.loads(data) for _, data in rows]

    def close(self) -> None:
        if self.gov.audit is not None:
            self.gov.audit.close()
        self.gov.runtime.close()
        self.gov.approvals.close()
        self.tokens.close()


def csrf_of(response: httpx.Response) -> str:
    """The CSRF value in a page's forms."""
    assert response.status_code == 200, response.text
    m = re.search(r'name="csrf" value="([^"]+)"', response.text)
    assert m, response.text
    return m.group(1)


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def con(policy: Path, tmp_path: Path) -> Iterator[Console]:
    console = Console(policy, tmp_path / "home")
    yield console
    console.close()


@pytest.fixture
def client(con: Console) -> Iterator[TestClient]:
    with con.client() as c:
        yield c


# --- login and authentication ------------------------------------------------------------------


def test_login_sets_an_httponly_strict_cookie_and_logout_clears_it(
    con: Console, client: TestClient
) -> None:
    page = client.get("/console/login")
    assert 'name="token"' in page.text
    csrf = csrf_of(page)
    assert client.cookies.get("warden_csrf") == csrf
    response = client.post(
        "/console/login",
        data={"token": con.token(), "csrf": csrf, "next": "/console/agents"},
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/console/agents"
    cookies = response.headers.get_list("set-cookie")
    auth = next(c for c in cookies if c.startswith("warden_console="))
    assert "HttpOnly" in auth and "SameSite=strict" in auth and "Path=/console" in auth
    assert "Secure" not in auth  # plain http on localhost
    # a new session gets a new CSRF value
    assert any(c.startswith("warden_csrf=") for c in cookies)
    assert client.cookies.get("warden_csrf") != csrf

    inbox = client.get("/console/inbox")
    assert inbox.status_code == 200 and "alice" in inbox.text
    out = client.post("/console/logout", data={"csrf": csrf_of(inbox)})
    assert out.status_code == 303
    assert client.get("/console/inbox").status_code == 303


def test_login_refuses_a_bad_token_and_an_offsite_next(con: Console, client: TestClient) -> None:
    csrf = csrf_of(client.get("/console/login"))
    bad = client.post("/console/login", data={"token": "wdn_" + "x" * 43, "csrf": csrf})
    assert bad.status_code == 401 and "unknown or revoked token" in bad.text
    assert "warden_console" not in client.cookies
    for nxt in ("https://evil.example/", "//evil.example/console/", "/v1/decide"):
        csrf = csrf_of(client.get("/console/login"))  # each login starts a new CSRF value
        ok = client.post("/console/login", data={"token": con.token(), "csrf": csrf, "next": nxt})
        assert ok.headers["location"] == "/console/inbox", nxt


@pytest.mark.parametrize(
    "path",
    ["/console/inbox", "/console/audit", "/console/audit/0", "/console/agents", "/console/policy"],
)
def test_pages_redirect_to_login_without_a_valid_token(
    con: Console, client: TestClient, path: str
) -> None:
    response = client.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/console/login?next=")
    client.cookies.set("warden_console", "wdn_" + "y" * 43, path="/console")
    assert client.get(path).status_code == 303
    # a revoked token is refused from the next request
    token = con.token()
    client.cookies.set("warden_console", token, path="/console")
    assert client.get(path).status_code in (200, 404)  # 404: /console/audit/0 of an empty log
    con.tokens.revoke(next(t.id for t in con.tokens.list() if t.subject == "alice"))
    assert client.get(path).status_code == 303


def test_every_page_and_action_needs_its_scope(con: Console, client: TestClient) -> None:
    approval = con.decide(client, refund(30))["approval_id"]
    con.login(client, scopes="decide")
    page = client.get("/console/inbox")
    assert page.status_code == 403 and "lacks the `read` scope" in page.text

    csrf = con.login(client, scopes="read")
    assert client.get("/console/inbox").status_code == 200
    refused = client.post(f"/console/approvals/{approval}/approve", data={"csrf": csrf})
    assert refused.status_code == 403 and "lacks the `approve` scope" in refused.text
    assert con.gov.approvals.get(approval).status == "pending"

    csrf = con.login(client, scopes="read,approve")
    kill = {"csrf": csrf, "scope": "agent", "target": "bot-1", "reason": "x"}
    refused = client.post("/console/kill", data=kill)
    assert refused.status_code == 403 and "lacks the `operate` scope" in refused.text
    assert con.gov.runtime.killed("bot-1", None) is None
    # the refusals are attributed like the API's
    api = [(r["subject"], r["path"], r["status"]) for r in con.records(API_V1)]
    assert ("alice", f"/console/approvals/{approval}/approve", 403) in api
    assert ("alice", "/console/kill", 403) in api


# --- CSRF --------------------------------------------------------------------------------------


def test_forms_without_the_csrf_value_or_from_another_site_are_refused(
    con: Console, client: TestClient
) -> None:
    approval = con.decide(client, refund(30))["approval_id"]
    csrf = con.login(client)
    url = f"/console/approvals/{approval}/approve"
    missing = client.post(url, data={"reason": "ok"})
    assert missing.status_code == 403 and "CSRF" in missing.text
    wrong = client.post(url, data={"reason": "ok", "csrf": "z" * 43})
    assert wrong.status_code == 403
    other = client.post(url, data={"csrf": csrf}, headers={"Origin": "https://evil.example"})
    assert other.status_code == 403 and "evil.example" in other.text
    cross = client.post(url, data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and "cross-site" in cross.text
    as_json = client.post(url, json={"csrf": csrf})
    assert as_json.status_code == 415
    kill = client.post(
        "/console/kill", data={"scope": "agent", "target": "bot-1", "reason": "x", "csrf": "no"}
    )
    assert kill.status_code == 403
    # nothing happened, and no refused form left a record (the token was never looked at)
    assert con.gov.approvals.get(approval).status == "pending"
    assert con.gov.runtime.killed("bot-1", None) is None
    assert not [r for r in con.records(API_V1) if r["path"].startswith("/console")]
    # a login form needs it too (login CSRF)
    fresh = con.client()
    assert fresh.post("/console/login", data={"token": con.token()}).status_code == 403
    assert "warden_console" not in fresh.cookies
    # the same form with the right value goes through
    ok = client.post(
        url, data={"csrf": csrf, "reason": "fine"}, headers={"Origin": "http://testserver"}
    )
    assert ok.status_code == 303


# --- escaping ------------------------------------------------------------------------------------


def test_what_agents_send_is_shown_as_text(con: Console, client: TestClient) -> None:
    action = refund(XSS, agent=f"bot{XSS}", session=XSS)
    approval = con.decide(client, action)["approval_id"]
    con.login(client)
    escaped = "&lt;script&gt;alert(&#x27;pwned&#x27;)&lt;/script&gt;"
    for path in ("/console/inbox", "/console/audit", "/console/agents", "/console/audit/0"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
        assert escaped in page.text or "&lt;script&gt;alert(" in page.text, path
    assert approval in client.get("/console/inbox").text
    # a filter value is escaped too, and every page forbids inline script
    page = client.get("/console/audit", params={"tool": '"><script>x</script>'})
    assert "<script>x" not in page.text and "&quot;&gt;&lt;script&gt;" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]


# --- the actions ---------------------------------------------------------------------------------


def test_approve_and_deny_from_the_inbox(con: Console, client: TestClient) -> None:
    first = con.decide(client, refund(30))["approval_id"]
    second = con.decide(client, refund(40))["approval_id"]
    csrf = con.login(client)
    inbox = client.get("/console/inbox").text
    assert first in inbox and second in inbox
    assert (
        "refunds need a human" in inbox and "bot-1" in inbox and "&quot;amount&quot;: 30" in inbox
    )

    ok = client.post(
        f"/console/approvals/{first}/approve", data={"csrf": csrf, "reason": "customer called"}
    )
    assert ok.status_code == 303
    assert ok.headers["location"] == f"/console/inbox?done=approved&what={first}"
    assert con.decide(client, refund(30))["effect"] == "allow"

    no = client.post(f"/console/approvals/{second}/deny", data={"csrf": csrf, "reason": "too big"})
    assert no.status_code == 303
    after = con.decide(client, refund(40))
    assert after["effect"] == "deny"
    assert after["reasons"][-1] == f"approval {second} denied by `alice`: too big"

    again = client.post(f"/console/approvals/{second}/approve", data={"csrf": csrf})
    assert again.status_code == 409 and "denied" in again.text
    assert client.post("/console/approvals/apr-nope/deny", data={"csrf": csrf}).status_code == 404
    api = [
        (r["subject"], r["method"], r["path"], r["status"])
        for r in con.records(API_V1)
        if r["path"].startswith("/console")
    ]
    assert api == [
        ("alice", "POST", f"/console/approvals/{first}/approve", 200),
        ("alice", "POST", f"/console/approvals/{second}/deny", 200),
        ("alice", "POST", f"/console/approvals/{second}/approve", 409),
        ("alice", "POST", "/console/approvals/apr-nope/deny", 404),
    ]
    assert con.gov.approvals.get(first).decided_by == "alice"


def test_self_approval_is_refused_with_a_clear_message(con: Console, client: TestClient) -> None:
    approval = con.decide(client, refund(30))["approval_id"]
    csrf = con.login(client, subject="bot-1")  # the operator is the requesting agent
    refused = client.post(f"/console/approvals/{approval}/approve", data={"csrf": csrf})
    assert refused.status_code == 403
    assert f"`bot-1` asked for request `{approval}` and cannot approve it" in refused.text.replace(
        "&#x60;", "`"
    )
    assert con.gov.approvals.get(approval).status == "pending"


def test_kill_and_restore_from_the_agents_page(con: Console, client: TestClient) -> None:
    assert con.decide(client, read("bot-2"))["effect"] == "allow"
    csrf = con.login(client)
    page = client.get("/console/agents").text
    assert "bot-2" in page
    assert 'id="budgets">not configured' in page and 'id="breakers">not configured' in page

    empty = client.post(
        "/console/kill", data={"csrf": csrf, "scope": "agent", "target": "bot-2", "reason": ""}
    )
    assert empty.status_code == 400 and "reason" in empty.text
    killed = client.post(
        "/console/kill",
        data={"csrf": csrf, "scope": "agent", "target": "bot-2", "reason": "runaway loop"},
    )
    assert killed.status_code == 303
    denied = con.decide(client, read("bot-2"))
    assert denied["effect"] == "deny" and "runaway loop" in " ".join(denied["reasons"])
    page = client.get("/console/agents").text
    assert "killed: runaway loop (by alice)" in page

    restored = client.post(
        "/console/restore", data={"csrf": csrf, "scope": "agent", "target": "bot-2"}
    )
    assert restored.status_code == 303
    assert con.decide(client, read("bot-2"))["effect"] == "allow"
    nothing = client.post(
        "/console/restore", data={"csrf": csrf, "scope": "agent", "target": "bot-2"}
    )
    assert nothing.status_code == 409
    kinds = [r["type"] for r in con.records("warden.kill/v1") + con.records("warden.restore/v1")]
    assert kinds == ["warden.kill/v1", "warden.restore/v1"]
    assert con.records("warden.kill/v1")[0]["by"] == "alice"


def test_an_audit_record_shows_its_verified_inclusion_proof(
    con: Console, client: TestClient
) -> None:
    decided = con.decide(client, read("bot-3"))
    con.login(client)
    listed = client.get("/console/audit", params={"type": "warden.decision/v1", "agent": "bot-3"})
    assert listed.status_code == 200 and 'href="/console/audit/0"' in listed.text
    assert "effect-allow" in listed.text
    record = client.get("/console/audit/0")
    assert record.status_code == 200
    assert decided["id"] in record.text
    m = re.search(r'id="verification">([^<]*)<code>([^<]*)</code>', record.text)
    assert m and m.group(1).startswith("verified against checkpoint "), record.text
    assert con.gov.audit is not None and m.group(2) == con.gov.audit.verifier.name
    assert client.get("/console/audit/999").status_code == 404
    bad = client.get("/console/audit", params={"effect": "maybe"})
    assert bad.status_code == 200 and "`effect` must be" in bad.text.replace("&#x60;", "`")


def test_a_proof_that_does_not_verify_is_shown_as_such(con: Console, client: TestClient) -> None:
    con.decide(client, read("bot-3"))
    con.decide(client, read("bot-4"))
    con.login(client)
    svc = con.app.state.service
    real = svc._prove

    def forged(seq: int) -> dict[str, Any] | None:
        out: dict[str, Any] | None = real(seq)
        assert out is not None
        out["leaf_hash"] = "00" * 32
        return out

    svc._prove = forged
    page = client.get("/console/audit/1")
    assert 'class="unverified"' in page.text and "verified against" not in page.text


def test_the_policy_page_shows_its_hash_rules_and_source(con: Console, client: TestClient) -> None:
    con.login(client)
    page = client.get("/console/policy")
    assert page.status_code == 200
    assert con.gov.policy is not None
    assert f'id="policy-hash">{con.gov.policy.hash}<' in page.text
    assert "console-test" in page.text and "refunds need a human" in page.text
    assert "no-drops" in page.text and 'id="policy-source">apiVersion: warden/v1' in page.text


def test_the_console_needs_no_other_site(con: Console, client: TestClient) -> None:
    con.login(client)
    page = client.get("/console/inbox").text
    assert not re.search(r'(?:src|href)="(?:https?:)?//', page)
    css = client.get("/console/static/console.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/console/static/console.js").status_code == 200
    assert client.get("/console/static/other.js").status_code == 404
    assert client.get("/console").headers["location"] == "/console/inbox"


# --- a real browser ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"


def _need_browser() -> None:
    required = bool(os.environ.get("CI") or os.environ.get("WARDEN_REQUIRE_BROWSER"))
    missing = None
    if not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing = f"{CHROMIUM} is missing (make browser-deps)"
    else:
        try:
            import playwright.sync_api  # noqa: F401 - only whether it imports
        except ImportError:
            missing = "playwright is not installed"
    if missing is not None:
        if required:
            pytest.fail(f"the browser tests must run here: {missing}")
        pytest.skip(missing)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.contextmanager
def _site(html: str) -> Iterator[str]:
    """A one-page site on localhost (not 127.0.0.1, so another site for the browser)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = html.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def served(con: Console) -> Iterator[str]:
    """The console's app under uvicorn on a free port, in a thread; its base URL."""
    _need_browser()
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(con.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_in_a_browser_approve_deny_kill_and_a_verified_record(con: Console, served: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    api = httpx.Client(base_url=served, headers=con.agent, timeout=10)

    def decide(action: dict[str, Any]) -> dict[str, Any]:
        body: dict[str, Any] = api.post("/v1/decide", json=action).json()
        return body

    first = decide(refund(30))["approval_id"]
    second = decide(refund(45))["approval_id"]
    assert decide(read("bot-2"))["effect"] == "allow"
    token = con.token("alice")

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(10_000)
            page.goto(f"{served}/console/inbox")
            expect(page).to_have_url(re.compile(r"/console/login\?next="))
            page.fill("#token", token)
            page.click("button[type=submit]")
            expect(page).to_have_url(f"{served}/console/inbox")

            # approve the first request; the agent's retry is allowed
            card = page.locator(f"#{first}")
            expect(card).to_contain_text("payments.refund")
            expect(card.locator("pre.args")).to_contain_text('"amount": 30')
            expect(card).to_contain_text("refunds need a human")
            card.locator("input[name=reason]").fill("customer called")
            card.get_by_role("button", name="Approve").click()
            expect(page.locator("#done")).to_contain_text(f"approved request {first}")
            expect(page.locator(f"#{first}")).to_have_count(0)
            assert decide(refund(30))["effect"] == "allow"

            # deny the second with a reason; the agent's retry is denied with it
            card = page.locator(f"#{second}")
            card.locator("input[name=reason]").fill("too large for a refund")
            card.get_by_role("button", name="Deny").click()
            expect(page.locator("#done")).to_contain_text(f"denied request {second}")
            expect(page.locator("#recent")).to_contain_text("too large for a refund")
            denied = decide(refund(45))
            assert denied["effect"] == "deny"
            assert "too large for a refund" in denied["reasons"][-1]

            # kill bot-2 from the agents page; its next decision is denied
            page.click("text=Agents")
            row = page.locator("#agents tr", has_text="bot-2")
            row.locator("input[name=reason]").fill("runaway loop")
            row.get_by_role("button", name="Kill").click()
            expect(page.locator("#done")).to_contain_text("killed agent bot-2")
            expect(page.locator("#agents tr", has_text="bot-2")).to_contain_text("killed")
            killed = decide(read("bot-2"))
            assert killed["effect"] == "deny" and "runaway loop" in " ".join(killed["reasons"])

            # open an audit record: its inclusion proof is verified
            page.click("text=Audit")
            page.fill("input[name=agent]", "bot-2")
            page.select_option("select[name=effect]", "allow")
            page.click("button:has-text('Filter')")
            page.locator("#records tbody a").first.click()
            expect(page.locator("#verification")).to_contain_text("verified against checkpoint")
            expect(page.locator("#record")).to_contain_text('"tool": "db.read"')

            # a form on another site posting to the console is refused, even one that
            # knows the CSRF value: the cookie stays home (SameSite) and the origin is not ours
            csrf = next(c["value"] for c in page.context.cookies() if c["name"] == "warden_csrf")
            attack = (
                f'<form method="post" action="{served}/console/kill">'
                f'<input name="csrf" value="{csrf}"><input name="scope" value="agent">'
                '<input name="target" value="bot-1"><input name="reason" value="csrf">'
                '<button type="submit">go</button></form>'
            )
            with _site(attack) as evil:  # http://localhost:PORT: another site than 127.0.0.1
                page.goto(evil)
                page.click("button")
                expect(page.locator("#error")).to_contain_text("refused")
            assert con.gov.runtime.killed("bot-1", None) is None
        finally:
            browser.close()
    api.close()
    api_records = [(r["subject"], r["path"], r["status"]) for r in con.records(API_V1)]
    assert ("alice", f"/console/approvals/{first}/approve", 200) in api_records
    assert ("alice", f"/console/approvals/{second}/deny", 200) in api_records
    assert ("alice", "/console/kill", 200) in api_records
