"""pytest configuration of the CORAL benchmark problems (QuixBugs layout).

Run from this directory:

    python -m pytest python_testcases/test_gcd.py             # tests the buggy program
    python -m pytest python_testcases/test_gcd.py --correct   # tests the reference fix

Some buggy programs loop forever on some inputs, so every test gets a time limit
(--case-timeout seconds, default 5, 0 disables) unless pytest-timeout is given a timeout.
"""
import signal
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def pytest_addoption(parser):
    parser.addoption(
        "--correct",
        action="store_true",
        default=False,
        help="test correct_python_programs instead of python_programs",
    )
    parser.addoption(
        "--case-timeout",
        type=float,
        default=5.0,
        help="seconds each test may run before it fails (0 disables)",
    )


def pytest_configure(config):
    pytest.use_correct = bool(getattr(config.option, "correct", False))


def pytest_ignore_collect(collection_path, config):
    # pytest.ini makes this directory the rootdir of any run pointed inside it.  A run
    # rooted higher up (e.g. at the repository) must not collect the deliberately failing,
    # sometimes hanging, buggy programs.
    if Path(config.rootpath).resolve() != HERE:
        return True
    return None


class CaseTimeout(Exception):
    pass


def _pytest_timeout_active(config):
    if not config.pluginmanager.hasplugin("timeout"):
        return False
    try:
        return bool(config.getoption("timeout") or config.getini("timeout"))
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def _case_timeout(request):
    config = request.config
    limit = getattr(config.option, "case_timeout", 0) or 0
    if limit <= 0 or not hasattr(signal, "setitimer") or _pytest_timeout_active(config):
        yield
        return

    def expire(signum, frame):
        raise CaseTimeout(f"test ran longer than {limit} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, limit)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
