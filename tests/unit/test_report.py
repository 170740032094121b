"""The report's statistics on hand-made per-query tables."""

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from embedtune import report as rp
from embedtune import stats


def per_query(values: dict[str, list[float]], metric: str = "ndcg@10") -> pd.DataFrame:
    rows = [{"system": s, "query_id": f"q{i}", metric: v} for s, vals in values.items() for i, v in enumerate(vals)]
    return pd.DataFrame(rows)


def test_bootstrap_interval_contains_the_mean_and_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    small = per_query({"a": list(rng.random(30))})
    large = per_query({"a": list(rng.random(3000))})
    ci_small = stats.bootstrap_ci(small, ["ndcg@10"], samples=500).loc[("a", "ndcg@10")]
    ci_large = stats.bootstrap_ci(large, ["ndcg@10"], samples=500).loc[("a", "ndcg@10")]
    assert ci_small["low"] < ci_small["mean"] < ci_small["high"]
    assert (ci_large["high"] - ci_large["low"]) < (ci_small["high"] - ci_small["low"]) / 5


def test_constant_system_gets_a_zero_width_interval():
    ci = stats.bootstrap_ci(per_query({"a": [1.0] * 10}), ["ndcg@10"]).loc[("a", "ndcg@10")]
    assert ci["low"] == ci["mean"] == ci["high"] == 1.0


def test_markers_only_for_significant_differences():
    rng = np.random.default_rng(1)
    base = rng.random(200)
    frame = per_query({"generic": list(base), "better": list(np.clip(base + 0.2, 0, 1)),
                       "worse": list(np.clip(base - 0.2, 0, 1)),
                       "noise": list(np.clip(base + rng.normal(0, 0.01, 200), 0, 1))})
    ci = stats.bootstrap_ci(frame, ["ndcg@10"], samples=200)
    table = rp.quality_table(ci, frame, ["ndcg@10"])
    assert table.loc["better", "ndcg@10"].endswith("▲")
    assert table.loc["worse", "ndcg@10"].endswith("▼")
    assert not table.loc["noise", "ndcg@10"].endswith(("▲", "▼"))
    assert not table.loc["generic", "ndcg@10"].endswith(("▲", "▼"))
    fisher = stats.against(frame, "ndcg@10", "generic", test="fisher")
    assert fisher["better"][1] < 0.01 and fisher["noise"][1] > 0.05


def test_win_loss_counts():
    frame = per_query({"generic": [0.5, 0.5, 0.5, 0.0], "finetuned": [1.0, 0.5, 0.2, 1.0]})
    delta = rp.win_loss(frame, "finetuned", "generic")
    assert (delta.attrs["wins"], delta.attrs["losses"], delta.attrs["ties"]) == (2, 1, 1)
    assert list(delta.values) == sorted(delta.values)


def test_cost_prices_core_hours_at_the_params_rates(tmp_path):
    manifest = {"stages": {"train": {"seconds": 3600, "status": "ok"},
                           "evaluate": {"seconds": 1800, "status": "cached"}},
                "machine": {"torch_threads": 2}}
    metrics = {"systems": {"generic": {"ndcg@10": 0.5}, "finetuned": {"ndcg@10": 0.6}},
               "cost": {"device": "cpu", "index_bytes": 100, "embedding_dim": 4}}
    prices = SimpleNamespace(cpu_hour_price=0.1, gpu_hour_price=3.0)
    frame, cost = rp.cost_table(manifest, metrics, {"train_seconds": 3000}, prices, tmp_path, {})
    assert cost["cpu_core_hours"] == pytest.approx(3.0) and cost["gpu_hours"] == 0
    assert cost["price_usd"] == pytest.approx(0.3)
    assert cost["ndcg@10_gain_finetuned_vs_generic"] == pytest.approx(0.1)
    assert list(frame.index) == ["train", "evaluate"]  # DESIGN order


def test_latency_percentiles():
    out = rp.latency(lambda text: sum(range(1000)), ["a"] * 20)
    assert out["queries"] == 20 and 0 < out["p50_ms"] <= out["p95_ms"]


def test_results_index_lists_every_report(tmp_path):
    summary = {"experiment": "exp", "test_queries": 10, "verdict": "skip",
               "systems": {"generic": {"ndcg@10": {"mean": 0.5, "ci": [0.4, 0.6]},
                                       "recall@10": {"mean": 0.7, "ci": [0.6, 0.8]}}},
               "finetuned_vs_generic": {"ndcg@10": {"delta": 0.01, "p_value": 0.5}}}
    (tmp_path / "exp").mkdir()
    (tmp_path / "exp" / "report.json").write_text(json.dumps(summary))
    text = rp.results_index(tmp_path)
    assert "| exp | 10 | skip | 0.500 [0.400, 0.600] (0.700) | - | - | +0.010, p = 0.5 | [report](exp/report.html) |" in text


def test_compare_runs_pairs_the_shared_queries_and_counts_the_rest():
    rng = np.random.default_rng(2)
    base = rng.random(100)
    here = per_query({"finetuned": list(np.clip(base + 0.1, 0, 1)), "bm25": list(base)})
    there = per_query({"finetuned": list(base), "bm25": list(base)})
    there = there[there["query_id"] != "q0"]  # one query only here
    table = rp.compare_runs(here, there)
    assert table.loc["finetuned", "queries"] == 99
    assert table.loc["finetuned", "only_here"] == 1 and table.loc["finetuned", "only_there"] == 0
    assert table.loc["finetuned", "delta"] > 0.05 and table.loc["finetuned", "p_value"] < 0.001
    assert table.loc["bm25", "delta"] == 0 and table.loc["bm25", "p_value"] == 1.0


def test_rank_agreement():
    same = rp.rank_agreement({"a": 0.5, "b": 0.4, "c": 0.1}, {"a": 0.9, "b": 0.3, "c": 0.2})
    assert same["same_order"] and same["kendall_tau"] == pytest.approx(1.0)
    swapped = rp.rank_agreement({"a": 0.5, "b": 0.4, "c": 0.1}, {"a": 0.1, "b": 0.4, "c": 0.5, "d": 1})
    assert swapped["systems"] == 3 and not swapped["same_best"]
    assert swapped["kendall_tau"] == pytest.approx(-1.0)


def test_the_headline_says_when_the_fine_tuned_model_was_not_kept():
    doc = {"systems": {"generic": {"recall@10": 0.5, "ndcg@10": 0.4}, "finetuned": {"recall@10": 0.52, "ndcg@10": 0.41}},
           "dataset": {"n_queries": 30}, "significance": {},
           "finetuned_model": {"kept": False, "keep_base": {"reason": "no checkpoint beats the base model"}}}
    text = rp.headline_sentence(doc)
    assert "not kept" in text and "no checkpoint beats the base model" in text
    doc["finetuned_model"]["kept"] = True
    assert "not kept" not in rp.headline_sentence(doc)
