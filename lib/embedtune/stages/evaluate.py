"""Stage 04_evaluate: every system on the held-out test queries, written to ``metrics.json``.

Systems: ``bm25``, ``generic`` (the base model), ``finetuned`` (when 03_train left a model),
and ``hybrid_generic`` / ``hybrid_finetuned`` (BM25 + the dense system, fused by the configured
method; a convex weight is chosen on dev queries, never on test). With ``ood.datasets`` set, the
fine-tuned model is also checked against the generic one on other datasets (forgetting).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import time
from dataclasses import dataclass, field

import pandas as pd

from embedtune.context import RunContext, stage
from embedtune.data import load_beir, relevant_only
from embedtune.evaluate import Scores, evaluate_runs, metrics_document
from embedtune.fusion import HybridRetriever
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import resolve_precision
from embedtune.provenance import environment, now
from embedtune.retrieval import DenseIndex, Run, ann_params, save_run
from embedtune.stats import comparisons

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


@stage("evaluate")
def run(ctx: RunContext) -> EvaluationResult:
    """Run every available system on the test split; write ``metrics.json`` and the runs.

    ``finetuned`` and ``hybrid_finetuned`` join when 03_train left a model in the run folder.
    """
    cfg = ctx.cfg
    ds, splits = ctx.data
    top_k = cfg.retrieval.top_k
    metrics = list(cfg.evaluate.metrics)
    if not splits.test:
        raise ValueError(f"no judged test queries in split {cfg.data.eval_split!r}")
    dev_qrels = ctx.dev_qrels()
    test_q = {q: ds.queries[q] for q in splits.test}
    dev_q = {q: ds.queries[q] for q in dev_qrels}
    timings: dict = {}

    start = time.perf_counter()
    dense = ctx.dense_systems  # encodes each model's corpus, or loads it from the cache
    timings["dense_index_seconds"] = time.perf_counter() - start
    timings["corpus_encoded_now"] = not dense["generic"].index.from_cache
    if "finetuned" in dense:
        timings["finetuned_corpus_encoded_now"] = not dense["finetuned"].index.from_cache
    hybrid_info = {}
    for name, system in dense.items():  # each hybrid's weight is chosen on dev, never on test
        _, hybrid_info[f"hybrid_{name}"] = HybridRetriever.fit(
            f"hybrid_{name}", ctx.bm25, system, cfg.retrieval.hybrid, dev_qrels, dev_q, top_k)
    systems = ctx.systems(hybrid_info)
    runs: dict[str, Run] = {}
    for name, system in systems.items():
        start = time.perf_counter()
        runs[name] = system.search(test_q, top_k)
        timings[f"{name}_seconds"] = time.perf_counter() - start
    if cfg.retrieval.hybrid.method == "convex":  # the parameter-free alternative, for the record
        rrf = dataclasses.replace(cfg.retrieval.hybrid, method="rrf")
        for name in hybrid_info:
            fused = HybridRetriever(name, ctx.bm25, dense[name.removeprefix("hybrid_")], rrf).search(test_q, top_k)
            hybrid_info[name]["rrf_for_comparison"] = evaluate_runs(splits.test, {"rrf": fused}, metrics).mean["rrf"]

    wanted = [s for s in cfg.evaluate.systems if s in runs]
    scores = evaluate_runs(splits.test, {s: runs[s] for s in wanted}, metrics)
    significance = comparisons(scores.per_query, list(cfg.evaluate.comparisons), metrics,
                               cfg.evaluate.stat_test, cfg.seed)
    ood = {}
    finetuned = dense.get("finetuned")
    if finetuned is not None and cfg.ood.datasets:
        start = time.perf_counter()
        ood = out_of_domain(ctx, dense["generic"].model, finetuned.model)
        timings["ood_seconds"] = time.perf_counter() - start

    if cfg.retrieval.dense_backend in ("hnsw", "ivf"):  # what the approximate search missed
        extra_ann = {name: {"backend": cfg.retrieval.dense_backend, **system.index.ann,
                            "recall@10_vs_exact": system.index.recall_against_exact(
                                ctx.embed_queries(system.model, list(test_q.values())), 10)}
                     for name, system in dense.items()}
    else:
        extra_ann = {}
    click_validation = _click_validation(ctx, systems, wanted)
    truncated = truncated_dims(ctx, test_q, splits.test, dense, cfg.evaluate.dims)

    version = ctx.version()
    index = dense["generic"].index
    dataset = {
        "name": ds.name,
        "eval_split": cfg.data.eval_split,
        "n_queries": scores.n_queries,
        "n_docs": len(ds.corpus),
        "fingerprint": ds.fingerprint(),
        "test_queries": splits.test_source,
        "dev_queries": f"{len(dev_qrels)}: {splits.dev_source}",
        "sliced": cfg.data.max_queries is not None or cfg.data.max_docs is not None,
    }
    model = dense["generic"].model
    cost = {
        "device": str(model.device),
        "precision": resolve_precision(cfg.model.precision, str(model.device)),
        "train_seconds": version.get("train_seconds"),
        "train_device": version.get("device"),
        "encode_docs_per_second": index.docs_per_second,
        "bm25_index_seconds": round(ctx.bm25.index_seconds, 3),
        "embedding_dim": int(index.embeddings.shape[1]),
        "encoder": model.embedtune_encoder.name,  # back-end, quantisation, precision of every encoding
        "encoding": ctx.encoding,
        "index_bytes": int(index.embeddings.nbytes),
    }
    extra = {"hybrid": hybrid_info, "stat_test": cfg.evaluate.stat_test, "created": now()}
    if extra_ann:
        extra["ann"] = extra_ann
    if click_validation:
        extra["click_validation"] = click_validation
    if truncated:
        extra["truncated"] = truncated
    if version:
        extra["finetuned_model"] = {k: version[k] for k in ("version", "loss", "steps", "examples")}
        extra["finetuned_model"]["kept"] = version.get("kept", True)  # the keep-base guard's verdict (dev)
        if "keep_base" in version:
            extra["finetuned_model"]["keep_base"] = version["keep_base"]
    doc = metrics_document(cfg.experiment, dataset, cfg.model.name, scores, significance, cost,
                           ood=ood, extra=extra)
    layout = ctx.layout
    atomic_write_json(layout.metrics, doc)
    with atomic_path(layout.per_query) as tmp:
        scores.per_query.to_csv(tmp)  # full precision: the report and sweeps test the same numbers
    for name, system_run in runs.items():
        save_run(system_run, layout.run_file(name), name)
    ctx.update_manifest(
        dataset={"name": ds.name, "path": str(ds.path), "fingerprint": dataset["fingerprint"],
                 "corpus_fingerprint": index.corpus_fingerprint},
        model={"name": cfg.model.name, "source": model.embedtune_source.source,
               "path": model.embedtune_source.path, "fingerprint": index.model_fingerprint,
               "finetuned_fingerprint": finetuned.index.model_fingerprint if finetuned else None},
        environment=environment(),
        evaluate={"timings": timings, "finished": now()},
    )
    return EvaluationResult(scores, significance, doc, runs, timings)


def _click_validation(ctx: RunContext, systems: dict, wanted: list[str]) -> dict:
    """Every system on the click validation set that 01_pairs left (queries with clicked
    documents), beside the gold test set; hybrids keep the weight chosen on dev."""
    path = ctx.layout.click_validation
    if not path.is_file():
        return {}
    val = json.loads(path.read_text())
    queries, qrels = val["queries"], val["qrels"]
    if not qrels:
        return {}
    click_runs = {name: systems[name].search(queries, ctx.cfg.retrieval.top_k) for name in wanted}
    scores = evaluate_runs(qrels, click_runs, ["ndcg@10", "recall@10", "mrr@10", "hit_rate@10"])
    stats = json.loads(ctx.layout.pairs_stats.read_text()).get("source_details", {})
    return {"n_queries": scores.n_queries, "simulated": stats.get("clicks", {}).get("simulated"),
            "systems": {k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scores.mean.items()}}


def truncated_dims(ctx: RunContext, queries: dict[str, str], qrels: dict,
                   dense: dict, dims: tuple[int, ...]) -> dict:
    """Each dense system with its embeddings cut to the first ``d`` dimensions and renormalised,
    as a Matryoshka-trained model is meant to be served small (an index ``full / d`` times smaller).

    Returns ``{"<d>": {"generic": {metric: value}, "finetuned": {...}, "index_bytes": n,
    "significance": {"finetuned_vs_generic": ...}}}``; empty when ``dims`` is.
    """
    import numpy as np

    cfg = ctx.cfg
    qids = list(queries)
    out = {}
    if not dims:
        return out
    q_full = {label: ctx.embed_queries(system.model, [queries[q] for q in qids]) for label, system in dense.items()}
    for dim in sorted(dims, reverse=True):
        runs = {}
        for label, system in dense.items():
            index = system.index
            full = index.embeddings.shape[1]
            if not 0 < dim <= full:
                raise ValueError(f"evaluate.dims: {dim} is not between 1 and the model's dimension {full}")
            small = dataclasses.replace(index, embeddings=_cut(index.embeddings, dim), _faiss={})
            q_emb = _cut(q_full[label], dim)
            idx, scores = small.search_embeddings(q_emb, cfg.retrieval.top_k)
            runs[label] = {q: {small.doc_ids[j]: float(v) for j, v in zip(idx[i], scores[i]) if j >= 0}
                           for i, q in enumerate(qids)}
        scored = evaluate_runs(qrels, runs, ["ndcg@10", "recall@10", "recall@100"])
        block = {k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scored.mean.items()}
        block["index_bytes"] = int(len(index.doc_ids) * dim * np.dtype(np.float32).itemsize)
        if {"generic", "finetuned"} <= set(runs):
            block["significance"] = comparisons(scored.per_query, ["finetuned_vs_generic"], ["ndcg@10"],
                                                        cfg.evaluate.stat_test, cfg.seed)
        out[str(dim)] = block
    return out


def _cut(embeddings, dim: int):
    import numpy as np

    cut = np.ascontiguousarray(embeddings[:, :dim], dtype=np.float32)
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


def out_of_domain(ctx: RunContext, generic, finetuned) -> dict:
    """The fine-tuned model against the generic one on other datasets' test queries."""
    cfg = ctx.cfg
    out = {}
    for name in cfg.ood.datasets:
        ds = load_beir(name, strict=cfg.data.strict)
        qrels = relevant_only(ds.qrels.get("test") or ds.qrels[sorted(ds.qrels)[0]], cfg.data.min_score)
        if cfg.ood.max_queries is not None and len(qrels) > cfg.ood.max_queries:
            keep = random.Random(cfg.seed).sample(sorted(qrels), cfg.ood.max_queries)
            qrels = {q: qrels[q] for q in sorted(keep)}
        queries = {q: ds.queries[q] for q in qrels}
        runs = {}
        for label, model in (("generic", generic), ("finetuned", finetuned)):
            index = DenseIndex.build(model, ds.corpus, cfg.model, backend=cfg.retrieval.dense_backend,
                                     ann=ann_params(cfg.retrieval))
            runs[label] = index.search(model, queries, cfg.model, cfg.retrieval.top_k)
        scores = evaluate_runs(qrels, runs, ["ndcg@10", "recall@10", "recall@100"])
        sig = comparisons(scores.per_query, ["finetuned_vs_generic"], ["ndcg@10"], cfg.evaluate.stat_test, cfg.seed)
        out[name] = {**{k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scores.mean.items()},
                     "n_queries": scores.n_queries, "n_docs": len(ds.corpus),
                     "significance": sig}
    return out

