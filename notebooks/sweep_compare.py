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

# %% tags=["parameters"]
sweep_dir = ""                      # the sweep folder (holds sweep.json), e.g. results/scifact/loss
system = ""                         # system compared across points; empty: the sweep's own (finetuned)

# %%
import warnings
warnings.simplefilter('ignore')  # the page is for reading
from IPython.display import Markdown, display
from embedtune.sweep import load_comparison

cmp = load_comparison(sweep_dir, system or None)
display(Markdown(f"# Sweep `{cmp.summary['sweep']}` of `{cmp.summary['experiment']}`\n\n"
                 + cmp.headline()))

# %% [markdown]
# ## Every point
#
# Mean over the test queries with a bootstrap interval (queries resampled). *vs baseline*: the point minus the baseline point on the same queries, with the paired test's p-value; *vs generic*: the point's fine-tuned model minus the generic model (from its `metrics.json`). Training time is that of the run that trained the model; model size is its folder on disk.

# %%
cmp.report_table()

# %% [markdown]
# ## The swept parameter against quality
#
# Error bars: the bootstrap intervals above. One line per combination of the other swept keys; the dashed line is the generic model, not fine-tuned.

# %%
cmp.plot();

# %% [markdown]
# ## Across seeds
#
# When the sweep varies `seed` (the seed draws the training subsample and the training order), the points that differ only in it form a group. *mean*, *sd*, *min*, *max*: of the points' nDCG@10; *vs generic*: each test query's nDCG@10 averaged over the group's seeds, minus the generic model's, paired over the queries, with `p_holm` Holm-adjusted over the groups. One seed per group leaves *sd* empty and the test is that one model's.

# %%
seeds = cmp.over_seeds('ndcg@10')
(seeds.style.format({'mean': '{:.4f}', 'sd': '{:.4f}', 'min': '{:.4f}', 'max': '{:.4f}',
                     'generic': '{:.4f}', 'vs generic': '{:+.4f}', 'p_value': '{:.3g}',
                     'p_holm': '{:.3g}'}, na_rep='').hide(axis='index')
 if len(seeds) else Markdown('This sweep does not vary the seed.'))

# %% [markdown]
# ## Significance against the baseline point
#
# Paired over the test queries both points answered (`evaluate.stat_test`: `student` is the paired t-test, `fisher` a randomization test). With several points tested against one baseline, `p_holm` is Holm-adjusted over the points; `significant` uses it.

# %%
cmp.significance().style.format({'delta': '{:+.4f}', 'p_value': '{:.3g}', 'p_holm': '{:.3g}'}).hide(axis='index')

# %% [markdown]
# ## At truncated dimensions
#
# With `evaluate.dims` set, each point's models are also scored with their embeddings cut to the first *d* dimensions and renormalised (an index full/*d* times smaller): what Matryoshka training is for. The generic rows are the same base model in every point.

# %%
cuts = cmp.truncated()
cuts.style.format('{:.4f}') if len(cuts) else Markdown('No point was scored at truncated dimensions.')

# %% [markdown]
# ## Points that did not finish

# %%
failures = cmp.failures()
failures.style.hide(axis='index') if len(failures) else Markdown('Every point finished.')

# %% [markdown]
# ## Reproduce

# %%
s = cmp.summary
display(Markdown(
    f"```\n{cmp.command()}\n```\n\n"
    f"git `{(s.get('git') or {}).get('commit')}`"
    f"{' (uncommitted changes)' if (s.get('git') or {}).get('dirty') else ''}"
    + (f"; plus {s['extra_points']} extra points from the params file's sweep section" if s.get('extra_points') else '')
    + f". Every point starts from `{s['base_params']}` in the sweep folder; `sweep.json` "
    "lists each point's overrides, status and folder."))
