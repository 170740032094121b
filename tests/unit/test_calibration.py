"""Calibration reads what was predicted before test and what test said."""

import json

import pandas as pd

from embedtune import calibration


def _notebook(path, table_text):
    cell = {"cell_type": "code", "source": ["result.dev_table().round(4)"], "metadata": {},
            "outputs": [{"output_type": "execute_result", "data": {"text/plain": [table_text]}}]}
    path.write_text(json.dumps({"cells": [cell]}))


def test_the_dev_gain_is_the_best_checkpoint_minus_step_0(tmp_path):
    _notebook(tmp_path / "03_train.ipynb", "      recall@10  ndcg@10\nstep                   \n"
                                            "0        0.8333   0.7095\n21       0.8991   0.7798\n42       0.9061   0.8020\n")
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"significance": {"finetuned_vs_generic": {"ndcg@10": {"delta": 0.05, "p_value": 0.001}}}}))
    row = calibration.row_for(tmp_path, "x", "study point")
    assert abs(row["dev_gain"] - (0.8020 - 0.7095)) < 1e-9 and row["pays"] is True


def test_agreement_counts_fine_tune_exactly_where_it_paid():
    table = pd.DataFrame([
        {"run": "a", "kind": "experiment", "pays": True, "flowchart_verdict": "fine-tune", "dev_gain": 0.1},
        {"run": "b", "kind": "experiment", "pays": False, "flowchart_verdict": "fine-tune", "dev_gain": -0.01},
        {"run": "c", "kind": "experiment", "pays": False, "flowchart_verdict": "skip", "dev_gain": 0.02},
    ])
    out = calibration.agreement(table)
    assert out.loc["flowchart verdict (experiments)", "agree"] == 2
    assert out.loc["dev gain > 0 (every run with a dev curve)", "agree"] == 2


def test_decides_verdict_now_is_read_from_the_calibration_run(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_RESULTS_DIR", str(tmp_path))
    run = tmp_path / "x"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps(
        {"significance": {"finetuned_vs_generic": {"ndcg@10": {"delta": 0.03, "p_value": 0.01}}}}))
    (run / "decision.json").write_text(json.dumps({"verdict": "skip"}))
    (tmp_path / "calibration" / "x").mkdir(parents=True)
    (tmp_path / "calibration" / "x" / "decision.json").write_text(json.dumps({"verdict": "fine-tune", "pilot": None}))
    row = calibration.row_for(run, "x", "experiment")
    assert row["flowchart_verdict"] == "skip" and row["decide_verdict"] == "fine-tune" and "pilot_verdict" not in row
    out = calibration.agreement(pd.DataFrame([row]))
    assert out.loc["00_decide's verdict now (the pilot where it ran, else the flowchart)", "agree"] == 1
    assert out.loc["flowchart verdict (experiments)", "agree"] == 0


def test_the_calibration_decide_run_uses_the_experiments_own_params_and_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_RESULTS_DIR", str(tmp_path))
    (tmp_path / "ict").mkdir()
    (tmp_path / "ict" / "manifest.json").write_text(json.dumps(
        {"params_file": "params/scifact-synthetic.yaml", "overrides": {"pairs.sources": ["ict"], "experiment": "ict"}}))
    params_file, overrides = calibration.decide_inputs("ict")
    assert params_file.name == "scifact-synthetic.yaml" and params_file.is_absolute()
    assert overrides == {"pairs.sources": ["ict"], "experiment": "ict"}
    params_file, overrides = calibration.decide_inputs("scifact")
    assert params_file.name == "scifact.yaml" and overrides == {}


def test_the_guard_agrees_when_it_ships_exactly_the_models_that_paid(tmp_path):
    rows = []
    for name, kept, delta, p in (("shipped-paid", True, 0.03, 0.01), ("kept-base-paid", False, 0.03, 0.01),
                                 ("kept-base-no-gain", False, 0.01, 0.4), ("no-guard", None, 0.03, 0.01)):
        run = tmp_path / name
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps(
            {"significance": {"finetuned_vs_generic": {"ndcg@10": {"delta": delta, "p_value": p}}}}))
        (run / "manifest.json").write_text(json.dumps({"train": {} if kept is None else {"kept": kept}}))
        rows.append(calibration.row_for(run, name, "study point"))
    assert "guard_shipped" not in rows[3]
    out = calibration.agreement(pd.DataFrame(rows))
    assert out.loc["keep-base guard shipped the model (runs since the guard)", ["runs", "agree"]].tolist() == [3, 2]
