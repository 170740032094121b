"""Sweeps without kernels: grid syntax, planning, stage reuse, orchestration and the comparison."""

import argparse
import concurrent.futures as cf
import json
import os
from pathlib import Path

import pandas as pd
import pytest
import yaml

from embedtune import runner, sweep
from embedtune.config import ConfigError, load_config
from embedtune.keys import stage_keys
from embedtune.io import atomic_write_json
from embedtune.layout import RunLayout
from embedtune.runfolder import finish_stage, is_fresh, reuse_stage, upstream_state
from embedtune.runner import StageError, run_experiment
from embedtune.stats import holm
from embedtune.sweep import cli as sweep_cli
from embedtune.sweep import execute
from embedtune.sweep.grid import short_keys
from embedtune.sweep.execute import StageReuse
from tests.conftest import ROOT

SMOKE = ROOT / "params" / "smoke.yaml"


# --- grid syntax -----------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("train.loss=mnrl,cached_mnrl,triplet", ("train.loss", ["mnrl", "cached_mnrl", "triplet"])),
    ("negatives.sources=[],[bm25],[dense],[bm25,dense]",
     ("negatives.sources", [[], ["bm25"], ["dense"], ["bm25", "dense"]])),
    ("train.matryoshka_dims=[],[384, 256,128]", ("train.matryoshka_dims", [[], [384, 256, 128]])),
    ("train.learning_rate=1e-5,2e-05,5.0e-5", ("train.learning_rate", [1e-5, 2e-5, 5e-5])),
    ("pairs.max_train_pairs=100,1000, 10000", ("pairs.max_train_pairs", [100, 1000, 10000])),
    ("negatives.relative_margin=0.05,null", ("negatives.relative_margin", [0.05, None])),
    ("data.dataset='a,b',c", ("data.dataset", ["a,b", "c"])),
    ("seed=1", ("seed", [1])),
])
def test_grid_values_split_at_top_level_commas_and_read_as_yaml(text, expected):
    key, values = sweep.parse_grid(text)
    assert (key, values) == expected
    assert all(type(v) is type(e) for v, e in zip(values, expected[1]))  # 2e-05 is a float, not text


@pytest.mark.parametrize("text, message", [
    ("train.loss", "not of the form"),
    ("negatives.sources=[bm25,[dense]", "unbalanced"),
    ("negatives.sources=[bm25]],[dense]", "unbalanced"),
    ("train.loss=mnrl,,triplet", "empty grid value"),
])
def test_bad_grid_text_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        sweep.parse_grid(text)


def test_expand_is_every_combination_first_key_slowest_then_extra_points():
    points = sweep.expand({"a": [1, 2], "b": ["x", "y"]}, [{"a": 3}, {"a": 1, "b": "x"}])
    assert points == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"},
                      {"a": 3}]  # the duplicate extra point is dropped


def test_point_names_say_what_varies_and_stay_short():
    assert sweep.point_name({"train.loss": "mnrl", "train.matryoshka_dims": [384, 128]},
                            ["train.loss", "train.matryoshka_dims"]) == "loss=mnrl,matryoshka_dims=384+128"
    assert sweep.point_name({"negatives.sources": [], "negatives.relative_margin": None},
                            ["negatives.sources", "negatives.relative_margin"]) == \
        "sources=empty,relative_margin=none"
    assert short_keys(["train.batch_size", "model.batch_size", "seed"]) == {
        "train.batch_size": "train.batch_size", "model.batch_size": "model.batch_size", "seed": "seed"}
    long = sweep.point_name({"data.dataset": "x" * 200}, ["data.dataset"])
    assert len(long) == 99 and long != sweep.point_name({"data.dataset": "x" * 201}, ["data.dataset"])


# --- planning --------------------------------------------------------------------------------

def _study(tmp_path, section: dict, **extra) -> str:
    raw = yaml.safe_load(SMOKE.read_text()) | extra
    raw["sweep"] = section
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_sweep_section_is_stripped_validated_and_merged_with_command_line_grid(tmp_path):
    params = _study(tmp_path, {"name": "neg", "grid": {"negatives.sources": [["dense"], []],
                                                        "train.learning_rate": ["2e-5"]},
                               "points": [{"negatives.sources": ["bm25"], "negatives.relative_margin": None}],
                               "baseline": {"negatives.sources": ["dense"], "train.learning_rate": 5e-5},
                               "stages": ["pairs", "train"]})
    with pytest.raises(ConfigError, match="run it with `embedtune sweep"):
        load_config(params)  # the strict loader never sees a sweep section through embedtune.sweep
    plan = sweep.plan_sweep(params, {"train.learning_rate": [2e-5, 5e-5]}, out_dir=tmp_path / "out")
    assert "sweep" not in plan.base and plan.name == "neg" and plan.stages == ["pairs", "train"]
    assert plan.grid == {"negatives.sources": [["dense"], []], "train.learning_rate": [2e-5, 5e-5]}
    assert [p.name for p in plan.points] == [
        "sources=dense,learning_rate=2e-05", "sources=dense,learning_rate=5e-05",
        "sources=empty,learning_rate=2e-05", "sources=empty,learning_rate=5e-05",
        "sources=bm25,relative_margin=none"]
    assert plan.varied == ["negatives.sources", "train.learning_rate", "negatives.relative_margin"]
    assert plan.baseline == "sources=dense,learning_rate=5e-05" and plan.x == "negatives.sources"
    # a key a point leaves alone shows the base's value
    assert plan.points[-1].values == {"negatives.sources": ["bm25"], "train.learning_rate": 2e-5,
                                      "negatives.relative_margin": None}
    assert plan.points[0].values["negatives.relative_margin"] == 0.05
    with pytest.raises(ConfigError, match="matches 2 points"):  # two points have sources=[dense]
        sweep.plan_sweep(params, {"train.learning_rate": [2e-5, 5e-5]}, baseline={"negatives.sources": ["dense"]})
    assert not (tmp_path / "out").exists()


def test_section_typos_and_bad_points_fail_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="unknown key sweep.grdi.*did you mean 'grid'"):
        sweep.plan_sweep(_study(tmp_path, {"grdi": {"train.loss": ["mnrl"]}}))
    with pytest.raises(ConfigError, match="sweep.grid: expected a mapping"):
        sweep.plan_sweep(_study(tmp_path, {"grid": {"train.loss": "mnrl"}}))
    with pytest.raises(ConfigError, match=r"sweep point \{'train.loss': 'infonce'\}: train.loss: 'infonce' is not one of"):
        sweep.plan_sweep(SMOKE, {"train.loss": ["mnrl", "infonce"]}, out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="unknown key train.learning_rat"):
        sweep.plan_sweep(SMOKE, {"train.learning_rat": [1e-5]}, out_dir=tmp_path / "out")
    with pytest.raises(ConfigError, match="nothing to sweep"):
        sweep.plan_sweep(SMOKE)
    with pytest.raises(ConfigError, match="names no point"):
        sweep.plan_sweep(SMOKE, {"seed": [1, 2]}, baseline="seed=3")
    with pytest.raises(ConfigError, match="clash"):
        sweep.plan_sweep(SMOKE, {"seed": [1, 2]}, name="pairs")
    assert not (tmp_path / "out").exists()


def test_fixed_overrides_go_into_the_base_and_defaults_come_from_the_experiment(tmp_path):
    plan = sweep.plan_sweep(SMOKE, {"seed": [1, 2]}, overrides={"train.epochs": "2"}, baseline="seed=2")
    assert plan.base["train"]["epochs"] == 2 and plan.baseline == "seed=2" and plan.x == "seed"
    assert plan.folder == ROOT / "results" / "smoke" / "seed"
    assert plan.stages == runner.available_stages()


# --- stage reuse ---------------------------------------------------------------------------

def _finished_stage(folder, stage, key, seconds=9.0, content="a\n"):
    layout = RunLayout(folder)
    layout.stages_dir.mkdir(parents=True, exist_ok=True)
    layout.executed(stage).write_text("{}")
    layout.html(stage).write_text("<html/>")
    out = layout.products(stage)[0]
    out.mkdir(parents=True, exist_ok=True)
    (out / "train.jsonl").write_text(content)
    manifest = json.loads((folder / "manifest.json").read_text()) if (folder / "manifest.json").is_file() else {}
    manifest.setdefault("stages", {})[stage] = {"seconds": seconds, "status": "ok", "finished": "t0"}
    # atomic, as finish_stage writes them: parallel points read each other's markers while they scan
    atomic_write_json(folder / "manifest.json", manifest)
    atomic_write_json(layout.marker(stage), {"key": key, "upstream": upstream_state(layout, stage)})


def test_a_point_reuses_a_stage_that_finished_elsewhere_under_the_same_key(tmp_path):
    sweep_dir = tmp_path / "exp" / "lr"
    a, b = sweep_dir / "a", sweep_dir / "b"
    _finished_stage(a, "pairs", "k1")
    b.mkdir(parents=True)
    (b / "pairs").mkdir()
    (b / "pairs" / "stale.jsonl").write_text("old")
    guard = StageReuse(sweep_dir, load_config(SMOKE), str(SMOKE), {})
    with guard("pairs", "k1", b):
        assert is_fresh(RunLayout(b), "pairs", "k1")  # before the runner checks: it will skip the stage
    assert not (b / "pairs" / "stale.jsonl").exists()
    assert os.path.samefile(a / "pairs" / "train.jsonl", b / "pairs" / "train.jsonl")  # hard link
    assert (b / "01_pairs.ipynb").is_file() and (b / "01_pairs.html").is_file()
    marker = json.loads((b / ".stages" / "pairs.json").read_text())
    assert marker["key"] == "k1" and marker["reused_from"] == str(a.resolve())
    record = json.loads((b / "manifest.json").read_text())["stages"]["pairs"]
    assert {k: record[k] for k in ("seconds", "status", "from")} == {
        "seconds": 9.0, "status": "reused", "from": str(a)}
    assert (b / "params.yaml").is_file()  # the reused stage finished here: its params are recorded
    c = sweep_dir / "c"
    c.mkdir()
    with guard("pairs", "k2", c):  # another key: nothing to reuse
        pass
    assert not (c / "pairs").exists()
    with pytest.raises(ValueError, match="not fresh"):
        reuse_stage(a, c, "pairs", "k2", load_config(SMOKE), params_file=None, overrides={})


def test_reuse_looks_in_the_experiment_folder_and_other_sweeps_after_its_own_points(tmp_path):
    experiment = tmp_path / "exp"
    _finished_stage(experiment / "other" / "p", "negatives", "k")
    _finished_stage(experiment, "negatives", "k")
    _finished_stage(experiment / "mine" / "q", "negatives", "k")
    guard = StageReuse(experiment / "mine", load_config(SMOKE), str(SMOKE), {})
    assert guard.candidates() == [experiment / "mine" / "q", experiment, experiment / "other" / "p"]
    target = experiment / "mine" / "r"
    target.mkdir()
    with guard("negatives", "k", target):
        pass
    assert json.loads((target / ".stages" / "negatives.json").read_text())["reused_from"] == \
        str((experiment / "mine" / "q").resolve())


def test_a_reused_stage_is_skipped_and_a_rerun_of_it_never_writes_into_its_source(
        tiny_params, tmp_path, monkeypatch):
    import nbformat
    import papermill

    calls = []

    def fake_execute(node, output_path, parameters, **kwargs):  # a kernel whose stage writes in place
        folder = Path(parameters["run_dir"])
        calls.append(str(folder))
        nbformat.write(node, output_path)
        (folder / "pairs").mkdir(exist_ok=True)
        with open(folder / "pairs" / "train.jsonl", "w") as fh:
            fh.write(f"written in {folder.name}\n")
        cfg = load_config(parameters["params_file"], parameters["overrides"])
        finish_stage(RunLayout(folder), "pairs", stage_keys(cfg)["pairs"], cfg, seconds=1.0,
                     params_file=parameters["params_file"], overrides={}, by="runner")

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    a, b = tmp_path / "exp" / "s" / "a", tmp_path / "exp" / "s" / "b"
    run_experiment(tiny_params, stages=["pairs"], run_dir=a, progress=False)
    cfg = load_config(tiny_params)
    reuse_stage(a, b, "pairs", stage_keys(cfg)["pairs"], cfg, params_file=str(tiny_params), overrides={})
    run_experiment(tiny_params, stages=["pairs"], run_dir=b, progress=False, rerun_named=False)
    assert calls == [str(a.resolve())]  # fresh through reuse: skipped although named
    assert json.loads((b / "manifest.json").read_text())["stages"]["pairs"]["status"] == "reused"
    run_experiment(tiny_params, stages=["pairs"], run_dir=b, progress=False)  # named: runs
    assert (b / "pairs" / "train.jsonl").read_text() == "written in b\n"
    assert (a / "pairs" / "train.jsonl").read_text() == "written in a\n"  # the link was cut first


# --- orchestration (run_experiment replaced by a fake that writes what the runner would) -----

class FakeRunner:
    """Stands in for run_experiment: writes markers under the real stage keys, a metrics.json and
    a per_query.csv; fails the points whose overrides match ``fail``."""

    def __init__(self, fail=None):
        self.fail = fail or {}
        self.calls = []

    def __call__(self, params_file, stages, overrides, run_dir, progress, rerun_named, stage_guard):
        assert rerun_named is False and progress is False
        self.calls.append(dict(overrides))
        keys = stage_keys(load_config(params_file, overrides))
        run_dir.mkdir(parents=True, exist_ok=True)
        for stage in stages:
            with stage_guard(stage, keys[stage], run_dir):
                if is_fresh(RunLayout(run_dir), stage, keys[stage]):
                    continue
                if stage == "train" and self.fail and all(overrides.get(k) == v for k, v in self.fail.items()):
                    manifest = json.loads((run_dir / "manifest.json").read_text())
                    manifest["stages"]["train"] = {"status": "failed", "seconds": 1.0}
                    atomic_write_json(run_dir / "manifest.json", manifest)
                    raise StageError("stage train failed in 03_train.ipynb (cell 4): TrainError: boom")
                _finished_stage(run_dir, stage, keys[stage])
        lr = overrides["train.learning_rate"]
        scores = [1.0, 1.0, 0.0, 1.0] if lr > 3e-5 else [1.0, 0.0, 0.0, 1.0]
        _point_outputs(run_dir, finetuned=scores, generic=[0.0, 0.0, 0.0, 1.0])
        return run_dir


def _point_outputs(folder, finetuned, generic, model_bytes=2_000_000, train_seconds=12.5):
    rows = [{"system": s, "query_id": f"q{i}", "ndcg@10": v, "recall@10": v}
            for s, values in (("finetuned", finetuned), ("generic", generic)) for i, v in enumerate(values)]
    pd.DataFrame(rows).to_csv(folder / "per_query.csv", index=False)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    (folder / "metrics.json").write_text(json.dumps({
        "experiment": "smoke", "dataset": {"n_queries": len(finetuned)},
        "systems": {"finetuned": {"ndcg@10": mean(finetuned)}, "generic": {"ndcg@10": mean(generic)}},
        "significance": {"finetuned_vs_generic": {"ndcg@10": {"delta": mean(finetuned) - mean(generic),
                                                              "p_value": 0.2}}},
        "cost": {"train_seconds": train_seconds}}))
    (folder / "model").mkdir(exist_ok=True)
    (folder / "model" / "model.safetensors").write_bytes(b"\0" * model_bytes)
    (folder / "model" / "version.json").write_text(json.dumps({"train_seconds": train_seconds}))


@pytest.fixture
def tiny_params(tmp_path, tiny_beir):
    raw = yaml.safe_load(SMOKE.read_text())
    raw["data"] = {"dataset": str(tiny_beir)}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_a_failed_point_is_reported_the_others_finish_and_a_rerun_does_only_what_is_missing(
        tiny_params, tmp_path, monkeypatch):
    fake = FakeRunner(fail={"train.learning_rate": 2e-5})
    monkeypatch.setattr(execute, "run_experiment", fake)
    out = tmp_path / "exp" / "lr"
    grid = {"train.learning_rate": [2e-5, 5e-5, 1e-4]}
    result = sweep.run_sweep(tiny_params, grid, stages=["pairs", "train"], out_dir=out,
                             report=False, progress=False)
    summary = json.loads((out / "sweep.json").read_text())
    assert [(p["name"], p["status"], p["failed_stage"]) for p in summary["points"]] == [
        ("learning_rate=2e-05", "failed", "train"), ("learning_rate=5e-05", "ok", None),
        ("learning_rate=0.0001", "ok", None)]
    assert "TrainError: boom" in summary["points"][0]["error"]
    assert [p["name"] for p in result.failed] == ["learning_rate=2e-05"]
    assert summary["points"][1]["folder"] == "learning_rate=5e-05" and summary["baseline"] == "learning_rate=2e-05"
    assert (out / "learning_rate=5e-05" / "metrics.json").is_file()
    # pairs ran in the first point (whose train then failed); the others reused it
    assert json.loads((out / "learning_rate=0.0001" / ".stages" / "pairs.json").read_text())["reused_from"] == \
        str((out / "learning_rate=2e-05").resolve())
    assert yaml.safe_load((out / "base.yaml").read_text())["data"]["dataset"] == yaml.safe_load(
        tiny_params.read_text())["data"]["dataset"]

    fake.fail, fake.calls = {}, []
    result = sweep.run_sweep(tiny_params, grid, stages=["pairs", "train"], out_dir=out,
                             report=False, progress=False)
    assert fake.calls == [{"train.learning_rate": 2e-5}]  # the finished points were up to date
    assert [p["status"] for p in result.points] == ["ok", "ok", "ok"] and not result.failed


def test_parallel_workers_share_a_stage_under_its_lock(tiny_params, tmp_path, monkeypatch):
    fake = FakeRunner()
    monkeypatch.setattr(execute, "run_experiment", fake)
    monkeypatch.setattr(execute, "_pool", lambda workers: cf.ThreadPoolExecutor(workers))  # same path, no spawn
    out = tmp_path / "exp" / "lr"
    result = sweep.run_sweep(tiny_params, {"train.learning_rate": [2e-5, 5e-5, 1e-4]},
                             stages=["pairs", "train"], out_dir=out, workers=3, report=False, progress=False)
    assert [p["status"] for p in result.points] == ["ok", "ok", "ok"]
    origins = [json.loads((out / p["name"] / ".stages" / "pairs.json").read_text()).get("reused_from")
               for p in result.points]
    assert origins.count(None) == 1  # pairs ran in exactly one point; the two others reused it
    assert list((out / ".locks").glob("pairs-*.lock"))


# --- comparison ----------------------------------------------------------------------------

def _sweep_folder(tmp_path, points: dict, x_values: dict, stat_test="student"):
    folder = tmp_path / "sweep"
    entries = []
    for name, (status, finetuned, generic) in points.items():
        (folder / name).mkdir(parents=True)
        if status == "ok":
            _point_outputs(folder / name, finetuned, generic)
        entries.append({"name": name, "overrides": {"pairs.max_train_pairs": x_values[name]},
                        "values": {"pairs.max_train_pairs": x_values[name]}, "folder": name,
                        "status": status, "error": None if status == "ok" else "StageError: boom",
                        "failed_stage": None if status == "ok" else "train"})
    (folder / "sweep.json").write_text(json.dumps({
        "sweep": "pairs", "experiment": "smoke", "params_file": "params/smoke.yaml", "base_params": "base.yaml",
        "grid": {"pairs.max_train_pairs": list(x_values.values())}, "varied": ["pairs.max_train_pairs"],
        "x": "pairs.max_train_pairs", "baseline": "n=100", "system": "finetuned", "fixed": {},
        "stages": ["pairs", "negatives", "train", "evaluate"],
        "bootstrap_samples": 500, "confidence": 0.95, "stat_test": stat_test, "max_p": 0.05, "seed": 0,
        "points": entries}))
    return folder


def test_comparison_table_intervals_and_paired_tests_against_the_baseline_point(tmp_path):
    folder = _sweep_folder(tmp_path, {
        "n=100": ("ok", [0.0, 1.0, 1.0, 0.0], [0.5] * 4),
        "n=1000": ("ok", [1.0, 1.0, 1.0, 1.0], [0.5] * 4),
        "n=10000": ("failed", None, None),
    }, {"n=100": 100, "n=1000": 1000, "n=10000": 10000})
    cmp = sweep.load_comparison(folder)
    table = cmp.table()
    assert list(table.index) == ["n=100", "n=1000", "n=10000"]
    assert table.loc["n=100", "ndcg@10"] == pytest.approx(0.5)
    assert table.loc["n=1000", "ndcg@10"] == 1.0
    # all queries at 1.0: every resample's mean is 1.0
    assert table.loc["n=1000", "ndcg@10 low"] == table.loc["n=1000", "ndcg@10 high"] == 1.0
    assert 0.0 <= table.loc["n=100", "ndcg@10 low"] < 0.5 < table.loc["n=100", "ndcg@10 high"] <= 1.0
    # differences [1, 0, 0, 1]: mean 0.5, sd 0.5774, t = 0.5 / (0.5774 / 2) = 1.732 with 3 df
    assert table.loc["n=1000", "ndcg@10 vs baseline"] == pytest.approx(0.5)
    assert table.loc["n=1000", "ndcg@10 p"] == pytest.approx(0.1817, abs=1e-3)
    assert pd.isna(table.loc["n=100", "ndcg@10 vs baseline"])
    assert table.loc["n=100", "status"] == "ok (baseline)" and table.loc["n=10000", "status"] == "failed"
    assert table.loc["n=1000", "model MB"] == pytest.approx(2.0, abs=1e-3) and table.loc["n=1000", "train seconds"] == 12.5
    assert table.loc["n=1000", "ndcg@10 vs generic"] == pytest.approx(0.5)
    sig = cmp.significance()
    assert list(sig["point"]) == ["n=1000", "n=1000"] and not sig["significant"].any()
    assert cmp.failures()[["point", "failed stage"]].values.tolist() == [["n=10000", "train"]]
    readable = cmp.report_table()
    assert readable.loc["n=1000", "ndcg@10 [95 % CI]"] == "1.0000 [1.0000, 1.0000]"
    assert readable.loc["n=1000", "ndcg@10 vs baseline (p)"] == "+0.5000 (0.182)"
    assert "Best nDCG@10: n=1000 with 1.0000" in cmp.headline() and "1 not finished" in cmp.headline()
    assert "+0.5000 against the baseline (p = 0.182, Holm-adjusted 0.182: not significant)" in cmp.headline()
    fig = cmp.plot()
    assert [ax.get_xscale() for ax in fig.axes] == ["log", "log"]  # 100 .. 1000 .. (10000 in the grid)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["100", "1000", "10000"]
    lines = [line for line in fig.axes[0].get_lines() if line.get_label() == "generic (no fine-tuning)"]
    assert lines and lines[0].get_ydata()[0] == pytest.approx(0.5)


def test_a_failed_baseline_point_is_said_and_nothing_is_tested_against_it(tmp_path):
    folder = _sweep_folder(tmp_path, {"n=100": ("failed", None, None), "n=1000": ("ok", [1, 0], [0, 0])},
                           {"n=100": 100, "n=1000": 1000})
    cmp = sweep.load_comparison(folder)
    assert cmp.significance().empty
    assert "The baseline point has no results" in cmp.headline()
    assert cmp.report_table().loc["n=100", "status"] == "failed (baseline)"


def test_holm_adjusts_several_points_against_one_baseline():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.001]) == pytest.approx([0.5, 0.002])
    assert holm([]) == []


def test_categorical_x_axis_keeps_the_grid_order(tmp_path):
    folder = _sweep_folder(tmp_path, {"n=100": ("ok", [1, 0], [0, 0]), "n=1000": ("ok", [1, 1], [0, 0])},
                           {"n=100": [], "n=1000": ["bm25", "dense"]})
    fig = sweep.load_comparison(folder).plot(["ndcg@10"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["[]", "[bm25, dense]"]


def test_the_reproduce_command_reads_back_as_the_same_sweep(tmp_path):
    import shlex

    from embedtune.config import parse_override

    folder = _sweep_folder(tmp_path, {"n=100": ("ok", [1, 0], [0, 0])}, {"n=100": 100})
    summary = json.loads((folder / "sweep.json").read_text())
    summary["grid"] = {"negatives.sources": [[], ["bm25", "dense"]], "train.loss": ["mnrl", "gist"],
                       "negatives.relative_margin": [0.05, None], "data.dataset": ["a,b", "null", "scifact"]}
    summary["fixed"] = {"train.learning_rate": 2e-05, "train.matryoshka_dims": [384, 128]}
    (folder / "sweep.json").write_text(json.dumps(summary))
    command = sweep.load_comparison(folder).command()
    args = _cli(shlex.split(command)[1:])
    assert dict(sweep.parse_grid(g) for g in args.grid) == summary["grid"]
    assert dict(map(parse_override, args.overrides)) == summary["fixed"]
    assert (args.name, args.baseline, args.x, args.stages) == (
        "pairs", "n=100", "pairs.max_train_pairs", "pairs,negatives,train,evaluate")


# --- command line --------------------------------------------------------------------------

def _cli(argv):
    parser = argparse.ArgumentParser(prog="embedtune")
    sweep_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_reports_failed_points_with_exit_code_1(tiny_params, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(execute, "run_experiment", FakeRunner(fail={"train.learning_rate": 2e-5}))
    args = _cli(["sweep", str(tiny_params), "--grid", "train.learning_rate=2e-5,5e-5", "--stages", "pairs,train",
                 "--out", str(tmp_path / "exp" / "lr"), "--no-report", "--no-progress"])
    assert sweep_cli.run_cli(args) == 1
    out = capsys.readouterr().out
    assert "failed  learning_rate=2e-05 (train): StageError" in out and "ok  learning_rate=5e-05" in out


def test_a_sigterm_mid_sweep_leaves_no_point_running_and_exits_143(tiny_params, tmp_path, monkeypatch, capsys):
    import signal

    from embedtune import cli
    from embedtune.cli import main

    fake = FakeRunner()

    def killed_in_the_second_point(params_file, stages, overrides, run_dir, **kwargs):
        if len(fake.calls) == 1:  # `kill PID` while the second point runs: what main's handler does
            assert signal.getsignal(signal.SIGTERM) is cli._terminate
            # called, not signalled: a real SIGTERM in this process, after the openvino, monitor and
            # distributed tests, crashed CI's pytest (exit 139); tests/smoke/test_bad_input.py sends
            # real ones to a fresh embedtune process
            cli._terminate(signal.SIGTERM, None)
        return fake(params_file, stages, overrides, run_dir, **kwargs)

    monkeypatch.setattr(execute, "run_experiment", killed_in_the_second_point)
    before = signal.getsignal(signal.SIGTERM)
    out = tmp_path / "exp" / "lr"
    assert main(["sweep", str(tiny_params), "--grid", "train.learning_rate=2e-5,5e-5,1e-4", "--stages",
                 "pairs,train", "--out", str(out), "--no-report", "--no-progress"]) == 143
    assert capsys.readouterr().err.startswith("embedtune: terminated")
    statuses = [p["status"] for p in json.loads((out / "sweep.json").read_text())["points"]]
    assert statuses == ["ok", "interrupted", "interrupted"]
    assert signal.getsignal(signal.SIGTERM) == before  # main() called from Python hands it back


def test_cli_refuses_a_bad_grid_with_exit_code_2(capsys):
    from embedtune.cli import main

    assert main(["sweep", str(SMOKE), "--grid", "train.loss=mnrl,infonce"]) == 2
    assert "'infonce' is not one of" in capsys.readouterr().err


def test_truncated_table_lists_each_point_at_full_and_cut_dimensions(tmp_path):
    folder = _sweep_folder(tmp_path, {"n=100": ("ok", [1.0, 0.0], [0.5] * 2),
                                      "n=1000": ("ok", [1.0, 1.0], [0.5] * 2)},
                           {"n=100": 100, "n=1000": 1000})
    assert sweep.load_comparison(folder).truncated().empty  # no point was cut
    metrics = json.loads((folder / "n=1000" / "metrics.json").read_text())
    metrics["cost"]["embedding_dim"] = 384
    metrics["truncated"] = {"128": {"finetuned": {"ndcg@10": 0.9}, "generic": {"ndcg@10": 0.4}},
                            "64": {"finetuned": {"ndcg@10": 0.8}, "generic": {"ndcg@10": 0.3}}}
    (folder / "n=1000" / "metrics.json").write_text(json.dumps(metrics))
    table = sweep.load_comparison(folder).truncated()
    assert list(table.columns) == ["ndcg@10 @384", "ndcg@10 @128", "ndcg@10 @64"]
    assert list(table.index) == [("n=1000", "finetuned"), ("n=1000", "generic")]
    assert table.loc[("n=1000", "finetuned")].tolist() == [1.0, 0.9, 0.8]
    assert table.loc[("n=1000", "generic")].tolist() == [0.5, 0.4, 0.3]


def test_stage_keys_ignore_the_sections_of_unused_training_sources():
    keys = lambda **o: stage_keys(load_config(SMOKE, o))  # noqa: E731
    gold = keys()
    assert keys(**{"synthetic.max_docs": 7, "clicks.simulator.eta": 2.0, "crop.max_docs": 3}) == gold
    used = keys(**{"pairs.sources": ["gold", "synthetic"]})
    assert used["pairs"] != gold["pairs"] and used["train"] != gold["train"]
    assert keys(**{"pairs.sources": ["gold", "synthetic"], "synthetic.max_docs": 7})["pairs"] != used["pairs"]
    assert keys(**{"clicks.simulate": True})["pairs"] != gold["pairs"]  # simulated clicks validate
    assert keys(**{"train.epochs": 2})["pairs"] == gold["pairs"]


def test_points_that_differ_only_in_seed_are_summarised_as_one_group(tmp_path):
    from scipy.stats import ttest_rel

    folder = tmp_path / "smoke" / "curve"
    points = {  # name: (pairs, seed, finetuned per query); generic is 0 on every query
        "n=1000": (1000, 42, [1.0, 1.0, 1.0, 0.0]),
        "n=100,seed=1": (100, 1, [1.0, 0.0, 1.0, 0.0]),
        "n=100,seed=2": (100, 2, [1.0, 1.0, 0.0, 0.0]),
    }
    entries = []
    for name, (n, seed, finetuned) in points.items():
        (folder / name).mkdir(parents=True)
        _point_outputs(folder / name, finetuned, [0.0] * 4)
        values = {"pairs.max_train_pairs": n, "seed": seed}
        entries.append({"name": name, "overrides": values, "values": values, "folder": name, "status": "ok"})
    (folder / "sweep.json").write_text(json.dumps({
        "sweep": "curve", "experiment": "smoke", "params_file": "p.yaml", "base_params": "base.yaml",
        "grid": {"pairs.max_train_pairs": [1000]}, "varied": ["pairs.max_train_pairs", "seed"],
        "x": "pairs.max_train_pairs", "baseline": "n=1000", "system": "finetuned", "fixed": {},
        "stages": ["train"], "bootstrap_samples": 100, "confidence": 0.95, "stat_test": "student",
        "max_p": 0.05, "seed": 0, "points": entries}))
    table = sweep.load_comparison(folder).over_seeds("ndcg@10").set_index("pairs.max_train_pairs")
    assert list(table.index) == ["100", "1000"]  # ordered by the x value, not by the points' order
    small, large = table.loc["100"], table.loc["1000"]
    assert small["seeds"] == "1, 2" and small["n seeds"] == 2 and small["queries"] == 4
    assert small["mean"] == small["min"] == small["max"] == 0.5 and small["sd"] == 0.0
    # seed-averaged per query [1, .5, .5, 0] against generic 0
    assert small["vs generic"] == pytest.approx(0.5)
    assert small["p_value"] == pytest.approx(ttest_rel([1, .5, .5, 0], [0, 0, 0, 0]).pvalue)
    assert large["n seeds"] == 1 and pd.isna(large["sd"]) and large["vs generic"] == pytest.approx(0.75)
    assert large["p_value"] == pytest.approx(ttest_rel([1, 1, 1, 0], [0, 0, 0, 0]).pvalue)
    assert list(table["p_holm"]) == pytest.approx(holm(list(table["p_value"])))
    assert not table["significant"].any()
    assert sweep.load_comparison(_sweep_folder(tmp_path, {"n=100": ("ok", [1, 0], [0, 0])},
                                               {"n=100": 100})).over_seeds().empty
