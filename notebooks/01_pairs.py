# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python (embedtune)
#     language: python
#     name: embedtune
# ---

# %% [markdown]
# # 01 · Pairs: gold training pairs and held-out hygiene
#
# (query, relevant document) pairs from the train qrels. The dev queries choose checkpoints and fusion weights; the test queries are never used for training or choosing. The leakage guard drops train/dev queries that duplicate a test query (exactly after normalisation, or by base-model cosine above `pairs.leakage_cosine`).

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import pairs

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = pairs.run(ctx)
result.table()

# %% [markdown]
# Queries removed by the leakage guard (train/dev query id -> test query id, cosine):

# %%
result.leakage.summary() | {'near': result.leakage.near}

# %%
result.examples()
