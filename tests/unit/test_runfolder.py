"""One writer per run folder; a stage records itself only when it finishes; paths resolve alike
from any working directory."""

import json
import subprocess
import sys
import time

import pytest
import yaml

from embedtune import paths
from embedtune.config import load_config
from embedtune.context import open_run, resolve_params_file
from embedtune.keys import stage_keys
from embedtune.layout import RunLayout
from embedtune.runfolder import (FolderBusyError, FolderLock, StaleUpstreamError, is_fresh,
                                 stage_statuses)


@pytest.fixture
def tiny_params(tmp_path, tiny_beir):
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump({"experiment": "tiny", "data": {"dataset": str(tiny_beir)}}))
    return path


def _write_decision(ctx):
    ctx.layout.decision.write_text(json.dumps({"verdict": "skip", "seed": ctx.cfg.seed}))


def test_a_stage_records_params_manifest_and_marker_only_when_it_finishes(tiny_params, tmp_path):
    ctx = open_run(tiny_params, {"seed": 7}, tmp_path / "run")
    layout = ctx.layout
    with ctx.running("decide"):
        _write_decision(ctx)
        ctx.update_manifest(decide={"note": 1})
        assert not layout.params.exists() and not layout.manifest.exists()  # nothing before it ends
        assert not layout.marker("decide").exists()
    assert yaml.safe_load(layout.params.read_text())["seed"] == 7
    manifest = json.loads(layout.manifest.read_text())
    assert manifest["decide"] == {"note": 1} and manifest["stages"]["decide"]["status"] == "ok"
    assert manifest["stages"]["decide"]["overrides"] == {"seed": 7}
    assert manifest["stages"]["decide"]["by"] == "notebook"  # not started by the runner
    mine = stage_keys(load_config(tiny_params, {"seed": 7}))["decide"]
    assert json.loads(layout.marker("decide").read_text())["key"] == mine
    assert is_fresh(layout, "decide", mine)
    # `embedtune run` with the file's own params never takes these outputs for its own
    assert not is_fresh(layout, "decide", stage_keys(load_config(tiny_params))["decide"])


@pytest.mark.parametrize("error, status", [(ValueError("boom"), "failed"),
                                           (KeyboardInterrupt(), "interrupted")])
def test_a_stage_that_does_not_finish_says_so_and_leaves_no_marker(tiny_params, tmp_path, error, status):
    ctx = open_run(tiny_params, {}, tmp_path / "run")
    with ctx.running("decide"):
        _write_decision(ctx)
    assert is_fresh(ctx.layout, "decide", stage_keys(ctx.cfg)["decide"])
    with pytest.raises(type(error)):
        with ctx.running("decide"):
            raise error
    assert not ctx.layout.marker("decide").exists()
    assert stage_statuses(ctx.layout, ["decide"]) == {"decide": status}


def test_a_stage_refuses_upstream_outputs_made_under_other_params(tiny_params, tmp_path):
    run = tmp_path / "run"
    by_hand = open_run(tiny_params, {"pairs.max_train_pairs": 1}, run)
    with by_hand.running("pairs"):
        by_hand.layout.pairs_dir.mkdir()
        by_hand.layout.pairs_train.write_text("")
    ctx = open_run(tiny_params, {}, run)
    with pytest.raises(StaleUpstreamError, match="--stages pairs,negatives"):
        with ctx.running("negatives"):
            pass
    # a product left without a marker (an unfinished run) is refused too
    by_hand.layout.marker("pairs").unlink()
    with pytest.raises(StaleUpstreamError):
        with ctx.running("negatives"):
            pass


def test_a_second_writer_is_told_who_holds_the_folder(tmp_path):
    layout = RunLayout(tmp_path / "run")
    holder = subprocess.Popen([sys.executable, "-c", f"""
import time
from embedtune.layout import RunLayout
from embedtune.runfolder import FolderLock
with FolderLock(RunLayout({str(layout.root)!r}), purpose="embedtune run"):
    print("held", flush=True)
    time.sleep(30)
"""], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(FolderBusyError, match=rf"pid {holder.pid} .*embedtune run.*--wait"):
            with FolderLock(layout, purpose="test"):
                pass
    finally:
        holder.kill()
        holder.wait()
    start = time.perf_counter()
    with FolderLock(layout, purpose="test", wait=True):  # the dead holder's lock is free again
        assert json.loads(layout.lock_holder.read_text())["purpose"] == "test"
    assert time.perf_counter() - start < 5 and not layout.lock_holder.exists()


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    layout = RunLayout(tmp_path / "run")
    with FolderLock(layout, purpose="outer"):
        with FolderLock(layout, purpose="inner"):
            pass
        assert layout.lock_holder.exists()  # still held by the outer block
    assert not layout.lock_holder.exists()


def test_paths_in_params_resolve_from_the_project_root_whatever_the_working_directory(
        tmp_path, monkeypatch, tiny_beir):
    import shutil

    root = tmp_path / "project"
    shutil.copytree(tiny_beir, root / "beir" / "tiny")
    (root / "params").mkdir()
    (root / "params" / "x.yaml").write_text(yaml.safe_dump(
        {"experiment": "x", "data": {"dataset": "beir/tiny"}}))
    (root / "notebooks").mkdir()
    monkeypatch.setenv("EMBEDTUNE_ROOT", str(root))
    monkeypatch.setenv("EMBEDTUNE_RESULTS_DIR", str(root / "results"))
    seen = []
    for cwd in (root, root / "notebooks", tmp_path):  # the CLI, JupyterLab, anywhere
        monkeypatch.chdir(cwd)
        ctx = open_run("params/x.yaml")
        seen.append((resolve_params_file("params/x.yaml"), ctx.data[0].path, ctx.run_dir))
    assert seen[0] == seen[1] == seen[2]
    assert seen[0][1] == (root / "beir" / "tiny").resolve() and seen[0][2] == root / "results" / "x"
    assert paths.resolve("~/x") == paths.resolve("~/x").expanduser() and paths.resolve("/a/b").as_posix() == "/a/b"
