"""Stage 04_evaluate: every system on the held-out test queries, written to ``metrics.json``.

Systems so far: ``bm25``, ``generic`` (the base model) and ``hybrid_generic`` (BM25 + generic,
fused by the configured method; a convex weight is chosen on dev queries, never on test).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import pandas as pd

from embedtune.context import RunContext, environment, now
from embedtune.evaluate import Scores, evaluate_runs, metrics_document, paired_significance
from embedtune.fusion import choose_convex_weight, fuse_runs
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import load_model, resolve_precision
from embedtune.retrieval import BM25Retriever, DenseIndex, Run, save_run

log = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    scores: Scores
    significance: dict
    metrics: dict  # the metrics.json document
    runs: dict[str, Run]
    timings: dict[str, float] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Systems as rows, metrics as columns."""
        return pd.DataFrame(self.scores.mean).T

    def significance_table(self) -> pd.DataFrame:
        rows = [
            {"comparison": name, "metric": m, **values}
            for name, per_metric in self.significance.items()
            for m, values in per_metric.items()
        ]
        return pd.DataFrame(rows)


def run(ctx: RunContext) -> EvaluationResult:
    """Run BM25, the generic model and their fusion on the test split; write the outputs."""
    cfg = ctx.cfg
    ds, splits = ctx.data
    top_k = cfg.retrieval.top_k
    if not splits.test:
        raise ValueError(f"no judged test queries in split {cfg.data.eval_split!r}")
    test_q = {q: ds.queries[q] for q in splits.test}
    dev_q = {q: ds.queries[q] for q in splits.dev}
    timings: dict[str, float] = {}
    runs: dict[str, Run] = {}

    start = time.perf_counter()
    bm25 = BM25Retriever(ds.corpus, cfg.retrieval.bm25)
    timings["bm25_index_seconds"] = bm25.index_seconds
    runs["bm25"] = bm25.search(test_q, top_k)
    bm25_dev = bm25.search(dev_q, top_k) if dev_q else {}
    timings["bm25_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
    index = DenseIndex.build(model, ds.corpus, cfg.model, backend=cfg.retrieval.dense_backend)
    runs["generic"] = index.search(model, test_q, cfg.model, top_k)
    dense_dev = index.search(model, dev_q, cfg.model, top_k) if dev_q else {}
    timings["dense_seconds"] = time.perf_counter() - start
    timings["corpus_encoded_now"] = not index.from_cache

    hybrid_cfg = cfg.retrieval.hybrid
    hybrid_info: dict = {"method": hybrid_cfg.method}
    rrf_cfg = type(hybrid_cfg)(**{**hybrid_cfg.__dict__, "method": "rrf"})
    rrf_run = fuse_runs(runs["bm25"], runs["generic"], rrf_cfg, top_k=top_k)
    if hybrid_cfg.method == "convex":
        if not splits.dev:
            raise ValueError(
                "hybrid.method is convex but this experiment has no dev queries to choose the "
                "weight on (never on test): add a dev split, or set retrieval.hybrid.method: rrf"
            )
        weight, trials = choose_convex_weight(splits.dev, bm25_dev, dense_dev, hybrid_cfg)
        runs["hybrid_generic"] = fuse_runs(runs["bm25"], runs["generic"], hybrid_cfg,
                                           bm25_weight=weight, top_k=top_k)
        hybrid_info.update(bm25_weight=weight, norm=hybrid_cfg.norm,
                           chosen_on=f"{len(splits.dev)} dev queries: {splits.dev_source}",
                           chosen_by=hybrid_cfg.weight_metric, dev_trials=trials)
    else:
        runs["hybrid_generic"] = rrf_run
        hybrid_info.update(rrf_k=hybrid_cfg.rrf_k)

    wanted = [s for s in cfg.evaluate.systems if s in runs]
    metrics = list(cfg.evaluate.metrics)
    scores = evaluate_runs(splits.test, {s: runs[s] for s in wanted}, metrics)
    if hybrid_cfg.method != "rrf":
        hybrid_info["rrf_for_comparison"] = evaluate_runs(splits.test, {"rrf": rrf_run}, metrics).mean["rrf"]
    significance = paired_significance(scores, list(cfg.evaluate.comparisons), metrics,
                                       cfg.evaluate.stat_test, cfg.seed)

    dataset = {
        "name": ds.name,
        "eval_split": cfg.data.eval_split,
        "n_queries": scores.n_queries,
        "n_docs": len(ds.corpus),
        "fingerprint": ds.fingerprint(),
        "test_queries": splits.test_source,
        "dev_queries": f"{len(splits.dev)}: {splits.dev_source}",
        "sliced": cfg.data.max_queries is not None or cfg.data.max_docs is not None,
    }
    cost = {
        "device": str(model.device),
        "precision": resolve_precision(cfg.model.precision, str(model.device)),
        "train_seconds": None,
        "encode_docs_per_second": index.docs_per_second,
        "bm25_index_seconds": round(bm25.index_seconds, 3),
        "embedding_dim": int(index.embeddings.shape[1]),
        "index_bytes": int(index.embeddings.nbytes),
    }
    doc = metrics_document(cfg.experiment, dataset, cfg.model.name, scores, significance, cost,
                           extra={"hybrid": hybrid_info, "stat_test": cfg.evaluate.stat_test,
                                  "created": now()})
    atomic_write_json(ctx.run_dir / "metrics.json", doc)
    with atomic_path(ctx.run_dir / "per_query.csv") as tmp:
        scores.per_query.round(6).to_csv(tmp)
    for name, system_run in runs.items():
        save_run(system_run, ctx.run_dir / "runs" / f"{name}.trec", name)
    ctx.update_manifest(
        dataset={"name": ds.name, "path": str(ds.path), "fingerprint": dataset["fingerprint"],
                 "corpus_fingerprint": index.corpus_fingerprint},
        model={"name": cfg.model.name, "source": model.embedtune_source.source,
               "path": model.embedtune_source.path, "fingerprint": index.model_fingerprint},
        environment=environment(),
        evaluate={"timings": timings, "finished": now()},
    )
    return EvaluationResult(scores, significance, doc, runs, timings)
