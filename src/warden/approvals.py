"""Human approvals for actions a policy marks ``require_approval``.

A request is bound to one exact action: the SHA-256 of the RFC 8785 (JCS)
canonical JSON of its kind, tool, arguments, agent id and session. An approval
authorises that action once; it cannot be used for another action or twice.

Life of a request (docs/approvals.md)::

    pending ──approve──► approved ──used by the Governor──► consumed
       │                    │
       ├──deny──► denied    └──not used before expiry──► expired
       └──not decided before expiry──► expired

Expired requests count as a deny. The agent that asked (``agent.id``) can never
approve its own request. The embedded store is a SQLite file (WAL mode); every
state change runs in one ``BEGIN IMMEDIATE`` transaction, so several processes
(an agent and the ``warden approvals`` command, say) can share it.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import rfc8785

from warden._sqlite import connect, write_transaction
from warden.action import Action
from warden.errors import (
    ApprovalNotFound,
    ApprovalStateError,
    ConfigurationError,
    SelfApprovalError,
)

if TYPE_CHECKING:
    from warden.store import FleetConfig

__all__ = [
    "DEFAULT_TTL",
    "ApprovalBackend",
    "ApprovalRequest",
    "ApprovalStore",
    "GateResult",
    "action_digest",
    "open_approval_store",
]

DEFAULT_TTL: Final = 15 * 60.0
Status = Literal["pending", "approved", "denied", "consumed", "expired"]
GateResult = Literal["pending", "approved", "denied", "expired"]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS approvals (
    id TEXT PRIMARY KEY,
    digest TEXT NOT NULL,
    action TEXT NOT NULL,
    agent_id TEXT,
    session TEXT,
    rules TEXT NOT NULL,
    reasons TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL,
    decided_by TEXT,
    decided_at REAL,
    note TEXT,
    used_at REAL
);
CREATE INDEX IF NOT EXISTS approvals_digest ON approvals (digest, created_at);
CREATE INDEX IF NOT EXISTS approvals_status ON approvals (status, created_at);
"""


def action_digest(action: Action) -> str:
    """``sha256:`` + hex digest of the canonical JSON an approval binds to.

    Raises ValueError (from the canonicaliser) when the arguments are not JSON
    data, e.g. bytes, objects or non-finite floats.
    """
    bound = {
        "kind": action.kind,
        "tool": action.tool,
        "args": dict(action.args),
        "agent": action.agent.get("id"),
        "session": action.session,
    }
    if action.flow is not None and action.flow.args:
        bound["flow"] = {k: list(v) for k, v in action.flow.args.items()}
    try:
        data = rfc8785.dumps(bound)
    except (TypeError, ValueError, rfc8785.CanonicalizationError) as exc:
        raise ValueError(f"action arguments are not JSON data: {exc}") from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """One request, as stored. Times are Unix seconds."""

    id: str
    digest: str
    action: Mapping[str, Any]
    agent_id: str | None
    session: str | None
    rules: tuple[str, ...]
    reasons: tuple[str, ...]
    policy_hash: str
    status: Status
    created_at: float
    expires_at: float
    decided_by: str | None
    decided_at: float | None
    note: str | None
    used_at: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "status": self.status,
            "action": dict(self.action),
            "agent_id": self.agent_id,
            "session": self.session,
            "rules": list(self.rules),
            "reasons": list(self.reasons),
            "policy_hash": self.policy_hash,
            "digest": self.digest,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "decided_by": self.decided_by,
            "decided_at": self.decided_at,
            "note": self.note,
            "used_at": self.used_at,
        }


_COLUMNS: Final = (
    "id, digest, action, agent_id, session, rules, reasons, policy_hash, status, "
    "created_at, expires_at, decided_by, decided_at, note, used_at"
)


def _row(r: tuple[Any, ...]) -> ApprovalRequest:
    return ApprovalRequest(
        id=r[0],
        digest=r[1],
        action=json.loads(r[2]),
        agent_id=r[3],
        session=r[4],
        rules=tuple(json.loads(r[5])),
        reasons=tuple(json.loads(r[6])),
        policy_hash=r[7],
        status=r[8],
        created_at=r[9],
        expires_at=r[10],
        decided_by=r[11],
        decided_at=r[12],
        note=r[13],
        used_at=r[14],
    )


@runtime_checkable
class ApprovalBackend(Protocol):
    """What the Governor, ``warden approvals`` and ``warden serve`` use of an approval store.

    ``ApprovalStore`` (SQLite, embedded) and ``warden.store.PostgresApprovalStore``
    (fleet) implement it and pass the same tests. A store that cannot be reached
    raises (never answers ``approved``): the Governor turns that into a deny.
    """

    def gate(
        self,
        action: Action,
        digest: str,
        rules: tuple[str, ...],
        reasons: tuple[str, ...],
        policy_hash: str,
    ) -> tuple[GateResult, ApprovalRequest]: ...

    def get(self, request_id: str) -> ApprovalRequest: ...

    def approve(
        self, request_id: str, approver: str, note: str | None = None
    ) -> ApprovalRequest: ...

    def deny(self, request_id: str, approver: str, note: str | None = None) -> ApprovalRequest: ...

    def wait(self, request_id: str, timeout: float, poll: float = 0.05) -> ApprovalRequest: ...

    async def wait_async(
        self, request_id: str, timeout: float, poll: float = 0.05
    ) -> ApprovalRequest: ...

    def close(self) -> None: ...

    def list(self, status: Status | None = None, limit: int = 200) -> list[ApprovalRequest]: ...


def open_approval_store(
    home: str | os.PathLike[str],
    *,
    ttl: float = DEFAULT_TTL,
    clock: Callable[[], float] = time.time,
    config: FleetConfig | None = None,
) -> ApprovalBackend:
    """The approval store the environment names: PostgreSQL or ``home/approvals.db``.

    PostgreSQL when ``WARDEN_DATABASE_URL`` is set (namespace from
    ``WARDEN_FLEET_NAMESPACE``). ``config`` defaults to ``FleetConfig.from_env()``;
    a malformed URL is a ConfigurationError, never a fallback to the embedded store.
    """
    if config is None:
        from warden.store import FleetConfig

        config = FleetConfig.from_env()
    if config.database_url is not None:
        from warden.store.approvals import PostgresApprovalStore

        return PostgresApprovalStore(config.database_url, config.namespace, ttl=ttl, clock=clock)
    return ApprovalStore(Path(home) / "approvals.db", ttl=ttl, clock=clock)


class ApprovalStore:
    """Approval requests in a SQLite file, safe across threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError(f"approval ttl must be positive, not {ttl}")
        self.path = Path(path)
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        try:
            self._db = connect(self.path)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, 1):
                raise ConfigurationError(
                    f"{self.path}: approvals database has schema version {version}; "
                    "this warden reads version 1"
                )
            self._db.executescript(_SCHEMA)
            self._db.execute("PRAGMA user_version=1")
        except sqlite3.DatabaseError as exc:
            raise ConfigurationError(
                f"{self.path}: cannot open approvals database: {exc}"
            ) from None

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        return write_transaction(self._db, self._lock)

    def gate(
        self,
        action: Action,
        digest: str,
        rules: tuple[str, ...],
        reasons: tuple[str, ...],
        policy_hash: str,
    ) -> tuple[GateResult, ApprovalRequest]:
        """The Governor's step for a ``require_approval`` decision, in one transaction.

        Returns ``approved`` (and marks the request used) when an unexpired
        approval for this exact action exists; ``denied`` while a denial stands;
        ``expired`` when the open request ran out (it is closed, so the next
        attempt asks again); otherwise ``pending``, creating the request if
        there is none.
        """
        now = self.clock()
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE digest = ? "
                "AND status IN ('pending', 'approved', 'denied') "
                "ORDER BY created_at DESC LIMIT 1",
                (digest,),
            ).fetchone()
            req = _row(row) if row else None
            step = gate_step(req, now)
            if req is not None:
                if step == "denied":
                    return "denied", req
                if step == "pending":
                    return "pending", req
                if step == "consume":
                    db.execute(
                        "UPDATE approvals SET status = 'consumed', used_at = ? WHERE id = ?",
                        (now, req.id),
                    )
                    return "approved", replace(req, status="consumed", used_at=now)
                # run out: an open request (the attempt answers `expired`), or a denial
                db.execute("UPDATE approvals SET status = 'expired' WHERE id = ?", (req.id,))
                if step == "expire":
                    return "expired", replace(req, status="expired")
            new = new_request(action, digest, rules, reasons, policy_hash, now, self.ttl)
            db.execute(
                f"INSERT INTO approvals ({_COLUMNS}) VALUES "
                "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                row_values(new),
            )
            return "pending", new

    def get(self, request_id: str) -> ApprovalRequest:
        """The request with that id, its status brought up to date; ApprovalNotFound if none."""
        self._expire()
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (request_id,)
            ).fetchone()
        if row is None:
            raise ApprovalNotFound(f"no approval request `{request_id}`")
        return _row(row)

    def list(self, status: Status | None = None, limit: int = 200) -> list[ApprovalRequest]:
        """Requests, newest first, optionally only those with one status."""
        self._expire()
        query = f"SELECT {_COLUMNS} FROM approvals"
        params: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = ?"
            params = (status,)
        query += " ORDER BY created_at DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(query, (*params, limit)).fetchall()
        return [_row(r) for r in rows]

    def approve(self, request_id: str, approver: str, note: str | None = None) -> ApprovalRequest:
        """Approve a pending request as ``approver`` (never the requesting agent)."""
        return self._decide(request_id, approver, note, "approved")

    def deny(self, request_id: str, approver: str, note: str | None = None) -> ApprovalRequest:
        """Deny a pending request as ``approver``."""
        return self._decide(request_id, approver, note, "denied")

    def _decide(
        self, request_id: str, approver: str, note: str | None, status: Status
    ) -> ApprovalRequest:
        if not isinstance(approver, str) or not approver.strip():
            raise ApprovalStateError("an approver identity is required")
        now = self.clock()
        with self._tx() as db:
            row = db.execute(
                f"SELECT {_COLUMNS} FROM approvals WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise ApprovalNotFound(f"no approval request `{request_id}`")
            req = _row(row)
            if status == "approved" and req.agent_id is not None and approver == req.agent_id:
                raise SelfApprovalError(
                    f"`{approver}` asked for request `{request_id}` and cannot approve it"
                )
            if req.status == "pending" and now >= req.expires_at:
                db.execute("UPDATE approvals SET status = 'expired' WHERE id = ?", (req.id,))
                raise ApprovalStateError(f"request `{request_id}` has expired")
            if req.status != "pending":
                raise ApprovalStateError(f"request `{request_id}` is already {req.status}")
            db.execute(
                "UPDATE approvals SET status = ?, decided_by = ?, decided_at = ?, note = ? "
                "WHERE id = ?",
                (status, approver, now, note, request_id),
            )
            return replace(req, status=status, decided_by=approver, decided_at=now, note=note)

    def wait(self, request_id: str, timeout: float, poll: float = 0.05) -> ApprovalRequest:
        """Block until the request leaves ``pending`` or ``timeout`` seconds pass; return it."""
        deadline = time.monotonic() + timeout
        while True:
            req = self.get(request_id)
            if req.status != "pending" or time.monotonic() >= deadline:
                return req
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    async def wait_async(
        self, request_id: str, timeout: float, poll: float = 0.05
    ) -> ApprovalRequest:
        """The asyncio form of :meth:`wait`."""
        import asyncio

        deadline = time.monotonic() + timeout
        while True:
            req = self.get(request_id)
            if req.status != "pending" or time.monotonic() >= deadline:
                return req
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def _expire(self) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE approvals SET status = 'expired' "
                "WHERE status IN ('pending', 'approved') AND expires_at <= ?",
                (self.clock(),),
            )


GateStep = Literal["denied", "pending", "expire", "consume", "ask"]


def gate_step(req: ApprovalRequest | None, now: float) -> GateStep:
    """What the approval gate does with the latest open request for an action.

    Every approval store follows it: ``denied`` while a denial stands;
    ``expire`` an open request that ran out (the attempt answers ``expired``);
    ``consume`` an unexpired approval (the attempt is allowed, once);
    ``pending`` while waiting; ``ask`` (a new request, after closing a denial
    that has run out) when there is none.
    """
    if req is None:
        return "ask"
    if req.status == "denied":
        return "denied" if now < req.expires_at else "ask"
    if now >= req.expires_at:
        return "expire"
    return "consume" if req.status == "approved" else "pending"


def new_request(
    action: Action,
    digest: str,
    rules: tuple[str, ...],
    reasons: tuple[str, ...],
    policy_hash: str,
    now: float,
    ttl: float,
) -> ApprovalRequest:
    """A fresh pending request for ``action`` (every store creates them the same way)."""
    return ApprovalRequest(
        id="apr-" + secrets.token_hex(6),
        digest=digest,
        action=action.to_dict() | {"context": {}},
        agent_id=_agent_id(action),
        session=action.session,
        rules=rules,
        reasons=reasons,
        policy_hash=policy_hash,
        status="pending",
        created_at=now,
        expires_at=now + ttl,
        decided_by=None,
        decided_at=None,
        note=None,
        used_at=None,
    )


def row_values(req: ApprovalRequest) -> tuple[Any, ...]:
    """``req`` as the values of a row, in the order of ``_COLUMNS`` (what ``_row`` reads)."""
    return (
        req.id,
        req.digest,
        json.dumps(req.action, sort_keys=True, default=str),
        req.agent_id,
        req.session,
        json.dumps(list(req.rules)),
        json.dumps(list(req.reasons)),
        req.policy_hash,
        req.status,
        req.created_at,
        req.expires_at,
        req.decided_by,
        req.decided_at,
        req.note,
        req.used_at,
    )


def _agent_id(action: Action) -> str | None:
    aid = action.agent.get("id")
    return aid if isinstance(aid, str) else None
