import numpy as np
import pytest

from embedtune.config import TrainConfig
from embedtune.train import TrainError, build_loss, training_dataset


@pytest.fixture(scope="module")
def model():
    from embedtune.models import load_model

    return load_model("sentence-transformers/all-MiniLM-L6-v2", device="cpu")


@pytest.mark.parametrize("name,cls", [
    ("mnrl", "MultipleNegativesRankingLoss"),
    ("cached_mnrl", "CachedMultipleNegativesRankingLoss"),
    ("triplet", "TripletLoss"),
    ("cosent", "CoSENTLoss"),
    ("gist", "GISTEmbedLoss"),
])
def test_loss_factory(model, name, cls):
    loss = build_loss(name, model, TrainConfig(loss=name), guide=model)
    assert type(loss).__name__ == cls


def test_matryoshka_wraps_and_checks_dims(model):
    loss = build_loss("mnrl", model, TrainConfig(matryoshka_dims=(384, 128, 64)))
    assert type(loss).__name__ == "MatryoshkaLoss"
    with pytest.raises(TrainError, match="exceed the model's dimension 384"):
        build_loss("mnrl", model, TrainConfig(matryoshka_dims=(512,)))
    with pytest.raises(TrainError, match="guide"):
        build_loss("gist", model, TrainConfig(loss="gist"))


ROWS = [
    {"query_id": "q1", "anchor": "a1", "positive": "p1", "score": 2, "negatives": ["n1"]},
    {"query_id": "q2", "anchor": "a2", "positive": "p2", "score": 1, "negatives": []},
]


def test_dataset_columns_per_loss():
    corpus, ids = ["p1", "p2", "x"], ["d1", "d2", "d3"]
    judged = {"q2": {"d2"}, "q1": {"d1"}}
    ds = training_dataset(ROWS, "mnrl", corpus, judged, ids, seed=0)
    assert ds.column_names == ["anchor", "positive", "negative"]
    assert ds["negative"][0] == "n1"
    assert ds["negative"][1] in ("p1", "x")  # a random doc, never q2's own judged positive
    cosent = training_dataset(ROWS, "cosent", corpus, judged, ids, seed=0)
    assert cosent.column_names == ["sentence1", "sentence2", "score"]
    assert cosent["score"] == [1.0, 0.0, 0.5, 0.0]  # grade / max grade; negatives 0
    plain = training_dataset([{k: v for k, v in r.items() if k != "negatives"} for r in ROWS], "mnrl",
                             corpus, judged, ids, seed=0)
    assert plain.column_names == ["anchor", "positive"]
    with pytest.raises(TrainError, match="no training pairs"):
        training_dataset([], "mnrl", corpus, judged, ids, seed=0)


def test_the_dev_evaluator_matches_sentence_transformers_information_retrieval_evaluator():
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator

    from embedtune.models import encode_documents, encode_queries, load_model
    from embedtune.train import DEV_METRICS, dev_evaluator

    model = load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")
    words = "cat dog engine thrust bread yeast rocket river stone cloud paper music".split()
    rng = np.random.default_rng(3)
    corpus = {f"d{i}": " ".join(rng.choice(words, 8)) for i in range(60)}
    queries = {f"q{i}": " ".join(rng.choice(words, 3)) for i in range(15)}
    qrels = {q: {f"d{j}": int(rng.integers(1, 3)) for j in rng.choice(60, 3, replace=False)} for q in queries}
    ours = dev_evaluator(queries, qrels, corpus, 16, precision="fp32")
    theirs = InformationRetrievalEvaluator(
        queries=queries, corpus=corpus, relevant_docs={q: set(d) for q, d in qrels.items()}, name="dev",
        ndcg_at_k=[10], mrr_at_k=[10], accuracy_at_k=[10], precision_recall_at_k=[10], map_at_k=[100],
        batch_size=16, show_progress_bar=False, write_csv=False)
    a, b = ours(model), theirs(model)
    assert ours.primary_metric == theirs.primary_metric == "dev_cosine_ndcg@10"
    for name in DEV_METRICS:
        assert a[f"dev_cosine_{name}"] == pytest.approx(b[f"dev_cosine_{name}"], abs=1e-6), name
    # the same scores from embeddings computed elsewhere (the generic index): nothing encoded again
    again = ours.score(encode_documents(model, list(corpus.values())), encode_queries(model, list(queries.values())))
    assert again == pytest.approx(a) and set(ours.per_query[0]) == set(queries)


def test_the_keep_base_guard_ships_only_a_dev_gain_that_is_not_noise():
    from embedtune.train import keep_base_decision

    rng = np.random.default_rng(0)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.random(200))}
    better = {q: min(1.0, v + 0.05 + rng.normal(0, 0.05)) for q, v in base.items()}
    noise = {q: v + rng.normal(0, 0.05) for q, v in base.items()}
    worse = {q: v - 0.03 for q, v in base.items()}
    decision = keep_base_decision({0: base, 10: noise, 20: better}, p_max=0.05)
    assert decision["kept"] and decision["best_step"] == 20 and decision["delta"] > 0.04
    assert decision["p_one_sided"] < 1e-6 and "beats the base model" in decision["reason"]
    rejected = keep_base_decision({0: base, 10: worse, 20: noise}, p_max=0.05)
    assert not rejected["kept"] and "the base model is kept" in rejected["reason"]
    assert not keep_base_decision({0: base, 20: better}, p_max=0.05, margin=0.2)["kept"]  # gain under the margin
    assert keep_base_decision({0: base, 10: worse}, p_max=None)["kept"]  # the guard off
    assert keep_base_decision({}, p_max=0.05)["kept"]  # no dev queries: nothing to test


def test_query_folds_cover_every_query_once_and_refuse_impossible_counts():
    from embedtune.train import query_folds

    folds = query_folds([f"q{i}" for i in range(10)] * 3, 3, seed=42)  # a query has several pairs
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert set().union(*folds) == {f"q{i}" for i in range(10)} and sum(map(len, folds)) == 10
    assert folds == query_folds([f"q{i}" for i in reversed(range(10))], 3, seed=42)  # order-free, seeded
    with pytest.raises(TrainError, match="at least 2"):
        query_folds(["a", "b"], 1, seed=0)
    with pytest.raises(TrainError, match="only 2 queries"):
        query_folds(["a", "b"], 3, seed=0)


def test_cross_fitting_numbers_each_folds_evaluations_and_averages_shared_queries():
    from embedtune.train import cross_fitted_per_query, keep_base_decision

    # fold 1 held out q1, fold 2 held out q2; both scored the dev query d; fold 2 has one more point
    fold1 = {0: {"q1": 0.2, "d": 0.5}, 7: {"q1": 0.4, "d": 0.6}, 14: {"q1": 0.5, "d": 0.7}}
    fold2 = {0: {"q2": 0.3, "d": 0.5}, 6: {"q2": 0.3, "d": 0.8}, 12: {"q2": 0.6, "d": 0.9}, 13: {"q2": 0.0, "d": 0.0}}
    pooled = cross_fitted_per_query([fold1, fold2])
    assert sorted(pooled) == [0, 1, 2]  # the points both folds reached
    assert pooled[0] == {"q1": 0.2, "q2": 0.3, "d": 0.5}
    assert pooled[1] == pytest.approx({"q1": 0.4, "q2": 0.3, "d": 0.7})
    assert pooled[2] == pytest.approx({"q1": 0.5, "q2": 0.6, "d": 0.8})
    decision = keep_base_decision(pooled, p_max=None, where="pooled queries", point="evaluation")
    assert decision["best_step"] == 2 and decision["queries"] == 3


def test_the_keep_base_test_at_a_given_point_judges_that_point_not_the_best():
    """The cross-fitted guard tests the checkpoint that ships (chosen on dev), not the best point
    of its own curve: a later, worse point that ships must be judged as it is."""
    from embedtune.train import keep_base_decision

    rng = np.random.default_rng(1)
    base = {f"q{i}": float(v) for i, v in enumerate(rng.random(200))}
    better = {q: min(1.0, v + 0.05 + rng.normal(0, 0.05)) for q, v in base.items()}
    flat = {q: v + rng.normal(0, 0.05) for q, v in base.items()}
    curve = {0: base, 1: better, 2: flat}
    assert keep_base_decision(curve, p_max=0.05)["best_step"] == 1  # the best point passes ...
    shipped = keep_base_decision(curve, p_max=0.05, point="evaluation", at=2)
    assert shipped["best_step"] == 2 and not shipped["kept"]  # ... the shipped one does not
    assert shipped["reason"].startswith("the shipped checkpoint (evaluation 2) does not beat")
    assert keep_base_decision(curve, p_max=0.05, at=1)["reason"].startswith("the shipped checkpoint (step 1) beats")
    with pytest.raises(TrainError, match="the curve has"):
        keep_base_decision(curve, p_max=0.05, at=3)


def test_the_dev_curves_table_numbers_evaluations_and_marks_the_judged_one(tmp_path):
    """dev_per_query.csv: one row per curve, evaluation and query; the run's own curve keeps its
    training steps, the pooled guard curve has none; ``tested`` marks the point each test judged."""
    import pandas as pd

    from embedtune.stages.train import curve_table

    dev = {0: {"q1": 0.5, "q2": 0.1}, 20: {"q1": 0.6, "q2": 0.2}, 40: {"q1": 0.4, "q2": 0.3}}
    guard = {0: {"q1": 0.5, "t9": 0.2}, 1: {"q1": 0.7, "t9": 0.4}}
    curve_table({"dev": (dev, 1), "guard": (guard, 1)}).to_csv(tmp_path / "c.csv", index=False)
    table = pd.read_csv(tmp_path / "c.csv", dtype={"query_id": str})
    assert list(table.columns) == ["curve", "evaluation", "step", "query_id", "ndcg@10", "tested"]
    mine = table[table["curve"] == "dev"]
    assert list(mine["evaluation"]) == [0, 0, 1, 1, 2, 2] and list(mine["step"]) == [0, 0, 20, 20, 40, 40]
    assert mine.loc[mine["tested"], "ndcg@10"].tolist() == [0.6, 0.2]  # step 20, the shipped checkpoint
    pooled = table[table["curve"] == "guard"]
    assert pooled["step"].isna().all() and pooled.loc[pooled["tested"], "query_id"].tolist() == ["q1", "t9"]
    assert not curve_table({"dev": ({}, None)}).shape[0]  # no dev queries: an empty table, same columns
