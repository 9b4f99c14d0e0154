"""The supervisor: the program coral.sandbox.box runs (as root, outside the box) to build one box.

`python -I -S -B -c BOOT STATUS_FD`; on stdin (from the parent, so trusted) this file's compiled
code, a marshalled config, then the box's own stdin. It unshares the namespaces, forks the box's
init, attaches the box's memory cgroup and counter, builds the box's root and drops privileges
in the child, meters and waits, and reports the box's real wait status over STATUS_FD, a pipe
only it holds. docs/sandbox.md has the full picture.

It starts with builtin modules and ctypes only (it runs once per candidate), so it imports
nothing from coral; the host side (coral.sandbox.box) imports its constants from here.
"""

import os
import sys

# Linux constants (uapi headers); ctypes has no names for them.
_CLONE_NEWNS, _CLONE_NEWUTS, _CLONE_NEWIPC = 0x00020000, 0x04000000, 0x08000000
_CLONE_NEWPID, _CLONE_NEWNET = 0x20000000, 0x40000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 32, 4096, 16384, 1 << 18
_MNT_DETACH = 2
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_ADDR_NO_RANDOMIZE = 0x0040000
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41, "riscv64": 41, "ppc64le": 203, "s390x": 217}
BOX_WORKDIR = "/box"  # the working directory inside the box


def _libc():
    import ctypes  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

    return ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        import ctypes  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def _read_exact(fd: int, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError("config truncated")
        buf += chunk
    return bytes(buf)


def _supervisor_main(status_fd: int) -> None:
    import _signal  # type: ignore[import-not-found]  # builtin C module without a stub; `signal` imports enum
    import marshal  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

    def report(**status: object) -> None:
        os.write(status_fd, marshal.dumps(status))

    cfg = marshal.loads(_read_exact(0, int.from_bytes(_read_exact(0, 8), "big")))
    if sys.platform.startswith("linux"):  # if the evaluator dies, take the box down with us
        _check(_libc().prctl(_PR_SET_PDEATHSIG, _signal.SIGTERM, 0, 0, 0), "prctl")
    if cfg["isolate"]:
        flags = _CLONE_NEWNS | _CLONE_NEWPID | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS
        try:
            _check(_libc().unshare(flags), "unshare")
        except OSError as exc:
            report(setup_error=str(exc))
            return
    err_r, err_w = os.pipe()  # close-on-exec: EOF without data means the exec happened
    meter = cfg["meter"]
    go_r, go_w = os.pipe()  # the child waits on it until its cgroup and counter are attached
    if meter is not None:
        mark_r, mark_w = os.pipe()  # the box's marks (fd MARK_FD in the box)
        ack_r, ack_w = os.pipe()  # one byte per mark, once counted (fd ACK_FD in the box)
    child = 0

    def on_term(signum: int, frame: object) -> None:
        if child:  # box PID 1: killing it makes the kernel kill the rest of its namespace
            for kill in (os.kill, os.killpg):
                try:
                    kill(child, _signal.SIGKILL)
                except OSError:
                    pass

    _signal.signal(_signal.SIGTERM, on_term)
    child = os.fork()
    if child == 0:
        os.close(err_r)
        os.close(status_fd)
        try:
            os.close(go_w)
            if os.read(go_r, 1) != b"g":  # counted and contained from here on
                raise OSError("the supervisor could not attach the box's cgroup or counter")
            os.close(go_r)
            if meter is not None:
                import fcntl

                os.close(mark_r)
                os.close(ack_w)
                # Out of the way of fds 3 and 4 first, then onto them (inheritable).
                high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (err_w, mark_w, ack_r)]
                for fd in (err_w, mark_w, ack_r):
                    os.close(fd)
                err_w = high[0]
                os.dup2(high[1], MARK_FD)
                os.dup2(high[2], ACK_FD)
                os.close(high[1])
                os.close(high[2])
            _box_exec(cfg)
        except BaseException as exc:  # anything here is a setup failure
            os.write(err_w, f"{type(exc).__name__}: {exc}".encode())
        os._exit(127)
    os.close(err_w)
    os.close(go_r)
    counter, kind = -1, None
    try:
        if cfg["cgroup"] is not None:
            _join_cgroup(cfg["cgroup"], child, cfg["limits"]["memory_mb"])
        if meter is not None:
            os.close(mark_w)
            os.close(ack_r)
            os.set_blocking(ack_w, False)
            counter, kind = _open_counter(child, meter["counters"])
        os.write(go_w, b"g")
    except OSError:
        pass  # the child reads EOF and reports the setup failure
    os.close(go_w)
    err = b""
    while chunk := os.read(err_r, 4096):
        err += chunk
    marks: list = []
    over = None
    if meter is not None and not err:
        over = _meter_loop(child, counter, kind, mark_r, ack_w, meter, marks)
    # Wait without reaping first: until it is reaped the pid (and its group id) cannot be
    # reused, so neither on_term nor the sweep below can hit an unrelated process.
    if hasattr(os, "waitid"):  # not on every Unix
        os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
    if not cfg["isolate"]:  # no PID namespace: sweep the box's process group ourselves
        try:
            os.killpg(child, _signal.SIGKILL)
        except OSError:
            pass
    _signal.signal(_signal.SIGTERM, _signal.SIG_IGN)
    _, wait_status, usage = os.wait4(child, 0)
    if err:
        report(setup_error=err.decode(errors="replace"))
    else:
        # Read after the wait: counts of the box's exited processes are folded in by then.
        end = _read_counter(counter) if counter >= 0 else None
        report(wait_status=wait_status, cpu=usage.ru_utime + usage.ru_stime, meter=kind, marks=marks,
               end=end, over=over)


# A memory cgroup per box: memory_mb bounds all of the box's processes together, with their
# shared memory (SysV, memfd) and tmpfs pages, where RLIMIT_AS bounds each process alone
# (three processes held 2.9 GB of a 1 GB box). cgroup v1 (memory controller) or v2.
def _join_cgroup(spec: list, child: int, memory_mb: int) -> None:
    """Make the box's cgroup (named after this supervisor's pid) and put the box in it. The
    parent removes it after the supervisor exits: pivot_root in the box moves this process's
    root too, so the cgroup folder is out of its reach by then."""
    base, version = spec
    group = f"{base}/coral-box-{os.getpid()}"
    try:
        os.mkdir(group, 0o700)
    except FileExistsError:  # left by an earlier supervisor with our pid, whose box is gone
        os.rmdir(group)
        os.mkdir(group, 0o700)
    limit = str(memory_mb << 20).encode()
    files = (("memory.limit_in_bytes", True), ("memory.memsw.limit_in_bytes", False)) if version == 1 else (
        ("memory.max", True), ("memory.swap.max", False))
    for name, required in files:
        try:
            fd = os.open(f"{group}/{name}", os.O_WRONLY)
        except FileNotFoundError:  # swap accounting off: there is no swap to escape to
            if required:
                raise
            continue
        try:
            os.write(fd, limit if version == 1 or name == "memory.max" else b"0")
        finally:
            os.close(fd)
    fd = os.open(f"{group}/cgroup.procs", os.O_WRONLY)
    try:
        os.write(fd, str(child).encode())
    finally:
        os.close(fd)


# perf_event_open(2): the kernel counts for the box's whole process tree (inherit), outside
# anything the box can reach. Hardware instructions where the CPU exposes a counter to us,
# else the task clock (CPU nanoseconds); the Meter names which of them may be tried. Without
# either (gVisor has no perf_event_open) the box's cost is its CPU time from wait4: "cpu-time".
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241, "riscv64": 241, "ppc64le": 319, "s390x": 331}
_COUNTERS = (("instructions", 0, 1), ("task-clock", 1, 1))  # (kind, perf type, perf config)
# Meter units per CPU-second, to turn budgets (CPU-seconds) into counts. Instructions: a
# rough CPython rate, so a budget in instructions is about, not exactly, that many seconds.
METER_RATES = {"instructions": 2e9, "task-clock": 1e9, "cpu-time": 1e9}
MARK_FD = 3  # in the box: where the harness writes its marks (one decimal label per line)
ACK_FD = 4  # in the box: a byte arrives here once a mark is counted


def _open_counter(pid: int, allowed: list) -> tuple[int, str | None]:
    number = _SYS_PERF_EVENT_OPEN.get(os.uname().machine)
    if number is None or not sys.platform.startswith("linux"):
        return -1, None
    import ctypes  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

    libc = _libc()
    for kind, type_, config in _COUNTERS:
        if kind not in allowed:
            continue
        attr = bytearray(128)  # perf_event_attr, PERF_ATTR_SIZE_VER7; the rest stays zero
        attr[0:4] = type_.to_bytes(4, sys.byteorder)
        attr[4:8] = len(attr).to_bytes(4, sys.byteorder)
        attr[8:16] = config.to_bytes(8, sys.byteorder)
        flags = (1 << 1) | (1 << 5) | (1 << 6)  # inherit, exclude_kernel, exclude_hv
        attr[40:48] = flags.to_bytes(8, sys.byteorder)
        buf = (ctypes.c_char * len(attr)).from_buffer(attr)
        fd = libc.syscall(number, buf, pid, -1, -1, 8)  # PERF_FLAG_FD_CLOEXEC
        if fd >= 0:
            return fd, kind
    return -1, None


def _read_counter(fd: int) -> int:
    return int.from_bytes(os.read(fd, 8), sys.byteorder)


def _meter_loop(
    child: int, counter: int, kind: str | None, mark_r: int, ack_w: int, meter: dict, marks: list
) -> object:
    """Record the count at each mark; SIGKILL the box when a segment overruns its budget.

    Marks are decimal labels, strictly increasing (others are ignored), at most max_marks;
    each is acknowledged with a byte, so a harness that waits for it is counted exactly.
    Returns the label of the segment that overran, or None. The box may write marks itself,
    but that only moves cost between its own segments: the total is the kernel's.
    """
    import select  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

    try:
        pidfd = os.pidfd_open(child)
    except (AttributeError, OSError):
        pidfd = -1
    scale = METER_RATES.get(kind or "", 1e9)  # budgets come in CPU-seconds
    budgets = {k: v * scale for k, v in meter["budgets"].items()}
    default, cap = meter["default"] * scale, meter["max_marks"]
    rate = scale * 10  # how fast the count can grow (a few busy threads); sets the poll interval
    fds = [mark_r] + ([pidfd] if pidfd >= 0 else [])
    pending, label, start = b"", None, 0
    # What the supervisor reads is bounded: past what max_marks honest marks take, the pipe is
    # closed (the box's writes then fail with EPIPE), so a flood costs the box, not us.
    room = 32 * cap + 4096
    try:
        while True:
            timeout = 0.05
            if counter >= 0 and label is not None:
                left = budgets.get(label, default) - (_read_counter(counter) - start)
                timeout = min(0.05, max(0.001, left / rate))
            ready = select.select(fds, [], [], timeout)[0]
            value = _read_counter(counter) if counter >= 0 else 0
            if mark_r in ready:
                data = os.read(mark_r, 4096)
                room -= len(data)
                if not data or room < 0:
                    fds.remove(mark_r)
                    os.close(mark_r)
                pending += data
                *lines, pending = pending.split(b"\n")
                pending = pending[-32:]
                for line in lines:
                    try:
                        n = int(line)
                    except ValueError:
                        continue
                    if len(marks) < cap and (label is None or n > label):
                        marks.append((n, value))
                        label, start = n, value
                if lines:
                    try:
                        os.write(ack_w, b"a" * len(lines))
                    except OSError:  # nobody reads them (BlockingIOError: a full pipe)
                        pass
            if pidfd < 0 and os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return None
            if pidfd in ready:
                return None
            if counter >= 0 and label is not None and value - start > budgets.get(label, default):
                os.kill(child, 9)  # box PID 1: the kernel takes the rest of its namespace
                return label
    finally:
        if pidfd >= 0:
            os.close(pidfd)


def _box_exec(cfg: dict) -> None:
    """In the forked child: build the box, drop privileges, exec. Returns only by raising."""
    import _signal  # the supervisor imports only what it needs before it execs (docs/sandbox.md)
    import resource  # the supervisor imports only what it needs before it execs (docs/sandbox.md)

    lim, uid = cfg["limits"], cfg["uid"]
    if cfg["isolate"]:
        _build_root(cfg)
        _libc().sethostname(b"box", 3)
        os.chdir(BOX_WORKDIR)
    else:
        _write_files(cfg["workdir"], cfg["files"], uid)
        os.chdir(cfg["workdir"])
    os.setsid()
    linux = sys.platform.startswith("linux")
    if linux:
        # Same addresses on every run: id()-based hashes (sets of graph nodes) iterate in the
        # same order, so step counts repeat exactly.
        _libc().personality(_ADDR_NO_RANDOMIZE)
    mb, cpu = 1 << 20, max(1, int(lim["cpu_seconds"] + 0.999))
    for res, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL 1 s later
        (resource.RLIMIT_AS, (lim["memory_mb"] * mb,) * 2),
        (resource.RLIMIT_FSIZE, (lim["max_file_mb"] * mb,) * 2),
        (resource.RLIMIT_NPROC, (lim["max_processes"],) * 2),
        (resource.RLIMIT_NOFILE, (256, 256)),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(res, value)
    if uid is not None:
        os.setgroups([])
        os.setgid(uid)  # as root these set the real, effective and saved ids alike
        os.setuid(uid)
    if linux:
        libc = _libc()
        _check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(no_new_privs)")
        # Set after the uid change, which clears it.
        _check(libc.prctl(_PR_SET_PDEATHSIG, _signal.SIGKILL, 0, 0, 0), "prctl(pdeathsig)")
        _install_filter(libc, cfg["meter"] is not None)
    for sig in (_signal.SIGPIPE, _signal.SIGXFSZ, _signal.SIGTERM):
        _signal.signal(sig, _signal.SIG_DFL)  # ignored signals would survive the exec
    os.execve(cfg["argv"][0], cfg["argv"], cfg["env"])


# seccomp, in every box: namespaces, mounts and the kernel keyring are out of reach (a user
# namespace could mount an unsized tmpfs; a key in the per-uid keyring outlived its box and was
# read by the next box with the same uid), and with a meter the one syscall that could stop the
# supervisor's counter from inside: prctl(PR_TASK_PERF_EVENTS_DISABLE), which disables every
# counter attached to the caller, whoever opened it. These fail with EPERM; another ABI's
# syscalls (x32, i386) kill. clone3 says ENOSYS (its flags are out of the filter's reach), so
# the C library falls back to clone, whose namespace flags are checked.
_SECCOMP_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}  # AUDIT_ARCH
_SYSCALLS = {  # name: (x86_64, aarch64)
    "prctl": (157, 167), "clone": (56, 220), "clone3": (435, 435), "unshare": (272, 97), "setns": (308, 268),
    "mount": (165, 40), "umount2": (166, 39), "pivot_root": (155, 41), "open_tree": (428, 428),
    "move_mount": (429, 429), "fsopen": (430, 430), "fsconfig": (431, 431), "fsmount": (432, 432),
    "mount_setattr": (442, 442), "add_key": (248, 217), "request_key": (249, 218), "keyctl": (250, 219),
}
_DENIED = ("unshare", "setns", "mount", "umount2", "pivot_root", "open_tree", "move_mount", "fsopen", "fsconfig",
           "fsmount", "mount_setattr", "add_key", "request_key", "keyctl")
_CLONE_NAMESPACES = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000
_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 22, 2
_PR_TASK_PERF_EVENTS_DISABLE, _PR_TASK_PERF_EVENTS_ENABLE = 31, 32


def _filter_program(machine: str, meter: bool) -> list:
    """The classic-BPF program of the box's seccomp filter, or [] where the numbers are unknown."""
    arch = _SECCOMP_ARCH.get(machine)
    if arch is None:
        return []
    col = 0 if machine == "x86_64" else 1
    nr = {name: numbers[col] for name, numbers in _SYSCALLS.items()}
    ld, jeq, jset, ret = 0x20, 0x15, 0x45, 0x06
    allow, kill = 0x7FFF0000, 0x80000000
    eperm, enosys = 0x00050000 | 1, 0x00050000 | 38
    program = [
        (ld, 0, 0, 4),  # seccomp_data.arch
        (jeq, 1, 0, arch),
        (ret, 0, 0, kill),
        (ld, 0, 0, 0),  # seccomp_data.nr
        (jset, 0, 1, 0x40000000),  # x32 numbers
        (ret, 0, 0, kill),
    ]
    for name in _DENIED:
        program += [(jeq, 0, 1, nr[name]), (ret, 0, 0, eperm)]
    program += [(jeq, 0, 1, nr["clone3"]), (ret, 0, 0, enosys)]
    program += [
        (jeq, 0, 4, nr["clone"]),
        (ld, 0, 0, 16),  # args[0], low 32 bits: the flags
        (jset, 0, 1, _CLONE_NAMESPACES),
        (ret, 0, 0, eperm),
        (ret, 0, 0, allow),
    ]
    if meter:
        program += [
            (jeq, 0, 5, nr["prctl"]),
            (ld, 0, 0, 16),  # args[0], low 32 bits
            (jeq, 2, 0, _PR_TASK_PERF_EVENTS_DISABLE),
            (jeq, 1, 0, _PR_TASK_PERF_EVENTS_ENABLE),
            (ret, 0, 0, allow),
            (ret, 0, 0, eperm),
        ]
    return [*program, (ret, 0, 0, allow)]


def _install_filter(libc, meter: bool) -> None:
    import ctypes

    program = _filter_program(os.uname().machine, meter)
    if not program:
        return  # unknown syscall numbers: documented gap (docs/sandbox.md)

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]

    class Program(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(Filter))]

    filters = (Filter * len(program))(*[Filter(*f) for f in program])
    prog = Program(len(program), filters)
    _check(libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0), "prctl(seccomp)")


def _mount(src: str | None, dst: str, fstype: str | None, flags: int, data: str | None) -> None:
    def enc(s: str | None) -> bytes | None:
        return s.encode() if s is not None else None

    _check(_libc().mount(enc(src), enc(dst), enc(fstype), flags, enc(data)), f"mount {dst}")


def _build_root(cfg: dict) -> None:
    """A tmpfs root holding read-only binds of what the interpreter needs; pivot into it."""
    lim, uid = cfg["limits"], cfg["uid"]
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE, None)  # nothing we mount reaches the host
    root = "/tmp"  # any existing directory will do: what we mount here exists only in here
    _mount("coral-root", root, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    ro = _MS_BIND | _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV
    for path in cfg["bind"]:
        target = root + path
        os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
        if os.path.islink(path):  # merged-/usr symlinks such as /lib -> usr/lib
            os.symlink(os.readlink(path), target)
            continue
        if os.path.isdir(path):
            os.makedirs(target, mode=0o755, exist_ok=True)
        else:
            open(target, "wb").close()  # an empty file as the mount point
        _mount(path, target, None, _MS_BIND, None)
        _mount(None, target, None, ro, None)
    os.makedirs(root + "/dev", mode=0o755)
    for name in ("null", "zero", "random", "urandom"):
        open(f"{root}/dev/{name}", "wb").close()
        _mount(f"/dev/{name}", f"{root}/dev/{name}", None, _MS_BIND, None)
    size = max(4, 2 * lim["max_file_mb"])  # bounds a disk fill: tmpfs pages are memory
    owner = f",uid={uid},gid={uid}" if uid is not None else ""
    for path, mode in (("/tmp", "1777"), (BOX_WORKDIR, "0700")):
        os.makedirs(root + path, mode=0o755)
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        _mount("coral-box", root + path, "tmpfs", flags, f"size={size}m,mode={mode}{owner}")
    _write_files(root + BOX_WORKDIR, cfg["files"], uid)
    _mount(None, root, None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV, None)
    os.chdir(root)
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        os.chroot(".")  # unknown syscall number: the old root stays mounted but unreachable
    else:
        # pivot_root(".", ".") stacks the old root under the new one; detaching it leaves the
        # box with no path to the host filesystem at all.
        _check(_libc().syscall(number, b".", b"."), "pivot_root")
        _check(_libc().umount2(b".", _MNT_DETACH), "umount old root")
    os.chdir("/")


def _write_files(base: str, files: dict[str, bytes], uid: int | None) -> None:
    for name, data in files.items():
        path = os.path.join(base, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(data)
    if uid is not None:
        for dirpath, _, names in os.walk(base):
            os.chown(dirpath, uid, uid)
            for name in names:
                os.chown(os.path.join(dirpath, name), uid, uid)


if __name__ == "__main__":
    _supervisor_main(int(sys.argv[1]))
    os._exit(0)  # interpreter teardown would add ~20 ms to every box
