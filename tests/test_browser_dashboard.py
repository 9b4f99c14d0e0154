"""The dashboard in a real browser: Playwright driving Debian's Chromium against
`streamlit run app.py` on 127.0.0.1. Launches a run from the page, sees a live chart gain a
point without a reload, presses Stop, sees the state change; screenshots every page.

The run uses stand-in job bodies (`coral dashboard --handlers`, test-only) so it takes seconds.
Needs a Chromium: `apt-get install chromium-headless-shell` (or `chromium`). Without one the
test is skipped, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from coral.testing.browser import BROWSER_ARGS, BROWSERS, find_browser

REPO = Path(__file__).resolve().parents[1]
FAKES = "coral.testing.fakes:HANDLERS"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
# Markers drawn for the first trace (best fitness) of the first Plotly chart on the page.
POINTS_JS = """() => {
  const chart = document.querySelector('[data-testid="stPlotlyChart"]');
  const trace = chart && chart.querySelector('.scatterlayer .trace');
  return trace ? trace.querySelectorAll('.points path').length : 0;
}"""


@pytest.fixture(scope="module")
def browser_path() -> str:
    path = find_browser()
    if path is None:
        message = ("no Chromium found (apt-get install chromium-headless-shell); looked at "
                   + ", ".join(BROWSERS))
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
                "CORAL_FAKE_SLEEP": "0.01"})
    log = open(tmp_path / "streamlit.log", "wb")  # closed below
    proc = subprocess.Popen([sys.executable, "-m", "coral", "dashboard", "--port", str(port),
                             "--handlers", FAKES],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                    if answer.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "streamlit did not come up within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
        log.close()


def test_launch_watch_live_and_stop_in_a_browser(browser_path: str, server: str) -> None:
    from playwright.sync_api import expect, sync_playwright

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    expect.set_options(timeout=60_000)  # the first script run imports plotly and duckdb
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            t0 = time.monotonic()
            page.goto(server)
            expect(page.get_by_role("heading", name="Launch a run")).to_be_visible()
            page.screenshot(path=SCREENSHOTS / "launch.png", full_page=True)

            # Pick the smoke config, make it long enough to stop mid-run, start it.
            page.get_by_test_id("stSelectbox").filter(has_text="Config").click()
            page.get_by_role("option", name="smoke.yaml").click()
            generations = page.get_by_role("spinbutton", name="Generations")
            expect(generations).to_have_count(1)  # the old config's form is gone
            expect(generations).to_have_value("2")
            generations.fill("400")  # long enough to be running when Stop is pressed
            page.get_by_role("spinbutton", name="Population").fill("2")
            page.get_by_role("button", name="Start run").click()

            expect(page.get_by_role("heading", name="Live run")).to_be_visible()
            print(f"live page after {time.monotonic() - t0:.1f}s")
            page.evaluate("() => { window.__coralNoReload = true; }")
            page.wait_for_function(f"({POINTS_JS})() >= 1", timeout=90_000)
            first = page.evaluate(POINTS_JS)
            print(f"first point after {time.monotonic() - t0:.1f}s")
            page.wait_for_function(f"({POINTS_JS})() > {first}", timeout=90_000)
            assert page.evaluate("() => window.__coralNoReload === true"), "the page reloaded"
            # The fragment swaps the chart when a generation lands: picture it once it is drawn again.
            page.wait_for_function(f"({POINTS_JS})() >= 1", timeout=30_000)
            page.screenshot(path=SCREENSHOTS / "live.png", full_page=True)

            # By widget key: the toolbar has a "Stop" button of its own (the script's).
            page.locator("[class*='st-key-stop-'] button").click()
            state = page.get_by_test_id("stMetric").filter(has_text="State")
            expect(state).to_contain_text("stopped", timeout=60_000)
            page.screenshot(path=SCREENSHOTS / "live-stopped.png", full_page=True)

            for slug, heading in (("pareto", "Pareto front & genomes"), ("compare", "Compare runs"),
                                  ("runs", "Runs")):
                page.goto(f"{server}/{slug}")
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                expect(page.get_by_test_id("stException")).to_have_count(0)
                page.wait_for_timeout(1500)  # let charts draw before the picture
                page.screenshot(path=SCREENSHOTS / f"{slug}.png", full_page=True)
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
        except BaseException:
            page.screenshot(path=SCREENSHOTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()
