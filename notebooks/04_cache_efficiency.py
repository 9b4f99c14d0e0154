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
# # Does the adapter cache pay off?
#
# Heavy genes (rank, alpha, dropout, target modules, adapter type) decide which adapter a genome
# needs. The first genome of a run with a given set of heavy genes trains it (a miss); every later
# genome with the same heavy genes reuses it (a hit). Hits and misses per generation are the
# engine's own counts (`coral.analysis.cache_curve`, the dashboard's cache chart).
#
# **Time saved** is estimated from recorded wall times: each hit saves the training time its
# adapter took when it was trained (the `train` timing the run recorded for that adapter's
# genomes). Wall times are recorded, never used by the search, and depend on the machine.
#
# **Inputs**: `CORAL_HOME`, `CORAL_RUN_ID` (default: the newest run).

# %%
import pandas as pd
from IPython.display import display

from coral import analysis
from coral.analysis import figures
from coral.analysis.notebook import key_numbers_line, run_id_from_env
from coral.evolution.genome import HeavyGenes
from coral.hashing import content_hash
from coral.home import Home
from coral.model.adapters import canonical_genes

home = Home()
RUN_ID = run_id_from_env(home)
data = analysis.load_run(RUN_ID, home)
curve = analysis.cache_curve(RUN_ID, home)
display(curve)

# %%
figures.cache_figure(RUN_ID, home)

# %% [markdown]
# ## Which adapters were reused
# The gene key is the engine's (`coral.run.engine.gene_key`: heavy genes with target modules as a
# sorted set). Reconstructed hits must equal the engine's counts: the check below says so.

# %%
HEAVY = ["rank", "alpha", "dropout", "target_modules", "adapter_type"]


def gene_key(row: pd.Series) -> str:
    genes = HeavyGenes(rank=int(row["rank"]), alpha=int(row["alpha"]), dropout=float(row["dropout"]),
                       target_modules=tuple(row["target_modules"]), adapter_type=row["adapter_type"])
    return content_hash(canonical_genes(genes))


finished = set(curve["generation"])
scored = data.scores[data.scores["generation"].isin(finished)][["generation", "genome_id"]]
scored = scored.merge(data.genomes[["genome_id", *HEAVY]], on="genome_id", how="inner")
scored["gene_key"] = scored.apply(gene_key, axis=1) if len(scored) else pd.Series(dtype=str)
first_seen = scored.groupby("gene_key")["generation"].min()
per_generation = pd.DataFrame({
    "misses": scored.drop_duplicates("gene_key").groupby("generation").size(),
    "genomes": scored.groupby("generation").size(),
}).reindex(sorted(finished)).fillna(0).astype(int)
per_generation["hits"] = per_generation["genomes"] - per_generation["misses"]
complete = len(scored) == len(data.scores[data.scores["generation"].isin(finished)])
matches_engine = complete and (
    per_generation["hits"].tolist() == curve["cache_hits"].tolist()
    and per_generation["misses"].tolist() == curve["cache_misses"].tolist())
print("reconstructed hits/misses equal the engine's counts:", matches_engine)

# %% [markdown]
# ## Training time spent and saved

# %%
with analysis.connect(home) as con:  # the recorded train timing of each genome (one per genome)
    timings = con.execute("""
        SELECT generation, genome_id, max(CAST(timings->>'train' AS DOUBLE)) AS train_seconds
        FROM jobs WHERE run_id = ? GROUP BY generation, genome_id""", [RUN_ID]).df()
trained = scored.merge(timings, on=["generation", "genome_id"], how="left")
trained = trained[trained["generation"] == trained["gene_key"].map(first_seen)]
train_seconds = trained.dropna(subset=["train_seconds"]).groupby("gene_key")["train_seconds"].max()
uses = scored.groupby("gene_key").size()
adapters = pd.DataFrame({"uses": uses, "train_seconds": train_seconds}).fillna({"train_seconds": 0.0})
adapters["hits"] = adapters["uses"] - 1
adapters["saved_seconds"] = adapters["hits"] * adapters["train_seconds"]
adapters = adapters.sort_values(["saved_seconds", "uses"], ascending=False)
adapters.head(10)

# %%
spent = float(adapters["train_seconds"].sum())
saved = float(adapters["saved_seconds"].sum())
hits, misses = int(curve["cache_hits"].sum()), int(curve["cache_misses"].sum())
print(f"{hits} hits / {hits + misses} adapter requests; training took {spent:.2f}s, "
      f"the cache saved about {saved:.2f}s ({saved / (spent + saved):.0%} of the training time "
      "an uncached run would have spent)" if spent + saved > 0 else "no training time recorded")
KEY_NUMBERS = {
    "run_id": RUN_ID,
    "hits": hits,
    "misses": misses,
    "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
    "hits_per_generation": curve["cache_hits"].tolist(),
    "adapters": len(adapters),
    "reused_adapters": int((adapters["hits"] > 0).sum()),
    "matches_engine": bool(matches_engine),
    "train_seconds_spent": spent,
    "train_seconds_saved": saved,
    "saved_share": saved / (spent + saved) if spent + saved > 0 else 0.0,
}
display(KEY_NUMBERS)

# %%
print(key_numbers_line(KEY_NUMBERS))
