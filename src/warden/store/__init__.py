"""State backends: embedded (SQLite, in process) or fleet (PostgreSQL and Redis); docs/fleet.md."""

from typing import TYPE_CHECKING, Any

from warden.store._config import FleetConfig
from warden.store.runtime import RedisRuntimeState, RuntimeStore, open_runtime_store

if TYPE_CHECKING:
    from warden.store._pg import StoreUnavailable
    from warden.store.approvals import PostgresApprovalStore
    from warden.store.postgres_audit import PostgresAuditStore
    from warden.store.tokens import PostgresTokenStore

__all__ = [
    "FleetConfig",
    "PostgresApprovalStore",
    "PostgresAuditStore",
    "PostgresTokenStore",
    "RedisRuntimeState",
    "RuntimeStore",
    "StoreUnavailable",
    "open_runtime_store",
]


def __getattr__(name: str) -> Any:
    # the PostgreSQL stores load the audit package, the server's token module or psycopg:
    # imported on first use, so that `import warden` (which imports this package) stays light
    if name == "PostgresAuditStore":
        from warden.store.postgres_audit import PostgresAuditStore

        return PostgresAuditStore
    if name == "PostgresApprovalStore":
        from warden.store.approvals import PostgresApprovalStore

        return PostgresApprovalStore
    if name == "PostgresTokenStore":
        from warden.store.tokens import PostgresTokenStore

        return PostgresTokenStore
    if name == "StoreUnavailable":
        from warden.store._pg import StoreUnavailable

        return StoreUnavailable
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
