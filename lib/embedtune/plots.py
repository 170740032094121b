"""Tables and figures shared by the stage notebooks and the report."""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch
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


def loss_table(log_history: list[dict]) -> pd.DataFrame:
    """Training loss (and learning rate) per logged step, from the trainer's log history."""
    rows = [{"step": e["step"], **{k: v for k, v in e.items() if k in ("loss", "learning_rate")}}
            for e in log_history if "loss" in e]
    return pd.DataFrame(rows, columns=["step", "loss", "learning_rate"])


def dev_table(log_history: list[dict], dev_before: dict) -> pd.DataFrame:
    """Dev metrics per evaluation; step 0 is the base model before training."""
    def short(values: dict) -> dict:
        return {k.split("_cosine_")[-1]: v for k, v in values.items() if "_cosine_" in k}

    rows = [{"step": 0, **short(dev_before)}]
    rows += [{"step": e["step"], **short(e)} for e in log_history if any("_cosine_" in k for k in e)]
    return pd.DataFrame(rows).set_index("step")


def training_curves(log_history: list[dict], dev_before: dict):
    """Training loss per step beside the dev metrics per evaluation (a figure)."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.5))
    curves = loss_table(log_history)
    if not curves.empty:
        a.plot(curves["step"], curves["loss"], marker=".")
    a.set_xlabel("step")
    a.set_ylabel("training loss")
    a.set_title("Training loss")
    dev = dev_table(log_history, dev_before)
    for metric in ("ndcg@10", "recall@10", "mrr@10"):
        if metric in dev:
            b.plot(dev.index, dev[metric], marker="o", label=metric)
    b.set_xlabel("step (0 = base model)")
    b.set_title("Dev queries")
    if len(dev.columns):
        b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def headline_bars(table: pd.DataFrame, metric: str = "recall@10", claim: str | None = None, ax=None):
    """One bar per system (measured), with the brief's claim as a marker where it makes one."""
    ax = ax or plt.subplots(figsize=(6.5, 3.5))[1]
    values = table[metric]
    bars = ax.bar(values.index, values.values, color=[f"C{i}" for i in range(len(values))])
    ax.bar_label(bars, labels=[f"{v:.3f}" for v in values.values], padding=2)
    if claim and claim in table:
        claimed = table[claim].dropna()
        ax.scatter(claimed.index, claimed.values, marker="_", s=900, color="k", zorder=3,
                   label="the brief's claim")
        ax.legend(loc="upper left")
    ax.set_ylim(0, 1.12)
    ax.set_ylabel(f"{metric} (test queries)")
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"{metric}: measured on held-out test queries")
    return ax


def ci_plot(ci: pd.DataFrame, metric: str, ax=None):
    """Mean and bootstrap interval of every system for one metric (horizontal)."""
    ax = ax or plt.subplots(figsize=(6.5, 3))[1]
    rows = ci.xs(metric, level="metric").sort_values("mean")
    y = range(len(rows))
    ax.errorbar(rows["mean"], y, xerr=[rows["mean"] - rows["low"], rows["high"] - rows["mean"]],
                fmt="o", capsize=4)
    ax.set_yticks(list(y), rows.index)
    ax.set_xlabel(f"{metric} (95 % bootstrap interval over test queries)")
    ax.grid(alpha=0.3, axis="x")
    ax.set_title(f"{metric} with confidence intervals")
    return ax


def win_loss_plot(delta: pd.Series, ax=None):
    """Per-query difference, sorted: bars above zero are wins of ``system`` over ``baseline``."""
    ax = ax or plt.subplots(figsize=(8, 3.2))[1]
    colors = ["C2" if d > 0 else "C3" if d < 0 else "0.6" for d in delta.values]
    ax.bar(range(len(delta)), delta.values, width=1.0, color=colors)
    ax.axhline(0, color="k", lw=0.8)
    a = delta.attrs
    ax.set_xlabel("test queries, sorted by difference")
    ax.set_ylabel(f"Δ {a.get('metric', '')}")
    ax.set_title(f"{a.get('system')} vs {a.get('baseline')}: {a.get('wins')} wins, "
                 f"{a.get('losses')} losses, {a.get('ties')} ties")
    ax.set_xlim(-0.5, len(delta) - 0.5)
    ax.grid(alpha=0.3, axis="y")
    return ax


def score_histograms(positive: list[float], negative: list[float], ax=None):
    """Base-model cosine of the positives vs the mined hard negatives."""
    import numpy as np

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    bins = np.linspace(-0.2, 1.0, 49)
    ax.hist(positive, bins=bins, alpha=0.6, label=f"positives ({len(positive)})")
    ax.hist(negative, bins=bins, alpha=0.6, label=f"hard negatives ({len(negative)})")
    ax.set_xlabel("cosine to the query (base model)")
    ax.set_ylabel("count")
    ax.legend()
    ax.set_title("Positives vs mined hard negatives")
    return ax


def ood_bars(ood: dict, metric: str = "ndcg@10", ax=None):
    """Generic vs fine-tuned on each out-of-domain dataset (forgetting shows as a drop)."""
    import numpy as np

    ax = ax or plt.subplots(figsize=(6, 3.2))[1]
    names = list(ood)
    x = np.arange(len(names))
    for i, system in enumerate(("generic", "finetuned")):
        values = [ood[n][system][metric] for n in names]
        bars = ax.bar(x + (i - 0.5) * 0.38, values, width=0.38, label=system, color=f"C{i + 1}")
        ax.bar_label(bars, labels=[f"{v:.3f}" for v in values], padding=2, fontsize=8)
    ax.set_xticks(x, names)
    ax.set_ylabel(metric)
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ax.set_title(f"Out of domain: {metric}")
    return ax


def stage_time_bars(seconds: pd.Series, ax=None):
    """Wall time per stage (horizontal bars, seconds)."""
    ax = ax or plt.subplots(figsize=(6, 2.8))[1]
    bars = ax.barh(seconds.index, seconds.values, color="C0")
    ax.bar_label(bars, labels=[f"{v:.0f} s" for v in seconds.values], padding=2)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    ax.set_title("Where the time went")
    ax.grid(alpha=0.3, axis="x")
    return ax


def latency_bars(latency_ms: dict[str, dict], ax=None):
    """p50 and p95 latency of answering one query, per system."""
    import numpy as np

    ax = ax or plt.subplots(figsize=(6.5, 3))[1]
    names = list(latency_ms)
    x = np.arange(len(names))
    for i, key in enumerate(("p50_ms", "p95_ms")):
        values = [latency_ms[n][key] for n in names]
        bars = ax.bar(x + (i - 0.5) * 0.38, values, width=0.38, label=key.replace("_ms", ""), color=f"C{i}")
        ax.bar_label(bars, labels=[f"{v:.1f}" if v < 10 else f"{v:.0f}" for v in values], padding=2, fontsize=7)
    ax.set_xticks(x, names, rotation=15)
    ax.set_ylabel("ms per query")
    ax.legend()
    ax.grid(alpha=0.3, axis="y")
    ax.set_title("Query latency, one query at a time")
    return ax


# flowchart nodes: id -> (x, y, label)
NODES = {
    "generic_recall_high": (0.5, 0.92, "Generic recall@10\n>= 90 %?"),
    "special_vocabulary": (0.5, 0.72, "Special\nvocabulary?"),
    "labelled_pairs": (0.5, 0.50, ">= 1K labelled\npairs?"),
    "generic_recall": (0.5, 0.28, "Generic recall@10\nunder 70 %?"),
    "hybrid_closes_gap": (0.5, 0.08, "Hybrid alone\nreaches 70 %?"),
    "skip": (0.88, 0.72, "Skip\nfine-tuning"),
    "hybrid": (0.12, 0.50, "Use hybrid\nretrieval"),
    "fine-tune": (0.88, 0.08, "Fine-tune"),
}
EDGES = [("generic_recall_high", "special_vocabulary", "no"), ("generic_recall_high", "skip", "yes"),
         ("special_vocabulary", "labelled_pairs", "yes"), ("special_vocabulary", "skip", "no"),
         ("labelled_pairs", "generic_recall", "yes"), ("labelled_pairs", "hybrid", "no"),
         ("generic_recall", "hybrid_closes_gap", "yes"), ("generic_recall", "skip", "no"),
         ("hybrid_closes_gap", "fine-tune", "no"), ("hybrid_closes_gap", "hybrid", "yes")]


def draw_flowchart(path: list[str], verdict: str):
    """The brief's decision flowchart with ``path`` and ``verdict`` highlighted (a figure)."""
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    visited = set(path)
    pairs = set(zip(path, path[1:]))
    for a, b, label in EDGES:
        (x1, y1, _), (x2, y2, _) = NODES[a], NODES[b]
        on = (a, b) in pairs
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1),
                    arrowprops=dict(arrowstyle="->", lw=2.5 if on else 1, color="C3" if on else "0.7"))
        ax.text((x1 + x2) / 2, (y1 + y2) / 2, label, fontsize=8, color="C3" if on else "0.5",
                ha="center", va="center", backgroundcolor="white")
    for node, (x, y, text) in NODES.items():
        on = node in visited or node == verdict
        ax.add_patch(FancyBboxPatch((x - 0.11, y - 0.055), 0.22, 0.11, boxstyle="round,pad=0.01",
                                    fc="#fde0dc" if on else "white", ec="C3" if on else "0.6",
                                    lw=2 if on else 1))
        ax.text(x, y, text, ha="center", va="center", fontsize=8.5)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.axis("off")
    ax.set_title(f"The brief's flowchart: {verdict}")
    return fig


def pilot_curve(pilot: dict):
    """The pilot's dev gains against training pairs (log scale), with their intervals, and the
    extrapolation to every pair (a figure)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    points = pilot["points"]
    xs = [p["pairs"] for p in points]
    ys = [p["gain"] for p in points]
    err = [[y - p["interval"][0] for y, p in zip(ys, points)], [p["interval"][1] - y for y, p in zip(ys, points)]]
    ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label="measured (pilot runs)")
    low, high = pilot["interval"]
    ax.errorbar([pilot["all_pairs"]], [pilot["predicted_gain"]],
                yerr=[[pilot["predicted_gain"] - low], [high - pilot["predicted_gain"]]], marker="s",
                capsize=3, color="C3", label="extrapolated to every pair")
    ax.axhline(0, color="0.5", linestyle="--")
    ax.set_xscale("log")
    ax.set_xlabel("training pairs")
    ax.set_ylabel("dev nDCG@10 gain over the base model")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig
