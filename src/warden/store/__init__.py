"""State backends: embedded (SQLite, in process) or fleet (PostgreSQL and Redis); docs/fleet.md."""

from typing import TYPE_CHECKING, Any

from warden.store._config import FleetConfig
from warden.store.runtime import RedisRuntimeState, RuntimeStore, open_runtime_store

if TYPE_CHECKING:
    from warden.store.postgres_audit import PostgresAuditStore

__all__ = [
    "FleetConfig",
    "PostgresAuditStore",
    "RedisRuntimeState",
    "RuntimeStore",
    "open_runtime_store",
]


def __getattr__(name: str) -> Any:
    # PostgresAuditStore loads the audit package: imported on first use, so that
    # `import warden` (which imports this package) stays light
    if name == "PostgresAuditStore":
        from warden.store.postgres_audit import PostgresAuditStore

        return PostgresAuditStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
