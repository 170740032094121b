"""ranx numbers agree with BEIR's evaluator and with MTEB's own pipeline, on a scifact slice."""

import pytest

from embedtune.config import ModelConfig, load_config
from embedtune.crosscheck import beir_ndcg, identical_id_hits, mteb_ndcg
from embedtune.context import load_experiment_data
from embedtune.evaluate import evaluate_runs
from embedtune.models import load_model
from embedtune.retrieval import DenseIndex
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def slice_run():
    from tests.conftest import shared_datasets

    if shared_datasets() is None:
        pytest.skip("scifact not found: set EMBEDTUNE_DATA_DIR (CI points it at ../shared/datasets)")
    cfg = load_config(ROOT / "params" / "smoke.yaml")
    ds, splits = load_experiment_data(cfg.data, cfg.seed)
    model = load_model(cfg.model.name, device="cpu")
    index = DenseIndex.build(model, ds.corpus, ModelConfig(batch_size=32))
    queries = {q: ds.queries[q] for q in splits.test}
    run = index.search(model, queries, ModelConfig(batch_size=32), top_k=100)
    return model, ds, splits.test, queries, run


@pytest.mark.slow  # with its fixture about 1.5 min: out of `make test` for time; .ci/run runs it
def test_ranx_agrees_with_beir(slice_run):
    _, _, qrels, _, run = slice_run
    ours = evaluate_runs(qrels, {"g": run}, ["ndcg@10", "recall@100", "map@100"]).mean["g"]
    theirs = beir_ndcg(qrels, run)
    assert ours["ndcg@10"] == pytest.approx(theirs["NDCG@10"], abs=1e-3)
    assert ours["recall@100"] == pytest.approx(theirs["Recall@100"], abs=1e-3)
    assert ours["map@100"] == pytest.approx(theirs["MAP@100"], abs=1e-3)


def test_identical_ids_are_counted():
    assert identical_id_hits({"q1": {"q1": 1.0, "d": 0.5}, "q2": {"d": 1.0}}) == 1


@pytest.mark.slow  # with its fixture about 1.5 min: out of `make test` for time; .ci/run runs it
def test_ranx_agrees_with_mteb(slice_run):
    model, ds, qrels, queries, run = slice_run
    ours = evaluate_runs(qrels, {"g": run}, ["ndcg@10", "recall@10"]).mean["g"]
    theirs = mteb_ndcg(model, ds.corpus, queries, qrels, batch_size=32)
    assert ours["ndcg@10"] == pytest.approx(theirs["ndcg_at_10"], abs=1e-3)
    assert ours["recall@10"] == pytest.approx(theirs["recall_at_10"], abs=1e-3)
