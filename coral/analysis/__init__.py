"""Reading runs for people: the store's queries, Plotly figures and notebook helpers.

`coral.analysis.list_runs(...)` and friends are the query functions (coral/analysis/queries.py),
re-exported here so notebooks and pages write `from coral import analysis`; so are replicates
(replicate_groups, replicate_curves), the one best genome (best_genome, best_genomes,
genome_fitness: the mean over a genome's evaluations, coral/analysis/best.py), lineage
(lineage, best_path), the per-genome points of a running run (genome_points) and runs' picks
re-evaluated on fresh seeds (evaluate_runs, reevaluations, reevaluation_summary).
"""

from coral.analysis.best import BEST_DEFINITION, best_genome, best_genomes, genome_fitness
from coral.analysis.lineage import best_path, lineage
from coral.analysis.live import genome_points
from coral.analysis.queries import (
    CURVE_COLUMNS,
    RunCurves,
    RunData,
    baseline,
    baselines,
    cache_curve,
    compare_runs,
    connect,
    diversity_curves,
    evaluation_counts,
    fitness_curves,
    front_hypervolume,
    genome_detail,
    hypervolume,
    list_runs,
    load_run,
    mean_se,
    pareto,
    run_curves,
)
from coral.analysis.reevaluated import evaluate_runs, reevaluation_summary, reevaluations
from coral.analysis.replicates import replicate_curves, replicate_groups

__all__ = [
    "BEST_DEFINITION",
    "CURVE_COLUMNS",
    "RunCurves",
    "RunData",
    "baseline",
    "baselines",
    "best_genome",
    "best_genomes",
    "best_path",
    "cache_curve",
    "compare_runs",
    "connect",
    "diversity_curves",
    "evaluate_runs",
    "evaluation_counts",
    "fitness_curves",
    "front_hypervolume",
    "genome_detail",
    "genome_fitness",
    "genome_points",
    "hypervolume",
    "lineage",
    "list_runs",
    "load_run",
    "mean_se",
    "pareto",
    "reevaluation_summary",
    "reevaluations",
    "replicate_curves",
    "replicate_groups",
    "run_curves",
]
