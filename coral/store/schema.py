"""The run store's DuckDB schema: migrations applied in order, recorded in `schema_version`.

Every row derived from an event carries that event's `seq`, so a run whose log was rewritten
(`coral resume` after a stop re-emits different events at the same sequence numbers) is rewound
with one `DELETE ... WHERE run_id = ? AND seq >= ?` per table.

Tables and views (docs/store.md describes each column):
- runs         one row per run: config, split, lifecycle state derived from its events
- ingested     the per-run high-water mark: every event with seq <= last_seq is in the store
- jobs         one row per test job: candidate code, per-case outcomes, objectives, timings
- run_events   every event but job_finished (a few per generation)
- events       view: every event (run_events, and one row per job; `data` is NULL for jobs)
- evaluations  view over jobs: one row per candidate (genome x problem x sample): objectives,
               fixed, cases passed
- generations  one row per finished generation: best/mean per objective, diversity, cache, gate
- scores       one row per genome per generation: its objectives (means over its evaluations),
               fitness, the number of evaluations and whether it survived
- genomes      one row per genome of a run: CA seed, heavy genes, knobs, lineage
- baselines    the untuned model's scores (one row per run), the echo baseline's as JSON
- unreadable   runs the ingestor cannot read, with the reason (the others are ingested all the same)
- reevaluations  a run's pick evaluated again on fresh seeds and held-out instances (`coral evaluate`),
               beside the untuned model on the same seeds: one row per file of runs/RUN/reevaluations/
"""

from __future__ import annotations

from coral.evolution.selection import OBJECTIVES  # the declared objective set (coral.config.ObjectiveWeights)

# Per-genome aggregates in generation_finished: the objectives, fixed@k and the weighted sum.
METRICS = (*OBJECTIVES, "fixed_at_k", "fitness")
# The objective set when migrations 1-3 were written. Migrations are history: they name the
# columns that existed then, so a store migrates the same way whatever the set is now. Columns
# for the current set are added by `objective_columns` after the migrations (no migration to
# write when an objective is added).
_FIRST_OBJECTIVES = ("bugfix", "style", "security", "runtime", "syntax")
_FIRST_METRICS = (*_FIRST_OBJECTIVES, "fixed_at_k", "fitness")
LIFECYCLE = {
    "run_started": "running", "run_continued": "running", "run_paused": "paused",
    "run_finished": "finished", "run_failed": "failed", "run_stopped": "stopped",
}

_metric_cols = ", ".join(f"{m} DOUBLE" for m in _FIRST_METRICS)
_best_mean_cols = ", ".join(f"{stat}_{m} DOUBLE" for stat in ("best", "mean") for m in _FIRST_METRICS)

MIGRATIONS: list[list[str]] = [
    # 1: the first schema
    [
        """CREATE TABLE runs (
            run_id VARCHAR PRIMARY KEY, created DOUBLE, strategy VARCHAR, population INTEGER,
            generations INTEGER, seed BIGINT, config JSON, train_problems JSON, eval_problems JSON,
            state VARCHAR, last_event VARCHAR, generations_done INTEGER, updated DOUBLE)""",
        """CREATE TABLE ingested (
            run_id VARCHAR PRIMARY KEY, last_seq BIGINT NOT NULL, checkpoint_generation INTEGER
            NOT NULL DEFAULT -1, updated DOUBLE)""",
        """CREATE TABLE events (
            run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, event_id VARCHAR NOT NULL,
            type VARCHAR NOT NULL, generation INTEGER, wall_time DOUBLE, data JSON,
            PRIMARY KEY (run_id, seq))""",
        """CREATE TABLE jobs (
            run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, generation INTEGER NOT NULL,
            genome_id VARCHAR NOT NULL, problem VARCHAR NOT NULL, sample INTEGER NOT NULL,
            raw VARCHAR, candidate VARCHAR, cases JSON, passed_all BOOLEAN, timings JSON,
            worker VARCHAR, PRIMARY KEY (run_id, seq))""",
        f"""CREATE TABLE evaluations (
            run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, generation INTEGER NOT NULL,
            genome_id VARCHAR NOT NULL, problem VARCHAR NOT NULL, sample INTEGER NOT NULL,
            {", ".join(f"{o} DOUBLE" for o in _FIRST_OBJECTIVES)}, fixed BOOLEAN, passed INTEGER,
            total INTEGER, PRIMARY KEY (run_id, generation, genome_id, problem, sample))""",
        f"""CREATE TABLE generations (
            run_id VARCHAR NOT NULL, generation INTEGER NOT NULL, seq BIGINT NOT NULL,
            {_best_mean_cols}, genotype_diversity DOUBLE, phenotype_distinct INTEGER,
            phenotype_share DOUBLE, cache_hits INTEGER, cache_misses INTEGER,
            cache_hit_rate DOUBLE, gate_threshold DOUBLE, gated_out INTEGER, pool INTEGER,
            survivors INTEGER, wall_seconds DOUBLE, PRIMARY KEY (run_id, generation))""",
        f"""CREATE TABLE scores (
            run_id VARCHAR NOT NULL, generation INTEGER NOT NULL, genome_id VARCHAR NOT NULL,
            seq BIGINT NOT NULL, {_metric_cols}, survived BOOLEAN,
            PRIMARY KEY (run_id, generation, genome_id))""",
        """CREATE TABLE genomes (
            run_id VARCHAR NOT NULL, genome_id VARCHAR NOT NULL, generation INTEGER NOT NULL,
            rank INTEGER, alpha INTEGER, dropout DOUBLE, target_modules VARCHAR[],
            adapter_type VARCHAR, temperature DOUBLE, top_p DOUBLE, top_k INTEGER,
            repetition_penalty DOUBLE, max_new_tokens INTEGER, origin VARCHAR, parents VARCHAR[],
            overrides JSON, seed JSON, PRIMARY KEY (run_id, genome_id))""",
        f"""CREATE TABLE baselines (
            run_id VARCHAR PRIMARY KEY, seq BIGINT NOT NULL, generation INTEGER, {_metric_cols},
            problems JSON)""",
    ],
]



def _without_key(table: str, columns: str) -> list[str]:
    """Recreate `table` with `columns` and no PRIMARY KEY, keeping its rows (DuckDB cannot drop a key)."""
    return [f"CREATE TABLE _{table}_new ({columns})", f"INSERT INTO _{table}_new SELECT * FROM {table}",
            f"DROP TABLE {table}", f"ALTER TABLE _{table}_new RENAME TO {table}"]


# 2: no primary keys on the three big tables. Maintaining their indexes cost about as much as
# parsing the events; a row is stored once because an event is applied only past the run's
# high-water mark (`ingested`), checked and advanced in the same transaction (Store.apply_frame).
MIGRATIONS.append([
    *_without_key("events", """run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, event_id VARCHAR NOT NULL,
        type VARCHAR NOT NULL, generation INTEGER, wall_time DOUBLE, data JSON"""),
    *_without_key("jobs", """run_id VARCHAR NOT NULL, seq BIGINT NOT NULL, generation INTEGER NOT NULL,
        genome_id VARCHAR NOT NULL, problem VARCHAR NOT NULL, sample INTEGER NOT NULL, raw VARCHAR,
        candidate VARCHAR, cases JSON, passed_all BOOLEAN, timings JSON, worker VARCHAR"""),
    *_without_key("evaluations", f"""run_id VARCHAR NOT NULL, seq BIGINT NOT NULL,
        generation INTEGER NOT NULL, genome_id VARCHAR NOT NULL, problem VARCHAR NOT NULL,
        sample INTEGER NOT NULL, {", ".join(f"{o} DOUBLE" for o in _FIRST_OBJECTIVES)}, fixed BOOLEAN,
        passed INTEGER, total INTEGER"""),
])


def usual_event_id(table: str = "") -> str:
    """SQL for coral.execution.messages.event_id(run_id, seq) (`RUN_ID:SEQ`, seq zero-padded to 8) over
    `table`'s columns: the id every engine event has, so it need not be stored per job."""
    prefix = f"{table}." if table else ""
    return f"{prefix}run_id || ':' || lpad({prefix}seq::VARCHAR, 8, '0')"


# 3: a test job is stored once. Every job_finished event was a row in three tables (events, jobs,
# evaluations), and writing those rows was most of the ingest's cost. Now `jobs` holds the job's
# objectives, cases passed, wall time (and its event id where it is not the usual run_id:seq), and
# `evaluations` and `events` are views: evaluations over jobs, events over jobs and `run_events`
# (the other events, a few per generation). Readers see the same columns as before.
def evaluations_view(objectives: tuple[str, ...]) -> str:
    return f"""CREATE OR REPLACE VIEW evaluations AS SELECT run_id, seq, generation, genome_id, problem,
        sample, {", ".join(objectives)}, passed_all AS fixed, passed, total FROM jobs"""


VIEWS = [
    evaluations_view(_FIRST_OBJECTIVES),
    f"""CREATE VIEW events AS
        SELECT run_id, seq, event_id, type, generation, wall_time, data FROM run_events
        UNION ALL
        SELECT j.run_id, j.seq, coalesce(j.event_id, {usual_event_id('j')}) AS event_id,
               'job_finished' AS type, j.generation, j.wall_time, NULL::JSON AS data FROM jobs j""",
]
MIGRATIONS.append([
    *(f"ALTER TABLE jobs ADD COLUMN {o} DOUBLE" for o in _FIRST_OBJECTIVES),
    "ALTER TABLE jobs ADD COLUMN passed INTEGER",
    "ALTER TABLE jobs ADD COLUMN total INTEGER",
    "ALTER TABLE jobs ADD COLUMN wall_time DOUBLE",
    "ALTER TABLE jobs ADD COLUMN event_id VARCHAR",
    f"""UPDATE jobs SET {", ".join(f"{o} = e.{o}" for o in _FIRST_OBJECTIVES)}, passed = e.passed, total = e.total
        FROM evaluations e WHERE e.run_id = jobs.run_id AND e.seq = jobs.seq""",
    f"""UPDATE jobs SET wall_time = e.wall_time,
        event_id = CASE WHEN e.event_id <> {usual_event_id('jobs')} THEN e.event_id END
        FROM events e WHERE e.run_id = jobs.run_id AND e.seq = jobs.seq""",
    "DROP TABLE evaluations",
    "ALTER TABLE events RENAME TO run_events",
    "DELETE FROM run_events WHERE type = 'job_finished'",
    *VIEWS,
])

# 4: a run the ingestor cannot read (a corrupt checkpoint, a bad event line) is recorded with the
# reason instead of stopping the ingest of every other run; the dashboard's Runs page shows it.
MIGRATIONS.append([
    "CREATE TABLE unreadable (run_id VARCHAR PRIMARY KEY, reason VARCHAR NOT NULL, since DOUBLE)",
])

# 5: noise control and baselines (docs/engine.md): how many evaluations a genome's scores average,
# and the echo baseline (the buggy program unchanged) beside the no-adapter one.
MIGRATIONS.append([
    "ALTER TABLE scores ADD COLUMN evaluations INTEGER",
    "ALTER TABLE baselines ADD COLUMN echo JSON",
])

# 6: held-out re-evaluations (`coral evaluate`, coral.run.reevaluation): one row per file in a run's
# reevaluations/ folder, replaced when the file changes. Not derived from events: no `seq`, a
# rewind keeps them (the pick was evaluated with the adapter it names, whatever the log says now).
REEVALUATION_MEASURES = ("fixed_at_k", "bugfix", "syntax", "fix_chance", "withheld_fixed_at_k")
MIGRATIONS.append([
    f"""CREATE TABLE reevaluations (
        run_id VARCHAR NOT NULL, file VARCHAR NOT NULL, stamp VARCHAR NOT NULL, genome_id VARCHAR,
        evaluated_on VARCHAR, run_seed BIGINT, instances INTEGER, withheld INTEGER, samples INTEGER,
        fresh INTEGER, seeds JSON, pick_fitness DOUBLE, pick_evaluations INTEGER, adapter VARCHAR,
        {", ".join(f"{m} DOUBLE, baseline_{m} DOUBLE" for m in REEVALUATION_MEASURES)},
        per_seed JSON, baseline_per_seed JSON, solved JSON, baseline_solved JSON, instance_names JSON,
        withheld_names JSON, knobs JSON, created DOUBLE, wall_seconds DOUBLE,
        PRIMARY KEY (run_id, file))""",
])

SCHEMA_VERSION = len(MIGRATIONS)
# Tables whose rows come from events and carry `seq`: what a rewind deletes from.
SEQ_TABLES = ("run_events", "jobs", "generations", "scores", "baselines")


def objective_columns() -> dict[str, tuple[str, ...]]:
    """Table -> the DOUBLE columns the current objective set needs in it. After the migrations,
    the store adds whichever are missing (Store.migrate) and redefines the evaluations view, so a
    new objective needs no migration: its column is NULL in rows stored before it existed."""
    return {
        "jobs": OBJECTIVES,
        "scores": METRICS,
        "baselines": METRICS,
        "generations": tuple(f"{stat}_{m}" for stat in ("best", "mean") for m in METRICS),
    }
