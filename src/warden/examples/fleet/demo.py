"""`make demo-fleet`: two `warden serve` replicas on PostgreSQL and Redis, one kill stops both.

    python -m warden.examples.fleet.demo [--hold]

Starts replicas on 127.0.0.1:7071 and :7072 in namespace ``demo_fleet``
(``$WARDEN_TEST_DATABASE_URL``, ``$WARDEN_TEST_REDIS_URL``; defaults: the local
servers), runs scripted agents against both, then kills every agent from replica
1's web console in a headless Chromium driven by Playwright (log in with the
operator token, the Agents page's Kill form with scope ``all`` and a reason),
shows the agents on both replicas denied, restores from the console, shows them
allowed again, then stops the replicas and drops the namespace. Without
Chromium (``/usr/bin/chromium``, `make browser-deps`) or Playwright the kill
and the restore go through ``POST /v1/kill`` and ``/v1/restore`` (the calls the
console's buttons make), and the output says so. ``--hold`` (or
``WARDEN_DEMO_HOLD=1``) keeps the replicas up until Ctrl-C so that the console
can be tried by hand.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from warden.examples.fleet.replicas import DATABASE_URL, REDIS_URL, Fleet, clean

NAMESPACE: Final = "demo_fleet"
PORTS: Final = [7071, 7072]
AGENTS: Final = {"agent-1": 0, "agent-2": 0, "agent-3": 1, "agent-4": 1}  # agent -> replica
CHROMIUM: Final = "/usr/bin/chromium"
KILL_REASON: Final = "demo: operator stops the fleet"
SCRIPT: Final = [
    {"tool": "db.read", "args": {"table": "orders"}},
    {"tool": "ticket.close", "args": {"id": 42}},
    {"tool": "db.drop_table", "args": {"table": "orders"}},
]


def call(url: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            answer: dict[str, Any] = json.load(resp)
    except urllib.error.HTTPError as err:
        answer = {"status": err.code, **json.load(err)}
    return answer


def run_agents(fleet: Fleet, token: str, title: str, script: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for agent, index in AGENTS.items():
        replica = fleet.replicas[index]
        for action in script:
            d = call(f"{replica.url}/v1/decide", token, {**action, "agent": {"id": agent}})
            reason = d["reasons"][-1] if d.get("reasons") else ""
            print(
                f"  {agent} on {replica.name} (:{replica.port})  "
                f"{action['tool']:<14} -> {d['effect']:<5}  {reason}"
            )


def ms(t0: float) -> str:
    return f"{(time.perf_counter() - t0) * 1e3:.0f} ms"


class Console:
    """Replica 1's web console in a headless Chromium, logged in as the operator."""

    def __init__(self, page: Any, url: str) -> None:
        self.page, self.url = page, url

    def login(self, token: str) -> None:
        from playwright.sync_api import expect

        page = self.page
        t0 = time.perf_counter()
        page.goto(f"{self.url}/console/agents")
        expect(page).to_have_url(re.compile(r"/console/login\?next="))
        print(f"\nconsole: opened {self.url}/console/agents -> login page")
        page.fill("#token", token)
        page.click("button[type=submit]")
        expect(page).to_have_url(f"{self.url}/console/agents")
        who = page.locator(".who").inner_text().strip()
        print(f"console: logged in as {who} with the operator token ({ms(t0)})")

    def kill(self) -> None:
        from playwright.sync_api import expect

        page = self.page
        form = page.locator("#kill-any")
        form.locator("select[name=scope]").select_option("all")
        form.locator("input[name=reason]").fill(KILL_REASON)
        print(f'console: Kill form: scope `all`, reason "{KILL_REASON}"')
        t0 = time.perf_counter()
        form.get_by_role("button", name="Kill").click()
        expect(page.locator("#done")).to_contain_text("killed all")
        expect(page.locator("#kills")).to_contain_text(KILL_REASON)
        print(
            f'console: clicked Kill -> "{page.locator("#done").inner_text().strip()}"; '
            f"Kills in effect: all by operator ({ms(t0)})"
        )

    def restore(self) -> None:
        from playwright.sync_api import expect

        page = self.page
        row = page.locator("#kills tr", has_text=KILL_REASON)
        t0 = time.perf_counter()
        row.get_by_role("button", name="Restore").click()
        expect(page.locator("#done")).to_contain_text("restored all")
        print(
            f"\nconsole: clicked Restore on the `all` kill -> "
            f'"{page.locator("#done").inner_text().strip()}" ({ms(t0)})'
        )


@contextmanager
def console(url: str, token: str) -> Iterator[Console | None]:
    """The console in a browser, or None (with a note) without Chromium or Playwright."""
    chromium = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("\nconsole: Playwright is not installed; the API call instead")
        yield None
        return
    if chromium is None:
        print(f"\nconsole: {CHROMIUM} is missing (make browser-deps); the API call instead")
        yield None
        return
    with sync_playwright() as p:
        try:
            browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        except Exception as exc:  # noqa: BLE001 - any launch failure: fall back
            print(f"\nconsole: Chromium did not start ({exc}); the API call instead")
            yield None
            return
        try:
            t0 = time.perf_counter()
            page = browser.new_page()
            page.set_default_timeout(10_000)
            print(f"\nconsole: headless Chromium ({chromium}) via Playwright ({ms(t0)})")
            ui = Console(page, url)
            ui.login(token)
            yield ui
        finally:
            browser.close()


def main(argv: list[str]) -> int:
    hold = "--hold" in argv or os.environ.get("WARDEN_DEMO_HOLD") == "1"
    print(f"fleet demo: PostgreSQL {DATABASE_URL}, Redis {REDIS_URL}, namespace `{NAMESPACE}`")
    try:
        clean(NAMESPACE)  # whatever an interrupted run left
    except Exception as exc:  # noqa: BLE001 - any failure here means the servers are not there
        print(f"fleet demo: PostgreSQL and Redis must be running: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="warden-demo-fleet-") as tmp:
        fleet = Fleet(Path(tmp), NAMESPACE)
        try:
            agents = fleet.token("agents", "decide")
            operator = fleet.token("operator", "decide,read,approve,operate")
            fleet.start(2, ports=PORTS)
            for r in fleet.replicas:
                print(f"{r.name}: {r.url} (home {r.home})")
            run_agents(fleet, agents, "agents at work on both replicas:", SCRIPT)

            a = fleet.replicas[0]
            with console(a.url, operator) as ui:
                if ui is None:
                    kill = {"scope": "all", "reason": KILL_REASON}
                    t0 = time.perf_counter()
                    killed = call(f"{a.url}/v1/kill", operator, kill)
                    print(
                        f"\nPOST {a.url}/v1/kill {json.dumps(kill)} by `{killed['by']}` "
                        f"({ms(t0)}; the console's Kill button makes this same call)"
                    )
                else:
                    ui.kill()
                run_agents(fleet, agents, "the same agents, on both replicas:", SCRIPT[:1])
                if ui is None:
                    t0 = time.perf_counter()
                    call(f"{a.url}/v1/restore", operator, {"scope": "all"})
                    print(f'\nPOST {a.url}/v1/restore {{"scope": "all"}} ({ms(t0)})')
                else:
                    ui.restore()
                run_agents(fleet, agents, "after the restore:", SCRIPT[:1])

            print(f"\nthe web console: {a.url}/console/ (operator token: {operator})")
            if hold:
                print("holding the replicas up; Ctrl-C to stop them")
                try:
                    while all(r.proc.poll() is None for r in fleet.replicas):
                        time.sleep(0.5)
                except KeyboardInterrupt:
                    pass
            else:
                print("(the replicas stop now; `make demo-fleet HOLD=1` keeps them up to try it)")
        finally:
            codes = fleet.stop()
            fleet.clean()
            print(f"\nreplicas stopped (exit {codes}); namespace `{NAMESPACE}` dropped")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
