"""Evaluation with ranx: metrics per query and averaged, paired significance, ``metrics.json``.

Metric names are ranx's (``ndcg@10``, ``recall@100``, ``mrr@10``, ``map@100``; ``hit_rate@10``
is success@10: the share of queries with at least one relevant document in the top 10).

Example:
    >>> scores = evaluate_runs(qrels, {"bm25": bm25_run, "generic": dense_run}, ["ndcg@10"])
    >>> scores.mean["generic"]["ndcg@10"]
    0.645
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]


def ranx_qrels(qrels: Qrels):
    from ranx import Qrels as RanxQrels

    return RanxQrels.from_dict({q: {d: int(s) for d, s in docs.items()} for q, docs in qrels.items()})


def ranx_run(run: Run, name: str):
    from ranx import Run as RanxRun

    # ranx cannot hold a query with no documents; such a query scores 0 through make_comparable
    return RanxRun.from_dict({q: docs for q, docs in run.items() if docs}, name=name)


@dataclass
class Scores:
    """Averaged and per-query metric values of several systems on the same queries."""

    mean: dict[str, dict[str, float]]  # system -> metric -> mean over queries
    per_query: pd.DataFrame  # index (system, query_id), one column per metric
    n_queries: int


def evaluate_runs(qrels: Qrels, runs: dict[str, Run], metrics: list[str]) -> Scores:
    """Score every run on every judged query; a query a run misses scores 0.

    Args:
        qrels: judgements of the evaluated queries (only these queries count).
        runs: system name -> run.
        metrics: ranx metric names.
    """
    from ranx import evaluate

    rq = ranx_qrels(qrels)
    qids = list(rq.keys())
    means, frames = {}, []
    for name, run in runs.items():
        run_for_qrels = {q: run.get(q, {}) for q in qids}
        values = evaluate(rq, ranx_run(run_for_qrels, name), list(metrics), return_mean=False,
                          make_comparable=True)
        if len(metrics) == 1:
            values = {metrics[0]: values}
        frame = pd.DataFrame({m: np.asarray(values[m], dtype=float) for m in metrics})
        frame.insert(0, "query_id", qids)
        frame.insert(0, "system", name)
        frames.append(frame)
        means[name] = {m: float(np.mean(values[m])) for m in metrics}
    per_query = pd.concat(frames).set_index(["system", "query_id"])
    return Scores(means, per_query, len(qids))


def metrics_document(experiment: str, dataset: dict, base_model: str, scores: Scores,
                     significance: dict, cost: dict, ood: dict | None = None,
                     extra: dict | None = None) -> dict:
    """Assemble ``metrics.json`` with the keys of the DESIGN.md contract, in its order."""
    doc = {
        "experiment": experiment,
        "dataset": dataset,
        "base_model": base_model,
        "systems": {name: {m: round(v, 6) for m, v in values.items()}
                    for name, values in scores.mean.items()},
        "significance": significance,
        "ood": ood or {},
        "cost": cost,
    }
    if extra:
        doc.update(extra)
    return doc
