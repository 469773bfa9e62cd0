"""Governed calls in flight, so that a kill can stop them (docs/runtime.md, "Kill switch").

The Governor opens a ``Call`` around every governed call it runs and makes it
current (a context variable). Code running inside the call, such as the
sandbox, adds *hooks*: callables that stop what it started (kill a process
group, cancel a task). ``InFlight.cancel`` marks every matching call cancelled
and runs its hooks at once; a hook added to a call already cancelled runs
immediately.
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = ["Call", "InFlight", "current"]

_current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("warden_call", default=None)
_ids = itertools.count(1)


def current() -> Call | None:
    """The governed call this code runs inside, if any."""
    return _current.get()


class Call:
    """One governed call: who makes it, and how to stop what it started."""

    __slots__ = ("_hooks", "_lock", "agent", "cancelled", "id", "reason", "session", "tool")

    def __init__(self, agent: str | None, session: str | None, tool: str) -> None:
        self.id = next(_ids)
        self.agent = agent
        self.session = session
        self.tool = tool
        self.cancelled = False
        self.reason = ""
        self._hooks: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def add_hook(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run ``hook`` when the call is cancelled (now, if it already is); returns a remover."""
        with self._lock:
            if not self.cancelled:
                self._hooks.append(hook)
                return lambda: self._remove(hook)
        _run(hook)
        return lambda: None

    def _remove(self, hook: Callable[[], None]) -> None:
        with self._lock:
            if hook in self._hooks:
                self._hooks.remove(hook)

    def cancel(self, reason: str) -> None:
        with self._lock:
            if self.cancelled:
                return
            self.cancelled = True
            self.reason = reason
            hooks, self._hooks = self._hooks, []
        for hook in hooks:
            _run(hook)

    def __repr__(self) -> str:
        state = f", cancelled: {self.reason}" if self.cancelled else ""
        return f"Call({self.id}, {self.tool}, agent={self.agent}, session={self.session}{state})"


def _run(hook: Callable[[], None]) -> None:
    with contextlib.suppress(Exception):  # one failing hook must not stop the others
        hook()


class InFlight:
    """The calls a Governor is running now. Thread-safe."""

    def __init__(self) -> None:
        self._calls: dict[int, Call] = {}
        self._lock = threading.Lock()

    @contextmanager
    def track(self, agent: str | None, session: str | None, tool: str) -> Iterator[Call]:
        """Register a call for the duration of the block and make it current."""
        call = Call(agent, session, tool)
        with self._lock:
            self._calls[call.id] = call
        token = _current.set(call)
        try:
            yield call
        finally:
            _current.reset(token)
            with self._lock:
                self._calls.pop(call.id, None)

    def cancel(self, match: Callable[[Call], bool], reason: str) -> int:
        """Cancel every call ``match`` selects; the number cancelled."""
        with self._lock:
            chosen = [c for c in self._calls.values() if match(c)]
        for call in chosen:
            call.cancel(reason)
        return len(chosen)

    def __len__(self) -> int:
        return len(self._calls)
