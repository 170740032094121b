"""Fine-tuning with sentence-transformers' Trainer: loss factory, datasets, dev evaluation.

Losses by name: ``mnrl`` (MultipleNegativesRankingLoss, the default, with the no-duplicates
batch sampler), ``cached_mnrl``, ``triplet``, ``cosent`` (scored pairs from graded qrels and
negatives), ``gist`` (InfoNCE with a guide model that filters in-batch false negatives), any
of them wrapped in ``MatryoshkaLoss`` when ``matryoshka_dims`` is set.

Example:
    >>> loss = build_loss("mnrl", model, TrainConfig())
    >>> result = fine_tune(model, rows, dev, TrainConfig(), out_dir, seed=42)
"""

from __future__ import annotations

import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from embedtune.config import TrainConfig
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import resolve_precision

log = logging.getLogger(__name__)

IN_BATCH_LOSSES = {"mnrl", "cached_mnrl", "gist"}  # need the no-duplicates sampler


class TrainError(ValueError):
    """Training data or settings that cannot work; the message says what to change."""


def build_loss(name: str, model, cfg: TrainConfig, guide=None, gather: bool = False):
    """The sentence-transformers loss for ``name`` (see module docstring).

    ``gather``: several processes train together (DDP): the in-batch losses gather every
    process's embeddings, so each query meets the whole global batch as negatives."""
    from sentence_transformers.sentence_transformer import losses

    if name == "mnrl":
        loss = losses.MultipleNegativesRankingLoss(model, gather_across_devices=gather)
    elif name == "cached_mnrl":
        loss = losses.CachedMultipleNegativesRankingLoss(model, mini_batch_size=cfg.mini_batch_size,
                                                         gather_across_devices=gather)
    elif name == "triplet":
        loss = losses.TripletLoss(model, distance_metric=losses.TripletDistanceMetric.COSINE,
                                  triplet_margin=cfg.triplet_margin)
    elif name == "cosent":
        loss = losses.CoSENTLoss(model)
    elif name == "gist":
        if guide is None:
            raise TrainError("the gist loss needs a guide model")
        loss = losses.GISTEmbedLoss(model, guide, gather_across_devices=gather)
    else:
        raise TrainError(f"unknown loss {name!r}; choose one of mnrl, cached_mnrl, triplet, cosent, gist")
    if cfg.matryoshka_dims:
        full = model.get_embedding_dimension()
        too_big = [d for d in cfg.matryoshka_dims if d > full]
        if too_big:
            raise TrainError(f"matryoshka_dims {too_big} exceed the model's dimension {full}")
        loss = losses.MatryoshkaLoss(model, loss, matryoshka_dims=list(cfg.matryoshka_dims))
    return loss


def training_dataset(rows: list[dict], loss: str, corpus_texts: list[str], judged: dict[str, set[str]],
                     doc_ids: list[str], seed: int):
    """Columns in the order each loss expects.

    - in-batch losses: (anchor, positive[, negative]); a pair that found no hard negative gets a
      random document that is not judged relevant for its query (seeded), so no pair is lost.
    - ``triplet``: (anchor, positive, negative), likewise.
    - ``cosent``: (sentence1, sentence2, score): positives scored by grade (grade / max grade),
      hard negatives scored 0.
    """
    from datasets import Dataset

    rng = random.Random(seed)

    def random_negative(qid: str) -> str:
        while True:
            i = rng.randrange(len(doc_ids))
            if doc_ids[i] not in judged.get(qid, ()):
                return corpus_texts[i]

    if not rows:
        raise TrainError("no training pairs")
    if loss == "cosent":
        top = max(r["score"] for r in rows)
        data = {"sentence1": [], "sentence2": [], "score": []}
        for r in rows:
            data["sentence1"].append(r["anchor"])
            data["sentence2"].append(r["positive"])
            data["score"].append(r["score"] / top)
            for neg in r.get("negatives") or [random_negative(r["query_id"])]:
                data["sentence1"].append(r["anchor"])
                data["sentence2"].append(neg)
                data["score"].append(0.0)
        return Dataset.from_dict(data)
    with_negatives = loss == "triplet" or any(r.get("negatives") for r in rows)
    n_neg = max((len(r.get("negatives") or []) for r in rows), default=0) if with_negatives else 0
    n_neg = max(n_neg, 1) if with_negatives else 0
    data = {"anchor": [r["anchor"] for r in rows], "positive": [r["positive"] for r in rows]}
    for k in range(n_neg):
        column = []
        for r in rows:
            negs = r.get("negatives") or []
            column.append(negs[k] if k < len(negs) else random_negative(r["query_id"]))
        data["negative" if n_neg == 1 else f"negative_{k + 1}"] = column
    return Dataset.from_dict(data)


DEV_METRICS = {"ndcg@10": "ndcg@10", "recall@10": "recall@10", "mrr@10": "mrr@10", "map@100": "map@100",
               "accuracy@10": "hit_rate@10"}  # the dev log's names (as sentence-transformers' IR evaluator) -> ranx


def dev_evaluator(queries: dict[str, str], qrels: dict[str, dict[str, int]], corpus: dict[str, str],
                  batch_size: int, precision: str = "fp32", name: str = "dev"):
    """The dev evaluator of a training run (see :func:`make_dev_evaluator`)."""
    return make_dev_evaluator()(queries, qrels, corpus, batch_size, precision, name)


def make_dev_evaluator():
    """The class of :func:`dev_evaluator`: built on first use, so importing this module stays cheap."""
    import numpy as np
    from sentence_transformers.sentence_transformer.evaluation import SentenceEvaluator

    from embedtune.evaluate import evaluate_runs
    from embedtune.models import encode_documents, encode_queries
    from embedtune.retrieval import top_k_from_scores

    class DevEvaluator(SentenceEvaluator):
        """Dev queries against a dev corpus: the metrics of sentence-transformers'
        InformationRetrievalEvaluator (binary relevance, cosine, same names in the log), computed
        with ranx, encoded at the training precision, and each evaluation's per-query nDCG@10
        kept (``per_query[step]``) for the keep-base test."""

        def __init__(self, queries, qrels, corpus, batch_size, precision, name):
            super().__init__()
            self.qids, self.query_texts = list(queries), list(queries.values())
            self.doc_ids, self.doc_texts = list(corpus), list(corpus.values())
            self.qrels = {q: {d: 1 for d, s in docs.items() if s > 0} for q, docs in qrels.items()}
            self.batch_size, self.precision, self.name = batch_size, precision, name
            self.primary_metric = f"{name}_cosine_ndcg@10"
            self.per_query: dict[int, dict[str, float]] = {}

        def score(self, doc_emb, query_emb, steps: int = 0) -> dict[str, float]:
            """The metrics of given embeddings (rows in ``doc_ids`` / ``qids`` order)."""
            idx, scores = top_k_from_scores(np.asarray(query_emb) @ np.asarray(doc_emb).T, 100)
            run = {q: {self.doc_ids[j]: float(v) for j, v in zip(idx[i], scores[i])}
                   for i, q in enumerate(self.qids)}
            result = evaluate_runs(self.qrels, {"dev": run}, list(DEV_METRICS.values()))
            self.per_query[steps] = result.per_query.loc["dev"]["ndcg@10"].to_dict()
            return {f"{self.name}_cosine_{k}": result.mean["dev"][v] for k, v in DEV_METRICS.items()}

        def __call__(self, model, output_path=None, epoch: int = -1, steps: int = -1) -> dict[str, float]:
            docs = encode_documents(model, self.doc_texts, self.batch_size, self.precision)
            queries = encode_queries(model, self.query_texts, self.batch_size, self.precision)
            metrics = self.score(docs, queries, steps)
            self.store_metrics_in_model_card_data(model, metrics, epoch, steps)
            return metrics

    return DevEvaluator


def query_folds(query_ids, k: int, seed: int) -> list[set[str]]:
    """``k`` disjoint folds of ``query_ids`` by a seeded shuffle; their sizes differ by at most one."""
    if k < 2:
        raise TrainError(f"train.guard_folds is {k}: use 0 (the dev queries alone) or at least 2 folds")
    ids = sorted(set(query_ids))
    if len(ids) < k:
        raise TrainError(f"train.guard_folds is {k} but the pairs come from only {len(ids)} queries")
    random.Random(seed).shuffle(ids)
    return [set(ids[i::k]) for i in range(k)]


def cross_fitted_per_query(folds: list[dict[int, dict[str, float]]]) -> dict[int, dict[str, float]]:
    """One evaluation curve from the k trainings of a cross-fitted keep-base test.

    Each fold's evaluations are numbered in order (0: the base model, 1: the first checkpoint ...)
    and cut to the count every fold reached, since fold sizes differ by a few steps. A query that
    several folds scored (a dev query, held out of all of them) counts once, with its mean.
    """
    ordered = [[fold[s] for s in sorted(fold)] for fold in folds]
    points = min(len(o) for o in ordered) if ordered else 0
    out: dict[int, dict[str, float]] = {}
    for i in range(points):
        scores: dict[str, list[float]] = {}
        for o in ordered:
            for q, v in o[i].items():
                scores.setdefault(q, []).append(v)
        out[i] = {q: sum(v) / len(v) for q, v in scores.items()}
    return out


def keep_base_decision(per_query: dict[int, dict[str, float]], p_max: float | None,
                       margin: float = 0.0, where: str = "dev queries", point: str = "step",
                       at: int | None = None) -> dict:
    """Does the best dev checkpoint (or the one at ``at``) beat the base model (step 0) on dev nDCG@10?

    Args:
        per_query: step -> query id -> dev nDCG@10, step 0 being the base model (the dev
            evaluator's ``per_query``, or :func:`cross_fitted_per_query`'s curve).
        p_max: ship the fine-tuned model only when a one-sided paired t-test over the dev queries
            gives p below this (None: always ship it).
        margin: ... and the mean gain exceeds this.
        where, point: how the reason names the queries and the checkpoints.
        at: test this point of ``per_query`` instead of the best one: the checkpoint that ships,
            chosen elsewhere (the cross-fitted guard tests the run's dev-best checkpoint, not the
            best of its own curve, which would also pick the luckiest of several tests).

    Returns:
        ``{"kept": bool, "best_step", "base", "best", "delta", "p_one_sided", "queries", "reason"}``.
    """
    import numpy as np

    from embedtune.stats import paired_test

    if 0 not in per_query or len(per_query) < 2:
        return {"kept": True, "reason": "no dev evaluation to compare with the base model"}
    base = per_query[0]
    best_step = max((s for s in per_query if s != 0), key=lambda s: (np.mean(list(per_query[s].values())), -s))
    if at is not None:
        if at not in per_query or at == 0:
            raise TrainError(f"keep-base test at {point} {at}: the curve has {point}s {sorted(per_query)}")
        best_step = at
    which = "the shipped checkpoint" if at is not None else "the best checkpoint"
    qids = sorted(set(base) & set(per_query[best_step]))
    a = np.array([per_query[best_step][q] for q in qids])
    b = np.array([base[q] for q in qids])
    delta, p_two = paired_test(a, b)
    p_one = p_two / 2 if delta > 0 else 1 - p_two / 2
    out = {"best_step": int(best_step), "base": float(b.mean()), "best": float(a.mean()), "delta": float(delta),
           "p_one_sided": float(p_one), "queries": len(qids), "p_max": p_max, "margin": margin}
    if p_max is None:
        return out | {"kept": True, "reason": "train.keep_base_p is null: the fine-tuned model is always kept"}
    kept = delta > margin and p_one < p_max
    test = f"on {len(qids)} {where} by more than {margin:g} with p < {p_max:g}"
    if kept:
        reason = (f"{which} ({point} {best_step}) beats the base model on {len(qids)} {where}: "
                  f"nDCG@10 {b.mean():.4f} -> {a.mean():.4f} ({delta:+.4f}, one-sided p = {p_one:.2g})")
    elif at is None:
        reason = (f"no checkpoint beats the base model {test}: the best ({point} {best_step}) is {delta:+.4f} "
                  f"nDCG@10 (one-sided p = {p_one:.2g}); the base model is kept")
    else:
        reason = (f"the shipped checkpoint ({point} {at}) does not beat the base model {test}: {delta:+.4f} "
                  f"nDCG@10 (one-sided p = {p_one:.2g}); the base model is kept")
    return out | {"kept": bool(kept), "reason": reason}


@dataclass
class TrainResult:
    model_dir: Path
    seconds: float
    steps: int
    log_history: list[dict]
    dev_before: dict[str, float]
    best_metric: float | None
    best_checkpoint: str | None
    precision: str


def fine_tune(model, train_ds, evaluator, cfg: TrainConfig, out_dir: Path, seed: int,
              guide=None, progress: bool = False, dev_before: dict | None = None) -> TrainResult:
    """Train ``model`` in place and save the best checkpoint (by dev nDCG@10) to ``out_dir``.

    ``out_dir`` appears only when training finished: checkpoints go to a temporary folder.
    ``dev_before``: the base model's dev metrics when already known (step 0 of the dev curve);
    else the evaluator computes them first.
    """
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, SentenceTransformerTrainingArguments)

    if cfg.max_seq_length is not None:
        model.max_seq_length = cfg.max_seq_length
    device = str(model.device)
    precision = resolve_precision(cfg.precision, device)
    world = int(os.environ.get("WORLD_SIZE", "1"))  # > 1 under torchrun (embedtune.distributed)
    loss = build_loss(cfg.loss, model, cfg, guide=guide, gather=world > 1)
    steps_per_epoch = math.ceil(len(train_ds) / cfg.batch_size)
    total_steps = max(1, math.ceil(steps_per_epoch * cfg.epochs))
    eval_steps = max(1, steps_per_epoch // max(1, cfg.evals_per_epoch))
    if dev_before is None:  # step 0 of the dev curve
        dev_before = evaluator(model, steps=0) if evaluator is not None else {}
    metric = f"eval_{evaluator.primary_metric}" if evaluator is not None else None
    work = out_dir.parent / f".{out_dir.name}.checkpoints"
    shutil.rmtree(work, ignore_errors=True)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(work),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        learning_rate=cfg.learning_rate,
        warmup_steps=cfg.warmup_ratio,  # a float below 1 is read as a ratio of all steps
        weight_decay=cfg.weight_decay,
        batch_sampler=BatchSamplers.NO_DUPLICATES if cfg.loss in IN_BATCH_LOSSES else BatchSamplers.BATCH_SAMPLER,
        eval_strategy="steps" if evaluator is not None else "no",
        eval_steps=eval_steps,
        save_strategy="steps" if evaluator is not None else "no",
        save_steps=eval_steps,
        save_total_limit=1,
        load_best_model_at_end=evaluator is not None,
        metric_for_best_model=metric,
        logging_steps=max(1, total_steps // 25),
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
        ddp_backend=("gloo" if device == "cpu" else None) if world > 1 else None,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_ds, loss=loss,
                                         evaluator=evaluator)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    history = list(trainer.state.log_history)
    if trainer.is_world_process_zero():  # under DDP one process saves
        with atomic_path(out_dir) as tmp:
            model.save_pretrained(str(tmp))
            atomic_write_json(tmp / "training_log.json", {"log_history": history, "dev_before": dev_before,
                                                           "processes": world})
        shutil.rmtree(work, ignore_errors=True)
    return TrainResult(out_dir, seconds, trainer.state.global_step, history, dev_before,
                       trainer.state.best_metric, trainer.state.best_model_checkpoint, precision)
