"""coral.sandbox.box.run_sandboxed: what a box sees, and how each limit ends it."""

from __future__ import annotations

import os
import sys

import pytest

from coral.sandbox.box import (
    SandboxLimits,
    SandboxSetupError,
    isolation_available,
    python_executable,
    run_sandboxed,
)

# Generous: the machine is shared and may be loaded; no test asserts on time.
LIMITS = SandboxLimits(
    cpu_seconds=10, wall_seconds=60, memory_mb=256, max_processes=16, max_file_mb=4, max_output_bytes=1 << 20
)
needs_isolation = pytest.mark.skipif(not isolation_available(), reason="no namespaces here (docs/sandbox.md)")


def py(code: str, files: dict[str, bytes] | None = None, stdin: bytes = b"", limits: SandboxLimits = LIMITS):
    return run_sandboxed([python_executable(), "-S", "-c", code], files or {}, limits, stdin)


def test_runs_with_files_stdin_and_an_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_FAKE_TOKEN", "hunter2")
    code = (
        "import os, sys\n"
        "print(open('data.bin', 'rb').read().hex(), sorted(os.listdir('.')))\n"
        "print(sys.stdin.read())\n"
        "print(sorted(os.environ))\n"
    )
    res = py(code, {"data.bin": b"\x00\xff", "sub/x.txt": b"x"}, stdin=b"from stdin")
    assert res.returncode == 0 and res.killed_reason is None, res.stderr
    lines = res.stdout.decode().splitlines()
    assert lines[0] == "00ff ['data.bin', 'sub']"
    assert lines[1] == "from stdin"
    env = eval(lines[2])  # our own print of a list of str
    assert "CORAL_FAKE_TOKEN" not in env
    assert set(env) <= {
        "PATH",
        "HOME",
        "TMPDIR",
        "LANG",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONHASHSEED",
        "PYTHONIOENCODING",
    }


def test_exit_code_and_signal_are_reported() -> None:
    assert py("raise SystemExit(3)").returncode == 3
    res = py("import ctypes; ctypes.string_at(0)")
    assert res.returncode == -11 and res.killed_reason == "signal:11"


@needs_isolation
def test_box_is_isolated_from_host() -> None:
    code = (
        "import os, socket\n"
        "print(os.getuid(), os.getgid(), os.getpid(), socket.gethostname())\n"
        "print(sorted(os.listdir('/')), os.getcwd(), os.listdir('/tmp'))\n"
        "print(os.path.exists('/work'), os.path.exists('/proc/1'), os.listdir('/root'))\n"
        "s = socket.socket()\n"
        "try:\n"
        "    s.connect(('127.0.0.1', 9)); print('net')\n"
        "except OSError as e:\n"
        "    print('nonet', e.errno)\n"
    )
    res = py(code)
    assert res.isolated and res.returncode == 0, res.stderr
    ids, fs, hidden, net = res.stdout.decode().splitlines()
    uid, gid, pid, host = ids.split()
    assert int(uid) != 0 and int(gid) != 0 and pid == "1" and host == "box"
    assert "work" not in fs and "/box" in fs and fs.endswith("[]")
    assert hidden == "False False ['.pyenv']"
    assert net.startswith("nonet")


@needs_isolation
def test_filesystem_outside_box_dirs_is_read_only() -> None:
    code = (
        "import os\n"
        "for path in ('/usr/coral_probe', '/coral_probe', sys.prefix + '/coral_probe'):\n"
        "    try:\n"
        "        open(path, 'w'); print('wrote', path)\n"
        "    except OSError as e:\n"
        "        print('denied', e.errno)\n"
        "open('/tmp/ok', 'w').write('x'); open('ok', 'w').write('x'); print('scratch ok')\n"
    )
    res = py("import sys\n" + code)
    out = res.stdout.decode()
    assert "wrote" not in out and out.count("denied") == 3 and "scratch ok" in out, res.stderr
    assert not os.path.exists("/usr/coral_probe") and not os.path.exists(sys.prefix + "/coral_probe")


def test_wall_clock_limit_kills_the_box() -> None:
    limits = SandboxLimits(10, 3, 256, 16, 4, 1 << 20)
    res = py("import time; print('started', flush=True); time.sleep(600)", limits=limits)
    assert res.killed_reason == "wall_timeout"
    assert res.stdout == b"started\n"  # what came before the kill is kept


def test_cpu_limit_kills_the_box() -> None:
    limits = SandboxLimits(1, 60, 256, 16, 4, 1 << 20)
    res = py("import signal; signal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True: pass", limits=limits)
    assert res.killed_reason == "cpu_limit" and res.cpu_seconds >= 1


def test_output_is_capped() -> None:
    limits = SandboxLimits(10, 60, 256, 16, 4, 10_000)
    res = py("import os\nwhile True: os.write(1, b'x' * 4096)", limits=limits)
    assert res.killed_reason == "output_limit" and res.output_truncated
    assert len(res.stdout) == 10_000


def test_memory_limit_is_a_memory_error() -> None:
    res = py("b = bytearray(1 << 30)")
    assert res.returncode == 1 and res.killed_reason == "memory_limit"


def test_file_size_limit() -> None:
    code = "try:\n    open('big', 'wb').write(b'x' * (5 << 20))\nexcept OSError as e:\n    print(e.errno)"
    res = py(code)  # 4 MiB per file
    assert res.returncode == 0 and res.stdout.strip() == b"27", res.stderr  # EFBIG


@needs_isolation  # without namespaces RLIMIT_NPROC counts all the user's processes
def test_process_limit() -> None:
    code = (
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(60)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    print(n)\n"
    )
    res = py(code)
    assert res.returncode == 0 and 0 < int(res.stdout) < LIMITS.max_processes, res.stderr


def test_bad_file_names_are_refused() -> None:
    for name in ("/etc/passwd", "../x", "a/../../x", ""):
        with pytest.raises(ValueError):
            run_sandboxed([python_executable(), "-c", "pass"], {name: b""}, LIMITS)


def test_setup_failure_raises() -> None:
    with pytest.raises(SandboxSetupError):
        run_sandboxed(["/nonexistent/python"], {}, LIMITS)
