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
# # Label: manual gold judgements
#
# Shows each query with its top `k` candidates from BM25 or the generic model; grade each candidate (0 not relevant, 1 relevant, 2 highly relevant) and press **Save & next**. Every save rewrites `gold_file` atomically, so you can stop at any time and re-run the notebook to resume at the first query not yet saved (skips last for the session only). Unmarked candidates are saved as 0, judged not relevant.
#
# The file is a TSV (`query_id, query, doc_id, grade`) that the pipeline imports beside the BEIR qrels (docs/data-sources.md). The brief's sweet spot: a few hundred manual pairs as gold.

# %% tags=["parameters"]
params_file = "params/smoke.yaml"   # experiment whose dataset (and slice) is labelled
overrides = {}                      # dotted keys, e.g. {"data.max_docs": 2000}
gold_file = "gold/labels.tsv"       # labels go here (project-relative; created when missing)
split = "test"                      # label the queries of this split: train, dev or test ...
queries_file = ""                   # ... or the queries in this text file, one per line
candidates = "bm25"                 # who proposes the candidates: bm25 or generic (the base model)
k = 10                              # candidates shown per query

# %%
from embedtune import labeling

labeler = labeling.open_labeler(params_file, overrides, gold_file, split=split,
                            queries_file=queries_file or None, candidates=candidates, k=k)
labeler.progress()

# %%
labeling.label_widget(labeler)

# %% [markdown]
# When you are done (or want to check), read the file back as the pipeline will:

# %%
imported = labeler.read()
imported.stats if imported else 'no labels saved yet'
