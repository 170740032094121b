import zipfile

import pytest

from embedtune.config import DataConfig, QuerySplit
from embedtune.data import (DataError, download_beir, load_beir, make_splits, resolve_dataset,
                            safe_unzip, take_slice)
from tests.conftest import write_beir


def test_loads_tiny(tiny_beir):
    ds = load_beir(str(tiny_beir))
    assert len(ds.corpus) == 5 and ds.splits == ["test", "train"]
    assert ds.qrels["test"]["q2"] == {"d3": 1, "d4": 2}
    assert ds.fingerprint() == load_beir(str(tiny_beir)).fingerprint()


def _corrupt(folder, name, lineno, text):
    lines = (folder / name).read_text().splitlines()
    lines[lineno - 1] = text
    (folder / name).write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("text,message", [
    ('{"_id": "d2", "text": ', r"corpus\.jsonl:2: malformed JSON"),
    ('{"title": "t", "text": "x"}', r"corpus\.jsonl:2: missing '_id'"),
    ('{"_id": "d2", "title": "t"}', r"corpus\.jsonl:2: missing 'text'"),
    ('{"_id": "d1", "text": "again"}', r"corpus\.jsonl:2: duplicate _id 'd1'"),
])
def test_corpus_errors_name_file_and_line(tiny_beir, text, message):
    _corrupt(tiny_beir, "corpus.jsonl", 2, text)
    with pytest.raises(DataError, match=message):
        load_beir(str(tiny_beir))


def test_empty_corpus(tiny_beir):
    (tiny_beir / "corpus.jsonl").write_text("")
    with pytest.raises(DataError, match="empty corpus"):
        load_beir(str(tiny_beir))


def test_qrels_unknown_ids_strict_and_lenient(tiny_beir):
    with open(tiny_beir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1\tnope\t1\nq9\td1\t1\nq9\tnope2\t1\n")
    with pytest.raises(DataError, match=r"test\.tsv: 3 judgements name ids that queries.jsonl / corpus.jsonl "
                                        r"lack: line 5: doc id 'nope'; line 6: query id 'q9'; line 7"):
        load_beir(str(tiny_beir))
    ds = load_beir(str(tiny_beir), strict=False)
    assert ds.dropped["test"] == {"unknown_queries": 1, "unknown_docs": 2}
    assert ds.qrels["test"] == {"q1": {"d1": 1}, "q2": {"d3": 1, "d4": 2}}


def test_bad_qrels_line(tiny_beir):
    with open(tiny_beir / "qrels" / "test.tsv", "a") as fh:
        fh.write("q1 d1 1\n")
    with pytest.raises(DataError, match=r"test\.tsv:5: expected 3 tab-separated columns"):
        load_beir(str(tiny_beir))


def test_missing_split_lists_available(tiny_beir):
    ds = load_beir(str(tiny_beir))
    with pytest.raises(DataError, match="eval split 'dev' does not exist; available: test, train"):
        make_splits(ds, DataConfig(dataset=str(tiny_beir), eval_split="dev"), seed=0)


def test_dev_held_out_from_train_is_seeded_and_disjoint(tmp_path):
    corpus = {f"d{i}": f"doc {i}" for i in range(50)}
    queries = {f"q{i}": f"query {i}" for i in range(50)}
    train = [(f"q{i}", f"d{i}", 1) for i in range(40)]
    test = [(f"q{i}", f"d{i}", 1) for i in range(40, 50)]
    folder = write_beir(tmp_path / "b", corpus, queries, {"train": train, "test": test})
    ds = load_beir(str(folder))
    cfg = DataConfig(dataset=str(folder), dev_fraction=0.25)
    a, b = make_splits(ds, cfg, seed=1), make_splits(ds, cfg, seed=1)
    assert a.dev == b.dev and len(a.dev) == 10 and len(a.train) == 30
    assert not set(a.dev) & set(a.train)
    assert not (set(a.dev) | set(a.train)) & set(a.test)
    assert make_splits(ds, cfg, seed=2).dev != a.dev


def test_query_split_shares(tmp_path):
    corpus = {f"d{i}": f"doc {i}" for i in range(20)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    folder = write_beir(tmp_path / "c", corpus, queries, {"test": [(f"q{i}", f"d{i}", 2) for i in range(20)]})
    ds = load_beir(str(folder))
    s = make_splits(ds, DataConfig(dataset=str(folder), query_split=QuerySplit(0.5, 0.1, 0.4)), seed=3)
    assert (len(s.train), len(s.dev), len(s.test)) == (10, 2, 8)
    assert set(s.train) | set(s.dev) | set(s.test) == set(queries)
    bad = DataConfig(dataset=str(folder), query_split=QuerySplit(0.5, 0.5, 0.4))
    with pytest.raises(DataError, match="sum to 1"):
        make_splits(ds, bad, seed=3)


def test_split_seed_pins_the_query_split_whatever_the_seed(tmp_path):
    from embedtune.context import load_experiment_data

    corpus = {f"d{i}": f"doc {i}" for i in range(20)}
    queries = {f"q{i}": f"query {i}" for i in range(20)}
    folder = write_beir(tmp_path / "c", corpus, queries, {"test": [(f"q{i}", f"d{i}", 2) for i in range(20)]})
    shares = QuerySplit(0.5, 0.1, 0.4)
    free = DataConfig(dataset=str(folder), query_split=shares)
    pinned = DataConfig(dataset=str(folder), query_split=shares, split_seed=42)
    tests = {seed: load_experiment_data(pinned, seed)[1].test for seed in (1, 2, 3)}
    assert tests[1] == tests[2] == tests[3] == load_experiment_data(free, 42)[1].test
    assert load_experiment_data(free, 1)[1].test != load_experiment_data(free, 2)[1].test


def test_min_score_filters_judgements(tiny_beir):
    ds = load_beir(str(tiny_beir))
    s = make_splits(ds, DataConfig(dataset=str(tiny_beir), min_score=2), seed=0)
    assert s.test == {"q2": {"d4": 2}}


def test_slice_keeps_judged_docs(tiny_beir):
    ds = load_beir(str(tiny_beir))
    splits = make_splits(ds, DataConfig(dataset=str(tiny_beir), dev_fraction=0.5), seed=0)
    sliced, s = take_slice(ds, splits, max_queries=1, max_docs=0, seed=0)
    judged = {d for part in (s.train, s.dev, s.test) for docs in part.values() for d in docs}
    assert set(sliced.corpus) == judged and len(s.test) == 1


def test_resolve_by_env_dir(tiny_beir, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_DATA_DIR", str(tiny_beir.parent))
    assert resolve_dataset("tiny") == tiny_beir.resolve()


def test_resolve_unknown_name_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=f"looked in: {tmp_path}/nosuch"):
        resolve_dataset("nosuch")


def _zip(tmp_path, members):
    path = tmp_path / "x.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_safe_unzip_refuses_escape(tmp_path):
    bad = _zip(tmp_path, {"ok/corpus.jsonl": "{}", "../evil.txt": "x"})
    with pytest.raises(DataError, match="would escape"):
        safe_unzip(bad, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists()


def test_download_verifies_md5_and_leaves_nothing(tmp_path, tiny_beir):
    import hashlib

    members = {f"tiny/{p.relative_to(tiny_beir)}": p.read_bytes()
               for p in tiny_beir.rglob("*") if p.is_file()}
    archive = _zip(tmp_path, members)
    root = tmp_path / "data"
    with pytest.raises(DataError, match="does not match the published"):
        download_beir("tiny", root, url=archive.as_uri(), md5="0" * 32)
    assert not root.exists() or not any(root.iterdir())
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()
    folder = download_beir("tiny", root, url=archive.as_uri(), md5=md5)
    assert load_beir(str(folder)).qrels["test"]["q1"] == {"d1": 1}
    assert [p.name for p in root.iterdir()] == ["tiny"]
