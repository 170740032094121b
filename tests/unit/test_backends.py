"""OpenVINO and ONNX Runtime encoders agree with sentence-transformers; exports are cached; auto
chooses on dev queries."""

import numpy as np
import pytest

from embedtune import backends
from embedtune.config import ModelConfig

pytestmark = pytest.mark.skipif(not (backends.available("openvino") and backends.available("onnx")),
                                reason="the fast extra is not installed: pip install -e '.[fast]'")

TEXTS = ["Statins lower LDA cholesterol but may cause muscle pain in some patients.",
         "The jet engine produces thrust by expelling hot exhaust gas at high speed.",
         "Bread rises because yeast ferments sugars and releases carbon dioxide.",
         "short one"] * 3
CALIBRATION = [f"passage {i} about {w} and the {v} it has" for i, (w, v) in
               enumerate(zip("cells engines bread rivers stars genes".split() * 4, "effect cause".split() * 12))]


@pytest.fixture(scope="module")
def model():
    from embedtune.models import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One cache for the module: each setting is exported once, and auto reuses the exports."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EMBEDTUNE_CACHE_DIR", str(folder))
        yield folder


def _cosines(a, b):
    return (a * b).sum(axis=1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# int8 floors: 24 toy calibration passages here; calibrated on 300 corpus passages, OpenVINO int8
# keeps cosine >= 0.99 (the bench page measures it with nDCG on scifact and nfcorpus)
@pytest.mark.parametrize("backend, quantize, floor", [("openvino", "none", 0.9999), ("onnx", "none", 0.9999),
                                                      ("openvino", "int8", 0.8), ("onnx", "int8", 0.95)])
def test_exported_encoders_agree_with_sentence_transformers(model, cache, backend, quantize, floor):
    reference = backends.encoder(model, ModelConfig(precision="fp32")).encode(TEXTS, "document", 4)
    enc = backends.encoder(model, ModelConfig(backend=backend, quantize=quantize, precision="fp32"), CALIBRATION)
    emb = enc.encode(TEXTS, "document", batch_size=4)  # batches of several lengths: padding handled
    assert emb.dtype == np.float32 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-3)
    assert _cosines(emb, reference).min() >= floor
    assert enc.name.startswith(f"{backend}-{'int8' if quantize == 'int8' else 'fp32'}")
    exported = [p for p in (cache / "exported").iterdir() if p.name.endswith(enc.name)]
    assert len(exported) == 1 and (exported[0] / "export.json").is_file()
    mtime = exported[0].stat().st_mtime_ns
    backends.encoder(model, ModelConfig(backend=backend, quantize=quantize), CALIBRATION)  # cached: no export
    assert exported[0].stat().st_mtime_ns == mtime


def test_settings_that_cannot_work_are_refused(model):
    with pytest.raises(backends.BackendError, match="needs backend openvino or onnx"):
        backends.encoder(model, ModelConfig(quantize="int8"))
    with pytest.raises(backends.BackendError, match="calibration passages"):
        backends.encoder(model, ModelConfig(backend="openvino", quantize="int8"))


@pytest.mark.slow  # times every encoding setting on dev queries: ~1 min; .ci/run runs it after `make test`
def test_auto_keeps_the_fastest_setting_within_the_tolerance(model, cache):
    corpus = {f"d{i}": t for i, t in enumerate(TEXTS[:4] + CALIBRATION[:12])}
    queries = {"q1": "cholesterol drugs and muscle pain", "q2": "how jet engines make thrust"}
    qrels = {"q1": {"d0": 1}, "q2": {"d1": 1}}
    choice = backends.choose(model, ModelConfig(batch_size=8), queries, qrels, corpus, CALIBRATION)
    rows = {(r["backend"], r["quantize"]): r for r in choice["candidates"]}
    assert {("torch", "none"), ("openvino", "none"), ("onnx", "int8")} <= set(rows)
    chosen = rows[(choice["backend"], choice["quantize"])]
    assert chosen["ndcg@10"] >= choice["reference_ndcg@10"] - 0.002
    assert all(r["docs_per_second"] <= chosen["docs_per_second"] for r in rows.values()
               if "error" not in r and r["ndcg@10"] >= choice["reference_ndcg@10"] - 0.002)
    assert "fastest" in choice["chosen_by"] and choice["machine"]
    again = backends.choose(model, ModelConfig(batch_size=8), queries, qrels, corpus, CALIBRATION)
    assert again == choice  # measured once, then read back


def test_sentence_transformers_process_pool_encodes_like_one_process(model):
    one = backends.encoder(model, ModelConfig(precision="fp32")).encode(TEXTS, "document", 4)
    two = backends.encoder(model, ModelConfig(precision="fp32", processes=2)).encode(TEXTS, "document", 4)
    assert _cosines(one, two).min() > 0.9999
