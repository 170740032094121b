"""embedtune bench: the quality corpus it samples, a cheap section end to end, the page."""

import json

from embedtune.benchmarks import quality_corpus, run_bench


def test_the_quality_corpus_keeps_every_judged_document_of_the_queries_it_keeps():
    corpus = {f"d{i}": {"title": "", "text": f"doc {i}"} for i in range(100)}
    qrels = {f"q{i}": {f"d{i}": 1, f"d{i + 50}": 1} for i in range(40)}
    assert quality_corpus(corpus, qrels, None) == (corpus, qrels)
    small, kept = quality_corpus(corpus, qrels, 50)
    assert len(small) == 50 and 0 < len(kept) < len(qrels)
    assert all(d in small for rel in kept.values() for d in rel)  # no query loses a relevant document
    assert sum(len(rel) for rel in kept.values()) <= 0.6 * 50
    assert quality_corpus(corpus, qrels, 50) == (small, kept)  # seeded


def test_the_bm25_section_measures_against_bm25s_and_merges_into_bench_json(tmp_path):
    (tmp_path / "bench.json").write_text(json.dumps({"machine": None, "dense_search": ["kept"]}))
    doc = run_bench(tmp_path, sections=["bm25"])
    assert doc["bm25"]["peer"].startswith("bm25s") and doc["bm25"]["queries_per_second"] > 0
    assert doc["bm25"]["ratio"] == doc["bm25"]["ratio"]  # not NaN
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["bm25"] == doc["bm25"] and "bm25" in saved["measured"] and saved["machine"]["cores"] >= 1
    assert saved["dense_search"] == ["kept"]  # sections measured earlier stay
