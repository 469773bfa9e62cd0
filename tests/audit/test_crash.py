"""kill -9 of the writer at random moments: flushed records survive, the log stays verifiable.

docs/audit.md, guarantee 3: ``flush()`` returns only once the records appended before it are
committed, and a flushed record survives ``kill -9`` at any moment. A writer process appends in
a loop and prints the log size after every flush; the test kills it with SIGKILL at a random
moment, then checks, read-only, that the log verifies (no torn batch, the tree consistent, every
stored checkpoint signed and matching), that it holds at least what was acknowledged, and that
the run's records are an unbroken prefix of what it appended. The same file is reused across
runs, so the log grows through many crashes, and each run reopens it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from warden.audit import open_for_verify, trusted_verifier, verify_log

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

WRITER = r"""
import sys
from warden.audit import AuditLog

path, run, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
log = AuditLog(path, batch_size=7, batch_interval=0.002, checkpoint_every=97)
print("ready", log.store.size(), flush=True)
n = 0
while True:
    log.append({"type": "test.crash/v1", "run": run, "n": n, "pad": "x" * (n % 61)})
    n += 1
    if n % every == 0:
        print(log.flush(), flush=True)
"""

RUNS = 25


def _stderr(child: subprocess.Popen[str]) -> str:
    return child.stderr.read() if child.stderr is not None else ""


def _run_and_kill(path: Path, run: int, delay: float) -> tuple[int, int]:
    """Start a writer, SIGKILL it ``delay`` s after it opened the log; (size at open, acked)."""
    child = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(path), str(run), str(3 + run % 9)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=path.parent.parent,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read() -> None:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line.strip())
            ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not ready.wait(30):
            child.kill()
            child.wait(timeout=10)
            pytest.fail(f"run {run}: the writer never opened the log: {_stderr(child)}")
        time.sleep(delay)
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=30)  # stdout belongs to the reader thread: no communicate()
        err = _stderr(child)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    reader.join(timeout=30)
    assert child.returncode == -signal.SIGKILL, f"run {run}: the writer died on its own: {err}"
    assert err == "", f"run {run}: {err}"
    assert lines and lines[0].startswith("ready "), lines
    opened = int(lines[0].split()[1])
    acked = [int(x) for x in lines[1:]]
    assert acked == sorted(acked), acked
    return opened, max(acked, default=opened)


def test_kill_9_never_loses_a_flushed_record_or_tears_the_log(tmp_path: Path) -> None:
    path = tmp_path / "log" / "audit.db"
    rng = random.Random(int.from_bytes(os.urandom(4), "big"))
    seed_note = f"seed {rng.random()}"  # in every failure message, for reproducing the order
    size = 0
    earlier: str | None = None  # the newest signed checkpoint seen so far
    acked_total = 0
    for run in range(RUNS):
        delay = rng.uniform(0.020, 0.300)
        opened, acked = _run_and_kill(path, run, delay)
        where = f"{seed_note}, run {run}, killed {delay * 1000:.0f} ms after open"
        assert opened == size, where  # it reopened the log where the last run left it
        acked_total = max(acked_total, acked)

        store = open_for_verify(path)
        try:
            verifier, _ = trusted_verifier(store, None)
            report = verify_log(store, verifier, earlier=earlier)
            assert report.size >= acked, f"{where}: {report.size} entries, {acked} acknowledged"
            # this run's records are one unbroken block, a prefix of what it appended
            mine = [json.loads(data) for _, _, data, _ in store.scan(start=size)]
            assert [r["seq"] for r in mine] == list(range(size, report.size)), where
            assert {r["run"] for r in mine} <= {run}, where
            assert [r["n"] for r in mine] == list(range(len(mine))), where
            latest = store.latest_checkpoint()
            if latest is not None:
                earlier = latest[1]
            size = report.size
        finally:
            store.close()
    assert size >= acked_total > 0, seed_note
    assert earlier is not None, "no run lived long enough to sign a checkpoint"
