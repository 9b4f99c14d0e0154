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
# # Run overview
#
# One run at a glance: its config, the train/eval problem split, the fitness and diversity
# curves (the untuned model's baseline is the dashed line), the best genomes and how far they
# beat the baseline. Every number comes from `coral.analysis`, the dashboard's queries.
#
# **Inputs**: `CORAL_HOME` (default `./.coral`), `CORAL_RUN_ID` (default: the newest run).
# The notebook works on a live run too: it reads the store snapshot (or the event logs), never
# the dashboard's database, so the numbers are as of the last snapshot.
#
# **Reading it**: on the curves, "best" is the best genome of a generation, "mean" the population
# mean; the run's best genome is the one with the highest mean fitness over its evaluations
# (among those evaluated at least twice, those evaluated in the latest generation first);
# fitness is the config-weighted sum of the six objectives; fixed@k is the share of eval
# problems where some sample passes every test.

# %%
import json

import pandas as pd
from IPython.display import display

from coral import analysis
from coral.analysis import best as best_genomes
from coral.analysis import figures
from coral.analysis.notebook import key_numbers_line, run_id_from_env
from coral.home import Home

home = Home()
RUN_ID = run_id_from_env(home)
data = analysis.load_run(RUN_ID, home)
run = data.run
print(f"run {RUN_ID}: {run['strategy']}, state {run['state']}, "
      f"{run['generations_done'] or 0}/{run['generations']} generations, seed {run['seed']}")

# %% [markdown]
# ## Config and split
# Adapters train on the train problems only; every score is on the held-out eval problems.

# %%
config = json.loads(run["config"])
train_problems = json.loads(run["train_problems"] or "[]")
eval_problems = json.loads(run["eval_problems"] or "[]")
print(json.dumps({k: config[k] for k in ("seed", "population", "generations", "strategy")}))
print(f"train ({len(train_problems)}):", ", ".join(train_problems))
print(f"eval ({len(eval_problems)}):", ", ".join(eval_problems))
pd.json_normalize(config, sep=".").T.rename(columns={0: "value"})

# %% [markdown]
# ## Curves

# %%
figures.fitness_figure(RUN_ID, "fitness", home)

# %%
figures.diversity_figure(RUN_ID, home)

# %%
generations = data.generations
generations[["generation", "best_fitness", "mean_fitness", "best_bugfix", "best_fixed_at_k",
             "genotype_diversity", "cache_hit_rate"]]

# %% [markdown]
# ## Best genomes
# Best = the highest mean fitness over a genome's evaluations, among the genomes evaluated at
# least twice when the run has any (survivors are evaluated again each generation and averaged;
# one evaluation is one lucky draw), with the count n and the standard error: the same genome the
# dashboard's Runs and Lineage pages, "Export best adapter" and `coral runs` name
# (`coral.analysis.best`). Genes and knobs come from checkpoints, so on a live run the newest
# genomes may show no genes yet.

# %%
genes = ["rank", "alpha", "dropout", "target_modules", "adapter_type", "temperature", "top_p",
         "top_k", "repetition_penalty", "max_new_tokens"]
# From the scores loaded above, so the table and the numbers below are of one snapshot.
ranked = best_genomes.rank_best(best_genomes.fitness_by_genome(data.scores))
latest = data.scores.rename(columns={"fitness": "latest_fitness"}).merge(
    ranked[["genome_id", "generation"]], on=["genome_id", "generation"])
scored = ranked.merge(latest[["genome_id", "bugfix", "fixed_at_k", "style", "syntax", "fix_chance"]],
                      on="genome_id", how="left").merge(data.genomes[["genome_id", *genes]], on="genome_id", how="left")
best = scored.head(5)
best[["genome_id", "fitness", "evaluations", "se", "generation", "bugfix", "fixed_at_k", "style", "syntax",
      "fix_chance", *genes]]

# %%
top = best.iloc[0] if len(best) else None
if top is not None:
    detail = analysis.genome_detail(RUN_ID, top["genome_id"], home)
    print("best genome", top["genome_id"], "fitness", best_genomes.describe(top.to_dict()),
          "genes", detail["genes"], "knobs", detail["knobs"])
    solved = detail["problems"].groupby("problem")["fixed"].any()
    print(f"solves {int(solved.sum())}/{len(solved)} eval problems")

# %% [markdown]
# ## Against the baseline (the untuned model, greedy decoding)

# %%
base = data.baseline
if base is None:
    print("no baseline yet (it is evaluated during generation 0)")
else:
    print(f"baseline fitness {base['fitness']:.4f}, bugfix {base['bugfix']:.4f}, "
          f"fixed@k {base['fixed_at_k']:.4f}")
best_fitness = None if top is None else float(top["fitness"])
KEY_NUMBERS = {
    "run_id": RUN_ID,
    "state": run["state"],
    "strategy": run["strategy"],
    "generations_done": len(generations),
    "n_train": len(train_problems),
    "n_eval": len(eval_problems),
    "n_scored": len(data.scores),
    "best_fitness": best_fitness,
    "best_genome": None if top is None else top["genome_id"],
    "best_evaluations": None if top is None else int(top["evaluations"]),
    "final_mean_fitness": float(generations["mean_fitness"].iloc[-1]) if len(generations) else None,
    "baseline_fitness": None if base is None else float(base["fitness"]),
    "gain_over_baseline": (None if base is None or best_fitness is None
                           else best_fitness - float(base["fitness"])),
}
display(KEY_NUMBERS)

# %%
print(key_numbers_line(KEY_NUMBERS))
