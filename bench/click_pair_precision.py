"""How many click-derived training pairs are judged relevant in the train qrels, and what share of
those queries' judged pairs the clicks found. Usage: bench/click_pair_precision.py RUN_DIR DATASET_DIR
e.g. results/scifact-clicks ../shared/datasets/scifact"""
import json
import sys
from pathlib import Path

from embedtune.data import load_qrels, relevant_only

run_dir, data_dir = Path(sys.argv[1]), Path(sys.argv[2])
rows = [json.loads(line) for line in (run_dir / "pairs" / "train.jsonl").open()]
judged = relevant_only(load_qrels(data_dir / "qrels" / "train.tsv"), 1)
queries = {r["query_id"] for r in rows}
relevant = sum(r["doc_id"] in judged.get(r["query_id"], ()) for r in rows)
gold = sum(len(judged.get(q, ())) for q in queries)
print(json.dumps({"click_pairs": len(rows), "queries": len(queries), "judged_relevant": relevant,
                  "precision": round(relevant / len(rows), 3), "gold_pairs_of_these_queries": gold,
                  "recall": round(relevant / gold, 3)}))
