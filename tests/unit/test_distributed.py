"""Training on two CPU processes (torchrun, gloo): the model is saved once, by rank 0, and every
process's output reaches the caller."""

import json

import pytest
from datasets import Dataset

from embedtune.config import TrainConfig
from embedtune.distributed import launch, write_job


@pytest.mark.slow  # two torchrun processes load and train the model: ~35 s; .ci/run runs it after `make test`
def test_two_cpu_processes_train_together_and_rank_0_saves(tmp_path):
    rows = {"anchor": [f"question about topic {i}" for i in range(16)],
            "positive": [f"a passage that answers the question about topic {i}" for i in range(16)]}
    cfg = TrainConfig(epochs=1, batch_size=4, devices=2, keep_base_p=None)
    out = tmp_path / "model"
    job = write_job(tmp_path / "job", Dataset.from_dict(rows), cfg, model_name="sentence-transformers/all-MiniLM-L6-v2",
                    out_dir=out, seed=0, device="cpu")
    lines = []
    result = launch(job, devices=2, stream=lines.append, timeout=600)
    assert result["processes"] == 2
    text = "\n".join(lines)
    assert "rank 0/2: 16 training examples on cpu" in text and "rank 1/2: 16 training examples on cpu" in text
    done = json.loads((job / "result.json").read_text())
    assert done["processes"] == 2 and done["steps"] == 2  # 16 examples / (4 per process x 2 processes)
    assert (out / "modules.json").is_file() and json.loads((out / "training_log.json").read_text())["processes"] == 2
    from embedtune.models import load_model

    model = load_model(str(out), "cpu")
    assert model.encode(["a test"], normalize_embeddings=True).shape == (1, 384)
