import math

import pytest

from embedtune.evaluate import evaluate_runs
from embedtune.stats import comparisons

QRELS = {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 2}, "q3": {"d5": 1}}
RUN = {
    "q1": {"d2": 0.9, "d1": 0.8, "d5": 0.1},  # relevant at rank 2
    "q2": {"d4": 0.9, "d2": 0.5, "d3": 0.4},  # grade 2 at rank 1, grade 1 at rank 3
    # q3 retrieved nothing: it must count as 0, not vanish from the average
}
METRICS = ["ndcg@10", "recall@1", "recall@5", "mrr@10", "map@100", "hit_rate@10"]


def test_metrics_by_hand():
    scores = evaluate_runs(QRELS, {"sys": RUN}, METRICS)
    per_q = scores.per_query.loc["sys"]
    ndcg_q1 = (1 / math.log2(3)) / 1
    ndcg_q2 = (2 / math.log2(2) + 1 / math.log2(4)) / (2 / math.log2(2) + 1 / math.log2(3))
    assert per_q.loc["q1", "ndcg@10"] == pytest.approx(ndcg_q1)
    assert per_q.loc["q2", "ndcg@10"] == pytest.approx(ndcg_q2)
    assert per_q.loc["q3", "ndcg@10"] == 0.0
    assert scores.n_queries == 3
    mean = scores.mean["sys"]
    assert mean["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 3)
    assert mean["recall@1"] == pytest.approx((0 + 0.5 + 0) / 3)
    assert mean["recall@5"] == pytest.approx((1 + 1 + 0) / 3)
    assert mean["mrr@10"] == pytest.approx((0.5 + 1 + 0) / 3)
    assert mean["map@100"] == pytest.approx((0.5 + (1 + 2 / 3) / 2 + 0) / 3)
    assert mean["hit_rate@10"] == pytest.approx(2 / 3)


def test_cutoff_applies():
    run = {"q1": {f"x{i}": 1 - i / 100 for i in range(10)} | {"d1": 0.001}}
    scores = evaluate_runs({"q1": {"d1": 1}}, {"s": run}, ["recall@10", "recall@20", "mrr@10"])
    assert scores.mean["s"] == {"recall@10": 0.0, "recall@20": 1.0, "mrr@10": 0.0}


def test_paired_significance_delta_and_identical_runs():
    better = {"q1": {"d1": 1.0}, "q2": {"d4": 1.0, "d3": 0.9}, "q3": {"d5": 1.0}}
    scores = evaluate_runs(QRELS, {"a": better, "b": RUN, "c": RUN}, ["ndcg@10"])
    sig = comparisons(scores.per_query, ["a_vs_b", "b_vs_c", "a_vs_missing"], ["ndcg@10"])
    assert set(sig) == {"a_vs_b", "b_vs_c"}
    expected = scores.mean["a"]["ndcg@10"] - scores.mean["b"]["ndcg@10"]
    assert sig["a_vs_b"]["ndcg@10"]["delta"] == pytest.approx(expected)
    assert 0 < sig["a_vs_b"]["ndcg@10"]["p_value"] < 1
    assert sig["b_vs_c"]["ndcg@10"] == {"delta": 0.0, "p_value": 1.0}
