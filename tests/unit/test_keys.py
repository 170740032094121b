"""Stage cache keys cover what each stage reads: library source, inputs named in params, data."""

import shutil

import pytest
import yaml

from embedtune.config import load_config
from embedtune.keys import key_parts, module_closure, package_root, stage_keys

STAGES = ["decide", "pairs", "negatives", "train", "evaluate", "report", "monitor"]


@pytest.fixture
def params(tmp_path, tiny_beir):
    def write(**sections):
        raw = {"experiment": "tiny", "data": {"dataset": str(tiny_beir)}, **sections}
        path = tmp_path / "tiny.yaml"
        path.write_text(yaml.safe_dump(raw))
        return load_config(path)
    return write


@pytest.fixture
def source(tmp_path):
    """A copy of the embedtune package whose modules a test may edit."""
    copy = tmp_path / "src" / "embedtune"
    shutil.copytree(package_root(), copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def _changed(before: dict, after: dict) -> list[str]:
    return [s for s in STAGES if before[s] != after[s]]


def _edit(path, old, new):
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_editing_a_library_module_reruns_the_stages_that_import_it_and_their_downstream(params, source):
    cfg = params()
    before = stage_keys(cfg, source)
    assert before == stage_keys(cfg, package_root())  # the copy hashes like the package
    _edit(source / "train.py", "def build_loss(", "LOSS_NOTE = 1\n\n\ndef build_loss(")
    # 00_decide's pilot fine-tunes with train.py too
    assert _changed(before, stage_keys(cfg, source)) == ["decide", "train", "evaluate", "report", "monitor"]
    edited = stage_keys(cfg, source)
    _edit(source / "stages" / "train.py", "@stage(\"train\")", "STAGE_NOTE = 1\n\n\n@stage(\"train\")")
    assert _changed(edited, stage_keys(cfg, source)) == ["train", "evaluate", "report", "monitor"]


def test_the_pilot_reads_the_training_recipe_but_not_what_it_replaces(params):
    cfg = params()
    before = stage_keys(cfg)
    assert _changed(before, stage_keys(params(train={"learning_rate": 3e-5}))) == ["decide", "train", "evaluate", "report", "monitor"]
    assert "decide" not in _changed(before, stage_keys(params(train={"epochs": 3, "keep_base_p": 0.1})))
    off = stage_keys(params(decide={"pilot": False}))
    assert "decide" not in _changed(off, stage_keys(params(decide={"pilot": False}, train={"learning_rate": 3e-5})))


def test_an_unrelated_edit_reruns_nothing_else(params, source):
    cfg = params()
    before = stage_keys(cfg, source)
    _edit(source / "monitor.py", "def gold_fingerprint(", "NOTE = 1\n\n\ndef gold_fingerprint(")
    assert _changed(before, stage_keys(cfg, source)) == ["monitor"]
    (source / "sweep" / "compare.py").write_text((source / "sweep" / "compare.py").read_text() + "\nX = 1\n")
    _edit(source / "cli.py", "def main(", "Y = 2\n\n\ndef main(")
    assert _changed(before, stage_keys(cfg, source)) == ["monitor"]  # sweeps and the CLI compute nothing


def test_docstrings_and_comments_change_no_key(params, source):
    cfg = params()
    before = stage_keys(cfg, source)
    _edit(source / "retrieval.py", '"""First-stage retrieval', '"""Reworded: first-stage retrieval')
    _edit(source / "retrieval.py", "def texts_fingerprint(", "# a comment\ndef texts_fingerprint(")
    assert stage_keys(cfg, source) == before
    _edit(source / "retrieval.py", "k = min(top_k, len(self.doc_ids))", "k = min(top_k, len(self.doc_ids)) + 0")
    assert _changed(before, stage_keys(cfg, source)) == STAGES  # every stage searches


def test_a_changed_gold_file_reruns_every_stage_that_reads_the_data(params, tmp_path):
    gold = tmp_path / "gold.tsv"
    gold.write_text("query_id\tdoc_id\tgrade\nq1\td2\t1\n")
    cfg = params(gold={"files": [str(gold)]})
    before = stage_keys(cfg)
    gold.write_text("query_id\tdoc_id\tgrade\nq1\td2\t2\n")
    assert _changed(before, stage_keys(cfg)) == STAGES


def test_input_files_rerun_from_the_stage_that_reads_them(params, tmp_path):
    manual = tmp_path / "curation.tsv"
    manual.write_text("q3\td2\texclude\n")
    cfg = params(negatives={"manual": str(manual)})
    before = stage_keys(cfg)
    manual.write_text("q3\td1\texclude\n")
    assert _changed(before, stage_keys(cfg)) == ["negatives", "train", "evaluate", "report", "monitor"]


def test_local_model_weights_are_hashed(params, tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "modules.json").write_text("[]")
    (model / "model.safetensors").write_bytes(b"\0" * 64)
    cfg = params(model={"name": str(model)})
    before = stage_keys(cfg)
    assert key_parts(cfg)["decide"]["common"]["inputs"]["model.name"].startswith("files:")
    (model / "model.safetensors").write_bytes(b"\1" * 64)
    assert _changed(before, stage_keys(cfg)) == STAGES


def test_the_dataset_content_is_hashed(params, tiny_beir):
    cfg = params()
    before = stage_keys(cfg)
    with open(tiny_beir / "corpus.jsonl", "a") as fh:
        fh.write('{"_id": "d9", "title": "", "text": "a new document"}\n')
    assert _changed(before, stage_keys(cfg)) == STAGES


def test_stage_closures_follow_lazy_imports_and_skip_bookkeeping():
    closure = module_closure(["embedtune.stages.train"])
    assert "embedtune.registry" in closure  # imported inside register_model
    assert "embedtune.keys" not in closure and "embedtune.runfolder" not in closure
    assert not any(m.startswith("embedtune.sweep") for m in closure)
