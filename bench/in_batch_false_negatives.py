"""How many in-batch negatives are judged positives of the query they are negatives for.

MNRL treats every other passage in a batch as a negative of each query. On a dataset where a
passage is relevant to many queries (nfcorpus), some of those are judged positives: false
negatives the loss pushes away. This shuffles a run's training pairs into batches (``--shuffles``
seeded shuffles, batch ``--batch-size``, the same query or passage twice in a batch skipped, as
the no-duplicates sampler does) and counts, for each pair, the batch's other passages that the
train qrels judge relevant to its query.
Usage: bench/in_batch_false_negatives.py PARAMS RUN_DIR [--batch-size 32] [--shuffles 20]
(RUN_DIR holds pairs/train.jsonl)."""
import argparse
import json
import random

from embedtune.context import open_run

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("params")
parser.add_argument("run_dir")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--shuffles", type=int, default=20)
args = parser.parse_args()

ctx = open_run(args.params)
ds, _ = ctx.data
judged = {q: {d for d, s in docs.items() if s > 0} for q, docs in ds.qrels["train"].items()}
rows = [json.loads(line) for line in open(f"{args.run_dir}/pairs/train.jsonl")]
negatives = false = pairs_hit = pairs_seen = 0
for shuffle in range(args.shuffles):
    order = rows[:]
    random.Random(shuffle).shuffle(order)
    while order:
        batch, queries, docs, rest = [], set(), set(), []
        for r in order:
            if len(batch) < args.batch_size and r["query_id"] not in queries and r["doc_id"] not in docs:
                batch.append(r)
                queries.add(r["query_id"])
                docs.add(r["doc_id"])
            else:
                rest.append(r)
        order = rest
        for r in batch:
            others = [o["doc_id"] for o in batch if o is not r]
            hits = sum(d in judged.get(r["query_id"], set()) for d in others)
            negatives += len(others)
            false += hits
            pairs_hit += hits > 0
            pairs_seen += 1
print(json.dumps({"run": args.run_dir, "pairs": len(rows), "batch_size": args.batch_size,
                  "shuffles": args.shuffles, "in_batch_negatives": negatives, "judged_positive": false,
                  "share": round(false / negatives, 4),
                  "pairs_with_a_false_negative": round(pairs_hit / pairs_seen, 4)}))
