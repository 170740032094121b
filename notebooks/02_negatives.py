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
# # 02 · Negatives: hard negatives without false negatives
#
# Candidates from BM25 and from the base model (sentence-transformers' `mine_hard_negatives`), then the false-negative guard: a rank window, a relative margin below the positive's score, and every judged positive of the query excluded. A manual curation file (`negatives.manual`) is honoured.

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import negatives

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = negatives.run(ctx)
print('what each filter removed, per source (<NA>: masked inside the miner)')
result.table()

# %%
result.plot_scores();

# %%
print(result.stats.st_report.split('Metric')[-1] if 'Metric' in result.stats.st_report else result.stats.st_report)

# %%
result.examples()
