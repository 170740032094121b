"""A sweep on the smoke slice through papermill: two points that differ in a train key share the
upstream stage (which runs once), a failed point leaves the others' results intact, and a re-run
of a finished sweep runs nothing."""

import collections
import json
import os

import pytest
import yaml

from embedtune.sweep import load_comparison, run_sweep
from tests.conftest import ROOT

# about 3 min on 2 cores: left out of `make test` (kept under 15 min), run by CI after it (.ci/run)
pytestmark = pytest.mark.slow

SMOKE = ROOT / "params" / "smoke.yaml"
STAGES = ["pairs", "train", "evaluate"]
# an even smaller slice than smoke.yaml's, in-batch negatives only: two trainings and evaluations
# stay quick (each point still trains 2 steps on the slice's 21 pairs)
FIXED = {"data.max_docs": 100, "train.dev_docs": 20, "negatives.sources": []}
LR = {"train.learning_rate": [2e-5, 5e-5]}
POINTS = ["learning_rate=2e-05", "learning_rate=5e-05"]


@pytest.fixture(scope="module")
def executed():
    """How many times each notebook was executed in this process (by stem), from here on."""
    from embedtune import notebook

    counts = collections.Counter()
    real = notebook.execute

    def counting(stem, *args, **kwargs):
        counts[stem] += 1
        return real(stem, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(notebook, "execute", counting)
        yield counts


def _run(executed, *args, **kwargs):
    before = collections.Counter(executed)
    result = run_sweep(*args, progress=False, **kwargs)
    return result, dict(executed - before)


def _executions(folders, notebook: str) -> int:
    """Distinct executed copies of a notebook among the folders (a reused stage is a hard link)."""
    inodes = {os.stat(f / notebook).st_ino for f in folders if (f / notebook).is_file()}
    return len(inodes)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    from tests.conftest import shared_datasets

    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR (CI points it at ../shared/datasets)")
    return tmp_path_factory.mktemp("results") / "smoke"


@pytest.fixture(scope="module")
def lr_sweep(experiment, executed):
    # two worker processes: the second point waits on the first's pairs stage (a lock per stage
    # key), reuses it, then both train and evaluate at once
    return _run(executed, SMOKE, LR, stages=STAGES, overrides=FIXED, out_dir=experiment / "lr", workers=2)


def test_the_shared_upstream_stage_runs_once_and_each_point_trains(lr_sweep):
    result, ran_here = lr_sweep
    assert ran_here == {"sweep_compare": 1}  # the points ran in the workers
    assert [(p["name"], p["status"]) for p in result.points] == [(POINTS[0], "ok"), (POINTS[1], "ok")]
    folders = [result.folder / name for name in POINTS]
    assert _executions(folders, "01_pairs.ipynb") == 1
    assert _executions(folders, "03_train.ipynb") == 2 and _executions(folders, "04_evaluate.ipynb") == 2
    statuses = [p["stages"] for p in result.points]
    assert sorted(s["pairs"] for s in statuses) == ["ok", "reused"]
    assert all(s["train"] == s["evaluate"] == "ok" for s in statuses)
    reused = folders[[s["pairs"] for s in statuses].index("reused")]
    assert json.loads((reused / "manifest.json").read_text())["stages"]["pairs"]["seconds"] > 0
    assert os.path.samefile(folders[0] / "pairs" / "train.jsonl", folders[1] / "pairs" / "train.jsonl")
    for folder in folders:
        assert (folder / "metrics.json").is_file() and (folder / "per_query.csv").is_file()
    versions = [json.loads((f / "model" / "version.json").read_text()) for f in folders]
    assert versions[0]["fingerprint"] != versions[1]["fingerprint"]  # two trainings, two models
    params = [yaml.safe_load((f / "params.yaml").read_text()) for f in folders]
    assert [p["train"]["learning_rate"] for p in params] == [2e-5, 5e-5]
    assert params[0]["data"]["max_docs"] == 100  # the fixed overrides reached every point


def test_the_comparison_page_has_every_point_and_no_code(lr_sweep):
    result, _ = lr_sweep
    summary = json.loads((result.folder / "sweep.json").read_text())
    assert summary["report"]["status"] == "ok" and summary["baseline"] == POINTS[0]
    html = (result.folder / "compare.html").read_text()
    assert all(name in html for name in POINTS) and "95 % CI" in html and "<img" in html
    assert "load_comparison" not in html  # code hidden
    table = load_comparison(result.folder).table()
    for name in POINTS:
        low, mean, high = (table.loc[name, c] for c in ("ndcg@10 low", "ndcg@10", "ndcg@10 high"))
        assert 0.0 <= low <= mean <= high <= 1.0
        assert table.loc[name, "train seconds"] > 0 and table.loc[name, "model MB"] > 1
    assert 0.0 <= table.loc[POINTS[1], "ndcg@10 p"] <= 1.0


def test_a_failed_point_does_not_stop_the_others_or_touch_their_results(lr_sweep, experiment, executed):
    lr, _ = lr_sweep
    before = {name: (lr.folder / name / "metrics.json").read_bytes() for name in POINTS}
    # the first point fails inside 03_train (config-valid, but more dimensions than the model has);
    # the second is the lr sweep's first point again: every one of its stages is reused
    result, ran = _run(executed, SMOKE, {"train.matryoshka_dims": [[100000], []]}, stages=STAGES,
                       overrides=FIXED, out_dir=experiment / "broken")
    assert ran == {"03_train": 1, "sweep_compare": 1}
    failed, ok = result.points
    assert (failed["status"], failed["failed_stage"]) == ("failed", "train")
    assert "exceed the model's dimension" in failed["error"]
    assert (result.folder / failed["name"] / "03_train.failed.ipynb").is_file()
    assert ok["status"] == "ok" and ok["stages"] == {s: "reused" for s in STAGES}
    assert (result.folder / ok["name"] / "metrics.json").is_file()
    assert {name: (lr.folder / name / "metrics.json").read_bytes() for name in POINTS} == before
    summary = json.loads((result.folder / "sweep.json").read_text())
    assert [p["status"] for p in summary["points"]] == ["failed", "ok"]
    assert summary["report"]["status"] == "ok"
    assert "exceed the model" in (result.folder / "compare.html").read_text()  # the page lists it

    # re-running a finished sweep runs nothing: every point is up to date
    again, ran = _run(executed, SMOKE, LR, stages=STAGES, overrides=FIXED, out_dir=lr.folder, report=False)
    assert ran == {} and [p["status"] for p in again.points] == ["ok", "ok"]
