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
# # 06 · Monitor: versions, recall over time, drift, re-train, rollback
#
# The brief's maintenance advice, measured. Every fine-tuned model is a version in the registry (`embedtune models list`), with one in production; each version searches only its own index of the corpus (mixing versions is an error), updated by encoding only added or changed documents. Every evaluation on the gold set (the test queries) is appended to the monitoring log. A regression is flagged only when the monitored metric drops by more than `monitor.regression_threshold` **and** a one-sided permutation test over queries says the drop is not noise. Re-training is recommended on corpus drift, an upgraded base model, or a regression. With `monitor.scenario: true` (params/maintenance.yaml) the worked scenario runs instead: drift, recall drop, re-train, promote, rollback. Writes `monitor.json` (and `scenario.json`).

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import monitor

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = monitor.run(ctx)
print('production:', result.document['production'])
result.versions_table()

# %% [markdown]
# The monitored metric on the gold set, one point per evaluation in the log; the shaded band is each version's reference minus the regression threshold, a red ring a regression.

# %%
result.plot();

# %%
result.history_table()

# %% [markdown]
# Regression check: each version's latest evaluation against its reference (paired when both scored the same queries; two-sample when the gold set has changed since).

# %%
result.regression_table()

# %% [markdown]
# Corpus drift since the corpus the version was first indexed on: new-word share, the shift of the embedding distribution (centroid cosine; AUC of a classifier telling new documents from the reference ones: 0.5 = alike, 1.0 = another domain).

# %%
result.drift_table()

# %%
print(result.recommendation_text())

# %% [markdown]
# The worked scenario, step by step (only when `monitor.scenario` is on): what each step encoded, who was in production, and the metric overall and per query group.

# %%
result.steps_table()

# %% [markdown]
# Every promote and rollback of the production pointer:

# %%
result.pointer_table()
