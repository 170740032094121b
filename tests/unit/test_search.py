"""The recipe search chooses on dev scores only and records every trial."""

import json
from pathlib import Path

import pytest
import yaml

from embedtune import search
from embedtune.layout import RunLayout
from embedtune.keys import stage_keys
from embedtune.config import load_config


def _fake_run(calls, gist_bonus=0.0):
    """A trainer stand-in: records each trial's overrides and scores it by its learning rate (and loss)."""
    def fake_run(params_file, stages, overrides, run_dir, progress, rerun_named):
        assert "evaluate" not in stages  # test queries are never looked at
        calls.append(overrides)
        score = 0.5 - abs(overrides["train.learning_rate"] - 3e-5) * 1000
        score += gist_bonus * (overrides["train.loss"] == "gist")
        RunLayout(Path(run_dir)).model_dir.mkdir(parents=True, exist_ok=True)
        RunLayout(Path(run_dir)).version.write_text(json.dumps({"keep_base": {"best": score}}))
        return run_dir
    return fake_run


def test_the_search_keeps_the_best_dev_trial_and_never_evaluates_on_test(tmp_path, tiny_beir, monkeypatch):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    calls = []
    monkeypatch.setattr(search, "run_experiment", _fake_run(calls, gist_bonus=0.1))
    doc = search.run_search(params, {"train.search.trials": 5}, tmp_path / "search")
    assert len(doc["trials"]) == len(calls) == 5 and all(t["status"] == "ok" for t in doc["trials"])
    best = max(doc["trials"], key=lambda t: t["dev_ndcg@10"])
    assert doc["best"] == best and "test queries never" in doc["chosen_on"]
    assert yaml.safe_load((tmp_path / "search" / "best.yaml").read_text()) == best["overrides"]
    for trial in doc["trials"]:
        o = trial["overrides"]
        assert 1e-5 <= o["train.learning_rate"] <= 1e-4 and o["train.loss"] in ("mnrl", "cached_mnrl", "gist")
        assert o["pairs.max_pairs_per_query"] in (None, 3) and o["negatives.relative_margin"] in (None, 0.05)


def test_search_settings_change_no_stage_key(tmp_path, tiny_beir):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    assert stage_keys(load_config(params)) == stage_keys(load_config(params, {"train.search.trials": 2}))


def test_a_search_run_again_resumes_without_retraining_a_trial(tmp_path, tiny_beir, monkeypatch):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    calls = []
    monkeypatch.setattr(search, "run_experiment", _fake_run(calls))
    first = search.run_search(params, {"train.search.trials": 3}, tmp_path / "search")
    assert len(calls) == 3
    resumed = search.run_search(params, {"train.search.trials": 5}, tmp_path / "search")
    assert len(calls) == 5  # only the two new trials trained
    assert resumed["trials"][:3] == first["trials"]
    assert [t["trial"] for t in resumed["trials"]] == [f"trial-{i:02d}" for i in range(5)]
    rates = [t["overrides"]["train.learning_rate"] for t in resumed["trials"]]
    assert len(set(rates)) == 5  # the resumed sampler does not propose the earlier draws again
    assert resumed["best"] == max(resumed["trials"], key=lambda t: t["dev_ndcg@10"])
    assert resumed["seconds"] >= first["seconds"]
    again = search.run_search(params, {"train.search.trials": 5}, tmp_path / "search")
    assert len(calls) == 5 and again["trials"] == resumed["trials"]  # nothing left to run


def test_resuming_under_other_settings_is_refused_and_leaves_the_search_alone(tmp_path, tiny_beir, monkeypatch):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    calls = []
    monkeypatch.setattr(search, "run_experiment", _fake_run(calls))
    search.run_search(params, {"train.search.trials": 2}, tmp_path / "search")
    before = (tmp_path / "search" / "search.json").read_text()
    with pytest.raises(search.SearchMismatch, match="other settings"):
        search.run_search(params, {"train.search.trials": 4, "train.batch_size": 8}, tmp_path / "search")
    with pytest.raises(search.SearchMismatch, match="--out"):
        search.run_search(params, {"train.search.trials": 4, "train.search.losses": ["mnrl"]},
                          tmp_path / "search")
    assert len(calls) == 2 and (tmp_path / "search" / "search.json").read_text() == before


def test_the_cli_says_a_refused_resume_in_one_line(tmp_path, tiny_beir, monkeypatch, capsys):
    from embedtune.cli import main

    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    monkeypatch.setattr(search, "run_experiment", _fake_run([]))
    out = str(tmp_path / "search")
    assert main(["search", str(params), "--set", "train.search.trials=1", "--out", out]) == 0
    capsys.readouterr()
    assert main(["search", str(params), "--set", "train.search.trials=2", "--set", "seed=7", "--out", out]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embedtune: error: ") and "search.json" in err[0]


def test_the_sampled_values_match_the_declared_space(tmp_path, tiny_beir):
    import optuna

    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    space = load_config(params).train.search
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    search.suggest(trial, space)
    assert trial.distributions == search.distributions(space)
