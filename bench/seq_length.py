"""Does the base model retrieve better when documents are cut later (or earlier)?

all-MiniLM-L6-v2 cuts inputs at 256 word pieces (it was trained at 128). Encodes the whole
corpus of a dataset once per ``max_seq_length`` (bf16 where the CPU has it, as the pipeline does)
and scores the base model on one split's queries with ranx. Prints the corpus' length in word
pieces, then one line per length. Meant for dev queries: choosing a length on test is tuning on
test.

Usage: bench/seq_length.py DATASET SPLIT LENGTHS [MODEL]
  e.g. bench/seq_length.py nfcorpus dev 128,192,256,512
       bench/seq_length.py nfcorpus dev 384 cache/models/all-mpnet-base-v2   (bench/fetch_mpnet.py)
"""
import sys
import time

import numpy as np

from embedtune.data import doc_text, load_beir, relevant_only
from embedtune.evaluate import evaluate_runs
from embedtune.models import encode_documents, encode_queries, load_model, resolve_precision
from embedtune.retrieval import top_k_from_scores

BASE = "sentence-transformers/all-MiniLM-L6-v2"


def main(dataset: str, split: str, lengths: str, base: str = BASE) -> None:
    ds = load_beir(dataset, download=False)
    qrels = relevant_only(ds.qrels[split], 1)
    qids, dids = sorted(qrels), list(ds.corpus)
    texts = [doc_text(ds.corpus[d]) for d in dids]
    model = load_model(base, device="cpu")
    precision = resolve_precision("auto", "cpu")
    pieces = np.array([len(model.tokenizer(t)["input_ids"]) for t in texts])
    print(f"{dataset}: {len(dids)} documents, word pieces median {np.median(pieces):.0f}, "
          f"p90 {np.percentile(pieces, 90):.0f}; over 256: {(pieces > 256).mean():.0%}, "
          f"over 512: {(pieces > 512).mean():.0%}; {len(qids)} {split} queries; {precision}", flush=True)
    queries = encode_queries(model, [ds.queries[q] for q in qids], precision=precision)
    for length in (int(x) for x in lengths.split(",")):
        model.max_seq_length = length
        start = time.perf_counter()
        scores = queries @ encode_documents(model, texts, precision=precision).T
        top, values = top_k_from_scores(scores, 100)
        run = {q: {dids[j]: float(v) for j, v in zip(top[i], values[i])} for i, q in enumerate(qids)}
        result = evaluate_runs(qrels, {"base": run}, ["ndcg@10", "recall@100"]).mean["base"]
        print(f"max_seq_length {length}: nDCG@10 {result['ndcg@10']:.4f}, recall@100 {result['recall@100']:.4f} "
              f"({time.perf_counter() - start:.0f} s)", flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:5])
