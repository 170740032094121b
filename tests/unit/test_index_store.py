import copy
import json

import numpy as np
import pytest

from embedtune import index_store
from embedtune.config import ModelConfig
from embedtune.index_store import CorpusIndex, VersionMismatchError

FP32 = ModelConfig(precision="fp32", batch_size=4)  # fp32: incremental == full to round-off

CORPUS = {
    "d1": {"title": "Cats", "text": "Cats are small domesticated felines that purr."},
    "d2": {"title": "Dogs", "text": "Dogs are loyal animals that bark."},
    "d3": {"title": "Rockets", "text": "Rocket engines burn propellant to produce thrust."},
    "d4": {"title": "Jet engines", "text": "A jet engine produces thrust by expelling hot gas."},
    "d5": {"title": "Bread", "text": "Bread is baked from flour, water and yeast."},
    "d6": {"title": "", "text": "Tea is brewed by steeping leaves in hot water."},
}


@pytest.fixture(scope="module")
def model():
    from embedtune.models import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.fixture
def counted(monkeypatch):
    """Every text the index encodes, in order."""
    from embedtune import models

    seen: list[str] = []
    real = models.encode_documents

    def spy(model, texts, **kwargs):
        seen.extend(texts)
        return real(model, texts, **kwargs)

    monkeypatch.setattr(models, "encode_documents", spy)  # every torch encoding goes through it
    return seen


def changed_corpus():
    corpus = {d: dict(doc) for d, doc in CORPUS.items() if d != "d2"}  # d2 removed
    corpus["d3"] = {"title": "Rockets", "text": "Rocket engines expel exhaust to produce thrust."}  # changed
    corpus["d7"] = {"title": "Volcanoes", "text": "Magma erupts from volcanoes as lava."}  # added
    corpus["d0"] = {"title": "Rain", "text": "Rain falls when droplets in clouds grow heavy."}  # added
    return corpus


def test_incremental_update_encodes_only_changes_and_equals_a_full_rebuild(model, counted, tmp_path):
    index = CorpusIndex(tmp_path / "inc")
    first = index.update(model, CORPUS, version="v1", cfg=FP32)
    assert (first.encoded, first.added, first.kept) == (6, 6, 0)
    counted.clear()

    corpus = changed_corpus()
    report = index.update(model, corpus, version="v1", cfg=FP32)
    assert (report.encoded, report.added, report.changed, report.removed, report.kept) == (3, 2, 1, 1, 4)
    assert sorted(counted) == sorted(["Rockets Rocket engines expel exhaust to produce thrust.",
                                      "Volcanoes Magma erupts from volcanoes as lava.",
                                      "Rain Rain falls when droplets in clouds grow heavy."])

    full = CorpusIndex(tmp_path / "full")
    assert not full.update(model, corpus, version="v1", cfg=FP32).from_cache
    again = CorpusIndex(tmp_path / "again")  # a full build of the same corpus: the embedding cache
    assert again.update(model, corpus, version="v1", cfg=FP32).from_cache
    np.testing.assert_array_equal(again.embeddings, full.embeddings)
    reopened = CorpusIndex(tmp_path / "inc")  # what is on disk, not what is in memory
    assert reopened.doc_ids == full.doc_ids == sorted(corpus)
    assert reopened.corpus_fingerprint == full.corpus_fingerprint
    np.testing.assert_allclose(reopened.embeddings, full.embeddings, atol=1e-5)
    assert len(list((tmp_path / "inc").glob("embeddings-*.npy"))) == 1  # the old file is gone

    counted.clear()
    same = index.update(model, corpus, version="v1", cfg=FP32)
    assert (same.encoded, same.kept, same.removed) == (0, 7, 0) and counted == []
    assert [u["encoded"] for u in reopened.summary()["updates"]] == [6, 3]


def test_search_finds_the_right_document(model, tmp_path):
    index = CorpusIndex(tmp_path / "ix")
    index.update(model, CORPUS, version="v1", cfg=FP32)
    run = index.search(model, {"q1": "why do cats purr", "q2": "how is bread made"},
                       version="v1", cfg=FP32, top_k=3)
    assert next(iter(run["q1"])) == "d1" and next(iter(run["q2"])) == "d5"
    assert len(run["q1"]) == 3


def test_mixing_versions_raises_naming_both(model, tmp_path):
    index = CorpusIndex(tmp_path / "ix")
    index.update(model, CORPUS, version="v1", cfg=FP32)
    with pytest.raises(VersionMismatchError, match=r"model version v2: it was built with version v1"):
        index.search(model, {"q": "cats"}, version="v2", cfg=FP32)
    with pytest.raises(VersionMismatchError, match=r"cannot update .* version v2: .*version v1"):
        index.update(model, CORPUS, version="v2", cfg=FP32)
    # another model passed off under v1's name is caught by its weights
    other = copy.deepcopy(model)
    param = next(other.parameters())
    param.data += 0.01
    with pytest.raises(VersionMismatchError, match="another model under the same name"):
        index.search(other, {"q": "cats"}, version="v1", cfg=FP32)
    assert CorpusIndex(tmp_path / "ix").model_version == "v1"  # nothing was overwritten


def test_an_interrupted_update_keeps_the_previous_index(model, tmp_path, monkeypatch):
    folder = tmp_path / "ix"
    CorpusIndex(folder).update(model, CORPUS, version="v1", cfg=FP32)
    before = json.loads((folder / "manifest.json").read_text())

    def crash(path, obj):
        raise OSError("killed before the manifest was replaced")

    monkeypatch.setattr(index_store, "atomic_write_json", crash)
    with pytest.raises(OSError, match="killed"):
        CorpusIndex(folder).update(model, changed_corpus(), version="v1", cfg=FP32)
    monkeypatch.undo()
    index = CorpusIndex(folder)
    assert index.manifest == before and index.doc_ids == sorted(CORPUS)
    assert index.embeddings.shape == (6, 384)  # the embeddings it names are still there
    report = index.update(model, changed_corpus(), version="v1", cfg=FP32)
    assert report.encoded == 3
    assert len(list(folder.glob("embeddings-*.npy"))) == 1  # the orphan of the crash is cleaned


def test_a_new_precision_reencodes_everything(model, tmp_path):
    index = CorpusIndex(tmp_path / "ix")
    index.update(model, CORPUS, version="v1", cfg=FP32)
    report = index.update(model, CORPUS, version="v1", cfg=ModelConfig(precision="bf16", batch_size=4))
    assert (report.encoded, report.kept) == (6, 0) and index.manifest["precision"] == "bf16"
    assert index.update(model, CORPUS, version="v1", cfg=FP32, full=True).encoded == 6


def test_cli_reembed_updates_the_production_version_index(tiny_beir, tmp_path, capsys):
    from embedtune.cli import main
    from embedtune.models import resolve_model
    from embedtune.registry import Registry

    registry = Registry(tmp_path / "models")
    version = registry.register(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path)["version"]
    params = tmp_path / "p.yaml"
    params.write_text(f"experiment: tiny\ndata: {{dataset: {tiny_beir}}}\n"
                      f"model: {{device: cpu, precision: fp32}}\nmonitor: {{registry: {registry.root}}}\n")
    assert main(["reembed", str(params)]) == 2  # nothing in production yet
    assert "no version in production" in capsys.readouterr().err
    registry.promote(version)
    assert main(["reembed", str(params)]) == 0
    assert "encoded 5 (added 5, changed 0), removed 0, kept 0" in capsys.readouterr().out
    assert main(["reembed", str(params), "--version", "v1"]) == 0
    assert "encoded 0 (added 0, changed 0), removed 0, kept 5" in capsys.readouterr().out
    index = CorpusIndex(registry.index_dir("v1", "tiny"))
    assert index.model_version == "v1" and index.model_fingerprint == registry.manifest("v1")["fingerprint"]
