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

from embedtune.context import RunContext, environment, now
from embedtune.evaluate import Scores, evaluate_runs, metrics_document, paired_significance
from embedtune.fusion import choose_convex_weight, fuse_as_chosen, fuse_runs
from embedtune.io import atomic_path, atomic_write_json, read_json
from embedtune.models import resolve_precision
from embedtune.data import load_beir, relevant_only
from embedtune.retrieval import DenseIndex, Run, save_run
from embedtune.stages import train as train_stage

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


def _hybrid(bm25_test: Run, dense_test: Run, bm25_dev: Run, dense_dev: Run,
            dev_qrels: dict, cfg, top_k: int, metrics: list[str], test_qrels: dict) -> tuple[Run, dict]:
    """Fuse BM25 with one dense system; a convex weight is chosen on dev queries only."""
    hybrid_cfg = cfg.retrieval.hybrid
    info: dict = {"method": hybrid_cfg.method}
    rrf_cfg = dataclasses.replace(hybrid_cfg, method="rrf")
    rrf_run = fuse_runs(bm25_test, dense_test, rrf_cfg, top_k=top_k)
    if hybrid_cfg.method == "rrf":
        return rrf_run, info | {"rrf_k": hybrid_cfg.rrf_k}
    if not dev_qrels:
        raise ValueError(
            "hybrid.method is convex but this experiment has no dev queries to choose the "
            "weight on (never on test): add a dev split, or set retrieval.hybrid.method: rrf"
        )
    weight, trials = choose_convex_weight(dev_qrels, bm25_dev, dense_dev, hybrid_cfg)
    fused = fuse_runs(bm25_test, dense_test, hybrid_cfg, bm25_weight=weight, top_k=top_k)
    info.update(bm25_weight=weight, norm=hybrid_cfg.norm, chosen_on=f"{len(dev_qrels)} dev queries",
                chosen_by=hybrid_cfg.weight_metric, dev_trials=trials,
                rrf_for_comparison=evaluate_runs(test_qrels, {"rrf": rrf_run}, metrics).mean["rrf"])
    return fused, info


def _dev_qrels(ctx: RunContext, splits) -> dict:
    # the leakage-guarded dev queries of 01_pairs when that stage ran, else the plain dev split
    path = ctx.run_dir / "pairs" / "dev_qrels.json"
    return json.loads(path.read_text()) if path.is_file() else splits.dev


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
    dev_qrels = _dev_qrels(ctx, splits)
    test_q = {q: ds.queries[q] for q in splits.test}
    dev_q = {q: ds.queries[q] for q in dev_qrels}
    timings: dict = {}
    runs: dict[str, Run] = {}
    dev_runs: dict[str, Run] = {}

    start = time.perf_counter()
    bm25 = ctx.bm25
    runs["bm25"] = bm25.search(test_q, top_k)
    dev_runs["bm25"] = bm25.search(dev_q, top_k) if dev_q else {}
    timings["bm25_seconds"] = time.perf_counter() - start

    start = time.perf_counter()
    model = ctx.base_model
    index = ctx.generic_index
    runs["generic"] = index.search(model, test_q, cfg.model, top_k)
    dev_runs["generic"] = index.search(model, dev_q, cfg.model, top_k) if dev_q else {}
    timings["generic_seconds"] = time.perf_counter() - start
    timings["corpus_encoded_now"] = not index.from_cache

    finetuned = train_stage.load_finetuned(ctx)
    ft_index = None
    if finetuned is not None:
        start = time.perf_counter()
        ft_index = DenseIndex.build(finetuned, ds.corpus, cfg.model, backend=cfg.retrieval.dense_backend)
        runs["finetuned"] = ft_index.search(finetuned, test_q, cfg.model, top_k)
        dev_runs["finetuned"] = ft_index.search(finetuned, dev_q, cfg.model, top_k) if dev_q else {}
        timings["finetuned_seconds"] = time.perf_counter() - start
        timings["finetuned_corpus_encoded_now"] = not ft_index.from_cache

    hybrid_info = {}
    for dense in ("generic", "finetuned"):
        if dense in runs:
            name = f"hybrid_{dense}"
            runs[name], hybrid_info[name] = _hybrid(
                runs["bm25"], runs[dense], dev_runs["bm25"], dev_runs[dense], dev_qrels,
                cfg, top_k, metrics, splits.test)

    wanted = [s for s in cfg.evaluate.systems if s in runs]
    scores = evaluate_runs(splits.test, {s: runs[s] for s in wanted}, metrics)
    significance = paired_significance(scores, list(cfg.evaluate.comparisons), metrics,
                                       cfg.evaluate.stat_test, cfg.seed)
    ood = {}
    if finetuned is not None and cfg.ood.datasets:
        start = time.perf_counter()
        ood = out_of_domain(ctx, model, finetuned)
        timings["ood_seconds"] = time.perf_counter() - start

    click_validation = _click_validation(ctx, runs, hybrid_info, model, index, finetuned, ft_index)
    dense_models = {"generic": (model, index)} | ({"finetuned": (finetuned, ft_index)} if finetuned else {})
    truncated = truncated_dims(ctx, test_q, splits.test, dense_models, cfg.evaluate.dims)

    version = read_json(ctx.run_dir / "model" / "version.json")
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
    cost = {
        "device": str(model.device),
        "precision": resolve_precision(cfg.model.precision, str(model.device)),
        "train_seconds": version.get("train_seconds"),
        "train_device": version.get("device"),
        "encode_docs_per_second": index.docs_per_second,
        "bm25_index_seconds": round(bm25.index_seconds, 3),
        "embedding_dim": int(index.embeddings.shape[1]),
        "index_bytes": int(index.embeddings.nbytes),
    }
    extra = {"hybrid": hybrid_info, "stat_test": cfg.evaluate.stat_test, "created": now()}
    if click_validation:
        extra["click_validation"] = click_validation
    if truncated:
        extra["truncated"] = truncated
    if version:
        extra["finetuned_model"] = {k: version[k] for k in ("version", "loss", "steps", "examples")}
    doc = metrics_document(cfg.experiment, dataset, cfg.model.name, scores, significance, cost,
                           ood=ood, extra=extra)
    atomic_write_json(ctx.run_dir / "metrics.json", doc)
    with atomic_path(ctx.run_dir / "per_query.csv") as tmp:
        scores.per_query.round(6).to_csv(tmp)
    for name, system_run in runs.items():
        save_run(system_run, ctx.run_dir / "runs" / f"{name}.trec", name)
    ctx.update_manifest(
        dataset={"name": ds.name, "path": str(ds.path), "fingerprint": dataset["fingerprint"],
                 "corpus_fingerprint": index.corpus_fingerprint},
        model={"name": cfg.model.name, "source": model.embedtune_source.source,
               "path": model.embedtune_source.path, "fingerprint": index.model_fingerprint,
               "finetuned_fingerprint": ft_index.model_fingerprint if ft_index else None},
        environment=environment(),
        evaluate={"timings": timings, "finished": now()},
    )
    return EvaluationResult(scores, significance, doc, runs, timings)


def _click_validation(ctx: RunContext, runs: dict, hybrid_info: dict, model, index, finetuned,
                      ft_index) -> dict:
    """Every system on the click validation set that 01_pairs left (queries with clicked
    documents), beside the gold test set; hybrids reuse the weight chosen on dev."""
    path = ctx.run_dir / "pairs" / "click_validation.json"
    if not path.is_file():
        return {}
    cfg = ctx.cfg
    top_k = cfg.retrieval.top_k
    val = json.loads(path.read_text())
    queries, qrels = val["queries"], val["qrels"]
    if not qrels:
        return {}
    click_runs = {"bm25": ctx.bm25.search(queries, top_k),
                  "generic": index.search(model, queries, cfg.model, top_k)}
    if finetuned is not None:
        click_runs["finetuned"] = ft_index.search(finetuned, queries, cfg.model, top_k)
    for dense in ("generic", "finetuned"):
        name = f"hybrid_{dense}"
        if dense in click_runs and name in hybrid_info:
            click_runs[name] = fuse_as_chosen(click_runs["bm25"], click_runs[dense],
                                              cfg.retrieval.hybrid, hybrid_info[name], top_k)
    scores = evaluate_runs(qrels, {s: click_runs[s] for s in runs if s in click_runs},
                           ["ndcg@10", "recall@10", "mrr@10", "hit_rate@10"])
    stats = json.loads((ctx.run_dir / "pairs" / "stats.json").read_text()).get("source_details", {})
    return {"n_queries": scores.n_queries, "simulated": stats.get("clicks", {}).get("simulated"),
            "systems": {k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scores.mean.items()}}


def truncated_dims(ctx: RunContext, queries: dict[str, str], qrels: dict,
                   dense: dict[str, tuple], dims: tuple[int, ...]) -> dict:
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
    q_full = {label: ctx.embed_queries(model, [queries[q] for q in qids]) for label, (model, _) in dense.items()}
    for dim in sorted(dims, reverse=True):
        runs = {}
        for label, (_, index) in dense.items():
            full = index.embeddings.shape[1]
            if not 0 < dim <= full:
                raise ValueError(f"evaluate.dims: {dim} is not between 1 and the model's dimension {full}")
            small = dataclasses.replace(index, embeddings=_cut(index.embeddings, dim))
            q_emb = _cut(q_full[label], dim)
            idx, scores = small.search_embeddings(q_emb, cfg.retrieval.top_k)
            runs[label] = {q: {small.doc_ids[j]: float(v) for j, v in zip(idx[i], scores[i]) if j >= 0}
                           for i, q in enumerate(qids)}
        scored = evaluate_runs(qrels, runs, ["ndcg@10", "recall@10", "recall@100"])
        block = {k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scored.mean.items()}
        block["index_bytes"] = int(len(index.doc_ids) * dim * np.dtype(np.float32).itemsize)
        if {"generic", "finetuned"} <= set(runs):
            block["significance"] = paired_significance(scored, ["finetuned_vs_generic"], ["ndcg@10"],
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
            index = DenseIndex.build(model, ds.corpus, cfg.model, backend=cfg.retrieval.dense_backend)
            runs[label] = index.search(model, queries, cfg.model, cfg.retrieval.top_k)
        scores = evaluate_runs(qrels, runs, ["ndcg@10", "recall@10", "recall@100"])
        sig = paired_significance(scores, ["finetuned_vs_generic"], ["ndcg@10"], cfg.evaluate.stat_test, cfg.seed)
        out[name] = {**{k: {m: round(v, 6) for m, v in vals.items()} for k, vals in scores.mean.items()},
                     "n_queries": scores.n_queries, "n_docs": len(ds.corpus),
                     "significance": sig}
    return out

