"""Hybrid retrieval: fuse a BM25 run and a dense run with ``ranx.fuse``.

Two methods: reciprocal rank fusion (no parameters to fit), and a convex combination of
normalised scores, ``w * bm25 + (1 - w) * dense``, whose weight is chosen on dev queries only.

Example:
    >>> hybrid, info = HybridRetriever.fit("hybrid_generic", bm25, generic, HybridConfig(),
    ...                                    dev_qrels, dev_queries)    # weight chosen on dev
    >>> run = hybrid.search(test_queries, top_k=100)
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from embedtune.config import HybridConfig
from embedtune.data import Qrels
from embedtune.evaluate import ranx_qrels, ranx_run
from embedtune.retrieval import Retriever, Run


_EMPTY = "\x00empty"  # placeholder document, removed after fusion


def _aligned(bm25: Run, dense: Run) -> tuple[Run, Run]:
    # ranx.fuse needs both runs to hold the same, non-empty queries. A query one run found
    # nothing for (BM25 on a stopwords-only query, say) gets a placeholder that only it holds,
    # so it does not change any real document's fused score, and is dropped afterwards.
    qids = sorted(set(bm25) | set(dense))
    return ({q: bm25.get(q) or {_EMPTY: 0.0} for q in qids},
            {q: dense.get(q) or {_EMPTY: 0.0} for q in qids})


def fuse_runs(bm25: Run, dense: Run, cfg: HybridConfig, bm25_weight: float | None = None,
              top_k: int = 100) -> Run:
    """Fuse two runs; returns the ``top_k`` best per query.

    Args:
        bm25, dense: runs to fuse.
        cfg: fusion settings (method, normalisation, RRF constant).
        bm25_weight: the convex weight of BM25 (required for ``convex``).
    """
    from ranx import fuse

    a, b = _aligned(bm25, dense)
    runs = [ranx_run(a, "bm25"), ranx_run(b, "dense")]
    if cfg.method == "rrf":
        fused = fuse(runs, norm=None, method="rrf", params={"k": cfg.rrf_k})
    else:
        if bm25_weight is None:
            raise ValueError("convex fusion needs bm25_weight, chosen on dev queries")
        fused = fuse(runs, norm=cfg.norm, method="wsum",
                     params={"weights": [bm25_weight, 1.0 - bm25_weight]})
    out = {}
    for qid, docs in fused.to_dict().items():
        ranked = sorted(((d, s) for d, s in docs.items() if d != _EMPTY),
                        key=lambda kv: (-kv[1], kv[0]))[:top_k]
        out[qid] = dict(ranked)
    return out


@dataclass
class HybridRetriever:
    """BM25 and a dense system fused: convex with ``bm25_weight``, or RRF when it is None."""

    name: str
    bm25: Retriever
    dense: Retriever
    cfg: HybridConfig
    bm25_weight: float | None = None

    def fuse(self, bm25_run: Run, dense_run: Run, top_k: int = 100) -> Run:
        cfg = self.cfg if self.bm25_weight is not None else dataclasses.replace(self.cfg, method="rrf")
        return fuse_runs(bm25_run, dense_run, cfg, bm25_weight=self.bm25_weight, top_k=top_k)

    def search(self, queries: dict[str, str], top_k: int = 100, cache: bool = True) -> Run:
        return self.fuse(self.bm25.search(queries, top_k, cache), self.dense.search(queries, top_k, cache),
                         top_k)

    @classmethod
    def fit(cls, name: str, bm25: Retriever, dense: Retriever, cfg: HybridConfig, dev_qrels: Qrels,
            dev_queries: dict[str, str], top_k: int = 100) -> tuple["HybridRetriever", dict]:
        """The hybrid that ``cfg`` asks for, its convex weight chosen on dev queries (never test).

        Returns:
            The retriever, and what was chosen and how (the ``hybrid`` block of metrics.json).
        """
        if cfg.method == "rrf":
            return cls(name, bm25, dense, cfg), {"method": "rrf", "rrf_k": cfg.rrf_k}
        if not dev_qrels:
            raise ValueError(
                "hybrid.method is convex but this experiment has no dev queries to choose the "
                "weight on (never on test): add a dev split, or set retrieval.hybrid.method: rrf")
        weight, trials = choose_convex_weight(dev_qrels, bm25.search(dev_queries, top_k),
                                              dense.search(dev_queries, top_k), cfg)
        return cls(name, bm25, dense, cfg, weight), {
            "method": "convex", "bm25_weight": weight, "norm": cfg.norm,
            "chosen_on": f"{len(dev_qrels)} dev queries", "chosen_by": cfg.weight_metric,
            "dev_trials": trials}

    @classmethod
    def as_chosen(cls, name: str, bm25: Retriever, dense: Retriever, cfg: HybridConfig,
                  info: dict) -> "HybridRetriever":
        """The hybrid as 04_evaluate chose it (``info``: its block in metrics.json)."""
        return cls(name, bm25, dense, cfg, info.get("bm25_weight"))


def choose_convex_weight(dev_qrels: Qrels, bm25_dev: Run, dense_dev: Run,
                         cfg: HybridConfig) -> tuple[float, dict[str, float]]:
    """Pick the BM25 weight that maximises ``cfg.weight_metric`` on dev queries (ranx grid).

    Returns:
        The weight, and the dev score of every weight tried (for the report).
    """
    from ranx import optimize_fusion

    if not dev_qrels:
        raise ValueError("no dev queries to choose the convex weight on; use hybrid.method: rrf")
    a, b = _aligned({q: bm25_dev.get(q, {}) for q in dev_qrels}, {q: dense_dev.get(q, {}) for q in dev_qrels})
    best, report = optimize_fusion(
        qrels=ranx_qrels(dev_qrels),
        runs=[ranx_run(a, "bm25"), ranx_run(b, "dense")],
        norm=cfg.norm,
        method="wsum",
        metric=cfg.weight_metric,
        step=cfg.weight_step,
        show_progress=False,
        return_optimization_report=True,
    )
    weights = best["weights"]
    trials = {f"{_first_weight(c):.2f}": float(r) for c, r in zip(report.configs, report.results)}
    return float(weights[0]), trials


def _first_weight(config: str) -> float:
    # ranx labels each trial with str() of its weight tuple, e.g. "(np.float64(0.3), np.float64(0.7))"
    numbers = re.findall(r"float64\(([^)]+)\)", config) or re.findall(r"\d*\.?\d+", config)
    return float(numbers[0])
