"""Start `warden serve` replicas against PostgreSQL and Redis, drive them, and clean up after.

Used by `make demo-fleet` (``demo.py``), benchmarks/bench_fleet.py and
tests/fleet/. Each replica is a `warden serve` subprocess with its own home
(as on its own machine): the tokens and the audit signing key are made in the
first home and copied to the others before they start, because every replica
must sign with the same key (docs/fleet.md). A fleet lives in one namespace;
``clean`` drops its tables and deletes its keys.

The load generator speaks HTTP/1.1 over raw keep-alive sockets with asyncio:
an HTTP client library costs more per request than the service does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

__all__ = [
    "DATABASE_URL",
    "POLICY",
    "REDIS_URL",
    "Answer",
    "Connection",
    "Fleet",
    "Replica",
    "clean",
    "decide_request",
    "load",
]

POLICY: Final = Path(__file__).with_name("policy.yaml")
DATABASE_URL: Final = os.environ.get(
    "WARDEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL: Final = os.environ.get("WARDEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
_SERVING: Final = re.compile(r"warden: serving http://([^\s:]+):(\d+)")
_SHARED: Final = ("tokens.db", "audit-key.pem", "audit-key.pub")


def _warden() -> list[str]:
    script = Path(sys.executable).with_name("warden")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from warden.cli import cli; cli(prog_name='warden')"]


def clean(namespace: str, *, redis_url: str = REDIS_URL, database_url: str = DATABASE_URL) -> None:
    """Drop the namespace's tables (``N_*``) and delete its keys (``N:*``)."""
    import psycopg
    import redis

    with psycopg.connect(database_url, autocommit=True, connect_timeout=10) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
            "AND starts_with(tablename, %s)",
            (namespace + "_",),
        ).fetchall()
        for (name,) in rows:
            conn.execute(f'DROP TABLE IF EXISTS "{name}" CASCADE')
    client = redis.Redis.from_url(redis_url, socket_timeout=10)
    try:
        keys = list(client.scan_iter(match=f"{namespace}:*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@dataclass
class Replica:
    """One `warden serve` subprocess."""

    name: str
    home: Path
    proc: subprocess.Popen[bytes]
    errlog: Path
    host: str = "127.0.0.1"
    port: int = 0
    _terminated: bool = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def log(self) -> str:
        return self.errlog.read_text(errors="replace")

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM, then wait: the replica flushes and closes its audit log. Its exit status."""
        if self.proc.poll() is None and not self._terminated:
            # once: a second SIGTERM that lands after uvicorn has put back the default
            # handler kills the process before it closes its audit log
            self._terminated = True
            self.proc.terminate()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(10)


@dataclass
class Fleet:
    """Replicas of one policy in one namespace; tokens first, then ``start``."""

    work: Path
    namespace: str
    policy: Path = POLICY
    redis_url: str = REDIS_URL
    database_url: str = DATABASE_URL
    replicas: list[Replica] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("WARDEN_")}
        env.update(
            WARDEN_REDIS_URL=self.redis_url,
            WARDEN_DATABASE_URL=self.database_url,
            WARDEN_FLEET_NAMESPACE=self.namespace,
        )
        return env

    def home(self, index: int) -> Path:
        return self.work / f"replica-{index + 1}"

    def token(self, subject: str, scopes: str) -> str:
        """A new token (``warden serve token new`` on the first home); before ``start``."""
        done = subprocess.run(
            [
                *_warden(),
                *("serve", "token", "new", "--home", str(self.home(0))),
                *("--subject", subject, "--scope", scopes, "--by", "fleet-harness"),
            ],
            env=self.env,
            capture_output=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            raise RuntimeError(f"token new failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode().strip()

    def start(self, count: int, *, ports: list[int] | None = None, timeout: float = 60) -> None:
        """Start ``count`` replicas (``ports``: fixed ones, else free ones) and wait for each."""
        for i in range(count):
            home = self.home(i)
            home.mkdir(parents=True, exist_ok=True)
            if i > 0:
                for name in _SHARED:
                    src = self.home(0) / name
                    if src.exists() and not (home / name).exists():
                        shutil.copy2(src, home / name)
            port = ports[i] if ports else 0
            errlog = self.work / f"replica-{i + 1}.log"
            with errlog.open("w") as err:
                proc = subprocess.Popen(
                    [
                        *_warden(),
                        *("serve", "--policy", str(self.policy), "--home", str(home)),
                        *("--listen", f"127.0.0.1:{port}"),
                    ],
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            replica = Replica(f"replica-{i + 1}", home, proc, errlog)
            self.replicas.append(replica)
            deadline = time.monotonic() + timeout
            while (m := _SERVING.search(replica.log())) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{replica.name} did not start:\n{replica.log()}")
                time.sleep(0.02)
            replica.host, replica.port = m.group(1), int(m.group(2))

    def stop(self) -> list[int]:
        """Stop every replica (SIGTERM, in parallel); their exit statuses."""
        for r in self.replicas:
            if r.proc.poll() is None and not r._terminated:
                r._terminated = True
                r.proc.terminate()
        return [r.stop() for r in self.replicas]

    def clean(self) -> None:
        clean(self.namespace, redis_url=self.redis_url, database_url=self.database_url)

    @contextlib.contextmanager
    def running(self, count: int, *, ports: list[int] | None = None) -> Iterator[Fleet]:
        """Replicas started, and stopped on the way out (the namespace is left for ``clean``)."""
        try:
            self.start(count, ports=ports)
            yield self
        finally:
            self.stop()


# --- HTTP/1.1 over raw keep-alive sockets ---------------------------------------------------


def decide_request(host: str, port: int, token: str, action: Mapping[str, Any]) -> bytes:
    """The bytes of one ``POST /v1/decide`` (sent as is, again and again)."""
    return request_bytes(host, port, "POST", "/v1/decide", token, json.dumps(action).encode())


def request_bytes(
    host: str, port: int, method: str, path: str, token: str | None, body: bytes = b""
) -> bytes:
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}"]
    if token is not None:
        head.append(f"Authorization: Bearer {token}")
    if body or method == "POST":
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


class Connection:
    """One keep-alive HTTP/1.1 connection: send request bytes, read one response."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def call(self, raw: bytes) -> tuple[int, bytes]:
        """The status and body of the answer to ``raw``; reconnects once if the peer closed."""
        for attempt in (0, 1):
            if self._reader is None or self._writer is None:
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
            reader = self._reader
            try:
                self._writer.write(raw)
                head = await reader.readuntil(b"\r\n\r\n")
                break
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt:
                    raise
        status = int(head[9:12])
        length = 0
        close = False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        body = await reader.readexactly(length) if length else b""
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None


@dataclass(frozen=True, slots=True)
class Answer:
    """One request of a load run: when it was sent (monotonic s), its latency, what came back."""

    port: int  # of the replica asked
    sent: float
    latency: float
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def load(
    requests: list[tuple[str, int, bytes]],
    *,
    duration: float | None = None,
    stop: threading.Event | None = None,
    warmup: float = 0.0,
) -> list[Answer]:
    """Send each request in a loop on its own connection until ``duration`` or ``stop``.

    ``requests`` is one (host, port, bytes) per connection; closed loop: each
    connection sends its next request when the last answer arrived. Answers
    during the first ``warmup`` seconds are dropped. A failed connection is
    recorded as status 0 and retried after 10 ms.
    """
    return asyncio.run(_load(requests, duration, stop, warmup))


async def _load(
    requests: list[tuple[str, int, bytes]],
    duration: float | None,
    stop: threading.Event | None,
    warmup: float,
) -> list[Answer]:
    clock = time.monotonic
    start = clock()
    until = start + warmup + duration if duration is not None else float("inf")
    measured_from = start + warmup
    answers: list[Answer] = []

    async def worker(host: str, port: int, raw: bytes) -> None:
        conn = Connection(host, port)
        try:
            while True:
                sent = clock()
                if sent >= until or (stop is not None and stop.is_set()):
                    return
                try:
                    status, body = await conn.call(raw)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    conn.close()
                    status, body = 0, str(exc).encode()
                    await asyncio.sleep(0.01)
                if sent >= measured_from:
                    answers.append(Answer(port, sent, clock() - sent, status, body))
        finally:
            conn.close()

    await asyncio.gather(*(worker(h, p, raw) for h, p, raw in requests))
    return answers
