"""Runs 04_evaluate through papermill on the smoke slice of scifact, and checks its outputs."""

import json

import pytest

from embedtune.config import ConfigError
from embedtune.runner import run_experiment
from tests.conftest import ROOT

CONTRACT_SYSTEMS = {"bm25", "generic", "hybrid_generic"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from tests.conftest import shared_datasets

    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR (CI points it at ../shared/datasets)")
    run_dir = tmp_path_factory.mktemp("smoke")
    return run_experiment(ROOT / "params" / "smoke.yaml", stages=["evaluate"], run_dir=run_dir,
                          progress=False)


def test_metrics_json_follows_the_contract(smoke_run):
    doc = json.loads((smoke_run / "metrics.json").read_text())
    assert list(doc)[:7] == ["experiment", "dataset", "base_model", "systems", "significance",
                             "ood", "cost"]
    assert doc["experiment"] == "smoke"
    assert {"name", "eval_split", "n_queries", "n_docs", "fingerprint"} <= set(doc["dataset"])
    assert doc["dataset"]["n_queries"] == 20 and doc["dataset"]["sliced"] is True
    assert doc["dataset"]["fingerprint"].startswith("sha256:")
    assert set(doc["systems"]) == CONTRACT_SYSTEMS
    for system, values in doc["systems"].items():
        assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"} <= set(values)
        assert all(0.0 <= v <= 1.0 for v in values.values()), system
    assert doc["systems"]["generic"]["ndcg@10"] > 0.3  # the model works on the slice
    p = doc["significance"]["hybrid_generic_vs_generic"]["ndcg@10"]["p_value"]
    assert 0.0 <= p <= 1.0
    assert 0.0 <= doc["hybrid"]["bm25_weight"] <= 1.0
    assert doc["cost"]["device"] == "cpu"


def test_run_folder_explains_itself(smoke_run):
    for name in ("params.yaml", "manifest.json", "04_evaluate.ipynb", "04_evaluate.html",
                 "per_query.csv", "runs/generic.trec", "runs/bm25.trec"):
        assert (smoke_run / name).is_file(), name
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["stages"]["evaluate"]["status"] == "ok"
    assert manifest["stages"]["evaluate"]["seconds"] > 0
    assert manifest["model"]["fingerprint"].startswith("sha256:")
    assert manifest["dataset"]["fingerprint"].startswith("sha256:")
    assert "commit" in manifest["git"] and "torch" in manifest["packages"]
    notebook = json.loads((smoke_run / "04_evaluate.ipynb").read_text())
    injected = [c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and str(smoke_run) in "".join(injected[0]["source"])
    assert not list(smoke_run.glob(".*running*"))  # nothing half-written


def test_second_run_encodes_nothing(smoke_run):
    from embedtune.runner import run_experiment

    run_experiment(ROOT / "params" / "smoke.yaml", stages=["evaluate"], run_dir=smoke_run, progress=False)
    manifest = json.loads((smoke_run / "manifest.json").read_text())
    assert manifest["evaluate"]["timings"]["corpus_encoded_now"] is False


def test_bad_override_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown key model.batchsize"):
        run_experiment(ROOT / "params" / "smoke.yaml", overrides={"model.batchsize": 3}, run_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'evaluat'"):
        run_experiment(ROOT / "params" / "smoke.yaml", stages=["evaluat"], run_dir=tmp_path)
