"""Two recipes, each run over the same seeds on the same dev and test queries (two seed sweeps):
which is better, on dev (how a recipe is chosen) and on test (what it is worth).

For each sweep and system: every seed's test mean, the mean and sd over seeds; each test query's
metric averaged over the seeds, paired between the two sweeps (``stats.paired_test``, Student t),
and against the generic model. Dev: every seed's best dev nDCG@10 (its keep-base test), from the
points' ``dev_per_query.csv`` (committed since 2026-12-03), ``model/version.json`` (local: models
are not committed) or, failing that, the best ``eval_dev_cosine_ndcg@10`` logged in the committed
``03_train.ipynb``. Where every point of both sweeps has ``dev_per_query.csv`` (the same dev
queries and dev corpus, so any two base models or recipes pair up), each dev query's nDCG@10 at
the checkpoint each seed keeps, averaged over the seeds, is paired between the sweeps too
(``b_vs_a_dev``, with the one-sided p of "B beats A" that the keep-base guard uses).

``--dev-only`` prints the dev comparison alone and reads no test score: the way to choose between
two recipes before either is scored on test (sweeps run with ``--stages pairs,negatives,train``
will do).

Usage: bench/compare_seed_sweeps.py SWEEP_A SWEEP_B [--metric ndcg@10] [--dev-only]
  e.g. bench/compare_seed_sweeps.py results/scifact/seeds results/scifact/seeds-guard-off
"""
import argparse
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from embedtune.io import read_json
from embedtune.stats import paired_test
from embedtune.sweep.compare import load_comparison

SYSTEMS = ("finetuned", "hybrid_finetuned")


def points(sweep: Path) -> dict:
    """seed -> the sweep's finished point (``sweep.compare.PointResult``)."""
    return {str(p.values["seed"]): p for p in load_comparison(sweep).ok}


def dev_chosen(folder: Path) -> pd.Series | None:
    """query_id -> dev nDCG@10 of the checkpoint the run keeps (None without ``dev_per_query.csv``)."""
    path = folder / "dev_per_query.csv"
    if not path.is_file():
        return None
    frame = pd.read_csv(path, dtype={"query_id": str})
    chosen = frame[(frame["curve"] == "dev") & frame["tested"]]
    return chosen.set_index("query_id")["ndcg@10"] if len(chosen) else None


def dev_best(point) -> float:
    folder = point.folder
    chosen = dev_chosen(folder)
    if chosen is not None:
        return float(chosen.mean())
    keep = read_json(folder / "model" / "version.json").get("keep_base") or {}
    keep = keep.get("dev", keep)  # a cross-fitted guard (train.guard_folds) keeps the dev-only decision here
    if "best" in keep:
        return float(keep["best"])
    logged = re.findall(r"eval_dev_cosine_ndcg@10': '([0-9.]+)'", (folder / "03_train.ipynb").read_text())
    return max(map(float, logged)) if logged else float("nan")


def dev_best_by_seed(finished: dict) -> dict:
    """seed -> the best dev nDCG@10 of that seed's run, rounded for printing."""
    return {seed: round(dev_best(point), 4) for seed, point in sorted(finished.items())}


def seed_table(finished: dict, metric: str) -> pd.DataFrame:
    """query_id x (system, seed): each finished seed's per-query test metric."""
    cols = {}
    for seed, point in finished.items():
        frame = point.per_query.set_index("query_id")
        for system in SYSTEMS + ("generic", "hybrid_generic"):
            cols[(system, seed)] = frame.loc[frame["system"] == system, metric]
    return pd.DataFrame(cols)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--metric", default="ndcg@10")
    parser.add_argument("--dev-only", action="store_true", help="compare on dev only; read no test score")
    args = parser.parse_args()
    finished_points = {s: points(s) for s in (args.a, args.b)}  # each sweep read once
    if args.dev_only:
        out = {"sweeps": {str(s): {"dev_best": dev_best_by_seed(finished)} for s, finished in finished_points.items()}}
        print(json.dumps(out | dev_comparison(finished_points, args.a, args.b), indent=1))
        return
    tables = {s: seed_table(finished, args.metric) for s, finished in finished_points.items()}
    queries = tables[args.a].dropna().index.intersection(tables[args.b].dropna().index)
    out = {"metric": args.metric, "test_queries": len(queries), "sweeps": {}, "b_vs_a": {}}
    for sweep, table in tables.items():
        table = table.loc[queries]
        finished = finished_points[sweep]
        row = {"seeds": sorted(finished), "dev_best": dev_best_by_seed(finished)}
        for system in SYSTEMS:
            means = table[system].mean()
            row[system] = {"per_seed": {s: round(v, 4) for s, v in means.items()}, "mean": round(means.mean(), 4),
                           "sd": round(means.std(ddof=1), 4) if len(means) > 1 else None}
            base = "generic" if system == "finetuned" else "hybrid_generic"
            delta, p = paired_test(table[system].mean(axis=1).to_numpy(), table[base].mean(axis=1).to_numpy())
            row[system][f"vs_{base}"] = {"delta": round(delta, 4), "p": float(f"{p:.2g}"),
                                         base: round(table[base].mean(axis=1).mean(), 4)}
        out["sweeps"][str(sweep)] = row
    for system in SYSTEMS:
        a = tables[args.a].loc[queries, system].mean(axis=1).to_numpy()
        b = tables[args.b].loc[queries, system].mean(axis=1).to_numpy()
        delta, p = paired_test(b, a)
        out["b_vs_a"][system] = {"delta": round(delta, 4), "p": float(f"{p:.2g}"),
                                 "queries_better": int(np.sum(b > a)), "queries_worse": int(np.sum(b < a))}
    print(json.dumps(out | dev_comparison(finished_points, args.a, args.b), indent=1))


def dev_comparison(finished_points: dict, a_sweep: Path, b_sweep: Path) -> dict:
    """``{"b_vs_a_dev": ...}``: each dev query's nDCG@10 at the checkpoint each seed keeps, averaged
    over seeds, paired B against A; {} unless every point of both sweeps has ``dev_per_query.csv``."""
    dev = {s: [dev_chosen(p.folder) for p in finished.values()] for s, finished in finished_points.items()}
    if not all(dev.values()) or any(d is None for seeds in dev.values() for d in seeds):
        return {}
    a, b = (pd.concat(dev[s], axis=1).dropna().mean(axis=1) for s in (a_sweep, b_sweep))
    both = a.index.intersection(b.index)
    delta, p = paired_test(b.loc[both].to_numpy(), a.loc[both].to_numpy())
    return {"b_vs_a_dev": {"metric": "ndcg@10", "dev_queries": len(both), "a": round(float(a.loc[both].mean()), 4),
                           "b": round(float(b.loc[both].mean()), 4), "delta": round(delta, 4), "p": float(f"{p:.2g}"),
                           "p_one_sided": float(f"{(p / 2 if delta > 0 else 1 - p / 2):.2g}")}}


if __name__ == "__main__":
    main()
