"""Flow benchmarks: argument provenance lookup in a large session, the decision path, recording."""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from timing import time_calls
from warden import Governor, load_policy_text

POLICY = """
apiVersion: warden/v1
kind: Policy
name: bench-flows
default: deny
rules:
  - {id: all, tool: "*", effect: allow}
  - id: no-injected-payee
    tool: bank.pay
    effect: deny
    when: "'injected' in provenance(args.iban)"
flows:
  egress:
    mail.send: {to: to, allow: ["*@corp.example"]}
  sequences:
    - {id: no-leak, after: [secret], tools: egress, effect: deny}
"""
SESSION_VALUES = 10_000


def _iban(rng: random.Random) -> str:
    """A valid German IBAN (mod-97 check digits computed)."""
    bban = "".join(rng.choice("0123456789") for _ in range(18))
    digits = bban + "131400"  # "DE00" moved to the end, letters as numbers (D=13, E=14)
    check = 98 - int(digits) % 97
    return f"DE{check:02d}{bban}"


def _fill(session: Any, n: int) -> list[str]:
    """Record ``n`` labelled values (IBANs, emails, ids) as tool results would bring them."""
    rng = random.Random(7)
    ibans = []
    for i in range(-(-n // 3)):
        iban = _iban(rng)
        ibans.append(iban)
        session.record(
            {"iban": iban, "email": f"user{i}@shop{i % 97}.example", "ref": f"INV-{i:06d}-X"},
            ["untrusted"],
        )
    return ibans


def run(max_samples: int, budget_s: float) -> dict[str, Any]:
    print("warden flows:", file=sys.stderr)
    budget = int(budget_s * 1e9 / 6)
    with tempfile.TemporaryDirectory() as tmp:
        gov = Governor(load_policy_text(POLICY), home=Path(tmp), audit=False)
        mail = (Path(__file__).parent / "data" / "mail.txt").read_text()
        with gov.session("bench", user_request="pay the invoice from bob@corp.example") as s:
            ibans = _fill(s, SESSION_VALUES)
            flow = s.flow
            assert flow is not None
            keys = len(flow.keys)
            one = ibans[len(ibans) // 2]
            sentence = (
                f"Transfer 1,450 EUR to {one[:4]} {one[4:8]} {one[8:]} per invoice INV-000042-X"
            )
            args = {"iban": one, "amount": 1450, "memo": "rent December", "to": "bob@corp.example"}
            action = gov.action_for("bank.pay", args)
            out = {
                "values": len(ibans) * 3,
                "keys": keys,
                "lookup_value": time_calls(lambda: flow.leaf_labels(one), max_samples, budget),
                "lookup_sentence": time_calls(
                    lambda: flow.leaf_labels(sentence), max_samples, budget
                ),
                "action_labels": time_calls(
                    lambda: flow.action_flow(args, False), max_samples, budget
                ),
                "action_labels_scanned": time_calls(
                    lambda: flow.action_flow(args, True), max_samples, budget
                ),
                "check": time_calls(lambda: gov.check(action), max_samples, budget),
                "record_mail": time_calls(
                    lambda: flow.record(mail, ["untrusted"]), max_samples // 10, budget
                ),
                "mail_bytes": len(mail.encode()),
            }
        plain = Governor(load_policy_text(POLICY.partition("flows:")[0]), home=Path(tmp) / "p",
                         audit=False)  # fmt: skip
        out["check_plain"] = time_calls(
            lambda: plain.check(plain.action_for("bank.pay", args)), max_samples, budget
        )
    return out


def render(r: dict[str, Any]) -> list[str]:
    def us(s: dict[str, Any]) -> str:
        return f"{s['p50_ns'] / 1e3:.2f} µs"

    return [
        "",
        "### Flows",
        "",
        f"A session holding {r['values']:,} labelled values (tool results of an IBAN, an email "
        f"and an invoice id each), indexed under {r['keys']:,} keys (exact values, identifiers "
        "and the email domains).",
        "",
        "| measure | p50 | target |",
        "|---|---:|---:|",
        f"| provenance of one argument: an IBAN (`SessionFlow.leaf_labels`) | "
        f"{us(r['lookup_value'])} | < 20 µs |",
        f"| provenance of a sentence holding an IBAN and an invoice id | "
        f"{us(r['lookup_sentence'])} | < 20 µs |",
        f"| labels of a 4-argument payment action, unscanned | {us(r['action_labels'])} | |",
        f"| the same, arguments scanned for secrets and instructions | "
        f"{us(r['action_labels_scanned'])} | |",
        f"| `Governor.check` of that payment, flows on (labels, scan, rules, egress, sequences) | "
        f"{us(r['check'])} | |",
        f"| `Governor.check` of that payment, no flows | {us(r['check_plain'])} | |",
        f"| recording a {r['mail_bytes'] / 1024:.1f} KiB mail result (scan, identifiers, labels) | "
        f"{us(r['record_mail'])} | |",
    ]
