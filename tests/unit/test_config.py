import dataclasses

import pytest

from embedtune.config import ConfigError, config_from_dict, load_config, parse_override


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path


BASE = "experiment: x\ndata:\n  dataset: scifact\n"


def test_defaults_and_types(tmp_path):
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.model.name == "sentence-transformers/all-MiniLM-L6-v2"
    assert cfg.retrieval.bm25.k1 == 1.5 and cfg.retrieval.bm25.b == 0.75
    assert "ndcg@10" in cfg.evaluate.metrics
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 1


def test_unknown_key_names_path_and_suggests(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown key model\.batchsize \(did you mean 'batch_size'\?\)"):
        load_config(write(tmp_path, BASE + "model:\n  batchsize: 3\n"))


def test_unknown_top_level_key_lists_valid_keys(tmp_path):
    with pytest.raises(ConfigError, match="valid keys here: clicks, crop, data, decide, evaluate, experiment"):
        load_config(write(tmp_path, BASE + "trian: {}\n"))


def test_wrong_type(tmp_path):
    with pytest.raises(ConfigError, match=r"model\.batch_size: expected an integer, got 'big'"):
        load_config(write(tmp_path, BASE + "model:\n  batch_size: big\n"))
    with pytest.raises(ConfigError, match=r"data\.strict: expected true or false"):
        load_config(write(tmp_path, BASE + "  strict: 1\n"))


def test_literal_lists_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"retrieval\.hybrid\.method: 'sum' is not one of 'convex', 'rrf'"):
        load_config(write(tmp_path, BASE + "retrieval:\n  hybrid:\n    method: sum\n"))


def test_missing_required(tmp_path):
    with pytest.raises(ConfigError, match=r"missing required key data\.dataset"):
        load_config(write(tmp_path, "experiment: x\ndata: {}\n"))
    with pytest.raises(ConfigError, match="missing required key experiment"):
        load_config(write(tmp_path, "data:\n  dataset: a\n"))


def test_overrides_are_validated_like_the_file(tmp_path):
    path = write(tmp_path, BASE)
    cfg = load_config(path, {"model.batch_size": 16, "retrieval.hybrid.method": "rrf"})
    assert cfg.model.batch_size == 16 and cfg.retrieval.hybrid.method == "rrf"
    with pytest.raises(ConfigError, match="model.batch_size: expected an integer, got '16'"):
        load_config(path, {"model.batch_size": "16"})  # API values are Python values, not YAML text
    with pytest.raises(ConfigError, match=r"unknown key model\.nme"):
        load_config(path, {"model.nme": "x"})


def test_parse_override():
    assert parse_override("model.batch_size=8") == ("model.batch_size", 8)
    assert parse_override("train.learning_rate=2e-5") == ("train.learning_rate", 2e-5)  # a number
    assert parse_override('experiment="123"') == ("experiment", "123")  # quoted: text, read once
    assert parse_override("data.max_docs=null") == ("data.max_docs", None)
    with pytest.raises(ConfigError):
        parse_override("model.batch_size")


def test_every_committed_params_file_loads():
    from tests.conftest import ROOT

    files = sorted((ROOT / "params").glob("*.yaml"))
    assert files
    from embedtune.sweep import plan_sweep
    from embedtune.sweep.plan import read_params

    for path in files:
        raw, sweep = read_params(path)
        if sweep is None:
            load_config(path)
        else:  # a study: its base and every point must load
            config_from_dict(raw)
            with pytest.raises(ConfigError, match="embedtune sweep"):
                load_config(path)
            assert len(plan_sweep(path).points) >= 2
