"""One statistics module: the same comparison gets the same p-value in metrics.json, the report's
markers and the sweep page."""

import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ttest_rel

from embedtune import stats
from embedtune.evaluate import evaluate_runs
from embedtune.report import quality_table
from embedtune.sweep import load_comparison


def test_student_is_scipys_paired_t_test_and_identical_inputs_give_one():
    a, b = np.array([0.5, 0.7, 0.9, 0.2]), np.array([0.4, 0.6, 0.9, 0.1])
    delta, p = stats.paired_test(a, b)
    assert delta == pytest.approx(0.075) and p == pytest.approx(ttest_rel(a, b).pvalue)
    assert stats.paired_test(a, a) == (0.0, 1.0)


def test_fisher_is_seeded_and_agrees_with_the_t_test_on_a_clear_difference():
    rng = np.random.default_rng(0)
    a = rng.random(300)
    b = np.clip(a - 0.1 + rng.normal(0, 0.05, 300), 0, 1)
    assert stats.paired_test(a, b, "fisher", seed=3) == stats.paired_test(a, b, "fisher", seed=3)
    assert stats.paired_test(a, b, "fisher")[1] < 1e-3 and stats.paired_test(a, b)[1] < 1e-3
    noise = a + rng.normal(0, 0.001, 300)
    assert stats.paired_test(noise, a, "fisher")[1] > 0.01
    with pytest.raises(ValueError, match="unknown stat_test"):
        stats.paired_test(a, b, "wilcoxon")


def test_holm():
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert stats.holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert stats.holm([]) == []


@pytest.mark.parametrize("test", ["student", "fisher"])
def test_metrics_json_the_report_markers_and_the_sweep_page_give_the_same_p_value(tmp_path, test):
    rng = np.random.default_rng(1)
    qrels = {f"q{i}": {f"d{i}": 1} for i in range(40)}

    def run(hit_rate):  # the relevant document at rank 1 with this probability, else at rank 3
        return {q: {f"x{q}": 2.0, f"d{q[1:]}": 1.0 + (rng.random() < hit_rate) * 2.0, f"y{q}": 1.5}
                for q in qrels}

    scores = evaluate_runs(qrels, {"generic": run(0.3), "finetuned": run(0.8)}, ["ndcg@10", "recall@10"])
    # metrics.json (04_evaluate)
    in_metrics = stats.comparisons(scores.per_query, ["finetuned_vs_generic"], ["ndcg@10"], test, 42)
    p_metrics = in_metrics["finetuned_vs_generic"]["ndcg@10"]["p_value"]
    # per_query.csv as 04_evaluate writes it and 05_report reads it back
    scores.per_query.to_csv(tmp_path / "per_query.csv")
    per_query = pd.read_csv(tmp_path / "per_query.csv", dtype={"query_id": str})
    p_report = stats.against(per_query, "ndcg@10", "generic", test, 42)["finetuned"][1]
    ci = stats.bootstrap_ci(per_query, ["ndcg@10"], samples=100)
    marked = quality_table(ci, per_query, ["ndcg@10"], max_p=p_metrics * 1.0001, test=test, seed=42)
    assert marked.loc["finetuned", "ndcg@10"].endswith("▲")  # the marker uses that same p
    # the sweep page: two points whose compared system holds the generic / fine-tuned scores
    sweep = tmp_path / "exp" / "s"
    entries = []
    for name, system in (("base", "generic"), ("tuned", "finetuned")):
        folder = sweep / name
        folder.mkdir(parents=True)
        rows = per_query[per_query["system"] == system].assign(system="finetuned")
        rows.to_csv(folder / "per_query.csv", index=False)
        (folder / "metrics.json").write_text(json.dumps({"systems": {}}))
        entries.append({"name": name, "overrides": {}, "values": {}, "folder": name, "status": "ok"})
    (sweep / "sweep.json").write_text(json.dumps({
        "sweep": "s", "experiment": "exp", "baseline": "base", "varied": [], "system": "finetuned",
        "bootstrap_samples": 100, "confidence": 0.95, "stat_test": test, "max_p": 0.05, "seed": 42,
        "points": entries}))
    sig = load_comparison(sweep).significance().set_index(["point", "metric"])
    p_sweep = sig.loc[("tuned", "ndcg@10"), "p_value"]
    assert p_metrics == p_report == p_sweep
    assert 0 < p_metrics < 0.05
