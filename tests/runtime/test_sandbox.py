"""The sandbox (docs/runtime.md, "Sandbox"): real bubblewrap, real attacks, no mocks.

Tests that need a working bubblewrap are skipped when it is missing, except
in CI (``CI`` or ``WARDEN_REQUIRE_BWRAP`` set), where they must run.
When the tests run as root the sandbox runs as ``nobody``, so directories
handed to it come from the ``shared`` fixture (``tmp_path`` is private to
root).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from warden.errors import ConfigurationError, SandboxError
from warden.runtime.inflight import InFlight
from warden.runtime.sandbox import Limits, Sandbox, SandboxResult, bwrap_available

KiB = 1024
MiB = 1024 * KiB
REQUIRED = bool(os.environ.get("WARDEN_REQUIRE_BWRAP") or os.environ.get("CI"))
needs_bwrap = pytest.mark.skipif(
    not REQUIRED and not bwrap_available(),
    reason="bubblewrap is not usable here; install the `bubblewrap` package",
)
PY = "/usr/bin/python3"  # the interpreter the sandbox uses for run_code
needs_python = pytest.mark.skipif(not os.access(PY, os.X_OK), reason=f"no {PY}")
QUICK = Limits(cpu_seconds=5, wall_seconds=15)
# rlimit mode counts processes per user on the whole host, so its tests leave room.
WEAK = Limits(cpu_seconds=5, wall_seconds=15, processes=100_000)


def sh(script: str, sandbox: Sandbox | None = None, **kw: object) -> SandboxResult:
    kw.setdefault("limits", QUICK)
    return (sandbox or Sandbox()).run(["sh", "-c", script], **kw)  # type: ignore[arg-type]


def token() -> str:
    """A unique sleep duration: it marks a test's processes in /proc."""
    return f"{secrets.randbelow(900) + 100}.{secrets.randbelow(10**6):06d}"


def processes_with(mark: str, *, exclude: int | None = None) -> list[list[bytes]]:
    """The argv of every live process whose command line contains ``mark``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), exclude):
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if mark.encode() in cmdline:
            found.append(cmdline.split(b"\0"))
    return found


def eventually(check: Callable[[], bool], seconds: float) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.01)
    return check()


def gone(mark: str, seconds: float = 2.0) -> bool:
    return eventually(lambda: not processes_with(mark), seconds)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory under the host /tmp that the sandbox user may use."""
    path = Path(tempfile.mkdtemp(prefix="warden-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def key_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A world-readable key under $WARDEN_HOME outside /tmp: only `hide` can protect it."""
    home = Path(tempfile.mkdtemp(prefix="warden-test-home-", dir="/var/tmp"))
    (home / "keys").mkdir()
    (home / "policies").mkdir()
    key = home / "keys" / "warden.pem"
    key.write_text("SECRET-KEY-MATERIAL\n")
    (home / "policies" / "main.yaml").write_text("rules: []\n")
    for path in (home, home / "keys", home / "policies"):
        path.chmod(0o755)
    for path in (key, home / "policies" / "main.yaml"):
        path.chmod(0o644)
    monkeypatch.setenv("WARDEN_HOME", str(home))
    yield key
    shutil.rmtree(home, ignore_errors=True)


# -- running ---------------------------------------------------------------------------------


@needs_bwrap
def test_runs_a_command_and_reports_its_exit() -> None:
    result = sh("echo out; echo err >&2; exit 3")
    assert (result.returncode, result.signal) == (3, None)
    assert (result.stdout, result.stderr) == (b"out\n", b"err\n")
    assert result.mode == "bwrap"
    assert not (result.truncated or result.timed_out or result.killed)
    assert result.limit is None
    assert not result.ok
    assert result.duration_ns > 0
    assert sh("true").ok


@needs_bwrap
def test_feeds_stdin_while_reading_stdout() -> None:
    data = secrets.token_bytes(300 * KiB)  # more than a pipe holds, in both directions
    result = Sandbox().run(["cat"], stdin=data, limits=QUICK)
    assert result.ok
    assert result.stdout == data


@needs_bwrap
@needs_python
def test_run_code_runs_python_and_sh() -> None:
    py = Sandbox().run_code("import sys\nprint(sys.flags.isolated, 6 * 7)", limits=QUICK)
    assert py.ok
    assert py.stdout == b"1 42\n"
    shell = Sandbox().run_code('x=6; echo "$((x * 7))"', "sh", limits=QUICK)
    assert shell.stdout == b"42\n"
    with pytest.raises(ConfigurationError, match="language `ruby`"):
        Sandbox().run_code("puts 1", "ruby")


@needs_bwrap
def test_environment_is_minimal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOST_ONLY_SECRET", "hunter2")
    result = sh('env | sort; echo "pwd=$(pwd)"')
    lines = result.stdout.decode().splitlines()
    env = dict(line.split("=", 1) for line in lines if not line.startswith("pwd="))
    assert env.pop("PATH") == "/usr/bin:/bin"
    assert env.pop("LANG") == "C.UTF-8"
    assert f"pwd={env.pop('HOME')}" in lines
    assert set(env) <= {"PWD", "SHLVL", "_"}  # what sh itself sets
    custom = sh("echo $ONLY; echo ${HOME:-unset}", Sandbox(env={"ONLY": "me"}))
    assert custom.stdout == b"me\nunset\n"


@needs_bwrap
def test_runs_unprivileged_in_its_own_pid_namespace() -> None:
    result = sh("id -u; id -g; echo $$; grep CapEff /proc/self/status; ls /proc")
    lines = result.stdout.decode().splitlines()
    assert lines[:2] == ["65534", "65534"]
    assert int(lines[2]) <= 3  # bwrap's init is 1
    assert lines[3] == "CapEff:\t0000000000000000"
    pids = [p for p in lines[4:] if p.isdigit()]
    assert 1 <= len(pids) <= 4  # init, sh, ls; the host has many more
    assert len([p for p in os.listdir("/proc") if p.isdigit()]) > len(pids)


# -- filesystem --------------------------------------------------------------------------------


@needs_bwrap
@pytest.mark.parametrize("target", ["/etc", "/usr", "/var/tmp", "/"])
def test_writing_outside_the_grants_fails(target: str) -> None:
    name = f"warden-escape-{secrets.token_hex(6)}"
    result = sh(f'echo pwned > "{target.rstrip("/")}/{name}"')
    assert result.returncode != 0
    assert b"Read-only file system" in result.stderr or b"Permission denied" in result.stderr
    assert not os.path.exists(os.path.join(target, name))
    assert sh(f"echo fine > {name} && cat {name}").stdout == b"fine\n"  # the command itself works


@needs_bwrap
def test_dev_is_read_only_and_scratch_space_is_bounded() -> None:
    limits = Limits(file_size_bytes=256 * KiB, wall_seconds=15)
    script = (
        "echo x > /dev/null && echo null-ok; touch /dev/planted; "
        "for d in /tmp /dev/shm; do for i in 1 2; do head -c 200000 /dev/zero > $d/f$i; done; done"
    )
    result = sh(script, limits=limits)
    assert result.stdout == b"null-ok\n"
    assert b"Read-only file system" in result.stderr
    assert result.stderr.count(b"No space left on device") == 2  # the second file, each time


@needs_bwrap
def test_host_tmp_is_private(shared: Path) -> None:
    (shared / "host-file").write_text("host\n")
    name = f"/tmp/warden-escape-{secrets.token_hex(6)}"
    result = sh(f"cat {shared}/host-file; echo inside > {name} && cat {name}")
    assert result.stdout == b"inside\n"  # its own /tmp is writable
    assert b"No such file" in result.stderr  # the host's is not there
    assert not os.path.exists(name)


@needs_bwrap
def test_key_store_is_hidden(key_store: Path) -> None:
    home = key_store.parent.parent
    result = sh(f"cat {key_store}; ls -A {home}; echo x > {home}/planted")
    assert b"SECRET" not in result.stdout
    assert result.stdout == b""  # the hidden home is an empty directory
    assert b"No such file" in result.stderr
    assert b"Read-only file system" in result.stderr
    assert not (home / "planted").exists()
    # Only the hiding protects it: without it the key is readable.
    assert b"SECRET" in sh(f"cat {key_store}", Sandbox(hide=[])).stdout


@needs_bwrap
def test_a_grant_inside_a_hidden_path_is_visible(key_store: Path) -> None:
    policies = key_store.parent.parent / "policies"
    result = sh(f"cat {policies}/main.yaml; cat {key_store}", Sandbox(read_only=[policies]))
    assert result.stdout == b"rules: []\n"
    assert b"SECRET" not in result.stdout


@needs_bwrap
def test_root_home_is_hidden() -> None:
    result = sh("ls -A /root /home")
    assert result.returncode == 0  # an empty tmpfs, not a directory it may not read
    assert result.stdout == b"/home:\n\n/root:\n"


@needs_bwrap
def test_symlinks_do_not_reach_outside(key_store: Path, shared: Path) -> None:
    granted = shared / "granted"
    granted.mkdir(mode=0o755)
    (granted / "leak").symlink_to(key_store)
    script = (
        f"ln -s /etc/shadow shadow; ln -s {key_store} key; ln -s /root rootdir; "
        f"cat shadow; cat key; ls -A rootdir; cat {granted}/leak"
    )
    result = sh(script, Sandbox(read_only=[granted]))
    assert b"SECRET" not in result.stdout
    assert b"root:" not in result.stdout
    assert result.stdout == b""
    assert result.stderr.count(b"No such file") == 2  # key and leak: hidden
    assert b"shadow: Permission denied" in result.stderr  # not readable by nobody


@needs_bwrap
def test_read_only_grant_is_readable_not_writable(shared: Path) -> None:
    data = shared / "data"
    data.mkdir(mode=0o755)
    (data / "in.txt").write_text("input\n")
    (data / "in.txt").chmod(0o666)  # permissions allow it: only the mount refuses
    data.chmod(0o777)
    result = sh(
        f"cat {data}/in.txt; echo x >> {data}/in.txt; touch {data}/new", Sandbox(read_only=[data])
    )
    assert result.stdout == b"input\n"
    assert result.stderr.count(b"Read-only file system") == 2
    assert (data / "in.txt").read_text() == "input\n"
    assert not (data / "new").exists()


@needs_bwrap
def test_read_write_grant_is_writable(shared: Path) -> None:
    result = sh(f"echo written > {shared}/out.txt", Sandbox(read_write=[shared]))
    assert result.ok
    assert (shared / "out.txt").read_text() == "written\n"


def test_grants_are_resolved_and_must_exist(shared: Path) -> None:
    with pytest.raises(SandboxError, match="does not exist"):
        Sandbox(read_only=[shared / "missing"])
    with pytest.raises(SandboxError, match="does not exist"):
        Sandbox(read_write=["/nonexistent/warden"])
    with pytest.raises(ConfigurationError):
        Sandbox(read_only="/etc")  # a string, not a list of paths


@needs_bwrap
def test_a_symlinked_grant_binds_its_target(shared: Path) -> None:
    real = shared / "real"
    real.mkdir(mode=0o755)
    (real / "f").write_text("via target\n")
    (real / "f").chmod(0o644)
    (shared / "link").symlink_to(real)
    result = sh(f"cat {real}/f; ls {shared}/link", Sandbox(read_only=[shared / "link"]))
    assert result.stdout == b"via target\n"
    assert b"No such file" in result.stderr  # the link itself is not in the sandbox


@needs_bwrap
def test_work_dir_is_fresh_private_and_removed() -> None:
    script = 'pwd; echo "[$(ls -A)]"; stat -c %a .; mkdir -p a/b; touch a/b/f; chmod 000 a/b a'
    first, second = sh(script), sh(script)
    one, listing, mode = first.stdout.decode().split("\n")[:3]
    assert first.ok
    assert listing == "[]"
    assert mode == "700"
    assert second.stdout.decode().split("\n")[0] != one
    assert not os.path.exists(one)


# -- network -----------------------------------------------------------------------------------

CONNECT = """
import socket, sys
try:
    socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2).close()
    print("connected")
except OSError as e:
    print("refused", e.errno)
"""


@needs_bwrap
@needs_python
def test_no_network_unless_granted() -> None:
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = str(server.getsockname()[1])
        argv = [PY, "-c", CONNECT, port]
        assert Sandbox().run(argv, limits=QUICK).stdout.startswith(b"refused")
        assert Sandbox(network=True).run(argv, limits=QUICK).stdout == b"connected\n"


@needs_bwrap
@needs_python
def test_local_redis_is_unreachable() -> None:
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=1).close()
    except OSError:
        pytest.skip("no Redis on this machine")
    result = Sandbox().run([PY, "-c", CONNECT, "6379"], limits=QUICK)
    assert result.stdout.startswith(b"refused")


# -- limits ------------------------------------------------------------------------------------

BOMB = """
import os, sys
while True:
    try:
        os.fork()
    except OSError:
        pass
"""


@needs_bwrap
@needs_python
def test_fork_bomb_is_contained() -> None:
    mark = token()
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(len(processes_with(mark)))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        result = Sandbox().run(
            [PY, "-c", BOMB, mark], limits=Limits(processes=16, cpu_seconds=5, wall_seconds=1.5)
        )
    finally:
        done.set()
        watcher.join()
    assert result.timed_out
    assert result.signal == signal.SIGKILL
    assert time.monotonic() - started < 15
    assert gone(mark)
    assert max(seen) >= 3  # it did fork
    assert max(seen) <= 16 + 1  # the limit, plus bwrap outside the namespace


@needs_bwrap
@needs_python
def test_process_limit_makes_fork_fail() -> None:
    code = """
import os, time
n = 0
for _ in range(200):  # bounded, in case the limit does not hold
    try:
        pid = os.fork()
    except BlockingIOError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n)
"""
    result = Sandbox().run_code(code, limits=Limits(processes=8, wall_seconds=15))
    assert result.ok
    assert 1 <= int(result.stdout) < 8


@needs_bwrap
@needs_python
def test_memory_hog_fails() -> None:
    code = "hog = []\nwhile True:\n    hog.append(bytearray(1 << 20))\n"
    result = Sandbox().run_code(code, limits=Limits(memory_bytes=128 * MiB, wall_seconds=15))
    assert result.returncode == 1
    assert result.limit == "memory"
    assert b"MemoryError" in result.stderr
    assert not result.timed_out


@needs_bwrap
@needs_python
def test_infinite_loop_hits_the_cpu_limit() -> None:
    result = Sandbox().run_code("while True:\n    pass\n", limits=Limits(cpu_seconds=1))
    assert result.signal == signal.SIGXCPU
    assert result.returncode is None
    assert result.limit == "cpu"
    assert not result.timed_out


@needs_bwrap
@needs_python
def test_cpu_hard_limit_kills_a_loop_that_ignores_sigxcpu() -> None:
    code = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass\n"
    result = Sandbox().run_code(code, limits=Limits(cpu_seconds=1, wall_seconds=20))
    assert result.signal == signal.SIGKILL
    assert result.limit == "cpu"
    assert not result.timed_out


@needs_bwrap
def test_wall_timeout_kills_a_process_that_ignores_sigterm() -> None:
    mark = token()
    started = time.monotonic()
    result = sh(f"trap '' TERM; sleep {mark}", limits=Limits(wall_seconds=0.5))
    assert result.timed_out
    assert result.signal == signal.SIGKILL
    assert result.limit == "wall"
    assert not result.killed
    assert time.monotonic() - started < 5
    assert gone(mark)


@needs_bwrap
@needs_python
def test_output_flood_is_capped_without_blocking() -> None:
    code = (
        "import sys\nfor _ in range(256):\n"
        "    sys.stdout.write('o' * 65536)\n    sys.stderr.write('e' * 65536)\n"
    )
    cap = 64 * KiB
    result = Sandbox().run_code(code, limits=Limits(max_output_bytes=cap, wall_seconds=15))
    assert result.ok  # 16 MiB on each stream, drained, so the writer never blocked
    assert result.truncated
    assert result.stdout == b"o" * cap
    assert result.stderr == b"e" * cap


@needs_bwrap
def test_endless_output_keeps_memory_bounded() -> None:
    cap = 32 * KiB
    result = Sandbox().run(["yes"], limits=Limits(max_output_bytes=cap, wall_seconds=1))
    assert result.timed_out
    assert result.truncated
    assert result.stdout == b"y\n" * (cap // 2)


@needs_bwrap
@needs_python
def test_file_size_limit() -> None:
    limits = Limits(file_size_bytes=1 * MiB, wall_seconds=15)
    result = sh("head -c 2097152 /dev/zero > big", limits=limits)
    assert result.signal == signal.SIGXFSZ
    assert result.limit == "file_size"
    # Python ignores SIGXFSZ, so it sees EFBIG instead.
    py = Sandbox().run_code("open('big', 'wb').write(bytes(2 << 20))", limits=limits)
    assert py.returncode == 1
    assert py.limit == "file_size"


@needs_bwrap
@needs_python
def test_open_files_limit() -> None:
    code = "import os\nfds = [os.open('/dev/null', os.O_RDONLY) for _ in range(64)]\n"
    result = Sandbox().run_code(code, limits=Limits(open_files=16, wall_seconds=15))
    assert result.returncode == 1
    assert b"Too many open files" in result.stderr


@needs_bwrap
def test_background_processes_die_with_the_command() -> None:
    mark = token()
    result = sh(f"sleep {mark} & echo started")
    assert result.stdout == b"started\n"
    assert gone(mark)


@needs_bwrap
def test_sandbox_dies_with_its_parent(shared: Path) -> None:
    mark = token()
    script = f"from warden.runtime.sandbox import Sandbox\nSandbox().run(['sleep', '{mark}'])\n"
    helper = subprocess.Popen(
        [sys.executable, "-c", script], env={**os.environ, "TMPDIR": str(shared)}
    )
    try:
        assert eventually(
            lambda: any(a[0] == b"sleep" for a in processes_with(mark, exclude=helper.pid)), 10
        )
        helper.kill()  # SIGKILL: no cleanup runs in the parent
        helper.wait()
        assert gone(mark)
    finally:
        helper.kill()
        helper.wait()


# -- kill switch and cancellation --------------------------------------------------------------


@needs_bwrap
def test_kill_switch_kills_a_running_sandbox(shared: Path) -> None:
    mark, flag = token(), shared / "started"
    calls = InFlight()
    cancelled_at: list[float] = []

    def kill_when_started() -> None:
        if eventually(flag.exists, 10):
            cancelled_at.append(time.monotonic())
            calls.cancel(lambda call: call.agent == "agent-7", "test kill")

    killer = threading.Thread(target=kill_when_started)
    killer.start()
    with calls.track("agent-7", "s1", "shell.run"):
        result = sh(f"touch {flag}; exec sleep {mark}", Sandbox(read_write=[shared]))
    returned_at = time.monotonic()
    killer.join()
    assert result.killed
    assert (result.returncode, result.signal) == (None, signal.SIGKILL)
    assert not result.timed_out
    assert result.limit is None
    assert returned_at - cancelled_at[0] < 2.0
    assert gone(mark)


@needs_bwrap
def test_a_kill_during_set_up_leaves_nothing_behind() -> None:
    # bwrap's own --die-with-parent is armed only once the command has started;
    # a kill that lands earlier must still end the sandbox.
    for delay_ms in range(25):
        mark, calls = token(), InFlight()
        timer = threading.Timer(delay_ms / 1000, calls.cancel, (lambda call: True, "early kill"))
        with calls.track("agent-7", None, "shell.run"):
            timer.start()
            result = sh(f"exec sleep {mark}")
        timer.join()
        assert result.killed
        assert gone(mark), f"the sandbox outlived a kill after {delay_ms} ms"


@needs_bwrap
def test_a_cancelled_call_does_not_start_the_sandbox(shared: Path) -> None:
    flag = shared / "ran"
    calls = InFlight()
    with calls.track("agent-7", None, "shell.run") as call:
        call.cancel("killed before the start")
        result = sh(f"touch {flag}", Sandbox(read_write=[shared]))
    assert result.killed
    assert result.returncode is None
    assert not flag.exists()


@needs_bwrap
def test_arun_returns_the_result() -> None:
    result = asyncio.run(Sandbox().arun(["sh", "-c", "echo async"], limits=QUICK))
    assert result.ok
    assert result.stdout == b"async\n"


@needs_bwrap
def test_cancelling_arun_kills_the_process_group(shared: Path) -> None:
    mark, flag = token(), shared / "started"
    sandbox = Sandbox(read_write=[shared])

    async def main() -> None:
        task = asyncio.create_task(
            sandbox.arun(["sh", "-c", f"touch {flag}; exec sleep {mark}"], limits=QUICK)
        )
        for _ in range(1000):
            if flag.exists():
                break
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    assert flag.exists()
    assert time.monotonic() - started < 10
    assert gone(mark)


@needs_bwrap
def test_kill_switch_reaches_arun(shared: Path) -> None:
    flag = shared / "started"
    calls = InFlight()

    async def main() -> SandboxResult:
        with calls.track("agent-7", None, "shell.run"):
            task = asyncio.ensure_future(
                Sandbox(read_write=[shared]).arun(["sh", "-c", f"touch {flag}; exec sleep 30"])
            )
            while not flag.exists():
                await asyncio.sleep(0.01)
            calls.cancel(lambda call: True, "test kill")
            return await task

    assert asyncio.run(asyncio.wait_for(main(), 10)).killed


# -- failing closed ----------------------------------------------------------------------------


def test_missing_bwrap_fails_closed(shared: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flag = shared / "ran"
    with pytest.raises(SandboxError, match="nothing ran"):
        Sandbox(bwrap="/nonexistent/bwrap", read_write=[shared]).run(["touch", str(flag)])
    monkeypatch.setenv("PATH", str(shared))  # no bwrap on PATH
    with pytest.raises(SandboxError, match="not on PATH"):
        Sandbox(read_write=[shared]).run(["/usr/bin/touch", str(flag)])
    assert not flag.exists()
    assert not bwrap_available("/nonexistent/bwrap")


def test_bwrap_that_cannot_create_namespaces_fails_closed(shared: Path) -> None:
    flag = shared / "ran"
    sandbox = Sandbox(bwrap="/bin/false", read_write=[shared])
    with pytest.raises(SandboxError, match="bwrap cannot sandbox here"):
        sandbox.run(["touch", str(flag)])
    with pytest.raises(SandboxError):
        _ = sandbox.mode_available
    assert not flag.exists()


def test_auto_mode_needs_allow_weak(shared: Path) -> None:
    flag = shared / "ran"
    strict = Sandbox(mode="auto", bwrap="/nonexistent/bwrap", read_write=[shared])
    with pytest.raises(SandboxError, match="allow_weak"):
        strict.run(["touch", str(flag)])
    assert not flag.exists()
    weak = Sandbox(mode="auto", allow_weak=True, bwrap="/nonexistent/bwrap")
    assert weak.mode_available == "rlimit"
    result = weak.run(["sh", "-c", "echo weak"], limits=WEAK)
    assert result.mode == "rlimit"
    assert result.stdout == b"weak\n"


@needs_bwrap
def test_auto_mode_prefers_bwrap() -> None:
    sandbox = Sandbox(mode="auto", allow_weak=True)
    assert sandbox.mode_available == "bwrap"
    assert sh("true", sandbox).mode == "bwrap"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="only root's private tmp_path is out of reach")
def test_a_grant_the_sandbox_user_cannot_reach_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(SandboxError, match="could not be set up"):
        sh(f"touch {tmp_path}/ran", Sandbox(read_write=[tmp_path]))
    assert not (tmp_path / "ran").exists()


# -- the weak mode -----------------------------------------------------------------------------


def test_rlimit_mode_keeps_timeout_output_cap_and_cleanup() -> None:
    weak = Sandbox(mode="rlimit")
    mark = token()
    timed = weak.run(
        ["sh", "-c", f"trap '' TERM; sleep {mark}"],
        limits=Limits(wall_seconds=0.5, processes=100_000),
    )
    assert (timed.mode, timed.timed_out, timed.signal) == ("rlimit", True, signal.SIGKILL)
    assert gone(mark)
    capped = weak.run(["sh", "-c", "head -c 100000 /dev/zero"], limits=Limits(max_output_bytes=10))
    assert (capped.stdout, capped.truncated) == (bytes(10), True)
    mark = token()
    assert weak.run(["sh", "-c", f"sleep {mark} & echo bg"], limits=WEAK).stdout == b"bg\n"
    assert gone(mark)


@needs_python
def test_rlimit_mode_keeps_cpu_and_memory_limits() -> None:
    weak = Sandbox(mode="rlimit")
    cpu = weak.run_code("while True:\n    pass\n", limits=Limits(cpu_seconds=1, processes=100_000))
    assert (cpu.signal, cpu.limit) == (signal.SIGXCPU, "cpu")
    memory = weak.run_code(
        "bytearray(1 << 30)", limits=Limits(memory_bytes=128 * MiB, processes=100_000)
    )
    assert memory.limit == "memory"


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "field",
    [
        {"cpu_seconds": 0},
        {"memory_bytes": -1},
        {"wall_seconds": float("inf")},
        {"max_output_bytes": 0},
        {"processes": float("nan")},
        {"memory_bytes": 1.5e8},
        {"open_files": True},
    ],
)
def test_limits_must_be_positive(field: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError, match=r"must be (a )?positive"):
        Limits(**field)  # type: ignore[arg-type]


def test_configuration_errors() -> None:
    with pytest.raises(ConfigurationError, match="unknown sandbox mode `docker`"):
        Sandbox(mode="docker")
    with pytest.raises(ConfigurationError, match="cannot hide `/`"):
        Sandbox(hide=["/"])
    with pytest.raises(ConfigurationError, match="invalid variable"):
        Sandbox(env={"A=B": "x"})
    with pytest.raises(ConfigurationError, match="non-empty list"):
        Sandbox(mode="rlimit").run("echo hi")
    with pytest.raises(ConfigurationError, match="non-empty list"):
        Sandbox(mode="rlimit").run([])
