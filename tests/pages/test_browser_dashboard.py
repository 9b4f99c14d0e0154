"""The dashboard in a real browser: Playwright driving Debian's Chromium against
`coral dashboard` on 127.0.0.1. Launches a run from the page, sees a genome's point before its
generation ends and the charts grow without a reload, pauses (the progress stays put: the queue
is held), continues, stops; launches two replicates and sees them join Compare as they register
and grouped there with n and the too-few-seeds note, without a reload; sees a complete lineage
drawn and the one definition of best named on Lineage and Runs; screenshots every page to
artifacts/screenshots/. While the run starts, "Time left" is an expected figure, never "paused";
the time from Start to the first genome point is printed with the load average.

The run uses stand-in job bodies (`coral dashboard --handlers`, test-only) so it takes seconds.
Needs a Chromium: `apt-get install chromium-headless-shell` (or `chromium`). Without one the
test is skipped, except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import json
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

REPO = Path(__file__).resolve().parents[2]
FAKES = "coral.testing.fakes:HANDLERS"
SCREENSHOTS = REPO / "artifacts" / "screenshots"
# Markers drawn in the Live page's per-genome chart (every trace), and in the first trace (best
# fitness) of its per-generation curves.
# Per Plotly plot, the largest count: while Streamlit swaps a figure, the old plot can be mounted
# beside the new one, or gone before the new one is drawn.
GENOMES_JS = """() => Math.max(0, ...[...document.querySelectorAll('.st-key-live-genomes .js-plotly-plot')]
  .map(p => p.querySelectorAll('.scatterlayer .trace .points path').length))"""
CURVES_JS = """() => {
  const trace = document.querySelector('.st-key-live-curves .scatterlayer .trace');
  return trace ? trace.querySelectorAll('.points path').length : 0;
}"""
METRIC_JS = """(label) => {
  const metric = [...document.querySelectorAll('[data-testid="stMetric"]')]
    .find(m => m.innerText.startsWith(label));
  return metric ? metric.querySelector('[data-testid="stMetricValue"]').innerText : '';
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
                # Each stand-in job takes 0.3 s: a generation of the quick config lasts seconds,
                # long enough to see genomes land before it ends, and to pause it.
                "CORAL_FAKE_SLEEP": "0.3"})
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


def run_state(home: Path, run_id: str) -> str | None:
    try:
        return json.loads((home / "runs" / run_id / "status.json").read_text())["state"]
    except FileNotFoundError:
        return None  # still registering


def counts(bar: str) -> str:
    """A progress bar's job counts ("generation 1 · test: 12/48 jobs"), without its rate, which
    keeps changing while paused (the window slides)."""
    return bar.split(" jobs")[0]


def _number(page, label: str, value: int) -> None:
    """Type into a number input and commit it (Enter), as a user would."""
    field = page.get_by_role("spinbutton", name=label)
    field.fill(str(value))
    field.press("Enter")
    page.wait_for_timeout(400)  # the page reruns with the new value


def test_live_pause_replicates_and_lineage_in_a_browser(browser_path: str, server: str,
                                                        tmp_path: Path) -> None:
    """One server, one long run and one pair of replicates for everything (CI time is tight)."""
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
            expect(page.get_by_text("Expected duration: about")).to_be_visible()
            expect(page.get_by_text("Deploy")).to_have_count(0)  # toolbarMode = viewer
            expect(page.get_by_role("spinbutton", name="Replicates (seeds)")).to_be_visible()
            page.screenshot(path=SCREENSHOTS / "launch.png", full_page=True)

            # The quick config (the default), long enough to watch, pause and stop.
            _number(page, "Generations", 400)
            _number(page, "Population", 12)  # generation 0: 103 jobs, ~16 s on two workers
            started = time.monotonic()
            page.get_by_role("button", name="Start run").click()
            expect(page.get_by_role("heading", name="Live run")).to_be_visible()
            page.evaluate("() => { window.__coralNoReload = true; }")
            # While the run starts, "Time left" is an estimate (or "estimating"), never "paused".
            seen_left: set[str] = set()
            deadline = time.monotonic() + 90
            while page.evaluate(GENOMES_JS) < 1:
                assert time.monotonic() < deadline, "no genome point within 90 s"
                seen_left.add(page.evaluate(METRIC_JS, "Time left"))
                page.wait_for_timeout(100)
            assert "paused" not in seen_left and any("(expected)" in v for v in seen_left), seen_left
            # A genome's point appears while generation 0 is still running (before any
            # per-generation curve exists): read both in one go.
            points, finished = page.wait_for_function(
                f"() => {{ const n = ({GENOMES_JS})(); "
                f"return n >= 1 ? [n, ({METRIC_JS})('Generations finished')] : null; }}",
                timeout=90_000).json_value()
            print(f"first genome point {time.monotonic() - started:.1f}s after Start "
                  f"({time.monotonic() - t0:.1f}s after the first page load): {points} point(s), "
                  f"finished {finished}, load average {os.getloadavg()[0]:.1f}")
            assert points >= 1 and finished.startswith("0 /"), (points, finished)
            page.screenshot(path=SCREENSHOTS / "live-mid-generation.png", full_page=True)
            page.wait_for_function(f"({GENOMES_JS})() > {points}", timeout=60_000)
            page.wait_for_function(f"({CURVES_JS})() >= 1", timeout=60_000)  # generation 0 done
            assert page.evaluate("() => window.__coralNoReload === true"), "the page reloaded"
            page.screenshot(path=SCREENSHOTS / "live.png", full_page=True)

            # Pause: nothing of the run starts; what was queued stays queued.
            page.locator("[class*='st-key-pause-'] button").click()
            state = page.get_by_test_id("stMetric").filter(has_text="State")
            expect(state).to_contain_text("paused")
            notice = page.get_by_text("Paused: no job of this run starts until Continue")
            expect(notice).to_be_visible()
            bars = page.get_by_test_id("stProgress")
            page.wait_for_timeout(2000)  # jobs started before the pause finish
            before = [counts(text) for text in bars.all_inner_texts()]
            page.wait_for_timeout(3000)
            after = [counts(text) for text in bars.all_inner_texts()]
            assert before == after and any("test:" in b for b in after), (before, after)
            page.screenshot(path=SCREENSHOTS / "live-paused.png", full_page=True)
            page.locator("[class*='st-key-continue-'] button").click()
            expect(state).to_contain_text("running")
            deadline = time.monotonic() + 30
            while [counts(text) for text in bars.all_inner_texts()] == after:  # work moves again
                assert time.monotonic() < deadline, "nothing moved after Continue"
                page.wait_for_timeout(300)
            # By widget key: the toolbar has a "Stop" button of its own (the script's).
            page.locator("[class*='st-key-stop-'] button").click()
            expect(state).to_contain_text("stopped")
            expect(page.get_by_test_id("stMetric").filter(has_text="Stopped at (UTC)")).to_be_visible()

            # Replicates: two seeds of one config in one action, grouped on the Compare page.
            page.goto(server)
            expect(page.get_by_role("heading", name="Launch a run")).to_be_visible()
            _number(page, "Generations", 2)
            _number(page, "Population", 2)
            _number(page, "Replicates (seeds)", 2)
            page.get_by_role("button", name="Start 2 runs").click()
            expect(page.get_by_role("heading", name="Compare runs")).to_be_visible()
            page.evaluate("() => { window.__coralNoReload = true; }")
            home = tmp_path / "home"
            replicates = sorted(p.name for p in (home / "runs").iterdir())[-2:]
            # Both join the selection as they register, without a reload.
            chosen = page.locator(".st-key-compare-runs")
            for run_id in replicates:
                expect(chosen).to_contain_text(run_id)
            deadline = time.monotonic() + 90
            while not all(run_state(home, r) == "finished" for r in replicates):
                assert time.monotonic() < deadline, "the replicates did not finish"
                time.sleep(0.5)
            # One group of two, drawn and labelled with n; two seeds are too few for a band.
            expect(page.get_by_text("n = 2 seeds").first).to_be_visible()
            expect(page.get_by_text("too wide to read").first).to_be_visible()
            expect(page.locator(".st-key-compare-chart .scatterlayer .trace").first).to_be_visible()
            # Their picks are not re-evaluated yet: the section says how to.
            expect(page.get_by_text("No re-evaluation to show").first).to_be_visible()
            assert page.evaluate("() => window.__coralNoReload === true"), "the page reloaded"
            page.wait_for_timeout(1000)
            page.screenshot(path=SCREENSHOTS / "compare-replicates.png", full_page=True)

            page.goto(f"{server}/lineage")
            expect(page.get_by_role("heading", name="Lineage", exact=True)).to_be_visible()
            expect(page.get_by_text("Path back to the first generation")).to_be_visible()
            expect(page.get_by_text("Lineage complete: every parent of every genome")).to_be_visible()
            expect(page.get_by_text("best = highest mean fitness over a genome's evaluations").first).to_be_visible()
            page.wait_for_function("() => document.querySelectorAll("
                                   "'.st-key-lineage-chart .scatterlayer .points path').length >= 1")
            page.wait_for_timeout(1000)
            page.screenshot(path=SCREENSHOTS / "lineage.png", full_page=True)

            for slug, heading, shown in (("live", "Live run", "stPlotlyChart"),
                                         ("pareto", "Pareto front & genomes", "stPlotlyChart"),
                                         ("runs", "Runs", "stDataFrame")):
                page.goto(f"{server}/{slug}")
                expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible()
                expect(page.get_by_test_id(shown).first).to_be_visible()
                expect(page.get_by_test_id("stException")).to_have_count(0)
                page.wait_for_timeout(1500)  # let charts draw before the picture
                page.screenshot(path=SCREENSHOTS / f"{slug}-finished.png", full_page=True)
            expect(page.get_by_test_id("stDataFrame").first).to_be_visible()
            # The Runs page names its best: the mean over the best genome's evaluations, with n.
            expect(page.get_by_text("Best fitness: best = highest mean fitness").first).to_be_visible()
            expect(page.get_by_text("(mean of ").first).to_be_visible()
        except BaseException:
            page.screenshot(path=SCREENSHOTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()


def _finished_run(home: Path, run_id: str, handlers: str = FAKES) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO)})
    return subprocess.run([sys.executable, "-m", "coral", "run", str(REPO / "configs" / "smoke.yaml"),
                           "--backend", "serial", "--handlers", handlers, "--run-id", run_id],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_page_url_opened_first_goes_through_the_app(browser_path: str, server: str,
                                                      tmp_path: Path) -> None:
    """A bookmarked page URL (here /runs) as a freshly started dashboard's first request: it runs
    through app.py (titled navigation, wide layout, the ingestor started: the store is written),
    not alone as in Streamlit's legacy pages/ mode (a sidebar of file names, no store)."""
    from playwright.sync_api import expect, sync_playwright

    home = tmp_path / "home"
    done = _finished_run(home, "bookmarked")
    assert done.returncode == 0, done.stderr[-2000:]
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}/runs")
            expect(page.get_by_role("heading", name="Runs", exact=True)).to_be_visible()
            nav = page.get_by_test_id("stSidebarNav")
            expect(nav.get_by_text("Pareto & genomes")).to_be_visible()
            expect(nav.get_by_text("app", exact=True)).to_have_count(0)
            deadline = time.monotonic() + 30
            while not (home / "store.snapshot.duckdb").exists():  # the ingestor's snapshot
                assert time.monotonic() < deadline, "no ingestor: the store was never written"
                page.wait_for_timeout(200)
            expect(page.get_by_test_id("stException")).to_have_count(0)
        finally:
            browser.close()


def test_a_run_error_is_shown_as_text(browser_path: str, server: str, tmp_path: Path) -> None:
    """A failed run's error (a job's exception: it can carry what the model wrote) on the Live
    page: the characters as they are, no image fetched, no link, no bold; the ANSI escape visible."""
    from playwright.sync_api import expect, sync_playwright

    from coral.testing.fakes import MARKDOWN_ERROR

    done = _finished_run(tmp_path / "home", "broken", "coral.testing.fakes:FAILS_WITH_MARKDOWN")
    assert done.returncode != 0 and "example.com" in done.stderr
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            fetched: list[str] = []
            page.on("request", lambda r: fetched.append(r.url) if "example.com" in r.url else None)
            page.goto(f"{server}/live")  # the only run: the failed one
            alert = page.get_by_test_id("stAlertContentError")
            expect(alert).to_contain_text("run failed:")
            shown = MARKDOWN_ERROR.replace("\x1b", "\\x1b")
            expect(alert).to_contain_text(shown)
            assert alert.locator("img, strong, a[href^=javascript], b").count() == 0
            page.wait_for_timeout(500)
            assert fetched == []
        finally:
            browser.close()


@pytest.mark.slow
def test_generated_code_shows_control_characters(browser_path: str, server: str, tmp_path: Path) -> None:
    """Candidate code with a right-to-left override (it reorders how the line reads), an ANSI
    escape and a NUL: the Pareto page's diff writes them out as escapes."""
    from playwright.sync_api import expect, sync_playwright

    done = _finished_run(tmp_path / "home", "spoof", "coral.testing.fakes:WRITES_SPOOFING_CODE")
    assert done.returncode == 0, done.stderr[-2000:]
    expect.set_options(timeout=60_000)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server}/pareto")
            code = page.get_by_test_id("stCode").first
            expect(code).to_contain_text("generated fix")
            text = code.inner_text()
            assert "user\\u202e \\u2066// admin\\u2069 \\u2066'\\x1b[8m\\x00" in text
            assert not any(c in text for c in "\u202e\u2066\u2069\x1b\x00")
        finally:
            browser.close()
