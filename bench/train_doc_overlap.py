"""How many dev and test queries have a relevant document that is also a training positive?

A dev query whose relevant document the model saw in training is easier than one whose document
it never saw; if dev holds more of them than test, dev rewards memorising the training documents
more than test does. Reads the folder's 01_pairs outputs (``pairs/train.jsonl`` is not committed:
run the pairs stage first, e.g. ``embedtune run PARAMS --stages pairs --run-dir FOLDER``) and the
dataset's test qrels. Prints one JSON line.

Usage: bench/train_doc_overlap.py FOLDER
  e.g. bench/train_doc_overlap.py results/scifact/seeds-6ep/seed=42
"""
import json
import sys
from pathlib import Path

from embedtune.context import open_run


def share(qrels: dict, seen: set[str]) -> dict:
    """The queries with a relevant (grade > 0) document in ``seen``: count and share."""
    hit = sum(any(g > 0 and d in seen for d, g in docs.items()) for docs in qrels.values())
    return {"queries": len(qrels), "with_a_training_positive": hit, "share": round(hit / len(qrels), 3)}


def main(folder: str) -> None:
    ctx = open_run(Path(folder) / "params.yaml", {"ood.datasets": []}, folder)
    seen = {row["doc_id"] for row in ctx.pairs()}
    print(json.dumps({"dev": share(ctx.dev_qrels(), seen), "test": share(ctx.data[1].test, seen)}))


if __name__ == "__main__":
    main(sys.argv[1])
