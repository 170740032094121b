"""The recipe search chooses on dev scores only and records every trial."""

import json
from pathlib import Path

import yaml

from embedtune import search
from embedtune.layout import RunLayout
from embedtune.keys import stage_keys
from embedtune.config import load_config


def test_the_search_keeps_the_best_dev_trial_and_never_evaluates_on_test(tmp_path, tiny_beir, monkeypatch):
    params = tmp_path / "tiny.yaml"
    params.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    calls = []

    def fake_run(params_file, stages, overrides, run_dir, progress, rerun_named):
        assert "evaluate" not in stages  # test queries are never looked at
        calls.append(overrides)
        score = 0.5 - abs(overrides["train.learning_rate"] - 3e-5) * 1000 + (overrides["train.loss"] == "gist") * 0.1
        RunLayout(Path(run_dir)).model_dir.mkdir(parents=True)
        RunLayout(Path(run_dir)).version.write_text(json.dumps({"keep_base": {"best": score}}))
        return run_dir

    monkeypatch.setattr(search, "run_experiment", fake_run)
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
