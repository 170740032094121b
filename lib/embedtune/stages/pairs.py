"""Stage 01_pairs: gold training pairs from the train qrels, with the leakage guard applied.

Leaves ``pairs/`` in the run folder: ``train.jsonl`` (one pair per line), ``dev_qrels.json``
(the dev queries that choose checkpoints and fusion weights), ``leakage.json`` and ``stats.json``.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pandas as pd

from embedtune.context import RunContext
from embedtune.io import atomic_path
from embedtune.pairs import LeakageReport, gold_pairs, leakage_guard
from embedtune.train import write_rows


@dataclass
class PairsResult:
    rows: list[dict]
    dev_qrels: dict
    leakage: LeakageReport
    stats: dict

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([self.stats]).T.rename(columns={0: "value"})

    def examples(self, n: int = 5) -> pd.DataFrame:
        frame = pd.DataFrame(self.rows[:n])[["query_id", "anchor", "doc_id", "positive"]]
        frame["positive"] = frame["positive"].str.slice(0, 160) + "..."
        return frame


def run(ctx: RunContext) -> PairsResult:
    cfg = ctx.cfg
    ds, splits = ctx.data
    test_q = {q: ds.queries[q] for q in splits.test}
    used_q = {q: ds.queries[q] for q in list(splits.train) + list(splits.dev)}
    embed = (lambda texts: ctx.embed_queries(ctx.base_model, texts)) if cfg.pairs.leakage_cosine else None
    leakage = leakage_guard(used_q, test_q, embed=embed, threshold=cfg.pairs.leakage_cosine)
    train_qrels = {q: d for q, d in splits.train.items() if q not in leakage.removed}
    dev_qrels = {q: d for q, d in splits.dev.items() if q not in leakage.removed}
    rows = gold_pairs(ds, train_qrels, cfg.pairs.min_score)
    n_all = len(rows)
    if cfg.pairs.max_pairs_per_query is not None:
        rows = cap_per_query(rows, cfg.pairs.max_pairs_per_query, cfg.seed)
    if cfg.pairs.max_train_pairs is not None and len(rows) > cfg.pairs.max_train_pairs:
        rows = sorted(random.Random(cfg.seed).sample(rows, cfg.pairs.max_train_pairs),
                      key=lambda r: (r["query_id"], r["doc_id"]))
    stats = {
        "train_queries": len({r["query_id"] for r in rows}),
        "train_pairs": len(rows),
        "train_pairs_before_subsample": n_all,
        "max_pairs_per_query": cfg.pairs.max_pairs_per_query,
        "dev_queries": len(dev_qrels),
        "test_queries": len(splits.test),
        "removed_exact_duplicates": len(leakage.exact),
        "removed_near_duplicates": len(leakage.near),
        "dev_from": splits.dev_source,
        "test_from": splits.test_source,
        "sources": {"gold": len(rows)},
    }
    with atomic_path(ctx.run_dir / "pairs") as folder:
        folder.mkdir()
        write_rows(folder / "train.jsonl", rows)
        (folder / "dev_qrels.json").write_text(json.dumps(dev_qrels))
        (folder / "leakage.json").write_text(json.dumps(leakage.summary() | {
            "exact": leakage.exact, "near": {k: list(v) for k, v in leakage.near.items()}}, indent=1))
        (folder / "stats.json").write_text(json.dumps(stats, indent=1))
    return PairsResult(rows, dev_qrels, leakage, stats)


def cap_per_query(rows: list[dict], cap: int, seed: int) -> list[dict]:
    """At most ``cap`` pairs per query, a seeded choice; queries keep their order."""
    by_query: dict[str, list[dict]] = {}
    for row in rows:
        by_query.setdefault(row["query_id"], []).append(row)
    rng = random.Random(seed)
    kept = []
    for query_rows in by_query.values():
        kept += query_rows if len(query_rows) <= cap else rng.sample(query_rows, cap)
    return kept


def load(ctx: RunContext) -> tuple[list[dict], dict]:
    """The training pairs and dev qrels that 01_pairs left in the run folder."""
    from embedtune.train import read_rows

    folder = ctx.run_dir / "pairs"
    if not (folder / "train.jsonl").is_file():
        raise FileNotFoundError(f"{folder}: no pairs yet; run the pairs stage first")
    return read_rows(folder / "train.jsonl"), json.loads((folder / "dev_qrels.json").read_text())
