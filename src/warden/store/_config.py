"""Which backend holds the shared state: read once from the environment (docs/fleet.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from warden.errors import ConfigurationError

__all__ = ["FleetConfig"]

_NAMESPACE: Final = re.compile(r"[a-z][a-z0-9_]{0,30}")


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """Where fleet state lives; ``None`` URLs mean the embedded backend for that state."""

    redis_url: str | None = None
    database_url: str | None = None
    namespace: str = "warden"

    @property
    def fleet(self) -> bool:
        return self.redis_url is not None or self.database_url is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> FleetConfig:
        """The configuration in ``env`` (default: ``os.environ``); ConfigurationError if wrong."""
        env = os.environ if env is None else env
        redis_url = env.get("WARDEN_REDIS_URL") or None
        database_url = env.get("WARDEN_DATABASE_URL") or None
        namespace = env.get("WARDEN_FLEET_NAMESPACE") or "warden"
        if redis_url is not None:
            _check_url(redis_url, ("redis", "rediss", "unix"), "WARDEN_REDIS_URL")
        if database_url is not None:
            _check_url(database_url, ("postgres", "postgresql"), "WARDEN_DATABASE_URL")
        if not _NAMESPACE.fullmatch(namespace):
            raise ConfigurationError(
                f"WARDEN_FLEET_NAMESPACE `{namespace}` must be 1-31 lower-case letters, digits "
                "or `_`, starting with a letter (it prefixes tables and keys)"
            )
        return cls(redis_url, database_url, namespace)


def _check_url(url: str, schemes: tuple[str, ...], name: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as exc:
        raise ConfigurationError(f"{name} is not a URL: {exc}") from None
    if parts.scheme not in schemes:
        raise ConfigurationError(
            f"{name} must start with {' or '.join(s + '://' for s in schemes)}, "
            f"not `{parts.scheme or url}`"
        )
    if parts.scheme in ("redis", "rediss") and not parts.hostname:
        raise ConfigurationError(f"{name} names no host")  # libpq's default socket is fine
