"""Stage 01_pairs: gold training pairs from the train qrels, with the leakage guard applied.

Leaves ``pairs/`` in the run folder: ``train.jsonl`` (one pair per line), ``dev_qrels.json``
(the dev queries that choose checkpoints and fusion weights), ``leakage.json`` and ``stats.json``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pandas as pd

from embedtune.context import RunContext, stage
from embedtune.io import atomic_path, write_rows
from embedtune.pairs import LeakageReport, capped, gold_pairs, leakage_guard


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


@stage("pairs")
def run(ctx: RunContext) -> PairsResult:
    cfg = ctx.cfg
    ds, splits = ctx.data
    test_q = {q: ds.queries[q] for q in splits.test}
    used_q = {q: ds.queries[q] for q in list(splits.train) + list(splits.dev)}
    embed = (lambda texts: ctx.embed_queries(ctx.base_model, texts)) if cfg.pairs.leakage_cosine else None
    leakage = leakage_guard(used_q, test_q, embed=embed, threshold=cfg.pairs.leakage_cosine)
    train_qrels = {q: d for q, d in splits.train.items() if q not in leakage.removed}
    dev_qrels = {q: d for q, d in splits.dev.items() if q not in leakage.removed}
    gold = gold_pairs(ds, train_qrels, cfg.pairs.min_score)
    n_all = len(gold)
    gold = capped(gold, cfg.pairs.max_pairs_per_query, cfg.pairs.max_train_pairs, cfg.seed)
    by_source = {"gold": gold if "gold" in cfg.pairs.sources else []}
    details: dict = {}
    validation = None
    for source in cfg.pairs.sources:
        if source in ("synthetic", "ict", "crop"):
            by_source[source], details[source] = _generated(ctx, source, gold)
    if "clicks" in cfg.pairs.sources or cfg.clicks.path or cfg.clicks.simulate:
        click_rows, validation, details["clicks"] = ctx.click_source(train_qrels, dev_qrels)
        if "clicks" in cfg.pairs.sources:
            by_source["clicks"] = click_rows
    # generated and clicked queries pass the leakage guard too: an LLM can write a test query
    extra = {r["query_id"]: r["anchor"] for s, rs in by_source.items() if s != "gold" for r in rs}
    extra_leak = leakage_guard(extra, test_q, embed=embed, threshold=cfg.pairs.leakage_cosine) if extra else None
    if extra_leak:
        for source, rows_ in by_source.items():
            if source != "gold":
                by_source[source] = [r for r in rows_ if r["query_id"] not in extra_leak.removed]
    rows = [r for source in by_source.values() for r in source]
    if not rows:
        raise ValueError(f"no training pairs from pairs.sources {list(cfg.pairs.sources)}")
    stats = {
        "train_queries": len({r["query_id"] for r in rows}),
        "train_pairs": len(rows),
        "gold_pairs_before_caps": n_all,  # gold pairs of the train queries, before the caps
        "max_pairs_per_query": cfg.pairs.max_pairs_per_query,
        "dev_queries": len(dev_qrels),
        "test_queries": len(splits.test),
        "removed_exact_duplicates": len(leakage.exact),
        "removed_near_duplicates": len(leakage.near),
        "removed_generated_near_test": len(extra_leak.removed) if extra_leak else 0,
        "dev_from": splits.dev_source,
        "test_from": splits.test_source,
        "sources": {s: len(v) for s, v in by_source.items()},
        "source_details": details,
    }
    layout = ctx.layout
    with atomic_path(layout.pairs_dir) as folder:
        folder.mkdir()
        write_rows(folder / layout.pairs_train.name, rows)
        (folder / layout.dev_qrels.name).write_text(json.dumps(dev_qrels))
        (folder / "leakage.json").write_text(json.dumps(leakage.summary() | {
            "exact": leakage.exact, "near": {k: list(v) for k, v in leakage.near.items()}}, indent=1))
        (folder / layout.pairs_stats.name).write_text(json.dumps(stats, indent=1))
        if validation is not None:
            (folder / layout.click_validation.name).write_text(json.dumps(validation))
    return PairsResult(rows, dev_qrels, leakage, stats)


def _generated(ctx: RunContext, source: str, gold: list[dict]) -> tuple[list[dict], dict]:
    """Pairs from LLM-written queries (``synthetic``) or cut from documents (``ict``/``crop``).

    Documents judged for test queries get no generated queries, so no test positive is trained on.
    """
    import dataclasses

    from embedtune import paths, synthetic

    cfg = ctx.cfg
    ds, splits = ctx.data
    test_docs = {d for docs in splits.test.values() for d in docs}
    if source in ("ict", "crop"):
        rows = synthetic.crop_queries(ds.corpus, dataclasses.replace(cfg.crop, method=source),
                                      cfg.seed, exclude=test_docs)
        return rows, {"documents": len({r["doc_id"] for r in rows}), "kept": len(rows)}
    generator = synthetic.make_generator(cfg.synthetic)
    search = None
    if cfg.synthetic.filters.roundtrip == "bm25":
        search = synthetic.as_search_fn(ctx.bm25)
    elif cfg.synthetic.filters.roundtrip == "generic":
        search = synthetic.as_search_fn(ctx.generic_index, ctx.base_model, cfg.model)
    result = synthetic.synthesize(ds.corpus, generator, cfg.synthetic,
                                  examples=synthetic.example_pool(cfg.synthetic, gold, cfg.seed),
                                  search=search, seed=cfg.seed, exclude=test_docs,
                                  cache_folder=paths.cache_dir() / "synthetic")
    return result.pairs, result.stats
