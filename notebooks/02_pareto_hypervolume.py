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
# # Pareto front and hypervolume over generations
#
# Is the front moving? For each generation: the genomes on its Pareto front (front rank 0 on
# the chosen objectives, from `coral.analysis.pareto`) and the front's hypervolume
# (`coral.analysis.front_hypervolume`, reference point at the origin, maximisation). Because
# each generation scores new genomes, one generation's hypervolume can drop; the **cumulative**
# hypervolume (every genome scored so far) never does, and its gains show when the search last
# found something new.
#
# **Inputs**: `CORAL_HOME`, `CORAL_RUN_ID` (default: the newest run), `CORAL_OBJECTIVES`
# (comma-separated, 2 or 3 of bugfix, style, security, runtime, syntax, fixed_at_k; default
# `bugfix,style`).

# %%
import os

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from IPython.display import display

from coral import analysis
from coral.analysis import figures
from coral.analysis.notebook import key_numbers_line, run_id_from_env
from coral.analysis.replicates import generation_axis
from coral.home import Home

home = Home()
RUN_ID = run_id_from_env(home)
OBJECTIVES = [o.strip() for o in os.environ.get("CORAL_OBJECTIVES", "bugfix,style").split(",") if o.strip()]
data = analysis.load_run(RUN_ID, home)
done = data.generations["generation"].tolist()  # finished generations only: complete fronts
print(f"run {RUN_ID}: objectives {OBJECTIVES}, generations {done}")

# %% [markdown]
# ## Per generation

# %%
rows = []
for generation in done:
    points = analysis.pareto(RUN_ID, generation, OBJECTIVES, home)
    so_far = data.scores[data.scores["generation"] <= generation][OBJECTIVES].to_numpy()
    rows.append({
        "generation": generation,
        "genomes": len(points),
        "front_size": int(points["on_front"].sum()),
        "hypervolume": analysis.front_hypervolume(RUN_ID, generation, OBJECTIVES, home=home),
        "cumulative_hypervolume": analysis.hypervolume(so_far),
    })
per_generation = pd.DataFrame(rows, columns=["generation", "genomes", "front_size", "hypervolume",
                                             "cumulative_hypervolume"])
per_generation["cumulative_gain"] = per_generation["cumulative_hypervolume"].diff().fillna(
    per_generation["cumulative_hypervolume"])
display(per_generation)

# %%
fig = go.Figure()
fig.add_trace(go.Scatter(x=per_generation["generation"], y=per_generation["hypervolume"],
                         mode="lines+markers", name="this generation"))
fig.add_trace(go.Scatter(x=per_generation["generation"], y=per_generation["cumulative_hypervolume"],
                         mode="lines+markers", name="all genomes so far", line={"dash": "dot"}))
fig.update_layout(title=f"hypervolume of the {' x '.join(OBJECTIVES)} front",
                  xaxis={"title": "generation", **generation_axis(per_generation["generation"].max())},
                  yaxis_title="hypervolume")
display(fig)

# %% [markdown]
# ## The last generation's front
# Front rank 0 is the front; higher ranks are the layers behind it.

# %%
last = done[-1] if done else None
if last is not None:
    front = analysis.pareto(RUN_ID, last, OBJECTIVES, home)
    display(figures.pareto_figure(RUN_ID, last, OBJECTIVES, home))
    display(front.sort_values(["front", "genome_id"]))

# %%
hv = per_generation["hypervolume"].to_numpy(dtype=float)
improving = per_generation["generation"][per_generation["cumulative_gain"] > 0]
KEY_NUMBERS = {
    "run_id": RUN_ID,
    "objectives": OBJECTIVES,
    "generations": done,
    "front_sizes": per_generation["front_size"].tolist(),
    "hypervolume": hv.tolist(),
    "cumulative_hypervolume": per_generation["cumulative_hypervolume"].tolist(),
    "last_improving_generation": (int(improving.max()) if len(improving) else None),
    "hypervolume_change": float(hv[-1] - hv[0]) if len(hv) else None,
    "best_hypervolume": float(np.max(hv)) if len(hv) else None,
}
display(KEY_NUMBERS)

# %%
print(key_numbers_line(KEY_NUMBERS))
