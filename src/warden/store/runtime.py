"""Kills and ring ceilings behind one protocol: SQLite (embedded) or Redis (fleet); docs/fleet.md.

``RuntimeStore`` is what the Runtime, the CLI and ``warden status`` use of the
kill switch and ring state. ``RuntimeState`` (``warden.runtime.state``,
SQLite) and ``RedisRuntimeState`` (here) implement it and pass the same
tests (tests/store/test_runtime_backends.py). ``open_runtime_store`` picks
one from ``FleetConfig``.

Redis layout, namespace ``N``: hash ``N:kills`` (``agent:ID``, ``session:ID``,
``all:*`` -> the kill's JSON), hash ``N:rings`` (agent id -> the ceiling's
JSON), counter ``N:version``, channel ``N:events``. A write is one MULTI/EXEC
(the hash and ``INCR N:version``) followed by ``PUBLISH N:events
{"type": "kill"|"restore"|"ring", "version": V}``.

Each ``RedisRuntimeState`` keeps an immutable snapshot in memory, replaced
whole: ``killed()`` and ``ceiling()`` read it without I/O or locks, O(1). A
subscriber thread reloads it (both hashes and the version in one MULTI/EXEC)
on every event newer than the snapshot; a write in this process installs its
own change before it returns. ``on_kill`` listeners get every kill that
appears in the snapshot once, whichever process wrote it.

Fail closed, as built:

- From construction until the first subscription and load, and whenever the
  subscription is lost (a closed connection, or no answer to a PING within
  ``heartbeat`` seconds of silence), ``killed()`` returns one synthetic kill,
  scope ``all``, reason ``runtime store unreachable (<url without
  password>): denying``, for every agent and session. Listeners are not
  called for it: an outage denies new actions but does not cancel calls in
  flight. Kills written elsewhere meanwhile are announced after recovery.
- ``ceiling()`` returns 3 (the least privilege) for every agent meanwhile,
  so a caller that looks at rings without asking ``killed()`` first still
  gets less privilege, never more.
- Writes go to Redis whatever the subscriber's state and raise
  RuntimeStateError, one line, when Redis does not answer (after one
  immediate retry on a fresh connection, for a pooled connection that died
  idle). A kill is installed locally before it is written, as in the SQLite
  store, so this process denies it even if the write fails.
- ``kills()``, ``ceilings()`` and ``refresh()`` read Redis and raise while it
  does not answer.
- The subscriber reconnects with doubling backoff (``reconnect``: first
  delay, cap; default 50 ms up to 1 s). Once subscribed it reloads both
  hashes, and only then stops denying, so nothing written during the outage
  is missed.
- A construction while Redis is down does not raise: it denies until Redis
  answers (a replica that starts during a Redis restart recovers by itself).
- An entry that does not parse denies what its field names (``agent:X``
  kills X, a ring entry holds its agent to ring 3).

Redis keeps these kills only as durably as it is configured to: without
persistence (AOF or RDB), a restarted Redis has forgotten them.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

from warden.errors import RuntimeStateError
from warden.runtime.state import Kill, RingCeiling, RuntimeState, _text
from warden.store._config import FleetConfig
from warden.store._redis import Link, connect, follow, redact, shut

if TYPE_CHECKING:
    pass

__all__ = ["RedisRuntimeState", "RuntimeStore", "open_runtime_store"]

_SCOPES: Final = ("agent", "session", "all")


class RuntimeStore(Protocol):
    """The kill switch and ring ceilings, as the Runtime, the CLI and `warden status` use them."""

    @property
    def path(self) -> str | os.PathLike[str]:
        """Where the state lives, for messages (a file, or a URL without its password)."""
        ...

    @property
    def version(self) -> int:
        """Grows whenever this process's view of the state changes."""
        ...

    def killed(self, agent: object, session: object) -> Kill | None:
        """The kill that stops this agent or session, or None. O(1), no I/O on Redis."""
        ...

    def ceiling(self, agent: object) -> int | None:
        """The ring ``agent`` is held to, or None."""
        ...

    def kill(self, scope: str, target: str | None, reason: str, by: str) -> Kill: ...

    def restore(self, scope: str, target: str | None) -> bool: ...

    def set_ceiling(self, agent: str, ring: int, reason: str, by: str) -> RingCeiling: ...

    def demote(self, agent: str, reason: str, by: str = "warden") -> RingCeiling | None: ...

    def kills(self) -> list[Kill]: ...

    def ceilings(self) -> list[RingCeiling]: ...

    def on_kill(self, listener: Callable[[list[Kill]], None]) -> None: ...

    def refresh(self) -> bool: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


def open_runtime_store(
    home: str | os.PathLike[str],
    *,
    config: FleetConfig | None = None,
    clock: Callable[[], float] = time.time,
) -> RuntimeStore:
    """The store ``config`` (default: the environment) chooses: Redis, or ``home``/runtime.db."""
    config = FleetConfig.from_env() if config is None else config
    if config.redis_url is None:
        return RuntimeState(Path(home) / "runtime.db", clock=clock)
    return RedisRuntimeState(config.redis_url, config.namespace, clock=clock)


@dataclass(frozen=True, slots=True)
class _Snapshot:
    """The state as of ``version`` of ``N:version``; never mutated, replaced whole."""

    version: int = -1  # before the first load: whatever Redis holds is newer
    agents: Mapping[str, Kill] = field(default_factory=dict)
    sessions: Mapping[str, Kill] = field(default_factory=dict)
    all: Kill | None = None
    ceilings: Mapping[str, RingCeiling] = field(default_factory=dict)

    def kills(self) -> list[Kill]:
        out = [*self.agents.values(), *self.sessions.values()]
        if self.all is not None:
            out.append(self.all)
        return out

    def with_kill(self, kill: Kill, version: int) -> _Snapshot:
        if kill.scope == "all":
            return _Snapshot(version, self.agents, self.sessions, kill, self.ceilings)
        if kill.scope == "agent":
            agents = {**self.agents, kill.target: kill}
            return _Snapshot(version, agents, self.sessions, self.all, self.ceilings)
        sessions = {**self.sessions, kill.target: kill}
        return _Snapshot(version, self.agents, sessions, self.all, self.ceilings)

    def without(self, scope: str, target: str, version: int) -> _Snapshot:
        agents = {k: v for k, v in self.agents.items() if scope != "agent" or k != target}
        sessions = {k: v for k, v in self.sessions.items() if scope != "session" or k != target}
        kill_all = None if scope == "all" else self.all
        return _Snapshot(version, agents, sessions, kill_all, self.ceilings)

    def with_ceiling(self, ceiling: RingCeiling, version: int) -> _Snapshot:
        ceilings = {**self.ceilings, ceiling.agent: ceiling}
        return _Snapshot(version, self.agents, self.sessions, self.all, ceilings)


class RedisRuntimeState:
    """The kill switch and ring ceilings of a fleet, in Redis (docs/fleet.md). Thread-safe.

    ``timeout``: seconds to connect and to wait for an answer. ``heartbeat``:
    seconds of silence on the subscription after which it is PINGed, and
    declared lost if the PING is not answered within as long again.
    ``reconnect``: (first delay, cap) of the subscriber's doubling backoff.
    """

    def __init__(
        self,
        url: str,
        namespace: str = "warden",
        *,
        clock: Callable[[], float] = time.time,
        reconnect: tuple[float, float] = (0.05, 1.0),
        timeout: float = 1.0,
        heartbeat: float = 1.0,
    ) -> None:
        self.path = redact(url)
        self.namespace = namespace
        self._clock = clock
        self._kills_key = f"{namespace}:kills"
        self._rings_key = f"{namespace}:rings"
        self._version_key = f"{namespace}:version"
        self._lock = threading.Lock()
        self._snap = _Snapshot()
        self._announced: frozenset[Kill] = frozenset()
        self._listeners: list[Callable[[list[Kill]], None]] = []
        self._closed = False
        self._outage: Kill | None = self._unreachable()

        # Commands retry once at once: a pooled connection may have died while idle. The
        # subscriber never retries inside redis-py: a lost subscription must show.
        what = "the Redis runtime store"
        self._link = Link(
            connect(url, timeout, 1, what),
            connect(url, timeout, 0, what),
            f"{namespace}:events",
            timeout,
            heartbeat,
            reconnect,
        )
        thread = threading.Thread(
            target=follow,
            args=(weakref.ref(self), self._link),
            name="warden-runtime-redis",
            daemon=True,
        )
        self._link.thread = thread
        self._finalizer = weakref.finalize(self, shut, self._link)  # on close, or when collected
        thread.start()
        self._link.settled.wait(3 * timeout + 1.0)

    # --- the decision path ---------------------------------------------------------------

    def killed(self, agent: object, session: object) -> Kill | None:
        """The kill that stops this agent or session, or None. O(1), no I/O."""
        if self._closed:
            raise RuntimeStateError(f"{self.path}: the runtime state is closed")
        outage = self._outage
        if outage is not None:
            return outage
        snap = self._snap
        if snap.all is not None:
            return snap.all
        if type(agent) is str:
            hit = snap.agents.get(agent)
            if hit is not None:
                return hit
        if type(session) is str:
            return snap.sessions.get(session)
        return None

    def ceiling(self, agent: object) -> int | None:
        """The ring ``agent`` is held to, or None; 3 for everyone while Redis is unreachable."""
        if self._outage is not None:
            return 3
        found = self._snap.ceilings.get(agent) if type(agent) is str else None
        return None if found is None else found.ring

    @property
    def version(self) -> int:
        """``N:version`` as of the snapshot this process holds (-1 before the first load)."""
        return self._snap.version

    # --- writes --------------------------------------------------------------------------

    def kill(self, scope: str, target: str | None, reason: str, by: str) -> Kill:
        """Record a kill; returns it once Redis has it and the event is published.

        It is installed here first, so this process denies it from the start of
        the call, and keeps denying it until newer state is loaded even if the
        write fails (RuntimeStateError then says it did not land).
        """
        if scope not in _SCOPES:
            raise RuntimeStateError(f"a kill targets an agent, a session or all, not {scope!r}")
        name = "" if scope == "all" else _text(target, "target")
        record = Kill(scope, name, _text(reason, "reason"), _text(by, "by"), self._clock())
        self._check_open()
        with self._lock:
            self._snap = self._snap.with_kill(record, self._snap.version)
        body = json.dumps(record.to_dict())
        version, _ = self._write(
            "kill", lambda pipe: pipe.hset(self._kills_key, _field(scope, name), body)
        )
        self._advance(version, lambda snap: snap.with_kill(record, version))
        return record

    def restore(self, scope: str, target: str | None) -> bool:
        """Lift a kill; False when there was none."""
        name = "" if scope == "all" else _text(target, "target")
        self._check_open()
        version, deleted = self._write(
            "restore", lambda pipe: pipe.hdel(self._kills_key, _field(scope, name))
        )
        self._advance(version, lambda snap: snap.without(scope, name, version))
        return bool(deleted)

    def set_ceiling(self, agent: str, ring: int, reason: str, by: str) -> RingCeiling:
        """Hold ``agent`` to ``ring`` (0 lifts any demotion in effect)."""
        if type(ring) is not int or not 0 <= ring <= 3:
            raise RuntimeStateError(f"a ring is an integer from 0 to 3, not {ring!r}")
        record = RingCeiling(
            _text(agent, "agent"), ring, _text(reason, "reason"), _text(by, "by"), self._clock()
        )
        self._check_open()
        body = json.dumps(record.to_dict())
        version, _ = self._write("ring", lambda pipe: pipe.hset(self._rings_key, agent, body))
        self._advance(version, lambda snap: snap.with_ceiling(record, version))
        return record

    def demote(self, agent: str, reason: str, by: str = "warden") -> RingCeiling | None:
        """Hold ``agent`` to ring 3, unless it already is; the new ceiling, or None."""
        current = self._snap.ceilings.get(agent)
        if current is not None and current.ring == 3:
            return None
        return self.set_ceiling(agent, 3, reason, by)

    def _write(self, kind: str, change: Callable[[Any], object]) -> tuple[int, int]:
        """(the new version, the change's own result): MULTI, change, INCR, EXEC; PUBLISH."""
        import redis

        try:
            pipe = self._link.client.pipeline(transaction=True)
            change(pipe)
            pipe.incr(self._version_key)
            result, version = pipe.execute()
            event = json.dumps({"type": kind, "version": version})
            self._link.client.publish(self._link.channel, event)
        except redis.RedisError as exc:
            raise RuntimeStateError(
                f"{self.path}: cannot write the runtime state: {_one_line(exc)}"
            ) from None
        return int(version), int(result)

    def _advance(self, version: int, change: Callable[[_Snapshot], _Snapshot]) -> None:
        """Install this process's own write: in place when nothing came between, else reload."""
        with self._lock:
            current = self._snap.version
            if current >= version:
                return  # the subscriber has loaded it, or something newer
            fresh = self._install(change(self._snap)) if current == version - 1 else None
        if fresh is None:
            self._reload()
        else:
            self._announce(fresh)

    # --- reading Redis -------------------------------------------------------------------

    def refresh(self) -> bool:
        """Load the state from Redis now; True when it changed. Raises while Redis is down."""
        self._check_open()
        return self._reload()

    def _reload(self) -> bool:
        new = self._fetch()
        force = False
        if new.version < self._snap.version:
            # Either a write of this process landed between the read and now, or the
            # store was reset (a Redis without persistence restarted): read again, and
            # believe what Redis says.
            new, force = self._fetch(), True
        with self._lock:
            if not force and new.version <= self._snap.version:
                return False
            fresh = self._install(new)
        self._announce(fresh)
        return True

    def _fetch(self) -> _Snapshot:
        import redis

        try:
            pipe = self._link.client.pipeline(transaction=True)
            pipe.hgetall(self._kills_key)
            pipe.hgetall(self._rings_key)
            pipe.get(self._version_key)
            kills, rings, version = pipe.execute()
        except redis.RedisError as exc:
            raise RuntimeStateError(
                f"{self.path}: cannot read the runtime state: {_one_line(exc)}"
            ) from None
        agents: dict[str, Kill] = {}
        sessions: dict[str, Kill] = {}
        kill_all: Kill | None = None
        for key, raw in kills.items():
            kill = _parse_kill(key, raw)
            if kill is None:
                continue
            if kill.scope == "all":
                kill_all = kill
            elif kill.scope == "agent":
                agents[kill.target] = kill
            else:
                sessions[kill.target] = kill
        ceilings = {key: _parse_ceiling(key, raw) for key, raw in rings.items()}
        return _Snapshot(_int(version), agents, sessions, kill_all, ceilings)

    def _install(self, snap: _Snapshot) -> tuple[list[Kill], list[Callable[[list[Kill]], None]]]:
        """Make ``snap`` current (the caller holds the lock); the kills to announce, and to whom."""
        kills = snap.kills()
        fresh = [k for k in kills if k not in self._announced]
        self._snap = snap
        self._announced = frozenset(kills)
        return fresh, list(self._listeners)

    @staticmethod
    def _announce(fresh: tuple[list[Kill], list[Callable[[list[Kill]], None]]]) -> None:
        kills, listeners = fresh
        if not kills:
            return
        for listener in listeners:
            # A listener that fails must not stop the subscriber or the others.
            with contextlib.suppress(Exception):
                listener(kills)

    def on_kill(self, listener: Callable[[list[Kill]], None]) -> None:
        """Call ``listener`` once with each kill that appears (from this process or another)."""
        with self._lock:
            self._listeners.append(listener)

    def kills(self) -> list[Kill]:
        self.refresh()
        return sorted(self._snap.kills(), key=lambda k: k.at)

    def ceilings(self) -> list[RingCeiling]:
        self.refresh()
        return sorted(self._snap.ceilings.values(), key=lambda c: c.at)

    # --- the subscription ----------------------------------------------------------------

    def _unreachable(self) -> Kill:
        reason = f"runtime store unreachable ({self.path}): denying"
        return Kill("all", "", reason, "warden", self._clock())

    # --- the followed channel (warden.store._redis.follow) -----------------------------------

    def _link_down(self, exc: BaseException) -> None:
        if self._outage is None:
            self._outage = self._unreachable()

    def _link_up(self) -> None:
        """The subscription is up again: reload everything, then stop denying."""
        self._reload()
        self._outage = None

    def _link_events(self, data: list[object]) -> None:
        if max(_event_version(d) for d in data) > self._snap.version:
            self._reload()

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeStateError(f"{self.path}: the runtime state is closed")

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisRuntimeState({self.path!r}, {self.namespace!r})"


def _event_version(data: object) -> int:
    """The version an event announces; a malformed event forces a reload (it is newer than all)."""
    try:
        event = json.loads(data) if isinstance(data, str) else None
    except ValueError:
        event = None
    version = event.get("version") if isinstance(event, dict) else None
    return version if type(version) is int else 2**62


def _field(scope: str, target: str) -> str:
    return "all:*" if scope == "all" else f"{scope}:{target}"


def _parse_kill(key: str, raw: str) -> Kill | None:
    """The kill stored under ``key``; a kill of what ``key`` names when the JSON is unreadable."""
    scope, sep, target = key.partition(":")
    if not sep or scope not in _SCOPES:
        return None  # names nobody this store could deny
    target = "" if scope == "all" else target
    try:
        data = json.loads(raw)
        reason, by, at = data["reason"], data["by"], data["at"]
    except (ValueError, TypeError, KeyError):
        reason = by = at = None
    if type(reason) is str and type(by) is str and _is_time(at):
        return Kill(scope, target, reason, by, float(at))
    return Kill(scope, target, f"unreadable kill record `{key}`: denying", "warden", 0.0)


def _parse_ceiling(agent: str, raw: str) -> RingCeiling:
    """The ceiling stored for ``agent``; ring 3 when the JSON is unreadable."""
    try:
        data = json.loads(raw)
        ring, reason, by, at = data["ring"], data["reason"], data["by"], data["at"]
    except (ValueError, TypeError, KeyError):
        ring = reason = by = at = None
    if (
        type(ring) is int
        and 0 <= ring <= 3
        and type(reason) is str
        and type(by) is str
        and _is_time(at)
    ):
        return RingCeiling(agent, ring, reason, by, float(at))
    return RingCeiling(agent, 3, "unreadable ring record: held to ring 3", "warden", 0.0)


def _is_time(value: object) -> bool:
    return isinstance(value, int | float) and type(value) is not bool and math.isfinite(value)


def _int(value: object) -> int:
    """``N:version`` as read (a decimal string, or None before the first write)."""
    if not isinstance(value, str):
        return 0
    try:
        return int(value)
    except ValueError:
        return 0


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__
