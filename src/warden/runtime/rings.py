"""Rings: the operator's ring for an agent, and what a tool needs (docs/runtime.md, "Rings")."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Final

from warden._re import compile_glob, is_literal, search

if TYPE_CHECKING:
    from warden.policy import Policy

__all__ = ["RING_NAMES", "UNTRUSTED", "RingTable"]

UNTRUSTED: Final = 3
RING_NAMES: Final = ("supervisor", "privileged", "standard", "untrusted")
_CACHE: Final = 8192


class RingTable:
    """A policy's ``agents:`` and ``tools:`` sections, with lookups cached per name."""

    def __init__(self, policy: Policy | None) -> None:
        agents = policy.agents if policy is not None else ()
        tools = policy.tools if policy is not None else ()
        # Most specific first: literals, then longer patterns.
        self._agents = sorted(
            ((a.pattern, compile_glob(a.pattern), a.ring) for a in agents),
            key=lambda t: (not is_literal(t[0]), -len(t[0])),
        )
        self._tools = [(compile_glob(t.pattern), t.ring, t.exec) for t in tools]
        flow_egress = policy.flows.egress if policy is not None else ()
        self._egress = [compile_glob(t.pattern) for t in tools if t.egress] + [
            compile_glob(e.pattern) for e in flow_egress
        ]
        self._grants = [
            (compile_glob(t.pattern), t.read, t.write, t.network)
            for t in tools
            if t.read or t.write or t.network
        ]
        self.has_tools = bool(self._tools)
        self._agent_cache: dict[str, int] = {}
        self._tool_cache: dict[str, tuple[int, bool]] = {}
        self._lock = threading.Lock()

    def agent_ring(self, agent_id: object) -> int:
        """The operator's ring for ``agent_id``: the most specific `agents:` match, else 3."""
        if type(agent_id) is not str:
            return UNTRUSTED
        found = self._agent_cache.get(agent_id)
        if found is not None:
            return found
        ring = next((r for _, rx, r in self._agents if search(rx, agent_id)), UNTRUSTED)
        self._remember(self._agent_cache, agent_id, ring)
        return ring

    def tool_needs(self, tool: str) -> tuple[int, bool]:
        """(the least privileged ring that may call ``tool``, whether it runs code)."""
        found = self._tool_cache.get(tool)
        if found is not None:
            return found
        ring, is_exec = UNTRUSTED, False
        for rx, r, e in self._tools:
            if search(rx, tool):
                ring = min(ring, r)
                is_exec = is_exec or e
        self._remember(self._tool_cache, tool, (ring, is_exec))
        return ring, is_exec

    def sandbox_grants(self, tool: str) -> tuple[tuple[str, ...], tuple[str, ...], bool]:
        """(read-only paths, read-write paths, network) the matching `tools:` entries grant."""
        read: list[str] = []
        write: list[str] = []
        network = False
        for rx, r, w, net in self._grants:
            if search(rx, tool):
                read += r
                write += w
                network = network or net
        return tuple(dict.fromkeys(read)), tuple(dict.fromkeys(write)), network

    def is_egress(self, tool: str) -> bool:
        """True when ``tool`` sends data out: `egress: true` in `tools:`, or in `flows.egress`."""
        return any(search(rx, tool) for rx in self._egress)

    def _remember(self, cache: dict, key: str, value: object) -> None:  # type: ignore[type-arg]
        with self._lock:
            if len(cache) >= _CACHE:
                cache.clear()  # names come from agents: bound what they can make us hold
            cache[key] = value
