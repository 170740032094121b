"""The pilot: will fine-tuning pay off here? Measure it, briefly, on dev queries.

00_decide fine-tunes copies of the base model on seeded subsamples of the training pairs (short
runs with the experiment's recipe: its in-batch loss (mnrl, cached_mnrl or gist; others as mnrl),
its pairs-per-query cap, learning rate and batch size; in-batch negatives only), scores each
on the dev queries against a dev corpus, and compares with the base model on the same queries
(per query, so the gain has a paired bootstrap interval). A line through the gains against
log(pairs) extrapolates to every available pair; the bootstrap refits it on each resample of
the dev queries, which gives the prediction its interval. Test queries are never touched.

The pilot's verdict: ``fine-tune`` when the predicted gain's interval lies above
``decide.pilot_min_gain``; otherwise ``hybrid`` when BM25 + generic beats generic on dev, else
``skip``. The brief's flowchart verdict is kept beside it.

Example:
    >>> result = run_pilot(model_name, pairs, dev_queries, dev_qrels, dev_corpus, base_per_query, cfg, train_cfg)
    >>> result["predicted_gain"], result["interval"]
"""

from __future__ import annotations

import math
import random
import tempfile
import time
from pathlib import Path

import numpy as np


def run_pilot(model_name: str, pairs: list[dict], queries: dict[str, str], qrels: dict, corpus: dict[str, str],
              base: dict[str, float], cfg, train_cfg, seed: int = 42, device: str = "cpu",
              max_seq_length: int | None = None) -> dict:
    """Short fine-tunes on ``cfg.pilot_pairs`` subsamples; the dev gain of each and the
    extrapolation to all of ``pairs``.

    Args:
        pairs: rows with ``anchor`` and ``positive`` (the training pairs after the leakage guard).
        base: the base model's dev nDCG@10 per query (from embeddings already computed).
        cfg: a DecideConfig (pilot settings); train_cfg: the TrainConfig (learning rate, batch size).
    """
    import dataclasses

    from datasets import Dataset

    from embedtune.models import load_model, resolve_precision
    from embedtune.train import dev_evaluator, fine_tune

    sizes = sorted({min(n, len(pairs)) for n in cfg.pilot_pairs if n > 0})
    points, start = [], time.perf_counter()
    for size in sizes:
        if time.perf_counter() - start > cfg.pilot_budget_s and points:
            break  # the budget is spent: extrapolate from what was measured
        chosen = random.Random(seed).sample(pairs, size)
        data = Dataset.from_dict({"anchor": [p["anchor"] for p in chosen], "positive": [p["positive"] for p in chosen]})
        model = load_model(model_name, device, max_seq_length)
        precision = resolve_precision(train_cfg.precision, str(model.device))
        evaluator = dev_evaluator(queries, qrels, corpus, 64, precision)
        loss = train_cfg.loss if train_cfg.loss in ("mnrl", "cached_mnrl", "gist") else "mnrl"
        short = dataclasses.replace(train_cfg, loss=loss, matryoshka_dims=(), epochs=cfg.pilot_epochs,
                                    evals_per_epoch=1, keep_base_p=None, devices=1)
        guide = load_model(train_cfg.gist_guide or model_name, device) if loss == "gist" else None
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="embedtune-pilot-") as tmp:
            result = fine_tune(model, data, None, short, Path(tmp) / "model", seed, guide=guide, dev_before={})
        evaluator(model, steps=result.steps)
        tuned = evaluator.per_query[result.steps]
        common = sorted(set(tuned) & set(base))
        delta = np.array([tuned[q] - base[q] for q in common])
        points.append({"pairs": size, "steps": result.steps, "seconds": round(time.perf_counter() - t0, 1),
                       "gain": float(delta.mean()), "per_query_delta": delta})
    return summarise(points, len(pairs), cfg, seed)


def summarise(points: list[dict], all_pairs: int, cfg, seed: int = 42, resamples: int = 2000) -> dict:
    """The measured gains with paired bootstrap intervals, and the extrapolation to ``all_pairs``."""
    rng = np.random.default_rng(seed)
    n = len(points[0]["per_query_delta"]) if points else 0
    draws = rng.integers(0, n, size=(resamples, n)) if n else np.zeros((0, 0), dtype=int)
    level = (1 - cfg.pilot_confidence) / 2
    out_points = []
    for p in points:
        boot = p["per_query_delta"][draws].mean(axis=1)
        out_points.append({k: v for k, v in p.items() if k != "per_query_delta"}
                          | {"interval": [float(np.quantile(boot, level)), float(np.quantile(boot, 1 - level))]})
    x = np.log([p["pairs"] for p in points]) if points else np.zeros(0)
    target = math.log(max(all_pairs, 1))

    def extrapolate(gains: np.ndarray) -> float:
        if len(gains) == 1 or np.ptp(x) == 0:
            return float(gains[-1])  # one size measured: its gain is the prediction
        slope, intercept = np.polyfit(x, gains, 1)
        if slope < 0 and target >= x.max():  # more data is not assumed to hurt more: flat beyond the pilot
            return float(intercept + slope * x.max())
        return float(intercept + slope * target)

    predicted = extrapolate(np.array([p["gain"] for p in points])) if points else float("nan")
    boot_pred = np.array([extrapolate(np.array([p["per_query_delta"][d].mean() for p in points]))
                          for d in draws]) if points else np.zeros(0)
    interval = [float(np.quantile(boot_pred, level)), float(np.quantile(boot_pred, 1 - level))] if points else [math.nan] * 2
    return {"points": out_points, "all_pairs": all_pairs, "predicted_gain": predicted, "interval": interval,
            "confidence": cfg.pilot_confidence, "dev_queries": n,
            "seconds": round(sum(p["seconds"] for p in points), 1)}


def verdict(pilot: dict, hybrid_gain: float, cfg) -> tuple[str, str]:
    """(verdict, reason) from the pilot's prediction and hybrid's dev gain over generic."""
    low, high = pilot["interval"]
    gain = pilot["predicted_gain"]
    where = (f"the pilot predicts {gain:+.3f} nDCG@10 on dev with all {pilot['all_pairs']:,} pairs "
             f"({pilot['confidence']:.0%} interval [{low:+.3f}, {high:+.3f}])")
    if low > cfg.pilot_min_gain:
        return "fine-tune", f"Fine-tune: {where}, above {cfg.pilot_min_gain:g}."
    if hybrid_gain > cfg.pilot_min_gain:
        return "hybrid", (f"Use hybrid retrieval: {where}, not clearly above {cfg.pilot_min_gain:g}; BM25 + generic "
                          f"beats generic by {hybrid_gain:+.3f} nDCG@10 on dev.")
    return "skip", (f"Skip fine-tuning: {where}, not clearly above {cfg.pilot_min_gain:g}, and hybrid adds "
                    f"{hybrid_gain:+.3f} on dev.")
