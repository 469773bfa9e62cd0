"""Pinned MCP tool versions: trust on first use, then no silent change (docs/mcp.md, "Pinning").

A tool's version is its digest: ``sha256:`` over the RFC 8785 (JCS) bytes of
``{name, description, inputSchema}`` as the upstream sent them. The store
keeps, per ``(server, tool)``, the pinned digest (``None`` until one is
pinned) and the digest of the latest listing. A listing whose digest differs
from the pin is a rug pull; the tool stays hidden until an operator approves
the digest that was seen (``warden mcp pins approve``).

The store is a SQLite file (``$WARDEN_HOME/mcp-pins.db``, WAL). Every
read-modify-write runs in one ``BEGIN IMMEDIATE`` transaction, so a gateway
and the ``warden mcp pins`` command can share it. A listing that changes
nothing writes nothing. With ``WARDEN_DATABASE_URL`` the pins live in
PostgreSQL instead (``warden.store.pins.PostgresPinStore``, shared by every
replica); ``open_pin_store`` picks one, and both satisfy ``PinBackend``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol, runtime_checkable

import rfc8785

from warden._closing import Closing
from warden._sqlite import open_store, write_transaction
from warden.errors import PinError

if TYPE_CHECKING:
    from warden.store import FleetConfig

__all__ = [
    "Pin",
    "PinBackend",
    "PinError",
    "PinStatus",
    "PinStore",
    "default_pins_path",
    "open_pin_store",
    "tool_digest",
]

PinStatus = Literal["new", "pinned", "changed"]
"""What a listing of a tool is, next to its pin: not pinned yet, the pinned version, another one."""

SCHEMA_VERSION: Final = 1
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pins (
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    pinned TEXT,
    pinned_at REAL,
    pinned_by TEXT,
    seen TEXT NOT NULL,
    seen_at REAL NOT NULL,
    PRIMARY KEY (server, tool)
);
"""
_COLUMNS: Final = "server, tool, pinned, pinned_at, pinned_by, seen, seen_at"


def default_pins_path() -> Path:
    """``$WARDEN_HOME/mcp-pins.db`` (``.warden`` when WARDEN_HOME is not set)."""
    return Path(os.environ.get("WARDEN_HOME", ".warden")) / "mcp-pins.db"


def tool_digest(name: str, description: str | None, input_schema: Mapping[str, Any]) -> str:
    """``sha256:`` + hex SHA-256 of the JCS form of ``{name, description, inputSchema}``.

    A ``description`` of ``None`` (the upstream sent none) is left out of the
    object. Raises ValueError for values JCS cannot encode (integers beyond
    ±2^53, NaN): such a tool cannot be pinned.
    """
    doc: dict[str, Any] = {"name": name, "inputSchema": input_schema}
    if description is not None:
        doc["description"] = description
    try:
        data = rfc8785.dumps(doc)
    except Exception as exc:  # noqa: BLE001 - rfc8785 raises its own types for unencodable values
        raise ValueError(f"the tool cannot be canonicalised: {exc}") from None
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class Pin:
    """One tool's pin: the approved digest (``None`` until pinned) and the latest one seen."""

    server: str
    tool: str
    pinned: str | None
    pinned_at: float | None
    pinned_by: str | None
    seen: str
    seen_at: float

    @property
    def status(self) -> PinStatus:
        if self.pinned is None:
            return "new"
        return "pinned" if self.pinned == self.seen else "changed"

    def to_dict(self) -> dict[str, Any]:
        return {
            "server": self.server,
            "tool": self.tool,
            "status": self.status,
            "pinned": self.pinned,
            "pinned_at": self.pinned_at,
            "pinned_by": self.pinned_by,
            "seen": self.seen,
            "seen_at": self.seen_at,
        }


def _row(r: tuple[Any, ...]) -> Pin:
    return Pin(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


@runtime_checkable
class PinBackend(Protocol):
    """What the gateway and ``warden mcp pins`` use of a pin store.

    ``PinStore`` (SQLite, embedded) and ``warden.store.pins.PostgresPinStore``
    (fleet) implement it and pass the same tests. A store that cannot be read
    or written raises PinError: the gateway then shows no unpinned tool.
    """

    def get(self, server: str, tool: str) -> Pin | None: ...

    def list(self, server: str | None = None) -> list[Pin]: ...

    def record_seen(self, server: str, tool: str, digest: str) -> PinStatus: ...

    def observe(
        self, server: str, seen: Mapping[str, str], *, pin_new: Collection[str] = ()
    ) -> dict[str, PinStatus]: ...

    def pin(self, server: str, tool: str, digest: str, *, by: str = "tofu") -> Pin: ...

    def approve(self, server: str, tool: str, *, by: str = "operator") -> Pin: ...

    def reset(self, server: str, tool: str | None = None) -> int: ...

    def close(self) -> None: ...


def open_pin_store(
    home: str | os.PathLike[str],
    config: FleetConfig | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> PinBackend:
    """The pin store the environment names: PostgreSQL or ``home/mcp-pins.db``.

    PostgreSQL when ``WARDEN_DATABASE_URL`` is set (namespace from
    ``WARDEN_FLEET_NAMESPACE``). ``config`` defaults to ``FleetConfig.from_env()``;
    a malformed URL is a ConfigurationError, never a fallback to the embedded store.
    """
    if config is None:
        from warden.store import FleetConfig

        config = FleetConfig.from_env()
    if config.database_url is not None:
        from warden.store.pins import PostgresPinStore

        return PostgresPinStore(config.database_url, config.namespace, clock=clock)
    return PinStore(Path(home) / "mcp-pins.db", clock=clock)


class PinStore(Closing):
    """Tool pins in a SQLite file, safe across threads and processes."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path) if path is not None else default_pins_path()
        self.clock = clock
        self._lock = threading.Lock()
        self._db = open_store(self.path, _SCHEMA, SCHEMA_VERSION, "pin store", PinError)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _read(self, query: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            with self._lock:
                return self._db.execute(query, params).fetchall()
        except sqlite3.Error as exc:
            raise PinError(f"{self.path}: cannot read the pin store: {exc}") from None

    def get(self, server: str, tool: str) -> Pin | None:
        """The pin of ``tool`` on ``server``, or None when the tool was never seen."""
        rows = self._read(
            f"SELECT {_COLUMNS} FROM pins WHERE server = ? AND tool = ?", (server, tool)
        )
        return _row(rows[0]) if rows else None

    def list(self, server: str | None = None) -> list[Pin]:
        """Every pin (of one server), by server then tool."""
        if server is None:
            rows = self._read(f"SELECT {_COLUMNS} FROM pins ORDER BY server, tool", ())
        else:
            rows = self._read(
                f"SELECT {_COLUMNS} FROM pins WHERE server = ? ORDER BY tool", (server,)
            )
        return [_row(r) for r in rows]

    def record_seen(self, server: str, tool: str, digest: str) -> PinStatus:
        """Record that a listing showed ``digest`` for the tool; its status next to the pin."""
        return self.observe(server, {tool: digest})[tool]

    def observe(
        self, server: str, seen: Mapping[str, str], *, pin_new: Collection[str] = ()
    ) -> dict[str, PinStatus]:
        """Record one listing of ``server`` (tool -> digest); each tool's status before this call.

        Tools named in ``pin_new`` whose status is ``new`` are pinned to the
        digest seen, in the same transaction (trust on first use). Nothing is
        written when the listing matches what is stored.
        """
        if not seen:
            return {}
        rows = self._rows(server)
        if not _needs_write(rows, seen, pin_new):
            return {tool: _status(rows.get(tool), digest) for tool, digest in seen.items()}
        now = self.clock()
        try:
            with write_transaction(self._db, self._lock) as db:
                fresh = {
                    r[1]: _row(r)
                    for r in db.execute(f"SELECT {_COLUMNS} FROM pins WHERE server = ?", (server,))
                }
                out: dict[str, PinStatus] = {}
                for tool, digest in seen.items():
                    old = fresh.get(tool)
                    status = _status(old, digest)
                    out[tool] = status
                    pin = status == "new" and tool in pin_new
                    if old is None:
                        db.execute(
                            f"INSERT INTO pins ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
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
                        db.execute(
                            "UPDATE pins SET pinned = ?, pinned_at = ?, pinned_by = 'tofu', "
                            "seen = ?, seen_at = ? WHERE server = ? AND tool = ?",
                            (digest, now, digest, now, server, tool),
                        )
                    elif old.seen != digest:
                        db.execute(
                            "UPDATE pins SET seen = ?, seen_at = ? WHERE server = ? AND tool = ?",
                            (digest, now, server, tool),
                        )
                return out
        except sqlite3.Error as exc:
            raise PinError(f"{self.path}: cannot write the pin store: {exc}") from None

    def _rows(self, server: str) -> dict[str, Pin]:
        rows = self._read(f"SELECT {_COLUMNS} FROM pins WHERE server = ?", (server,))
        return {r[1]: _row(r) for r in rows}

    def pin(self, server: str, tool: str, digest: str, *, by: str = "tofu") -> Pin:
        """Pin ``tool`` of ``server`` to ``digest`` (recorded as seen too if never seen)."""
        now = self.clock()
        try:
            with write_transaction(self._db, self._lock) as db:
                db.execute(
                    f"INSERT INTO pins ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) "
                    "ON CONFLICT (server, tool) DO UPDATE SET pinned = excluded.pinned, "
                    "pinned_at = excluded.pinned_at, pinned_by = excluded.pinned_by",
                    (server, tool, digest, now, by, digest, now),
                )
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM pins WHERE server = ? AND tool = ?", (server, tool)
                ).fetchone()
        except sqlite3.Error as exc:
            raise PinError(f"{self.path}: cannot write the pin store: {exc}") from None
        return _row(row)

    def approve(self, server: str, tool: str, *, by: str = "operator") -> Pin:
        """Pin the digest last seen for the tool; PinError if the tool was never seen."""
        now = self.clock()
        try:
            with write_transaction(self._db, self._lock) as db:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM pins WHERE server = ? AND tool = ?", (server, tool)
                ).fetchone()
                if row is None:
                    raise PinError(f"no tool `{tool}` of server `{server}` has been seen")
                db.execute(
                    "UPDATE pins SET pinned = seen, pinned_at = ?, pinned_by = ? "
                    "WHERE server = ? AND tool = ?",
                    (now, by, server, tool),
                )
                old = _row(row)
        except sqlite3.Error as exc:
            raise PinError(f"{self.path}: cannot write the pin store: {exc}") from None
        return Pin(server, tool, old.seen, now, by, old.seen, old.seen_at)

    def reset(self, server: str, tool: str | None = None) -> int:
        """Forget the pins of ``server`` (or of one tool): the next listing pins again.

        Returns how many were forgotten.
        """
        try:
            with write_transaction(self._db, self._lock) as db:
                if tool is None:
                    cur = db.execute("DELETE FROM pins WHERE server = ?", (server,))
                else:
                    cur = db.execute(
                        "DELETE FROM pins WHERE server = ? AND tool = ?", (server, tool)
                    )
                return cur.rowcount
        except sqlite3.Error as exc:
            raise PinError(f"{self.path}: cannot write the pin store: {exc}") from None


def _status(old: Pin | None, digest: str) -> PinStatus:
    if old is None or old.pinned is None:
        return "new"
    return "pinned" if old.pinned == digest else "changed"


def _needs_write(
    rows: Mapping[str, Pin], seen: Mapping[str, str], pin_new: Collection[str]
) -> bool:
    for tool, digest in seen.items():
        old = rows.get(tool)
        if old is None or old.seen != digest:
            return True
        if old.pinned is None and tool in pin_new:
            return True
    return False
