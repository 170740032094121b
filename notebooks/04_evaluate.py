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
# # 04 · Evaluate: every system on the held-out test queries
#
# BM25, the generic embedding model, the fine-tuned model (when 03_train ran) and their hybrids, scored with ranx on the test split. Each hybrid's convex weight is chosen on dev queries only. Writes `metrics.json`, `per_query.csv` and `runs/`.

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>

# %%
from IPython.display import display
from embedtune import plots
from embedtune.context import open_run
from embedtune.stages import evaluate

ctx = open_run(params_file, overrides, run_dir or None)
ds, splits = ctx.data
summary = plots.describe_data(ds, splits)
print(summary.attrs['corpus'])
summary

# %%
result = evaluate.run(ctx)
result.table().style.format('{:.4f}').set_caption(f"{ctx.cfg.experiment}: {result.scores.n_queries} test queries")

# %% [markdown]
# Paired significance over queries (`delta` = first minus second system).

# %%
result.significance_table().query("metric in ['ndcg@10', 'recall@10', 'mrr@10']").style.format({'delta': '{:+.4f}', 'p_value': '{:.4f}'}).hide(axis='index')

# %%
plots.recall_curve(result.scores.mean);

# %%
for name, info in result.metrics['hybrid'].items():
    if 'dev_trials' in info:
        plots.fusion_weight_curve(info['dev_trials'], info['bm25_weight'], info['chosen_by'])
        print(f"{name}: BM25 weight {info['bm25_weight']:.2f}, chosen on {info['chosen_on']}; "
              f"RRF instead would give nDCG@10 {info['rrf_for_comparison']['ndcg@10']:.4f}")
    else:
        print(name, info)

# %% [markdown]
# Out of domain: the fine-tuned model against the generic one on other datasets.

# %%
result.metrics['ood'] or 'no ood.datasets configured (or no fine-tuned model yet)'

# %%
result.metrics['cost']
