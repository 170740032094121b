"""How many of the top-50 candidates (the miners' range_max) of each training pair's query are
judged positives of that query: what a miner without the judged-positive exclusion would take as
negatives. Usage: bench/judged_in_window.py PARAMS RUN_DIR  (RUN_DIR holds pairs/train.jsonl)."""
import json
import sys

from embedtune.context import open_run

ctx = open_run(sys.argv[1])
run_dir = sys.argv[2]
rows = [json.loads(l) for l in open(f"{run_dir}/pairs/train.jsonl")]
ds, splits = ctx.data
judged = {q: {d for d, s in docs.items() if s > 0} for q, docs in ds.qrels["train"].items()}
qids = sorted({r["query_id"] for r in rows})
index = ctx.generic_index
q_emb = ctx.embed_queries(ctx.base_model, [ds.queries[q] for q in qids])
idx, _ = index.search_embeddings(q_emb, 50)
per_q = {q: [index.doc_ids[j] for j in idx[i]] for i, q in enumerate(qids)}
bm25 = ctx.bm25.search({q: ds.queries[q] for q in qids}, 50)
bm25 = {q: sorted(bm25[q], key=lambda d: -bm25[q][d]) for q in qids}
for name, ranked in (("dense", per_q), ("bm25", bm25)):
    cand = hit = 0
    for r in rows:  # one window per pair, as the miner builds it; the pair's own positive aside
        window = [d for d in ranked[r["query_id"]] if d != r["doc_id"]]
        cand += len(window)
        hit += sum(d in judged.get(r["query_id"], set()) for d in window)
    print(json.dumps({"source": name, "pairs": len(rows), "candidates": cand, "judged_positive": hit,
                      "share": round(hit / cand, 4)}))
