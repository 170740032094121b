import json

import pytest

from embedtune import clicks as C

CORPUS = {d: {"title": "", "text": f"text of {d}"} for d in ("d1", "d2", "d3", "d4", "d5")}
QUERIES = {"q1": "Why do cats purr?", "q2": "rocket thrust"}


def write_log(tmp_path, rows, name="clicks.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_reads_a_valid_log_and_resolves_queries(tmp_path):
    path = write_log(tmp_path, [
        {"query_id": "q1", "shown": ["d1", "d2"], "clicks": ["d2"], "dwell": {"d2": 30}},
        {"query": "why do cats PURR", "shown": ["d3", "d1"], "clicks": [], "session": "s9"},
        "",
        {"query": "brand new query", "shown": ["d4"], "clicks": ["d4"]},
    ])
    log = C.read_click_log(path, corpus=CORPUS, queries=QUERIES)
    assert [i.query_id for i in log] == ["q1", "q1", C.click_query_id("brand new query")]
    assert log[0].query == "Why do cats purr?" and log[0].dwell == {"d2": 30.0}
    assert log[1].extra == {"session": "s9"} and log[1].line == 2 and log[2].line == 4
    assert C.click_query_id("Brand  new query!") == log[2].query_id  # normalised text, same id


@pytest.mark.parametrize("row,message", [
    ("{not json", "malformed JSON"),
    ({"shown": ["d1"]}, "needs 'query'"),
    ({"query": "x", "shown": []}, "'shown' must be a non-empty list"),
    ({"query": "x", "shown": ["d1", "d1"]}, "lists a document twice"),
    ({"query": "x", "shown": ["d1"], "clicks": ["d2"]}, "clicked ids not in 'shown'"),
    ({"query": "x", "shown": ["d1"], "clicks": [], "dwell": {"d1": 3}}, "which was not clicked"),
    ({"query": "x", "shown": ["d1"], "clicks": ["d1"], "dwell": {"d1": -1}}, "seconds >= 0"),
    ({"query": "x", "shown": ["d1", "zz"]}, "not in the corpus: 'zz'"),
    ({"query_id": "q404", "shown": ["d1"]}, "not a query of the dataset"),
])
def test_errors_name_file_and_line(tmp_path, row, message):
    path = write_log(tmp_path, [{"query": "ok", "shown": ["d1"]}, row])
    with pytest.raises(C.ClickLogError, match=message) as info:
        C.read_click_log(path, corpus=CORPUS, queries=QUERIES)
    assert f"{path}:2:" in str(info.value)


def test_non_strict_drops_unknown_ids_but_not_malformed_lines(tmp_path):
    path = write_log(tmp_path, [{"query": "ok", "shown": ["d1"]}, {"query": "x", "shown": ["zz"]}])
    assert len(C.read_click_log(path, corpus=CORPUS, queries=QUERIES, strict=False)) == 1
    path = write_log(tmp_path, [{"query": "ok", "shown": ["d1"]}, {"query": "x"}], "bad.jsonl")
    with pytest.raises(C.ClickLogError, match="bad.jsonl:2"):
        C.read_click_log(path, corpus=CORPUS, strict=False)


def test_write_then_read_round_trips(tmp_path):
    log = [C.Impression("q1", "Why do cats purr?", ("d1", "d2"), ("d2",), {"d2": 12.5}, 0, {"session": "a"})]
    C.write_click_log(log, tmp_path / "out.jsonl")
    back = C.read_click_log(tmp_path / "out.jsonl", corpus=CORPUS, queries=QUERIES)
    assert (back[0].query_id, back[0].shown, back[0].clicks, back[0].dwell, back[0].extra) == (
        "q1", ("d1", "d2"), ("d2",), {"d2": 12.5}, {"session": "a"})


def imp(qid, shown, clicks=(), dwell=None):
    return C.Impression(qid, QUERIES.get(qid, qid), tuple(shown), tuple(clicks), dwell or {})


LOG = [
    imp("q1", ["d1", "d2", "d3", "d4"], ["d3"], {"d3": 40}),  # skips d1, d2
    imp("q1", ["d1", "d2", "d3", "d4"], ["d1", "d3"], {"d1": 2, "d3": 50}),  # d1 a short click
    imp("q1", ["d2", "d3"], ["d3"]),  # no dwell: counts; skips d2
    imp("q2", ["d5", "d4"], ["d4"], {"d4": 5}),  # only a short click
]


def test_aggregate_counts_clicks_dwell_and_skips():
    stats = C.aggregate_clicks(LOG, min_dwell_s=10)
    assert stats.impressions == {"q1": 3, "q2": 1}
    assert stats.clicks == {"q1": {"d3": 3}, "q2": {}}
    assert stats.raw_clicks["q1"] == {"d3": 3, "d1": 1}
    assert stats.short_clicks == 2
    # skipped above the lowest counted click; a clicked doc is never a skip
    assert stats.skips == {"q1": {"d1": 1, "d2": 3}}
    # d1 was clicked once (even if short): not a negative
    assert stats.negatives(min_skips=1) == {"q1": ["d2"]}
    assert stats.negatives(min_skips=4) == {}


def test_dwell_threshold_off_counts_every_click():
    stats = C.aggregate_clicks(LOG, min_dwell_s=None)
    assert stats.clicks == {"q1": {"d3": 3, "d1": 1}, "q2": {"d4": 1}}


def test_click_pairs_and_validation():
    cfg = C.ClickConfig(min_clicks=2, min_dwell_s=10)
    rows, negatives = C.click_pairs(LOG, CORPUS, cfg)
    assert rows == [{"query_id": "q1", "anchor": "Why do cats purr?", "doc_id": "d3",
                     "positive": "text of d3", "score": 1, "source": "clicks"}]
    assert negatives == {"q1": ["d2"]}
    queries, qrels = C.click_validation(LOG, C.ClickConfig(min_clicks=1, min_dwell_s=None))
    assert qrels == {"q1": {"d1": 1, "d3": 1}, "q2": {"d4": 1}}
    assert queries == {"q1": "Why do cats purr?", "q2": "rocket thrust"}
    assert C.click_validation(LOG, C.ClickConfig(min_dwell_s=None), only={"q2"})[1] == {"q2": {"d4": 1}}


def test_split_click_queries():
    stats = C.aggregate_clicks(LOG, None)
    assert C.split_click_queries(stats, C.ClickConfig(use="validate")) == (set(), {"q1", "q2"})
    assert C.split_click_queries(stats, C.ClickConfig(use="train")) == ({"q1", "q2"}, set())
    train, val = C.split_click_queries(stats, C.ClickConfig(use="both", validation_share=0.5), seed=0)
    assert len(train) == len(val) == 1 and train | val == {"q1", "q2"}


# --------------------------------------------------------------------------- simulator

N_DOCS = 10
RANKING = {f"q{i}": {f"d{j}": float(N_DOCS - j) for j in range(N_DOCS)} for i in range(20)}
ALL_RELEVANT = {q: {d: 2 for d in docs} for q, docs in RANKING.items()}
QTEXT = {q: f"query {q}" for q in RANKING}


def test_simulator_is_seeded():
    cfg = C.SimulatorConfig(sessions_per_query=5)
    a = C.simulate_clicks(ALL_RELEVANT, RANKING, QTEXT, cfg, seed=1)
    b = C.simulate_clicks(ALL_RELEVANT, RANKING, QTEXT, cfg, seed=1)
    c = C.simulate_clicks(ALL_RELEVANT, RANKING, QTEXT, cfg, seed=2)
    assert [i.to_json() for i in a] == [i.to_json() for i in b]
    assert [i.to_json() for i in a] != [i.to_json() for i in c]
    assert len(a) == 20 * 5 and a[0].shown == tuple(f"d{j}" for j in range(N_DOCS))


@pytest.mark.parametrize("model", ["position", "cascade"])
def test_position_bias_click_rate_falls_with_rank(model):
    cfg = C.SimulatorConfig(model=model, sessions_per_query=50, click_relevant=0.5)
    log = C.simulate_clicks(ALL_RELEVANT, RANKING, QTEXT, cfg, seed=0)
    rate = C.ClickStats().click_rate_by_rank(log, depth=N_DOCS)
    # every document is equally relevant, so only the position explains the fall
    assert rate[0] > rate[2] > rate[6] and rate[0] > 3 * rate[9]
    if model == "position":  # P(click at r) = 0.5 * (1/r); 1000 impressions per rank
        assert rate[0] == pytest.approx(0.5, abs=0.05) and rate[1] == pytest.approx(0.25, abs=0.05)


def test_simulated_noise_clicks_are_short_and_filtered():
    qrels = {q: {"d5": 2} for q in RANKING}  # one relevant document, at rank 6
    cfg = C.SimulatorConfig(sessions_per_query=30, eta=0.0, click_noise=0.2)  # eta 0: every rank read
    log = C.simulate_clicks(qrels, RANKING, QTEXT, cfg, seed=0)
    rate = C.ClickStats().click_rate_by_rank(log, depth=N_DOCS)
    assert rate[5] == pytest.approx(0.9, abs=0.05)
    assert all(r == pytest.approx(0.2, abs=0.05) for i, r in enumerate(rate) if i != 5)
    noise = [s for i in log for d, s in i.dwell.items() if d != "d5"]
    relevant = [s for i in log for d, s in i.dwell.items() if d == "d5"]
    assert sorted(noise)[len(noise) // 2] < 10 < sorted(relevant)[len(relevant) // 2]
    _, every_click = C.click_validation(log, C.ClickConfig(min_clicks=1, min_dwell_s=None))
    assert sum(len(docs) for docs in every_click.values()) > 150  # noise makes most docs "relevant"
    _, thresholded = C.click_validation(log, C.ClickConfig(min_clicks=3, min_dwell_s=25))
    assert thresholded == {q: {"d5": 1} for q in RANKING}


def test_cascade_stops_after_a_satisfying_click():
    cfg = C.SimulatorConfig(model="cascade", sessions_per_query=10, click_relevant=1.0, satisfied=1.0)
    log = C.simulate_clicks(ALL_RELEVANT, RANKING, QTEXT, cfg, seed=0)
    assert all(i.clicks == ("d0",) for i in log)
