"""Runs every stage notebook through papermill on the smoke slice of scifact, and checks outputs."""

import json
from pathlib import Path

import pytest

from embedtune.config import ConfigError
from embedtune.runner import StageError, available_stages, run_experiment
from tests.conftest import ROOT

SMOKE = ROOT / "params" / "smoke.yaml"
SYSTEMS = {"bm25", "generic", "hybrid_generic", "finetuned", "hybrid_finetuned"}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    from tests.conftest import shared_datasets

    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR (CI points it at ../shared/datasets)")
    run_dir = tmp_path_factory.mktemp("smoke")
    return run_experiment(SMOKE, run_dir=run_dir, progress=False)


def _manifest(folder):
    return json.loads((folder / "manifest.json").read_text())


def _statuses(folder):
    return {s: v["status"] for s, v in _manifest(folder)["stages"].items()}


def _markers(folder):
    """Each stage's marker (key, upstream keys, when it finished): a stage that runs rewrites it."""
    return {p.stem: p.read_text() for p in sorted((folder / ".stages").glob("*.json"))}


def test_metrics_json_follows_the_contract(smoke_run):
    doc = json.loads((smoke_run / "metrics.json").read_text())
    assert list(doc)[:7] == ["experiment", "dataset", "base_model", "systems", "significance",
                             "ood", "cost"]
    assert doc["experiment"] == "smoke"
    assert {"name", "eval_split", "n_queries", "n_docs", "fingerprint"} <= set(doc["dataset"])
    assert doc["dataset"]["n_queries"] == 20 and doc["dataset"]["sliced"] is True
    assert doc["dataset"]["fingerprint"].startswith("sha256:")
    assert set(doc["systems"]) == SYSTEMS
    for system, values in doc["systems"].items():
        assert {"ndcg@10", "recall@10", "recall@100", "mrr@10", "map@100"} <= set(values)
        assert all(0.0 <= v <= 1.0 for v in values.values()), system
    assert doc["systems"]["generic"]["ndcg@10"] > 0.3  # the model works on the slice
    for name in ("finetuned_vs_generic", "hybrid_finetuned_vs_finetuned", "hybrid_finetuned_vs_bm25"):
        assert 0.0 <= doc["significance"][name]["ndcg@10"]["p_value"] <= 1.0
    assert 0.0 <= doc["hybrid"]["hybrid_generic"]["bm25_weight"] <= 1.0
    assert doc["cost"]["device"] == "cpu" and doc["cost"]["train_seconds"] > 0
    cuts = doc["truncated"]
    assert set(cuts) == {"384", "128"} and cuts["128"]["index_bytes"] == cuts["384"]["index_bytes"] // 3
    for system in ("generic", "finetuned"):  # a cut at the full dimension changes nothing
        assert cuts["384"][system]["ndcg@10"] == pytest.approx(doc["systems"][system]["ndcg@10"], abs=1e-6)
        assert 0.0 < cuts["128"][system]["ndcg@10"] <= 1.0
    assert 0.0 <= cuts["128"]["significance"]["finetuned_vs_generic"]["ndcg@10"]["p_value"] <= 1.0


def test_every_stage_left_its_outputs(smoke_run):
    for name in ("params.yaml", "manifest.json", "per_query.csv", "runs/finetuned.trec",
                 "pairs/train.jsonl", "pairs/dev_qrels.json", "pairs/leakage.json",
                 "negatives/train.jsonl", "negatives/stats.json",
                 "model/modules.json", "model/README.md", "model/training_log.json",
                 "model/version.json", "model/params.yaml", "dev_per_query.csv"):
        assert (smoke_run / name).is_file(), name
    for stem in ("00_decide", "01_pairs", "02_negatives", "03_train", "04_evaluate"):
        assert (smoke_run / f"{stem}.ipynb").is_file() and (smoke_run / f"{stem}.html").is_file()
    manifest = _manifest(smoke_run)
    assert _statuses(smoke_run) == {s: "ok" for s in available_stages()}
    decision = json.loads((smoke_run / "decision.json").read_text())
    assert decision["verdict"] in ("fine-tune", "skip", "hybrid") and decision["reasons"]
    assert decision["path"][-1] == decision["flowchart_verdict"]  # the verdict follows the pilot
    assert manifest["model"]["fingerprint"].startswith("sha256:")
    assert manifest["model"]["finetuned_fingerprint"] != manifest["model"]["fingerprint"]
    assert "commit" in manifest["git"] and "torch" in manifest["packages"]
    notebook = json.loads((smoke_run / "04_evaluate.ipynb").read_text())
    injected = [c for c in notebook["cells"] if "injected-parameters" in c["metadata"].get("tags", [])]
    assert injected and str(smoke_run) in "".join(injected[0]["source"])
    assert not list(smoke_run.glob(".*running*")) and not list(smoke_run.glob(".*.tmp"))
    pairs = [json.loads(line) for line in (smoke_run / "pairs" / "train.jsonl").open()]
    rows = [json.loads(line) for line in (smoke_run / "negatives" / "train.jsonl").open()]
    assert len(rows) == len(pairs) and sum(bool(r["negative_ids"]) for r in rows) > 0


def test_rerun_skips_fresh_stages_and_named_stage_encodes_nothing(smoke_run):
    before = _markers(smoke_run)
    files = {name: (smoke_run / name).read_bytes() for name in ("manifest.json", "params.yaml")}
    run_experiment(SMOKE, run_dir=smoke_run, progress=False)
    assert _markers(smoke_run) == before and set(before) == set(available_stages())
    assert {name: (smoke_run / name).read_bytes() for name in files} == files  # nothing finished: no writes
    assert all(v["seconds"] > 0 for v in _manifest(smoke_run)["stages"].values())  # what the outputs cost
    run_experiment(SMOKE, stages=["evaluate"], run_dir=smoke_run, progress=False)
    timings = _manifest(smoke_run)["evaluate"]["timings"]
    assert timings["corpus_encoded_now"] is False and timings["finetuned_corpus_encoded_now"] is False
    assert _manifest(smoke_run)["stages"]["evaluate"]["status"] == "ok"
    after = _markers(smoke_run)
    assert [s for s in after if after[s] != before[s]] == ["evaluate"]


@pytest.mark.slow  # 2-3 min; which stages a train.* change re-runs is unit-tested in tests/unit/test_keys.py
def test_changed_train_params_rerun_train_and_its_downstream_only(smoke_run):
    before = _markers(smoke_run)  # train.epochs: the pilot runs its own (decide.pilot_epochs)
    run_experiment(SMOKE, run_dir=smoke_run, progress=False, overrides={"train.epochs": 2})
    after = _markers(smoke_run)
    assert {s for s in after if after[s] != before[s]} == {"train", "evaluate", "report", "monitor"} & set(after)
    import yaml

    assert yaml.safe_load((smoke_run / "params.yaml").read_text())["train"]["epochs"] == 2


def test_failed_stage_leaves_nothing_half_written_and_reruns_cleanly(smoke_run, tmp_path):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(smoke_run, folder)
    shutil.rmtree(folder / "negatives")
    with pytest.raises(StageError, match="manual curation file not found"):
        run_experiment(SMOKE, run_dir=folder, progress=False,
                       overrides={"negatives.manual": str(tmp_path / "missing.tsv")})
    assert (folder / "02_negatives.failed.ipynb").is_file()
    assert not (folder / "negatives").exists()
    assert not (folder / ".stages" / "negatives.json").exists()
    assert _manifest(folder)["stages"]["negatives"]["status"] == "failed"
    run_experiment(SMOKE, stages=["negatives"], run_dir=folder, progress=False)
    assert (folder / "negatives" / "train.jsonl").is_file()
    assert not (folder / "02_negatives.failed.ipynb").exists()


def test_bad_override_fails_before_any_notebook_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown key model.batchsize"):
        run_experiment(SMOKE, overrides={"model.batchsize": 3}, run_dir=tmp_path)
    assert not any(tmp_path.iterdir())


def test_unknown_stage_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="unknown stage 'evaluat'"):
        run_experiment(SMOKE, stages=["evaluat"], run_dir=tmp_path)


def test_report_is_a_page_to_share(smoke_run):
    import re

    page = (smoke_run / "report.html").read_text()
    assert "does fine-tuning pay off?" in page
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', page)) >= 8  # every figure
    assert "report.run(ctx)" not in page and "import warnings" not in page  # no code
    for debris in ("Warning", "warnings.warn", "it/s]", "it/s\\/", "%|", "Traceback", "widget-state"):
        assert debris not in page, debris
    summary = json.loads((smoke_run / "report.json").read_text())
    assert summary["verdict"] == json.loads((smoke_run / "decision.json").read_text())["verdict"]
    generic = summary["systems"]["generic"]["ndcg@10"]
    assert generic["ci"][0] <= generic["mean"] <= generic["ci"][1]
    assert set(summary["cost"]["latency_ms"]) == SYSTEMS
    assert summary["cost"]["latency_ms"]["generic"]["p95_ms"] >= summary["cost"]["latency_ms"]["generic"]["p50_ms"] > 0
    for name in ("headline", "win_loss", "training", "recall_at_k", "cost", "decision"):
        assert (smoke_run / "figures" / f"{name}.png").is_file(), name


@pytest.mark.slow  # 1 min (03_train again); tests/unit/test_train.py checks the guard itself; .ci/run runs it
def test_a_model_that_does_not_beat_the_base_on_dev_is_not_kept(smoke_run, tmp_path):
    import shutil

    folder = tmp_path / "guarded"
    shutil.copytree(smoke_run, folder)
    registry = json.loads((folder / "manifest.json").read_text())["train"]["registry"]["path"]
    before = sorted(p.name for p in (Path(registry) / "versions").iterdir())
    run_experiment(SMOKE, stages=["train"], run_dir=folder, progress=False,
                   overrides={"train.keep_base_p": 0.05, "train.keep_base_margin": 1.0})
    version = json.loads((folder / "model" / "version.json").read_text())
    assert version["kept"] is False and "the base model is kept" in version["keep_base"]["reason"]
    assert version["keep_base"]["queries"] > 0  # the dev queries, paired
    assert sorted(p.name for p in (Path(registry) / "versions").iterdir()) == before  # nothing registered


@pytest.mark.slow  # 2-3 min (03_train and two fold trainings); the guard's arithmetic is unit-tested
def test_the_cross_fitted_guard_judges_the_shipped_checkpoint_on_train_and_dev_queries(smoke_run, tmp_path):
    import shutil

    import pandas as pd

    folder = tmp_path / "folds"
    shutil.copytree(smoke_run, folder)
    run_experiment(SMOKE, stages=["train"], run_dir=folder, progress=False, overrides={"train.guard_folds": 2})
    guard = json.loads((folder / "model" / "version.json").read_text())["keep_base"]
    assert guard["method"] == "2-fold cross-fitted" and len(guard["folds"]) == 2
    curves = pd.read_csv(folder / "dev_per_query.csv", dtype={"query_id": str})
    dev, pooled = curves[curves["curve"] == "dev"], curves[curves["curve"] == "guard"]
    dev_queries = set(dev["query_id"])
    assert dev_queries < set(pooled["query_id"])  # the held-out train queries join the dev ones
    assert guard["queries"] == pooled["query_id"].nunique()
    shipped = dev[dev["tested"]]
    assert list(shipped["evaluation"].unique()) == [guard["shipped_evaluation"]]  # the dev-best checkpoint ...
    assert list(shipped["step"].unique()) == [guard["dev"]["best_step"]]
    tested = pooled[pooled["tested"]]
    assert list(tested["evaluation"].unique()) == [guard["best_step"]]
    assert tested["ndcg@10"].mean() == pytest.approx(guard["best"])
    assert pooled[pooled["evaluation"] == 0]["ndcg@10"].mean() == pytest.approx(guard["base"])


@pytest.mark.slow  # 90 s: exports the model to ONNX (tests/unit/test_backends.py checks the encoders themselves)
def test_every_stage_encodes_with_the_backend_in_params(tmp_path):
    pytest.importorskip("onnxruntime")
    overrides = {"model.backend": "onnx", "data.max_docs": 100, "data.max_queries": 10}
    run_experiment(SMOKE, stages=["decide", "evaluate"], run_dir=tmp_path, progress=False, overrides=overrides)
    cost = json.loads((tmp_path / "metrics.json").read_text())["cost"]
    assert cost["encoder"] == "onnx-fp32" and cost["encoding"]["chosen_by"] == "params"
    from embedtune import paths

    names = [p.name for p in (paths.cache_dir() / "embeddings").glob("*.npy")]
    assert any(n.startswith("document-") and n.endswith("-onnx-fp32.npy") for n in names)
    assert any(n.startswith("query-") and n.endswith("-onnx-fp32.npy") for n in names)


@pytest.mark.slow
def test_backend_auto_chooses_on_dev_and_every_stage_encodes_with_its_choice(tmp_path):
    pytest.importorskip("openvino")
    overrides = {"model.backend": "auto", "data.max_docs": 100, "data.max_queries": 10, "model.auto_docs": 60}
    run_experiment(SMOKE, stages=["decide", "evaluate"], run_dir=tmp_path, progress=False, overrides=overrides)
    cost = json.loads((tmp_path / "metrics.json").read_text())["cost"]
    encoding = cost["encoding"]
    assert encoding["chosen_by"].startswith("auto: the fastest") and len(encoding["candidates"]) >= 3
    chosen = next(c for c in encoding["candidates"] if (c["backend"], c["quantize"], c["precision"]) ==
                  (encoding["backend"], encoding["quantize"], encoding["precision"]))
    assert cost["encoder"] == chosen["encoder"]
    from embedtune import paths

    names = [p.name for p in (paths.cache_dir() / "embeddings").glob("document-*.npy")]
    assert any(n.endswith(f"-{cost['encoder']}.npy") for n in names)  # the corpus, encoded by the choice
