import numpy as np
import pytest

from embedtune.config import BM25Config, NegativesConfig
from embedtune.data import load_beir
from embedtune.negatives import CurationError, judged_positives, mine, read_curation
from embedtune.pairs import gold_pairs
from embedtune.retrieval import BM25Retriever
from tests.conftest import write_beir


@pytest.fixture
def engine_beir(tmp_path):
    # q1 has two judged positives (p1 in train, p2 in test); p2 must never come back as a negative
    corpus = {
        "p1": "jet engine thrust from hot exhaust gas",
        "p2": "jet engine thrust and exhaust nozzles",
        "n1": "jet engine noise at airports",
        "n2": "engine oil for cars",
        "n3": "baking bread with yeast",
    }
    queries = {"q1": "how does a jet engine make thrust"}
    return load_beir(str(write_beir(tmp_path / "e", corpus, queries,
                                    {"train": [("q1", "p1", 1)], "test": [("q1", "p2", 1)]})))


def _teacher(ds):
    ids = sorted(ds.corpus)
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(ids), 8))
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    q = emb[ids.index("p1")] + 0.1 * rng.normal(size=8)
    return emb, {d: i for i, d in enumerate(ids)}, {"q1": q / np.linalg.norm(q)}


def test_judged_positives_cover_every_split(engine_beir):
    assert judged_positives(engine_beir)["q1"] == {"p1", "p2"}


def test_bm25_negatives_never_include_a_judged_positive(engine_beir):
    ds = engine_beir
    pairs = gold_pairs(ds, ds.qrels["train"])
    teacher, index, q_emb = _teacher(ds)
    cfg = NegativesConfig(sources=("bm25",), per_pair=10, range_max=10, relative_margin=None)
    rows, stats = mine(ds, pairs, judged_positives(ds), cfg, None, teacher, index, q_emb,
                       bm25=BM25Retriever(ds.corpus, BM25Config()))
    negatives = rows[0]["negative_ids"]
    assert "p2" not in negatives and "p1" not in negatives
    assert "n1" in negatives
    assert stats.removed_judged["bm25"] == 2  # p1 and p2 were retrieved and dropped


def test_margin_is_relative_to_the_lowest_judged_positive(engine_beir):
    ds = engine_beir
    ids = sorted(ds.corpus)

    def unit(cos, axis):  # a unit vector at cosine `cos` to the query (axis 0)
        v = np.zeros(4)
        v[0], v[axis] = cos, np.sqrt(1 - cos**2)
        return v

    vectors = {"p1": unit(1.0, 1), "p2": unit(0.6, 1), "n1": unit(0.59, 2), "n2": unit(0.3, 3),
               "n3": unit(0.0, 3)}
    teacher = np.array([vectors[d] for d in ids])
    index = {d: i for i, d in enumerate(ids)}
    q_emb = {"q1": unit(1.0, 1)}
    cfg = NegativesConfig(sources=("bm25",), per_pair=10, range_max=10, relative_margin=0.05)
    rows, stats = mine(ds, gold_pairs(ds, ds.qrels["train"]), judged_positives(ds), cfg, None,
                       teacher, index, q_emb, bm25=BM25Retriever(ds.corpus, BM25Config()))
    # lowest positive p2 scores 0.6: the bar is 0.6 - 0.05 * 0.6 = 0.57. n1 (0.59) is too close,
    # n2 (0.3) is kept; n3 shares no term with the query, so BM25 never offers it.
    assert rows[0]["negative_ids"] == ["n2"]
    assert stats.removed_margin["bm25"] == 1 and stats.candidates["bm25"] == 2


def test_manual_curation(engine_beir, tmp_path):
    ds = engine_beir
    path = tmp_path / "cur.tsv"
    path.write_text("query-id\tdoc-id\taction\nq1\tn3\tinclude\nq1\tn1\texclude\nq1\tp2\tinclude\n")
    include, exclude = read_curation(path, ds)
    assert include == {"q1": {"n3", "p2"}} and exclude == {"q1": {"n1"}}
    teacher, index, q_emb = _teacher(ds)
    cfg = NegativesConfig(sources=("bm25",), per_pair=3, range_max=10, relative_margin=None, manual=str(path))
    rows, stats = mine(ds, gold_pairs(ds, ds.qrels["train"]), judged_positives(ds), cfg, None,
                       teacher, index, q_emb, bm25=BM25Retriever(ds.corpus, BM25Config()))
    negatives = rows[0]["negative_ids"]
    assert negatives[0] == "n3"  # included by hand, first
    assert "n1" not in negatives and "p2" not in negatives  # excluded; a judged positive never
    assert stats.removed_manual == 1 and stats.added_manual == 1
    path.write_text("q1\tn3\tmaybe\n")
    with pytest.raises(CurationError, match=r"cur\.tsv:1: action must be include or exclude"):
        read_curation(path, ds)


def test_dense_miner_masks_all_positives(engine_beir, tmp_path):
    from embedtune.models import load_model

    ds = engine_beir
    model = load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    cfg = NegativesConfig(sources=("dense",), per_pair=5, range_max=5, relative_margin=None)
    rows, stats = mine(ds, gold_pairs(ds, ds.qrels["train"]), judged_positives(ds), cfg, model,
                       None, None, None, cache_root=tmp_path)
    negatives = rows[0]["negative_ids"]
    assert negatives and not {"p1", "p2"} & set(negatives)
    assert list((tmp_path / "mining").iterdir())  # sentence-transformers' cache_folder was used


def test_the_miner_reuses_the_generic_index_instead_of_encoding_the_corpus_again(engine_beir, tmp_path):
    from embedtune.config import ModelConfig
    from embedtune.models import encode_queries, load_model
    from embedtune.retrieval import DenseIndex

    ds = engine_beir
    model = load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    cfg = NegativesConfig(sources=("dense",), per_pair=3, range_max=5, relative_margin=None)
    pairs = gold_pairs(ds, ds.qrels["train"])
    index = DenseIndex.build(model, ds.corpus, ModelConfig(precision="fp32"), cache=False)
    q_emb = {"q1": encode_queries(model, [ds.queries["q1"]])[0]}
    plain, plain_stats = mine(ds, pairs, judged_positives(ds), cfg, model, None, None, None,
                              cache_root=tmp_path / "plain", precision="fp32")
    seeded, seeded_stats = mine(ds, pairs, judged_positives(ds), cfg, model, index.embeddings,
                                {d: i for i, d in enumerate(index.doc_ids)}, q_emb,
                                cache_root=tmp_path / "seeded", precision="fp32")
    assert "[Cache] Loaded corpus embeddings" in seeded_stats.st_report  # nothing encoded again
    assert "[Cache] Loaded query embeddings" in seeded_stats.st_report
    assert "[Cache] Loaded" not in plain_stats.st_report  # encoded, then saved
    assert [r["negative_ids"] for r in seeded] == [r["negative_ids"] for r in plain]
