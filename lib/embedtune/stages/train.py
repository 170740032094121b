"""Stage 03_train: fine-tune the base model on the pairs and their hard negatives.

Dev evaluation (nDCG@10, recall@10, MRR@10 on the dev queries, against their judged documents
plus ``train.dev_docs`` others) after each epoch; the best checkpoint is kept. Leaves ``model/``
in the run folder: the model with its model card, ``training_log.json``, ``params.yaml`` and
``version.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from dataclasses import dataclass

import matplotlib.pyplot as plt
import pandas as pd

from embedtune.context import RunContext, git_state, now
from embedtune.data import doc_text
from embedtune.io import atomic_write_json
from embedtune.models import load_model, model_fingerprint
from embedtune.negatives import judged_positives
from embedtune.retrieval import show_progress
from embedtune.stages import negatives as negatives_stage
from embedtune.stages import pairs as pairs_stage
from embedtune.train import TrainResult, dev_evaluator, fine_tune, training_dataset


@dataclass
class TrainStageResult:
    train: TrainResult
    version: dict
    n_examples: int

    def curves(self) -> pd.DataFrame:
        rows = [{"step": e["step"], **{k: v for k, v in e.items() if k in ("loss", "learning_rate")}}
                for e in self.train.log_history if "loss" in e]
        return pd.DataFrame(rows)

    def dev_table(self) -> pd.DataFrame:
        before = {k.split("_cosine_")[-1]: v for k, v in self.train.dev_before.items() if "_cosine_" in k}
        rows = [{"step": 0, **before}]
        for e in self.train.log_history:
            if any("_cosine_" in k for k in e):
                rows.append({"step": e["step"], **{k.split("_cosine_")[-1]: v for k, v in e.items()
                                                     if "_cosine_" in k}})
        return pd.DataFrame(rows).set_index("step")

    def plot(self):
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
        curves = self.curves()
        if not curves.empty:
            a.plot(curves["step"], curves["loss"], marker=".")
        a.set_xlabel("step")
        a.set_ylabel("training loss")
        a.set_title("Training loss")
        dev = self.dev_table()
        for metric in ("ndcg@10", "recall@10", "mrr@10"):
            if metric in dev:
                b.plot(dev.index, dev[metric], marker="o", label=metric)
        b.set_xlabel("step (0 = base model)")
        b.set_title("Dev queries")
        b.legend()
        for ax in (a, b):
            ax.grid(alpha=0.3)
        return fig


def dev_corpus(ctx: RunContext, dev_qrels: dict, bm25_depth: int = 20) -> dict[str, str]:
    """A dev corpus that is hard like the real one but cheap to encode every epoch.

    The judged documents of the dev queries, their BM25 top ``bm25_depth`` (the distractors a
    full search would meet first), then seeded random documents up to ``train.dev_docs``.
    """
    ds, _ = ctx.data
    keep = {d for docs in dev_qrels.values() for d in docs}
    ranked = ctx.bm25.search({q: ds.queries[q] for q in dev_qrels}, top_k=bm25_depth)
    keep |= {d for docs in ranked.values() for d in docs}
    others = sorted(d for d in ds.corpus if d not in keep)
    random.Random(ctx.cfg.seed).shuffle(others)
    keep |= set(others[: max(0, ctx.cfg.train.dev_docs - len(keep))])
    return {d: doc_text(ds.corpus[d]) for d in sorted(keep)}


def run(ctx: RunContext) -> TrainStageResult:
    cfg = ctx.cfg
    ds, _ = ctx.data
    if cfg.negatives.sources and (ctx.run_dir / "negatives" / "train.jsonl").is_file():
        rows = negatives_stage.load(ctx)
    else:
        rows, _ = pairs_stage.load(ctx)
    _, dev_qrels = pairs_stage.load(ctx)
    doc_ids = sorted(ds.corpus)
    train_ds = training_dataset(rows, cfg.train.loss, [doc_text(ds.corpus[d]) for d in doc_ids],
                                judged_positives(ds), doc_ids, cfg.seed)
    evaluator = None
    if dev_qrels:
        evaluator = dev_evaluator({q: ds.queries[q] for q in dev_qrels}, dev_qrels,
                                  dev_corpus(ctx, dev_qrels), cfg.model.batch_size)
    model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
    guide = None
    if cfg.train.loss == "gist":
        guide = load_model(cfg.train.gist_guide or cfg.model.name, cfg.model.device)
    base_fp = model_fingerprint(model)
    out = ctx.run_dir / "model"
    result = fine_tune(model, train_ds, evaluator, cfg.train, out, cfg.seed, guide=guide,
                       progress=show_progress())
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
        "git": git_state(),
        "created": now(),
    }
    atomic_write_json(out / "version.json", version)
    shutil.copy(ctx.run_dir / "params.yaml", out / "params.yaml")
    ctx.update_manifest(train={"version": version["version"], "seconds": version["train_seconds"],
                               "steps": result.steps, "precision": result.precision,
                               "finished": now()})
    return TrainStageResult(result, version, len(train_ds))


def load_finetuned(ctx: RunContext):
    """The fine-tuned model that 03_train left in the run folder, or None."""
    path = ctx.run_dir / "model"
    if not (path / "modules.json").is_file():
        return None
    return load_model(str(path), ctx.cfg.model.device)
