"""Issue 27 in a real browser, on the cross-process Modal double: the double's server process
stands in for the cloud (the orchestrator and its workers run there, with stand-in job bodies),
and `coral dashboard --modal-double HANDLE` (a test hook) talks to it only through the Modal API.
Launch with backend `modal`, see a per-genome point during generation 0, pause (the counts stay
still for 10 s), continue, stop; then the dashboard's store holds exactly the rows rebuilt from
the run's event log on the double's Volume. It screenshots the Live page mid-generation to
artifacts/screenshots/modal-live-running.png (docs/img/ keeps a copy for docs/modal.md).

Needs a Chromium (chromium-headless-shell); skipped without one, except under CI=true.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import pytest
from test_modal_ingest import FAKES, from_volume
from test_store_support import store_rows

from coral.config import REPO_ROOT
from coral.testing.browser import BROWSER_ARGS, BROWSERS, find_browser
from coral.testing.modal_double import DoubleServer

QUICK = REPO_ROOT / "configs" / "quick.yaml"  # the Launch page's default config
SCREENSHOT = REPO_ROOT / "artifacts" / "screenshots" / "modal-live-running.png"
GENOMES_JS = """() => Math.max(0, ...[...document.querySelectorAll('.st-key-live-genomes .js-plotly-plot')]
  .map(p => p.querySelectorAll('.scatterlayer .trace .points path').length))"""
METRIC_JS = """(label) => {
  const metric = [...document.querySelectorAll('[data-testid="stMetric"]')]
    .find(m => m.innerText.startsWith(label));
  return metric ? metric.querySelector('[data-testid="stMetricValue"]').innerText : '';
}"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def counts(bar: str) -> str:
    return bar.split(" jobs")[0]  # without the rate, which slides while paused


def start_dashboard(tmp_path: Path, handle: Path, port: int) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
    env.update({"CORAL_HOME": str(tmp_path / "laptop"), "PYTHONPATH": str(REPO_ROOT)})
    log = open(tmp_path / "streamlit.log", "wb")  # the child holds it; closed with the test's tmp
    proc = subprocess.Popen([sys.executable, "-m", "coral", "dashboard", "--port", str(port),
                             "--modal-double", str(handle)],
                            cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return proc
        except OSError:
            pass
        assert proc.poll() is None, (tmp_path / "streamlit.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "streamlit did not come up within 60 s"
        time.sleep(0.2)


def stop_dashboard(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_modal_run_launched_watched_paused_and_stopped_in_a_browser(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from playwright.sync_api import expect, sync_playwright

    browser_path = find_browser()
    if browser_path is None:
        message = "no Chromium found (apt-get install chromium-headless-shell); looked at " + ", ".join(BROWSERS)
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    # Each stand-in job takes 0.3 s in the cloud: generation 0 lasts seconds, long enough to see
    # a genome land before it ends and to pause it.
    monkeypatch.setenv("CORAL_FAKE_SLEEP", "0.3")
    volumes = tmp_path / "volumes"
    laptop = tmp_path / "laptop"
    with DoubleServer() as cloud:
        cloud.deploy(QUICK, ["backend.kind=modal"], volumes, FAKES, scaledown_window=1.0,
                     launcher_interval=0.5)
        handle = cloud.write_handle(tmp_path / "double.json", volumes)
        api = cloud.client(volume_root=volumes)
        port = free_port()
        dashboard = start_dashboard(tmp_path, handle, port)
        try:
            expect.set_options(timeout=60_000)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
                page = browser.new_page(viewport={"width": 1400, "height": 1000})
                page.set_default_timeout(60_000)
                try:
                    page.goto(f"http://127.0.0.1:{port}")
                    expect(page.get_by_role("heading", name="Launch a run")).to_be_visible()
                    for label, value in (("Generations", 40), ("Population", 8)):
                        field = page.get_by_role("spinbutton", name=label)
                        field.fill(str(value))
                        field.press("Enter")
                        page.wait_for_timeout(400)
                    page.get_by_test_id("stSelectbox").filter(has_text="Backend").click()
                    page.get_by_role("option", name="modal", exact=True).click()
                    expect(page.get_by_role("combobox", name="Backend")).to_have_value("modal")
                    expect(page.get_by_text("Expected duration: about")).to_be_visible()
                    started = time.monotonic()
                    page.get_by_role("button", name="Start run").click()
                    expect(page.get_by_role("heading", name="Live run")).to_be_visible()

                    points, finished = page.wait_for_function(
                        f"() => {{ const n = ({GENOMES_JS})(); "
                        f"return n >= 1 ? [n, ({METRIC_JS})('Generations finished')] : null; }}",
                        timeout=120_000).json_value()
                    print(f"Modal double: first genome point {time.monotonic() - started:.1f}s after "
                          f"Start, load average {os.getloadavg()[0]:.1f}")
                    assert points >= 1 and finished.startswith("0 /"), (points, finished)
                    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=SCREENSHOT, scale="css")
                    runs = [p.stem for p in (laptop / "modal-runs").glob("*.json")]
                    assert len(runs) == 1, runs  # submitted to the double's cloud, noted here
                    run_id = runs[0]

                    page.locator("[class*='st-key-pause-'] button").click()
                    state = page.get_by_test_id("stMetric").filter(has_text="State")
                    expect(state).to_contain_text("paused")
                    bars = page.get_by_test_id("stProgress")
                    page.wait_for_timeout(4000)  # jobs running at the pause finish and land
                    before = [counts(text) for text in bars.all_inner_texts()]
                    page.wait_for_timeout(10_000)
                    after = [counts(text) for text in bars.all_inner_texts()]
                    assert before == after and any("test:" in b for b in after), (before, after)

                    page.locator("[class*='st-key-continue-'] button").click()
                    expect(state).to_contain_text("running")
                    deadline = time.monotonic() + 60
                    while [counts(text) for text in bars.all_inner_texts()] == after:
                        assert time.monotonic() < deadline, "nothing moved after Continue"
                        page.wait_for_timeout(300)
                    page.locator("[class*='st-key-stop-'] button").click()
                    expect(state).to_contain_text("stopped", timeout=120_000)
                    expect(page.get_by_test_id("stException")).to_have_count(0)
                except BaseException:
                    page.screenshot(path=tmp_path / "failure.png", full_page=True)
                    raise
                finally:
                    browser.close()

            expected = from_volume(api, run_id)
            assert expected["events"] and expected["genomes"]
            # The dashboard's ingestor (its one writer) fills the store; read it once it has let go.
            time.sleep(5)  # a few ingest cycles after the stop
            stop_dashboard(dashboard)
            deadline = time.monotonic() + 30
            while True:  # Streamlit (the dashboard's child) lets the store go as it exits
                try:
                    con = duckdb.connect(str(laptop / "store.duckdb"), read_only=True)
                    break
                except duckdb.IOException:
                    assert time.monotonic() < deadline, "the dashboard's store stayed locked"
                    time.sleep(0.5)
            with con:
                stored = store_rows(con, run_id)
            assert {t: len(r) for t, r in stored.items()} == {t: len(r) for t, r in expected.items()}
            assert stored == expected
        finally:
            stop_dashboard(dashboard)
