import numpy as np
import pytest

from embedtune.config import BM25Config, ModelConfig
from embedtune.data import load_beir
from embedtune.retrieval import BM25Retriever, DenseIndex, top_k_from_scores


def test_top_k_ties_break_by_index():
    scores = np.array([[0.5, 0.9, 0.5, 0.1, 0.9]])
    idx, vals = top_k_from_scores(scores, 3)
    assert idx.tolist() == [[1, 4, 0]]
    assert vals.tolist() == [[0.9, 0.9, 0.5]]
    idx, _ = top_k_from_scores(scores, 10)  # k larger than the corpus
    assert idx.shape == (1, 5)


def test_bm25_ranks_matching_docs_and_stems(tiny_beir):
    ds = load_beir(str(tiny_beir))
    bm25 = BM25Retriever(ds.corpus, BM25Config())
    run = bm25.search({"a": "purring cat", "b": "the of and"}, top_k=3)
    assert next(iter(run["a"])) == "d1"  # "purring"/"cat" stem to "purr"/"cat"
    assert run["b"] == {}  # stopwords only: no hit, no zero-score padding


@pytest.fixture(scope="module")
def minilm():
    from embedtune.models import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


def test_dense_index_search_and_cache(tiny_beir, minilm, monkeypatch, tmp_path):
    from embedtune import models

    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "cache"))  # empty: the first build encodes

    ds = load_beir(str(tiny_beir))
    cfg = ModelConfig(batch_size=8)
    index = DenseIndex.build(minilm, ds.corpus, cfg)
    assert index.embeddings.shape == (5, 384) and not index.from_cache
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1, atol=1e-5)
    run = index.search(minilm, {"q": "why do cats purr", "e": "how does an engine make thrust"}, cfg, top_k=2)
    assert next(iter(run["q"])) == "d1"
    assert set(run["e"]) == {"d3", "d4"}

    def refuse(*args, **kwargs):
        raise AssertionError("encoded again")

    monkeypatch.setattr(models, "encode_documents", refuse)
    monkeypatch.setattr(models, "encode_queries", refuse)
    again = DenseIndex.build(minilm, ds.corpus, cfg)
    assert again.from_cache and np.array_equal(again.embeddings, index.embeddings)
    assert again.search(minilm, {"q": "why do cats purr", "e": "how does an engine make thrust"}, cfg,
                        top_k=2) == run
    changed = dict(ds.corpus, d5={"title": "", "text": "changed text"})
    with pytest.raises(AssertionError, match="encoded again"):  # a changed corpus misses the cache
        DenseIndex.build(minilm, changed, cfg)


def test_faiss_backend_matches_exact(tiny_beir, minilm):
    ds = load_beir(str(tiny_beir))
    cfg = ModelConfig(batch_size=8)
    exact = DenseIndex.build(minilm, ds.corpus, cfg)
    faiss_index = DenseIndex.build(minilm, ds.corpus, cfg, backend="faiss")
    q = {"q": "rocket thrust", "p": "bread"}
    a, b = exact.search(minilm, q, cfg, top_k=3), faiss_index.search(minilm, q, cfg, top_k=3)
    assert [list(a[k]) for k in q] == [list(b[k]) for k in q]
    assert all(a[k][d] == pytest.approx(b[k][d], abs=1e-5) for k in q for d in a[k])


@pytest.mark.parametrize("backend", ["faiss", "hnsw", "ivf"])
def test_faiss_backends_are_built_once_and_report_their_recall_against_exact(backend):
    from embedtune.retrieval import DenseIndex

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(3000, 16)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    index = DenseIndex([f"d{i}" for i in range(3000)], emb, "m", "c", 0.0, False, backend,
                       {"nlist": 32, "nprobe": 8} if backend == "ivf" else {})
    queries = emb[:50] + 0.01 * rng.normal(size=(50, 16)).astype(np.float32)
    idx, _ = index.search_embeddings(queries, 10)
    assert index.faiss_index() is index.faiss_index()  # built once
    assert (idx[:, 0] == np.arange(50)).mean() > 0.9  # each query's own document comes first
    recall = index.recall_against_exact(queries, 10)
    assert (recall == 1.0) if backend == "faiss" else (0.5 < recall <= 1.0)
