"""Bad input gives one line naming the file and line (or the key) and what to do, exit code 2,
and nothing written; registry ids are validated; a key never reaches a file or a message."""

import json
from pathlib import Path

import pytest
import yaml

from embedtune.cli import main
from embedtune.config import ConfigError, load_config, redact_url, save_config
from embedtune.data import DataError, load_beir

KEY = "sk-DUMMY-0123456789abcdef"  # a dummy key: no file, message or notebook may hold it


@pytest.fixture
def params(tmp_path, tiny_beir):
    def write(dataset=None, **sections):
        raw = {"experiment": "bad", "data": {"dataset": str(dataset or tiny_beir)},
               "results_dir": str(tmp_path / "results"), **sections}
        path = tmp_path / "bad.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path
    return write


def _one_line_error(capsys, *expected: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("embedtune: error: "), err
    for text in expected:
        assert text in err[0], (text, err[0])
    assert "Traceback" not in err[0]
    return err[0]


def test_an_unclosed_bracket_in_set_is_a_message(params, capsys, tmp_path):
    assert main(["run", str(params()), "--set", "negatives.sources=[bm25"]) == 2
    _one_line_error(capsys, "--set negatives.sources", "not valid YAML", "--set 'negatives.sources=[bm25]'")
    assert not (tmp_path / "results").exists()


def test_a_quoted_number_stays_text(params):
    from embedtune.config import parse_override

    key, value = parse_override('experiment="123"')
    assert load_config(params(), {key: value}).experiment == "123"


@pytest.mark.parametrize("missing", ["queries.jsonl", "corpus.jsonl", "qrels"])
def test_a_beir_folder_missing_a_file_is_named_before_anything_runs(params, capsys, tmp_path, tiny_beir, missing):
    import shutil

    target = tiny_beir / missing
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    assert main(["run", str(params()), "--no-progress"]) == 2
    _one_line_error(capsys, f"{tiny_beir} is not a BEIR-format folder", missing.split(".")[0])
    assert not (tmp_path / "results").exists()  # nothing written


def test_a_folder_that_is_not_a_dataset(params, capsys, tmp_path):
    assert main(["run", str(params(dataset="/etc")), "--no-progress"]) == 2
    _one_line_error(capsys, "/etc is not a BEIR-format folder: no corpus.jsonl, queries.jsonl")
    assert not (tmp_path / "results").exists()


def test_invalid_utf8_names_file_line_and_column(tiny_beir):
    with open(tiny_beir / "corpus.jsonl", "ab") as fh:
        fh.write(b'{"_id": "d9", "text": "caf\xe9"}\n')
    with pytest.raises(DataError, match=r"corpus\.jsonl:6: not valid UTF-8 \(byte 0xe9 at column 27\)"):
        load_beir(str(tiny_beir))


def test_a_byte_order_mark_is_accepted(tiny_beir):
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = tiny_beir / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_beir(str(tiny_beir))
    assert "d1" in ds.corpus and "q1" in ds.queries and ds.qrels["test"]["q1"] == {"d1": 1}


def test_an_empty_query_text_is_refused_with_its_line(tiny_beir):
    with open(tiny_beir / "queries.jsonl", "a") as fh:
        fh.write(json.dumps({"_id": "q9", "text": "  "}) + "\n")
    with pytest.raises(DataError, match=r"queries\.jsonl:5: query 'q9' has an empty text"):
        load_beir(str(tiny_beir))


def test_a_bad_params_file_names_its_line(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("experiment: x\ndata:\n  dataset: [a\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:\d+: not valid YAML"):
        load_config(path)
    path.write_bytes(b"experiment: caf\xe9\n")
    with pytest.raises(ConfigError, match=r"p\.yaml:1: not valid UTF-8"):
        load_config(path)


# ---- the registry ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", ["../../outside", "v0", "latest", "v1/../v2", ""])
def test_promote_refuses_what_is_not_a_version_id(tmp_path, capsys, version):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "manifest.json").write_text("{}")
    registry = tmp_path / "registry"
    assert main(["models", "--registry", str(registry), "promote", version]) == 2
    _one_line_error(capsys, "is not a version id")
    assert not (registry / "production.json").exists()


def test_a_version_without_a_file_list_cannot_be_verified(tmp_path):
    from embedtune.registry import Registry, RegistryError

    registry = Registry(tmp_path / "registry")
    (registry.versions_dir / "v1" / "model").mkdir(parents=True)
    (registry.versions_dir / "v1" / "manifest.json").write_text(json.dumps({"version": "v1", "files": {}}))
    with pytest.raises(RegistryError, match="lists no files"):
        registry.promote("v1")
    assert registry.production() is None


def test_the_version_mixing_error_advises_a_command_that_works(tmp_path):
    import numpy as np

    from embedtune.config import ModelConfig
    from embedtune.index_store import CorpusIndex, VersionMismatchError
    from embedtune.models import load_model

    model = load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")
    corpus = {"d1": {"title": "", "text": "cats purr"}, "d2": {"title": "", "text": "dogs bark"}}
    index = CorpusIndex(tmp_path / "index")
    index.update(model, corpus, version="v1", cfg=ModelConfig(batch_size=2))
    with pytest.raises(VersionMismatchError, match=r"embedtune reembed PARAMS --version v2 --full") as info:
        index.update(model, corpus, version="v2", cfg=ModelConfig(batch_size=2))
    assert "--version v2`" not in str(info.value)  # not the command that just failed
    report = index.update(model, corpus, version="v2", cfg=ModelConfig(batch_size=2), full=True)
    assert report.encoded == 2 and index.model_version == "v2"
    assert np.allclose(np.linalg.norm(index.embeddings, axis=1), 1.0, atol=1e-3)


# ---- secrets ---------------------------------------------------------------------------------

def test_a_key_placed_in_api_key_env_is_refused_without_echoing_it(params, capsys, tmp_path):
    assert main(["run", str(params()), "--set", f"synthetic.endpoint.api_key_env={KEY}"]) == 2
    line = _one_line_error(capsys, "synthetic.endpoint.api_key_env must NAME the environment variable")
    assert KEY not in line and not (tmp_path / "results").exists()
    with pytest.raises(ConfigError) as info:
        load_config(params(synthetic={"endpoint": {"api_key_env": KEY}}))
    assert KEY not in str(info.value)


def test_keys_in_urls_are_redacted_in_saved_params_and_messages(params, tmp_path, capsys):
    url = f"https://user:{KEY}@api.example.com/v1?key={KEY}&api-version=2024-06-01"
    assert redact_url(url) == "https://REDACTED@api.example.com/v1?key=REDACTED&api-version=2024-06-01"
    cfg = load_config(params(synthetic={"endpoint": {"base_url": url}}))
    assert cfg.synthetic.endpoint.base_url == url  # the run itself gets the real URL
    save_config(cfg, tmp_path / "saved.yaml")
    saved = (tmp_path / "saved.yaml").read_text()
    assert KEY not in saved and "api.example.com/v1?key=REDACTED&api-version=2024-06-01" in saved
    assert main(["run", str(params()), "--set", f'synthetic.endpoint.base_url=["{url}"]']) == 2
    line = _one_line_error(capsys, "synthetic.endpoint.base_url: expected a string", "key=REDACTED")
    assert KEY not in line


def test_the_route_goes_before_the_query_string():
    from embedtune.synthetic.generators import route_url

    assert route_url("https://x.example/v1/?api-version=2&key=k", "/chat/completions") == \
        "https://x.example/v1/chat/completions?api-version=2&key=k"
    assert route_url("http://127.0.0.1:8000/v1", "/completions") == "http://127.0.0.1:8000/v1/completions"


def test_a_server_echoing_the_url_key_is_redacted():
    pytest.importorskip("httpx")
    from embedtune.config import EndpointConfig
    from embedtune.synthetic import OpenAICompatibleGenerator

    gen = OpenAICompatibleGenerator(EndpointConfig(base_url=f"http://127.0.0.1:9/v1?key={KEY}", model="m",
                                                   api_key_env=None))
    assert KEY not in gen._redact(f"bad request for /v1/chat/completions?key={KEY}")
    assert KEY not in gen.identity
    gen.close()


def test_every_bad_input_is_in_the_readme_table():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("### Bad input", 1)[1].split("\n## ", 1)[0]
    for text in ("--set", "corpus.jsonl", "UTF-8", "empty", "promote", "reembed", "api_key_env", "Ctrl-C",
                 "qrels", "URL", "search.json"):
        assert text in section, text


def test_a_document_with_no_text_is_kept_with_a_warning_as_beir_keeps_it(tiny_beir, caplog):
    with open(tiny_beir / "corpus.jsonl", "a") as fh:
        fh.write(json.dumps({"_id": "d99", "title": "", "text": " "}) + "\n")
    with caplog.at_level("WARNING", logger="embedtune.data"):
        ds = load_beir(str(tiny_beir))
    assert ds.corpus["d99"] == {"title": "", "text": " "}
    assert "1 document(s) with neither text nor title (first: line" in caplog.text


@pytest.mark.parametrize("name", ["scifact", "nfcorpus", "cranfield"])
def test_the_real_datasets_pass_validation(name):
    from embedtune import paths

    if not ((paths.env_data_dir() or paths.data_dir()) / name / "corpus.jsonl").is_file():
        pytest.skip(f"{name} not under EMBEDTUNE_DATA_DIR")
    ds = load_beir(name)
    assert ds.corpus and ds.queries and ds.qrels
