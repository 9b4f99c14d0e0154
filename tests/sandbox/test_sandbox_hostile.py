"""Hostile candidates, each run through run_candidate on a small problem.

For every one: its cases fail with a reason, this process and a sentinel process outside the
box live on, files outside the box are unchanged, and no process of the box is left behind.
Where a candidate *could* pass, it returns the expected answer only if its attack worked, so
a hole in the box shows up as a passed case.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral.benchmark.problem import JsonCase, Problem
from coral.sandbox import objectives, record
from coral.sandbox.box import isolation_available, memory_cgroup, sandbox_uid_range
from coral.sandbox.runner import BUDGET_REASON, CandidateRun, RunnerLimits, run_candidate

REPO = Path(__file__).resolve().parents[2]
SECRET = "REFERENCE-SECRET-5b1e9a"
# Small budgets keep the runaway cases quick; the safety nets are generous for a loaded machine.
LIMITS = RunnerLimits(budget_floor=0.1, wall_seconds=60, cpu_seconds=20)
isolated = pytest.mark.skipif(not isolation_available(), reason="no namespaces here (docs/sandbox.md)")
needs_meter = pytest.mark.skipif(
    run_candidate(Problem("f", "", "def f(a, b):\n    return a + b\n", (JsonCase(0, [1, 2], 3),)),
                  "def f(a, b):\n    return a + b\n").meter is None,
    reason="no kernel counter here (docs/sandbox.md)",
)
# Candidates that could hurt the host check first that they do not run as root (belt and
# braces: the sandbox never runs anything as root).
NOT_ROOT = "    if os.getuid() == 0:\n        return 'refusing to run as root'\n"


def problem(expected: object = 3, args: list | None = None, cases: int = 1) -> Problem:
    """f(*args) -> expected, `cases` times."""
    json_cases = tuple(JsonCase(i, args if args is not None else [1, 2], expected) for i in range(cases))
    return Problem("f", "", "def f(a, b):\n    return a + b\n", json_cases)


def run(source: str, expected: object = 3, args: list | None = None, cases: int = 1, **limits: float) -> CandidateRun:
    lim = RunnerLimits(**{**LIMITS.__dict__, **limits})
    return run_candidate(problem(expected, args, cases), source, lim)


def assert_failed(result: CandidateRun, reason: str | None = None) -> None:
    assert result.total > 0 and result.passed == 0, result.cases
    for case in result.cases:
        assert case.reason, case
        if reason is not None:
            assert case.reason.startswith(reason), case


# --- what must hold after every test --------------------------------------------------------


@pytest.fixture(scope="module")
def outside() -> Iterator[Path]:
    """A world-readable, world-writable tree standing for the benchmark directory."""
    root = Path(tempfile.mkdtemp(prefix="coral-hostile-", dir="/tmp"))
    (root / "correct_python_programs").mkdir()
    (root / "correct_python_programs" / "f.py").write_text(f"# {SECRET}\ndef f(a, b):\n    return a + b\n")
    (root / "json_testcases").mkdir()
    (root / "json_testcases" / "f.json").write_text(f'[[1, 2], "{SECRET}"]\n')
    (root / "victim.txt").write_text("do not delete")
    for path in [root, *root.rglob("*")]:
        path.chmod(0o777 if path.is_dir() else 0o666)
    yield root
    shutil.rmtree(root)


def fingerprint(root: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def sentinel() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    yield proc
    proc.kill()
    proc.wait()


def box_processes() -> list[str]:
    """Processes running as any uid our boxes use, or carrying the test marker."""
    uids = sandbox_uid_range()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            status = Path(f"/proc/{entry}/status").read_text()
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        uid = int(next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1])
        if uid in uids or b"coral-hostile-marker" in cmdline:
            found.append(f"{entry}: {cmdline!r}")
    return found


@pytest.fixture(autouse=True)
def contained(outside: Path, sentinel: subprocess.Popen[bytes]) -> Iterator[None]:
    before = fingerprint(outside)
    yield
    assert sentinel.poll() is None, "a process outside the box was killed"
    assert fingerprint(outside) == before, "files outside the box changed"
    deadline = time.monotonic() + 10  # a dying process may take a moment to be reaped
    while box_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert box_processes() == []


def test_outside_tree_is_open_to_any_user(outside: Path) -> None:
    """Only the box stands between a candidate and these files (the tests below mean something)."""
    for path in [Path("/tmp"), outside, *outside.rglob("*")]:
        mode = path.stat().st_mode
        assert mode & stat.S_IROTH and (mode & stat.S_IXOTH or not path.is_dir())


# --- runaway code ---------------------------------------------------------------------------


def test_infinite_loop_at_import() -> None:
    assert_failed(run("while True:\n    pass\n"), "budget exceeded while importing")


def test_infinite_loop_at_call() -> None:
    result = run("def f(a, b):\n    while True: pass\n", cases=2)
    assert_failed(result, "budget exceeded")


def test_sleep_forever() -> None:
    assert_failed(run("import time\ndef f(a, b):\n    time.sleep(10**6)\n", wall_seconds=5), "killed: wall_timeout")


def test_cpu_burn_in_c_code_ignoring_sigxcpu() -> None:
    src = "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\ndef f(a, b):\n    return sum(range(10**13))\n"
    result = run(src, cpu_seconds=2)
    # The kernel's count stops it at its budget; without a counter, the CPU limit does.
    assert_failed(result, "budget exceeded" if result.meter else "killed: cpu_limit")


def test_ignoring_signals_then_looping() -> None:
    src = (
        "import signal\n"
        "for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGXCPU, signal.SIGALRM):\n"
        "    signal.signal(s, signal.SIG_IGN)\n"
        "def f(a, b):\n"
        "    while True:\n"
        "        try:\n"
        "            pass\n"
        "        except BaseException:\n"
        "            pass\n"
    )
    assert_failed(run(src), "budget exceeded")


def test_deep_recursion() -> None:
    assert_failed(run("def f(a, b):\n    return f(a, b)\n"), "RecursionError")


def test_deep_recursion_past_the_c_stack() -> None:
    # Recursing through a builtin (map) nests C frames until the C stack overflows.
    src = "import sys\nsys.setrecursionlimit(10**7)\ndef f(a, b):\n    return list(map(f, [a], [b]))\n"
    assert_failed(run(src, cases=2), "crashed: signal 11")


@isolated  # without namespaces RLIMIT_NPROC is shared with the user's other processes
def test_many_spinning_threads() -> None:
    src = (
        "import threading\n"
        "def spin():\n"
        "    while True:\n"
        "        pass\n"
        "def f(a, b):\n"
        "    for _ in range(200):\n"
        "        threading.Thread(target=spin, daemon=True).start()\n"
        "    return a + b\n"
    )
    assert_failed(run(src, cases=2))


# --- resources ------------------------------------------------------------------------------


@isolated  # without namespaces RLIMIT_NPROC is shared with the user's other processes
def test_fork_bomb() -> None:
    assert_failed(run("import os\ndef f(a, b):\n" + NOT_ROOT + "    while True:\n        os.fork()\n"))


def test_memory_bomb() -> None:
    assert_failed(run("def f(a, b):\n    return len(bytearray(10**11))\n", expected=10**11), "MemoryError")


def test_growing_memory() -> None:
    src = "def f(a, b):\n    xs = []\n    while True:\n        xs.append(' ' * 10**7)\n"
    assert_failed(run(src, budget_floor=5), "MemoryError")


@isolated  # without namespaces the box writes to the host's /tmp
def test_disk_fill() -> None:
    src = (
        "import os\n"
        "def f(a, b):\n"
        "    n = 0\n"
        "    for d in ('.', '/tmp'):\n"
        "        for i in range(10**4):\n"
        "            try:\n"
        "                with open(os.path.join(d, f'fill{i}'), 'wb') as fh:\n"
        "                    fh.write(b'x' * (1 << 20))\n"
        "                n += 1\n"
        "            except OSError:\n"
        "                break\n"
        "    return 'filled' if n > 1000 else f'stopped at {n} MiB'\n"
    )
    assert_failed(run(src, expected="filled", budget_floor=5), "wrong answer")


def test_output_flood_on_stdout_and_stderr() -> None:
    src = (
        "import os, sys\ndef f(a, b):\n    while True:\n        print('x' * 10000)\n        os.write(2, b'y' * 10000)\n"
    )
    assert_failed(run(src), "budget exceeded")


def test_output_flood_on_every_descriptor() -> None:
    src = (
        "import os\n"
        "def f(a, b):\n"
        "    while True:\n"
        "        for fd in range(64):\n"
        "            try:\n"
        "                os.write(fd, b'\\xff\\xfe garbage\\n' * 4096)\n"
        "            except OSError:\n"
        "                pass\n"
    )
    assert_failed(run(src, budget_floor=20), "killed: output_limit")


def test_non_utf8_output_and_result() -> None:
    src = (
        "import os, sys\n"
        "def f(a, b):\n"
        "    sys.stdout.buffer.write(b'\\xff\\xfe\\x00' * 100)\n"
        "    for fd in range(3, 20):\n"
        "        try:\n"
        "            os.write(fd, b'\\xc3\\x28 not json\\n')\n"
        "        except OSError:\n"
        "            pass\n"
        "    return '\\udcff\\x00'\n"
    )
    assert_failed(run(src), "wrong answer")
    assert_failed(run("def f(a, b):\n    return b'\\xff'\n"), "returned a bytes")


def test_huge_return_value() -> None:
    assert_failed(run("def f(a, b):\n    return 'x' * (10**8)\n", budget_floor=5), "returned value too large")
    assert_failed(run("def f(a, b):\n    return [[[[]]]] * 10**6\n", budget_floor=5), "returned value too large")


# --- escaping the box -----------------------------------------------------------------------


@isolated
def test_network_is_unreachable() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    src = (
        "import socket\n"
        "def f(port, b):\n"
        "    for host in ('127.0.0.1', '10.0.0.1', '1.1.1.1'):\n"
        "        try:\n"
        "            socket.create_connection((host, port), timeout=2).close()\n"
        "            return 'connected'\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 'no network'\n"
    )
    try:
        assert_failed(run(src, expected="connected", args=[port, 0]), "wrong answer")
        with pytest.raises(TimeoutError):
            listener.accept()  # nobody ever connected
    finally:
        listener.close()


@isolated
def test_reading_the_reference_solution(outside: Path) -> None:
    reference = outside / "correct_python_programs" / "f.py"
    src = (
        "import os\n"
        "def f(path, b):\n"
        "    try:\n"
        "        return open(path).read()\n"
        "    except OSError:\n"
        "        pass\n"
        "    for root, dirs, files in os.walk('/'):\n"
        "        for name in files:\n"
        "            if name == 'f.py' or name.endswith('.json'):\n"
        "                try:\n"
        "                    return open(os.path.join(root, name)).read()\n"
        "                except OSError:\n"
        "                    pass\n"
        "    return 'not found'\n"
    )
    result = run(src, expected=reference.read_text(), args=[str(reference), 0], budget_floor=20)
    assert_failed(result, "wrong answer")


@isolated
def test_seeing_the_repository_or_host_tmp(outside: Path) -> None:
    src = (
        "import os\n"
        "def f(paths, b):\n"
        "    seen = [p for p in paths if os.path.exists(p)]\n"
        "    return 'leak' if seen else 'nothing seen'\n"
    )
    paths = [str(REPO), str(REPO / "coral" / "sandbox.py"), str(outside), "/work", "/root/.bashrc", "/proc/1"]
    assert_failed(run(src, expected="leak", args=[paths, 0]), "wrong answer")


def test_reading_expected_outputs(outside: Path) -> None:
    src = (
        "import gc, os\n"
        "def f(path, b):\n"
        "    try:\n"
        "        return open(path).read().split('\"')[1]\n"
        "    except OSError:\n"
        "        pass\n"
        "    for o in gc.get_objects():\n"  # the marker is built at run time, never bound
        "        if isinstance(o, (dict, list, tuple)) and ''.join(['REFERENCE-', 'SECRET']) in repr(o):\n"
        "            text = repr(o)\n"
        "            return text[text.index(''.join(['REFERENCE-', 'SECRET'])):][:23]\n"
        "    return 'not found'\n"
    )
    json_file = outside / "json_testcases" / "f.json"
    assert_failed(run(src, expected=SECRET, args=[str(json_file), 0], budget_floor=5), "wrong answer")


def test_reading_environment_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CORAL_TEST_SECRET", SECRET)
    src = "import os\ndef f(a, b):\n    return os.environ.get('CORAL_TEST_SECRET') or sorted(os.environ)\n"
    assert_failed(run(src, expected=SECRET), "wrong answer")


@isolated
def test_writing_outside_the_box(outside: Path) -> None:
    src = (
        "def f(path, b):\n"
        "    for p in (path, '/usr/coral-probe', '/coral-probe'):\n"
        "        try:\n"
        "            open(p, 'w').write('pwned')\n"
        "            return 'written'\n"
        "        except OSError:\n"
        "            pass\n"
        "    return 'refused'\n"
    )
    assert_failed(run(src, expected="written", args=[str(outside / "new.txt"), 0]), "wrong answer")
    assert not Path("/usr/coral-probe").exists() and not Path("/coral-probe").exists()


@isolated
def test_deleting_outside_the_box(outside: Path) -> None:
    src = (
        "import os\n"
        "def f(path, b):\n"
        "    try:\n"
        "        os.remove(path)\n"
        "        return 'deleted'\n"
        "    except OSError as e:\n"
        "        return str(e)\n"
    )
    assert_failed(run(src, expected="deleted", args=[str(outside / "victim.txt"), 0]), "wrong answer")


@isolated  # without namespaces the supervisor runs as the same user, and may be killed
def test_killing_the_parent() -> None:
    src = (
        "import os\n"
        "def f(a, b):\n" + NOT_ROOT + "    try:\n"
        "        os.kill(os.getppid(), 9)\n"
        "    except OSError:\n"
        "        pass\n"
        "    while True: pass\n"
    )
    assert_failed(run(src), "budget exceeded")


def test_killing_its_process_group() -> None:
    src = "import os\ndef f(a, b):\n" + NOT_ROOT + "    os.killpg(0, 9)\n    while True: pass\n"
    assert_failed(run(src))


@isolated
def test_kill_every_process_it_can() -> None:
    # Only ever run inside a PID namespace as an unprivileged uid: as root on the host this
    # would take the machine down.
    src = (
        "import os\n"
        "def f(a, b):\n" + NOT_ROOT + "    if os.getpid() != 1:\n"
        "        return 'not in its own PID namespace'\n"
        "    try:\n"
        "        os.kill(-1, 9)\n"
        "    except OSError:\n"
        "        pass\n"
        "    while True: pass\n"
    )
    assert_failed(run(src), "budget exceeded")


def test_sys_exit_and_os_exit() -> None:
    assert_failed(run("import sys\ndef f(a, b):\n    sys.exit(0)\n"), "SystemExit")
    assert_failed(run("import os\ndef f(a, b):\n    os._exit(0)\n", cases=2), "crashed: exit code 0")
    assert_failed(run("import os\nos._exit(0)\n"), "crashed while importing")


def test_segfault() -> None:
    assert_failed(run("import ctypes\ndef f(a, b):\n    return ctypes.string_at(0)\n", cases=2), "crashed: signal 11")


def test_daemonised_grandchild_is_gone_after_the_run() -> None:
    src = (
        "import os, sys\n"
        "def f(a, b):\n"
        "    if os.fork() == 0:\n"
        "        os.setsid()\n"
        "        if os.fork() == 0:\n"
        "            os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(600)',"
        " 'coral-hostile-marker'])\n"
        "        os._exit(0)\n"
        "    return 0\n"
    )
    assert_failed(run(src), "wrong answer")  # the fixture then finds no marker in /proc


# --- cheating -------------------------------------------------------------------------------


def test_always_equal_object_in_a_json_problem() -> None:
    src = "class Yes:\n    def __eq__(self, other):\n        return True\ndef f(a, b):\n    return Yes()\n"
    assert_failed(run(src), "returned a Yes")
    subclass = "class I(int):\n    def __eq__(self, other):\n        return True\ndef f(a, b):\n    return [I(0)]\n"
    assert_failed(run(subclass, expected=[3]), "returned a I")


def test_always_equal_object_in_a_pytest_problem() -> None:
    tests = (
        "import pytest\n"
        "from python_programs.f import f\n"
        "def test_add():\n"
        "    assert f(1, 2) == 3\n"
        "def test_list():\n"
        "    assert f([1], [2]) == [1, 2]\n"
    )
    prob = Problem("f", "", "def f(a, b):\n    return a + b\n", None, tests, {})
    src = "class Yes:\n    def __eq__(self, other):\n        return True\ndef f(a, b):\n    return Yes()\n"
    nested = "class Yes(list):\n    def __eq__(self, other):\n        return True\ndef f(a, b):\n    return [Yes()]\n"
    for result in (run_candidate(prob, src, LIMITS), run_candidate(prob, nested, LIMITS)):
        assert_failed(result, "line ")
        assert all(c.reason.endswith(": a Yes, not plain data") for c in result.cases), result.cases
    assert run_candidate(prob, "def f(a, b):\n    return a + b\n", LIMITS).fixed  # the problem is sound


def test_syntax_error() -> None:
    result = run("def f(a, b)\n    return a + b\n")
    assert_failed(result, "syntax error")
    assert not result.syntax_ok


# --- forging verdicts, reading expected values, tampering with the cost -------------------------
# Each candidate below is wrong when honest (it cannot compute the answers: they are arbitrary
# strings only the tests know) and tries to cheat; every one must score bugfix 0 and runtime 0.

PICK_TESTS = '''import pytest
from node import Node
from load_testdata import load_json_testcases

if pytest.use_correct:
    from correct_python_programs.pick import pick
else:
    from python_programs.pick import pick


def test_literal():
    """Expected output: EXPECTED-L1-9f3e"""
    node = Node("a")
    expected = "EXPECTED-L1-9f3e"
    assert pick(node, 1) == expected


def test_inline():
    assert pick(Node("b"), 2) == "EXPECTED-L2-77aa"


@pytest.mark.parametrize("key,expected", [(3, "EXPECTED-P3-1b2c"), (4, "EXPECTED-P4-5d6e")])
def test_param(key, expected):
    assert pick(Node("c"), key) == expected


@pytest.mark.parametrize("input_data,expected", load_json_testcases("pick"))
def test_json(input_data, expected):
    assert pick(Node("d"), *input_data) == pytest.approx(expected)
'''
PICK_ANSWERS = {1: "EXPECTED-L1-9f3e", 2: "EXPECTED-L2-77aa", 3: "EXPECTED-P3-1b2c", 4: "EXPECTED-P4-5d6e",
                5: "EXPECTED-J5-0a0a", 6: "EXPECTED-J6-0b0b"}
PICK_NODE = "class Node:\n    def __init__(self, value=None, successor=None):\n        self.value = value\n" \
    "        self.successor = successor\n"
PICK_LOADER = (
    "import json\nfrom pathlib import Path\n\n\ndef load_json_testcases(name):\n"
    "    path = Path(__file__).resolve().parent.parent / 'json_testcases' / f'{name}.json'\n"
    "    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]\n"
)
PICK = Problem(
    "pick", "def pick(node, key):\n    return 'no idea'\n",
    f"def pick(node, key):\n    return {PICK_ANSWERS!r}[key]\n",
    (JsonCase(0, [5], PICK_ANSWERS[5]), JsonCase(1, [6], PICK_ANSWERS[6])),
    PICK_TESTS, {"node.py": PICK_NODE, "load_testdata.py": PICK_LOADER},
)
JSON_PICK = Problem("f", "", "", tuple(JsonCase(i, [i, 0], f"EXPECTED-J{i}-c0de") for i in range(3)))
# Build the marker at run time: a literal would put it in the candidate's own source.
_PREFIX = "''.join(['EXPEC', 'TED-'])"

SEARCH_EVERYWHERE = (
    "import gc, os, sys, types\n"
    "def _strings(value, depth=0):\n"
    "    if depth > 4:\n"
    "        return\n"
    "    if isinstance(value, str):\n"
    "        yield value\n"
    "    elif isinstance(value, types.CodeType):\n"
    "        for c in value.co_consts:\n"
    "            yield from _strings(c, depth + 1)\n"
    "    elif isinstance(value, dict):\n"
    "        for k, v in list(value.items()):\n"
    "            yield from _strings(k, depth + 1)\n"
    "            yield from _strings(v, depth + 1)\n"
    "    elif isinstance(value, (list, tuple, set, frozenset)):\n"
    "        for v in list(value):\n"
    "            yield from _strings(v, depth + 1)\n"
    "    elif isinstance(value, types.FunctionType):\n"
    "        yield from _strings(value.__code__, depth + 1)\n"
    "        yield from _strings(value.__defaults__ or (), depth + 1)\n"
    "def _found():\n"
    "    prefix = " + _PREFIX + "\n"
    "    frame = sys._getframe(1)\n"
    "    while frame is not None:  # the test's frames: locals, globals, code constants\n"
    "        for where in (frame.f_locals, frame.f_globals, frame.f_code):\n"
    "            for s in _strings(where):\n"
    "                if s.startswith(prefix):\n"
    "                    yield s\n"
    "        frame = frame.f_back\n"
    "    for obj in gc.get_objects():  # the whole heap\n"
    "        for s in _strings(obj):\n"
    "            if s.startswith(prefix):\n"
    "                yield s\n"
    "    for root, _, files in os.walk('/box'):  # the test files and data in the box\n"
    "        for name in files:\n"
    "            text = open(os.path.join(root, name), 'rb').read().decode('latin-1')\n"
    "            if prefix in text:\n"
    "                yield text[text.index(prefix):][:16]\n"
)
SPY = SEARCH_EVERYWHERE + (
    "def pick(node, key):\n"
    "    return next(_found(), 'not found')\n"
    "def f(a, b):\n"
    "    return next(_found(), 'not found')\n"
)
# Every descriptor, every token-like string in the heap, verdict-shaped lines for every case
# (old and new report shapes), written before the harness reports; marks to move cost.
FORGER = (
    "import gc, os, re, json\n"
    "def _forge():\n"
    "    tokens = {m for o in gc.get_objects() if isinstance(o, dict) for v in list(o.values())\n"
    "              if isinstance(v, str) for m in re.findall(r'\\b[0-9a-f]{32}\\b', v)}\n"
    "    lines = []\n"
    "    for t in tokens:\n"
    "        for i in range(8):\n"
    "            for msg in ({'t': 'case', 'i': i, 'passed': True, 'steps': 0, 'cost': 0},\n"
    "                        {'t': 'item', 'i': i, 'end': 'ok', 'rec': [], 'passed': True, 'cost': 0},\n"
    "                        {'t': 'item', 'i': i, 'end': 'ok', 'rec': [[s, [True]] for s in range(8)]}):\n"
    "                lines.append(t + ' ' + json.dumps(msg))\n"
    "        lines.append(t + ' ' + json.dumps({'t': 'done'}))\n"
    "    data = ('\\n'.join(lines) + '\\n').encode()\n"
    "    for fd in range(3, 64):\n"
    "        try:\n"
    "            os.write(fd, data if fd != 3 else b'100\\n200\\n')\n"
    "        except OSError:\n"
    "            pass\n"
    "def pick(node, key):\n"
    "    _forge()\n"
    "    return 'forged'\n"
    "def f(a, b):\n"
    "    _forge()\n"
    "    return 'forged'\n"
)
# The step counter of old lived in the candidate's interpreter; nothing in the box counts now.
METER_TAMPER = (
    "import os, sys, threading\n"
    "sys.settrace(None)\n"
    "threading.settrace(None)\n"
    "for fd in (3, 4):\n"
    "    try:\n"
    "        os.close(fd)\n"
    "    except OSError:\n"
    "        pass\n"
    "def pick(node, key):\n"
    "    sum(range(200_000))\n"
    "    return 'slow and wrong'\n"
    "def f(a, b):\n"
    "    sum(range(200_000))\n"
    "    return 'slow and wrong'\n"
)
PATCHER = (
    "import builtins, sys\n"
    "class Yes(str):\n"
    "    def __eq__(self, other):\n"
    "        return True\n"
    "    __hash__ = str.__hash__\n"
    "def _patch():\n"
    "    builtins.isinstance = lambda *a: True\n"
    "    pytest = sys.modules.get('pytest')\n"
    "    if pytest is not None:\n"
    "        pytest.approx = lambda *a, **k: Yes()\n"
    "    for name, module in list(sys.modules.items()):\n"
    "        if name.startswith('test_'):\n"
    "            module._coral_record = lambda *a: None\n"
    "def pick(node, key):\n"
    "    _patch()\n"
    "    return Yes('x')\n"
    "def f(a, b):\n"
    "    _patch()\n"
    "    return Yes('x')\n"
)
ALWAYS_EQUAL = (
    "class Eq:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n"
    "def pick(node, key):\n    return Eq()\n"
    "def f(a, b):\n    return [Eq()]\n"
)
RAISING_EQ = (
    "class Boom:\n    def __eq__(self, other):\n        raise ValueError('no')\n    __hash__ = object.__hash__\n"
    "def pick(node, key):\n    return Boom()\n"
    "def f(a, b):\n    return {'k': Boom()}\n"
)
EXITING_EQ = (
    "import sys\n"
    "class Bye:\n    def __eq__(self, other):\n        sys.exit(0)\n    __hash__ = object.__hash__\n"
    "def pick(node, key):\n    return Bye()\n"
    "def f(a, b):\n    return Bye()\n"
)
CHEATS = {"spy": SPY, "forger": FORGER, "meter-tamper": METER_TAMPER, "patcher": PATCHER,
          "always-equal": ALWAYS_EQUAL, "raising-eq": RAISING_EQ, "exiting-eq": EXITING_EQ}


@isolated  # the spy walks the box's filesystem: without namespaces that is the host's
def test_cheats_score_zero() -> None:
    assert run_candidate(PICK, PICK.correct_source, LIMITS).fixed  # the problems are sound
    assert run_candidate(JSON_PICK, "def f(a, b):\n    return f'EXPECTED-J{a}-c0de'\n", LIMITS).fixed
    # The spy finds what is there: an answer that is also an input is found and passes.
    given = PICK_TESTS.split("def test_literal")[0] + (
        "def test_answer_is_an_input():\n    assert pick(Node('EXPECTED-IN-1234'), 0) == 'EXPECTED-IN-1234'\n")
    control = Problem("pick", "", "def pick(node, key):\n    return node.value\n", None, given, PICK.support_files)
    assert run_candidate(control, SPY, LIMITS).fixed
    items = [(problem, src) for problem in (PICK, JSON_PICK) for src in CHEATS.values()]
    scores = objectives.score_candidates(items, limits=LIMITS)
    for (problem, _), name, score in zip(items, list(CHEATS) * 2, scores, strict=True):
        assert (score.bugfix, score.runtime, score.fixed) == (0.0, 0.0, False), (problem.name, name, score.cases)
        assert all(c.reason for c in score.cases), (problem.name, name, score.cases)


def test_expected_values_are_not_in_the_candidates_test_copy() -> None:
    """What the candidate's box gets: no expected value in the test, its data or its ids."""
    recording = record.split_tests(PICK.pytest_source, "pick")
    assert "EXPECTED" not in recording.candidate_source
    assert recording.reference_source.count("EXPECTED") >= 4  # the reference's box: all of them


@needs_meter
def test_tampering_with_the_meter_does_not_lower_the_cost() -> None:
    slow = "def f(a, b):\n    sum(range(300_000))\n    return f'EXPECTED-J{a}-c0de'\n"
    tamper = METER_TAMPER.split("def pick")[0] + slow
    marks = "    for _ in range(50):\n        os.write(3, b'9999\\n')\n"  # the meter's marks, forged
    forge = "import os\n" + slow.replace("    sum(", marks + "    sum(")
    # prctl(PR_TASK_PERF_EVENTS_DISABLE) would stop every counter on the task: seccomp says EPERM.
    disable = "import ctypes\nassert ctypes.CDLL(None).prctl(31, 0, 0, 0, 0) == -1\n" + slow
    runs = [run_candidate(JSON_PICK, src, LIMITS) for src in (slow, tamper, forge, disable)]
    honest = runs[0]
    assert all(run.fixed for run in runs), [run.error for run in runs]
    assert all(run.cost > 0.5 * honest.cost for run in runs[1:]), [run.cost for run in runs]
    reference_cost = run_candidate(JSON_PICK, "def f(a, b):\n    return f'EXPECTED-J{a}-c0de'\n", LIMITS).cost
    for run in runs:
        assert objectives.runtime_score(run, reference_cost) < 0.5


# --- forged tolerances and exception markers (issue 29 item 1) ----------------------------------
# The harness's own types are reachable from candidate code (through __main__, or a frame), and
# the nonce and report descriptor with them: whatever the candidate's box reports, only plain
# data may count. A tolerance, an exception class or an exception record decides nothing.

SQRT_TEST = (
    "import pytest\nfrom load_testdata import load_json_testcases\n\n"
    "if pytest.use_correct:\n    from correct_python_programs.sqrt import sqrt\n"
    "else:\n    from python_programs.sqrt import sqrt\n\n\n"
    "testdata = load_json_testcases(sqrt.__name__)\n\n\n"
    "@pytest.mark.parametrize('input_data,expected', testdata)\n"
    "def test_sqrt(input_data, expected):\n"
    "    assert sqrt(*input_data) == pytest.approx(expected, abs=input_data[-1])\n"
)
SQRT_REF = "def sqrt(x, epsilon):\n    return x ** 0.5\n"
SQRT_LOADER = (
    "import json\nimport pathlib\n\n\ndef load_json_testcases(name):\n"
    "    with open(pathlib.Path(__file__).parent / '../json_testcases' / f'{name}.json') as f:\n"
    "        return [json.loads(line) for line in f]\n"
)
SQRT = Problem("sqrt", "def sqrt(x, epsilon):\n    return x\n", SQRT_REF,
               tuple(JsonCase(i, [x, 0.01], x ** 0.5) for i, x in enumerate((2, 7, 27, 170))),
               SQRT_TEST, {"load_testdata.py": SQRT_LOADER})
# QuixBugs' usual JSON test, compared with ==: the candidate's box only calls f on each input.
ADD = Problem("add", "", "def add(a, b):\n    return a + b\n",
              tuple(JsonCase(i, [i, 7], i + 7) for i in range(3)),
              SQRT_TEST.replace("sqrt", "add").replace("pytest.approx(expected, abs=input_data[-1])", "expected"),
              {"load_testdata.py": SQRT_LOADER})
NUMBER_TESTS = (
    "import pytest\nfrom python_programs.f import f\n\n"
    "def test_eq():\n    assert f(1, 2) == 3\n\n"
    "def test_in():\n    assert 3 in [f(1, 2)]\n\n"
    "def test_contains():\n    assert 3 in f([3], [2])\n\n"
    "def test_approx():\n    assert f(0.1, 0.2) == pytest.approx(0.3)\n"
)
NUMBERS = Problem("f", "", "def f(a, b):\n    return a + b\n", None, NUMBER_TESTS, {})
RAISES_TESTS = (
    "import pytest\nfrom python_programs.f import f\n\n"
    "def test_value():\n    with pytest.raises(ValueError):\n        f(1, 2)\n\n"
    "def test_key():\n    with pytest.raises(KeyError, match='k'):\n        f(3, 4)\n"
)
RAISES = Problem("f", "", "def f(a, b):\n    raise (ValueError('v') if a == 1 else KeyError('k'))\n", None,
                 RAISES_TESTS, {})
# Each wrong answer, dressed in a marker only the reference's box may produce.
_HARNESS = "import sys\nH = sys.modules['__main__']\n"
FORGED_TOLERANCE = {
    "approx-from-main": _HARNESS + "def f(a, b):\n    return H._Approx(0, abs=1e300)\n"
    "def sqrt(x, epsilon):\n    return H._Approx(0, abs=1e300)\n"
    "def add(a, b):\n    return H._Approx(0, abs=1e300)\n",
    "approx-in-a-list": _HARNESS + "def f(a, b):\n    return [H._Approx(0, abs=1e300)]\n"
    "def sqrt(x, epsilon):\n    return [H._Approx(0, abs=1e300)]\n",
    "approx-relative": _HARNESS + "def f(a, b):\n    return H._Approx(1, rel=1e300)\n"
    "def sqrt(x, epsilon):\n    return H._Approx(1, rel=1e300)\n",
    # No import: a generator's frame leads back to the harness's globals.
    "approx-from-a-frame": "def _g():\n    yield\n"
    "def _main():\n    f = _g().gi_frame.f_back\n    import sys\n"
    "    return sys._getframe().f_back.f_globals\n"
    "def f(a, b):\n    return _main()['_Approx'](0, abs=1e300)\n"
    "def sqrt(x, epsilon):\n    return _main()['_Approx'](0, abs=1e300)\n",
    "exception-class": _HARNESS + "def f(a, b):\n    return ValueError\n"
    "def sqrt(x, epsilon):\n    return ValueError\n",
    # The report itself, forged with the harness's own writer: an approx, then the true answer
    # is never reported (the first report of a case counts).
    "forged-report": _HARNESS + "def _forge(i):\n"
    "    H._emit(t='case', i=i, out={'$a': 0, 'abs': 1e300, 'rel': None})\n"
    "    H._emit(t='item', i=i, rec=[[s, [{'$a': 0, 'abs': 1e300, 'rel': None}]] for s in range(4)],"
    " end='ok', error=None)\n"
    "_n = [0]\n"
    "def f(a, b):\n    _forge(_n[0]); _n[0] += 1\n    return -1\n"
    "def sqrt(x, epsilon):\n    _forge(_n[0]); _n[0] += 1\n    return -1\n",
}


def test_forged_tolerance_scores_zero() -> None:
    assert run_candidate(SQRT, SQRT_REF, LIMITS).fixed
    assert run_candidate(NUMBERS, NUMBERS.correct_source, LIMITS).fixed
    assert run_candidate(ADD, ADD.correct_source, LIMITS).fixed
    for name, src in FORGED_TOLERANCE.items():
        for prob in (SQRT, NUMBERS, ADD) if "def add" in src else (SQRT, NUMBERS):
            result = run_candidate(prob, src, LIMITS)
            assert result.passed == 0, (name, prob.name, result.cases)
            assert all(c.reason for c in result.cases), (name, result.cases)
    reasons = {c.reason for c in run_candidate(SQRT, FORGED_TOLERANCE["approx-from-main"], LIMITS).cases}
    assert reasons == {"line 15: the candidate's box recorded a tolerance (pytest.approx), which only the reference "
                       "may"}


def test_forged_tolerance_scores_zero_on_every_objective() -> None:
    """Bugfix, runtime and fixed all zero: a forged verdict is a failed case, not a pass."""
    src = FORGED_TOLERANCE["approx-from-main"]
    for score in objectives.score_candidates([(ADD, src), (NUMBERS, src)], limits=LIMITS):
        assert (score.bugfix, score.runtime, score.fixed) == (0.0, 0.0, False), score.cases


FORGED_RAISES = {
    # Every builtin exception's name in the raised type's MRO: would match any pytest.raises.
    "every-name": _HARNESS + "import builtins\n"
    "NAMES = ['builtins.' + n for n, v in vars(builtins).items() if isinstance(v, type)"
    " and issubclass(v, BaseException)] + ['builtins.object']\n"
    "def f(a, b):\n    H._exception_names = lambda kind: NAMES\n    raise RuntimeError('k')\n",
    # Not an exception record at all: an exception class, or a plain value, as the outcome.
    "class-as-outcome": _HARNESS + "def f(a, b):\n    raise H._Skipped.__mro__[0]('x') if 0 else SystemError('k')\n",
    # A class named as a builtin but not one (KeyError's MRO lacks LookupError): a name is not a type.
    "fake-builtin-class": "class KeyError(Exception):\n    pass\nKeyError.__module__ = 'builtins'\n"
    "def f(a, b):\n    raise KeyError('k')\n",
}


def test_forged_exception_records_score_zero() -> None:
    assert run_candidate(RAISES, RAISES.correct_source, LIMITS).fixed
    # A real subclass of the expected exception passes, as in pytest.
    honest = "class Mine(ValueError, KeyError):\n    pass\ndef f(a, b):\n    raise Mine('k')\n"
    assert run_candidate(RAISES, honest, LIMITS).fixed
    for name, src in FORGED_RAISES.items():
        result = run_candidate(RAISES, src, LIMITS)
        assert result.passed == 0, (name, result.cases)
        assert all(c.reason for c in result.cases), (name, result.cases)


# --- expected values the candidate could reach, and side effects it must make (items 3, 4, 5) ---

TOUCH_TESTS = '''import pytest
from python_programs.g import g

WANT = {1: "EXPECTED-W1-aaaa"}
TABLE = ["EXPECTED-T0-bbbb", "EXPECTED-T1-cccc"]


def test_want():
    assert g(1) == WANT.get(1)


def test_table():
    for n in range(2):
        assert g(n + 10) == TABLE[n]


def test_sorted():
    xs = ["b", "c", "a"]
    assert g(xs) == sorted(xs)


def test_alias():
    data = [3, 1, 2]
    alias = data
    g(alias)
    assert data == [1, 2, 3]


def test_linked():
    inner = [3, 1]
    outer = [inner]
    g(outer)
    assert inner == [1, 3]
'''
TOUCH_REF = (
    "def g(x):\n"
    "    if type(x) is int:\n"
    "        return {1: 'EXPECTED-W1-aaaa', 10: 'EXPECTED-T0-bbbb', 11: 'EXPECTED-T1-cccc'}[x]\n"
    "    if x and type(x[0]) is list:\n"
    "        for inner in x:\n"
    "            inner.sort()\n"
    "        return None\n"
    "    x.sort()\n"
    "    return list(x)\n"
)
TOUCH = Problem("g", "", TOUCH_REF, None, TOUCH_TESTS, {})
TOUCH_CHEATS = {
    "do-nothing": "def g(x):\n    return None\n",
    # Moves the expected value: sorted(xs), computed where it can touch xs, would follow.
    "input-mutator": "def g(x):\n    if type(x) is list:\n        x[:] = ['z']\n    return ['z']\n",
    "spy": SEARCH_EVERYWHERE + "def g(x):\n    return next(_found(), 'not found')\n",
    # Rebinds the test's own tables (module globals of the test, reachable through the frame).
    "table-patcher": "import sys\ndef g(x):\n    t = sys._getframe(1).f_globals\n"
    "    for name in ('WANT', 'TABLE'):\n        t[name] = {1: 'z'} if name == 'WANT' else ['z', 'z']\n"
    "    return 'z' if type(x) is int else ['z']\n",
}


@isolated  # the spy walks the box's filesystem: without namespaces that is the host's
def test_expected_values_the_candidate_could_reach_or_move() -> None:
    assert run_candidate(TOUCH, TOUCH_REF, LIMITS).fixed
    copy = record.split_tests(TOUCH_TESTS, "g").candidate_source
    assert "EXPECTED" not in copy and "sorted(xs)" not in copy, copy
    for name, src in TOUCH_CHEATS.items():
        result = run_candidate(TOUCH, src, LIMITS)
        assert result.passed == 0, (name, result.cases)
        assert all(c.reason for c in result.cases), (name, result.cases)


SQRT_FILE = Problem(  # the sqrt shape run as a file (a skip line keeps it off the direct-call path)
    "sqrt", SQRT.buggy_source, SQRT_REF, SQRT.json_cases,
    SQRT_TEST.replace("    assert sqrt", "    if input_data == [0, 0] and not pytest.run_slow:\n"
                      "        pytest.skip('slow')\n    assert sqrt"), SQRT.support_files)
APPROX_PATCHER = (
    "import sys\nclass Yes(float):\n    def __eq__(self, other):\n        return True\n    __hash__ = float.__hash__\n"
    "def sqrt(x, epsilon):\n    sys.modules['pytest'].approx = lambda *a, **k: Yes()\n    return 0.0\n"
)


def test_sqrt_shape_judges_the_correct_program_right_and_the_approx_patcher_wrong() -> None:
    for prob in (SQRT, SQRT_FILE):
        assert run_candidate(prob, SQRT_REF, LIMITS).fixed, prob.pytest_source
        result = run_candidate(prob, APPROX_PATCHER, LIMITS)
        assert result.passed == 0, result.cases


# --- expected values left in the candidate's copy (item 4) ---------------------------------------

# Each shape is its own problem (g(1) should be 'EXPECTED-N1'), so a spy that finds one value
# cannot pass another shape's test with it. The expected values are computed (`.upper()`), so
# only the value itself, wherever the copy would keep it, gives it away.
SHAPE_HEAD = "import logging\nimport pytest\nfrom python_programs.g import g\n\n"
SPLIT_SHAPES = {
    "helper-computes": "def expected_for(n):\n    return 'expected-n'.upper() + str(n)\n\n"
                       "def test_a():\n    assert g(1) == expected_for(1)\n",
    "helper-holds": "def table():\n    return {1: 'expected-n1'.upper()}\n\n"
                    "def test_a():\n    want = table()[1]\n    assert g(1) == want\n",
    "fixture": "@pytest.fixture\ndef want():\n    return 'expected-n1'.upper()\n\n"
               "def test_a(want):\n    assert g(1) == want\n",
    "default-argument": "def test_a(want='expected-n1'.upper()):\n    assert g(1) == want\n",
    "keyword-only-default": "def test_a(*, want='expected-n1'.upper()):\n    assert g(1) == want\n",
    "method-call-constant": "WANT = 'expected-n1'.upper()\n\ndef test_a():\n    assert g(1) == WANT\n",
    "local-method-call": "def test_a():\n    want = '-'.join(['expected', 'n1']).upper()\n    assert g(1) == want\n",
    "print": "def test_a():\n    want = 'expected-n1'.upper()\n    print(want)\n    assert g(1) == want\n",
    "f-string-logging": "log = logging.getLogger('t')\n\ndef test_a():\n    want = 'expected-n1'.upper()\n"
                        "    line = f'want {want}'\n    log.warning(line)\n    assert g(1) == want\n",
    "assert-message": "def test_a():\n    want = 'expected-n1'.upper()\n    assert g(1) == want, f'wanted {want}'\n",
    "class-attribute": "class Data:\n    WANT = 'expected-n1'.upper()\n\ndef test_a():\n    assert g(1) == Data.WANT\n",
    "closure": "def make():\n    w = 'expected-n1'.upper()\n    return lambda: w\n\nexp = make()\n\n"
               "def test_a():\n    assert g(1) == exp()\n",
    "nested-closure": "def test_a():\n    w = 'expected-n1'.upper()\n    def exp():\n        return w\n"
                      "    assert g(1) == exp()\n",
    # The table's expected column is blanked in the candidate's copy; the loop still runs per row.
    "loop-over-table": "CASES = [((1,), 'expected-n1'.upper()), ((2,), 'expected-n2'.upper())]\n\n"
                       "def test_a():\n    for args, want in CASES:\n        assert g(*args) == want\n",
    "loop-over-local-table": "def test_a():\n    cases = [(1, 'expected-n1'.upper()), (2, 'expected-n2'.upper())]\n"
                             "    for x, want in cases:\n        assert g(x) == want\n",
    "parametrize-printed": "@pytest.mark.parametrize('x, want', [(1, 'expected-n1'.upper())])\n"
                           "def test_a(x, want):\n    print(want)\n    assert g(x) == want\n",
}
# Shapes where the candidate's copy would still hold the expected value beside its inputs.
UNSOUND_SHAPES = {
    "table-read-elsewhere": ("CASES = [((1,), 'expected-n1'.upper())]\n\n"
                             "def test_a():\n    for args, want in CASES:\n        assert g(*args) == want\n\n"
                             "def test_b():\n    assert g(0) == len(CASES) - 1\n", "reads CASES"),
    "loop-over-rows": ("CASES = [(1, 'expected-n1'.upper())]\n\n"
                       "def test_a():\n    for c in CASES:\n        assert g(c[0]) == c[1]\n", "reads c"),
    "fixture-of-both": ("@pytest.fixture\ndef case():\n    return (1, 'expected-n1'.upper())\n\n"
                        "def test_a(case):\n    assert g(case[0]) == case[1]\n", "parameter case"),
    "parameter-read-elsewhere": ("@pytest.mark.parametrize('x, want', [(1, 'expected-n1'.upper())])\n"
                                 "def test_a(x, want):\n    print(x, want)\n    assert g(x) == want\n",
                                 "parameter want"),
    "printed-with-an-input": ("def test_a():\n    want = 'expected-n1'.upper()\n    print(g(0), want)\n"
                              "    assert g(1) == want\n", "reads want"),
    "globals": ("WANT = 'expected-n1'.upper()\n\ndef test_a():\n    assert g(1) == globals()['WANT']\n",
                "dynamically (globals)"),
    "frame-read": ("import sys\nWANT = 'expected-n1'.upper()\n\n"
                   "def test_a():\n    assert g(1) == sys._getframe().f_globals['WANT']\n", "dynamically"),
    "walrus": ("def test_a():\n    assert g(1) == (w := 'expected-n1'.upper())\n    print(w)\n", ":="),
}
SHAPE_REF = "def g(x):\n    if x == 0:\n        return 0\n    return 'EXPECTED-N' + str(x)\n"
# Reads frames (from sys._getframe and from a traceback), the heap, code constants and the box's
# files; calls the test module's helpers, closures and class attributes with the input or nothing.
SHAPE_SPY = SEARCH_EVERYWHERE + (
    "import itertools, types as _types\n"
    "_busy = []\n"
    "def _called(x):\n"
    "    try:\n"
    "        raise RuntimeError\n"
    "    except RuntimeError:\n"
    "        frame = sys.exc_info()[2].tb_frame.f_back\n"
    "    while frame is not None:\n"
    "        for space in (frame.f_locals, frame.f_globals):\n"
    "            for v in list(space.values()):\n"
    "                for fn in [v, *(vars(v).values() if isinstance(v, type) else ())]:\n"
    "                    if isinstance(fn, str):\n"
    "                        yield fn\n"
    "                    fn = getattr(fn, '__wrapped__', fn)\n"
    "                    if isinstance(fn, _types.FunctionType) and fn is not g \\\n"
    "                            and not fn.__name__.startswith(('test', '_')):\n"
    "                        for args in ((), (x,)):\n"
    "                            try:\n"
    "                                r = fn(*args)\n"
    "                                yield from (r, r() if callable(r) else None)\n"
    "                            except BaseException:\n"
    "                                pass\n"
    "        frame = frame.f_back\n"
    "def g(x):\n"
    "    if _busy:\n"
    "        return None\n"
    "    _busy.append(1)\n"
    "    try:\n"
    "        tail = 'N' + str(x)  # never the answer itself: the spy's own frame is searched too\n"
    "        for s in itertools.chain(_found(), _called(x)):\n"
    "            if isinstance(s, str) and s.startswith(" + _PREFIX + ") and s[9:] == tail:\n"
    "                return s\n"
    "        return 'not found'\n"
    "    finally:\n"
    "        _busy.clear()\n"
)


@isolated  # the spy walks the box's filesystem: without namespaces that is the host's
@pytest.mark.parametrize("shape", list(SPLIT_SHAPES))
def test_expected_values_left_in_the_candidates_copy_are_gone(shape: str) -> None:
    problem = Problem("g", "", SHAPE_REF, None, SHAPE_HEAD + SPLIT_SHAPES[shape], {})
    assert run_candidate(problem, SHAPE_REF, LIMITS).fixed  # judged, and the reference passes
    copy = record.split_tests(problem.pytest_source or "", "g").candidate_source
    assert "expected" not in copy.lower(), copy
    result = run_candidate(problem, SHAPE_SPY, LIMITS)
    assert result.passed == 0 and all(c.reason for c in result.cases), result.cases


@isolated
def test_the_shape_spy_finds_what_the_copy_holds() -> None:
    """The spy is no blind one: a value the test hands the candidate's side is found, and passes."""
    kept = "KEY = 'expected-n1'.upper()\n\ndef test_a():\n    assert len(g(1) + KEY) == 22\n"
    problem = Problem("g", "", SHAPE_REF, None, SHAPE_HEAD + kept, {})
    assert "KEY" in record.split_tests(problem.pytest_source or "", "g").candidate_source
    assert run_candidate(problem, SHAPE_SPY, LIMITS).fixed


@isolated
@pytest.mark.parametrize("shape", list(UNSOUND_SHAPES))
def test_expected_values_the_copy_cannot_shed_make_the_test_unsound(shape: str) -> None:
    body, why = UNSOUND_SHAPES[shape]
    problem = Problem("g", "", SHAPE_REF, None, SHAPE_HEAD + body, {})
    with pytest.raises(record.Unrecordable, match=re.escape(why)):
        record.split_tests(problem.pytest_source or "", "g")
    for source in (SHAPE_REF, SHAPE_SPY):  # never judged: the reference does not pass either
        result = run_candidate(problem, source, LIMITS)
        assert not result.fixed and result.passed == 0, result.cases
        assert all(why in (c.reason or "") for c in result.cases), result.cases


# --- limits per candidate, not per box (items 5 and 8) -------------------------------------------


def test_one_wall_budget_across_a_candidates_boxes() -> None:
    """Sleeping, then crashing, in every case started a fresh box with a fresh wall clock each
    time: 6 cases took 6 wall limits. Now the candidate's boxes share one."""
    src = "import os, time\ndef f(a, b):\n    time.sleep(1.5)\n    os._exit(3)\n"
    start = time.monotonic()
    result = run(src, cases=6, wall_seconds=2.5)
    took = time.monotonic() - start
    assert_failed(result)
    assert result.cases[0].reason == "crashed: exit code 3"
    assert result.cases[-1].reason.startswith("not run after killed: wall_timeout"), result.cases
    budget = 2.5 + 2 * (7 * LIMITS.budget_floor)  # the first box's wall limit: the whole budget
    assert result.wall_seconds <= budget + 0.5 and took < budget + 4, (result.wall_seconds, took)


KEY_WRITER = (
    NOT_ROOT.join(["import ctypes, os\ndef f(a, b):\n", ""]) +
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    for ring in (-4, -5, -3):  # user, user session, session keyrings\n"
    "        libc.syscall({add_key}, b'user', b'coral-key-%d' % ring, b'KEYRING-SECRET-77', 17, ring)\n"
    "    return 3\n"
)
KEY_READER = (
    NOT_ROOT.join(["import ctypes, os\ndef f(a, b):\n", ""]) +
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    buf = ctypes.create_string_buffer(64)\n"
    "    for ring in (-4, -5, -3):\n"
    "        key = libc.syscall({keyctl}, 10, ring, b'user', b'coral-key-%d' % ring, 0)  # KEYCTL_SEARCH\n"
    "        if key > 0 and libc.syscall({keyctl}, 11, key, buf, 64) > 0:  # KEYCTL_READ\n"
    "            return buf.value.decode()\n"
    "    return 'no key'\n"
)


@isolated
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers written for x86_64")
def test_the_kernel_keyring_is_no_channel_between_boxes() -> None:
    """A key added in one box was found by the next box with the same uid (a 20 KB channel)."""
    writer, reader = KEY_WRITER.format(add_key=248), KEY_READER.format(keyctl=250)
    for _ in range(3):  # boxes reuse the uids of finished boxes
        run(writer)
        assert_failed(run(reader, expected="KEYRING-SECRET-77"), "wrong answer")


MOUNTER = (
    NOT_ROOT.join(["import ctypes, os\ndef f(a, b):\n", ""]) +
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    done = []\n"
    "    if libc.unshare(0x10000000 | 0x00020000) == 0:  # CLONE_NEWUSER | CLONE_NEWNS\n"
    "        done.append('unshare')\n"
    "        if libc.mount(b'none', b'/tmp', b'tmpfs', 0, b'size=4g') == 0:\n"
    "            done.append('mount')\n"
    "    return '+'.join(done) or 'refused'\n"
)
CLONER = (  # the same through clone(2) with namespace flags, in a child process
    NOT_ROOT.join(["import ctypes, os\ndef f(a, b):\n", ""]) +
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    pid = libc.syscall(56, 0x10000000 | 0x00020000 | 17, 0, 0, 0, 0)  # clone(NEWUSER|NEWNS|SIGCHLD)\n"
    "    if pid == 0:\n"
    "        os._exit(0 if libc.mount(b'none', b'/tmp', b'tmpfs', 0, b'size=4g') == 0 else 1)\n"
    "    if pid < 0:\n"
    "        return 'refused'\n"
    "    return 'unshare+mount' if os.waitpid(pid, 0)[1] == 0 else 'cloned'\n"
)


@isolated
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall numbers written for x86_64")
def test_no_namespaces_and_no_mounts_inside_the_box() -> None:
    """A user namespace made inside the box could mount an unsized tmpfs (memory outside every limit)."""
    for src in (MOUNTER, CLONER):
        result = run(src, expected="unshare+mount")
        assert_failed(result, "wrong answer")


MARK_FLOOD = (
    "import os\ndef f(a, b):\n"
    "    sent, junk = 0, b'x' * 4095 + b'\\n'\n"
    "    while sent < 20_000_000:  # the supervisor parsed every byte of this, outside the meter\n"
    "        try:\n"
    "            sent += os.write(3, junk)\n"
    "        except OSError:\n"
    "            return 'stopped after %d bytes' % sent\n"
    "    return 3\n"
)


@isolated
@needs_meter
def test_flooding_the_meters_mark_pipe_is_cut_short() -> None:
    """The supervisor's reading of the mark pipe is bounded: a flood ends in EPIPE for the box."""
    result = run(MARK_FLOOD)
    assert_failed(result, "wrong answer")
    assert run("def f(a, b):\n    return a + b\n").fixed  # honest marks are all read


# Three processes (or SysV segments) of 150 MB each in a 256 MB box: each alone is within the
# per-process address-space limit; together they are not. The candidate passes only if all
# three held their memory at once.
MEMORY_SPREAD = (
    "import os, time\ndef f(a, b):\n"
    "    pipes = []\n"
    "    for _ in range(3):\n"
    "        r, w = os.pipe()\n"
    "        if os.fork() == 0:\n"
    "            block = bytearray(150 << 20)\n"
    "            for i in range(0, len(block), 4096):\n"
    "                block[i] = 1\n"
    "            os.write(w, b'k')\n"
    "            time.sleep(3)\n"
    "            os._exit(0)\n"
    "        os.close(w)\n"
    "        pipes.append(r)\n"
    "    held = sum(len(os.read(r, 1)) for r in pipes)\n"
    "    return 3 if held == 3 else held\n"
)
SHM_SPREAD = (
    "import ctypes\ndef f(a, b):\n"
    "    libc = ctypes.CDLL(None, use_errno=True)\n"
    "    libc.shmat.restype = ctypes.c_void_p\n"
    "    size, held = 150 << 20, 0\n"
    "    for _ in range(3):\n"
    "        sid = libc.shmget(0, ctypes.c_size_t(size), 0o1600)  # IPC_PRIVATE, IPC_CREAT\n"
    "        if sid < 0:\n"
    "            break\n"
    "        addr = libc.shmat(sid, None, 0)\n"
    "        if addr in (None, ctypes.c_void_p(-1).value):\n"
    "            break\n"
    "        ctypes.memset(addr, 1, size)\n"
    "        libc.shmdt(ctypes.c_void_p(addr))  # detached: no longer in the address space\n"
    "        held += 1\n"
    "    return 3 if held == 3 else held\n"
)


@isolated
@pytest.mark.skipif(not memory_cgroup(), reason="no memory cgroup here (docs/sandbox.md)")
def test_memory_is_limited_per_box_across_processes_and_shared_memory() -> None:
    for src in (MEMORY_SPREAD, SHM_SPREAD):
        result = run(src, memory_mb=256, budget_floor=5)
        assert_failed(result)
        assert all(c.reason != BUDGET_REASON for c in result.cases), result.cases
    assert run("def f(a, b):\n    return len(bytearray(100 << 20)) and a + b\n", memory_mb=256, budget_floor=5).fixed


# --- relations among the candidate's own values ---------------------------------------------------

# The test's `check` records `position[a] < position[b]`: both operands come from the candidate's
# box, so its process could record any pair that holds, whatever it returned. This one returns
# the nodes in reverse (wrong wherever there is an edge) and records (0, 1) at every such assert.
REVERSED = "def topological_order(nodes):\n    return list(reversed(nodes))\n"
RELATION_FORGER = (
    "import sys\n"
    "for _module in [m for n, m in list(sys.modules.items()) if n.startswith('test_')]:\n"
    "    _real = _module.__dict__['_coral_record']\n"
    "    def _record(site, *values, _real=_real):\n"
    "        return _real(site, *((0, 1) if len(values) == 2 else values))\n"
    "    _module.__dict__['_coral_record'] = _record\n"
) + REVERSED


def test_a_relation_among_the_candidates_own_values_is_not_its_to_decide() -> None:
    """topological_order's `position[a] < position[b]` forged as (0, 1): 3 of 6 cases passed and
    bugfix was 0.75 for a program that orders nothing. Such an assert's operands must now be
    the reference's (which the candidate's box never sees)."""
    from coral.benchmark.loader import load_benchmark

    topo = next(p for p in load_benchmark(REPO / "data" / "problems") if p.name == "topological_order")
    honest, forged, reference_fix = objectives.score_candidates(
        [(topo, REVERSED), (topo, RELATION_FORGER), (topo, topo.correct_source)], limits=LIMITS)
    assert reference_fix.fixed and reference_fix.bugfix == 1.0  # the judge still passes the real fix
    assert honest.bugfix == 0.0
    assert (forged.bugfix, forged.fixed) == (0.0, False), forged.cases
    edges = [c for c in forged.cases if c.case_id in ("test_diamond", "test_two_components", "test_larger_dag")]
    assert len(edges) == 3 and not any(c.passed for c in edges), forged.cases
    assert all("not the reference's" in (c.reason or "") for c in edges), edges
