"""A bounded, expiring set of values already seen (handshake and envelope nonces)."""

from __future__ import annotations

import threading
from typing import Final

from warden.errors import ConfigurationError

__all__ = ["ReplayCache"]

DEFAULT_MAX_ENTRIES: Final = 100_000


class ReplayCache:
    """Remembers keys for ``ttl`` seconds, at most ``max_entries`` of them.

    Entries sit in insertion order, which is expiry order while the clock goes
    forward, so expiring is a pop from the front: ``add`` is amortised O(1).
    When full of live entries the oldest one is dropped: the bound is on
    memory. Callers never rely on the cache alone (a handshake nonce is also
    bounded by the timestamp window and the FINISH signature; an envelope by
    its sequence number), so a dropped entry costs defence in depth, not
    correctness. Thread-safe.
    """

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES, ttl: float = 60.0) -> None:
        if type(max_entries) is not int or max_entries < 1:
            raise ConfigurationError("max_entries must be a positive integer")
        if not ttl > 0:
            raise ConfigurationError("ttl must be a positive number of seconds")
        self.max_entries = max_entries
        self.ttl = float(ttl)
        self._expiry: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, key: str, now: float) -> bool:
        """Record ``key`` at time ``now`` (seconds); False when it is already present."""
        with self._lock:
            self._expire(now)
            seen = self._expiry.get(key)
            if seen is not None and seen > now:
                return False
            self._expiry.pop(key, None)  # an expired copy out of order: re-insert at the back
            self._expiry[key] = now + self.ttl
            if len(self._expiry) > self.max_entries:
                del self._expiry[next(iter(self._expiry))]
            return True

    def seen(self, key: str, now: float) -> bool:
        """True when ``key`` is present and unexpired at ``now`` (records nothing)."""
        with self._lock:
            expiry = self._expiry.get(key)
            return expiry is not None and expiry > now

    def _expire(self, now: float) -> None:
        entries = self._expiry
        while entries:
            oldest = next(iter(entries))
            if entries[oldest] > now:
                break
            del entries[oldest]

    def __len__(self) -> int:
        return len(self._expiry)

    def __repr__(self) -> str:
        return f"ReplayCache({len(self)}/{self.max_entries}, ttl={self.ttl:g} s)"
