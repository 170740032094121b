"""Ray, on a local instance of 2 CPUs: shard encoding across workers, and sweep points as Ray tasks."""

import json

import numpy as np
import pytest
import yaml

ray = pytest.importorskip("ray", reason="pip install -e '.[ray]'")

from embedtune.shards import encode_shards, encode_shards_ray, iter_corpus  # noqa: E402


@pytest.mark.slow  # Ray start-up and two model loads: a few minutes on 2 cores
def test_shards_encoded_by_two_ray_workers_equal_one_process(tmp_path):
    from embedtune.models import load_model

    corpus = tmp_path / "corpus.jsonl"
    with open(corpus, "w") as fh:
        for i in range(60):
            fh.write(json.dumps({"_id": f"d{i}", "title": "", "text": f"document {i} about topic {i % 7}"}) + "\n")
    shards = encode_shards_ray("sentence-transformers/all-MiniLM-L6-v2", corpus, tmp_path / "ray", workers=2,
                               chunk_size=20, precision="fp32")
    assert shards.manifest["complete"] and shards.manifest["workers"] == 2
    assert shards.ids() == [f"d{i}" for i in range(60)]
    single = encode_shards(load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu"), iter_corpus(corpus),
                           tmp_path / "one", chunk_size=20, precision="fp32", progress=False)
    for a, b in zip(shards.arrays(), single.arrays()):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), atol=2e-3)


@pytest.mark.slow  # a Ray start-up: run by CI after `make test` (.ci/run)
def test_sweep_points_run_as_ray_tasks_and_share_a_stage(tmp_path, tiny_beir):
    from embedtune.sweep import run_sweep

    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)},
                                      "pairs": {"leakage_cosine": None}}))
    result = run_sweep(params, {"train.learning_rate": [2e-5, 5e-5]}, stages=["pairs"], out_dir=tmp_path / "s",
                       workers=2, executor="ray", report=False, progress=False)
    assert [p["status"] for p in result.points] == ["ok", "ok"], [p.get("error") for p in result.points]
    origins = [json.loads((tmp_path / "s" / p["name"] / ".stages" / "pairs.json").read_text()).get("reused_from")
               for p in result.points]
    assert sorted(o is None for o in origins) == [False, True]  # one ran it, the other reused it
