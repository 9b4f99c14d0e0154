"""Reading runs for people: the store's queries, Plotly figures and notebook helpers.

`coral.analysis.list_runs(...)` and friends are the query functions (coral/analysis/queries.py),
re-exported here so notebooks and pages write `from coral import analysis`.
"""

from coral.analysis.queries import (
    CURVE_COLUMNS,
    RunCurves,
    RunData,
    baseline,
    cache_curve,
    compare_runs,
    connect,
    diversity_curves,
    fitness_curves,
    front_hypervolume,
    genome_detail,
    hypervolume,
    list_runs,
    load_run,
    pareto,
    run_curves,
)

__all__ = [
    "CURVE_COLUMNS",
    "RunCurves",
    "RunData",
    "baseline",
    "cache_curve",
    "compare_runs",
    "connect",
    "diversity_curves",
    "fitness_curves",
    "front_hypervolume",
    "genome_detail",
    "hypervolume",
    "list_runs",
    "load_run",
    "pareto",
    "run_curves",
]
