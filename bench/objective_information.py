"""Does each objective tell genomes apart, and is any a copy of another? Read from a real run.

    python bench/objective_information.py RUN_ID              # a run in $CORAL_HOME
    python bench/objective_information.py --events DIR        # a run's events folder

Reads the run's `job_finished` events (one per candidate: genome, problem, sample, the five
objectives), baselines left out. Per objective: mean, standard deviation and distinct values over
candidates, and over genome evaluations (a genome's candidates in one generation, each problem
weighing the same, as coral.sandbox.objectives.aggregate does); then the Pearson correlation
table over genome evaluations, the level selection works at. An objective is flagged
`constant` (one value over the run: it cannot order genomes) or `copy of X` (|r| >= 0.95 with an
objective listed before it: it adds nothing selection does not already have). Prints the tables
and one JSON line; docs/objectives.md records the verdicts.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from pathlib import Path

from coral.evolution.selection import OBJECTIVES
from coral.home import Home
from coral.run.engine import BASELINES
from coral.run.events import read_events

COPY = 0.95  # |r| at or above which two objectives order genomes alike


def pearson(xs: list[float], ys: list[float]) -> float:
    """Pearson's r; nan when either side is constant (no order to agree with)."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sx = math.sqrt(sum((x - mx) ** 2 for x in xs))
    sy = math.sqrt(sum((y - my) ** 2 for y in ys))
    if sx == 0 or sy == 0:
        return float("nan")
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / (sx * sy)


def collect(events_dir: Path) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """(candidate-level values, genome-evaluation-level means) per objective."""
    candidates: dict[str, list[float]] = defaultdict(list)
    groups: dict[tuple[int, str], dict[str, list[dict[str, float]]]] = defaultdict(lambda: defaultdict(list))
    for event in read_events(events_dir):
        if event.type != "job_finished" or event.data.get("genome") in BASELINES:
            continue
        # the objectives the log carries: a run made before an objective existed has no value for it
        values = {n: float(v) for n in OBJECTIVES if (v := event.data["objectives"].get(n)) is not None}
        for name, value in values.items():
            candidates[name].append(value)
        groups[(int(event.generation or 0), str(event.data["genome"]))][str(event.data["problem"])].append(values)
    genomes: dict[str, list[float]] = defaultdict(list)
    for by_problem in groups.values():
        for name in candidates:
            genomes[name].append(statistics.fmean(
                statistics.fmean(v[name] for v in samples) for samples in by_problem.values()))
    return dict(candidates), dict(genomes)


def verdicts(genomes: dict[str, list[float]]) -> tuple[dict[str, dict[str, float]], dict[str, str]]:
    names = list(genomes)
    table = {a: {b: pearson(genomes[a], genomes[b]) for b in names} for a in names}
    out: dict[str, str] = {}
    for index, name in enumerate(names):
        if len(set(genomes[name])) <= 1:
            out[name] = "constant"
            continue
        copies = [o for o in names[:index] if out.get(o) == "informative" and abs(table[name][o]) >= COPY]
        out[name] = f"copy of {copies[0]}" if copies else "informative"
    return table, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_id", nargs="?", help="a run in CORAL_HOME")
    parser.add_argument("--events", type=Path, help="a run's events folder instead")
    args = parser.parse_args(argv)
    if args.events is None and args.run_id is None:
        parser.error("give a RUN_ID or --events DIR")
    events_dir = args.events or Home().events_dir(args.run_id)
    if not Path(events_dir).is_dir():
        print(f"no events folder at {events_dir}", file=sys.stderr)
        return 2
    candidates, genomes = collect(Path(events_dir))
    if not genomes:
        print(f"no genome job_finished events in {events_dir}", file=sys.stderr)
        return 2
    table, verdict = verdicts(genomes)
    names = list(genomes)
    print(f"{len(candidates[names[0]])} candidates, {len(genomes[names[0]])} genome evaluations")
    print(f"{'objective':10} {'cand mean':>9} {'cand sd':>8} {'distinct':>8} {'genome mean':>11} "
          f"{'genome sd':>9}  verdict")
    for name in names:
        c, g = candidates[name], genomes[name]
        print(f"{name:10} {statistics.fmean(c):9.3f} {statistics.pstdev(c):8.3f} {len(set(c)):8d} "
              f"{statistics.fmean(g):11.3f} {statistics.pstdev(g):9.3f}  {verdict[name]}")
    print("correlation over genome evaluations (Pearson r):")
    print(" " * 11 + "".join(f"{n:>11}" for n in names))
    for a in names:
        print(f"{a:11}" + "".join(f"{table[a][b]:11.2f}" for b in names))
    print(json.dumps({"candidates": len(candidates[names[0]]), "genome_evaluations": len(genomes[names[0]]),
                      "correlation": {a: {b: None if math.isnan(r) else r for b, r in row.items()}
                                      for a, row in table.items()},  # constant: no r (null)
                      "verdict": verdict,
                      "genome_sd": {n: statistics.pstdev(genomes[n]) for n in names}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
