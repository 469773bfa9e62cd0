"""What the fleet's Redis stores share: clients, redacted URLs, and a followed channel.

A followed channel is a subscriber thread that subscribes, tells its owner,
hands it every burst of events, and on any loss tells it, then reconnects
with doubling backoff. Silence longer than ``heartbeat`` is answered with a
PING; no answer to it within as long again counts as a loss. The owner is
reached through a callable that returns None once it is gone (a weak
reference), so the thread never keeps it alive.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final, Protocol
from urllib.parse import urlsplit

from warden.errors import ConfigurationError, RuntimeStateError

if TYPE_CHECKING:
    import redis
    from redis.client import PubSub

__all__ = ["ChannelOwner", "Link", "connect", "follow", "redact", "shut"]

POLL: Final = 0.1
"""Seconds the subscriber waits for a message before it looks around."""
MAX_BURST: Final = 1000
"""Events read at once before the owner is told (a burst makes one reload)."""


def redact(url: str) -> str:
    """``url`` without its password, query or fragment (they may hold credentials)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return f"{url.partition(':')[0]}://(unparsable)"
    if ":" in host:
        host = f"[{host}]"
    user = f"{parts.username}@" if parts.username else ""
    netloc = f"{user}{host}" + (f":{port}" if port is not None else "")
    return f"{parts.scheme}://{netloc}{parts.path}"


def connect(url: str, timeout: float, retries: int, what: str) -> redis.Redis:
    """A client of ``url`` answering in ``timeout`` s; ConfigurationError when it cannot be one.

    ``retries`` immediate retries on a fresh connection (a pooled one may have
    died while idle; a subscriber takes 0, so that a lost subscription shows).
    ``what`` names the feature in the message when redis-py is not installed.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry
    except ImportError:
        raise ConfigurationError(
            f"{what} needs the `redis` package: pip install 'warden[fleet]'"
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


@dataclass(slots=True)
class Link:
    """What a subscriber thread shares with its owner."""

    client: redis.Redis
    subscriber: redis.Redis
    channel: str
    timeout: float
    heartbeat: float
    reconnect: tuple[float, float]
    stop: threading.Event = field(default_factory=threading.Event)
    settled: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None


class ChannelOwner(Protocol):
    """What a followed channel tells its owner."""

    def _link_up(self) -> None:
        """Subscribed (again): catch up on what may have been missed."""

    def _link_events(self, data: list[object]) -> None:
        """A burst of events, their payloads in order."""

    def _link_down(self, exc: BaseException) -> None:
        """The subscription is lost; a reconnection follows."""


def follow(owner: Callable[[], ChannelOwner | None], link: Link) -> None:
    """The subscriber thread's body: until ``link.stop``, or until the owner is gone."""
    import redis

    first, cap = link.reconnect
    delay = first
    while not link.stop.is_set():
        pubsub = link.subscriber.pubsub()  # type: ignore[no-untyped-call]  # redis-py leaves it bare
        try:
            pubsub.subscribe(link.channel)
            _await_subscription(pubsub, link)
            target = owner()
            if target is None:
                return
            target._link_up()
            del target
            link.settled.set()
            delay = first
            if not _events(owner, link, pubsub):
                return
        except (redis.RedisError, RuntimeStateError, OSError) as exc:
            target = owner()
            if target is not None:
                target._link_down(exc)
            del target
        finally:
            link.settled.set()
            with contextlib.suppress(redis.RedisError, OSError):
                pubsub.close()
        link.stop.wait(delay)
        delay = min(delay * 2, cap)


def _await_subscription(pubsub: PubSub, link: Link) -> None:
    import redis

    deadline = time.monotonic() + link.timeout
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if message is not None and message.get("type") == "subscribe":
            return
    raise redis.TimeoutError("no answer to SUBSCRIBE")


def _events(owner: Callable[[], ChannelOwner | None], link: Link, pubsub: PubSub) -> bool:
    """Hand events to the owner until stopped (True) or the owner is gone (False).

    Raises when the subscription is lost.
    """
    import redis

    heard = time.monotonic()
    pinged: float | None = None
    while not link.stop.is_set():
        message = pubsub.get_message(timeout=POLL)
        now = time.monotonic()
        if message is None:
            if pinged is not None and now - pinged > link.heartbeat:
                raise redis.ConnectionError("no answer to PING")
            if pinged is None and now - heard > link.heartbeat:
                pubsub.ping("warden")
                pinged = now
            continue
        heard, pinged = now, None  # any answer shows the link is alive
        if message.get("type") != "message":
            continue
        data = [message.get("data")]
        for _ in range(MAX_BURST):  # a burst of events: one call for all of them
            more = pubsub.get_message(timeout=0)
            if more is None:
                break
            if more.get("type") == "message":
                data.append(more.get("data"))
        target = owner()
        if target is None:
            return False
        target._link_events(data)
        del target
    return True


def shut(link: Link) -> None:
    """Stop the thread (unless it is the caller) and close both clients."""
    link.stop.set()
    if link.thread is not None and link.thread is not threading.current_thread():
        link.thread.join(link.timeout + 1.0)
    link.client.close()
    link.subscriber.close()
