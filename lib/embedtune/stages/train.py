"""Stage 03_train: fine-tune the base model on the pairs and their hard negatives.

Dev evaluation (nDCG@10, recall@10, MRR@10 on the dev queries, against their judged documents
plus ``train.dev_docs`` others) after each epoch; the best checkpoint is kept. Leaves ``model/``
in the run folder: the model with its model card, ``training_log.json``, ``params.yaml`` and
``version.json``, and registers it as a new version in the model registry (``embedtune.registry``);
and ``dev_per_query.csv``, every dev evaluation's per-query nDCG@10 (small, committed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune import plots
from embedtune.config import save_config
from embedtune.context import RunContext, stage
from embedtune.data import doc_text
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import load_model, model_fingerprint, resolve_precision
from embedtune.negatives import judged_positives
from embedtune.progress import show_progress
from embedtune.provenance import git_state, now
from embedtune.train import (TrainResult, cross_fitted_per_query, dev_evaluator, fine_tune, keep_base_decision,
                             query_folds, training_dataset)

log = logging.getLogger(__name__)


@dataclass
class TrainStageResult:
    train: TrainResult
    version: dict
    n_examples: int

    def curves(self) -> pd.DataFrame:
        return plots.loss_table(self.train.log_history)

    def dev_table(self) -> pd.DataFrame:
        return plots.dev_table(self.train.log_history, self.train.dev_before)

    def plot(self):
        return plots.training_curves(self.train.log_history, self.train.dev_before)

    def guard_folds(self) -> pd.DataFrame:
        """The trainings of a cross-fitted keep-base test, a row each (empty without one)."""
        return pd.DataFrame(self.version["keep_base"].get("folds", []))


@stage("train")
def run(ctx: RunContext) -> TrainStageResult:
    cfg = ctx.cfg
    ds, _ = ctx.data
    rows = ctx.negatives() if cfg.negatives.sources and ctx.layout.negatives_train.is_file() else ctx.pairs()
    dev_qrels = ctx.dev_qrels()
    doc_ids = sorted(ds.corpus)
    texts, judged = [doc_text(ds.corpus[d]) for d in doc_ids], judged_positives(ds)

    def dataset_of(pairs: list[dict]):
        return training_dataset(pairs, cfg.train.loss, texts, judged, doc_ids, cfg.seed)

    train_ds = dataset_of(rows)
    model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
    precision = resolve_precision(cfg.train.precision, str(model.device))
    evaluator, dev_before = None, None
    if dev_qrels:
        evaluator = dev_evaluator({q: ds.queries[q] for q in dev_qrels}, dev_qrels,
                                  ctx.dev_corpus(dev_qrels, cfg.train.dev_docs), cfg.model.batch_size,
                                  precision)
        dev_before = base_scores_from_index(ctx, evaluator, precision, model)
    guide = None
    if cfg.train.loss == "gist":
        guide = load_model(cfg.train.gist_guide or cfg.model.name, cfg.model.device)
    base_fp = model_fingerprint(model)
    out = ctx.layout.model_dir
    if cfg.train.devices > 1:  # outside the kernel: torchrun, its output streamed here
        from embedtune.distributed import fine_tune_distributed

        if dev_before is None and evaluator is not None:
            dev_before = evaluator(model, steps=0)
        result, model = fine_tune_distributed(
            train_ds, evaluator, cfg.train, out, cfg.seed, model_name=cfg.model.name, device=str(model.device),
            max_seq_length=cfg.model.max_seq_length, dev_before=dev_before,
            guide=(cfg.train.gist_guide or cfg.model.name) if cfg.train.loss == "gist" else None)
    else:
        result = fine_tune(model, train_ds, evaluator, cfg.train, out, cfg.seed, guide=guide,
                           progress=show_progress(), dev_before=dev_before)
    dev_curve = evaluator.per_query if evaluator is not None else {}
    guard = keep_base_decision(dev_curve, cfg.train.keep_base_p, cfg.train.keep_base_margin)
    shipped = sorted(dev_curve).index(guard["best_step"]) if "best_step" in guard else None  # its evaluation number
    curves = {"dev": (dev_curve, shipped)}
    if cfg.train.guard_folds:
        pooled, cross_fitted = cross_fitted_guard(ctx, rows, dataset_of, dev_qrels, precision, guide, shipped)
        guard = cross_fitted | {"dev": guard}
        curves["guard"] = (pooled, cross_fitted.get("best_step"))
    with atomic_path(ctx.layout.dev_per_query) as tmp:
        curve_table(curves).to_csv(tmp, index=False)
    data_fp = hashlib.sha256(json.dumps([[r["query_id"], r["doc_id"], r.get("negative_ids", [])]
                                         for r in rows]).encode()).hexdigest()
    version = {
        "version": f"{cfg.experiment}-{model_fingerprint(model)[7:15]}",
        "base_model": cfg.model.name,
        "base_model_fingerprint": base_fp,
        "fingerprint": model_fingerprint(model),
        "training_data_fingerprint": "sha256:" + data_fp,
        "loss": cfg.train.loss,
        "examples": len(train_ds),
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),
        "precision": result.precision,
        "device": str(model.device),
        "dev_before": result.dev_before,
        "dev_best": result.best_metric,
        "keep_base": guard,
        "kept": guard["kept"],
        "git": git_state(),
        "created": now(),
    }
    atomic_write_json(ctx.layout.version, version)
    save_config(cfg, out / "params.yaml")
    log.info("keep-base guard: %s", guard["reason"])
    registered = register_model(ctx, out) if guard["kept"] else {"skipped": guard["reason"]}
    ctx.update_manifest(train={"version": version["version"], "seconds": version["train_seconds"],
                               "steps": result.steps, "precision": result.precision, "kept": guard["kept"],
                               "registry": registered, "finished": now()})
    return TrainStageResult(result, version, len(train_ds))


def cross_fitted_guard(ctx: RunContext, rows: list[dict], dataset_of, dev_qrels: dict, precision: str,
                       guide, shipped: int | None = None) -> tuple[dict[int, dict[str, float]], dict]:
    """The keep-base test on more queries than dev holds (``train.guard_folds`` = k).

    The train queries are cut into k folds; for each, the recipe trains a fresh base model on the
    pairs of the other folds and is evaluated, at the step-0 and checkpoint points of the run, on
    the fold's train queries (their qrels, every grade) and the dev queries. The test then pairs
    base and fine-tuned over all those queries (:func:`embedtune.train.cross_fitted_per_query`):
    it judges the recipe, which the shipped model (trained on every pair) follows. The k models
    are discarded; their step 0 (the base model) is scored from the generic index, not encoded
    again. ``dataset_of(pairs)`` builds a training dataset as the run's own was built. Returns the
    pooled curve (evaluation number -> query id -> nDCG@10) and the decision.

    ``shipped``: the evaluation number (1 = the first checkpoint) of the checkpoint the run keeps,
    chosen on dev; the test is made at that point of the pooled curve, not at the curve's best,
    so that it judges what ships (a fold that reached fewer points is judged at its last). None
    (no dev curve): the best point, as before.
    """
    cfg = ctx.cfg
    ds, splits = ctx.data
    k = cfg.train.guard_folds
    folds = query_folds([r["query_id"] for r in rows], k, cfg.seed)
    curves, timing = [], []
    with tempfile.TemporaryDirectory(prefix=".guard-", dir=ctx.layout.root) as tmp:
        for i, held in enumerate(folds, 1):
            qrels = {q: splits.train[q] for q in sorted(held) if q in splits.train} | dev_qrels
            fold_rows = [r for r in rows if r["query_id"] not in held]
            log.info("keep-base guard, fold %d of %d: training on %d pairs, scoring %d held-out train + %d dev "
                     "queries", i, k, len(fold_rows), len(qrels) - len(dev_qrels), len(dev_qrels))
            evaluator = dev_evaluator({q: ds.queries[q] for q in qrels}, qrels,
                                      ctx.dev_corpus(qrels, cfg.train.dev_docs), cfg.model.batch_size,
                                      precision, name="guard")
            model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
            fold_dir = Path(tmp) / f"fold{i}"
            result = fine_tune(model, dataset_of(fold_rows), evaluator, cfg.train, fold_dir, cfg.seed, guide=guide,
                               progress=show_progress(), dev_before=base_scores_from_index(ctx, evaluator, precision,
                                                                                            model))
            shutil.rmtree(fold_dir, ignore_errors=True)  # free the disk before the next fold
            curves.append(evaluator.per_query)
            timing.append({"fold": i, "train_queries_held_out": len(qrels) - len(dev_qrels), "pairs": len(fold_rows),
                           "steps": result.steps, "seconds": round(result.seconds, 1)})
    pooled = cross_fitted_per_query(curves)
    n_dev = len(dev_qrels)
    at = min(shipped, max(pooled)) if shipped and pooled else None
    decision = keep_base_decision(pooled, cfg.train.keep_base_p, cfg.train.keep_base_margin, at=at,
                                  where=f"queries ({len(pooled.get(0, {})) - n_dev} train queries, each scored "
                                        f"by the one of {k} fold models that did not train on it, and {n_dev} dev "
                                        f"queries, scored by all {k})",
                                  point="evaluation")
    curve = [round(float(np.mean(list(pooled[i].values()))), 4) for i in sorted(pooled)]
    return pooled, decision | {"method": f"{k}-fold cross-fitted", "folds": timing, "curve": curve,
                               "shipped_evaluation": shipped}


def base_scores_from_index(ctx: RunContext, evaluator, precision: str, model) -> dict | None:
    """Step 0 of a dev curve (the base model's scores) from the embeddings the generic index holds.

    The index was encoded by the same base model, so when it was encoded as the evaluator would
    encode (same precision, same cut) the corpus need not be encoded again: the evaluator scores
    the index's rows of its documents and keeps them as ``per_query[0]``. None when the settings
    differ (the evaluator then encodes at step 0 itself).
    """
    cfg = ctx.cfg
    if resolve_precision(cfg.model.precision, str(model.device)) != precision \
            or cfg.train.max_seq_length not in (None, cfg.model.max_seq_length):
        return None
    index = ctx.generic_index
    row = {d: i for i, d in enumerate(index.doc_ids)}
    return evaluator.score(index.embeddings[[row[d] for d in evaluator.doc_ids]],
                           ctx.embed_queries(ctx.base_model, evaluator.query_texts), steps=0)


def curve_table(curves: dict[str, tuple[dict[int, dict[str, float]], int | None]]) -> pd.DataFrame:
    """The dev curves' per-query nDCG@10 as one long table (``dev_per_query.csv``).

    ``curves``: name -> (step or evaluation number -> query id -> nDCG@10, the evaluation the
    keep-base test judged). ``dev`` is the run's own dev curve, keyed by training step; ``guard`` the
    cross-fitted guard's pooled curve, keyed by evaluation number. Columns: ``curve``,
    ``evaluation`` (0 = the base model), ``step`` (the training step; empty for ``guard``),
    ``query_id``, ``ndcg@10``, and ``tested`` (the evaluation the guard judged: for ``dev`` the
    checkpoint that ships when the guard keeps it). Committed with the results, so that two recipes
    can be compared query by query on dev without re-training either (``bench/compare_seed_sweeps.py``).
    """
    rows = []
    for name, (per_query, tested) in curves.items():
        for evaluation, key in enumerate(sorted(per_query)):
            for qid, value in sorted(per_query[key].items()):
                rows.append({"curve": name, "evaluation": evaluation, "step": key if name == "dev" else None,
                             "query_id": qid, "ndcg@10": float(value), "tested": evaluation == tested})
    return pd.DataFrame(rows, columns=["curve", "evaluation", "step", "query_id", "ndcg@10", "tested"]).astype(
        {"step": "Int64"})


def register_model(ctx: RunContext, model_dir) -> dict:
    """Add the trained model to the registry (``monitor.registry``) as a new version.

    A registry that cannot be written (permissions, full disk, a lock held too long) does not
    fail the stage: the model is safe in the run folder, 06_monitor registers it on its next run
    (registration is keyed by the weights, so never twice), and ``embedtune models register``
    does it by hand. The failure is logged and kept in ``manifest.json``. With
    ``monitor.register: false`` (sweeps: one registry copy per grid point is rarely wanted)
    nothing is registered.
    """
    from embedtune.registry import Registry, RegistryError, registry_dir

    registry = Registry(registry_dir(ctx.cfg.monitor.registry))
    if not ctx.cfg.monitor.register:
        return {"path": str(registry.root), "skipped": "monitor.register is false"}
    try:
        manifest = registry.register(model_dir)
    except (OSError, RegistryError) as exc:  # filelock's Timeout is an OSError too
        log.warning("model not registered in %s (%s); register it later with "
                    "`embedtune models register %s`", registry.root, exc, model_dir)
        return {"path": str(registry.root), "error": f"{type(exc).__name__}: {exc}"}
    return {"path": str(registry.root), "version": manifest["version"]}
