"""Would BM25 parameters chosen on dev lift the hybrid? Chosen on dev, scored on test.

For one run folder and one dense system: every BM25 setting of a small grid
(k1 x b, Lucene scoring, the shipped stopwords and stemmer) is fused with the dense run on dev
queries, with the convex weight chosen there as 04_evaluate does. The setting with the best dev
hybrid nDCG@10 is chosen (a tie goes to the shipped setting); only then are the chosen and the
shipped settings scored on test, BM25 alone and fused, with a paired test. Test queries choose
nothing.

Writes ``OUT`` (default ``FOLDER/bm25_dev.json``, nothing else) and prints a line per setting.

The dev queries are those the folder's 01_pairs left, after its leakage guard.

Usage: bench/bm25_dev.py FOLDER [--system generic|finetuned] [--out FILE]
  e.g. bench/bm25_dev.py results/scifact --system generic   (writes results/scifact/bm25_dev.json)
"""
import argparse
import dataclasses
import json
import time
from pathlib import Path

from embedtune.context import open_run
from embedtune.evaluate import evaluate_runs
from embedtune.fusion import choose_convex_weight, fuse_runs
from embedtune.io import atomic_write_json
from embedtune.retrieval import BM25Retriever
from embedtune.stats import paired_test

K1 = (0.6, 0.9, 1.2, 1.5, 2.0)
B = (0.3, 0.5, 0.75, 0.9, 1.0)
METRIC = "ndcg@10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("where", type=Path, help="a run folder (with params.yaml)")
    parser.add_argument("--system", default="generic", help="the dense system fused with BM25")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    ctx = open_run(args.where / "params.yaml", {"ood.datasets": []}, args.where)
    out_path = args.out or args.where / "bm25_dev.json"
    ds, splits = ctx.data
    top_k = ctx.cfg.retrieval.top_k
    dev_qrels = ctx.dev_qrels()
    dev_q = {q: ds.queries[q] for q in dev_qrels}
    test_q = {q: ds.queries[q] for q in splits.test}
    if args.system not in ctx.dense_systems:
        raise SystemExit(f"{args.where}: no {args.system} system here (is the run's model/ there?)")
    dense = ctx.dense_systems[args.system]
    dense_dev, dense_test = dense.search(dev_q, top_k), dense.search(test_q, top_k)
    hybrid = ctx.cfg.retrieval.hybrid
    shipped = ctx.cfg.retrieval.bm25
    grid = [dataclasses.replace(shipped, k1=k1, b=b) for k1 in K1 for b in B]
    if shipped not in grid:
        grid.insert(0, shipped)
    rows, indexes = [], {}  # indexes: (k1, b) -> the BM25 index, built once and used again on test
    start = time.perf_counter()
    for bm in grid:
        indexes[bm.k1, bm.b] = BM25Retriever(ds.corpus, bm)
        bm25_dev = indexes[bm.k1, bm.b].search(dev_q, top_k)
        weight, trials = choose_convex_weight(dev_qrels, bm25_dev, dense_dev, hybrid)
        bm25_alone = evaluate_runs(dev_qrels, {"bm25": bm25_dev}, [METRIC]).per_query.loc["bm25", METRIC].mean()
        rows.append({"k1": bm.k1, "b": bm.b, "bm25_weight": weight, "dev_hybrid": max(trials.values()),
                     "dev_bm25": float(bm25_alone), "shipped": bm == shipped})
        print(f"k1={bm.k1} b={bm.b}: dev bm25 {bm25_alone:.4f}, dev hybrid {max(trials.values()):.4f} "
              f"(bm25 weight {weight})", flush=True)
    best = max(rows, key=lambda r: (r["dev_hybrid"], r["shipped"]))
    chosen = dataclasses.replace(shipped, k1=best["k1"], b=best["b"])
    test = {}
    per_query = {}
    for label, bm, weight in (("shipped", shipped, next(r for r in rows if r["shipped"])["bm25_weight"]),
                              ("chosen", chosen, best["bm25_weight"])):
        bm25_test = indexes[bm.k1, bm.b].search(test_q, top_k)
        fused = fuse_runs(bm25_test, dense_test, hybrid, bm25_weight=weight, top_k=top_k)
        scores = evaluate_runs(splits.test, {"bm25": bm25_test, "hybrid": fused}, [METRIC]).per_query
        per_query[label] = {s: scores.loc[s, METRIC] for s in ("bm25", "hybrid")}
        test[label] = {"k1": bm.k1, "b": bm.b, "bm25_weight": weight,
                       "test_bm25": float(per_query[label]["bm25"].mean()),
                       "test_hybrid": float(per_query[label]["hybrid"].mean())}
    for s in ("bm25", "hybrid"):
        delta, p = paired_test(per_query["chosen"][s].to_numpy(), per_query["shipped"][s].to_numpy())
        test[f"{s}_chosen_vs_shipped"] = {"delta": delta, "p": p}
    out = {"where": str(args.where), "system": args.system, "metric": METRIC, "grid": {"k1": K1, "b": B},
           "command": f"bench/bm25_dev.py {args.where} --system {args.system} --out {out_path}",
           "dev_queries": len(dev_qrels), "test_queries": len(test_q), "seconds": round(time.perf_counter() - start, 1),
           "dev": rows, "test": test}
    atomic_write_json(out_path, out)
    print(json.dumps(test, indent=1))


if __name__ == "__main__":
    main()
