"""Tables and figures shared by the stage notebooks and the report."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import pandas as pd

from embedtune.data import BeirDataset, Splits


def describe_data(ds: BeirDataset, splits: Splits) -> pd.DataFrame:
    """One row per split: queries, judgements, where the split came from."""
    rows = []
    for name, qrels, source in (("train", splits.train, "training pairs"),
                                ("dev", splits.dev, splits.dev_source),
                                ("test", splits.test, splits.test_source)):
        rows.append({"split": name, "queries": len(qrels),
                     "judgements": sum(len(d) for d in qrels.values()), "from": source})
    frame = pd.DataFrame(rows).set_index("split")
    frame.attrs["corpus"] = f"{ds.name}: {len(ds.corpus):,} documents ({ds.path})"
    return frame


def recall_curve(mean: dict[str, dict[str, float]], ax=None):
    """recall@K against K for every system (K from the recall@ metrics that were computed)."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    for system, values in mean.items():
        points = sorted((int(m.split("@")[1]), v) for m, v in values.items()
                        if re.fullmatch(r"recall@\d+", m))
        if points:
            ax.plot(*zip(*points), marker="o", label=system)
    ax.set_xscale("log")
    ax.set_xlabel("K (log scale)")
    ax.set_ylabel("recall@K")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Recall@K on the test queries")
    return ax


def fusion_weight_curve(trials: dict[str, float], chosen: float, metric: str, ax=None):
    """Dev score of every BM25 weight tried for convex fusion, with the chosen one marked."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    points = sorted((float(k), v) for k, v in trials.items())
    ax.plot(*zip(*points), marker=".")
    ax.axvline(chosen, color="k", linestyle="--", label=f"chosen: {chosen:.2f}")
    ax.set_xlabel("BM25 weight (dense weight = 1 - w)")
    ax.set_ylabel(f"{metric} on dev queries")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("Convex fusion weight, chosen on dev queries")
    return ax
