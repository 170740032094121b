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
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
import warnings
warnings.simplefilter('ignore')  # the stage notebooks keep every warning; the report is for reading
from IPython.display import Markdown, display
from embedtune.context import open_run
from embedtune.stages import report

ctx = open_run(params_file, overrides, run_dir or None)
r = report.run(ctx)
d, m = r.decision, r.metrics
display(Markdown(
    f"# {ctx.cfg.experiment}: does fine-tuning pay off?\n\n"
    f"**Decision before training** (00_decide, dev queries only): **{d.get('verdict', 'not run')}**. "
    + ' '.join(d.get('reasons', [])) + "\n\n"
    f"**What happened**: {r.headline_sentence()}\n\n"
    f"Dataset `{m['dataset']['name']}`: {m['dataset']['n_docs']:,} documents; test queries: "
    f"{m['dataset']['test_queries']}; dev queries: {m['dataset']['dev_queries']}. "
    f"Base model `{m['base_model']}`"
    + (f"; fine-tuned `{m['finetuned_model']['version']}` ({m['finetuned_model']['loss']}, "
       f"{m['finetuned_model']['examples']:,} examples, {m['finetuned_model']['steps']} steps)."
       if 'finetuned_model' in m else '.')))

# %%
r.show('headline');

# %% [markdown]
# ## Every system, every metric
#
# Mean over the test queries with a 95 % bootstrap interval (queries resampled). ▲ / ▼: significantly better / worse than `generic` (paired test over the same queries, p < 0.05).

# %%
r.quality()

# %%
r.show('intervals');

# %% [markdown]
# Paired tests of the comparisons that matter (`delta` = first minus second system):

# %%
r.significance().style.format({'delta': '{:+.4f}', 'p_value': '{:.3g}'}).hide(axis='index')

# %% [markdown]
# ## Recall at every depth

# %%
r.show('recall_at_k');

# %% [markdown]
# ## Where fine-tuning wins and loses
#
# nDCG@10 of the fine-tuned model minus the generic one, per test query.

# %%
r.show('win_loss');

# %% [markdown]
# ## Training
#
# Training loss, and the dev queries (never test) that chose the checkpoint.

# %%
r.show('training');

# %% [markdown]
# ## Training data
#
# Training pairs per source, after the leakage guard; and, when click logs validate, every system on the click-validation queries.

# %%
display(r.sources_table())
clicks = r.clicks_table()
if not clicks.empty:
    display(clicks.style.format({c: '{:.4f}' for c in clicks.columns if 'rank' not in c})
            .set_caption(clicks.attrs['caption']))

# %% [markdown]
# ## Against other runs
#
# When `report.compare_with` names other experiments on the same test queries (e.g. gold against generated training queries), each system's nDCG@10 here and there, with a paired test on the shared queries.

# %%
for name, table in r.comparison_tables().items():
    display(table.style.format({c: '{:.4f}' for c in ('here', 'there', 'delta', 'p_value')})
            .set_caption(f'this run ({r.summary["experiment"]}) against {name}'))
if not r.comparisons:
    print('report.compare_with names no other run')

# %% [markdown]
# ## Hard negatives
#
# Candidates per source and what the false-negative guard removed; the cosine of positives and kept negatives under the base model.

# %%
r.negatives_table()

# %%
r.show('negatives');

# %% [markdown]
# ## Out of domain
#
# The fine-tuned model on other datasets: a drop is forgetting.

# %%
r.ood_table()

# %%
r.show('ood');

# %% [markdown]
# ## Cost against benefit
#
# Wall time is that of the run that made the outputs (embedding-cache hits make re-runs cheaper). Prices are the rates in `params` (`report.cpu_hour_price`, `report.gpu_hour_price`). Latency: test queries answered one at a time on this machine.

# %%
r.cost_summary()

# %%
r.show('cost');

# %%
r.latency_table()

# %% [markdown]
# ## The decision, step by step
#
# The brief's flowchart on the measured inputs, then the pilot that the verdict follows: short fine-tunes on subsamples of the training pairs, their dev gain over the base model, and the extrapolation to every pair (dev queries only).

# %%
r.show('decision');

# %%
r.show('pilot');

# %%
import pandas as pd
pd.DataFrame({k: v for k, v in d.get('measurements', {}).items() if not isinstance(v, dict)}, index=['measured']).T

# %% [markdown]
# ## Reproduce

# %%
from embedtune.provenance import git_state
man, git = ctx.read_manifest(), git_state()
display(Markdown(
    f"`{ctx.command()}` (git `{git['commit']}`"
    f"{', uncommitted changes' if git['dirty'] else ''}), "
    f"dataset fingerprint `{m['dataset']['fingerprint'][:19]}...`, "
    f"torch {man['environment']['packages'].get('torch')}, "
    f"sentence-transformers {man['environment']['packages'].get('sentence-transformers')}."))
