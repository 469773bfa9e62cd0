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
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from warden.errors import ConfigurationError, RuntimeStateError
from warden.store.runtime import redact

if TYPE_CHECKING:
    import redis
    from redis.client import PubSub

    from warden.governor import Governor

__all__ = ["PolicyFollower", "PublishedPolicy", "publish_policy", "read_published"]

log = logging.getLogger(__name__)

_POLL: Final = 0.1  # seconds the subscriber waits for a message before it looks around


@dataclass(frozen=True, slots=True)
class PublishedPolicy:
    """What ``N:policy`` holds."""

    data: bytes
    hash: str
    by: str
    at: float


def _client(url: str, timeout: float, retries: int) -> redis.Redis:
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigurationError(
            "policy publishing needs the `redis` package: pip install 'warden[fleet]'"
        ) from None
    try:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            retry=Retry(NoBackoff(), retries, (redis.ConnectionError,)),
        )
    except ValueError as exc:
        raise ConfigurationError(f"the Redis URL `{redact(url)}` is wrong: {exc}") from None


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
    import redis

    client = _client(url, timeout, 1)
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


@dataclass(slots=True)
class _Link:
    client: redis.Redis
    subscriber: redis.Redis
    channel: str
    timeout: float
    heartbeat: float
    reconnect: tuple[float, float]
    stop: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


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
        self._link = _Link(
            _client(url, timeout, 1),
            _client(url, timeout, 0),
            f"{namespace}:policy:events",
            timeout,
            heartbeat,
            reconnect,
        )
        self._link.thread = threading.Thread(
            target=self._run, name="warden-policy-follower", daemon=True
        )
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

    # --- the subscription ----------------------------------------------------------------

    def _run(self) -> None:
        import redis

        link = self._link
        first, cap = link.reconnect
        delay = first
        while not link.stop.is_set():
            pubsub = link.subscriber.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
            try:
                pubsub.subscribe(link.channel)
                _await_subscription(pubsub, link)
                self.connected = True
                self.sync()  # catch up on what was published while not subscribed
                link.settled.set()
                delay = first
                self._follow(pubsub)
            except (redis.RedisError, RuntimeStateError, OSError) as exc:
                if self.connected:
                    log.warning("policy subscription lost (%s): %s", self.path, exc)
                self.connected = False
            finally:
                link.settled.set()
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()
            link.stop.wait(delay)
            delay = min(delay * 2, cap)

    def _follow(self, pubsub: PubSub) -> None:
        import redis

        link = self._link
        heard = time.monotonic()
        pinged: float | None = None
        while not link.stop.is_set():
            message = pubsub.get_message(timeout=_POLL)
            now = time.monotonic()
            if message is None:
                if pinged is not None and now - pinged > link.heartbeat:
                    raise redis.ConnectionError("no answer to PING")
                if pinged is None and now - heard > link.heartbeat:
                    pubsub.ping("warden")
                    pinged = now
                continue
            heard, pinged = now, None
            if message.get("type") != "message":
                continue
            for _ in range(1000):  # a burst of events: one read for all of them
                more = pubsub.get_message(timeout=0)
                if more is None:
                    break
            self.sync()

    def close(self) -> None:
        """Stop following (the Governor keeps the policy it has)."""
        link = self._link
        link.stop.set()
        if link.thread is not None and link.thread is not threading.current_thread():
            link.thread.join(link.timeout + 1.0)
        link.client.close()
        link.subscriber.close()

    def __enter__(self) -> PolicyFollower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"PolicyFollower({self.path!r}, {self.namespace!r})"


def _await_subscription(pubsub: PubSub, link: _Link) -> None:
    import redis

    deadline = time.monotonic() + link.timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None and message.get("type") == "subscribe":
            return
    raise redis.TimeoutError("no answer to SUBSCRIBE")
