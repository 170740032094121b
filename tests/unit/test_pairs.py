import numpy as np

from embedtune.data import load_beir
from embedtune.pairs import gold_pairs, leakage_guard, normalize_query


def test_normalize_query():
    assert normalize_query("  Café:  does BM25   work? ") == "cafe does bm25 work"


def test_exact_duplicates_by_text_and_by_id():
    train = {"t1": "Does BM25 work?", "t2": "does bm25 work", "t3": "something else", "x9": "other"}
    test = {"x1": "does BM25 work", "x9": "unrelated"}
    report = leakage_guard(train, test)
    assert report.exact == {"t1": "x1", "t2": "x1", "x9": "x9"}
    assert report.removed == {"t1", "t2", "x9"} and report.near == {}


def test_near_duplicates_by_cosine_threshold():
    vectors = {"a": [1.0, 0.0], "b": [0.96, 0.28], "c": [0.0, 1.0], "t": [1.0, 0.0]}

    def embed(texts):
        return np.array([vectors[t] for t in texts])

    report = leakage_guard({"q1": "b", "q2": "c"}, {"x": "t"}, embed=embed, threshold=0.95)
    assert report.near == {"q1": ("x", 0.96)}
    assert leakage_guard({"q1": "b"}, {"x": "t"}, embed=embed, threshold=0.97).near == {}
    assert leakage_guard({"q1": "b"}, {"x": "t"}, embed=None).summary()["near_duplicates"] == 0


def test_gold_pairs_respect_min_score(tiny_beir):
    ds = load_beir(str(tiny_beir))
    rows = gold_pairs(ds, ds.qrels["test"], min_score=2)
    assert [(r["query_id"], r["doc_id"]) for r in rows] == [("q2", "d4")]
    assert rows[0]["positive"].startswith("Jet engines A jet engine")


def test_cap_per_query_is_seeded_and_keeps_small_queries_whole():
    from embedtune.pairs import cap_per_query

    rows = [{"query_id": "a", "doc_id": str(i)} for i in range(10)] + [{"query_id": "b", "doc_id": "x"}]
    kept = cap_per_query(rows, 3, seed=1)
    assert [r["query_id"] for r in kept].count("a") == 3
    assert {"query_id": "b", "doc_id": "x"} in kept
    assert kept == cap_per_query(rows, 3, seed=1)
    assert {r["doc_id"] for r in kept if r["query_id"] == "a"} <= {str(i) for i in range(10)}


def test_capped_caps_per_query_then_samples_the_total_in_order():
    from embedtune.pairs import capped

    rows = [{"query_id": q, "doc_id": str(i)} for q in "abc" for i in range(4)]
    assert capped(rows, None, None, seed=0) == rows
    per_query = capped(rows, 2, None, seed=0)
    assert [r["query_id"] for r in per_query] == ["a", "a", "b", "b", "c", "c"]
    both = capped(rows, 2, 4, seed=0)
    assert len(both) == 4 and both == sorted(both, key=lambda r: (r["query_id"], r["doc_id"]))
    assert all(r in per_query for r in both) and both == capped(rows, 2, 4, seed=0)
