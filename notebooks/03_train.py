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
# # 03 · Train: fine-tune with sentence-transformers
#
# `SentenceTransformerTrainer` with the loss named in `train.loss`; dev evaluation after each epoch, the best checkpoint kept and saved with its model card.

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import train

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = train.run(ctx)
{k: result.version[k] for k in ('version', 'loss', 'examples', 'steps', 'train_seconds', 'precision', 'device')}

# %%
result.plot();

# %%
result.dev_table().round(4)

# %% [markdown]
# The keep-base guard: the model ships only if it beats the base model on held-out queries (`train.keep_base_p`; with `train.guard_folds`, on the train queries too, by k-fold cross-fitting).

# %%
print(result.version['keep_base']['reason'])
result.guard_folds()
