"""Which score normalisation should the convex hybrid use? Chosen on dev, scored on test.

For every finished point of a sweep (each seed's fine-tuned model, from its local ``model/``), or
one run folder, and each normalisation ranx offers for ``wsum`` fusion: the BM25 weight that
maximises dev nDCG@10 (the same grid as 04_evaluate), and that best dev score. The normalisation with the highest dev
score is chosen (a tie goes to the earlier in NORMS, min-max first, the shipped default); only
then is it scored on test, beside the shipped min-max hybrid. Test queries choose nothing.

Reads the points' cached corpus embeddings when they are there (04_evaluate left them). Writes
``FOLDER/fusion_norms.json`` (nothing else) and prints a line per point.

Usage: bench/fusion_norms.py FOLDER [--system finetuned]   (FOLDER: a sweep or a run folder)
  e.g. bench/fusion_norms.py results/scifact/seeds-guard-off
"""
import argparse
import dataclasses
import json
from pathlib import Path

import pandas as pd

from embedtune.context import open_run
from embedtune.evaluate import evaluate_runs
from embedtune.fusion import choose_convex_weight, fuse_runs
from embedtune.io import atomic_write_json
from embedtune.stats import paired_test
from embedtune.sweep.compare import load_comparison

NORMS = ("min-max", "zmuv", "max", "sum", "rank")  # ranx's normalisations for wsum, default first
METRIC = "ndcg@10"


def point_norms(folder: Path, system: str) -> tuple[dict, pd.DataFrame]:
    """One point: each norm's dev choice; the chosen norm's and min-max's test scores per query."""
    ctx = open_run(folder / "params.yaml", {}, folder)
    ds, splits = ctx.data
    top_k = ctx.cfg.retrieval.top_k
    dev_qrels = ctx.dev_qrels()
    dev_q = {q: ds.queries[q] for q in dev_qrels}
    test_q = {q: ds.queries[q] for q in splits.test}
    if system not in ctx.dense_systems:
        raise SystemExit(f"{folder}: no {system} system here (models are not committed: is {folder}/model there?)")
    dense = ctx.dense_systems[system]
    bm25_dev, dense_dev = ctx.bm25.search(dev_q, top_k), dense.search(dev_q, top_k)
    base = ctx.cfg.retrieval.hybrid
    dev = {}
    for norm in NORMS:
        weight, trials = choose_convex_weight(dev_qrels, bm25_dev, dense_dev, dataclasses.replace(base, norm=norm))
        dev[norm] = {"bm25_weight": weight, f"dev_{METRIC}": max(trials.values())}
    chosen = max(NORMS, key=lambda n: (dev[n][f"dev_{METRIC}"], -NORMS.index(n)))
    bm25_test, dense_test = ctx.bm25.search(test_q, top_k), dense.search(test_q, top_k)
    runs = {norm: fuse_runs(bm25_test, dense_test, dataclasses.replace(base, norm=norm),
                            bm25_weight=dev[norm]["bm25_weight"], top_k=top_k) for norm in {"min-max", chosen}}
    scores = evaluate_runs(splits.test, runs, [METRIC])
    per_query = pd.DataFrame({"min-max": scores.per_query.loc["min-max", METRIC],
                              "chosen": scores.per_query.loc[chosen, METRIC]})
    return {"dev": dev, "chosen": chosen, "test_min_max": float(per_query["min-max"].mean()),
            "test_chosen": float(per_query["chosen"].mean())}, per_query


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--system", default="finetuned", help="the dense system fused with BM25")
    args = parser.parse_args()
    out = {"folder": str(args.folder), "system": args.system, "metric": METRIC, "norms": NORMS,
           "command": f"bench/fusion_norms.py {args.folder} --system {args.system}", "points": {}}
    if (args.folder / "sweep.json").is_file():  # each point with its per_query.csv, read once
        points = [(p.name, p.folder, p.per_query) for p in load_comparison(args.folder).ok]
    else:
        points = [(args.folder.name, args.folder, pd.read_csv(args.folder / "per_query.csv"))]
    tables = []
    for name, folder, shipped in points:
        summary, per_query = point_norms(folder, args.system)
        shipped = shipped.set_index("query_id")
        shipped = shipped.loc[shipped["system"] == f"hybrid_{args.system}", METRIC]
        summary["test_shipped"] = float(shipped.mean())  # min-max as 04_evaluate ran it: the same
        out["points"][name] = summary
        tables.append(per_query)
        print(f"{name}: dev chose {summary['chosen']}; test {METRIC} {summary['test_chosen']:.4f} "
              f"(min-max {summary['test_min_max']:.4f}, shipped {summary['test_shipped']:.4f})")
    mean = sum(tables) / len(tables)  # each test query averaged over the points (seeds)
    out["over_points"] = {"test_min_max": float(mean["min-max"].mean()),
                          "test_chosen": float(mean["chosen"].mean()),
                          "chosen_vs_min_max": dict(zip(("delta", "p"), paired_test(mean["chosen"].to_numpy(),
                                                                                       mean["min-max"].to_numpy())))}
    atomic_write_json(args.folder / "fusion_norms.json", out)
    print(json.dumps(out["over_points"]))


if __name__ == "__main__":
    main()
