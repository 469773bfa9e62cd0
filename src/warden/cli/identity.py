"""`warden id` (keys and DIDs) and `warden cred` (issue, delegate, verify credentials)."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click

from warden.cli._common import console, fail, print_json
from warden.errors import IdentityError, TrustError

_HOME_HELP = "The warden state directory (default: .warden, or $WARDEN_HOME)."
home_option = click.option(
    "--home", default=".warden", envvar="WARDEN_HOME", show_default=True, help=_HOME_HELP
)
pass_option = click.option(
    "--passphrase-env",
    metavar="VAR",
    default=None,
    help="Read the key's passphrase from environment variable VAR (never from the command line).",
)
key_option = click.option(
    "--key", "key_name", default="default", show_default=True, help="Name of the signing key."
)
_TTL = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> float:
    """Seconds from `90`, `90s`, `15m`, `1h` or `7d`; exits 2 with a message if bad."""
    m = _TTL.match(text.strip())
    if not m or float(m.group(1)) <= 0:
        raise click.BadParameter(f"{text!r}: use a positive number with s, m, h or d (e.g. 1h)")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _passphrase(var: str | None) -> bytes | None:
    if var is None:
        return None
    value = os.environ.get(var)
    if not value:
        fail(f"--passphrase-env: environment variable `{var}` is not set or empty")
    return value.encode()


def _keystore(home: str) -> Any:
    from warden.identity.keys import KeyStore

    return KeyStore(Path(home) / "keys")


def load_identity(home: str, name: str, passphrase_env: str | None) -> Any:
    try:
        return _keystore(home).load(name, _passphrase(passphrase_env))
    except IdentityError as exc:
        fail(str(exc))


def read_token(value: str) -> str:
    """A token given inline, as `@FILE`, or `@-` for stdin."""
    if value.startswith("@"):
        name = value[1:]
        try:
            raw = sys.stdin.read(64 * 1024) if name == "-" else Path(name).read_text()[: 64 * 1024]
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"{name}: cannot read the token: {getattr(exc, 'strerror', None) or exc}")
        value = raw
    return value.strip()


def _capabilities(caps: tuple[str, ...]) -> list[Any]:
    out: list[Any] = []
    for i, cap in enumerate(caps):
        if cap.lstrip().startswith("{"):
            try:
                out.append(json.loads(cap))
            except json.JSONDecodeError as exc:
                fail(f"--cap #{i + 1}: invalid JSON at column {exc.colno}: {exc.msg.lower()}")
        else:
            out.append(cap)
    return out


# --- warden id ---------------------------------------------------------------------------------


@click.group(name="id")
def id_() -> None:
    """Ed25519 keys and their did:key identities."""


@id_.command(name="new")
@click.argument("name")
@home_option
@pass_option
def id_new(name: str, home: str, passphrase_env: str | None) -> None:
    """Create a key NAME (PKCS#8 PEM, mode 0600) and print its DID."""
    try:
        ident = _keystore(home).create(name, _passphrase(passphrase_env))
    except IdentityError as exc:
        fail(str(exc))
    click.echo(ident.did)


@id_.command(name="show")
@click.argument("name", required=False)
@home_option
@pass_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def id_show(name: str | None, home: str, passphrase_env: str | None, as_json: bool) -> None:
    """Print the DID of key NAME, or list every key."""
    store = _keystore(home)
    try:
        names = [name] if name else store.names()
        rows = [
            {
                "name": n,
                "did": store.did(n, _passphrase(passphrase_env)),
                "encrypted": store.is_encrypted(n),
                "path": str(store.path(n)),
            }
            for n in names
        ]
    except IdentityError as exc:
        fail(str(exc))
    if as_json:
        print_json(rows[0] if name else rows)
    elif name:
        click.echo(rows[0]["did"])
    elif not rows:
        click.echo(f"no keys in {store.dir} (create one with `warden id new NAME`)")
    else:
        for r in rows:
            click.echo(f"{r['name']}\t{r['did']}{'  (encrypted)' if r['encrypted'] else ''}")


# --- warden cred -------------------------------------------------------------------------------


@click.group()
def cred() -> None:
    """Signed capability credentials: issue, delegate, verify."""


_cap_option = click.option(
    "--cap",
    "caps",
    multiple=True,
    required=True,
    help='A tool glob, or a JSON capability {"tool": ..., "args": {...}}; repeat for more.',
)


@cred.command(name="issue")
@click.option("--to", "subject", required=True, metavar="DID", help="The agent's DID.")
@_cap_option
@click.option("--ttl", default="1h", show_default=True, help="Lifetime: 90s, 15m, 1h, 7d.")
@click.option("--aud", "audience", default="warden", show_default=True, help="Audience.")
@click.option("--ring", default=3, show_default=True, type=click.IntRange(0, 3), help="Ring.")
@key_option
@home_option
@pass_option
def cred_issue(
    subject: str,
    caps: tuple[str, ...],
    ttl: str,
    audience: str,
    ring: int,
    key_name: str,
    home: str,
    passphrase_env: str | None,
) -> None:
    """Issue a credential, signed by key --key (an authority), to agent --to."""
    from warden.identity.credentials import issue

    seconds = parse_ttl(ttl)
    ident = load_identity(home, key_name, passphrase_env)
    try:
        token = issue(
            ident, subject, _capabilities(caps), audience=audience, ttl=seconds, ring=ring
        )
    except IdentityError as exc:
        fail(str(exc))
    click.echo(token)


@cred.command(name="delegate")
@click.argument("parent")
@click.option("--to", "subject", required=True, metavar="DID", help="The delegate's DID.")
@_cap_option
@click.option("--ttl", default="15m", show_default=True, help="Lifetime: 90s, 15m, 1h, 7d.")
@click.option("--ring", default=None, type=click.IntRange(0, 3), help="Ring (default: parent's).")
@key_option
@home_option
@pass_option
def cred_delegate(
    parent: str,
    subject: str,
    caps: tuple[str, ...],
    ttl: str,
    ring: int | None,
    key_name: str,
    home: str,
    passphrase_env: str | None,
) -> None:
    """Delegate a narrower credential from PARENT (token or @FILE), signed by its holder --key."""
    from warden.identity.credentials import delegate

    seconds = parse_ttl(ttl)
    ident = load_identity(home, key_name, passphrase_env)
    try:
        token = delegate(
            read_token(parent), ident, subject, _capabilities(caps), ttl=seconds, ring=ring
        )
    except IdentityError as exc:
        fail(str(exc))
    click.echo(token)


@cred.command(name="verify")
@click.argument("token")
@click.option(
    "--root",
    "roots",
    multiple=True,
    metavar="DID",
    help="A trusted root DID (repeat; default: $WARDEN_ROOTS, comma-separated).",
)
@click.option("--aud", "audience", default="warden", show_default=True, help="Audience.")
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def cred_verify(
    token: str, roots: tuple[str, ...], audience: str, home: str, as_json: bool
) -> None:
    """Verify TOKEN (or @FILE) to a trusted root; print the chain; exit 1 if it fails.

    Revocations recorded in the trust store under --home are honoured.
    """
    from warden.identity.credentials import Verifier

    trusted = list(roots) or [r for r in os.environ.get("WARDEN_ROOTS", "").split(",") if r]
    if not trusted:
        fail("no trusted root: give --root DID (or set WARDEN_ROOTS)")
    store = _open_trust(home, must_exist=False)
    try:
        verifier = Verifier(
            trusted,
            audience,
            revoked=store.is_credential_revoked if store else None,
            agent_revoked=store.is_revoked if store else None,
        )
        verified = verifier.verify(read_token(token))
    except IdentityError as exc:
        fail(f"credential does not verify: {exc}")
    finally:
        if store is not None:
            store.close()
    info = verified.describe()
    if as_json:
        print_json({"valid": True, **info})
        return
    click.echo(
        f"valid: {verified.subject}, ring {verified.ring}, expires {_when(verified.expires)}"
    )
    for depth, link in enumerate(info["chain"]):
        caps = ", ".join(json.dumps(c, separators=(",", ":")) for c in link["capabilities"])
        click.echo(f"  [{depth}] {link['issuer']}")
        click.echo(f"      -> {link['subject']}  ring {link['ring']}  jti {link['jti']}")
        click.echo(f"      capabilities: {caps}")


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z", time.localtime(ts))


def _open_trust(home: str, *, must_exist: bool) -> Any:
    from warden.store import FleetConfig
    from warden.trust import open_trust_store

    path = Path(home) / "trust.db"
    if FleetConfig.from_env().database_url is not None:
        try:
            return open_trust_store(home)
        except TrustError as exc:
            fail(str(exc))
    if not path.exists():
        if must_exist:
            fail(f"`{path}`: no trust store (nothing has been recorded yet)")
        return None
    from warden.trust import TrustStore

    try:
        return TrustStore(path)
    except TrustError as exc:
        fail(str(exc))


# --- warden trust ------------------------------------------------------------------------------


@click.group()
def trust() -> None:
    """Trust scores: show, record signed events, revoke and restore."""


@trust.command(name="show")
@click.argument("did", required=False)
@home_option
@click.option("--events", "n_events", default=10, show_default=True, help="Events to list.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def trust_show(did: str | None, home: str, n_events: int, as_json: bool) -> None:
    """Show one agent's score, tier and latest events, or every known agent."""
    if did is not None:
        _check_did(did)
    store = _open_trust(home, must_exist=did is None)
    if store is None:  # no store yet: the agent has never been seen, so it has the baseline
        from warden.trust import DEFAULT_BASELINE, AgentTrust, tier_of

        snap = AgentTrust(str(did), DEFAULT_BASELINE, tier_of(DEFAULT_BASELINE), False, None)
        _print_agent(snap, [], as_json)
        return
    try:
        if did is not None:
            _print_agent(store.snapshot(did), store.events(did, n_events), as_json)
            return
        agents = [_snap(a) for a in store.agents()]
        if as_json:
            print_json(agents)
            return
        if not agents:
            click.echo("no agents recorded")
            return
        from rich.table import Table

        table = Table()
        for col in ("agent", "trust", "tier", "revoked"):
            table.add_column(col, overflow="fold")
        for a in agents:
            table.add_row(
                a["did"], str(a["score"]), a["tier"], a["reason"] or "-" if a["revoked"] else ""
            )
        console().print(table)
    finally:
        store.close()


@trust.command(name="event")
@click.argument("did")
@click.option("--kind", required=True, type=click.Choice(["violation", "success", "attestation"]))
@click.option("--weight", type=int, default=None, help="Weight (attestations: -1000..1000).")
@click.option("--note", default="", help="Why (recorded with the event).")
@key_option
@home_option
@pass_option
def trust_event(
    did: str,
    kind: str,
    weight: int | None,
    note: str,
    key_name: str,
    home: str,
    passphrase_env: str | None,
) -> None:
    """Record a signed trust event about DID, signed by key --key."""
    from warden.trust import open_trust_store, sign_event

    _check_did(did)
    ident = load_identity(home, key_name, passphrase_env)
    try:
        with open_trust_store(home) as store:
            snap = store.record(sign_event(ident, did, kind, weight, note=note))
    except (TrustError, IdentityError) as exc:
        fail(str(exc))
    state = f", REVOKED ({snap.reason})" if snap.revoked else ""
    click.echo(f"{did}: trust {snap.score} ({snap.tier}{state})")


@trust.command(name="revoke")
@click.argument("did", required=False)
@click.option("--jti", default=None, help="Revoke one credential (by its jti) instead.")
@click.option("--reason", required=True, help="Why (recorded).")
@click.option("--by", default=None, help="Who revokes (default: $USER).")
@home_option
def trust_revoke(did: str | None, jti: str | None, reason: str, by: str | None, home: str) -> None:
    """Revoke agent DID (or credential --jti): its sessions and chains stop verifying."""
    from warden.trust import open_trust_store

    if (did is None) == (jti is None):
        fail("give exactly one of DID or --jti")
    who = by or os.environ.get("USER") or "operator"
    try:
        with open_trust_store(home) as store:
            if jti is not None:
                store.revoke_credential(jti, reason, by=who)
                click.echo(f"credential {jti} revoked")
                return
            assert did is not None
            _check_did(did)
            store.revoke(did, reason, by=who)
    except TrustError as exc:
        fail(str(exc))
    click.echo(f"{did} revoked")


@trust.command(name="restore")
@click.argument("did")
@click.option("--by", default=None, help="Who restores (default: $USER).")
@home_option
def trust_restore(did: str, by: str | None, home: str) -> None:
    """Lift a revocation of DID; its score restarts at the baseline."""
    from warden.trust import open_trust_store

    _check_did(did)
    try:
        with open_trust_store(home) as store:
            snap = store.restore(did, by=by or os.environ.get("USER") or "operator")
    except TrustError as exc:
        fail(str(exc))
    click.echo(f"{did} restored: trust {snap.score} ({snap.tier})")


def _print_agent(snap: Any, events: list[Any], as_json: bool) -> None:
    data = {**_snap(snap), "events": [_event(e) for e in events]}
    if as_json:
        print_json(data)
        return
    state = f"REVOKED ({snap.reason})" if snap.revoked else snap.tier
    click.echo(f"{snap.did}\n  trust {snap.score} / 1000, {state}")
    for e in events:
        sign = "+" if e.delta > 0 else ""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e.at))
        note = f"  ({e.note})" if e.note else ""
        click.echo(f"  {when}  {e.kind:<11} {sign}{e.delta:<5} -> {e.score}  by {e.actor}{note}")


def _check_did(did: str) -> None:
    from warden.identity.did import public_key_from_did

    try:
        public_key_from_did(did)
    except IdentityError as exc:
        fail(str(exc))


def _snap(s: Any) -> dict[str, Any]:
    return {
        "did": s.did,
        "score": s.score,
        "tier": s.tier,
        "revoked": s.revoked,
        "reason": s.reason,
    }


def _event(e: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(e)
