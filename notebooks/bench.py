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
bench_json = "results/bench/bench.json"   # what `embedtune bench` measured

# %%
import warnings
warnings.simplefilter('ignore')  # the page is for reading
from IPython.display import Markdown, display
from embedtune import bench_page

b = bench_page.load(bench_json)
display(Markdown(b.header()))

# %% [markdown]
# ## Goals, on this machine
#
# The goals of the speed work, each read off the rows below (same run, same machine).

# %%
b.goals()

# %% [markdown]
# ## Encoding: every back-end against plain sentence-transformers fp32
#
# Documents per second on the same passages, in interleaved rounds (plain, setting, plain, ...),
# each in a fresh process; *ratio* is the median of the per-round ratios [lowest, highest]. nDCG@10:
# on test queries of scifact and nfcorpus, minus torch fp32's (exact search; the corpus is said below).

# %%
display(Markdown(b.quality_note()))
b.encoding()

# %%
b.encoding_plot();

# %% [markdown]
# ## Training: samples per second to a trained, evaluated model, at equal steps
#
# The same MNRL steps on scifact triples, then one dev evaluation: the plain `SentenceTransformerTrainer`
# (fp32, sentence-transformers' IR evaluator) against embedtune's `fine_tune` (its precision and dev
# evaluator), and at `max_seq_length` 128 (the sequence-length choice, measured).

# %%
b.training()

# %% [markdown]
# ## BM25, dense search, latency

# %%
display(b.bm25())
display(b.dense_search())
b.latency()

# %% [markdown]
# ## The whole pipeline, cold and warm

# %%
b.pipeline()
