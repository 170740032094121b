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
