"""The start-up gate: refuse (or, in warn mode, flag) a deployment that differs from its signed BOM.

``enforce_bom`` is what ``Governor.from_deployment(..., bom=...)`` runs before
the Governor exists; ``enforce_gateway_bom`` is the MCP gateway's version,
which has a policy file but no manifest: it checks the packages and the
policy at start and hands the BOM's tools to the gateway, which hides what
differs (docs/supply-chain.md, "The start-up gate").
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

from warden.errors import ConfigurationError, SupplyChainError, WardenError
from warden.supply.bom import Package, bom_tools, check_bom, compare_environment, verify_bom
from warden.supply.deployment import Deployment
from warden.supply.dsse import MAX_ENVELOPE

__all__ = [
    "BANNER",
    "MODES",
    "BomDriftWarning",
    "GatewayBom",
    "drift_record",
    "enforce_bom",
    "enforce_gateway_bom",
]

MODES: Final = ("enforce", "warn")
BANNER: Final = (
    "warden: WARNING: running a deployment that differs from its signed BOM "
    "(warn mode, for development only)"
)


class BomDriftWarning(UserWarning):
    """Raised (as a warning) when a deployment runs in warn mode despite differing from its BOM."""


def _mode(mode: str) -> None:
    if mode not in MODES:
        raise ConfigurationError(f"the BOM mode must be `enforce` or `warn`, not `{mode}`")


def _read(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_ENVELOPE + 1)
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise SupplyChainError(f"cannot read the signed BOM: {reason}") from None
    if len(data) > MAX_ENVELOPE:
        raise SupplyChainError(f"the signed BOM is larger than {MAX_ENVELOPE >> 20} MiB")
    return data


def _warn(message: str, lines: Sequence[str], stream: TextIO | None) -> None:
    out = stream if stream is not None else sys.stderr
    print(BANNER, file=out)
    for line in lines:
        print(f"  {line}", file=out)
    out.flush()
    warnings.warn(f"{message} (warn mode): {'; '.join(lines)}", BomDriftWarning, stacklevel=3)


def enforce_bom(
    deployment: Deployment,
    envelope_path: str | os.PathLike[str],
    mode: str = "enforce",
    trusted: Sequence[str] | None = None,
    stream: TextIO | None = None,
) -> list[str]:
    """Check the deployment against the signed BOM at ``envelope_path``; the differences.

    ``enforce``: SupplyChainError (``report``: every line) when anything
    differs, or when the envelope cannot be read or does not verify (by
    ``trusted``, else the manifest's signers). ``warn``: the report goes to
    ``stream`` (stderr) under ``BANNER``, a ``BomDriftWarning`` is raised as
    a warning, and the lines are returned (an envelope that does not verify
    gives one line saying why). ``[]`` when the deployment matches.
    """
    _mode(mode)
    where = os.fspath(envelope_path)
    try:
        lines = check_bom(deployment, _read(envelope_path), trusted)
    except WardenError as exc:  # does not verify, or what runs now cannot be described
        reason = f"{where}: {exc}"
        if mode == "enforce":
            raise SupplyChainError(reason, [reason]) from None
        lines = [reason]
    if not lines:
        return []
    if mode == "enforce":
        raise SupplyChainError(f"deployment `{deployment.name}` differs from its signed BOM", lines)
    _warn(f"deployment `{deployment.name}` differs from its signed BOM", lines, stream)
    return lines


def drift_record(
    deployment: str | None, envelope_path: str | os.PathLike[str], lines: Iterable[str]
) -> dict[str, Any]:
    """The ``warden.bom_drift/v1`` audit record of a start in warn mode despite ``lines``."""
    return {
        "type": "warden.bom_drift/v1",
        "deployment": deployment,
        "bom": os.fspath(envelope_path),
        "mode": "warn",
        "differences": list(lines),
    }


@dataclass(frozen=True, slots=True)
class GatewayBom:
    """What the gateway's gate found: the BOM's tools (None: nothing verified) and the report."""

    tools: Mapping[str, Mapping[str, str]] | None
    report: tuple[str, ...]
    deployment: str | None
    signer: str | None


def enforce_gateway_bom(
    envelope_path: str | os.PathLike[str],
    *,
    policy: str | os.PathLike[str],
    trusted: Sequence[str],
    mode: str = "enforce",
    stream: TextIO | None = None,
    packages: Iterable[Package] | None = None,
) -> GatewayBom:
    """The MCP gateway's start-up gate: verify the BOM, compare the packages and the policy.

    ``enforce``: SupplyChainError when the envelope does not verify or a
    package or the policy differs. ``warn``: as ``enforce_bom``; an envelope
    that does not verify gives ``tools=None`` (no component gate). Servers
    and tools are not compared here: the gateway hides those that differ.
    """
    _mode(mode)
    where = os.fspath(envelope_path)
    try:
        verified = verify_bom(_read(envelope_path), trusted)
        bom = verified.statement["predicate"]
        tools = bom_tools(bom)
        name = str(bom["metadata"]["component"]["name"])
        lines = compare_environment(bom, policy=Path(policy), packages=packages)
    except WardenError as exc:
        reason = f"{where}: {exc}"
        if mode == "enforce":
            raise SupplyChainError(reason, [reason]) from None
        _warn("the signed BOM does not verify", [reason], stream)
        return GatewayBom(None, (reason,), None, None)
    if lines and mode == "enforce":
        raise SupplyChainError(f"deployment `{name}` differs from its signed BOM", lines)
    if lines:
        _warn(f"deployment `{name}` differs from its signed BOM", lines, stream)
    return GatewayBom(tools, tuple(lines), name, verified.signer)
