"""Dashboard benchmark: live refresh latency in a real browser, and page query time at 1M rows.

    python bench/dashboard.py [--rows 1000000] [--repeats 5] [--generations 8] [--skip-live]

1. Live latency: `coral dashboard` on a free 127.0.0.1 port, a long run on stand-in job bodies
   (stopped once --generations more generations are drawn), Chromium (Debian's, via
   Playwright) on the Live page. For each generation, latency = the moment its point is drawn
   in the page minus the wall time of its generation_finished event (written to the run's log
   as it is emitted). "first chart": the first trace of the first chart (best fitness); "all
   charts": the moment every chart on the page shows it. Both count the generations that
   finish once the first chart is drawn: a refresh, not the page's first load (Plotly's 4.7 MB
   bundle takes seconds to load on 2 cores). "first chart, from page open" counts from when the
   page's status shows, the rule of the figures before 2026-11-28 23:00. Target: <= 2 s.
2. Page query time: a store with --rows synthetic evaluation rows (bench/store.py's generator,
   ingested and snapshotted); the median time of the coral calls each page makes. Target:
   <= 300 ms per page. Baseline in the same run: `analysis.load_run` (every row of one run),
   what a page would cost if it loaded a run whole.
3. Time to the first plotted point (--first-point N): the Launch page's default config
   (configs/quick.yaml: the bundled tiny model, real training, generation and sandboxed tests)
   launched N times as the page launches it (coral.services.dashboard.launch_run); the clock
   starts at the launch and stops when the Live page, opened at once, has drawn a genome's point
   (also: when the engine wrote it to progress.json, and the difference: how long generation 0's
   first genome took to be drawn). Each run is stopped after its first point.
   Target: <= 30 s on 2 cores. Also the mean job time per stage of those runs, the reference
   times of coral.services.live.REFERENCE.
4. Live latency per genome result (part of 1): the Live page's per-genome chart, each genome's
   point drawn minus the time the engine recorded its scores (progress.json). Target <= 2 s.
Prints a table and one JSON line last.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from coral import analysis
from coral.analysis import figures
from coral.analysis.live import genome_points, genomes_chart
from coral.analysis.replicates import replicate_chart
from coral.errors import CoralError
from coral.home import Home
from coral.run.progress import read_progress
from coral.run.registry import run_info
from coral.services import dashboard
from coral.services.live import live_view
from coral.store.ingest import Ingestor
from coral.testing.browser import BROWSER_ARGS, find_browser

REPO = Path(__file__).resolve().parents[1]

# Records, per change, (points of the first chart, fewest points of any chart, Date.now()/1000):
# the first trace (best fitness, or the chart's only curve) of each Plotly chart on the page.
WATCH_JS = """() => {
  window.__points = [];
  // The per-generation curves (one figure of eight panels); the per-genome chart above them is
  // watched separately (WATCH_GENOMES_JS).
  const counts = () => [...document.querySelectorAll('.st-key-live-curves .js-plotly-plot')].map(chart => {
    const trace = chart.querySelector('.scatterlayer .trace');
    return trace ? trace.querySelectorAll('.points path').length : 0;
  });
  let last = '';
  const tick = () => {
    const n = counts();
    const key = n.join(',');
    if (key !== last) {
      last = key;
      window.__points.push([n.length ? n[0] : 0, n.length ? Math.min(...n) : 0, Date.now() / 1000]);
    }
    requestAnimationFrame(tick);
  };
  tick();
}"""
FIRST_DRAWN_JS = "() => window.__points.some(p => p[0] >= 1)"
# Records (points in the per-genome chart, Date.now()/1000) whenever the count changes.
WATCH_GENOMES_JS = """() => {
  window.__genomes = [];
  let last = -1;
  const tick = () => {
    // Per Plotly plot, the largest: while Streamlit swaps figures, the old one can still be mounted.
    const plots = [...document.querySelectorAll('.st-key-live-genomes .js-plotly-plot')];
    const n = Math.max(0, ...plots.map(p => p.querySelectorAll('.scatterlayer .trace .points path').length));
    if (n !== last) { last = n; window.__genomes.push([n, Date.now() / 1000]); }
    requestAnimationFrame(tick);
  };
  tick();
}"""
SHOWN_JS = "() => window.__points.length ? window.__points[window.__points.length - 1][1] : 0"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop_run(home: Home, run_id: str) -> None:
    """Stop the detached run (it would outlive the bench), as the page's Stop button does."""
    status = home.run_dir(run_id) / "status.json"
    if not status.exists():
        return
    try:
        dashboard.request_control(run_id, "stop", home)
    except CoralError:
        return  # not active any more
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and json.loads(status.read_text())["state"] in ("running", "paused"):
        time.sleep(0.5)
    _wait_gone(json.loads(status.read_text()).get("pid"), group=False)


def _wait_gone(pid: int | None, group: bool, timeout: float = 30.0) -> None:
    """Wait until a process (or process group) has exited, so its home can be removed."""
    deadline = time.monotonic() + timeout
    while pid and time.monotonic() < deadline:
        try:
            os.killpg(pid, 0) if group else os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)


def _finished(home: Path) -> dict[int, float]:
    """generation -> wall time of its generation_finished event, from the run's log."""
    finished = {}
    for path in sorted((home / "runs" / "live" / "events").glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if '"generation_finished"' in line:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the last line, still being written
                if event["type"] == "generation_finished":
                    finished[event["generation"]] = event["wall_time"]
    return finished


def live_latency(generations: int, sleep: float) -> dict[str, list[float]]:
    from playwright.sync_api import sync_playwright

    browser_path = find_browser()
    if browser_path is None:
        raise SystemExit("no Chromium: apt-get install chromium-headless-shell")
    with tempfile.TemporaryDirectory(prefix="coral-bench-dash-") as tmp:
        home = Path(tmp) / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
        env.update({"CORAL_HOME": str(home), "PYTHONPATH": str(REPO), "CORAL_FAKE_SLEEP": str(sleep)})
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "coral", "dashboard", "--port", str(port)],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
            # A long run, stopped once `generations` refreshes were seen: the smoke config's
            # generations take about a second, less than the page's first load on 2 cores.
            run = subprocess.run(
                [sys.executable, "-m", "coral", "run", str(dashboard.SMOKE_CONFIG), "--detach",
                 "--run-id", "live", "--handlers", "coral.testing.fakes:HANDLERS",
                 "--set", "population=2", "--set", f"generations={generations + 400}"],
                cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
            if run.returncode != 0:
                raise SystemExit(run.stderr)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
                page = browser.new_page()
                page.goto(f"{url}/live")
                page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
                page.evaluate(WATCH_JS)
                page.evaluate(WATCH_GENOMES_JS)
                opened = time.time()
                page.wait_for_function(FIRST_DRAWN_JS, timeout=120_000, polling=100)
                first_drawn = time.time()
                deadline = time.monotonic() + 60 + generations * 20
                while time.monotonic() < deadline:  # until `generations` live refreshes are drawn
                    time.sleep(0.5)
                    watched = [g for g, put in _finished(home).items() if put >= first_drawn + 1.0]
                    if len(watched) >= generations and page.evaluate(SHOWN_JS) >= max(watched) + 1:
                        break
                points = page.evaluate("() => window.__points")
                genome_points = page.evaluate("() => window.__genomes")
                browser.close()
        finally:
            _stop_run(Home(home), "live")
            os.killpg(server.pid, 15)
            server.wait(30)
            _wait_gone(server.pid, group=True)  # streamlit itself writes a last store snapshot
        finished = _finished(home)
        landed = [g["at"] for g in (read_progress(Home(home), "live") or {}).get("genomes", [])]
    # Point count n drawn means generations 0..n-1 are on the chart.
    out: dict[str, list[float]] = {"first chart": [], "all charts": [], "first chart, from page open": [],
                                   "per genome": []}
    # The per-genome chart: genome i (landing order) is drawn once the count reaches i + 1.
    first_genome = next((t for n, t in genome_points if n >= 1), None)
    for index, at in enumerate(landed):
        drawn = next((t for n, t in genome_points if n >= index + 1), None)
        if first_genome is not None and drawn is not None and at >= first_genome + 1.0:
            out["per genome"].append(drawn - at)
    for generation, put in sorted(finished.items()):
        first = next((t for n, _, t in points if n >= generation + 1), None)
        every = next((t for _, n, t in points if n >= generation + 1), None)
        if put >= opened + 1.0 and first is not None:
            out["first chart, from page open"].append(max(0.0, first - put))
        if put < first_drawn + 1.0:
            continue  # finished before the page was watching: not a live update
        if first is not None:
            out["first chart"].append(max(0.0, first - put))
        if every is not None:
            out["all charts"].append(max(0.0, every - put))
    return out


def first_point(repeats: int, config: Path) -> dict[str, list[float]]:
    """Launch `config` as the Launch page does, open the Live page at once, and time the first
    genome's point (drawn in Chromium, and written by the engine). Each run is stopped then."""
    from playwright.sync_api import sync_playwright

    browser_path = find_browser()
    if browser_path is None:
        raise SystemExit("no Chromium: apt-get install chromium-headless-shell")
    out: dict[str, list[float]] = {"drawn": [], "written": [], "lag": [], "train": [], "generate": [],
                                   "test": []}
    with tempfile.TemporaryDirectory(prefix="coral-bench-first-") as tmp:
        home = Home(Path(tmp) / "home").ensure()
        env = {k: v for k, v in os.environ.items() if not k.startswith("MODAL_")}
        env.update({"CORAL_HOME": str(home.root), "PYTHONPATH": str(REPO)})
        os.environ["CORAL_HOME"] = str(home.root)
        port = free_port()
        server = subprocess.Popen([sys.executable, "-m", "coral", "dashboard", "--port", str(port)],
                                  cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            for _ in range(300):
                try:
                    with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                        break
                except OSError:
                    time.sleep(0.2)
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=browser_path, args=BROWSER_ARGS)
                for _ in range(repeats):
                    page = browser.new_page()
                    page.goto(f"{url}/runs")  # Streamlit and its scripts warm, as for a user on the page
                    page.wait_for_selector("h1", timeout=60_000)
                    started = time.time()
                    run_id = dashboard.launch_run(dashboard.LaunchRequest.from_config(config), home)
                    # The Launch button switches to the Live page, which waits for the run to
                    # register (a second or two) and then shows it: open it once registered.
                    while not home.run_config(run_id).exists():
                        time.sleep(0.05)
                    page.goto(f"{url}/live")
                    page.wait_for_function("() => document.querySelectorAll("
                                           "'.st-key-live-genomes .scatterlayer .points path').length >= 1",
                                           timeout=600_000, polling=100)
                    out["drawn"].append(time.time() - started)
                    progress = read_progress(home, run_id) or {}
                    out["written"].append(progress["genomes"][0]["at"] - started)
                    # Generation 0's first genome: drawn minus written (the page was open before it landed).
                    out["lag"].append(out["drawn"][-1] - out["written"][-1])
                    page.close()
                    _stop_run(home, run_id)
                    progress = read_progress(home, run_id) or {}
                    for stage in ("train", "generate", "test"):
                        done = progress.get("jobs_done", {}).get(stage)
                        if done:
                            out[stage].append(progress["busy"][stage] / done)
                browser.close()
        finally:
            os.killpg(server.pid, 15)
            server.wait(30)
            _wait_gone(server.pid, group=True)
    return out


def page_queries(rows: int, repeats: int) -> tuple[dict[str, float], float, int]:
    spec = importlib.util.spec_from_file_location("bench_store", REPO / "bench" / "store.py")
    assert spec is not None and spec.loader is not None
    bench_store = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_store)
    runs, genomes, problems = 10, 20, 100
    generations = max(1, rows // (runs * genomes * problems))
    with tempfile.TemporaryDirectory(prefix="coral-bench-dash-") as tmp:
        home = Home(Path(tmp)).ensure()
        total = sum(bench_store.write_run(home, f"run{r:02d}", generations, genomes, problems)
                    for r in range(runs))
        ingestor = Ingestor(home, None)
        ingestor.run_once(snapshot=True)
        ingestor.stop()
        run, gen = "run00", generations // 2
        genome = f"g{gen:03d}x000"

        def live_page() -> None:  # status, then the charts as rebuilt when a generation lands
            run_info(home, run)
            live_view(run, home)
            genomes_chart(genome_points(run, home))
            figures.live_figure(run, home)

        def pareto_page() -> None:
            dashboard.scored_generations(run, home)
            figures.pareto_figure(run, gen, ["bugfix", "style", "syntax"], home)
            analysis.front_hypervolume(run, gen, ["bugfix", "style", "syntax"], home=home)
            dashboard.genome_table(run, gen, home)
            analysis.genome_detail(run, genome, home)

        def compare_page() -> None:  # three runs: replicates grouped, the table, final metrics
            ids = [f"run{r:02d}" for r in range(3)]
            analysis.list_runs(home)
            replicate_chart(analysis.replicate_curves(ids, "fitness", "best", home))
            analysis.compare_runs(ids, "fitness", home)

        def runs_page() -> None:
            table = analysis.list_runs(home)
            for run_id in table["run_id"]:
                dashboard.run_times(run_id, home)
            dashboard.best_genome(run, home)

        pages = {"live": live_page, "pareto": pareto_page, "compare": compare_page, "runs": runs_page}
        timings = {name: round(bench_store.median_ms(fn, repeats), 1) for name, fn in pages.items()}
        baseline = round(bench_store.median_ms(lambda: analysis.load_run(run, home), repeats), 1)
    return timings, baseline, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=0.1, help="CORAL_FAKE_SLEEP per job")
    parser.add_argument("--skip-live", action="store_true")
    parser.add_argument("--skip-queries", action="store_true")
    parser.add_argument("--first-point", type=int, default=0, metavar="N",
                        help="launch the Launch page's default config N times; time its first point")
    args = parser.parse_args(argv)
    result: dict = {"load_average": os.getloadavg()[0]}
    if args.first_point:
        from coral.services.live import DEFAULT_CONFIG

        times = first_point(args.first_point, dashboard.CONFIG_DIR / DEFAULT_CONFIG)
        result["first_point_s"] = {k: [round(v, 2) for v in vs] for k, vs in times.items()}
        for key in ("drawn", "written"):
            print(f"first point {key}: median {statistics.median(times[key]):.1f} s over "
                  f"{len(times[key])} launches of {DEFAULT_CONFIG} (target <= 30 s)")
        print(f"generation 0's first genome, drawn minus written: median {statistics.median(times['lag']):.1f} s, "
              f"max {max(times['lag']):.1f} s (target <= 2 s)")
        print("mean job time: " + ", ".join(f"{s} {statistics.median(times[s]):.2f} s"
                                            for s in ("train", "generate", "test") if times[s]))
    if not args.skip_live:
        result["live_latency_s"] = {}
        for name, latencies in live_latency(args.generations, args.sleep).items():
            if not latencies:
                print(f"live refresh latency, {name}: no generation seen")
                continue
            stats = {"median": round(statistics.median(latencies), 2), "max": round(max(latencies), 2),
                        "points": len(latencies)}
            result["live_latency_s"][name] = stats
            unit = "genome results" if name == "per genome" else "generations"
            print(f"live refresh latency, {name}: median {stats['median']} s, max {stats['max']} s "
                  f"over {len(latencies)} {unit} (target <= 2 s)")
    if not args.skip_queries:
        timings, baseline, rows = page_queries(args.rows, args.repeats)
        result.update(rows=rows, page_ms=timings, load_run_ms=baseline)
        print(f"page query time at {rows:,} evaluation rows (median of {args.repeats}, target <= 300 ms):")
        for name, ms in timings.items():
            print(f"  {name:8} {ms:8.1f} ms   ({baseline / ms:5.1f}x faster than load_run)")
        print(f"  baseline analysis.load_run of one run: {baseline:.1f} ms")
    print(f"load average at the start: {result['load_average']:.1f}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
