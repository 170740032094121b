import json
import os

import pytest

from embedtune.registry import Registry, RegistryError, registry_dir


def fake_model(folder, fingerprint, base_fp="sha256:" + "b" * 64, weights=b"w"):
    """A folder that looks like a saved model, with the version.json 03_train writes."""
    folder.mkdir(parents=True)
    (folder / "modules.json").write_text("[]")
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "params.yaml").write_text("experiment: toy\nseed: 1\n")
    (folder / "version.json").write_text(json.dumps({
        "version": f"toy-{fingerprint[7:15]}", "base_model": "base/model", "base_model_fingerprint": base_fp,
        "fingerprint": fingerprint, "training_data_fingerprint": "sha256:" + "d" * 64, "loss": "mnrl",
        "examples": 10, "steps": 2, "dev_before": {"x": 0.1}, "dev_best": 0.5,
        "git": {"commit": "abc123", "dirty": False}, "created": "2026-01-01T00:00:00+00:00"}))
    return folder


@pytest.fixture
def registry(tmp_path):
    reg = Registry(tmp_path / "models")
    for i in (1, 2, 3):
        reg.register(fake_model(tmp_path / f"m{i}", "sha256:" + str(i) * 64, weights=bytes([i])))
    return reg


def test_register_numbers_versions_and_keeps_a_manifest(registry, tmp_path):
    assert registry.version_ids() == ["v1", "v2", "v3"]
    m = registry.manifest("v2")
    assert m["fingerprint"] == "sha256:" + "2" * 64
    assert m["base_model"] == "base/model" and m["base_model_fingerprint"] == "sha256:" + "b" * 64
    assert m["training_data_fingerprint"] == "sha256:" + "d" * 64
    assert m["params"] == {"experiment": "toy", "seed": 1}
    assert m["git"]["commit"] == "abc123" and m["created"]
    assert m["metrics"]["dev"]["best"] == 0.5 and m["training"]["steps"] == 2
    assert (registry.model_path("v2") / "model.safetensors").read_bytes() == bytes([2])
    # the same weights again: the existing version, no copy
    assert registry.register(tmp_path / "m2")["version"] == "v2"
    assert registry.version_ids() == ["v1", "v2", "v3"]


def test_register_refuses_a_folder_without_a_model(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(RegistryError, match="no saved sentence-transformers model"):
        Registry(tmp_path / "models").register(tmp_path / "empty")


def test_promote_and_rollback_follow_the_lineage(registry):
    assert registry.production() is None
    with pytest.raises(RegistryError, match="no version has been promoted"):
        registry.rollback()
    registry.promote("v1")
    with pytest.raises(RegistryError, match="v1 is the first version"):
        registry.rollback()
    registry.promote("v2")
    registry.promote("v2")  # already live: no new event
    registry.promote("v3")
    assert registry.production() == "v3"
    assert registry.rollback()["production"] == "v2"
    assert registry.rollback()["production"] == "v1"
    pointer = registry.pointer()
    assert [(e["action"], e["from"], e["to"]) for e in pointer["events"]] == [
        ("promote", None, "v1"), ("promote", "v1", "v2"), ("promote", "v2", "v3"),
        ("rollback", "v3", "v2"), ("rollback", "v2", "v1")]
    with pytest.raises(RegistryError, match=r"no version 'v9'.*v1, v2, v3"):
        registry.promote("v9")


def test_an_interrupted_promote_leaves_the_old_pointer_valid(registry, monkeypatch):
    registry.promote("v1")
    before = registry.pointer_path.read_text()

    def crash(src, dst):
        raise OSError("power cut between writing the new pointer and replacing the old one")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="power cut"):
        registry.promote("v2")
    monkeypatch.undo()
    assert registry.pointer_path.read_text() == before
    assert json.loads(before)["production"] == "v1" and registry.production() == "v1"
    leftovers = [p.name for p in registry.root.iterdir() if p.name not in ("versions", "production.json", ".lock")]
    assert leftovers == []  # no half-written pointer beside it
    assert registry.promote("v2")["production"] == "v2"  # and the next promote works
    assert registry.rollback()["production"] == "v1"


def test_a_damaged_version_is_not_promoted(registry):
    (registry.model_path("v2") / "model.safetensors").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match=r"v2 is damaged.*model.safetensors"):
        registry.promote("v2")
    assert registry.production() is None


def test_record_metrics_and_table(registry):
    registry.promote("v1")
    registry.record_metrics("v1", "scifact", {"metrics": {"recall@10": 0.8}})
    table = registry.table()
    assert list(table.index) == ["v1", "v2", "v3"]
    assert table.loc["v1", "production"] == "*" and table.loc["v2", "production"] == ""
    assert table.loc["v1", "recall@10 (scifact)"] == 0.8


def test_registry_dir_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_ROOT", str(tmp_path))
    monkeypatch.delenv("EMBEDTUNE_REGISTRY", raising=False)
    assert registry_dir() == tmp_path / "models"
    monkeypatch.setenv("EMBEDTUNE_REGISTRY", str(tmp_path / "elsewhere"))
    assert registry_dir() == tmp_path / "elsewhere"
    assert registry_dir("reg") == tmp_path / "reg"  # params win, relative to the project
    assert registry_dir("/abs/reg").as_posix() == "/abs/reg"


def test_register_fingerprints_a_model_saved_without_version_json(tmp_path):
    from embedtune.models import load_model, model_fingerprint, resolve_model

    folder = resolve_model("sentence-transformers/all-MiniLM-L6-v2").path  # a plain saved model
    reg = Registry(tmp_path / "models")
    manifest = reg.register(folder)
    assert manifest["fingerprint"] == model_fingerprint(load_model(folder, device="cpu"))
    assert manifest["base_model_fingerprint"] is None
    reg.promote(manifest["version"])  # its file hashes verify
    assert model_fingerprint(reg.load("v1", device="cpu")) == manifest["fingerprint"]


def test_cli_models_commands(registry, capsys):
    from embedtune.cli import main

    root = str(registry.root)
    assert main(["models", "--registry", root, "promote", "v1"]) == 0
    assert main(["models", "--registry", root, "promote", "v3"]) == 0
    assert "production: v1 -> v3" in capsys.readouterr().out
    assert main(["models", "--registry", root, "list"]) == 0
    listing = capsys.readouterr().out
    assert "v2" in listing and listing.count("*") == 1
    assert main(["models", "--registry", root, "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "v3" and shown["production"] is True
    assert main(["models", "--registry", root, "rollback"]) == 0
    assert "production: v3 -> v1" in capsys.readouterr().out
    assert main(["models", "--registry", root, "promote", "v7"]) == 2
    assert "no version 'v7'" in capsys.readouterr().err
    assert registry.production() == "v1"


def test_train_stage_registration_does_not_fail_on_an_unwritable_registry(tmp_path):
    from embedtune.config import config_from_dict
    from embedtune.context import RunContext
    from embedtune.stages.train import register_model

    model = fake_model(tmp_path / "run" / "model", "sha256:" + "7" * 64)
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the registry should be")
    cfg = config_from_dict({"experiment": "x", "data": {"dataset": "d"}, "monitor": {"registry": str(blocked)}})
    outcome = register_model(RunContext(cfg, tmp_path / "run"), model)
    assert outcome["path"] == str(blocked) and "Error" in outcome["error"]
    cfg = config_from_dict({"experiment": "x", "data": {"dataset": "d"},
                            "monitor": {"registry": str(tmp_path / "reg")}})
    assert register_model(RunContext(cfg, tmp_path / "run"), model) == {"path": str(tmp_path / "reg"),
                                                                        "version": "v1"}
    off = config_from_dict({"experiment": "x", "data": {"dataset": "d"},
                            "monitor": {"registry": str(tmp_path / "reg2"), "register": False}})
    assert "skipped" in register_model(RunContext(off, tmp_path / "run"), model)
    assert not (tmp_path / "reg2").exists()
