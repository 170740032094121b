"""Choose training hyper-parameters on dev queries only (never test).

Runs 01_pairs -> 03_train for each candidate setting and prints the dev curve
(nDCG@10 on the dev queries, step 0 = the base model). The test split is not touched.

Usage:
    HF_HUB_OFFLINE=1 .venv/bin/python bench/tune_dev.py params/scifact.yaml \
        '{"train.epochs": 3, "train.learning_rate": 5e-5}' '{"train.epochs": 3, "train.batch_size": 64}'
"""

import json
import sys
import tempfile
import time
from pathlib import Path

from embedtune.runner import run_experiment


def main(params_file: str, *candidates: str) -> None:
    root = Path(tempfile.mkdtemp(prefix="embedtune-tune-"))
    for i, text in enumerate(candidates):
        overrides = json.loads(text)
        folder = root / f"c{i}"
        start = time.perf_counter()
        run_experiment(params_file, stages=["pairs", "negatives", "train"], overrides=overrides,
                       run_dir=folder, progress=False)
        log = json.loads((folder / "model" / "training_log.json").read_text())
        version = json.loads((folder / "model" / "version.json").read_text())
        curve = [round(log["dev_before"]["dev_cosine_ndcg@10"], 4)] + [
            round(e["eval_dev_cosine_ndcg@10"], 4) for e in log["log_history"] if "eval_dev_cosine_ndcg@10" in e]
        print(json.dumps({"overrides": overrides, "dev_ndcg@10_curve": curve, "best": max(curve),
                          "train_seconds": version["train_seconds"], "steps": version["steps"],
                          "wall_seconds": round(time.perf_counter() - start)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], *sys.argv[2:])
