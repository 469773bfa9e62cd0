"""The AI-BOM: a deployment described in CycloneDX 1.6, signed, checked (docs/supply-chain.md).

``generate_bom`` builds the document with cyclonedx-python-lib from a loaded
manifest and what is installed now; ``sign_bom`` wraps it in a DSSE-signed
in-toto statement; ``check_bom`` verifies an envelope and compares its BOM
with the one ``generate_bom`` writes now, one line per difference.

The document is deterministic for a given environment: the library sorts
components, services and properties; the only time in it is
``metadata.timestamp`` (``SOURCE_DATE_EPOCH`` when set); the serial number
is a UUID derived from the rest of the content. Comparison ignores both.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import importlib.metadata
import json
import os
import re
import shlex
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import rfc8785
from cyclonedx.model import (
    ExternalReference,
    ExternalReferenceType,
    HashAlgorithm,
    HashType,
    Property,
    XsUri,
)
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.dependency import Dependable
from cyclonedx.model.service import Service
from cyclonedx.output.json import JsonV1Dot6
from packageurl import PackageURL

from warden import __version__
from warden.errors import SupplyChainError, WardenError
from warden.identity.keys import Identity
from warden.supply.deployment import Deployment
from warden.supply.dsse import Verified, sha256_hex, sign_statement, statement, verify_envelope

__all__ = [
    "BOM_PREDICATE",
    "Package",
    "bom_tools",
    "check_bom",
    "compare_bom",
    "compare_environment",
    "generate_bom",
    "installed_packages",
    "policy_digest",
    "sign_bom",
    "verify_bom",
]

BOM_PREDICATE: Final = "https://cyclonedx.org/bom"
COMMAND_PROPERTY: Final = "warden:mcp:command"
TOOL_PROPERTY: Final = "warden:mcp:tool:"
ROLE_PROPERTY: Final = "warden:trust:role"
_SERIAL_NAMESPACE: Final = uuid.UUID("6f0c7a4e-57a1-5b8e-9c43-0d3b4e2a9f11")

Package = tuple[str, str, str | None]
"""An installed distribution: PEP 503 name, version, hex SHA-256 of its RECORD (None: none)."""


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_packages() -> list[Package]:
    """The distributions importable now, first on ``sys.path`` winning, by normalised name."""
    found: dict[str, Package] = {}
    for dist in importlib.metadata.distributions():
        raw = dist.metadata["Name"] if dist.metadata is not None else None
        if not raw:
            continue  # a broken install without metadata: nothing to name it by
        name = _normalise(str(raw))
        if name not in found:
            found[name] = (name, dist.version, _record_sha256(dist))
    return sorted(found.values())


def _record_sha256(dist: importlib.metadata.Distribution) -> str | None:
    for file in dist.files or ():
        if file.name == "RECORD" and file.parent.name.endswith(".dist-info"):
            try:
                return sha256_hex(Path(str(file.locate())).read_bytes())
            except OSError:
                return None
    return None


def _timestamp() -> datetime.datetime:
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch.isdigit():
        return datetime.datetime.fromtimestamp(int(epoch), datetime.UTC)
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0)


def _sha256(digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=digest.removeprefix("sha256:"))


def policy_digest(path: Path) -> str:
    """``sha256:`` of the policy file, or of its payload when it is a signed bundle (DSSE)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SupplyChainError(
            f"{path}: cannot read the policy: {(exc.strerror or str(exc)).lower()}"
        ) from None
    if raw.lstrip()[:1] == b"{":
        try:
            obj = json.loads(raw)
            if isinstance(obj, dict) and "payloadType" in obj and isinstance(obj["payload"], str):
                raw = base64.b64decode(obj["payload"], validate=True)
        except (ValueError, UnicodeDecodeError, binascii.Error, RecursionError):
            pass  # not a bundle: the file's own bytes are its identity
    return "sha256:" + sha256_hex(raw)


def _relative(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return Path(os.path.relpath(path, base)).as_posix()


def _pinned(home: Path) -> dict[str, dict[str, str]]:
    """Pinned digests: the fleet's (PostgreSQL) or those under ``home``.

    A missing embedded store is no pins (generating creates nothing).
    """
    from warden.gateway.pins import open_pin_store
    from warden.store import FleetConfig

    config = FleetConfig.from_env()
    if config.database_url is None and not (home / "mcp-pins.db").exists():
        return {}
    out: dict[str, dict[str, str]] = {}
    store = open_pin_store(home, config)
    try:
        for pin in store.list():
            if pin.pinned is not None:
                out.setdefault(pin.server, {})[pin.tool] = pin.pinned
    finally:
        store.close()
    return out


def _services(deployment: Deployment) -> list[Service]:
    if deployment.mcp is None:
        return []
    from warden.gateway._config import load_servers

    pins = _pinned(deployment.home)
    out = []
    for upstream in load_servers(deployment.mcp):
        props = [
            Property(name=TOOL_PROPERTY + tool, value=digest)
            for tool, digest in pins.get(upstream.name, {}).items()
        ]
        if upstream.url is None:
            props.append(Property(name=COMMAND_PROPERTY, value=shlex.join(upstream.command)))
        out.append(
            Service(
                name=upstream.name,
                bom_ref=f"mcp:{upstream.name}",
                endpoints=[XsUri(upstream.url)] if upstream.url is not None else None,
                properties=props,
            )
        )
    return out


def generate_bom(
    deployment: Deployment,
    *,
    packages: Iterable[Package] | None = None,
    timestamp: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The deployment's CycloneDX 1.6 BOM as JSON data (docs/supply-chain.md, "The AI-BOM").

    ``packages`` replaces the installed distributions (``installed_packages()``),
    for a fixture environment. Raises SupplyChainError for a manifest the BOM
    cannot describe (a model listed twice), GatewayError for a servers file
    that does not load, PinError for a pin store that cannot be read.
    """
    base = deployment.file.parent
    root = Component(
        type=ComponentType.APPLICATION,
        name=deployment.name,
        bom_ref="deployment",
        description=deployment.description,
        hashes=[_sha256(deployment.digest)],
    )
    parts: list[Dependable] = []
    components: list[Component] = []
    seen: set[str] = set()
    for model in deployment.models:
        if model.name in seen:
            raise SupplyChainError(f"model `{model.name}` is listed twice in the manifest")
        seen.add(model.name)
        components.append(
            Component(
                type=ComponentType.MACHINE_LEARNING_MODEL,
                name=model.name,
                version=model.version,
                publisher=model.provider,
                bom_ref=f"model:{model.name}",
                hashes=[_sha256(model.digest)] if model.digest else None,
                external_references=(
                    [
                        ExternalReference(
                            type=ExternalReferenceType.MODEL_CARD, url=XsUri(model.card)
                        )
                    ]
                    if model.card
                    else None
                ),
            )
        )
    components.append(
        Component(
            type=ComponentType.DATA,
            name=_relative(deployment.policy, base),
            bom_ref="policy",
            hashes=[_sha256(policy_digest(deployment.policy))],
        )
    )
    chosen = installed_packages() if packages is None else packages
    names: set[str] = set()
    for raw_name, version, record in chosen:
        name = _normalise(raw_name)
        if name in names:
            continue
        names.add(name)
        components.append(
            Component(
                type=ComponentType.LIBRARY,
                name=name,
                version=version,
                purl=PackageURL(type="pypi", name=name, version=version),
                bom_ref=f"pypi:{name}",
                hashes=[_sha256(record)] if record else None,
            )
        )
    roles: dict[str, list[str]] = {}
    for role, dids in (("root", deployment.roots), ("signer", deployment.signers)):
        for did in dids:
            roles.setdefault(did, []).append(role)
    for did, held in roles.items():
        components.append(
            Component(
                type=ComponentType.CRYPTOGRAPHIC_ASSET,
                name=did,
                bom_ref=did,  # the DID already reads `did:...`
                properties=[Property(name=ROLE_PROPERTY, value=r) for r in held],
            )
        )
    services = _services(deployment)
    meta = BomMetaData(component=root, timestamp=timestamp or _timestamp())
    meta.tools.components.add(
        Component(type=ComponentType.APPLICATION, name="warden", version=__version__)
    )
    bom = Bom(
        metadata=meta, components=components, services=services, serial_number=uuid.UUID(int=0)
    )
    parts.extend(components)
    parts.extend(services)
    bom.register_dependency(root, parts)
    out: dict[str, Any] = json.loads(JsonV1Dot6(bom).output_as_string())
    content = {k: v for k, v in out.items() if k != "serialNumber"}
    content["metadata"] = {k: v for k, v in out["metadata"].items() if k != "timestamp"}
    serial = uuid.uuid5(_SERIAL_NAMESPACE, sha256_hex(rfc8785.dumps(content)))
    out["serialNumber"] = serial.urn
    return out


def _canonical_sha256(bom: Mapping[str, Any]) -> str:
    try:
        return sha256_hex(rfc8785.dumps(dict(bom)))
    except Exception as exc:  # noqa: BLE001 - rfc8785 raises its own types for unencodable values
        raise SupplyChainError(f"the BOM cannot be canonicalised (RFC 8785): {exc}") from None


def _bom_name(bom: Mapping[str, Any]) -> str:
    if bom.get("bomFormat") != "CycloneDX":
        raise SupplyChainError("not a CycloneDX BOM (no `bomFormat: CycloneDX`)")
    meta = bom.get("metadata")
    component = meta.get("component") if isinstance(meta, dict) else None
    name = component.get("name") if isinstance(component, dict) else None
    if not isinstance(name, str) or not name:
        raise SupplyChainError("the BOM names no deployment (`metadata.component.name`)")
    return name


def sign_bom(bom: Mapping[str, Any], identity: Identity) -> dict[str, Any]:
    """The DSSE envelope of an in-toto statement about ``bom``, signed by ``identity``.

    One subject: the deployment's name with the SHA-256 of the BOM's RFC 8785 form.
    """
    name = _bom_name(bom)
    stmt = statement([(name, _canonical_sha256(bom))], BOM_PREDICATE, dict(bom))
    return sign_statement(stmt, identity)


def verify_bom(envelope: bytes | Mapping[str, Any], trusted: Sequence[str]) -> Verified:
    """Verify a signed BOM: a trusted signature, one subject whose digest is the BOM's.

    The BOM is ``result.statement["predicate"]``. Raises SupplyChainError with
    a one-line reason.
    """
    verified = verify_envelope(envelope, trusted, BOM_PREDICATE)
    bom = verified.statement.get("predicate")
    if not isinstance(bom, dict):
        raise SupplyChainError("the signed predicate is not a CycloneDX BOM")
    name = _bom_name(bom)
    subjects = verified.statement["subject"]
    if len(subjects) != 1:
        raise SupplyChainError(
            f"the statement has {len(subjects)} subjects, not one (the deployment)"
        )
    subject = subjects[0]
    want = _canonical_sha256(bom)
    if subject["digest"]["sha256"] != want:
        raise SupplyChainError(
            f"the subject digest sha256:{subject['digest']['sha256']} is not the BOM's "
            f"(sha256:{want})"
        )
    if subject["name"] != name:
        raise SupplyChainError(
            f"the subject `{subject['name']}` is not the BOM's deployment `{name}`"
        )
    return verified


def check_bom(
    deployment: Deployment,
    envelope: bytes | Mapping[str, Any],
    trusted: Sequence[str] | None = None,
    *,
    packages: Iterable[Package] | None = None,
) -> list[str]:
    """Verify a signed BOM (by ``trusted``, else the manifest's signers) and compare it with now.

    Returns one line per difference, ``[]`` when the deployment matches.
    Raises SupplyChainError when the envelope does not verify, or when what
    runs now cannot be described (a servers file or pin store that does not
    load); ``packages`` as for ``generate_bom``.
    """
    verified = verify_bom(envelope, deployment.signers if trusted is None else trusted)
    try:
        current = generate_bom(deployment, packages=packages)
    except SupplyChainError:
        raise
    except WardenError as exc:
        raise SupplyChainError(f"cannot describe the deployment now: {exc}") from None
    return compare_bom(verified.statement["predicate"], current)


def bom_tools(bom: Mapping[str, Any]) -> dict[str, dict[str, str]]:
    """``{server: {tool: digest}}`` from the BOM's services (every server, even without tools)."""
    return {name: dict(server.tools) for name, server in _index(bom).servers.items()}


# --- comparison ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Server:
    endpoint: str | None = None
    command: str | None = None
    tools: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class _Index:
    """What a BOM says, by kind; built from JSON data, so from a BOM of any origin."""

    name: str | None = None
    manifest: str | None = None
    policy: tuple[str, str | None] | None = None
    models: dict[str, dict[str, str | None]] = field(default_factory=dict)
    packages: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    trust: set[tuple[str, str]] = field(default_factory=set)
    servers: dict[str, _Server] = field(default_factory=dict)


def _malformed(what: str) -> SupplyChainError:
    return SupplyChainError(f"the BOM is malformed: {what}")


def _str(obj: Mapping[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value if isinstance(value, str) else None


def _list(obj: Mapping[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise _malformed(f"`{key}` is not a list")
    return value


def _hash(obj: Mapping[str, Any]) -> str | None:
    for h in _list(obj, "hashes"):
        content = h.get("content") if isinstance(h, dict) else None
        if isinstance(content, str) and h.get("alg") == "SHA-256":
            return "sha256:" + content
    return None


def _props(obj: Mapping[str, Any]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for p in _list(obj, "properties"):
        if isinstance(p, dict):
            name, value = p.get("name"), p.get("value")
            if isinstance(name, str):
                out.append((name, value if isinstance(value, str) else ""))
    return out


def _index(bom: Mapping[str, Any]) -> _Index:
    if not isinstance(bom, Mapping):
        raise _malformed("not a JSON object")
    idx = _Index()
    meta = bom.get("metadata", {})
    root = meta.get("component") if isinstance(meta, dict) else None
    if isinstance(root, dict):
        idx.name = _str(root, "name")
        idx.manifest = _hash(root)
    for c in _list(bom, "components"):
        if not isinstance(c, dict) or not isinstance(c.get("name"), str):
            raise _malformed("a component without a name")
        kind, name = c.get("type"), c["name"]
        if kind == "machine-learning-model":
            card = next(
                (
                    r.get("url")
                    for r in _list(c, "externalReferences")
                    if isinstance(r, dict) and r.get("type") == "model-card"
                ),
                None,
            )
            idx.models[name] = {
                "version": _str(c, "version"),
                "provider": _str(c, "publisher"),
                "digest": _hash(c),
                "card": card if isinstance(card, str) else None,
            }
        elif kind == "data" and c.get("bom-ref") == "policy":
            idx.policy = (name, _hash(c))
        elif kind == "library" and str(c.get("purl", "")).startswith("pkg:pypi/"):
            idx.packages[name] = (_str(c, "version"), _hash(c))
        elif kind == "cryptographic-asset":
            idx.trust.update((value, name) for key, value in _props(c) if key == ROLE_PROPERTY)
    for s in _list(bom, "services"):
        if not isinstance(s, dict) or not isinstance(s.get("name"), str):
            raise _malformed("a service without a name")
        endpoints = [e for e in _list(s, "endpoints") if isinstance(e, str)]
        server = _Server(endpoint=endpoints[0] if endpoints else None)
        for key, value in _props(s):
            if key == COMMAND_PROPERTY:
                server.command = value
            elif key.startswith(TOOL_PROPERTY):
                server.tools[key.removeprefix(TOOL_PROPERTY)] = value
        idx.servers[s["name"]] = server
    return idx


def _shown(value: str | None) -> str:
    return "none" if value is None else value


def compare_bom(signed: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """One line per difference between a signed BOM and the current one; ``[]`` when equal.

    Components are compared by kind and name; the timestamp, the serial
    number and ``metadata.tools`` are not compared. SupplyChainError when
    either document is malformed.
    """
    was, now = _index(signed), _index(current)
    out: list[str] = []
    if was.name != now.name:
        out.append(f"deployment: name {_shown(was.name)} in the BOM, {_shown(now.name)} now")
    elif was.manifest != now.manifest:
        out.append(
            f"deployment {now.name}: manifest {_shown(was.manifest)} in the BOM, "
            f"{_shown(now.manifest)} now"
        )
    out += _models(was.models, now.models)
    out += _mcp(was.servers, now.servers)
    wp, np_ = was.policy or (None, None), now.policy or (None, None)
    if wp[1] != np_[1]:
        out.append(f"policy: {_shown(wp[1])} in the BOM, {_shown(np_[1])} now ({_shown(np_[0])})")
    out += _packages(was.packages, now.packages)
    for role, did in sorted(was.trust | now.trust):
        if (role, did) not in now.trust:
            out.append(f"trust {role} {did}: in the BOM, not trusted now")
        elif (role, did) not in was.trust:
            out.append(f"trust {role} {did}: trusted now, not in the BOM")
    return out


def _models(
    was: Mapping[str, Mapping[str, str | None]], now: Mapping[str, Mapping[str, str | None]]
) -> list[str]:
    out = []
    for name in sorted(was.keys() | now.keys()):
        if name not in now:
            out.append(f"model {name}: in the BOM, not in the manifest")
        elif name not in was:
            out.append(f"model {name}: in the manifest, not in the BOM")
        else:
            for key in ("provider", "version", "digest", "card"):
                a, b = was[name][key], now[name][key]
                if a != b:
                    what = "model card" if key == "card" else key
                    out.append(
                        f"model {name}: {what} {_shown(a)} in the BOM, {_shown(b)} in the manifest"
                    )
    return out


def _mcp(was: Mapping[str, _Server], now: Mapping[str, _Server]) -> list[str]:
    out = []
    for name in sorted(was.keys() | now.keys()):
        if name not in now:
            out.append(f"mcp {name}: in the BOM, not configured now")
            continue
        if name not in was:
            out.append(f"mcp {name}: configured now, not in the BOM")
            continue
        a, b = was[name], now[name]
        if a.endpoint != b.endpoint:
            out.append(
                f"mcp {name}: endpoint {_shown(a.endpoint)} in the BOM, {_shown(b.endpoint)} now"
            )
        if a.command != b.command:
            out.append(
                f"mcp {name}: command {_shown(a.command)} in the BOM, {_shown(b.command)} now"
            )
        for tool in sorted(a.tools.keys() | b.tools.keys()):
            if tool not in b.tools:
                out.append(f"mcp {name}/{tool}: in the BOM, not pinned now")
            elif tool not in a.tools:
                out.append(f"mcp {name}/{tool}: pinned now, not in the BOM")
            elif a.tools[tool] != b.tools[tool]:
                out.append(
                    f"mcp {name}/{tool}: description digest {a.tools[tool]} in the BOM, "
                    f"{b.tools[tool]} pinned now"
                )
    return out


def _packages(
    was: Mapping[str, tuple[str | None, str | None]],
    now: Mapping[str, tuple[str | None, str | None]],
) -> list[str]:
    out = []
    for name in sorted(was.keys() | now.keys()):
        if name not in now:
            out.append(f"package {name}: in the BOM, not installed")
        elif name not in was:
            out.append(f"package {name}: installed, not in the BOM")
        elif was[name][0] != now[name][0]:
            out.append(
                f"package {name}: version {_shown(was[name][0])} in the BOM, "
                f"{_shown(now[name][0])} installed"
            )
        elif was[name][1] != now[name][1]:
            out.append(
                f"package {name}: RECORD {_shown(was[name][1])} in the BOM, "
                f"{_shown(now[name][1])} installed"
            )
    return out


def compare_environment(
    signed: Mapping[str, Any], *, policy: Path, packages: Iterable[Package] | None = None
) -> list[str]:
    """The package and policy lines of ``compare_bom``, without a manifest (the MCP gateway).

    ``policy`` is the policy file in force; packages are the installed ones
    unless given.
    """
    was = _index(signed)
    now: dict[str, tuple[str | None, str | None]] = {}
    for raw_name, version, record in installed_packages() if packages is None else packages:
        now.setdefault(_normalise(raw_name), (version, "sha256:" + record if record else None))
    out: list[str] = []
    digest = policy_digest(policy)
    if was.policy is None or was.policy[1] != digest:
        shown = _shown(was.policy[1] if was.policy else None)
        out.append(f"policy: {shown} in the BOM, {digest} now ({policy.name})")
    return out + _packages(was.packages, now)
