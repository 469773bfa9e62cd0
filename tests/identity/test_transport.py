"""Framed transports: TCP with 4-byte big-endian lengths, and the in-process pair."""

from __future__ import annotations

import socket
import struct
import threading
import time

import pytest

from warden.errors import HandshakeError
from warden.identity.transport import (
    MAX_FRAME,
    TcpTransport,
    accept,
    connect,
    listen,
    memory_pair,
    socket_pair,
)


@pytest.fixture
def tcp_pair() -> tuple[TcpTransport, TcpTransport]:
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    client = connect("127.0.0.1", port, timeout=2.0)
    server = accept(listener, timeout=2.0, accept_timeout=2.0)
    listener.close()
    return client, server


def test_frames_round_trip_over_loopback(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    client, server = tcp_pair
    frames = [b"", b"x", bytes(range(256)) * 10, b"\0" * MAX_FRAME]

    def send_all() -> None:
        for f in frames:
            client.send(f)

    t = threading.Thread(target=send_all)
    t.start()
    assert [server.recv() for _ in frames] == frames
    t.join()
    server.send(b"back")
    assert client.recv() == b"back"
    for sock in (client._sock, server._sock):
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    client.close()
    client.close()  # idempotent
    server.close()


def test_the_wire_format_is_a_big_endian_length_then_the_body() -> None:
    a, b = socket.socketpair()
    TcpTransport(a).send(b"hello")
    assert b.recv(100) == b"\x00\x00\x00\x05hello"
    b.sendall(b"\x00\x00\x00\x03abc")
    assert TcpTransport(a).recv() == b"abc"
    a.close()
    b.close()


def test_oversized_send_is_refused(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    client, server = tcp_pair
    with pytest.raises(HandshakeError, match="exceeds the 65536-byte frame limit"):
        client.send(b"x" * (MAX_FRAME + 1))
    client.send(b"still usable")
    assert server.recv() == b"still usable"


def test_oversized_announced_frame_is_refused_before_reading_its_body() -> None:
    a, b = socket.socketpair()
    a.sendall(struct.pack(">I", MAX_FRAME + 1) + b"x" * 100)
    start = time.monotonic()
    with pytest.raises(HandshakeError, match="announced a frame of 65537 bytes"):
        TcpTransport(b, timeout=5.0).recv()
    assert time.monotonic() - start < 1.0
    a.close()
    b.close()


def test_recv_times_out(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    _, server = tcp_pair
    server.timeout = 0.2
    with pytest.raises(HandshakeError, match=r"timed out after 0\.2 s"):
        server.recv()


def test_a_trickling_peer_cannot_hold_a_frame_open_past_the_timeout() -> None:
    a, b = socket.socketpair()
    transport = TcpTransport(b, timeout=0.5)
    stop = threading.Event()

    def trickle() -> None:
        a.sendall(struct.pack(">I", 1000))
        while not stop.wait(0.1):
            a.sendall(b"x")

    t = threading.Thread(target=trickle)
    t.start()
    start = time.monotonic()
    with pytest.raises(HandshakeError, match=r"timed out .* a frame body"):
        transport.recv()
    assert time.monotonic() - start < 1.5
    stop.set()
    t.join()
    a.close()
    b.close()


def test_peer_close_is_a_handshake_error(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    client, server = tcp_pair
    client.close()
    with pytest.raises(HandshakeError, match="connection closed by the peer"):
        server.recv()


def test_close_in_the_middle_of_a_frame() -> None:
    a, b = socket.socketpair()
    a.sendall(struct.pack(">I", 10) + b"abc")
    a.close()
    with pytest.raises(HandshakeError, match="in the middle of a frame body"):
        TcpTransport(b).recv()
    b.close()


def test_use_after_close_is_refused(tcp_pair: tuple[TcpTransport, TcpTransport]) -> None:
    client, _ = tcp_pair
    client.close()
    with pytest.raises(HandshakeError, match="closed"):
        client.send(b"x")
    with pytest.raises(HandshakeError, match="closed"):
        client.recv()


def test_connect_failure_is_a_handshake_error() -> None:
    listener = listen("127.0.0.1", 0)
    port = listener.getsockname()[1]
    listener.close()
    with pytest.raises(HandshakeError, match=f"cannot connect to 127.0.0.1:{port}"):
        connect("127.0.0.1", port, timeout=1.0)


def test_accept_timeout() -> None:
    listener = listen("127.0.0.1", 0)
    with pytest.raises(HandshakeError, match="waiting for a connection"):
        accept(listener, accept_timeout=0.1)
    listener.close()


def test_memory_pair_behaves_like_tcp() -> None:
    a, b = memory_pair(timeout=0.2)
    a.send(b"one")
    b.send(b"two")
    assert b.recv() == b"one" and a.recv() == b"two"
    with pytest.raises(HandshakeError, match="frame limit"):
        a.send(b"x" * (MAX_FRAME + 1))
    with pytest.raises(HandshakeError, match="timed out"):
        a.recv()
    a.close()
    with pytest.raises(HandshakeError, match="closed by the peer"):
        b.recv()
    with pytest.raises(HandshakeError, match="closed"):
        b.send(b"x")


def test_socket_pair_carries_frames() -> None:
    a, b = socket_pair(timeout=1.0)
    a.send(b"ping")
    assert b.recv() == b"ping"
    b.close()
    with pytest.raises(HandshakeError, match="closed by the peer"):
        a.recv()
    a.close()
