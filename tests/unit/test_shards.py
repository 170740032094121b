"""Streamed, resumable shard encoding and the faiss indexes over it."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest

from embedtune.shards import (ShardError, ShardSet, build_index, count_lines, encode_shards, iter_corpus,
                              recall_against)

WORDS = "cat dog engine thrust bread yeast rocket river stone cloud paper music".split()


def _corpus(path, n):
    rng = np.random.default_rng(0)
    with open(path, "w") as fh:
        for i in range(n):
            text = " ".join(rng.choice(WORDS, size=12))
            fh.write(json.dumps({"_id": f"d{i}", "title": f"t{i % 7}", "text": text}) + "\n")
    return path


@pytest.fixture(scope="module")
def model():
    from embedtune.models import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")


def test_shards_hold_what_one_pass_encodes(model, tmp_path):
    from embedtune.models import encode_documents

    corpus = _corpus(tmp_path / "corpus.jsonl", 25)
    shards = encode_shards(model, iter_corpus(corpus), tmp_path / "s", chunk_size=10, precision="fp32",
                           total=count_lines(corpus), progress=False)
    assert [p.name for p in shards.shard_paths()] == ["shard-00000.npy", "shard-00001.npy", "shard-00002.npy"]
    assert shards.ids() == [f"d{i}" for i in range(25)] and len(shards) == 25
    texts = [t for _, t in iter_corpus(corpus)]
    full = encode_documents(model, texts, precision="fp32")
    stored = np.concatenate([np.asarray(a, dtype=np.float32) for a in shards.arrays()])
    assert stored.dtype == np.float32 and np.abs(stored - full).max() < 2e-3  # float16 on disk
    assert shards.manifest["complete"] and shards.manifest["encoded_now"] == 25
    with pytest.raises(ShardError, match="another model or settings"):
        encode_shards(model, iter_corpus(corpus), tmp_path / "s", chunk_size=5, precision="fp32", progress=False)


def test_a_killed_encoding_resumes_where_it_stopped(model, tmp_path):
    corpus = _corpus(tmp_path / "corpus.jsonl", 400)
    folder = tmp_path / "s"
    script = (f"from embedtune.models import load_model\nfrom embedtune.shards import encode_shards, iter_corpus\n"
              f"m = load_model('sentence-transformers/all-MiniLM-L6-v2', 'cpu')\n"
              f"encode_shards(m, iter_corpus({str(corpus)!r}), {str(folder)!r}, chunk_size=40, batch_size=8, "
              f"precision='fp32', progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not (folder / "shard-00001.npy").exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(list(folder.glob("shard-*.npy")))
    assert 2 <= done < 10, "the encoding was not interrupted mid-way"
    assert not ShardSet(folder).manifest["complete"]
    shards = encode_shards(model, iter_corpus(corpus), folder, chunk_size=40, batch_size=8, precision="fp32",
                           progress=False)
    manifest = shards.manifest
    assert manifest["complete"] and manifest["resumed_past"] == 40 * done
    assert manifest["encoded_now"] == 400 - 40 * done and shards.ids() == [f"d{i}" for i in range(400)]
    fresh = encode_shards(model, iter_corpus(corpus), tmp_path / "fresh", chunk_size=40, batch_size=8,
                          precision="fp32", progress=False)
    for a, b in zip(shards.arrays(), fresh.arrays()):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind, floor", [("flat", 0.99), ("hnsw", 0.9), ("hnsw-sq8", 0.85), ("ivf", 0.8)])  # flat: ties may order differently
def test_faiss_indexes_find_what_exact_search_finds(kind, floor):
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(50, 32))
    data = centres[rng.integers(0, 50, 6000)] + 0.3 * rng.normal(size=(6000, 32))
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    shards = [data[:2500].astype(np.float16), data[2500:].astype(np.float16)]
    queries = data[rng.integers(0, 6000, 100)] + 0.05 * rng.normal(size=(100, 32))
    exact = np.argsort(-(queries @ np.concatenate(shards).astype(np.float32).T), axis=1)[:, :10]
    index = build_index(shards, kind, nlist=64, nprobe=16)
    _, rows = index.search(queries, 10)
    recall = recall_against(exact, rows, 10)
    assert recall >= floor, recall
    assert index.nbytes > 0 and index.build_seconds >= 0
