"""Queries over the run store, shared by the dashboard and notebooks (figures: coral.analysis.figures).

Reads never take DuckDB's write lock: they open the snapshot the ingestor replaces atomically
(CORAL_HOME/store.snapshot.duckdb), or, when no snapshot exists, an in-memory store built from
the run logs by the same ingest code (kept per home and caught up on each call).
The snapshot is attached once per file version and again only when the file is replaced (inode,
mtime or size changed); each call reads through its own cursor, so threads never share one.
Every function takes an optional `home` (default: CORAL_HOME).
"""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd

from coral.analysis.genome_means import fitness_by_genome, rank_best, score_rows
from coral.errors import CoralError
from coral.evolution import ca
from coral.evolution.genome import CASeed
from coral.evolution.pareto import front_ranks, hypervolume
from coral.home import Home
from coral.run.evaluate import mean_se as _mean_se
from coral.run.registry import list_runs as registered
from coral.store.ingest import Ingestor
from coral.store.schema import METRICS, OBJECTIVES, SCHEMA_VERSION
from coral.store.store import snapshot_path

__all__ = [
    "CURVE_COLUMNS", "RunCurves", "RunData", "baseline", "baselines", "cache_curve", "compare_runs",
    "connect", "diversity_curves", "evaluation_counts", "fitness_curves", "front_hypervolume",
    "genome_detail", "hypervolume", "list_runs", "load_run", "mean_se", "pareto", "run_curves",
]

_from_logs: dict[Path, Any] = {}  # home root -> in-memory Ingestor (logs only)
_from_logs_lock = threading.Lock()


_readers: duckdb.DuckDBPyConnection | None = None  # the in-memory database snapshots attach to
_aliases = itertools.count()


class _Snapshot:
    """One version of the snapshot file (identified by `key`), ATTACHed read-only under its own
    alias to one in-memory database per process.

    ATTACH, not `duckdb.connect(path)`: DuckDB caches instances by path, so a second connect
    while this one lives would hand back the old file's data after the ingestor replaced it.
    One database for all versions, not one each: creating and closing an in-memory database cost
    ~40 ms, paid on every new snapshot (about one per finished generation); an ATTACH costs ~3 ms.
    The file's next version attaches under a new alias while readers of this one finish.
    """

    def __init__(self, path: Path, key: tuple[int, int, int]) -> None:
        global _readers
        self.key = key
        self.users = 0
        self.stale = False
        self.alias = f"snap{next(_aliases)}"
        if _readers is None:
            _readers = duckdb.connect(":memory:")
        self.con = _readers
        quoted = str(path).replace("'", "''")
        try:
            self.con.execute(f"ATTACH '{quoted}' AS {self.alias} (READ_ONLY)")
        except duckdb.Error as exc:
            raise CoralError(f"cannot read the store snapshot {path}: {str(exc).splitlines()[0]}") from None
        try:
            (version,) = self.con.execute(f"SELECT max(version) FROM {self.alias}.schema_version").fetchall()[0]
        except duckdb.Error as exc:
            self.close()
            raise CoralError(f"cannot read the store snapshot {path}: {str(exc).splitlines()[0]}") from None
        if version is not None and version > SCHEMA_VERSION:
            self.close()
            raise CoralError(f"{path}: schema version {version} is newer than this CORAL "
                             f"({SCHEMA_VERSION}); upgrade CORAL")

    @property
    def attached(self) -> bool:
        with self.con.cursor() as cursor:
            return bool(cursor.execute("SELECT count(*) FROM duckdb_databases() WHERE database_name = ?",
                                       [self.alias]).fetchall()[0][0])

    def close(self) -> None:
        self.con.execute(f"DETACH {self.alias}")


_snapshots: dict[Path, _Snapshot] = {}  # snapshot path -> its current version
_snapshots_lock = threading.Lock()


def _file_key(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


@contextmanager
def _snapshot_cursor(snap: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor on the file's current version; a replaced file is attached anew, and the old
    version is detached when its last reader is done."""
    with _snapshots_lock:
        key = _file_key(snap)
        if key is None:
            raise CoralError(f"no store snapshot at {snap}: run `coral ingest` or open the dashboard")
        entry = _snapshots.get(snap)
        if entry is None or entry.key != key:
            if entry is not None:
                entry.stale = True
                if entry.users == 0:
                    entry.close()
            entry = _snapshots[snap] = _Snapshot(snap, key)
        entry.users += 1
        cursor = entry.con.cursor()
    try:
        cursor.execute(f"USE {entry.alias}")
        yield cursor
    finally:
        cursor.close()
        with _snapshots_lock:
            entry.users -= 1
            if entry.stale and entry.users == 0:
                entry.close()


@contextmanager
def connect(home: Home | None = None, source: str = "auto") -> Iterator[duckdb.DuckDBPyConnection]:
    """A read connection: the snapshot ("snapshot"), the logs ("logs"), or whichever exists."""
    home = home or Home()
    snap = snapshot_path(home)
    if source not in ("auto", "snapshot", "logs"):
        raise CoralError(f"unknown store source {source!r} (auto, snapshot or logs)")
    if source == "snapshot" or (source == "auto" and snap.is_file()):
        with _snapshot_cursor(snap) as cursor:
            yield cursor
        return

    with _from_logs_lock:  # one in-memory store per home; its connection is used under this lock
        ingestor = _from_logs.get(home.root)
        if ingestor is None:
            ingestor = _from_logs[home.root] = Ingestor(home, None, db_path=":memory:")
        ingestor.run_once(snapshot=False)
        cursor = ingestor.store.con.cursor()
        try:
            yield cursor
        finally:
            cursor.close()


def _df(con: duckdb.DuckDBPyConnection, sql: str, params: list[Any] | None = None) -> pd.DataFrame:
    return con.execute(sql, params or []).df()


def check_run(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any]:
    row = con.execute("SELECT * FROM runs WHERE run_id = ?", [run_id]).df()
    if row.empty:
        try:
            why = con.execute("SELECT reason FROM unreadable WHERE run_id = ?", [run_id]).fetchall()
        except duckdb.CatalogException:  # a snapshot from before schema version 4 has no such table
            why = []
        if why:  # its folder is there but the ingestor could not read it: say why, not "no run"
            raise CoralError(f"run {run_id!r} cannot be read into the store: {why[0][0]}")
        raise CoralError(f"no run {run_id!r} in the store (not ingested yet, or a wrong id)")
    return row.iloc[0].to_dict()


def run_id_list(run_ids: str | Sequence[str]) -> list[str]:
    """Run ids as a list, in order, once each. One id given as a string is that run, not its
    characters (a notebook's `best_genomes("r1")` read runs 'r' and '1': an empty table)."""
    return [run_ids] if isinstance(run_ids, str) else list(dict.fromkeys(run_ids))


def _metrics(names: Sequence[str] | None) -> list[str]:
    chosen = list(names) if names else list(METRICS)
    unknown = [n for n in chosen if n not in METRICS]
    if unknown:
        raise CoralError(f"unknown objective {unknown[0]!r} (known: {', '.join(METRICS)})")
    return chosen


# ---------------------------------------------------------------------- runs


def list_runs(home: Home | None = None) -> pd.DataFrame:
    """Every registered run (run directories: always current) with what the store knows, its best
    genome among them (coral.analysis.best: best_fitness is that genome's mean over its
    best_evaluations evaluations, best_se their standard error)."""

    home = home or Home()
    runs = pd.DataFrame([r.as_dict() for r in registered(home)],
                        columns=["run_id", "state", "generation", "generations", "strategy",
                                 "backend", "updated"])
    with connect(home) as con:
        stored = _df(con, "SELECT run_id, generations_done, last_event FROM runs")
        # The one definition of best (coral.analysis.best, rank_best).
        best = fitness_by_genome(score_rows(con, None))
        if not best.empty:
            best = rank_best(best).drop_duplicates("run_id")
        stored = stored.merge(best.rename(columns={"fitness": "best_fitness", "evaluations": "best_evaluations",
                                                   "se": "best_se", "genome_id": "best_genome"})
                              [["run_id", "best_fitness", "best_evaluations", "best_se", "best_genome"]],
                              on="run_id", how="left")
        # Why the ingestor cannot read a run (None: it can); a snapshot older than schema 4 has no table.
        has_table = con.execute("SELECT count(*) FROM information_schema.tables "
                                "WHERE table_name = 'unreadable' AND table_catalog = current_database()"
                                ).fetchall()[0][0]
        unreadable = (_df(con, "SELECT run_id, reason AS unreadable FROM unreadable") if has_table
                      else pd.DataFrame(columns=["run_id", "unreadable"]))
    return runs.merge(stored, on="run_id", how="left").merge(unreadable, on="run_id", how="left")


@dataclass
class RunData:
    run: dict[str, Any]
    generations: pd.DataFrame  # one row per generation (best_*, mean_*, diversity, cache, gate)
    scores: pd.DataFrame  # one row per genome per generation
    genomes: pd.DataFrame  # genes, knobs and lineage per genome
    evaluations: pd.DataFrame  # one row per candidate: genome x problem x sample
    baseline: dict[str, Any] | None


def load_run(run_id: str, home: Home | None = None) -> RunData:
    with connect(home) as con:
        run = check_run(con, run_id)
        return RunData(
            run=run,
            generations=_df(con, "SELECT * FROM generations WHERE run_id = ? ORDER BY generation", [run_id]),
            scores=_df(con, "SELECT * FROM scores WHERE run_id = ? ORDER BY generation, genome_id", [run_id]),
            genomes=_df(con, "SELECT * FROM genomes WHERE run_id = ? ORDER BY generation, genome_id", [run_id]),
            evaluations=_df(con, "SELECT * FROM evaluations WHERE run_id = ? "
                                 "ORDER BY generation, genome_id, problem, sample", [run_id]),
            baseline=_baseline(con, run_id),
        )


# ---------------------------------------------------------------------- curves


def fitness_curves(run_id: str, objectives: Sequence[str] | None = None,
                   home: Home | None = None) -> pd.DataFrame:
    """Long form: generation, metric, stat (best | mean), value. Metrics: objectives,
    fixed_at_k and fitness (the weighted sum)."""
    names = _metrics(objectives)
    selects = " UNION ALL ".join(
        f"SELECT generation, '{m}' AS metric, '{s}' AS stat, {s}_{m} AS value FROM g"
        for m in names for s in ("best", "mean"))
    with connect(home) as con:
        check_run(con, run_id)
        return _df(con, f"WITH g AS (SELECT * FROM generations WHERE run_id = ?) {selects} "
                        "ORDER BY metric, stat, generation", [run_id])


# Per-generation columns every curve is drawn from (wide form: best_M and mean_M per metric M).
CURVE_COLUMNS = ("generation", *(f"{s}_{m}" for m in METRICS for s in ("best", "mean")),
                 "genotype_diversity", "phenotype_distinct", "phenotype_share",
                 "cache_hits", "cache_misses", "cache_hit_rate")


@dataclass
class RunCurves:
    generations: pd.DataFrame  # CURVE_COLUMNS, one row per finished generation, in order
    baseline: dict[str, Any] | None


def run_curves(run_id: str, home: Home | None = None) -> RunCurves:
    """Every per-generation curve of a run (best and mean of each metric, diversity, cache hits)
    and its baseline, in one read: the Live page's panels (one per objective and three more) come
    from this one query (it was one query each, three with the run check and baseline). Same
    numbers as fitness_curves, diversity_curves and cache_curve."""
    with connect(home) as con:
        frame = _df(con, f"SELECT {', '.join(CURVE_COLUMNS)} FROM generations WHERE run_id = ? "
                         "ORDER BY generation", [run_id])
        if frame.empty:
            check_run(con, run_id)  # an unknown run is an error; a run with no generation yet is not
        return RunCurves(frame, _baseline(con, run_id))


def diversity_curves(run_id: str, home: Home | None = None) -> pd.DataFrame:
    with connect(home) as con:
        check_run(con, run_id)
        return _df(con, "SELECT generation, genotype_diversity, phenotype_distinct, phenotype_share "
                        "FROM generations WHERE run_id = ? ORDER BY generation", [run_id])


def cache_curve(run_id: str, home: Home | None = None) -> pd.DataFrame:
    with connect(home) as con:
        check_run(con, run_id)
        return _df(con, "SELECT generation, cache_hits, cache_misses, cache_hit_rate "
                        "FROM generations WHERE run_id = ? ORDER BY generation", [run_id])


def _baseline(con: duckdb.DuckDBPyConnection, run_id: str) -> dict[str, Any] | None:
    row = _df(con, "SELECT * FROM baselines WHERE run_id = ?", [run_id])
    if row.empty:
        return None
    out = row.iloc[0].to_dict()
    out["problems"] = json.loads(out["problems"]) if out.get("problems") else {}
    return out


def baseline(run_id: str, home: Home | None = None) -> dict[str, Any] | None:
    """The untuned model's metrics (greedy decoding), drawn as a line on the fitness curves."""
    with connect(home) as con:
        check_run(con, run_id)
        return _baseline(con, run_id)


def baselines(run_id: str, home: Home | None = None) -> dict[str, dict[str, Any] | None]:
    """Both baselines of a run (docs/engine.md), each {objectives, samples, problems, ...}:
    "baseline", the model without adapter at the config's default knobs, and "echo", the buggy
    program returned unchanged. None for one the run does not have (runs from before echo)."""
    with connect(home) as con:
        check_run(con, run_id)
        row = _df(con, """SELECT data FROM run_events WHERE run_id = ? AND type = 'baseline_finished'
                          ORDER BY seq DESC LIMIT 1""", [run_id])
    if row.empty:
        return {"baseline": None, "echo": None}
    data = json.loads(row.iloc[0]["data"])
    plain = {k: v for k, v in data.items() if k != "echo"}
    return {"baseline": plain, "echo": data.get("echo")}


def evaluation_counts(run_id: str, home: Home | None = None) -> pd.DataFrame:
    """generation, genome_id, evaluations: how many evaluations each genome's scores average
    (noise control: survivors are evaluated again each generation, docs/engine.md)."""
    with connect(home) as con:
        check_run(con, run_id)
        rows = _df(con, """SELECT generation, data FROM run_events
                           WHERE run_id = ? AND type = 'generation_finished' ORDER BY generation""",
                   [run_id])
    out = [(int(r.generation), genome, int(count)) for r in rows.itertuples()
           for genome, count in sorted((json.loads(r.data).get("evaluations") or {}).items())]
    return pd.DataFrame(out, columns=["generation", "genome_id", "evaluations"])


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample sd / sqrt n; 0 below two values): what the
    analysis reports wherever it averages over problems, samples or seeds."""
    return _mean_se(values)


# ---------------------------------------------------------------------- genomes


def pareto(run_id: str, generation: int, objectives: Sequence[str] = ("bugfix", "style"),
           home: Home | None = None) -> pd.DataFrame:
    """A generation's genomes with their front rank (0 = Pareto front) on the chosen objectives."""
    names = _metrics(objectives)
    if not 2 <= len(names) <= 3:
        raise CoralError(f"a Pareto view takes 2 or 3 objectives, got {len(names)}")
    with connect(home) as con:
        check_run(con, run_id)
        points = _df(con, f"SELECT genome_id, {', '.join(dict.fromkeys([*names, 'fitness']))}, survived "
                          "FROM scores WHERE run_id = ? AND generation = ? ORDER BY genome_id",
                     [run_id, generation])
    if points.empty:
        raise CoralError(f"run {run_id} has no scores for generation {generation}")
    points["front"] = front_ranks(points[names].to_numpy())
    points["on_front"] = points["front"] == 0
    return points


def front_hypervolume(run_id: str, generation: int, objectives: Sequence[str] = ("bugfix", "style"),
                      reference: Sequence[float] | None = None, home: Home | None = None) -> float:
    points = pareto(run_id, generation, objectives, home)
    return hypervolume(points[list(objectives)].to_numpy(), reference)


def genome_detail(run_id: str, genome_id: str, home: Home | None = None) -> dict[str, Any]:
    """Genes, knobs, CA seed and pattern (initial and final grid), scores per generation,
    per-problem results and candidate code."""

    with connect(home) as con:
        check_run(con, run_id)
        genome = _df(con, "SELECT * FROM genomes WHERE run_id = ? AND genome_id = ?", [run_id, genome_id])
        scores = _df(con, "SELECT * FROM scores WHERE run_id = ? AND genome_id = ? ORDER BY generation",
                     [run_id, genome_id])
        problems = _df(con, f"""SELECT e.generation, e.problem, e.sample, {", ".join(f"e.{o}" for o in OBJECTIVES)},
                                       e.fixed, e.passed, e.total, j.candidate, j.raw, j.cases
                                FROM evaluations e JOIN jobs j USING (run_id, seq)
                                WHERE e.run_id = ? AND e.genome_id = ?
                                ORDER BY e.generation, e.problem, e.sample""", [run_id, genome_id])
    if genome.empty and scores.empty and problems.empty:
        raise CoralError(f"run {run_id} has no genome {genome_id!r}")
    out: dict[str, Any] = {"run_id": run_id, "genome_id": genome_id, "scores": scores, "problems": problems,
                           "genes": None, "knobs": None, "seed": None, "ca_initial": None, "ca_final": None}
    if not genome.empty:  # genome details come from checkpoints, which may lag the events
        row = genome.iloc[0].to_dict()
        out["genes"] = {k: row[k] for k in ("rank", "alpha", "dropout", "adapter_type")}
        out["genes"]["target_modules"] = list(row["target_modules"])
        out["knobs"] = {k: row[k] for k in ("temperature", "top_p", "top_k", "repetition_penalty",
                                            "max_new_tokens")}
        out.update(origin=row["origin"], parents=list(row["parents"]),
                   overrides=json.loads(row["overrides"] or "{}"), first_generation=row["generation"])
        seed = CASeed.model_validate(json.loads(row["seed"]))
        out["seed"] = seed
        out["rule"] = seed.rule_string()
        out["ca_initial"] = ca.grid_from_seed(seed)
        out["ca_final"] = np.asarray(ca.run(seed)[-1])
        out["ca_features"] = ca.features(seed).__dict__
    return out


# ---------------------------------------------------------------------- comparing runs


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, inner in value.items():
            out.update(_flatten(inner, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: value}


def compare_runs(run_ids: str | Sequence[str], metric: str = "fitness", home: Home | None = None) -> dict[str, Any]:
    """Curves of one metric (best and mean), final metrics, and the config keys that differ."""
    ids = run_id_list(run_ids)
    if not ids:
        raise CoralError("compare_runs needs at least one run id")
    (name,) = _metrics([metric])
    best_cols = ", ".join(f"best_{m}" for m in METRICS)
    with connect(home) as con:
        configs = {r: check_run(con, r).get("config") for r in ids}
        curves = _df(con, f"""SELECT run_id, generation, best_{name} AS best, mean_{name} AS mean
                              FROM generations WHERE list_contains(?, run_id)
                              ORDER BY run_id, generation""", [ids])
        final = _df(con, f"""SELECT run_id, generation AS last_generation, {best_cols}, genotype_diversity,
                                    cache_hit_rate
                             FROM generations WHERE list_contains(?, run_id)
                             QUALIFY row_number() OVER (PARTITION BY run_id ORDER BY generation DESC) = 1
                             ORDER BY run_id""", [ids])
    flat = {r: _flatten(json.loads(c)) if c else {} for r, c in configs.items()}
    keys = sorted(set().union(*flat.values()))
    differ = {k: {r: flat[r].get(k) for r in ids} for k in keys
              if len({json.dumps(flat[r].get(k), sort_keys=True) for r in ids}) > 1}
    return {"metric": name, "curves": curves, "final": final, "config_diff": differ}
