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
# # 00 · Decide: does fine-tuning pay off here?
#
# Measures each input of the brief's decision flowchart (special vocabulary, labelled pairs, generic recall@10 on **dev** queries, what hybrid alone reaches) and walks it; then the **pilot**: short fine-tunes on subsamples of the training pairs, scored on dev queries against the base model, extrapolated to every pair. The verdict follows the pilot; the flowchart's stays beside it. Test queries are never looked at. Writes `decision.json`.

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import decide

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = decide.run(ctx)
print('Verdict:', result.decision.verdict)
for reason in result.decision.reasons:
    print('-', reason)

# %%
result.plot();

# %% [markdown]
# The pilot: each short fine-tune's dev gain over the base model (paired bootstrap interval over dev queries), and the line through them (gain against log pairs) extrapolated to every training pair.

# %%
display(result.pilot_table())
result.plot_pilot();

# %% [markdown]
# The measurements behind it:

# %%
import pandas as pd
pd.DataFrame(result.document['dev_scores']).T.round(4)

# %%
{k: v for k, v in result.vocabulary.items()}
