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
# # Which genes go with higher bugfix and fixed@k?
#
# One row per scored genome (`coral.analysis.load_run`: scores joined with genes and knobs).
# Two views:
#
# 1. **Grouped means with 95% bootstrap intervals** per heavy gene level (rank, alpha, target
#    modules, adapter type, max new tokens) and per third of each continuous range (dropout,
#    temperature, top_p, top_k, repetition penalty; thirds of the range the config allows).
#    Resampling uses a `coral.rng` stream, so the intervals are the same every time.
# 2. **A linear regression** of the outcome on all genes at once (numpy least squares,
#    regressors standardised: a coefficient is the change in the outcome per standard deviation,
#    the intercept the mean outcome), with classical standard errors and ±1.96·SE intervals.
#
# **Reading it**: these are associations in the genomes the search chose to score, not a
# designed experiment: selection makes later generations resemble their parents, and with a few
# dozen genomes intervals are wide. An interval that excludes zero (regression) or two levels
# whose intervals do not overlap (grouped) is worth a targeted follow-up run.
#
# **Inputs**: `CORAL_HOME`, `CORAL_RUN_ID` (default: the newest run), `CORAL_BOOTSTRAP`
# (resamples, default 1000).

# %%
import json
import os

import numpy as np
import pandas as pd
from IPython.display import display

from coral import analysis
from coral.analysis.notebook import key_numbers_line, run_id_from_env
from coral.home import Home
from coral.rng import stream

home = Home()
RUN_ID = run_id_from_env(home)
RESAMPLES = int(os.environ.get("CORAL_BOOTSTRAP", "1000"))
OUTCOMES = ["bugfix", "fixed_at_k"]
data = analysis.load_run(RUN_ID, home)
config = json.loads(data.run["config"])
table = data.scores.merge(data.genomes.drop(columns=["generation", "run_id"]), on="genome_id", how="inner")
table["target_modules"] = table["target_modules"].map(lambda mods: "+".join(sorted(mods)))
print(f"run {RUN_ID}: {len(table)} scored genomes with known genes")

# %% [markdown]
# ## Grouped means with bootstrap intervals

# %%
CATEGORICAL = ["rank", "alpha", "target_modules", "adapter_type", "max_new_tokens"]
RANGES = {"dropout": config["genes"]["dropout"], **{k: config["knobs"][k] for k in
          ("temperature", "top_p", "top_k", "repetition_penalty")}}


def thirds(column: str, low: float, high: float) -> pd.Series:
    """Low / mid / high third of the configured range (a constant range has one level)."""
    if high <= low:
        return pd.Series([f"= {low:g}"] * len(table), index=table.index)
    edges = np.linspace(low, high, 4)
    labels = [f"{name} [{a:.3g}, {b:.3g}]"
              for name, a, b in zip(("low", "mid", "high"), edges[:-1], edges[1:], strict=True)]
    return pd.cut(table[column], edges, labels=labels, include_lowest=True).astype(str)


def bootstrap_ci(values: np.ndarray, purpose: str) -> tuple[float | None, float | None]:
    if len(values) < 2:
        return None, None  # one genome: no spread to resample
    rng = stream(int(data.run["seed"]), f"notebook-bootstrap:{purpose}")
    means = values[rng.integers(0, len(values), size=(RESAMPLES, len(values)))].mean(axis=1)
    low, high = np.quantile(means, [0.025, 0.975])
    return float(low), float(high)


levels = {column: table[column].astype(str) for column in CATEGORICAL}
levels.update({column: thirds(column, *bounds) for column, bounds in RANGES.items()})
rows = []
for gene, level_of in levels.items():
    for level in sorted(level_of.unique()):
        part = table[level_of == level]
        for outcome in OUTCOMES:
            low, high = bootstrap_ci(part[outcome].to_numpy(dtype=float), f"{outcome}:{gene}={level}")
            rows.append({"gene": gene, "level": level, "outcome": outcome, "n": len(part),
                         "mean": float(part[outcome].mean()), "ci_low": low, "ci_high": high})
grouped = pd.DataFrame(rows)
grouped[grouped["outcome"] == "bugfix"]

# %%
grouped[grouped["outcome"] == "fixed_at_k"]

# %% [markdown]
# ## Regression on all genes at once

# %%
features = pd.DataFrame({
    "log2_rank": np.log2(table["rank"].astype(float)),
    "log2_alpha": np.log2(table["alpha"].astype(float)),
    "dropout": table["dropout"].astype(float),
    "dora": (table["adapter_type"] == "dora").astype(float),
    "n_target_modules": table["target_modules"].str.count(r"\+").astype(float) + 1,
    **{k: table[k].astype(float) for k in ("temperature", "top_p", "top_k", "repetition_penalty",
                                           "max_new_tokens")},
})


def design(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    """Intercept + standardised columns; constant and collinear columns are left out, in order."""
    columns, names = [np.ones(len(frame))], ["intercept"]
    for name in frame.columns:
        x = frame[name].to_numpy(dtype=float)
        if len(x) < 2 or x.std() == 0:
            continue
        candidate = [*columns, (x - x.mean()) / x.std()]
        if np.linalg.matrix_rank(np.column_stack(candidate)) == len(candidate):
            columns, names = candidate, [*names, name]
    return np.column_stack(columns), names


def ols(y: np.ndarray, x: np.ndarray, names: list[str]) -> pd.DataFrame | None:
    n, p = x.shape
    if n - p < 2:
        return None  # too few genomes for this many regressors: no honest standard errors
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    residual = y - x @ coef
    sigma2 = float(residual @ residual) / (n - p)
    se = np.sqrt(np.diag(sigma2 * np.linalg.inv(x.T @ x)))
    return pd.DataFrame({"term": names, "coef": coef, "se": se,
                         "ci_low": coef - 1.96 * se, "ci_high": coef + 1.96 * se})


x, names = design(features)
regressions = {}
for outcome in OUTCOMES:
    fit = ols(table[outcome].to_numpy(dtype=float), x, names)
    regressions[outcome] = fit
    print(f"{outcome}: n={len(table)}, {len(names)} terms" + ("" if fit is not None else
          " — too few genomes for a regression with standard errors"))
    if fit is not None:
        display(fit)

# %%
def strongest(fit: pd.DataFrame | None) -> dict | None:
    """The term (not the intercept) whose interval lies furthest from zero, in standard errors."""
    if fit is None or len(fit) < 2:
        return None
    terms = fit[fit["term"] != "intercept"].assign(t=lambda f: (f["coef"] / f["se"]).abs())
    row = terms.sort_values(["t", "term"], ascending=[False, True]).iloc[0]
    return {"term": row["term"], "coef": float(row["coef"]), "se": float(row["se"])}


def best_level(outcome: str, gene: str) -> str | None:
    part = grouped[(grouped["outcome"] == outcome) & (grouped["gene"] == gene)]
    return None if part.empty else part.sort_values(["mean", "level"], ascending=[False, True]).iloc[0]["level"]


KEY_NUMBERS = {
    "run_id": RUN_ID,
    "n": len(table),
    "group_means": {f"{r.outcome}|{r.gene}={r.level}": r.mean for r in grouped.itertuples()},
    "group_counts": {f"{r.outcome}|{r.gene}={r.level}": r.n for r in grouped.itertuples()},
    "group_ci": {f"{r.outcome}|{r.gene}={r.level}": [r.ci_low, r.ci_high] for r in grouped.itertuples()},
    "best_rank": {o: best_level(o, "rank") for o in OUTCOMES},
    "best_target_modules": {o: best_level(o, "target_modules") for o in OUTCOMES},
    "regression_terms": names,
    "regression": {o: (None if f is None else dict(zip(f["term"], f["coef"].tolist(), strict=True)))
                   for o, f in regressions.items()},
    "regression_se": {o: (None if f is None else dict(zip(f["term"], f["se"].tolist(), strict=True)))
                      for o, f in regressions.items()},
    "strongest": {o: strongest(f) for o, f in regressions.items()},
}
{k: KEY_NUMBERS[k] for k in ("n", "best_rank", "best_target_modules", "strongest")}

# %%
print(key_numbers_line(KEY_NUMBERS))
