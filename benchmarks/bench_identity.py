"""Identity benchmarks: signatures, credential chains, the cached Governor check, handshakes.

The handshake is timed between two processes over loopback TCP: this process
initiates, a responder process (benchmarks/identity_peer.py) answers.
"""

from __future__ import annotations

import itertools
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from timing import time_calls
from warden import Action, Governor, load_policy_text
from warden.identity import (
    Identity,
    Verifier,
    delegate,
    issue,
    make_proof,
    verify_signature,
)
from warden.identity.gate import IdentityConfig
from warden.trust import TrustStore

HERE = Path(__file__).resolve().parent
AUD = "bench"
POLICY = """
apiVersion: warden/v1
kind: Policy
name: identity-bench
default: deny
rules:
  - {id: read, tool: "fs.read", effect: allow}
  - {id: drop, tool: "db.drop", effect: deny}
  - {id: low-trust, when: "agent.trust < 300", effect: deny}
"""


def _us(stats: dict[str, Any]) -> float:
    return round(stats["p50_ns"] / 1e3, 2)


def bench_signatures(max_samples: int, budget_ns: int) -> dict[str, Any]:
    ident = Identity.generate()
    msg = b"x" * 256
    sig = ident.sign(msg)
    return {
        "sign": time_calls(lambda: ident.sign(msg), max_samples, budget_ns),
        "verify": time_calls(lambda: verify_signature(ident.did, sig, msg), max_samples, budget_ns),
    }


def bench_credentials(max_samples: int, budget_ns: int) -> dict[str, Any]:
    root = Identity.generate()
    agents = [Identity.generate() for _ in range(3)]
    token = issue(root, agents[0].did, ["fs.*", "db.read"], audience=AUD, ttl=3600)
    chain = token
    for holder, to in itertools.pairwise(agents):
        chain = delegate(chain, holder, to.did, ["fs.*"], ttl=600)
    uncached = Verifier([root.did], AUD, cache_size=0)
    cached = Verifier([root.did], AUD)
    cached.verify(token)
    return {
        "verify_1_link": time_calls(lambda: uncached.verify(token), max_samples, budget_ns),
        "verify_3_links": time_calls(lambda: uncached.verify(chain), max_samples, budget_ns),
        "verify_cached": time_calls(lambda: cached.verify(token), max_samples, budget_ns),
        "token_bytes": {"1_link": len(token), "3_links": len(chain)},
    }


def bench_governor(max_samples: int, budget_ns: int, work: Path) -> dict[str, Any]:
    root, agent = Identity.generate(), Identity.generate()
    trust = TrustStore(work / "trust.db")
    policy = load_policy_text(POLICY)
    gov = Governor(
        policy,
        home=work / "home",
        audit=False,
        identity=IdentityConfig(roots=[root.did], audience=AUD, trust=trust),
    )
    assert gov.identity is not None
    token = issue(root, agent.did, ["fs.*"], audience=AUD, ttl=3600, ring=2)
    proof = make_proof(agent, token, gov.identity.challenge(), AUD)
    va = gov.identity.authenticate(token, proof)
    action = Action(tool="fs.read", args={"path": "/tmp/x"}, session=va.session)
    assert gov.check(action).allowed
    plain = Governor(policy, audit=False)
    host = Action(tool="fs.read", args={"path": "/tmp/x"}, agent={"trust": 700, "ring": 2})
    assert plain.check(host).allowed

    def login() -> None:
        assert gov.identity is not None
        gov.identity.authenticate(token, make_proof(agent, token, gov.identity.challenge(), AUD))

    # A deny by a rule also records a signed violation (sign + a durable SQLite commit). The
    # agent starts at 1000 and is never revoked here, so every sample takes that path.
    strict = TrustStore(work / "trust-deny.db", baseline=1000, revoke_below=0)
    denier = Governor(
        policy,
        home=work / "home2",
        audit=False,
        identity=IdentityConfig(roots=[root.did], audience=AUD, trust=strict),
    )
    assert denier.identity is not None
    token_all = issue(root, agent.did, ["*"], audience=AUD, ttl=3600)
    va2 = denier.identity.authenticate(
        token_all, make_proof(agent, token_all, denier.identity.challenge(), AUD)
    )
    drop = Action(tool="db.drop", session=va2.session)
    assert denier.check(drop).rules == ("drop",)

    out = {
        "check_deny_reported": time_calls(
            lambda: denier.check(drop), max(200, max_samples // 20), budget_ns
        ),
        "resolve": time_calls(lambda: gov.identity.resolve(action), max_samples, budget_ns),  # type: ignore[union-attr]
        "check_identity": time_calls(lambda: gov.check(action), max_samples, budget_ns),
        "check_host_asserted": time_calls(lambda: plain.check(host), max_samples, budget_ns),
        "authenticate": time_calls(login, max(200, max_samples // 20), budget_ns),
    }
    trust.close()
    strict.close()
    return out


def bench_handshake(rounds: int, work: Path) -> dict[str, Any]:
    """Median wall time of a full handshake against a responder in another process."""
    from warden.identity.handshake import initiate
    from warden.identity.transport import connect

    root = Identity.generate()
    me, peer = Identity.generate(), Identity.generate()
    (work / "root.pem").write_bytes(root.to_pem())
    (work / "peer.pem").write_bytes(peer.to_pem())
    my_cred = issue(root, me.did, ["chat.*"], audience=AUD, ttl=3600)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "identity_peer.py"), str(work), AUD, str(rounds + 5)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        verifier = Verifier([root.did], AUD)
        samples: list[int] = []
        for i in range(rounds + 5):
            t0 = time.perf_counter_ns()
            transport = connect("127.0.0.1", port)
            session = initiate(transport, me, my_cred, verifier, purpose="bench")
            t1 = time.perf_counter_ns()
            transport.close()
            assert session.peer.subject == peer.did
            if i >= 5:  # the first few warm up both processes
                samples.append(t1 - t0)
        proc.wait(timeout=30)
    finally:
        proc.kill()
    samples.sort()
    return {
        "rounds": rounds,
        "p50_ms": round(statistics.median(samples) / 1e6, 3),
        "p90_ms": round(samples[int(len(samples) * 0.9)] / 1e6, 3),
    }


def bench_envelopes(max_samples: int, budget_ns: int) -> dict[str, Any]:
    from warden.identity.envelope import EnvelopeReader, EnvelopeWriter
    from warden.identity.handshake import Responder, initiate
    from warden.identity.transport import socket_pair

    root = Identity.generate()
    a, b = Identity.generate(), Identity.generate()
    verifier = Verifier([root.did], AUD)
    ca = issue(root, a.did, ["*"], audience=AUD, ttl=3600)
    cb = issue(root, b.did, ["*"], audience=AUD, ttl=3600)
    ta, tb = socket_pair()
    import threading

    box: dict[str, Any] = {}
    t = threading.Thread(
        target=lambda: box.update(s=Responder(b, cb, verifier).respond(tb)), daemon=True
    )
    t.start()
    sa = initiate(ta, a, ca, verifier, purpose="bench")
    t.join()
    sb = box["s"]
    body = b"y" * 512
    writer = EnvelopeWriter(sa)
    reader = EnvelopeReader(sb)
    seal = time_calls(lambda: writer.seal(body), max_samples, budget_ns)
    writer = EnvelopeWriter(sa)  # sequence numbers start at 0 again for the reader
    wires = [writer.seal(body) for _ in range(min(max_samples, 5000))]
    it = iter(wires)
    open_ = time_calls(lambda: reader.open(next(it)), len(wires) - 1000, budget_ns)
    ta.close()
    tb.close()
    return {"seal": seal, "open": open_}


def run(max_samples: int, budget_s: float, handshakes: int = 200) -> dict[str, Any]:
    budget = int(budget_s * 1e9 / 4)
    print("warden identity:", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        return {
            "signatures": bench_signatures(max_samples, budget),
            "credentials": bench_credentials(max_samples, budget),
            "governor": bench_governor(max_samples, budget, work),
            "handshake": bench_handshake(handshakes, work),
            "envelopes": bench_envelopes(max_samples, budget),
        }


def render(r: dict[str, Any]) -> list[str]:
    s, c, g = r["signatures"], r["credentials"], r["governor"]
    h, e = r["handshake"], r["envelopes"]
    return [
        "",
        "### Identity",
        "",
        "| measure | p50 | target |",
        "|---|---:|---:|",
        f"| Ed25519 sign (256 bytes) | {_us(s['sign'])} µs | |",
        f"| Ed25519 verify against a did:key | {_us(s['verify'])} µs | < 200 µs |",
        f"| credential verify, 1 link, uncached ({c['token_bytes']['1_link']} bytes) | "
        f"{_us(c['verify_1_link'])} µs | |",
        f"| credential verify, 3-link delegation chain, uncached "
        f"({c['token_bytes']['3_links']} bytes) | {_us(c['verify_3_links'])} µs | |",
        f"| credential verify, signatures cached (time and revocation re-checked) | "
        f"{_us(c['verify_cached'])} µs | |",
        f"| Governor identity step for a verified session (`IdentityGate.resolve`) | "
        f"{_us(g['resolve'])} µs | < 2 µs |",
        f"| `Governor.check` with identity (resolve + policy) | {_us(g['check_identity'])} µs | |",
        f"| `Governor.check`, host-asserted agent (no identity) | "
        f"{_us(g['check_host_asserted'])} µs | |",
        f"| `Governor.check`, deny by a rule, with its signed violation recorded durably | "
        f"{_us(g['check_deny_reported'])} µs | |",
        f"| authenticate: challenge, sign a proof, verify it (credential signature cached) | "
        f"{_us(g['authenticate'])} µs | |",
        f"| full mutual handshake, two processes, loopback TCP ({h['rounds']} rounds) | "
        f"{h['p50_ms']} ms (p90 {h['p90_ms']}) | < 5 ms |",
        f"| envelope seal (512-byte body) | {_us(e['seal'])} µs | |",
        f"| envelope open (verify, replay and order checks) | {_us(e['open'])} µs | |",
    ]


def render_reference(ours: dict[str, Any], ref: dict[str, Any]) -> list[str]:
    """warden beside the reference toolkit's identity layer (benchmarks/compare/agt_identity.py)."""
    sig, hs = ref["signatures"], ref["handshake"]
    chain = ref["credentials"]["scope_chain"]
    probes = hs["probes"]
    fail_open = [
        name
        for section in (hs["probes"], chain["probes"])
        for name, p in section.items()
        if p.get("fail_open")
    ]
    ref_hs = f"{hs['full']['p50_ms']} ms, in one process (simulated: {hs['parties']} party)"
    return [
        "",
        f"#### Against {ref.get('tool', 'the reference toolkit')} {ref.get('version', '')} "
        "identity, same run",
        "",
        "| measure | warden p50 | reference p50 | reference entry point |",
        "|---|---:|---:|---|",
        f"| Ed25519 verify | {_us(ours['signatures']['verify'])} µs | "
        f"{sig['verify']['p50_ns'] / 1e3:.2f} µs | `{sig['verify']['api']}` |",
        f"| 3-link delegation chain, every signature checked | "
        f"{_us(ours['credentials']['verify_3_links'])} µs | "
        f"{chain['verify_3_links_2_signatures_checked']['p50_ns'] / 1e3:.2f} µs "
        f"(2 of 3 links signed) | `{chain['api']}` |",
        f"| handshake | {ours['handshake']['p50_ms']} ms, two processes over TCP | {ref_hs} | "
        f"`{hs['api']}` |",
        "",
        "What the reference handshake is: "
        + (
            "the initiator looks the peer up in its own registry, which holds the peer's "
            "private key, and signs the peer's answer itself; a peer registered with its "
            "public key only (any real remote agent) cannot complete it"
            if probes.get("peer_response_fabricated_locally", {}).get("initiator_can_sign_as_peer")
            else hs.get("what", "?")
        )
        + f" (`{probes.get('remote_peer_public_key_only', {}).get('rejection_reason', '?')}`).",
        "",
        "Reference probes that failed open (accepted what must be refused): "
        + (", ".join(f"`{n}`" for n in fail_open) if fail_open else "none")
        + ". warden's equivalents (a revoked peer, a forged or widened chain) are refused by "
        "tests in tests/identity/.",
    ]
