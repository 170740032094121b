"""Training pairs beyond gold through the pipeline: ICT pseudo-queries and simulated clicks, which
00_decide counts and pilots on."""

import json

import pytest

from embedtune.runner import run_experiment
from tests.conftest import ROOT, shared_datasets

SMOKE = ROOT / "params" / "smoke.yaml"

# 2 min (four stages through papermill): out of `make test` for time; .ci/run runs them
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sources_run(tmp_path_factory):
    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR")
    folder = tmp_path_factory.mktemp("sources")
    run_experiment(SMOKE, stages=["decide", "pairs", "negatives", "evaluate"], run_dir=folder, progress=False,
                   overrides={"pairs.sources": ["gold", "ict", "clicks"], "crop.max_docs": 30,
                              "clicks.simulate": True, "clicks.use": "both", "decide.pilot_pairs": [16],
                              "pairs.max_train_pairs": 12,
                              "negatives.sources": ["bm25"]})
    return folder


def test_pairs_count_every_source_and_ict_skips_test_documents(sources_run):
    stats = json.loads((sources_run / "pairs" / "stats.json").read_text())
    assert stats["sources"]["gold"] > 0 and stats["sources"]["ict"] > 0 and stats["sources"]["clicks"] > 0
    assert stats["train_pairs"] == sum(stats["sources"].values())
    rows = [json.loads(line) for line in (sources_run / "pairs" / "train.jsonl").open()]
    ict = [r for r in rows if r["source"] == "ict"]
    assert len(ict) == stats["sources"]["ict"]
    test_qrels = {}
    for line in (shared_datasets() / "scifact" / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        q, d, _ = line.split("\t")
        test_qrels.setdefault(q, set()).add(d)
    import pandas as pd

    scored = set(pd.read_csv(sources_run / "per_query.csv", dtype={"query_id": str})["query_id"])
    assert scored and scored <= set(test_qrels)  # the slice's test queries
    test_docs = {d for q in scored for d in test_qrels[q]}
    assert not {r["doc_id"] for r in ict} & test_docs
    mined = [json.loads(line) for line in (sources_run / "negatives" / "train.jsonl").open()]
    assert len(mined) == len(rows)
    assert all(r["doc_id"] not in r["negative_ids"] for r in mined)
    assert any(r["negative_ids"] for r in mined if r["source"] == "ict")  # queries outside ds.queries


def test_simulated_clicks_make_a_validation_set_scored_beside_test(sources_run):
    validation = json.loads((sources_run / "pairs" / "click_validation.json").read_text())
    dev = json.loads((sources_run / "pairs" / "dev_qrels.json").read_text())
    assert validation["qrels"] and set(validation["qrels"]) <= set(dev)  # dev queries, never test
    metrics = json.loads((sources_run / "metrics.json").read_text())
    block = metrics["click_validation"]
    assert block["simulated"] is True and block["n_queries"] == len(validation["qrels"])
    assert {"bm25", "generic", "hybrid_generic"} <= set(block["systems"])
    assert 0 <= block["systems"]["generic"]["recall@10"] <= 1



def test_decide_counts_simulated_click_pairs_and_pilots_on_the_pairs_01_pairs_gives(sources_run):
    decision = json.loads((sources_run / "decision.json").read_text())
    stats = json.loads((sources_run / "pairs" / "stats.json").read_text())
    assert decision["measurements"]["pairs_by_source"]["clicks"] == stats["sources"]["clicks"]
    # the gold pairs capped by pairs.max_train_pairs, plus the clicks; ICT pairs are not labels
    assert stats["sources"]["gold"] == 12 < stats["gold_pairs_before_caps"]
    assert decision["pilot"]["all_pairs"] == stats["sources"]["gold"] + stats["sources"]["clicks"]
