"""Approval requests on PostgreSQL, shared by every replica of a fleet (docs/fleet.md).

The same life of a request as the SQLite ``ApprovalStore`` (warden/approvals.py):
bound to one action digest, decided once by someone other than the asking
agent, used once, expired after ``ttl`` seconds. One table, ``N_approvals``,
with the SQLite store's columns (times are Unix seconds from the store's clock).

**Concurrency.** ``gate`` runs in one transaction holding
``pg_advisory_xact_lock(hash of N and the digest)``: replicas gating the same
action queue behind each other, so two of them cannot both create a request,
nor both use one approval. The request's row is also read ``FOR UPDATE``, which
orders a gate against an ``approve`` or ``deny`` of the same request, and a
unique partial index on ``digest`` over the open statuses (``pending``,
``approved``, ``denied``) makes a second open request for one action an error
rather than a silent duplicate.

**Waiting.** ``wait`` and ``wait_async`` poll the request every ``poll``
seconds (50 ms by default), one primary-key read each time: a decision made on
any replica is seen within a poll.

**Failure.** Any database error raises ``StoreUnavailable`` (a
``ConnectionError``): the Governor turns it into a deny, the service into a 503.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Final

from warden.action import Action
from warden.approvals import (
    _COLUMNS,
    DEFAULT_TTL,
    ApprovalRequest,
    GateResult,
    Status,
    _row,
    gate_step,
    new_request,
    row_values,
)
from warden.errors import (
    ApprovalNotFound,
    ApprovalStateError,
    ConfigurationError,
    SelfApprovalError,
)
from warden.store._pg import Database, lock_key

__all__ = ["PostgresApprovalStore"]

_OPEN: Final = "('pending', 'approved', 'denied')"
_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {approvals} (id TEXT PRIMARY KEY, digest TEXT NOT NULL, "
    "action TEXT NOT NULL, agent_id TEXT, session TEXT, rules TEXT NOT NULL, "
    "reasons TEXT NOT NULL, policy_hash TEXT NOT NULL, status TEXT NOT NULL, "
    "created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL, "
    "decided_by TEXT, decided_at DOUBLE PRECISION, note TEXT, used_at DOUBLE PRECISION)",
    f"CREATE UNIQUE INDEX IF NOT EXISTS {{approvals_open}} ON {{approvals}} (digest) "
    f"WHERE status IN {_OPEN}",
    "CREATE INDEX IF NOT EXISTS {approvals_status} ON {approvals} (status, expires_at)",
    "CREATE INDEX IF NOT EXISTS {approvals_created} ON {approvals} (created_at)",
)
_NAMES: Final = ("approvals", "approvals_open", "approvals_status", "approvals_created")


class PostgresApprovalStore:
    """The approval requests of one fleet namespace (an ``ApprovalBackend``). Thread-safe.

    Connects on first use, so that a store made while PostgreSQL is down
    answers (with ``StoreUnavailable``, a deny) until it is back.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        ttl: float = DEFAULT_TTL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ConfigurationError(f"approval ttl must be positive, not {ttl}")
        self.ttl = ttl
        self.clock = clock
        self._db = Database(url, namespace, what="approvals", names=_NAMES, ddl=_DDL)
        self.name = self._db.name
        self._q = self._db.q
        self._select = self._q(f"SELECT {_COLUMNS} FROM {{approvals}} WHERE id = %s")

    def close(self) -> None:
        self._db.close()

    def gate(
        self,
        action: Action,
        digest: str,
        rules: tuple[str, ...],
        reasons: tuple[str, ...],
        policy_hash: str,
    ) -> tuple[GateResult, ApprovalRequest]:
        """The Governor's step for a ``require_approval`` decision (as ``ApprovalStore.gate``)."""
        now = self.clock()
        key = lock_key("warden.approvals", self._db.namespace, digest)

        def tx(conn: Any) -> tuple[GateResult, ApprovalRequest]:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))
            row = conn.execute(
                self._q(
                    f"SELECT {_COLUMNS} FROM {{approvals}} WHERE digest = %s "
                    f"AND status IN {_OPEN} ORDER BY created_at DESC LIMIT 1 FOR UPDATE"
                ),
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
                    conn.execute(
                        self._q(
                            "UPDATE {approvals} SET status = 'consumed', used_at = %s WHERE id = %s"
                        ),
                        (now, req.id),
                    )
                    return "approved", replace(req, status="consumed", used_at=now)
                # run out: an open request (the attempt answers `expired`), or a denial
                self._set_expired(conn, req.id)
                if step == "expire":
                    return "expired", replace(req, status="expired")
            new = new_request(action, digest, rules, reasons, policy_hash, now, self.ttl)
            conn.execute(
                self._q(
                    f"INSERT INTO {{approvals}} ({_COLUMNS}) VALUES "
                    "(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
                ),
                row_values(new),
            )
            return "pending", new

        return self._db.run(tx)

    def _set_expired(self, conn: Any, request_id: str) -> None:
        conn.execute(
            self._q("UPDATE {approvals} SET status = 'expired' WHERE id = %s"), (request_id,)
        )

    def get(self, request_id: str) -> ApprovalRequest:
        """The request with that id, its status brought up to date; ApprovalNotFound if none."""
        now = self.clock()

        def tx(conn: Any) -> tuple[Any, ...] | None:
            conn.execute(
                self._q(
                    "UPDATE {approvals} SET status = 'expired' WHERE id = %s "
                    "AND status IN ('pending', 'approved') AND expires_at <= %s"
                ),
                (request_id, now),
            )
            row: tuple[Any, ...] | None = conn.execute(self._select, (request_id,)).fetchone()
            return row

        row = self._db.run(tx)
        if row is None:
            raise ApprovalNotFound(f"no approval request `{request_id}`")
        return _row(row)

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
        expired = False

        def tx(conn: Any) -> ApprovalRequest:
            nonlocal expired
            row = conn.execute(
                self._q(f"SELECT {_COLUMNS} FROM {{approvals}} WHERE id = %s FOR UPDATE"),
                (request_id,),
            ).fetchone()
            if row is None:
                raise ApprovalNotFound(f"no approval request `{request_id}`")
            req = _row(row)
            if status == "approved" and req.agent_id is not None and approver == req.agent_id:
                raise SelfApprovalError(
                    f"`{approver}` asked for request `{request_id}` and cannot approve it"
                )
            if req.status == "pending" and now >= req.expires_at:
                self._set_expired(conn, req.id)
                expired = True
                return req  # committed, then refused below
            if req.status != "pending":
                raise ApprovalStateError(f"request `{request_id}` is already {req.status}")
            conn.execute(
                self._q(
                    "UPDATE {approvals} SET status = %s, decided_by = %s, decided_at = %s, "
                    "note = %s WHERE id = %s"
                ),
                (status, approver, now, note, request_id),
            )
            return replace(req, status=status, decided_by=approver, decided_at=now, note=note)

        decided = self._db.run(tx)
        if expired:
            raise ApprovalStateError(f"request `{request_id}` has expired")
        return decided

    def wait(self, request_id: str, timeout: float, poll: float = 0.05) -> ApprovalRequest:
        """Block until the request leaves ``pending`` or ``timeout`` seconds pass; return it.

        Polls every ``poll`` seconds, so a decision made by another replica is seen.
        """
        deadline = time.monotonic() + timeout
        while True:
            req = self.get(request_id)
            if req.status != "pending" or time.monotonic() >= deadline:
                return req
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    async def wait_async(
        self, request_id: str, timeout: float, poll: float = 0.05
    ) -> ApprovalRequest:
        """The asyncio form of :meth:`wait`; each poll runs in a worker thread."""
        deadline = time.monotonic() + timeout
        while True:
            req = await asyncio.to_thread(self.get, request_id)
            if req.status != "pending" or time.monotonic() >= deadline:
                return req
            await asyncio.sleep(min(poll, max(0.0, deadline - time.monotonic())))

    def list(self, status: Status | None = None, limit: int = 200) -> list[ApprovalRequest]:
        """Requests, newest first, optionally only those with one status."""
        now = self.clock()
        query = f"SELECT {_COLUMNS} FROM {{approvals}}"
        params: tuple[Any, ...] = ()
        if status is not None:
            query += " WHERE status = %s"
            params = (status,)
        select = self._q(query + " ORDER BY created_at DESC LIMIT %s")

        def tx(conn: Any) -> list[tuple[Any, ...]]:
            conn.execute(
                self._q(
                    "UPDATE {approvals} SET status = 'expired' "
                    "WHERE status IN ('pending', 'approved') AND expires_at <= %s"
                ),
                (now,),
            )
            rows: list[tuple[Any, ...]] = conn.execute(select, (*params, limit)).fetchall()
            return rows

        return [_row(r) for r in self._db.run(tx)]
