"""The deployment manifest: what a deployment uses (docs/supply-chain.md).

Read with the policy loader's located YAML, so that every problem is a
``file:line:col: code: message`` diagnostic, all of them reported at once.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from warden.errors import DeploymentError
from warden.identity.did import public_key_from_did
from warden.policy._diagnostics import Diagnostic
from warden.policy._yaml import YNode, parse_yaml
from warden.policy.load import read_text

__all__ = ["Deployment", "Model", "load_deployment"]

API_VERSION: Final = "warden/v1"
_TOP: Final = ("apiVersion", "kind", "name", "description", "policy", "home", "mcp", "models",
               "trust")  # fmt: skip
_MODEL: Final = ("name", "provider", "version", "digest", "card")
_TRUST: Final = ("roots", "signers")
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@/+-]{0,127}")


@dataclass(frozen=True, slots=True)
class Model:
    """One model the deployment uses."""

    name: str
    provider: str
    version: str | None = None
    digest: str | None = None
    card: str | None = None


@dataclass(frozen=True, slots=True)
class Deployment:
    """A loaded manifest; paths are absolute, ``digest`` is ``sha256:`` of the file's bytes."""

    file: Path
    name: str
    policy: Path
    home: Path
    mcp: Path | None
    models: tuple[Model, ...]
    roots: tuple[str, ...]
    signers: tuple[str, ...]
    digest: str
    description: str | None = None


class _Reader:
    def __init__(self, file: str) -> None:
        self.file = file
        self.diags: list[Diagnostic] = []

    def err(self, node: YNode | None, code: str, message: str) -> None:
        line, col = (node.line, node.col) if node is not None else (0, 0)
        self.diags.append(Diagnostic(self.file, line, col, code, message))

    def fields(self, node: YNode, allowed: tuple[str, ...], what: str) -> None:
        for key, (knode, _) in node.items.items():
            if key not in allowed:
                self.err(
                    knode,
                    "deployment_unknown_field",
                    f"unknown field `{key}` in {what} (known: {', '.join(allowed)})",
                )

    def string(self, node: YNode, what: str) -> str | None:
        if node.kind != "scalar" or not isinstance(node.value, str) or not node.value.strip():
            self.err(node, "deployment_type_error", f"{what} must be a non-empty string")
            return None
        return str(node.value)

    def optional(self, node: YNode, name: str, what: str) -> str | None:
        found = node.items.get(name)
        return None if found is None else self.string(found[1], f"`{name}` of {what}")

    def path(self, base: Path, node: YNode, what: str, *, must_exist: bool) -> Path | None:
        text = self.string(node, what)
        if text is None:
            return None
        path = (base / text).resolve()
        if must_exist and not path.exists():
            self.err(node, "deployment_file_error", f"{what} `{text}`: no such file")
            return None
        return path

    def dids(self, node: YNode, what: str) -> tuple[str, ...]:
        if node.kind != "seq":
            self.err(node, "deployment_type_error", f"{what} must be a list of did:key")
            return ()
        out = []
        for item in node.seq:
            value = self.string(item, f"each of {what}")
            if value is None:
                continue
            try:
                public_key_from_did(value)
            except Exception as exc:  # noqa: BLE001 - IdentityError and friends: say why
                self.err(item, "deployment_invalid_value", f"{what}: `{value}`: {exc}")
                continue
            out.append(value)
        return tuple(dict.fromkeys(out))


def load_deployment(path: str | os.PathLike[str]) -> Deployment:
    """Load and check a deployment manifest; DeploymentError with every diagnostic."""
    name = str(path)
    text, raw, diags = read_text(path)
    if text is None:
        raise DeploymentError(
            [Diagnostic(d.file, d.line, d.col, "deployment_file_error", d.message) for d in diags]
        )
    tree, diags = parse_yaml(text, name)
    if tree is None or diags:
        raise DeploymentError(diags or [Diagnostic(name, 0, 0, "deployment_type_error", "empty")])
    r = _Reader(name)
    if tree.kind != "map":
        r.err(tree, "deployment_type_error", "a deployment manifest must be a mapping")
        raise DeploymentError(r.diags)
    r.fields(tree, _TOP, "the deployment")
    top = tree.items
    base = Path(path).resolve().parent
    for field_name, want in (("apiVersion", API_VERSION), ("kind", "Deployment")):
        if field_name not in top:
            r.err(tree, "deployment_missing_field", f"missing required field `{field_name}`")
        elif top[field_name][1].value != want:
            r.err(
                top[field_name][1], "deployment_invalid_value", f"`{field_name}` must be `{want}`"
            )
    for required in ("name", "policy", "models"):
        if required not in top:
            r.err(tree, "deployment_missing_field", f"missing required field `{required}`")
    dep_name = r.string(top["name"][1], "`name`") if "name" in top else None
    if dep_name is not None and not _NAME.fullmatch(dep_name):
        r.err(top["name"][1], "deployment_invalid_value", f"`name` `{dep_name}` is not valid")
    description = r.optional(tree, "description", "the deployment")
    policy = (
        r.path(base, top["policy"][1], "`policy`", must_exist=True) if "policy" in top else None
    )
    home = base / ".warden"
    if "home" in top:
        home = r.path(base, top["home"][1], "`home`", must_exist=False) or home
    mcp = r.path(base, top["mcp"][1], "`mcp`", must_exist=True) if "mcp" in top else None
    models: list[Model] = []
    if "models" in top:
        mnode = top["models"][1]
        if mnode.kind != "seq" or not mnode.seq:
            r.err(mnode, "deployment_type_error", "`models` must be a non-empty list")
        else:
            for i, item in enumerate(mnode.seq):
                model = _model(r, item, i)
                if model is not None:
                    models.append(model)
    roots: tuple[str, ...] = ()
    signers: tuple[str, ...] = ()
    if "trust" in top:
        tnode = top["trust"][1]
        if tnode.kind != "map":
            r.err(tnode, "deployment_type_error", "`trust` must map `roots`/`signers` to lists")
        else:
            r.fields(tnode, _TRUST, "`trust`")
            if "roots" in tnode.items:
                roots = r.dids(tnode.items["roots"][1], "`trust.roots`")
            if "signers" in tnode.items:
                signers = r.dids(tnode.items["signers"][1], "`trust.signers`")
    if r.diags or dep_name is None or policy is None:
        raise DeploymentError(sorted(r.diags))
    return Deployment(
        file=Path(path).resolve(),
        name=dep_name,
        policy=policy,
        home=home,
        mcp=mcp,
        models=tuple(models),
        roots=roots,
        signers=signers,
        digest="sha256:" + hashlib.sha256(raw).hexdigest(),
        description=description,
    )


def _model(r: _Reader, node: YNode, i: int) -> Model | None:
    what = f"model #{i + 1}"
    if node.kind != "map":
        r.err(node, "deployment_type_error", f"{what} must be a mapping")
        return None
    r.fields(node, _MODEL, what)
    before = len(r.diags)
    name = r.string(node.items["name"][1], f"`name` of {what}") if "name" in node.items else None
    provider = (
        r.string(node.items["provider"][1], f"`provider` of {what}")
        if "provider" in node.items
        else None
    )
    for required in ("name", "provider"):
        if required not in node.items:
            r.err(
                node, "deployment_missing_field", f"{what} is missing required field `{required}`"
            )
    version = _scalar_text(r, node, "version", what)
    digest = r.optional(node, "digest", what)
    if digest is not None and not _DIGEST.fullmatch(digest):
        r.err(
            node.items["digest"][1],
            "deployment_invalid_value",
            f"`digest` of {what} must be `sha256:` and 64 lower-case hex digits",
        )
    card = r.optional(node, "card", what)
    if len(r.diags) > before or name is None or provider is None:
        return None
    return Model(name, provider, version, digest, card)


def _scalar_text(r: _Reader, node: YNode, name: str, what: str) -> str | None:
    """A version may be an integer (`2`); a float (`1.10` reads as 1.1) must be quoted."""
    found = node.items.get(name)
    if found is None:
        return None
    v = found[1]
    if v.kind == "scalar" and type(v.value) is int:
        return str(v.value)
    if v.kind == "scalar" and type(v.value) is float:
        r.err(v, "deployment_type_error", f"`{name}` of {what}: quote it (YAML reads 1.10 as 1.1)")
        return None
    return r.string(v, f"`{name}` of {what}")
