"""Run a command confined by bubblewrap, with rlimits, a timeout and output caps.

The specification is docs/runtime.md, "Sandbox". A run goes like this:

1. Pick the mode. ``bwrap`` needs a bubblewrap that can really create its
   namespaces here (``bwrap_available`` tries once and caches the answer);
   otherwise nothing runs (``SandboxError``), unless the weaker ``rlimit``
   mode was explicitly accepted.
2. Make a fresh work directory, start ``bwrap ... -- prlimit ... -- sh -c
   START argv`` in a new session, and register a kill hook on the governed
   call in flight (``inflight.current()``).
3. Read stdout and stderr concurrently, keep the first ``max_output_bytes``
   of each and drain the rest, feed stdin, and SIGKILL the process group at
   the wall-clock deadline.
4. Reap, kill whatever is left of the group, remove the work directory.

Killing. The process group is bwrap's own. bwrap's init (pid 1 of the
sandbox's PID namespace) and the command run in a session of their own
(``--new-session``), so a kill also SIGKILLs that init, whose pid bwrap
reports on ``--json-status-fd`` (held as a pidfd, so a reused pid is never
signalled): the init's death ends every process in the namespace. bwrap's
``--die-with-parent`` does the same when the outer bwrap dies, but the init
arms it only after it has started the command, so a kill in the first
milliseconds could miss it; the direct kill does not depend on that. In
``rlimit`` mode the command itself leads the group.

Security notes a reader cannot see from the code:

- **Root callers.** bubblewrap started by root maps the sandbox user to host
  uid 0 with no capabilities. That uid still *owns* every root file, so
  ``/etc/shadow`` and the host keys would be readable through the read-only
  root. When warden runs as root it therefore starts bwrap as ``nobody``
  (65534): the sandbox can then read only what ``nobody`` can read. Grants
  must be reachable by ``nobody`` in that case; the work directory is
  chowned to it.
- **Rlimits are applied inside the sandbox** by ``prlimit`` (util-linux),
  after bwrap has created the user namespace. ``RLIMIT_NPROC`` counts
  processes per user *per user namespace*, so the process limit is private to
  the sandbox; set on bwrap itself, it would count every process of the
  caller. No ``preexec_fn`` is used: it is unsafe in a threaded program.
- **"It started" is a marker.** A tiny ``sh`` stage, run after bwrap's set-up
  and the rlimits, writes a random marker to stderr and then execs the
  command. Output before the marker is bwrap's; a process that ends without
  the marker never ran the command, and the run raises ``SandboxError``.
- **Exit statuses.** bwrap reports a command killed by signal N as exit code
  128 + N, so in ``bwrap`` mode an exit code in 129..192 is read as that
  signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import re
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from warden.errors import ConfigurationError, SandboxError
from warden.runtime import inflight

__all__ = ["Limits", "Sandbox", "SandboxResult", "bwrap_available"]

MiB = 1024 * 1024

_MODES = ("bwrap", "auto", "rlimit")
_LANGUAGES = ("python", "sh")
_NOBODY = 65534
# Helpers (prlimit, sh) are looked up here, not on the caller's PATH: they run
# inside the sandbox, which sees the host's system directories read-only.
_SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_SANDBOX_PATH = "/usr/bin:/bin"
_SH = "/bin/sh"
_START = 'printf "%s\\n" "$0" >&2 && exec "$@"'
_PRE_MARKER_MAX = 64 * 1024  # bwrap's own messages before the marker; more is noise
_TAIL = 4096  # end of stderr kept to tell why the command died
_DRAIN_SECONDS = 1.0  # after the exit, how long escaped holders of the pipes may keep them
_POLL_SECONDS = 0.05
_PROBE_SECONDS = 10.0
_CHUNK = 64 * 1024


@dataclass(frozen=True)
class Limits:
    """Resource limits for one sandboxed command; every value must be positive and finite.

    ``cpu_seconds`` is rounded up to whole seconds (RLIMIT_CPU counts seconds);
    ``memory_bytes`` limits the address space; ``max_output_bytes`` applies to
    stdout and to stderr separately. The private ``/tmp`` and ``/dev/shm`` each
    hold at most ``file_size_bytes`` in total.
    """

    cpu_seconds: float = 10
    memory_bytes: int = 512 * MiB
    file_size_bytes: int = 64 * MiB
    open_files: int = 256
    processes: int = 64
    wall_seconds: float = 30.0
    max_output_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        counts = ("memory_bytes", "file_size_bytes", "open_files", "processes", "max_output_bytes")
        for name in ("cpu_seconds", "wall_seconds", *counts):
            value = getattr(self, name)
            kind = int if name in counts else int | float
            if (
                isinstance(value, bool)
                or not isinstance(value, kind)
                or not math.isfinite(value)
                or value <= 0
            ):
                what = "a positive integer" if name in counts else "positive"
                raise ConfigurationError(f"sandbox limit `{name}` must be {what}, not `{value}`")


@dataclass(frozen=True)
class SandboxResult:
    """What happened to one sandboxed command.

    ``returncode`` is None when the command died of a signal (``signal``) or
    never started (``killed`` before the start). ``limit`` names the limit
    that ended it: ``cpu``, ``memory``, ``file_size`` or ``wall`` (the last
    with ``timed_out``). ``truncated`` says stdout or stderr was cut at
    ``max_output_bytes``. ``mode`` is ``bwrap``, or ``rlimit`` (no filesystem
    or network isolation).
    """

    returncode: int | None
    signal: int | None
    stdout: bytes
    stderr: bytes
    truncated: bool
    timed_out: bool
    killed: bool
    limit: str | None
    mode: str
    duration_ns: int

    @property
    def ok(self) -> bool:
        """The command exited with status 0, and was neither killed nor timed out."""
        return self.returncode == 0 and not self.timed_out and not self.killed


class Sandbox:
    """Runs commands confined; see the module docstring and docs/runtime.md.

    ``read_only`` and ``read_write`` are resolved (symlinks followed) when the
    sandbox is made; a missing one raises ``SandboxError``. ``hide`` (default:
    ``/root``, ``$WARDEN_HOME``, ``/home``) is covered by empty read-only
    tmpfs mounts; an explicit grant inside a hidden path is still visible.
    ``env`` replaces the whole environment (default: ``PATH=/usr/bin:/bin``,
    ``HOME`` = the work directory, ``LANG=C.UTF-8``). ``bwrap`` is the
    bubblewrap binary (default: ``bwrap`` on ``PATH``).
    """

    def __init__(
        self,
        *,
        limits: Limits = Limits(),  # frozen, so one shared default is safe
        read_only: Sequence[str | os.PathLike[str]] = (),
        read_write: Sequence[str | os.PathLike[str]] = (),
        network: bool = False,
        hide: Sequence[str | os.PathLike[str]] | None = None,
        env: Mapping[str, str] | None = None,
        mode: str = "bwrap",
        allow_weak: bool = False,
        bwrap: str | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ConfigurationError(
                f"unknown sandbox mode `{mode}`; use `bwrap`, `auto` or `rlimit`"
            )
        if not isinstance(limits, Limits):
            raise ConfigurationError("sandbox `limits` must be a `Limits`")
        self.limits = limits
        self.network = network
        self.mode = mode
        self.allow_weak = allow_weak
        self._read_only = _resolve_grants(read_only, "read_only")
        self._read_write = _resolve_grants(read_write, "read_write")
        if hide is None:
            hide = ("/root", os.environ.get("WARDEN_HOME", ".warden"), "/home")
        self._hide = tuple(os.path.abspath(os.fspath(p)) for p in hide)
        if "/" in self._hide:
            raise ConfigurationError("the sandbox cannot hide `/`")
        self._env = None if env is None else _check_env(env)
        self._bwrap = bwrap

    def with_grants(
        self,
        read_only: Sequence[str | os.PathLike[str]] = (),
        read_write: Sequence[str | os.PathLike[str]] = (),
        network: bool = False,
    ) -> Sandbox:
        """A copy of this sandbox that also grants these paths (and the network, if asked)."""
        return Sandbox(
            limits=self.limits,
            read_only=[*self._read_only, *read_only],
            read_write=[*self._read_write, *read_write],
            network=self.network or network,
            hide=self._hide,
            env=self._env,
            mode=self.mode,
            allow_weak=self.allow_weak,
            bwrap=self._bwrap,
        )

    @property
    def mode_available(self) -> str:
        """The mode a run would use now, ``bwrap`` or ``rlimit``; ``SandboxError`` if none."""
        return self._choose_mode()[0]

    def run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        limits: Limits | None = None,
    ) -> SandboxResult:
        """Run ``argv`` confined and say what happened; ``SandboxError`` if it could not start."""
        return self._run(argv, stdin=stdin, limits=limits)

    def run_code(self, code: str, language: str = "python", **kw: Any) -> SandboxResult:
        """Run a Python or ``sh`` snippet; it is written to a file in the work directory.

        Python is the system ``/usr/bin/python3`` (isolated mode, ``-I``), or
        else the interpreter running warden, with its prefix bound read-only.
        """
        if language not in _LANGUAGES:
            raise ConfigurationError(f"unknown sandbox language `{language}`; use `python` or `sh`")
        if language == "python":
            python, extra = _sandbox_python()
            return self._run(
                [python, "-I", "main.py"], files={"main.py": code}, extra_ro=extra, **kw
            )
        return self._run([_SH, "main.sh"], files={"main.sh": code}, **kw)

    async def arun(self, argv: Sequence[str], **kw: Any) -> SandboxResult:
        """``run`` in a worker thread; cancelling the awaiting task SIGKILLs the process group."""
        token = inflight.Call(None, None, "sandbox.arun")
        task = asyncio.ensure_future(asyncio.to_thread(self._run, argv, token=token, **kw))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            token.cancel("the awaiting task was cancelled")
            with contextlib.suppress(Exception):  # the run's own error is moot once cancelled
                await task
            raise

    # -- internals ---------------------------------------------------------------------------

    def _choose_mode(self) -> tuple[str, _Probe | None]:
        if self.mode == "rlimit":
            return "rlimit", None
        path = self._bwrap if self._bwrap is not None else shutil.which("bwrap")
        probe = _probe(path, _drops_to_nobody())
        if probe.ok:
            return "bwrap", probe
        if self.mode == "auto" and self.allow_weak:
            return "rlimit", None
        hint = (
            "; install the `bubblewrap` package, or accept the weaker mode with "
            '`mode="auto", allow_weak=True`'
        )
        raise SandboxError(f"bwrap cannot sandbox here ({probe.error}), so nothing ran{hint}")

    def _run(
        self,
        argv: Sequence[str],
        *,
        stdin: bytes | None = None,
        limits: Limits | None = None,
        files: Mapping[str, str] | None = None,
        extra_ro: Sequence[str] = (),
        token: inflight.Call | None = None,
    ) -> SandboxResult:
        argv = _check_argv(argv)
        if stdin is not None and not isinstance(stdin, bytes | bytearray | memoryview):
            raise ConfigurationError("sandbox `stdin` must be bytes")
        lim = self.limits if limits is None else limits
        if not isinstance(lim, Limits):
            raise ConfigurationError("sandbox `limits` must be a `Limits`")
        mode, probe = self._choose_mode()
        prlimit = shutil.which("prlimit", path=_SYSTEM_PATH)
        if prlimit is None or not os.access(_SH, os.X_OK):
            raise SandboxError("`prlimit` (util-linux) or `/bin/sh` is missing, so nothing ran")
        calls = [c for c in (inflight.current(), token) if c is not None]
        if any(c.cancelled for c in calls):
            return _not_started(mode)

        workdir = tempfile.mkdtemp(prefix="warden-sandbox-")
        try:
            drop = _drops_to_nobody()
            for name, text in (files or {}).items():
                path = os.path.join(workdir, name)
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
                os.chmod(path, 0o644)
            if drop:
                os.chown(workdir, _NOBODY, _NOBODY)
            env = dict(self._env) if self._env is not None else _default_env(workdir)
            marker = f"warden-sandbox-started-{secrets.token_hex(8)}"
            inner = [
                prlimit,
                *_rlimit_args(lim),
                "--",
                _SH,
                "-c",
                _START,
                marker,
                *argv,
            ]
            status_fd: tuple[int, int] | None = None
            if mode == "bwrap":
                assert probe is not None
                status_fd = os.pipe()
                full = [
                    *self._bwrap_argv(probe, workdir, env, lim, extra_ro),
                    *("--json-status-fd", str(status_fd[1])),
                    "--",
                    *inner,
                ]
                outer_env = {"PATH": _SYSTEM_PATH, "LANG": "C.UTF-8"}
            else:
                full, outer_env = inner, env
            raw = _execute(
                full,
                env=outer_env,
                cwd=workdir,
                drop=drop,
                stdin=None if stdin is None else bytes(stdin),
                limits=lim,
                marker=(marker + "\n").encode(),
                calls=calls,
                status_fd=status_fd,
            )
        finally:
            _remove_tree(workdir)
        return _result(raw, mode, lim)

    def _bwrap_argv(
        self,
        probe: _Probe,
        workdir: str,
        env: Mapping[str, str],
        limits: Limits,
        extra_ro: Sequence[str],
    ) -> list[str]:
        assert probe.path is not None
        args = [probe.path, *_namespace_args(probe.modern, network=self.network)]
        args.append("--clearenv")
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        # The writable tmpfs mounts are bounded: their pages are the host's memory.
        for path in ("/dev/shm", "/tmp"):
            if probe.modern:
                args += ["--size", str(limits.file_size_bytes)]
            args += ["--tmpfs", path]
        hidden: list[str] = []
        for path in self._hide:
            real = os.path.realpath(path)
            if real == "/" or _within(real, "/tmp"):  # /tmp is private already
                continue
            if os.path.isdir(real):
                args += ["--tmpfs", real]
                hidden.append(real)
            elif os.path.lexists(real):
                args += ["--ro-bind", "/dev/null", real]
        # Grants come after the hiding mounts, so that a grant inside a hidden path shows.
        for path in (*self._read_only, *extra_ro):
            args += ["--ro-bind", path, path]
        for path in self._read_write:
            args += ["--bind", path, path]
        args += ["--bind", workdir, workdir]
        for path in ("/dev", *hidden):  # after the mount points in them were made
            args += ["--remount-ro", path]
        args += ["--chdir", workdir]
        return args


def bwrap_available(bwrap: str | None = None) -> bool:
    """Whether bubblewrap runs here with the sandbox's namespaces (a success is cached)."""
    path = bwrap if bwrap is not None else shutil.which("bwrap")
    return _probe(path, _drops_to_nobody()).ok


# -- bubblewrap ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Probe:
    path: str | None
    ok: bool
    modern: bool  # 0.8 or later: --disable-userns and --size
    error: str


def _namespace_args(modern: bool, *, network: bool) -> list[str]:
    args = ["--unshare-all", "--unshare-user"]
    if network:
        args.append("--share-net")
    if modern:
        args.append("--disable-userns")  # no nested user namespace to regain capabilities in
    args += ["--uid", str(_NOBODY), "--gid", str(_NOBODY)]
    args += ["--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    return args


_usable: dict[tuple[str, bool], _Probe] = {}


def _probe(path: str | None, drop: bool) -> _Probe:
    """Whether bwrap works; a success is cached, a failure is tried again next time."""
    if path is not None and (path, drop) in _usable:
        return _usable[path, drop]
    probe = _try_bwrap(path, drop)
    if probe.ok and path is not None:
        _usable[path, drop] = probe
    return probe


def _try_bwrap(path: str | None, drop: bool) -> _Probe:
    """Run bwrap once with the namespaces a run uses; the answer says why not, if not."""
    if path is None:
        return _Probe(None, ok=False, modern=False, error="`bwrap` is not on PATH")
    user: dict[str, Any] = _user_args(drop)
    try:
        version = subprocess.run(
            [path, "--version"],
            capture_output=True,
            timeout=_PROBE_SECONDS,
            check=False,
            env={"PATH": _SYSTEM_PATH},
        )
        match = re.search(rb"(\d+)\.(\d+)", version.stdout)
        modern = match is not None and (int(match[1]), int(match[2])) >= (0, 8)
        trial = subprocess.run(
            [
                path,
                *_namespace_args(modern, network=False),
                *("--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"),
                *("--json-status-fd", "1"),
                "--",
                _SH,
                "-c",
                ":",
            ],
            capture_output=True,
            timeout=_PROBE_SECONDS,
            check=False,
            env={"PATH": _SYSTEM_PATH},
            cwd="/",
            **user,
        )
    except OSError as e:
        return _Probe(path, ok=False, modern=False, error=f"`{path}`: {e.strerror or e}")
    except subprocess.SubprocessError as e:
        return _Probe(path, ok=False, modern=False, error=f"`{path}`: {e}")
    if trial.returncode != 0:
        detail = trial.stderr.decode(errors="replace").strip() or f"exit {trial.returncode}"
        return _Probe(path, ok=False, modern=modern, error=f"`{path}`: {detail}")
    return _Probe(path, ok=True, modern=modern, error="")


def _drops_to_nobody() -> bool:
    return os.geteuid() == 0


def _user_args(drop: bool) -> dict[str, Any]:
    if not drop:
        return {}
    return {"user": _NOBODY, "group": _NOBODY, "extra_groups": []}


# -- running the process ---------------------------------------------------------------------


@dataclass
class _Raw:
    exitcode: int
    cpu_seconds: float
    stdout: bytes
    stderr: bytes
    stderr_tail: bytes
    truncated: bool
    started: bool
    setup_messages: bytes
    timed_out: bool
    killed: bool
    duration_ns: int


class _Capture:
    """The first ``cap`` bytes of a stream, and its last few; the rest is read and dropped."""

    def __init__(self, cap: int, gate: bytes | None = None) -> None:
        self.cap = cap
        self.data = bytearray()
        self.tail = b""
        self.truncated = False
        self.gate = gate  # until this marker is seen, bytes are set-up messages
        self.before = bytearray()

    @property
    def started(self) -> bool:
        return self.gate is None

    def feed(self, chunk: bytes) -> None:
        if self.gate is not None:
            self.before += chunk
            at = self.before.find(self.gate)
            if at < 0:
                del self.before[: max(0, len(self.before) - _PRE_MARKER_MAX)]
                return
            chunk = bytes(self.before[at + len(self.gate) :])
            del self.before[at:]
            self.gate = None
        room = self.cap - len(self.data)
        if room > 0:
            self.data += chunk[:room]
        if len(chunk) > room:
            self.truncated = True
        self.tail = (self.tail + chunk)[-_TAIL:]


class _Group:
    """A started process group that can be killed from any thread until it is reaped."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.lock = threading.Lock()
        self.reaped = False
        self.killed = False
        self.timed_out = False
        self.init_pidfd: int | None = None  # bwrap's init, pid 1 of the sandbox

    def adopt_init(self, pid: int, pidns: int) -> None:
        """Hold bwrap's init (from --json-status-fd) so that a kill reaches it."""
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:  # already gone, or no pidfd here: --die-with-parent remains
            return
        if not _is_init_of(pid, pidns):  # checked after pidfd_open, so the pidfd is that process
            os.close(pidfd)
            return
        with self.lock:
            self.init_pidfd = pidfd
            if self.killed or self.timed_out or self.reaped:  # asked before it was known
                self._kill_init()

    def close(self) -> None:
        if self.init_pidfd is not None:
            os.close(self.init_pidfd)
            self.init_pidfd = None

    def kill(self) -> None:
        """The kill-switch hook: SIGKILL the whole group."""
        with self.lock:
            if not self.reaped:
                self.killed = True
                self._kill_all()

    def expire(self) -> None:
        with self.lock:
            if not self.reaped:
                self.timed_out = True
                self._kill_all()

    def try_reap(self, block: bool = False) -> tuple[int, float] | None:
        """Exit code and CPU seconds once the leader has exited; None while it runs.

        The group is SIGKILLed before the leader is reaped: until then its pid
        (and so the group id) cannot be reused, and nothing it started outlives it.
        """
        with self.lock:
            if self.reaped:
                raise RuntimeError("already reaped")
            flags = os.WEXITED | os.WNOWAIT | (0 if block else os.WNOHANG)
            if os.waitid(os.P_PID, self.proc.pid, flags) is None:
                return None
            self._kill_all()
            _, status, usage = os.wait4(self.proc.pid, 0)
            self.reaped = True
            code = os.waitstatus_to_exitcode(status)
            self.proc.returncode = code  # reaped here; Popen must not wait for it again
            return code, usage.ru_utime + usage.ru_stime

    def _kill_all(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._kill_init()

    def _kill_init(self) -> None:
        if self.init_pidfd is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(self.init_pidfd, signal.SIGKILL)


def _is_init_of(pid: int, pidns: int) -> bool:
    """Whether ``pid`` is pid 1 of the PID namespace with inode ``pidns``."""
    try:
        if os.stat(f"/proc/{pid}/ns/pid").st_ino != pidns:
            return False
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            nspid = [line.split()[1:] for line in f if line.startswith("NSpid:")]
    except OSError:
        return False
    return bool(nspid) and nspid[0][-1:] == ["1"]


def _execute(
    argv: list[str],
    *,
    env: Mapping[str, str],
    cwd: str,
    drop: bool,
    stdin: bytes | None,
    limits: Limits,
    marker: bytes,
    calls: Sequence[inflight.Call],
    status_fd: tuple[int, int] | None,
) -> _Raw:
    """Start ``argv``; ``status_fd`` is the pipe bwrap writes --json-status-fd to."""
    start = time.monotonic_ns()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
            close_fds=True,
            start_new_session=True,
            env=dict(env),
            cwd=cwd,
            pass_fds=() if status_fd is None else (status_fd[1],),
            **_user_args(drop),
        )
    except (OSError, subprocess.SubprocessError) as e:
        if status_fd is not None:
            os.close(status_fd[0])
        raise SandboxError(f"cannot start `{argv[0]}` ({e}), so nothing ran") from e
    finally:
        if status_fd is not None:
            os.close(status_fd[1])
    group = _Group(proc)
    removers = [call.add_hook(group.kill) for call in calls]
    status = None if status_fd is None else _Status(status_fd[0], group)
    try:
        return _communicate(group, status, stdin, limits, marker, start)
    finally:
        for remove in removers:
            remove()
        if not group.reaped:  # an exception on the way: never leave the group behind
            group.kill()
            group.try_reap(block=True)
        group.close()
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


class _Status:
    """Reads bwrap's --json-status-fd; its first document names the init and its PID namespace."""

    def __init__(self, fd: int, group: _Group) -> None:
        self.fd = fd
        self.group = group
        self.buffer = b""
        os.set_blocking(fd, False)

    def read(self) -> bool:
        """Take what is there without blocking; False once bwrap has closed its end."""
        while True:
            try:
                chunk = os.read(self.fd, 4096)
            except BlockingIOError:
                return True
            if not chunk:
                return False
            *lines, self.buffer = (self.buffer + chunk).split(b"\n")
            for line in lines:
                try:
                    doc = json.loads(line)
                except ValueError:
                    continue
                if isinstance(doc, dict):
                    pid, pidns = doc.get("child-pid"), doc.get("pid-namespace")
                    if isinstance(pid, int) and isinstance(pidns, int):
                        self.group.adopt_init(pid, pidns)


def _communicate(
    group: _Group,
    status: _Status | None,
    stdin: bytes | None,
    limits: Limits,
    marker: bytes,
    start_ns: int,
) -> _Raw:
    proc = group.proc
    assert proc.stdout is not None
    assert proc.stderr is not None
    out = _Capture(limits.max_output_bytes)
    err = _Capture(limits.max_output_bytes, gate=marker)
    captures = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    pending = memoryview(stdin or b"")
    deadline = time.monotonic() + limits.wall_seconds
    exited: tuple[int, float] | None = None
    drain_until = 0.0

    with selectors.DefaultSelector() as sel, contextlib.ExitStack() as stack:
        if status is not None:
            stack.callback(os.close, status.fd)
            sel.register(status.fd, selectors.EVENT_READ)
        for fd in captures:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if proc.stdin is not None:
            if pending:
                os.set_blocking(proc.stdin.fileno(), False)
                sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)
            else:
                proc.stdin.close()
        pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfd: poll instead
            pidfd = os.pidfd_open(proc.pid)
            stack.callback(os.close, pidfd)
            sel.register(pidfd, selectors.EVENT_READ)

        while True:
            now = time.monotonic()
            if exited is None:
                if status is not None and status.fd in _registered(sel) and not status.read():
                    sel.unregister(status.fd)  # read first: the init must be known before a kill
                if now >= deadline and not group.timed_out:
                    group.expire()
                exited = group.try_reap()
                if exited is not None:
                    drain_until = now + _DRAIN_SECONDS
            if exited is not None:
                if not any(fd in captures for fd in _registered(sel)) or now >= drain_until:
                    break
                timeout = drain_until - now
            elif pidfd is None or group.timed_out:
                timeout = _POLL_SECONDS
            else:
                timeout = deadline - now
            for key, _ in sel.select(max(0.0, timeout)):
                fd = key.fd
                if fd == pidfd:
                    sel.unregister(fd)  # stays readable; the next round reaps
                elif status is not None and fd == status.fd:
                    if not status.read():
                        sel.unregister(fd)
                elif fd in captures:
                    try:
                        chunk = os.read(fd, _CHUNK)
                    except BlockingIOError:
                        continue
                    if chunk:
                        captures[fd].feed(chunk)
                    else:
                        sel.unregister(fd)
                else:
                    assert proc.stdin is not None
                    try:
                        pending = pending[os.write(fd, pending[:_CHUNK]) :]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command closed its stdin
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        proc.stdin.close()

    code, cpu = exited
    return _Raw(
        exitcode=code,
        cpu_seconds=cpu,
        stdout=bytes(out.data),
        stderr=bytes(err.data),
        stderr_tail=err.tail,
        truncated=out.truncated or err.truncated,
        started=err.started,
        setup_messages=bytes(err.before),
        timed_out=group.timed_out,
        killed=group.killed,
        duration_ns=time.monotonic_ns() - start_ns,
    )


def _registered(sel: selectors.BaseSelector) -> list[int]:
    return [key.fd for key in sel.get_map().values()]


def _result(raw: _Raw, mode: str, limits: Limits) -> SandboxResult:
    if not raw.started and not (raw.killed or raw.timed_out):
        detail = raw.setup_messages.decode(errors="replace").strip()[-500:]
        detail = detail or f"exit status {raw.exitcode}"
        raise SandboxError(f"the sandbox could not be set up ({detail}), so nothing ran")
    returncode: int | None = raw.exitcode
    sig: int | None = None
    if raw.exitcode < 0:
        returncode, sig = None, -raw.exitcode
    elif mode == "bwrap" and raw.started and 128 < raw.exitcode <= 128 + 64:
        returncode, sig = None, raw.exitcode - 128
    return SandboxResult(
        returncode=returncode,
        signal=sig,
        stdout=raw.stdout,
        stderr=raw.stderr,
        truncated=raw.truncated,
        timed_out=raw.timed_out,
        killed=raw.killed,
        limit=_limit(raw, returncode, sig, mode, limits),
        mode=mode,
        duration_ns=raw.duration_ns,
    )


def _limit(
    raw: _Raw, returncode: int | None, sig: int | None, mode: str, limits: Limits
) -> str | None:
    """Which limit ended the command, as far as its exit shows it."""
    if raw.killed:
        return None
    if raw.timed_out:
        return "wall"
    if sig == signal.SIGXCPU:
        return "cpu"
    if sig == signal.SIGKILL:
        # A SIGKILL the sandbox did not send is the CPU hard limit (soft + 1 s)
        # if enough CPU was used. Under bwrap the command's CPU time is not
        # reported back (bwrap's init reaps it), but it cannot exceed the wall time.
        spent = raw.cpu_seconds if mode == "rlimit" else raw.duration_ns / 1e9
        return "cpu" if spent >= _cpu_soft(limits) else None
    if sig == signal.SIGXFSZ:
        return "file_size"
    if returncode == 0:
        return None
    tail = raw.stderr_tail
    if b"MemoryError" in tail or b"Cannot allocate memory" in tail or b"out of memory" in tail:
        return "memory"
    if b"File too large" in tail:  # a program that ignores SIGXFSZ, as Python does
        return "file_size"
    return None


def _not_started(mode: str) -> SandboxResult:
    return SandboxResult(
        returncode=None,
        signal=None,
        stdout=b"",
        stderr=b"",
        truncated=False,
        timed_out=False,
        killed=True,
        limit=None,
        mode=mode,
        duration_ns=0,
    )


# -- small helpers ---------------------------------------------------------------------------


def _cpu_soft(limits: Limits) -> int:
    return max(1, math.ceil(limits.cpu_seconds))


def _rlimit_args(limits: Limits) -> list[str]:
    """``prlimit`` options; each limit only ever lowers what this process may use."""

    def lowered(kind: int, value: int) -> int:
        hard = resource.getrlimit(kind)[1]
        return value if hard == resource.RLIM_INFINITY else min(value, hard)

    cpu = _cpu_soft(limits)
    # SIGXCPU at the soft limit; SIGKILL a second later for a process that ignores it.
    return [
        f"--cpu={lowered(resource.RLIMIT_CPU, cpu)}:{lowered(resource.RLIMIT_CPU, cpu + 1)}",
        f"--as={lowered(resource.RLIMIT_AS, limits.memory_bytes)}",
        f"--fsize={lowered(resource.RLIMIT_FSIZE, limits.file_size_bytes)}",
        f"--nofile={lowered(resource.RLIMIT_NOFILE, limits.open_files)}",
        f"--nproc={lowered(resource.RLIMIT_NPROC, limits.processes)}",
        "--core=0",
    ]


def _check_argv(argv: Sequence[str]) -> list[str]:
    if isinstance(argv, str | bytes) or not argv or not all(isinstance(a, str) for a in argv):
        raise ConfigurationError("sandbox `argv` must be a non-empty list of strings")
    return list(argv)


def _check_env(env: Mapping[str, str]) -> dict[str, str]:
    for key, value in env.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError("sandbox `env` must map strings to strings")
        if not key or "=" in key or "\0" in key or "\0" in value:
            raise ConfigurationError(f"sandbox `env` has an invalid variable `{key}`")
    return dict(env)


def _default_env(workdir: str) -> dict[str, str]:
    return {"PATH": _SANDBOX_PATH, "HOME": workdir, "LANG": "C.UTF-8"}


def _resolve_grants(paths: Sequence[str | os.PathLike[str]], kind: str) -> tuple[str, ...]:
    if isinstance(paths, str | bytes):
        raise ConfigurationError(f"sandbox `{kind}` must be a list of paths")
    resolved = []
    for path in paths:
        real = os.path.realpath(os.fspath(path))
        if not os.path.exists(real):
            raise SandboxError(f"{kind} path `{os.fspath(path)}` does not exist")
        resolved.append(real)
    return tuple(resolved)


def _within(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def _sandbox_python() -> tuple[str, tuple[str, ...]]:
    """The interpreter for ``run_code``, and what must be bound read-only for it to run."""
    if os.access("/usr/bin/python3", os.X_OK):
        return "/usr/bin/python3", ()
    return os.path.realpath(sys.executable), (os.path.realpath(sys.base_prefix),)


def _remove_tree(path: str) -> None:
    """Delete the work directory, even where the command took away its own permissions."""
    try:
        shutil.rmtree(path)
    except FileNotFoundError:
        return
    except OSError:
        # Only real directories are opened up (never a symlink's target). As
        # root the first attempt cannot fail on permissions, and otherwise the
        # sandbox ran as this same user, so this grants it nothing new.
        stack = [path]
        while stack:
            top = stack.pop()
            with contextlib.suppress(OSError):
                os.chmod(top, 0o700)
                with os.scandir(top) as entries:
                    stack.extend(e.path for e in entries if e.is_dir(follow_symlinks=False))
        shutil.rmtree(path, ignore_errors=True)
