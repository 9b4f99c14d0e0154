"""Run one untrusted command in an isolated child process.

Shape (Linux, running as root, the normal case; docs/sandbox.md has the full picture):

    parent (run_sandboxed) --Popen--> supervisor (coral/sandbox/supervisor.py; root, host PID ns)
                                        | unshare(mount, PID, net, IPC, UTS namespaces); fork
                                        v
                                      box init = the command (PID 1 of a fresh PID namespace):
                                        tmpfs root with read-only binds of /usr and the
                                        interpreter, its own /tmp and /box (the files), no /proc,
                                        pivot_root, setsid, rlimits, unprivileged uid,
                                        no_new_privs, then execve

The supervisor stays outside the box, where nothing in the box can reach it. It reports the
box's real wait status over a pipe only it holds (the box shares stdout/stderr with it, so a
status written there could be forged). When PID 1 of the box exits the kernel kills every other
process in its namespace, so nothing outlives a run. Without namespaces the same rlimits, empty
environment, private working directory and session still apply; the gap is logged once.

This module is the host side; the supervisor is its own program (coral/sandbox/supervisor.py),
which starts with only builtin modules and ctypes (it runs once per candidate).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import marshal
import os
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from coral.sandbox import supervisor
from coral.sandbox.supervisor import ACK_FD, BOX_WORKDIR, MARK_FD, METER_RATES

__all__ = ["ACK_FD", "BOX_WORKDIR", "MARK_FD", "METER_COUNTERS", "METER_RATES", "Meter", "SandboxLimits",
           "SandboxResult", "SandboxSetupError", "isolation_available", "memory_cgroup", "python_executable",
           "run_sandboxed",
           "sandbox_uid_range"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SandboxLimits:
    cpu_seconds: float
    wall_seconds: float
    memory_mb: int  # address space (RLIMIT_AS)
    max_processes: int  # processes + threads of the box's uid (RLIMIT_NPROC)
    max_file_mb: int  # largest file (RLIMIT_FSIZE); also sizes the box's /tmp and /box
    max_output_bytes: int  # stdout and stderr each


@dataclass
class SandboxResult:
    returncode: int | None  # exit code, or -N when killed by signal N (subprocess convention)
    stdout: bytes
    stderr: bytes
    # None, "wall_timeout", "cpu_limit", "memory_limit", "file_size_limit", "output_limit",
    # "budget" (a Meter segment overran), "signal:N", or "supervisor_lost" (only without
    # namespaces, where the box can kill it).
    killed_reason: str | None
    wall_seconds: float
    output_truncated: bool
    cpu_seconds: float = 0.0
    isolated: bool = False  # namespaces + unprivileged uid were in force
    # With a Meter: the counter's kind ("instructions", "task-clock"; None when no counter
    # could be opened), (label, count) at each accepted mark, the count when the box ended,
    # and the label of the segment the supervisor stopped for overrunning its budget.
    meter: str | None = None
    marks: tuple[tuple[int, int], ...] = ()
    meter_end: int | None = None
    over_budget: int | None = None


@dataclass(frozen=True)
class Meter:
    """Count the box's work outside it, and stop a segment that overruns its budget.

    The command marks the start of each segment by writing a decimal label and a newline to
    fd MARK_FD; labels must increase. budgets: CPU-seconds per label, `default` for others.
    `counters`: the kernel counters that may be tried, in order (METER_COUNTERS); with none
    available the box's cost is its CPU time ("cpu-time") and segments are not budgeted.
    """

    budgets: dict[int, float]
    default: float
    max_marks: int
    counters: tuple[str, ...] = ("instructions", "task-clock")


# The `sandbox.meter` setting: which counters a box may use. "auto" takes the most precise the
# machine has; "task-clock" and "cpu-time" pin a coarser one, so that a local run measures
# runtime the way a machine without it does (Modal's gVisor: docs/sandbox.md "Meters").
METER_COUNTERS: dict[str, tuple[str, ...]] = {
    "auto": ("instructions", "task-clock"), "task-clock": ("task-clock",), "cpu-time": (),
}


class SandboxSetupError(RuntimeError):
    """The box could not be built: an infrastructure fault, never the candidate's doing."""


# Read-only binds (symlinks such as /lib -> usr/lib are recreated as symlinks).
_SYSTEM_PATHS = ("/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/ld.so.cache")
_BOX_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "HOME": "/tmp",
    "TMPDIR": "/tmp",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONHASHSEED": "0",  # str hashes, hence set/dict iteration, must not vary between runs
    "PYTHONIOENCODING": "utf-8",
}


def python_executable() -> str:
    """The real interpreter behind the venv: the box binds its prefix, never the venv."""
    return os.path.realpath(getattr(sys, "_base_executable", None) or sys.executable)


class _UidPool:
    """Gives each concurrent box its own uid.

    RLIMIT_NPROC counts every process of a uid, so two boxes sharing one would let a fork bomb
    in one starve the other (and make its results depend on timing). The range is derived from
    our pid, so two evaluator processes on one machine rarely overlap.
    """

    SLOTS = 64

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._free: list[int] = []
        self._pid = -1

    def base(self) -> int:
        return 200_000 + (os.getpid() % 8192) * self.SLOTS

    def acquire(self) -> int:
        with self._cond:
            if self._pid != os.getpid():  # first use, or a forked copy of the pool
                self._pid, self._free = os.getpid(), list(range(self.SLOTS))
            while not self._free:
                self._cond.wait()
            return self.base() + self._free.pop()

    def release(self, uid: int) -> None:
        with self._cond:
            self._free.append(uid - self.base())
            self._cond.notify()


_UIDS = _UidPool()


def sandbox_uid_range() -> range:
    """The uids this process's boxes run as (tests look for leftover processes with them)."""
    return range(_UIDS.base(), _UIDS.base() + _UidPool.SLOTS)


_isolation: bool | None = None
_isolation_lock = threading.Lock()


def isolation_available() -> bool:
    """Whether boxes get namespaces + an unprivileged uid here (probed once per process)."""
    global _isolation
    with _isolation_lock:
        if _isolation is None:
            _isolation = _probe_isolation()
            if not _isolation:
                _log.warning(
                    "coral.sandbox.box: no namespaces here (platform %s, euid %s): candidates run "
                    "with rlimits, an empty environment and a private directory only, and can "
                    "see the host filesystem and network (docs/sandbox.md)",
                    sys.platform,
                    os.geteuid(),
                )
        return _isolation


def _probe_isolation() -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return False
    limits = SandboxLimits(10, 60, 256, 8, 1, 4096)
    try:
        res = _run([python_executable(), "-S", "-c", "pass"], {}, limits, b"", isolate=True)
    except SandboxSetupError as exc:
        _log.info("coral.sandbox.box: isolation probe failed: %s", exc)
        return False
    return res.returncode == 0


def memory_cgroup() -> list[Any] | None:
    """[parent folder, cgroup version] under which each box gets its own memory cgroup, or
    None where none can be made (not root, no memory controller): probed once per process."""
    global _memory_cgroup
    with _memory_cgroup_lock:  # not _isolation_lock: the isolation probe runs a box, which asks here
        if _memory_cgroup is None:
            _memory_cgroup = _probe_memory_cgroup()
            if not _memory_cgroup:
                _log.warning("coral.sandbox.box: no memory cgroup here: memory_mb bounds each process "
                             "of a box, not the box as a whole (docs/sandbox.md)")
        return _memory_cgroup or None


_memory_cgroup: list[Any] | None = None
_memory_cgroup_lock = threading.Lock()


def _probe_memory_cgroup() -> list[Any]:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        return []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return []
    candidates: list[tuple[str, int]] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if "memory" in controllers.split(","):
            candidates.append((f"/sys/fs/cgroup/memory{path.rstrip('/')}", 1))
        elif controllers == "":
            base = f"/sys/fs/cgroup{path.rstrip('/')}"
            with contextlib.suppress(OSError):
                if "memory" in Path(base, "cgroup.subtree_control").read_text().split():
                    candidates.append((base, 2))
    for base, version in candidates:
        probe = f"{base}/coral-probe-{os.getpid()}"
        try:
            os.mkdir(probe, 0o700)
            os.rmdir(probe)
            return [base, version]
        except OSError:
            continue
    return []


def run_sandboxed(
    argv: list[str], files: dict[str, bytes], limits: SandboxLimits, stdin: bytes = b"", meter: Meter | None = None
) -> SandboxResult:
    """Run argv in a fresh box whose working directory holds only ``files``.

    argv[0] must be an absolute path visible in the box (system paths or the interpreter).
    A child that breaks a limit yields a result with ``killed_reason``; only failing to build
    the box raises (SandboxSetupError).
    """
    for name in files:
        if name.startswith("/") or any(p in ("", ".", "..") for p in name.split("/")):
            raise ValueError(f"sandbox file names must be plain relative paths: {name!r}")
    return _run(argv, files, limits, stdin, isolate=isolation_available(), meter=meter)


def _world_executable(path: str) -> bool:
    """Whether a uid other than ours could run `path` (every directory above it searchable)."""
    parts = os.path.realpath(path).split("/")
    try:
        return all(os.stat("/".join(parts[:i])).st_mode & stat.S_IXOTH for i in range(2, len(parts) + 1))
    except OSError:
        return False


def _run(
    argv: list[str], files: dict[str, bytes], limits: SandboxLimits, stdin: bytes, isolate: bool,
    meter: Meter | None = None,
) -> SandboxResult:
    uid = None
    if os.geteuid() == 0:
        # Without namespaces the box sees the host's paths: another uid must be able to run
        # the interpreter there. Untrusted code never runs as root: as root, os.kill(-1, 9)
        # or a fork bomb (RLIMIT_NPROC does not bind root) would take the machine down.
        if not isolate and not _world_executable(argv[0]):
            raise SandboxSetupError(
                f"refusing to run untrusted code as root without namespaces: {argv[0]} is not "
                "executable by other users (docs/sandbox.md)"
            )
        uid = _UIDS.acquire()
    workdir = None if isolate else tempfile.mkdtemp(prefix="coral-box-")
    try:
        config: dict[str, Any] = {
            "argv": argv,
            "env": _BOX_ENV,
            "isolate": isolate,
            "uid": uid,
            "workdir": workdir,
            "files": files,
            "limits": dict(limits.__dict__),
            "bind": [p for p in _SYSTEM_PATHS if os.path.lexists(p)] + [sys.base_prefix],
            "cgroup": memory_cgroup() if isolate else None,
            "meter": None if meter is None else {
                "budgets": {int(k): float(v) for k, v in meter.budgets.items()},
                "default": float(meter.default),
                "max_marks": int(meter.max_marks),
                "counters": list(meter.counters),
            },
        }
        blob = marshal.dumps(config)
        code = _supervisor_code()
        payload = len(code).to_bytes(8, "big") + code + len(blob).to_bytes(8, "big") + blob + stdin
        return _supervise(payload, limits, isolate, config["cgroup"])
    finally:
        if uid is not None:
            _UIDS.release(uid)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


# The supervisor is coral/sandbox/supervisor.py's code, compiled once by the parent and sent down
# stdin ahead of the config: a script given by path would be compiled from source on every run (~15 ms).
_BOOT = (
    "import marshal, os\n"
    "def read(n):\n"
    "    b = b''\n"
    "    while len(b) < n:\n"
    "        c = os.read(0, n - len(b))\n"
    "        if not c: raise EOFError('supervisor code truncated')\n"
    "        b += c\n"
    "    return b\n"
    "exec(marshal.loads(read(int.from_bytes(read(8), 'big'))), {'__name__': '__main__'})\n"
)


@functools.cache
def _supervisor_code() -> bytes:
    path = supervisor.__file__
    source = Path(path).read_text(encoding="utf-8")
    return marshal.dumps(compile(source, path, "exec", dont_inherit=True))


def _remove_cgroup(spec: list[Any], supervisor_pid: int) -> bool:
    """Remove a box's memory cgroup (its processes are gone); whether it hit its limit."""
    base, version = spec
    group = Path(base, f"coral-box-{supervisor_pid}")
    if not group.is_dir():
        return False
    oom = False
    with contextlib.suppress(OSError, ValueError):
        if version == 1:
            control = dict(line.split() for line in Path(group, "memory.oom_control").read_text().splitlines() if line)
            oom = int(control.get("oom_kill", "0")) > 0
        else:
            events = dict(line.split() for line in Path(group, "memory.events").read_text().splitlines() if line)
            oom = int(events.get("oom_kill", "0")) > 0 or int(events.get("max", "0")) > 0
    for _ in range(200):  # the namespace's last processes may take a moment to leave
        try:
            group.rmdir()
            break
        except OSError:
            time.sleep(0.005)
    else:
        _log.warning("coral.sandbox.box: could not remove %s", group)
    return oom


def _supervise(
    payload: bytes, limits: SandboxLimits, isolate: bool, cgroup: list[Any] | None = None
) -> SandboxResult:
    status_r, status_w = os.pipe()
    started = time.monotonic()
    try:
        proc = subprocess.Popen(  # fixed argv: our interpreter running this file
            [python_executable(), "-I", "-S", "-B", "-c", _BOOT, str(status_w)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(status_w,),
            start_new_session=True,
            env={},
            cwd="/",
        )
    finally:
        os.close(status_w)
    io = _PipeIO(proc, status_r, payload, limits.max_output_bytes)
    killed = io.pump(started + limits.wall_seconds)
    if killed is not None:
        _stop(proc)
        io.drain(grace=2.0)
    proc.wait()
    io.drain(grace=0.5)  # without namespaces an escaped grandchild may hold the pipes open
    io.close()
    oom = _remove_cgroup(cgroup, proc.pid) if cgroup is not None else False
    return _result(io, killed, limits, isolate, time.monotonic() - started, oom)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM asks the supervisor to SIGKILL the box; SIGKILL its group if it does not."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


class _PipeIO:
    """Feeds stdin and reads stdout/stderr/status without threads, keeping at most `cap`."""

    def __init__(self, proc: subprocess.Popen[bytes], status_fd: int, payload: bytes, cap: int) -> None:
        assert proc.stdin and proc.stdout and proc.stderr  # Popen(PIPE) contract
        self.cap, self.truncated = cap, False
        self.stdin = proc.stdin
        self.stdout_fd, self.stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.status_fd = status_fd
        self.files = (proc.stdin, proc.stdout, proc.stderr)
        self.out: dict[int, bytearray] = {}
        self.sel = selectors.DefaultSelector()
        for fd in (self.stdout_fd, self.stderr_fd, status_fd):
            os.set_blocking(fd, False)
            self.out[fd] = bytearray()
            self.sel.register(fd, selectors.EVENT_READ)
        self.pending = memoryview(payload)
        self.stdin_open = True
        os.set_blocking(proc.stdin.fileno(), False)
        self.sel.register(proc.stdin.fileno(), selectors.EVENT_WRITE)

    def pump(self, deadline: float) -> str | None:
        """Run until every stream is closed; return a kill reason if a limit was crossed."""
        while self.sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                return "wall_timeout"
            for key, _ in self.sel.select(left):
                if self.stdin_open and key.fd == self.stdin.fileno():
                    self._feed()
                elif self._read(key.fd):
                    return "output_limit"
        return None

    def drain(self, grace: float) -> None:
        if self.stdin_open:
            self._close_stdin()
        end = time.monotonic() + grace
        while self.sel.get_map() and time.monotonic() < end:
            for key, _ in self.sel.select(max(0.0, end - time.monotonic())):
                self._read(key.fd)

    def _feed(self) -> None:
        try:
            n = os.write(self.stdin.fileno(), self.pending[: 1 << 16])
            self.pending = self.pending[n:]
        except BlockingIOError:
            return
        except OSError:  # the child stopped reading (exited, or closed stdin): fine
            self.pending = self.pending[:0]
        if not self.pending:
            self._close_stdin()

    def _close_stdin(self) -> None:
        self.sel.unregister(self.stdin.fileno())
        with contextlib.suppress(OSError):
            self.stdin.close()
        self.stdin_open = False

    def _read(self, fd: int) -> bool:
        """Read what is there; True when stdout or stderr went over the cap."""
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            return False
        if not chunk:
            self.sel.unregister(fd)
            return False
        buf = self.out[fd]
        room = self.cap - len(buf) if fd != self.status_fd else 1 << 16
        buf += chunk[: max(0, room)]
        if len(chunk) > room:
            self.truncated = True
            return True
        return False

    def close(self) -> None:
        for fd in list(self.sel.get_map()):
            self.sel.unregister(fd)
        self.sel.close()
        for f in self.files:
            with contextlib.suppress(OSError):
                f.close()
        os.close(self.status_fd)


def _result(
    io: _PipeIO, killed: str | None, limits: SandboxLimits, isolate: bool, wall: float, oom: bool = False
) -> SandboxResult:
    stdout, stderr = bytes(io.out[io.stdout_fd]), bytes(io.out[io.stderr_fd])
    try:  # written only by the supervisor, which the box cannot reach
        status = marshal.loads(bytes(io.out[io.status_fd])) if io.out[io.status_fd] else {}
    except (EOFError, ValueError, TypeError):
        status = {}
    if "setup_error" in status:
        raise SandboxSetupError(status["setup_error"])
    if "wait_status" not in status:
        if killed is None and isolate:
            raise SandboxSetupError(f"supervisor died: {stderr[-2000:].decode(errors='replace')}")
        reason = killed or "supervisor_lost"
        return SandboxResult(None, stdout, stderr, reason, wall, io.truncated, 0.0, isolate)
    code = os.waitstatus_to_exitcode(status["wait_status"])
    cpu = float(status["cpu"])
    over = status.get("over")
    if over is not None and killed is None:
        killed = "budget"
    if killed is None and code < 0:
        sig = -code
        if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds):
            killed = "cpu_limit"
        elif sig == signal.SIGXFSZ:
            killed = "file_size_limit"
        else:
            killed = f"signal:{sig}"
    elif killed is None and code != 0 and stderr.rstrip().endswith(b"MemoryError"):
        killed = "memory_limit"
    if oom and killed == "signal:9":
        killed = "memory_limit"  # the box's cgroup went over memory_mb (its OOM killer acts with SIGKILL)
    marks = tuple((int(a), int(b)) for a, b in status.get("marks") or ())
    return SandboxResult(code, stdout, stderr, killed, wall, io.truncated, cpu, isolate,
                         status.get("meter"), marks, status.get("end"), over)
