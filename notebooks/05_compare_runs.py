# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Comparing runs: evolution against the random and grid baselines
#
# `coral.analysis.compare_runs` (the dashboard's comparison page) gives each run's best/mean
# curve of one metric, its final metrics and the config keys that differ. Grouping runs by
# strategy, the notebook then asks: does evolution beat random search and a grid over the same
# gene space, across seeds? Per strategy: the mean over runs (seeds) of each run's best metric,
# with its standard error (needs two or more runs of that strategy); the difference
# evolution − other with the standard error of a difference of independent means.
#
# **Reading it**: compare like with like — the same population × generations budget and the same
# benchmark split (the config diff below should name only `strategy` and `seed`). With one seed
# per strategy there is no standard error: the difference is one draw.
#
# **Inputs**: `CORAL_HOME`, `CORAL_RUN_IDS` (comma-separated; default: every run), `CORAL_METRIC`
# (default `fitness`; or bugfix, style, security, runtime, syntax, fixed_at_k).

# %%
import math
import os

import pandas as pd
from IPython.display import display

from coral import analysis
from coral.analysis import figures
from coral.analysis.notebook import key_numbers_line, run_ids_from_env
from coral.home import Home

home = Home()
RUN_IDS = run_ids_from_env(home)
METRIC = os.environ.get("CORAL_METRIC", "fitness").strip()
result = analysis.compare_runs(RUN_IDS, METRIC, home)
print(f"{len(RUN_IDS)} runs, metric {result['metric']}")

# %%
figures.compare_figure(RUN_IDS, METRIC, home)

# %% [markdown]
# ## Config keys that differ

# %%
pd.DataFrame([{"key": key, **{run: str(value) for run, value in values.items()}}
              for key, values in result["config_diff"].items()])

# %% [markdown]
# ## Per run

# %%
with analysis.connect(home) as con:  # strategy, seed and budget, as registered by each run
    meta = con.execute("""SELECT run_id, strategy, seed, population, generations, state
                          FROM runs WHERE list_contains(?, run_id) ORDER BY run_id""", [RUN_IDS]).df()
curves = result["curves"]
best = curves.groupby("run_id")["best"].max().rename("best_over_run")
per_run = meta.merge(best, on="run_id", how="left").merge(
    result["final"][["run_id", "last_generation", f"best_{result['metric']}"]], on="run_id", how="left")
baselines = {r: analysis.baseline(r, home) for r in RUN_IDS}
per_run["baseline"] = per_run["run_id"].map(lambda r: None if baselines[r] is None
                                             else baselines[r][result["metric"]])
display(per_run)

# %% [markdown]
# ## Per strategy, across seeds
# Mean generation-by-generation curves (over the runs of a strategy) and the summary table.

# %%
with_strategy = curves.merge(meta[["run_id", "strategy"]], on="run_id")
mean_curves = with_strategy.groupby(["strategy", "generation"], as_index=False)["best"].mean()
display(mean_curves.pivot(index="generation", columns="strategy", values="best"))


def summary(values: pd.Series) -> dict:
    n = int(values.notna().sum())
    se = float(values.std(ddof=1) / math.sqrt(n)) if n >= 2 else None
    return {"n": n, "mean": float(values.mean()) if n else None, "se": se}


strategies = {s: summary(part["best_over_run"]) for s, part in per_run.groupby("strategy")}
display(pd.DataFrame(strategies).T)

# %%
differences = {}
evolution = strategies.get("evolution")
for other in ("random", "grid"):
    if evolution is None or other not in strategies or evolution["mean"] is None:
        continue
    theirs = strategies[other]
    se = (math.sqrt(evolution["se"] ** 2 + theirs["se"] ** 2)
          if evolution["se"] is not None and theirs["se"] is not None else None)
    differences[other] = {"difference": evolution["mean"] - theirs["mean"], "se": se}
    print(f"evolution − {other}: {differences[other]['difference']:+.4f}"
          + (f" ± {1.96 * se:.4f} (95%)" if se is not None else " (one run on a side: no error bar)"))

# %% [markdown]
# ## Replicate groups (the Compare page's bands)
# Runs whose configs differ only in seed (and where jobs ran) form a group; per generation, the
# mean over the group's seeds of the best metric, with a 95% Student-t interval (NaN with one
# seed), and the group's mean baseline. Runs without a finished generation are left out, named.

# %%
from coral.analysis.replicates import replicate_chart  # noqa: E402 - this section's only figure

replicates = analysis.replicate_curves(RUN_IDS, METRIC, "best", home)
display(replicates["groups"])
for run_id, why in replicates["left_out"]:
    print(f"left out: {run_id} ({why})")
replicate_chart(replicates)

# %% [markdown]
# ## Picks re-evaluated on fresh seeds (`coral evaluate`)
# A run's recorded best won a noisy tournament, so its recorded fitness overstates it. After
# `coral evaluate RUN ...`, each run's pick has fresh fixed@k on held-out instances beside the
# untuned model on the same seeds; per replicate group the mean over seeds (95% interval from 3
# seeds), and between groups the difference paired by seed and by instance. Runs without one are
# named with the command.

# %%
from coral.analysis.reevaluated import reevaluation_chart  # noqa: E402 - this section's only figure

reevaluated = analysis.reevaluation_summary(RUN_IDS, home)
print(reevaluated["setting"] or "no re-evaluation stored for these runs")
display(reevaluated["groups"])
display(reevaluated["differences"])
for run_id, why in reevaluated["missing"]:
    print(f"not in the re-evaluation: {run_id} ({why})")
reevaluation_chart(reevaluated)

# %%
KEY_NUMBERS = {
    "metric": result["metric"],
    "run_ids": RUN_IDS,
    "best_over_run": dict(zip(per_run["run_id"], per_run["best_over_run"], strict=True)),
    "final_best": dict(zip(per_run["run_id"], per_run[f"best_{result['metric']}"], strict=True)),
    "strategies": strategies,
    "evolution_minus": differences,
    "config_diff_keys": sorted(result["config_diff"]),
    "replicate_groups": replicates["groups"].groupby("group")["run_id"].apply(sorted).to_dict(),
    "reevaluated": {} if reevaluated["groups"].empty else dict(zip(reevaluated["groups"]["label"],
                                                                  reevaluated["groups"]["mean"], strict=True)),
    "not_reevaluated": [run_id for run_id, _ in reevaluated["missing"]],
}
display(KEY_NUMBERS)

# %%
print(key_numbers_line(KEY_NUMBERS))
