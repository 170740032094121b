import pytest

from embedtune import gold as G
from embedtune import labeling as L
from embedtune.config import load_config
from embedtune.data import load_beir

CORPUS = {d: {"title": f"T{d}", "text": f"text of {d}"} for d in ("d1", "d2", "d3", "d4")}
QUERIES = {"q1": "Why do cats purr?", "q2": "rocket thrust"}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_tsv_with_header_any_column_order(tmp_path):
    path = write(tmp_path, "g.tsv", "doc_id\tgrade\tquery-id\nd1\t2\tq1\nd2\t0\tq1\n")
    gold = G.read_gold(path, CORPUS, QUERIES)
    assert gold.qrels == {"q1": {"d1": 2, "d2": 0}}
    assert gold.relevant() == {"q1": {"d1": 2}}
    assert gold.new_queries == set() and gold.stats["header"] is True
    assert gold.stats["delimiter"] == "tab" and gold.stats["judgements"] == 2


def test_csv_without_header_texts_ids_and_default_grade(tmp_path):
    path = write(tmp_path, "g.csv", 'q2,d3\n"why do cats, purr",d1,1\nhow do plants grow,d4,2\n')
    gold = G.read_gold(path, CORPUS, QUERIES)
    new_id = G.gold_query_id("how do plants grow")
    # q2 is an id of the dataset; "why do cats, purr" matches q1's text after normalisation
    assert gold.qrels == {"q2": {"d3": 1}, "q1": {"d1": 1}, new_id: {"d4": 2}}
    assert gold.new_queries == {new_id} and gold.queries[new_id] == "how do plants grow"
    assert gold.stats["header"] is False and gold.stats["delimiter"] == "comma"


def test_unknown_query_id_with_text_becomes_a_new_query(tmp_path):
    path = write(tmp_path, "g.tsv", "query_id\tquery\tdoc_id\nmine-1\tsolar panels\td2\n")
    gold = G.read_gold(path, CORPUS, QUERIES)
    assert gold.qrels == {"mine-1": {"d2": 1}} and gold.queries == {"mine-1": "solar panels"}


def test_every_bad_line_is_reported_with_its_number(tmp_path):
    path = write(tmp_path, "g.tsv", "\n".join([
        "query\tdoc_id\tgrade",
        "q1\td1\t1",       # 2: fine (q1 is taken as text here, a header said 'query')
        "q1\tnope\t1",     # 3: unknown doc
        "q1\td1\thigh",    # 4: grade not a number
        "q1\td1\t-1",      # 5: negative
        "q1\td1\t1.5",     # 6: not whole
        "\td1\t1",         # 7: empty query
    ]) + "\n")
    with pytest.raises(G.GoldError) as info:
        G.read_gold(path, CORPUS, QUERIES)
    message = str(info.value)
    assert "5 bad line(s)" in message
    for fragment in (":3: doc id 'nope' is not in the corpus", ":4: grade 'high' is not a number",
                     ":5: grade '-1' is not a whole number", ":6: grade '1.5'", ":7: empty query"):
        assert fragment in message


def test_header_problems(tmp_path):
    with pytest.raises(G.GoldError, match=r"g.tsv:1: header names unknown columns \['colour'\]"):
        G.read_gold(write(tmp_path, "g.tsv", "query\tdoc_id\tcolour\nq1\td1\tred\n"), CORPUS, QUERIES)
    with pytest.raises(G.GoldError, match="needs a doc_id column"):
        G.read_gold(write(tmp_path, "h.tsv", "query\tgrade\nq1\t1\n"), CORPUS, QUERIES)
    # no header, unknown ids: the first line's error hints that it might be a header
    with pytest.raises(G.GoldError, match="a header row"):
        G.read_gold(write(tmp_path, "i.tsv", "question text\tdocument\nq1\td1\n"), CORPUS, QUERIES)


def test_unknown_query_id_without_text_and_max_grade(tmp_path):
    with pytest.raises(G.GoldError, match="query id 'q9' is not a query of the dataset"):
        G.read_gold(write(tmp_path, "g.tsv", "qid\tdoc_id\nq9\td1\n"), CORPUS, QUERIES)
    with pytest.raises(G.GoldError, match="above the highest grade, 2"):
        G.read_gold(write(tmp_path, "h.tsv", "qid\tdoc_id\tscore\nq1\td1\t3\n"), CORPUS, QUERIES, max_grade=2)


def test_later_rows_override_and_are_counted(tmp_path):
    gold = G.read_gold(write(tmp_path, "g.tsv", "q1\td1\t1\nq1\td1\t0\n"), CORPUS, QUERIES)
    assert gold.qrels == {"q1": {"d1": 0}} and gold.stats["overridden"] == 1


def test_merge_and_with_gold(tiny_beir, tmp_path):
    assert G.merge_qrels({"q1": {"d1": 1}}, {"q1": {"d1": 2, "d2": 0}}, {"q2": {"d3": 1}}) == {
        "q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    ds = load_beir(str(tiny_beir))
    path = write(tmp_path, "g.tsv",
                 "query\tdoc_id\tgrade\nwhy do cats purr\td2\t0\nsourdough starter\td5\t2\n")
    gold = G.read_gold(path, ds.corpus, ds.queries)
    merged = G.with_gold(ds, gold, split="test")
    new_id = G.gold_query_id("sourdough starter")
    assert merged.qrels["test"]["q1"] == {"d1": 1, "d2": 0} and merged.qrels["test"][new_id] == {"d5": 2}
    assert merged.queries[new_id] == "sourdough starter" and new_id not in ds.queries
    assert merged.qrels["train"] == ds.qrels["train"] and "q1" not in ds.qrels.get("gold", {})


# --------------------------------------------------------------------------- labelling


def fake_search(queries, k):
    ranked = {"d1": 3.0, "d2": 2.0, "d3": 1.0, "d4": 0.5}
    return {q: dict(list(ranked.items())[:k]) for q in queries}


def test_labeler_saves_and_resumes(tmp_path):
    gold_file = tmp_path / "labels" / "gold.tsv"
    new_q = {G.gold_query_id("solar panels"): "solar panels"}
    labeler = L.Labeler(gold_file, CORPUS, {**QUERIES, **new_q}, fake_search, k=3, dataset_queries=QUERIES)
    assert labeler.next_query() == "q1" and labeler.progress()["pending"] == 3
    assert [c.doc_id for c in labeler.candidates("q1")] == ["d1", "d2", "d3"]
    labeler.save("q1", {"d1": 2, "d2": 0, "d3": 1})
    labeler.skip("q2")
    assert labeler.next_query() == next(iter(new_q))
    labeler.save(next(iter(new_q)), {"d4": 1})
    assert labeler.next_query() is None
    assert [p.name for p in gold_file.parent.iterdir()] == ["gold.tsv"]  # no temporary left

    # a new session resumes: saved queries are done, the skipped one is back
    again = L.Labeler(gold_file, CORPUS, {**QUERIES, **new_q}, fake_search, k=3, dataset_queries=QUERIES)
    assert again.next_query() == "q2" and again.progress()["labelled"] == 2
    assert again.progress()["relevant_judgements"] == 3
    # the file is a gold file the importer reads
    gold = G.read_gold(gold_file, CORPUS, QUERIES)
    assert gold.qrels == {"q1": {"d1": 2, "d2": 0, "d3": 1}, next(iter(new_q)): {"d4": 1}}
    assert gold.new_queries == set(new_q)
    assert gold_file.read_text().splitlines()[0] == "query_id\tquery\tdoc_id\tgrade"
    assert again.read().qrels == gold.qrels


def test_labeler_rejects_bad_labels(tmp_path):
    labeler = L.Labeler(tmp_path / "g.tsv", CORPUS, QUERIES, fake_search)
    with pytest.raises(ValueError, match="grades must be one of"):
        labeler.save("q1", {"d1": 5})
    with pytest.raises(KeyError, match="not in the corpus"):
        labeler.save("q1", {"zz": 1})
    with pytest.raises(KeyError, match="not a query being labelled"):
        labeler.save("q9", {"d1": 1})
    assert not (tmp_path / "g.tsv").exists()


def test_label_widget_save_advances(tmp_path):
    pytest.importorskip("ipywidgets", reason="the labelling notebook needs ipywidgets")
    labeler = L.Labeler(tmp_path / "g.tsv", CORPUS, QUERIES, fake_search, k=2)
    ui = L.label_widget(labeler)
    status, error, body = ui.children
    assert "0</b> of 2" in status.value and "Why do cats purr?" in body.children[0].value
    toggles = [c for c in body.children if hasattr(c, "options")]
    toggles[0].value = 2
    save = body.children[-1].children[0]
    save.click()
    assert labeler.labels == {"q1": {"d1": 2, "d2": 0}}
    assert "1</b> of 2" in status.value and "rocket thrust" in body.children[0].value
    labeler.grades = (0, 1)  # a grade the toggle offers but save refuses: shown, not raised
    [t for t in body.children if hasattr(t, "options")][0].value = 2
    body.children[-1].children[0].click()
    assert "not saved: grades must be one of" in error.value and "q2" not in labeler.labels
    body.children[-1].children[1].click()  # skip the last one
    assert "Nothing left" in body.children[0].value


def test_labeler_from_config(tiny_beir, tmp_path):
    params = write(tmp_path, "p.yaml", f"experiment: t\ndata:\n  dataset: {tiny_beir}\n")
    cfg = load_config(params)
    labeler = L.Labeler.from_config(cfg, tmp_path / "g.tsv", split="test", k=2)
    assert list(labeler.queries) == ["q1", "q2"]
    assert labeler.candidates("q1")[0].doc_id == "d1"
    queries_file = write(tmp_path, "q.txt", "why do cats purr\n\nsourdough bread flour\n")
    labeler = L.open_labeler(params, {}, tmp_path / "g.tsv", queries_file=str(queries_file), k=2)
    assert list(labeler.queries) == ["q1", G.gold_query_id("sourdough bread flour")]
    assert labeler.candidates(G.gold_query_id("sourdough bread flour"))[0].doc_id == "d5"


def test_apply_gold_merges_files_in_order(tiny_beir, tmp_path):
    ds = load_beir(str(tiny_beir))
    first = write(tmp_path, "a.tsv", "qid\tdoc_id\tgrade\nq1\td2\t1\nq3\td5\t2\n")
    second = write(tmp_path, "b.csv", "q1,d2,0\n")
    merged, stats = G.apply_gold(ds, G.GoldConfig(files=(str(first), str(second)), split="gold"))
    assert merged.qrels["gold"] == {"q1": {"d2": 0}, "q3": {"d5": 2}}
    assert merged.qrels["test"] == ds.qrels["test"] and list(stats) == [str(first), str(second)]
    with pytest.raises(G.GoldError, match="not found"):
        G.apply_gold(ds, G.GoldConfig(files=(str(tmp_path / "missing.tsv"),)))


def test_short_rows_are_reported_and_a_missing_grade_cell_is_no_grade(tmp_path):
    path = write(tmp_path, "g.tsv", "query_id\tdoc_id\tgrade\nq1\n\nq2\td2\nq1\td1\t2\n")
    with pytest.raises(G.GoldError) as info:  # the first data row is the short one
        G.read_gold(path, CORPUS, QUERIES)
    assert ":2: expected 2 columns, got 1" in str(info.value) and "1 bad line(s)" in str(info.value)
    path = write(tmp_path, "ok.tsv", "query_id\tdoc_id\tgrade\nq2\td2\nq1\td1\t2\n")
    assert G.read_gold(path, CORPUS, QUERIES).qrels == {"q2": {"d2": 1}, "q1": {"d1": 2}}
