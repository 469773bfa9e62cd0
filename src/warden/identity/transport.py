"""Framed message transports for the handshake and envelopes (docs/identity.md, "Handshake").

A ``Transport`` carries whole messages. ``TcpTransport`` frames each one with a
4-byte big-endian length over a blocking socket; a frame is at most
``MAX_FRAME`` (64 KiB) and a longer announced length is refused before any of
its body is read. ``MemoryTransport`` is the in-process fake: a connected pair
of queues with the same limits and errors, for tests and for agents in one
process.

Every failure (timeout, closed peer, oversized frame, socket error) is a
``HandshakeError``.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import struct
import threading
import time
from typing import Final, Protocol

from warden._closing import Closing
from warden.errors import HandshakeError

__all__ = [
    "MAX_FRAME",
    "MemoryTransport",
    "TcpTransport",
    "Transport",
    "accept",
    "connect",
    "listen",
    "memory_pair",
    "socket_pair",
]

MAX_FRAME: Final = 64 * 1024
DEFAULT_TIMEOUT: Final = 5.0
_HEADER: Final = struct.Struct(">I")


class Transport(Protocol):
    """Carries whole messages between two parties, in order."""

    def send(self, data: bytes) -> None:
        """Send one message; HandshakeError when it cannot."""

    def recv(self) -> bytes:
        """The next message; HandshakeError on timeout, close or a bad frame."""

    def close(self) -> None:
        """Release the connection; further send/recv fail. Idempotent."""


def _check_size(data: bytes, limit: int) -> None:
    if len(data) > limit:
        raise HandshakeError(f"message of {len(data)} bytes exceeds the {limit}-byte frame limit")


class TcpTransport(Closing):
    """Length-prefixed frames over a connected stream socket.

    ``timeout`` (seconds, None to wait forever) bounds a whole ``recv``: a peer
    trickling bytes cannot hold a frame open past it. Not safe for concurrent
    use by several threads in the same direction.
    """

    def __init__(
        self,
        sock: socket.socket,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._sock = sock
        self.timeout = timeout
        self.max_frame = max_frame
        self._closed = False
        sock.settimeout(timeout)

    @property
    def peer(self) -> str:
        """The remote address, for logs (``host:port``), or ``?`` when unknown."""
        try:
            addr = self._sock.getpeername()
        except OSError:
            return "?"
        if isinstance(addr, tuple) and len(addr) >= 2:
            return f"{addr[0]}:{addr[1]}"
        return str(addr) or "?"

    def send(self, data: bytes) -> None:
        _check_size(data, self.max_frame)
        if self._closed:
            raise HandshakeError("connection closed")
        try:
            self._sock.settimeout(self.timeout)
            self._sock.sendall(_HEADER.pack(len(data)) + data)
        except TimeoutError:
            raise HandshakeError(f"timed out after {self.timeout} s sending a frame") from None
        except OSError as exc:
            raise HandshakeError(f"connection lost while sending: {_reason(exc)}") from None

    def recv(self) -> bytes:
        if self._closed:
            raise HandshakeError("connection closed")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        (length,) = _HEADER.unpack(self._read(4, deadline, "a frame header"))
        if length > self.max_frame:
            raise HandshakeError(
                f"peer announced a frame of {length} bytes, over the {self.max_frame}-byte limit"
            )
        return self._read(length, deadline, "a frame body") if length else b""

    def _read(self, n: int, deadline: float | None, what: str) -> bytes:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        try:
            while got < n:
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    self._sock.settimeout(left)
                k = self._sock.recv_into(view[got:])
                if k == 0:
                    if got == 0 and what == "a frame header":
                        raise HandshakeError("connection closed by the peer")
                    raise HandshakeError(f"connection closed by the peer in the middle of {what}")
                got += k
        except TimeoutError:
            raise HandshakeError(f"timed out after {self.timeout} s waiting for {what}") from None
        except OSError as exc:
            raise HandshakeError(f"connection lost while reading: {_reason(exc)}") from None
        return bytes(buf)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError):  # already disconnected: closing is all that is left
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.peer
        return f"TcpTransport({state})"


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _nodelay(sock: socket.socket) -> None:
    # The handshake is four small messages in lock step; Nagle would add a delay to each.
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def connect(host: str, port: int, timeout: float | None = DEFAULT_TIMEOUT) -> TcpTransport:
    """A transport connected to ``host:port``; HandshakeError when the connection fails."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except TimeoutError:
        raise HandshakeError(f"timed out after {timeout} s connecting to {host}:{port}") from None
    except OSError as exc:
        raise HandshakeError(f"cannot connect to {host}:{port}: {_reason(exc)}") from None
    _nodelay(sock)
    return TcpTransport(sock, timeout=timeout)


def listen(host: str, port: int, backlog: int = 64) -> socket.socket:
    """A listening socket on ``host:port`` (port 0 picks a free one: read ``getsockname()``)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise HandshakeError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise HandshakeError(f"cannot listen on {host}:{port}: {_reason(exc)}") from None
    return sock


def accept(
    listener: socket.socket,
    timeout: float | None = DEFAULT_TIMEOUT,
    *,
    accept_timeout: float | None = None,
) -> TcpTransport:
    """The next connection on ``listener`` as a transport whose reads time out after ``timeout``.

    ``accept_timeout`` bounds the wait for a connection (None: wait forever).
    """
    listener.settimeout(accept_timeout)
    try:
        sock, _ = listener.accept()
    except TimeoutError:
        raise HandshakeError(
            f"timed out after {accept_timeout} s waiting for a connection"
        ) from None
    except OSError as exc:
        raise HandshakeError(f"cannot accept a connection: {_reason(exc)}") from None
    _nodelay(sock)
    return TcpTransport(sock, timeout=timeout)


def socket_pair(
    timeout: float | None = DEFAULT_TIMEOUT,
) -> tuple[TcpTransport, TcpTransport]:
    """Two connected framed transports over ``socket.socketpair()`` (one process, real sockets)."""
    a, b = socket.socketpair()
    return TcpTransport(a, timeout=timeout), TcpTransport(b, timeout=timeout)


class MemoryTransport(Closing):
    """One end of an in-process pipe (see :func:`memory_pair`); the same limits as TCP."""

    def __init__(
        self,
        inbox: queue.SimpleQueue[bytes | None],
        outbox: queue.SimpleQueue[bytes | None],
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_frame: int = MAX_FRAME,
    ) -> None:
        self._inbox = inbox
        self._outbox = outbox
        self.timeout = timeout
        self.max_frame = max_frame
        self._closed = threading.Event()
        self._peer_closed = False

    def send(self, data: bytes) -> None:
        _check_size(data, self.max_frame)
        if self._closed.is_set() or self._peer_closed:
            raise HandshakeError("connection closed")
        self._outbox.put(bytes(data))

    def recv(self) -> bytes:
        if self._closed.is_set() or self._peer_closed:
            raise HandshakeError("connection closed")
        try:
            item = self._inbox.get(timeout=self.timeout)
        except queue.Empty:
            raise HandshakeError(f"timed out after {self.timeout} s waiting for a frame") from None
        if item is None:  # the peer's close()
            self._peer_closed = True
            raise HandshakeError("connection closed by the peer")
        return item

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self._outbox.put(None)

    def __repr__(self) -> str:
        return "MemoryTransport(closed)" if self._closed.is_set() else "MemoryTransport()"


def memory_pair(
    timeout: float | None = DEFAULT_TIMEOUT, max_frame: int = MAX_FRAME
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected in-process transports: what one sends, the other receives."""
    a: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    b: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
    return (
        MemoryTransport(a, b, timeout=timeout, max_frame=max_frame),
        MemoryTransport(b, a, timeout=timeout, max_frame=max_frame),
    )
