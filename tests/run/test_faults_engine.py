"""Faults of a running engine and its local worker pool, performed for real on `coral run` with
the stand-in job bodies (coral/testing/fakes.py): kill -9 of the engine, SIGTERM and Ctrl-C of
the engine, kill -9 of one worker, every worker killed as it starts, and a pool far larger than
the machine (issue "Faults that still hurt", points 2, 3 and 7). After each stop or failure,
`coral resume` must give the same run as an uninterrupted one.
Also who may drive a run: two `coral resume` at once, a resume while the orchestrator is stopped
with SIGSTOP, and a resume that cannot write while it cuts the log back to its checkpoint."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from coral.execution.workers import local_worker_cap
from coral.home import Home
from coral.run.events import read_events, segments
from coral.run.registry import compare_runs

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "smoke.yaml"
FAKES = "coral.testing.fakes:HANDLERS"
# smoke.yaml's two generations at 0.05 s a job: long enough to hurt mid-way, short enough to redo.
SHAPE: list[str] = []
LEASE = ["--set", "backend.lease_seconds=2"]  # a lost job is re-enqueued within seconds


def env_for(home: Path, sleep: str = "0.05") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update(CORAL_HOME=str(home), PYTHONPATH=str(REPO), CORAL_FAKE_SLEEP=sleep)
    return env


def coral(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "coral", *args], cwd=REPO, env=env_for(home),
                          capture_output=True, text=True, timeout=timeout)


def start_run(home: Path, run_id: str, *extra: str) -> subprocess.Popen[str]:
    """`coral run` in its own session (so a test can signal its whole group, as a terminal does)."""
    return start(home, run_id, ["run", str(SMOKE), "--run-id", run_id, "--handlers", FAKES, *SHAPE, *LEASE,
                                *extra])


def start(home: Path, run_id: str, args: list[str], sleep: str = "0.05") -> subprocess.Popen[str]:
    with open(home.parent / f"{run_id}.out", "a") as out:  # the child keeps its own copy
        return subprocess.Popen([sys.executable, "-m", "coral", *args], cwd=REPO, env=env_for(home, sleep),
                                stdout=out, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def output(home: Path, run_id: str) -> str:
    return (home.parent / f"{run_id}.out").read_text()


def alive(pid: int) -> bool:
    """Running (a zombie nobody reaped yet counts as dead)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return False
    return fields[0] != "Z"


def workers_of(pid: int) -> list[int]:
    """Live `coral worker` children of process `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError):
            continue
        if int(stat[1]) == pid and stat[0] != "Z" and b"worker" in cmdline:
            found.append(int(entry.name))
    return sorted(found)


def wait_for(what: Callable[[], Any], label: str, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := what()):
        assert time.monotonic() < deadline, f"timed out waiting for {label}"
        time.sleep(0.05)
    return value


def checkpoints(home: Path, run_id: str) -> int:
    return len(list((home / "runs" / run_id / "checkpoints").glob("gen-*.json")))


def status(home: Path, run_id: str) -> dict[str, Any]:
    try:
        return json.loads((home / "runs" / run_id / "status.json").read_text())
    except FileNotFoundError:  # not registered yet
        return {}


def events(home: Path, run_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted((home / "runs" / run_id / "events").glob("*.jsonl"))
            for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run (serial: the same science, in seconds), made once."""
    root = tmp_path_factory.mktemp("reference") / "home"
    done = subprocess.run([sys.executable, "-m", "coral", "run", str(SMOKE), "--run-id", "reference",
                           "--handlers", FAKES, "--backend", "serial", *SHAPE], cwd=REPO,
                          env=env_for(root, "0"), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "runs" / "reference"


@pytest.fixture
def home(tmp_path: Path, reference: Path) -> Path:
    """A home holding the reference run, to compare with."""
    root = tmp_path / "home"
    shutil.copytree(reference, root / "runs" / "reference")
    return root


def identical_to_reference(root: Path, run_id: str) -> None:
    assert compare_runs(Home(root), "reference", run_id) == dict.fromkeys(
        ("populations", "scores", "event_ids", "events"), True)


def stop(proc: subprocess.Popen[str]) -> None:
    """Kill what this test started: the run's process group (engine and workers), even when
    the engine is gone and only (orphaned) workers are left in it."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(30)


@pytest.mark.slow
def test_kill_9_of_the_engine_takes_its_workers_along(home: Path) -> None:
    """Point 3: after kill -9 of `coral run` its workers kept running with parent PID 1."""
    proc = start_run(home, "orphans")
    try:
        workers = wait_for(lambda: len(w := workers_of(proc.pid)) == 2 and w, "two workers")
        wait_for(lambda: checkpoints(home, "orphans") >= 1, "the first checkpoint")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        wait_for(lambda: not any(alive(pid) for pid in workers), "the workers to die", timeout=10)
    finally:
        stop(proc)  # on failure, the orphans too: they are still in the run's process group


@pytest.mark.slow
def test_sigterm_and_ctrl_c_stop_the_run_resumably(home: Path) -> None:
    """Point 3: `coral run` killed with SIGTERM left its workers running and the run "running".
    Now it stops its pool, records "stopped", and `coral resume` continues. Here: SIGTERM to
    `coral run`, then Ctrl-C (SIGINT to the whole process group, workers included: only the
    engine acts on it) to the `coral resume` that followed, then a last resume finishes the run,
    the same run as an uninterrupted one."""
    steps = [(["run", str(SMOKE), "--run-id", "signalled", "--handlers", FAKES, *SHAPE, *LEASE], "0.05",
              "SIGTERM"), (["resume", "signalled"], "0.2", "SIGINT")]  # a slower resume: time to hit it
    for step, (args, sleep, how) in enumerate(steps, 1):
        proc = start(home, "signalled", args, sleep)
        try:
            workers = wait_for(lambda p=proc: len(w := workers_of(p.pid)) == 2 and w, "two workers")
            # "running" is written once the engine is in its loop (its signal handlers are in place)
            wait_for(lambda p=proc: status(home, "signalled").get("pid") == p.pid
                     and status(home, "signalled")["state"] == "running", "the engine's loop")
            if step == 1:  # stop after a checkpoint, so the resume continues from one
                wait_for(lambda: checkpoints(home, "signalled") >= 1, "the first checkpoint")
            if how == "SIGTERM":
                os.kill(proc.pid, signal.SIGTERM)
            else:
                os.killpg(proc.pid, signal.SIGINT)
            assert proc.wait(60) == 3, output(home, "signalled")
        finally:
            stop(proc)
        text = output(home, "signalled")
        assert text.count("run signalled stopped in") == step
        assert "`coral resume signalled` continues it" in text and "Traceback" not in text
        assert not any(alive(pid) for pid in workers)
        assert status(home, "signalled")["state"] == "stopped"
        assert events(home, "signalled")[-1]["type"] == "run_stopped"
        assert events(home, "signalled")[-1]["data"]["reason"] == how
    resumed = coral(home, "resume", "signalled")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    identical_to_reference(home, "signalled")


@pytest.mark.slow
def test_a_dead_worker_is_replaced(home: Path) -> None:
    """Point 2: a worker killed with kill -9 was never replaced (one of two dead turned a 44 s
    generation into 352 s). Now the pool starts another and the run ends as it should."""
    proc = start_run(home, "replaced")
    try:
        first = wait_for(lambda: len(w := workers_of(proc.pid)) == 2 and w, "two workers")
        wait_for(lambda: checkpoints(home, "replaced") >= 1, "the first checkpoint")
        os.kill(first[0], signal.SIGKILL)
        later = wait_for(lambda: len(w := workers_of(proc.pid)) == 2 and w != first and w,
                         "a replacement worker", timeout=30)
        assert first[0] not in later and first[1] in later
        assert proc.wait(120) == 0, output(home, "replaced")
    finally:
        stop(proc)
    identical_to_reference(home, "replaced")


@pytest.mark.slow
def test_when_no_worker_can_run_the_run_fails_in_bounded_time_and_resumes(home: Path) -> None:
    """Point 2: a run whose workers all died hung "running" forever. Here every worker is killed
    as soon as it appears: the pool replaces them up to its restart budget (2 x 2), then the run
    fails with one line, and `coral resume` finishes the same run."""
    proc = start_run(home, "doomed")
    killed: set[int] = set()
    try:
        wait_for(lambda: workers_of(proc.pid), "a worker")
        started = time.monotonic()
        while proc.poll() is None:
            assert time.monotonic() - started < 60, f"still running; killed {len(killed)} workers"
            for pid in workers_of(proc.pid):
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            time.sleep(0.05)
    finally:
        stop(proc)
    assert proc.returncode == 2, output(home, "doomed")
    assert len(killed) == 2 + 4  # the first two and four replacements, no more
    errors = [line for line in output(home, "doomed").splitlines() if line.startswith("coral: error:")]
    assert len(errors) == 1 and "every local worker died" in errors[0], output(home, "doomed")
    assert "`coral resume doomed` continues the run" in errors[0]
    assert "Traceback" not in output(home, "doomed")
    assert status(home, "doomed")["state"] == "failed"
    resumed = coral(home, "resume", "doomed")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    identical_to_reference(home, "doomed")


def test_a_pool_larger_than_the_machine_is_refused(tmp_path: Path) -> None:
    """Point 7: `--set backend.workers=1024` on 2 cores spawned 431 workers before the engine
    wrote one event. Now the cap (2 x cores, at least 4) is one line, before anything starts."""
    cap = local_worker_cap()
    for args in (["--workers", str(cap + 1)], ["--set", f"backend.workers={cap * 8}"]):
        done = coral(tmp_path / "home", "run", str(SMOKE), "--handlers", FAKES, *args, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr[-2000:]
        assert f"at most {cap} local workers" in done.stderr
    assert not (tmp_path / "home" / "runs").exists() or not any((tmp_path / "home" / "runs").iterdir())


def test_a_dead_workers_job_does_not_wait_out_its_lease(tmp_path: Path) -> None:
    """Point 2, the rest of the 44 s -> 352 s generation: the job a dead worker held waited for
    its lease to run out (lease_seconds, 120 s by default). Once the pool has seen the worker
    die, the executor re-enqueues its job at the next lease check, and a replacement runs it."""
    from coral.config import BackendConfig
    from coral.execution.executor import LocalWorkerPool, QueueExecutor
    from coral.execution.jobs import LEASES_DICT, lease_key
    from coral.execution.transport import LocalTransport

    home = Home(tmp_path / "home").ensure()
    backend = BackendConfig(lease_seconds=60.0, max_retries=2)  # far longer than the test may take
    with LocalTransport(home.queue_db) as transport, \
            LocalWorkerPool(home, 2, ["echo"], lease_seconds=60.0) as pool:
        executor = QueueExecutor(transport, "run-dead", backend, check_interval=0.2)
        executor.add_health_check(pool.check)
        future = executor.submit_batch("echo", {"slow": {"sleep_s": 2.5}, "fast": {"v": 1}})
        leases = transport.dict(LEASES_DICT)
        lease = wait_for(lambda: leases.get(lease_key("run-dead", "slow", 0)), "the slow job's lease")
        os.kill(lease["pid"], signal.SIGKILL)
        results = future.result(timeout=30)  # well inside the 60 s lease
        assert [(r.job_id, r.ok) for r in results] == [("slow", True), ("fast", True)]
        assert results[0].attempt == 1 and not results[0].worker.endswith(f":{lease['pid']}")
        assert executor.stats.lease_expiries == 1 and pool.restarts == 1 and pool.alive() == 2


def resume(home: Path, log: str) -> subprocess.Popen[str]:
    with open(home.parent / log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "coral", "resume", "twice"], cwd=REPO,
                                env=env_for(home, "0.1"), stdout=out, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)


@pytest.mark.slow
def test_one_orchestrator_per_run(home: Path) -> None:
    """Three `coral resume` of one crashed run started at once all passed the "is its
    orchestrator alive?" look before any wrote its status: each truncated and appended to the
    same log and read the others' results from the shared results partition (every one failed
    with "worker lost", the log held one seq twice). Now the run's lock admits one; the others
    get one line naming it. A resume while the orchestrator is stopped (SIGSTOP) is refused too,
    and the run, continued, ends as the uninterrupted one."""
    proc = start(home, "twice", ["run", str(SMOKE), "--run-id", "twice", "--handlers", FAKES, *LEASE],
                 "0.1")
    try:
        wait_for(lambda: checkpoints(home, "twice") >= 1, "the first checkpoint")
        os.kill(proc.pid, signal.SIGSTOP)
        frozen = subprocess.run([sys.executable, "-m", "coral", "resume", "twice"], cwd=REPO,
                                env=env_for(home), capture_output=True, text=True, timeout=60)
        assert frozen.returncode == 2 and frozen.stderr.count("\n") == 1, frozen.stderr
        assert f"process {proc.pid}" in frozen.stderr
        os.kill(proc.pid, signal.SIGCONT)
        os.killpg(proc.pid, signal.SIGKILL)  # the crash
        proc.wait(30)
    finally:
        stop(proc)
    resumes = [resume(home, f"resume-{i}.out") for i in range(3)]
    try:
        codes = [p.wait(120) for p in resumes]
    finally:
        for p in resumes:
            stop(p)
    outputs = [(home.parent / f"resume-{i}.out").read_text() for i in range(3)]
    assert sorted(codes) == [0, 2, 2], outputs
    for code, text in zip(codes, outputs, strict=True):
        assert "Traceback" not in text
        if code == 2:
            errors = [line for line in text.splitlines() if line.startswith("coral: error:")]
            assert len(errors) == 1 and "is being driven by process" in errors[0], text
    assert status(home, "twice")["state"] == "finished"
    seqs = [e.seq for e in read_events(home / "runs" / "twice" / "events")]
    assert seqs == list(range(len(seqs)))
    identical_to_reference(home, "twice")


def test_a_resume_that_cannot_write_while_cutting_the_log_loses_nothing(tmp_path: Path,
                                                                       reference: Path) -> None:
    """`coral resume` cuts the log back to the checkpoint's next seq. It rewrote each segment in
    place (truncate to 0, then write back the kept lines), so a resume that died or could not
    write between the two (a full disk, a file size limit, kill -9) emptied the segment: the
    events before the checkpoint were gone for good. Here a real process cuts a copy of a
    finished run's log under a file size limit smaller than what it keeps."""
    folder = tmp_path / "events"
    folder.mkdir()
    for path in segments(reference / "events"):
        (folder / path.name).write_bytes(path.read_bytes())
    before = list(read_events(folder))
    cut = before[-1].seq - 3  # keep all but the last four events (seqs cut..last)
    kept = sum(len(line) + 1 for p in segments(folder) for line in p.read_bytes().split(b"\n")[:-1][:cut])
    limit = kept // 2

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-c", "import sys; from pathlib import Path; "
                           "from coral.run.events import truncate; "
                           f"print(truncate(Path(sys.argv[1]), {cut}))", str(folder)],
                          cwd=REPO, env=env_for(tmp_path / "home"), capture_output=True, text=True,
                          timeout=60, preexec_fn=limited)
    after = list(read_events(folder))
    assert [e.event_id for e in after] == [e.event_id for e in before[:cut]], done.stderr[-2000:]
    assert done.returncode == 0 and done.stdout.strip() == "4", done.stderr[-2000:]


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A 20 MiB tmpfs of its own (root only: skipped elsewhere), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_the_disk_mid_run(home: Path, disk: Path) -> str:
    """Run `full` in `home`, fill `disk` after its first checkpoint, free it again once the run
    has ended, and return the run's one error line (no traceback, no other error)."""
    proc = start(home, "full", ["run", str(SMOKE), "--run-id", "full", "--handlers", FAKES, *LEASE], "0.1")
    filler = disk / "filler"
    try:
        wait_for(lambda: checkpoints(home, "full") >= 1, "the first checkpoint")
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
        assert proc.wait(120) == 2
    finally:
        stop(proc)
    filler.unlink()
    text = output(home, "full")
    errors = [line for line in text.splitlines() if line.startswith("coral: error:")]
    assert "Traceback" not in text and len(errors) == 1, text
    return errors[0]


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_run_resumes(small_disk: Path, reference: Path) -> None:
    """The disk under CORAL_HOME filled up mid-run: the workers died on the queue database, the
    engine's failure path then failed to log run_failed (OSError) and to set the stop hold
    (sqlite3.OperationalError), and `coral run` ended in a wall of four chained tracebacks. Now
    it is one line saying why the workers died, and once space is freed `coral resume` ends
    the run as the uninterrupted one."""
    home = small_disk / "home"
    shutil.copytree(reference, home / "runs" / "reference")
    error = fill_the_disk_mid_run(home, small_disk)
    assert "disk is full" in error or "No space left" in error, error
    assert "`coral resume full`" in error
    resumed = coral(home, "resume", "full")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    identical_to_reference(home, "full")


@pytest.mark.slow
def test_a_full_disk_under_the_queue_database_alone_says_how_to_resume(small_disk: Path, reference: Path,
                                                                       tmp_path: Path) -> None:
    """The same full disk met first by the queue database (here the runs' folder lies on another
    disk, so only the queue's writes fail): one line naming the database and the remedy, and the
    resume ends the run as the uninterrupted one. Whether a worker's write fails first (every worker
    dies) or the engine's (the line named the database but not `coral resume`, until the engine
    added it: `TransportWriteFailed`) is a race; both lines say how to resume."""
    home = small_disk / "home"
    elsewhere = tmp_path / "runs"
    shutil.copytree(reference, elsewhere / "reference")
    home.mkdir()
    (home / "runs").symlink_to(elsewhere, target_is_directory=True)
    error = fill_the_disk_mid_run(home, small_disk)
    assert "local queue database" in error and "`coral resume full`" in error, error
    resumed = coral(home, "resume", "full")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    identical_to_reference(home, "full")
