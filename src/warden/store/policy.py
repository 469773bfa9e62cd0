"""Policy changes pushed to every replica through Redis (docs/fleet.md, "Policy changes").

Redis layout, namespace ``N``: hash ``N:policy`` (``bytes``: the file's bytes in
base64, ``hash``: the loaded policy's hash, ``by``, ``at``) and channel
``N:policy:events``, on which ``publish_policy`` sends ``{"type": "policy",
"hash": H}`` after the hash is written (one MULTI/EXEC for both).

A ``PolicyFollower`` attached to a Governor subscribes to the channel; once
subscribed (at start and after every reconnection) and on every event it reads
``N:policy`` and, when its hash is not the Governor's, writes the bytes to a
temporary file and calls ``gov.reload(path)``: the Governor's own loading path,
so bundles are verified against its signers and strict mode is honoured.

Fail safe: a policy that does not load (broken, unsigned for a strict
Governor, signed by an untrusted key) is logged and the Governor keeps the
policy it has; so does a Redis outage (the follower reconnects with doubling
backoff and catches up once subscribed). A Governor is never left without a
policy. The same bytes that failed once are not tried again until others are
published.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from warden.errors import RuntimeStateError
from warden.store._redis import Link, connect, follow, redact, shut

if TYPE_CHECKING:
    import redis

    from warden.governor import Governor

__all__ = ["PolicyFollower", "PublishedPolicy", "publish_policy", "read_published"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """What ``N:policy`` holds."""

    data: bytes
    hash: str
    by: str
    at: float


def publish_policy(
    url: str,
    namespace: str,
    data: bytes,
    policy_hash: str,
    by: str,
    *,
    timeout: float = 1.0,
    clock: float | None = None,
) -> None:
    """Store ``data`` (already checked by loading it) as the fleet's policy and announce it.

    RuntimeStateError, one line, when Redis does not answer.
    """
    client = connect(url, timeout, 1, "policy publishing")  # before redis is imported
    import redis

    try:
        pipe = client.pipeline(transaction=True)
        pipe.hset(
            f"{namespace}:policy",
            mapping={
                "bytes": base64.b64encode(data).decode("ascii"),
                "hash": policy_hash,
                "by": by,
                "at": repr(time.time() if clock is None else clock),
            },
        )
        pipe.publish(
            f"{namespace}:policy:events", json.dumps({"type": "policy", "hash": policy_hash})
        )
        pipe.execute()
    except redis.RedisError as exc:
        raise RuntimeStateError(
            f"{redact(url)}: cannot publish the policy: {' '.join(str(exc).split())}"
        ) from None
    finally:
        client.close()


def read_published(client: redis.Redis, namespace: str) -> PublishedPolicy | None:
    """The published policy, or None when there is none or it is unreadable (logged)."""
    raw: dict[str, str] = client.hgetall(f"{namespace}:policy")  # type: ignore[assignment]
    if not raw:
        return None
    try:
        data = base64.b64decode(raw["bytes"], validate=True)
        at = float(raw.get("at", "0"))
    except (KeyError, ValueError, binascii.Error):
        log.error("the published policy in `%s:policy` is unreadable: ignored", namespace)
        return None
    return PublishedPolicy(data, raw.get("hash", ""), raw.get("by", ""), at)


class PolicyFollower:
    """Keeps ``gov`` on the policy published in Redis under ``namespace`` (docs/fleet.md).

    Starts at once and waits (up to about ``3 * timeout + 1`` seconds) for the
    first subscription and catch-up. ``applied``: the hash last applied by this
    follower; ``error``: why the last published policy was refused, or None.
    """

    def __init__(
        self,
        gov: Governor,
        url: str,
        namespace: str = "warden",
        *,
        timeout: float = 1.0,
        heartbeat: float = 1.0,
        reconnect: tuple[float, float] = (0.05, 1.0),
    ) -> None:
        self.gov = gov
        self.path = redact(url)
        self.namespace = namespace
        self.applied: str | None = None
        self.error: str | None = None
        self.connected = False
        self._failed: str | None = None  # digest of the bytes that last failed to load
        self._apply_lock = threading.Lock()
        self._link = Link(
            connect(url, timeout, 1, "following published policies"),
            connect(url, timeout, 0, "following published policies"),
            f"{namespace}:policy:events",
            timeout,
            heartbeat,
            reconnect,
        )
        self._link.thread = threading.Thread(
            target=follow, args=(lambda: self, self._link), name="warden-policy-follower",
            daemon=True,
        )  # fmt: skip
        self._link.thread.start()
        self._link.settled.wait(3 * timeout + 1.0)

    # --- applying ------------------------------------------------------------------------

    def sync(self) -> bool:
        """Apply the published policy now if it is not the Governor's; True when applied.

        RuntimeStateError when Redis does not answer; a policy that does not load
        is logged and kept out (False).
        """
        import redis

        try:
            published = read_published(self._link.client, self.namespace)
        except redis.RedisError as exc:
            raise RuntimeStateError(
                f"{self.path}: cannot read the published policy: {' '.join(str(exc).split())}"
            ) from None
        if published is None:
            return False
        with self._apply_lock:
            current = self.gov.policy
            if current is not None and current.hash == published.hash:
                return False
            digest = hashlib.sha256(published.data).hexdigest()
            if digest == self._failed:
                return False  # already refused; logged then
            try:
                self._reload(published.data)
            except Exception as exc:  # noqa: BLE001 - any failure keeps the old policy
                self._failed = digest
                self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                log.error(
                    "published policy %s (by %s) not applied, keeping %s: %s",
                    published.hash or "(no hash)",
                    published.by or "?",
                    current.hash if current is not None else "no policy",
                    self.error,
                )
                return False
            self._failed = None
            self.error = None
            loaded = self.gov.policy
            self.applied = loaded.hash if loaded is not None else None
            log.info("policy %s (by %s) applied", self.applied, published.by or "?")
            return True

    def _reload(self, data: bytes) -> None:
        """Load ``data`` through the Governor's own path (signers, strict mode)."""
        suffix = ".bundle.json" if data.lstrip()[:1] == b"{" else ".yaml"
        fd, tmp = tempfile.mkstemp(prefix="warden-policy-", suffix=suffix)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            self.gov.reload(tmp)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)

    # --- the followed channel (warden.store._redis.follow) -----------------------------------

    def _link_up(self) -> None:
        self.connected = True
        self.sync()  # catch up on what was published while not subscribed

    def _link_events(self, data: list[object]) -> None:
        self.sync()  # a burst of events: one read for all of them

    def _link_down(self, exc: BaseException) -> None:
        if self.connected:
            log.warning("policy subscription lost (%s): %s", self.path, exc)
        self.connected = False

    def close(self) -> None:
        """Stop following (the Governor keeps the policy it has)."""
        shut(self._link)

    def __enter__(self) -> PolicyFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PolicyFollower({self.path!r}, {self.namespace!r})"
