"""MCP tool pins on PostgreSQL, shared by every gateway replica of a fleet (docs/fleet.md).

The same pins as the SQLite ``PinStore`` (warden/gateway/pins.py): per
``(server, tool)`` the pinned digest (``None`` until pinned) and the digest of
the latest listing; trust on first use, a changed digest hidden until approved.
One table, ``N_pins``, with the SQLite store's columns.

**Concurrency.** Every write runs in one transaction holding
``pg_advisory_xact_lock(hash of N and the server)``, so replicas recording
listings of the same server, and an operator's ``approve`` or ``reset``, queue
behind each other: the read-modify-write of ``observe`` sees the rows as they
are, and one tool is never inserted twice. A listing that changes nothing
writes nothing (one read, no lock).

**Failure.** Any database error raises ``PinError``: the gateway then shows no
unpinned tool, as it does when the SQLite file fails.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping
from typing import Any, Final

from warden._closing import Closing
from warden.errors import PinError
from warden.gateway.pins import _COLUMNS, Pin, PinStatus, _needs_write, _row, _status
from warden.store._pg import Database, StoreUnavailable, lock_key

__all__ = ["PostgresPinStore"]

_DDL: Final = (
    "CREATE TABLE IF NOT EXISTS {pins} (server TEXT NOT NULL, tool TEXT NOT NULL, "
    "pinned TEXT, pinned_at DOUBLE PRECISION, pinned_by TEXT, seen TEXT NOT NULL, "
    "seen_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (server, tool))",
)
_NAMES: Final = ("pins",)
# byte order, as SQLite sorts: the database's collation could sort `B` between `a` and `c`
_ORDER: Final = 'server COLLATE "C", tool COLLATE "C"'


class PostgresPinStore(Closing):
    """The tool pins of one fleet namespace (a ``PinBackend``). Thread-safe.

    Connects on first use, so that a store made while PostgreSQL is down
    answers (with ``PinError``: no unpinned tool is shown) until it is back.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self._db = Database(url, namespace, what="pins", names=_NAMES, ddl=_DDL)
        self.name = self._db.name
        self._q = self._db.q
        self._select_one = self._q(
            f"SELECT {_COLUMNS} FROM {{pins}} WHERE server = %s AND tool = %s"
        )
        self._select_server = self._q(f"SELECT {_COLUMNS} FROM {{pins}} WHERE server = %s")

    def close(self) -> None:
        self._db.close()

    def _run(self, fn: Callable[[Any], Any], doing: str) -> Any:
        try:
            return self._db.run(fn)
        except StoreUnavailable as exc:
            raise PinError(f"cannot {doing} the pin store: {exc}") from None

    def _lock(self, conn: Any, server: str) -> None:
        key = lock_key("warden.pins", self._db.namespace, server)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def _read(self, query: Any, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self._run(
            lambda conn: conn.execute(query, params).fetchall(), "read"
        )
        return rows

    def get(self, server: str, tool: str) -> Pin | None:
        """The pin of ``tool`` on ``server``, or None when the tool was never seen."""
        rows = self._read(self._select_one, (server, tool))
        return _row(rows[0]) if rows else None

    def list(self, server: str | None = None) -> list[Pin]:
        """Every pin (of one server), by server then tool."""
        if server is None:
            rows = self._read(self._q(f"SELECT {_COLUMNS} FROM {{pins}} ORDER BY {_ORDER}"), ())
        else:
            rows = self._read(
                self._q(f"SELECT {_COLUMNS} FROM {{pins}} WHERE server = %s ORDER BY {_ORDER}"),
                (server,),
            )
        return [_row(r) for r in rows]

    def record_seen(self, server: str, tool: str, digest: str) -> PinStatus:
        """Record that a listing showed ``digest`` for the tool; its status next to the pin."""
        return self.observe(server, {tool: digest})[tool]

    def observe(
        self, server: str, seen: Mapping[str, str], *, pin_new: Collection[str] = ()
    ) -> dict[str, PinStatus]:
        """Record one listing of ``server`` (tool -> digest); each tool's status before this call.

        As ``PinStore.observe``: tools in ``pin_new`` whose status is ``new`` are
        pinned to the digest seen in the same transaction; nothing is written
        when the listing matches what is stored.
        """
        if not seen:
            return {}
        rows = {r[1]: _row(r) for r in self._read(self._select_server, (server,))}
        if not _needs_write(rows, seen, pin_new):
            return {tool: _status(rows.get(tool), digest) for tool, digest in seen.items()}
        now = self.clock()

        def tx(conn: Any) -> dict[str, PinStatus]:
            self._lock(conn, server)
            fresh = {r[1]: _row(r) for r in conn.execute(self._select_server, (server,)).fetchall()}
            out: dict[str, PinStatus] = {}
            for tool, digest in seen.items():
                old = fresh.get(tool)
                status = _status(old, digest)
                out[tool] = status
                pin = status == "new" and tool in pin_new
                if old is None:
                    conn.execute(
                        self._q(
                            f"INSERT INTO {{pins}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                        ),
                        (
                            server,
                            tool,
                            digest if pin else None,
                            now if pin else None,
                            "tofu" if pin else None,
                            digest,
                            now,
                        ),
                    )
                elif pin:
                    conn.execute(
                        self._q(
                            "UPDATE {pins} SET pinned = %s, pinned_at = %s, pinned_by = 'tofu', "
                            "seen = %s, seen_at = %s WHERE server = %s AND tool = %s"
                        ),
                        (digest, now, digest, now, server, tool),
                    )
                elif old.seen != digest:
                    conn.execute(
                        self._q(
                            "UPDATE {pins} SET seen = %s, seen_at = %s "
                            "WHERE server = %s AND tool = %s"
                        ),
                        (digest, now, server, tool),
                    )
            return out

        result: dict[str, PinStatus] = self._run(tx, "write")
        return result

    def pin(self, server: str, tool: str, digest: str, *, by: str = "tofu") -> Pin:
        """Pin ``tool`` of ``server`` to ``digest`` (recorded as seen too if never seen)."""
        now = self.clock()

        def tx(conn: Any) -> tuple[Any, ...]:
            self._lock(conn, server)
            conn.execute(
                self._q(
                    f"INSERT INTO {{pins}} ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (server, tool) DO UPDATE SET pinned = EXCLUDED.pinned, "
                    "pinned_at = EXCLUDED.pinned_at, pinned_by = EXCLUDED.pinned_by"
                ),
                (server, tool, digest, now, by, digest, now),
            )
            row: tuple[Any, ...] = conn.execute(self._select_one, (server, tool)).fetchone()
            return row

        return _row(self._run(tx, "write"))

    def approve(self, server: str, tool: str, *, by: str = "operator") -> Pin:
        """Pin the digest last seen for the tool; PinError if the tool was never seen."""
        now = self.clock()

        def tx(conn: Any) -> Pin:
            self._lock(conn, server)
            row = conn.execute(self._select_one, (server, tool)).fetchone()
            if row is None:
                raise PinError(f"no tool `{tool}` of server `{server}` has been seen")
            conn.execute(
                self._q(
                    "UPDATE {pins} SET pinned = seen, pinned_at = %s, pinned_by = %s "
                    "WHERE server = %s AND tool = %s"
                ),
                (now, by, server, tool),
            )
            return _row(row)

        old: Pin = self._run(tx, "write")
        return Pin(server, tool, old.seen, now, by, old.seen, old.seen_at)

    def reset(self, server: str, tool: str | None = None) -> int:
        """Forget the pins of ``server`` (or of one tool): the next listing pins again.

        Returns how many were forgotten.
        """

        def tx(conn: Any) -> int:
            self._lock(conn, server)
            if tool is None:
                cur = conn.execute(self._q("DELETE FROM {pins} WHERE server = %s"), (server,))
            else:
                cur = conn.execute(
                    self._q("DELETE FROM {pins} WHERE server = %s AND tool = %s"), (server, tool)
                )
            count: int = cur.rowcount
            return count

        result: int = self._run(tx, "write")
        return result
