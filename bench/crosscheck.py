"""Full-set cross-check: ranx vs BEIR's EvaluateRetrieval vs MTEB's own pipeline.

Usage (after `embedtune run params/<name>.yaml --stages evaluate`, which fills the embedding cache):
    HF_HUB_OFFLINE=1 .venv/bin/python bench/crosscheck.py params/scifact.yaml

Prints nDCG@10 of the generic model from each scorer, and how many retrieved documents share
their query's id (BEIR's default drops those). MTEB re-encodes the corpus itself (minutes on CPU),
in fp32, so our side is run in fp32 too.
"""

import json
import sys
import time

from embedtune.config import load_config
from embedtune.crosscheck import beir_ndcg, identical_id_hits, mteb_ndcg
from embedtune.context import load_experiment_data
from embedtune.evaluate import evaluate_runs
from embedtune.models import load_model
from embedtune.retrieval import DenseIndex


def main(params_file: str) -> None:
    cfg = load_config(params_file, {"model.precision": "fp32"})
    ds, splits = load_experiment_data(cfg.data, cfg.seed)
    model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
    index = DenseIndex.build(model, ds.corpus, cfg.model)
    queries = {q: ds.queries[q] for q in splits.test}
    run = index.search(model, queries, cfg.model, top_k=cfg.retrieval.top_k)
    ranx = evaluate_runs(splits.test, {"generic": run}, ["ndcg@10", "recall@10", "recall@100"]).mean["generic"]
    beir = beir_ndcg(splits.test, run, k_values=(10, 100))
    start = time.perf_counter()
    mteb = mteb_ndcg(model, ds.corpus, queries, splits.test, batch_size=cfg.model.batch_size)
    out = {
        "experiment": cfg.experiment,
        "n_queries": len(queries),
        "identical_id_hits": identical_id_hits(run),
        "ranx": {"ndcg@10": ranx["ndcg@10"], "recall@10": ranx["recall@10"], "recall@100": ranx["recall@100"]},
        "beir": {"ndcg@10": beir["NDCG@10"], "recall@10": beir["Recall@10"], "recall@100": beir["Recall@100"]},
        "mteb": {"ndcg@10": mteb["ndcg_at_10"], "recall@10": mteb["recall_at_10"],
                 "recall@100": mteb["recall_at_100"], "seconds": round(time.perf_counter() - start, 1)},
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main(sys.argv[1])
