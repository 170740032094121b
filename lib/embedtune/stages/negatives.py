"""Stage 02_negatives: hard negatives for every training pair, without false negatives.

Leaves ``negatives/`` in the run folder: ``train.jsonl`` (pairs with ``negative_ids``),
``stats.json`` and ``miner_report.txt`` (what sentence-transformers' miner printed).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from embedtune import plots
from embedtune.context import RunContext, stage
from embedtune.io import atomic_path, write_rows
from embedtune.negatives import MiningStats, judged_positives, mine


@dataclass
class NegativesResult:
    rows: list[dict]
    stats: MiningStats

    def table(self) -> pd.DataFrame:
        s = self.stats.summary()
        keys = ["candidates", "removed_judged_positive", "removed_margin", "kept"]
        return pd.DataFrame({k: s[k] for k in keys}).astype("Int64")  # <NA>: masked inside the miner

    def plot_scores(self, ax=None):
        """Base-model cosine of positives vs the chosen negatives."""
        return plots.score_histograms(self.stats.positive_scores, self.stats.negative_scores, ax=ax)

    def examples(self, n: int = 3) -> pd.DataFrame:
        rows = [r for r in self.rows if r["negative_ids"]][:n]
        return pd.DataFrame([{"query": r["anchor"], "positive": r["positive"][:120] + "...",
                              "hard negative": r["negatives"][0][:120] + "..."} for r in rows])


@stage("negatives")
def run(ctx: RunContext) -> NegativesResult:
    cfg = ctx.cfg
    ds, _ = ctx.data
    pairs = ctx.pairs()
    judged = judged_positives(ds, min_score=1)  # any grade above 0 is never a negative
    index = ctx.generic_index
    qids = sorted({p["query_id"] for p in pairs})
    texts = {p["query_id"]: p["anchor"] for p in pairs}  # synthetic queries are not in ds.queries
    q_emb = ctx.embed_queries(ctx.base_model, [texts[q] for q in qids])
    rows, stats = mine(
        ds, pairs, judged, cfg.negatives, ctx.base_model,
        teacher=index.embeddings, doc_index={d: i for i, d in enumerate(index.doc_ids)},
        query_emb=dict(zip(qids, q_emb)),
        bm25=ctx.bm25 if "bm25" in cfg.negatives.sources else None,
        precision=cfg.model.precision,
    )
    layout = ctx.layout
    with atomic_path(layout.negatives_dir) as folder:
        folder.mkdir()
        write_rows(folder / layout.negatives_train.name, rows)
        (folder / layout.negatives_stats.name).write_text(json.dumps(stats.summary(), indent=1))
        (folder / "miner_report.txt").write_text(stats.st_report)
    return NegativesResult(rows, stats)
