import pytest

from embedtune.config import HybridConfig
from embedtune.fusion import choose_convex_weight, fuse_runs

BM25 = {"q": {"d1": 10.0, "d2": 5.0, "d3": 0.0}}
DENSE = {"q": {"d3": 0.9, "d1": 0.5, "d2": 0.1}}


def test_rrf_by_hand():
    fused = fuse_runs(BM25, DENSE, HybridConfig(method="rrf", rrf_k=60))["q"]
    assert fused["d1"] == pytest.approx(1 / (60 + 1) + 1 / (60 + 2))
    assert fused["d3"] == pytest.approx(1 / (60 + 3) + 1 / (60 + 1))
    assert fused["d2"] == pytest.approx(1 / (60 + 2) + 1 / (60 + 3))
    assert list(fused) == ["d1", "d3", "d2"]


def test_convex_min_max_by_hand():
    fused = fuse_runs(BM25, DENSE, HybridConfig(method="convex", norm="min-max"), bm25_weight=0.3)["q"]
    # min-max per query: bm25 -> d1 1, d2 .5, d3 0; dense -> d3 1, d1 .5, d2 0
    assert fused["d1"] == pytest.approx(0.3 * 1 + 0.7 * 0.5)
    assert fused["d2"] == pytest.approx(0.3 * 0.5 + 0.7 * 0)
    assert fused["d3"] == pytest.approx(0.3 * 0 + 0.7 * 1)
    assert list(fused) == ["d3", "d1", "d2"]


def test_convex_needs_a_weight():
    with pytest.raises(ValueError, match="bm25_weight"):
        fuse_runs(BM25, DENSE, HybridConfig(method="convex"))


def test_query_missing_from_one_run_is_kept():
    fused = fuse_runs({"q": {"d1": 1.0}}, {"q": {"d2": 1.0}, "p": {"d1": 1.0}}, HybridConfig(method="rrf"))
    assert fused["p"] == {"d1": pytest.approx(1 / 61)}


def test_weight_is_chosen_on_dev_only():
    # On dev, only BM25 finds the relevant doc: the best weight is all-BM25.
    dev = {"q": {"d1": 1}}
    w, trials = choose_convex_weight(dev, BM25, {"q": {"d3": 0.9, "d2": 0.5, "d1": 0.1}},
                                     HybridConfig(weight_step=0.25))
    assert w in (0.75, 1.0)  # both rank d1 first; with w <= 0.5 it is not
    assert set(trials) == {"0.00", "0.25", "0.50", "0.75", "1.00"}
    with pytest.raises(ValueError, match="no dev queries"):
        choose_convex_weight({}, BM25, DENSE, HybridConfig())
