import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from embedtune.config import MonitorConfig
from embedtune.index_store import text_hash
from embedtune.monitor import (CorpusSnapshot, MonitorLog, check_regression, corpus_drift, drop_test,
                               recommend, word_counts)
from tests.conftest import write_beir

CFG = MonitorConfig(regression_threshold=0.02, regression_p=0.05, permutations=2000)


def entry(version, values, time, metric="recall@10"):
    qids = [f"q{i}" for i in range(len(values))] if not isinstance(values, dict) else list(values)
    vals = values if isinstance(values, dict) else dict(zip(qids, map(float, values)))
    return {"time": time, "version": version, "gold_set": "g",
            "metrics": {metric: float(np.mean(list(vals.values())))}, "per_query": {metric: vals}}


def recall_values(rng, n=300):
    """Per-query recall@10 as it looks on a real gold set: mostly 0 or 1, some fractions."""
    return rng.choice([0.0, 0.5, 1.0], size=n, p=[0.25, 0.1, 0.65])


# --------------------------------------------------------------------------- log


def test_log_appends_one_line_per_evaluation_and_skips_a_torn_line(tmp_path):
    log = MonitorLog(tmp_path / "monitor.jsonl")
    log.append(entry("v1", [1, 0], None) | {"time": None})
    log.append(entry("v2", [1, 1], "2026-01-02T00:00:00+00:00"))
    with open(log.path, "a") as fh:
        fh.write('{"version": "v1", "metr')  # a writer killed mid-line
    entries = log.entries()
    assert [e["version"] for e in entries] == ["v1", "v2"]
    assert entries[0]["time"]  # stamped on append
    assert [e["version"] for e in log.entries(version="v2")] == ["v2"]
    assert len(log.path.read_text().splitlines()) == 3


# --------------------------------------------------------------------------- regression


def test_a_constructed_drop_fires():
    rng = np.random.default_rng(0)
    ref = recall_values(rng)
    latest = ref.copy()
    hit = np.flatnonzero(ref == 1.0)
    latest[rng.choice(hit, size=30, replace=False)] = 0.0  # 30 of 300 queries lose their hit: -0.10
    reg = check_regression([entry("v1", ref, "t0"), entry("v1", latest, "t1")], "v1", CFG)
    assert reg.fired and reg.test == "paired"
    assert reg.delta == pytest.approx(-0.10) and reg.p_value < 0.001
    assert "REGRESSION" in reg.explain()


def test_noise_around_the_same_mean_does_not_fire():
    fired = []
    for seed in range(20):
        rng = np.random.default_rng(seed)
        ref = recall_values(rng)
        latest = ref.copy()
        redrawn = rng.choice(len(ref), size=60, replace=False)  # 20 % of queries change at random
        latest[redrawn] = recall_values(rng, 60)
        reg = check_regression([entry("v1", ref, "t0"), entry("v1", latest, "t1")], "v1", CFG)
        assert reg.test == "paired" and abs(reg.delta) < 0.05
        fired.append(reg.fired)
    assert sum(fired) == 0


def test_both_the_threshold_and_the_test_are_needed():
    rng = np.random.default_rng(1)
    ref = recall_values(rng)
    latest = ref.copy()
    latest[np.flatnonzero(ref == 1.0)[:12]] = 0.0  # -0.04 on 300 queries: significant
    entries = [entry("v1", ref, "t0"), entry("v1", latest, "t1")]
    assert check_regression(entries, "v1", CFG).fired
    loose = MonitorConfig(regression_threshold=0.05, permutations=2000)
    reg = check_regression(entries, "v1", loose)
    assert reg.p_value < 0.01 and not reg.fired  # significant, but under the threshold
    few = [entry("v1", [1, 1, 1, 1, 1], "t0"), entry("v1", [1, 1, 1, 1, 0], "t1")]
    reg = check_regression(few, "v1", CFG)
    assert reg.delta == pytest.approx(-0.2) and reg.p_value > 0.4 and not reg.fired  # big, but one query


def test_reference_choice_versions_and_a_changed_gold_set():
    rng = np.random.default_rng(2)
    ref = recall_values(rng)
    assert check_regression([entry("v1", ref, "t0")], "v1", CFG) is None  # nothing to compare yet
    better = np.minimum(ref + 0.5, 1.0)
    worse = ref.copy()
    worse[np.flatnonzero(ref == 1.0)[:30]] = 0.0
    entries = [entry("v1", ref, "t0"), entry("v2", worse, "t1"), entry("v1", better, "t2"),
               entry("v1", ref, "t3")]
    assert not check_regression(entries, "v1", CFG).fired  # back to its first level
    best = check_regression(entries, "v1", MonitorConfig(reference="best", permutations=2000))
    assert best.fired and best.reference_time == "t2"
    assert check_regression(entries, "v2", CFG) is None  # v2's single evaluation is not v1's
    # the gold set grew with queries the model serves badly: a two-sample test over both sets
    grown = dict(zip([f"q{i}" for i in range(300)], map(float, ref))) | {f"n{i}": 0.0 for i in range(100)}
    reg = check_regression([entry("v1", ref, "t0"), entry("v1", grown, "t1")], "v1", CFG)
    assert reg.test == "two-sample" and reg.fired and reg.shared_queries == 300 and reg.shared_delta == 0.0


def test_drop_test_on_identical_values():
    assert drop_test({"a": 1.0, "b": 0.0}, {"a": 1.0, "b": 0.0}) == (0.0, 1.0, "paired")


# --------------------------------------------------------------------------- drift


@dataclass
class FakeIndex:
    """The parts of a CorpusIndex that drift reads, from literal embeddings."""

    corpus: dict
    vectors: np.ndarray
    folder: str = "fake"
    model_version: str = "v1"
    doc_ids: list = field(init=False)
    manifest: dict = field(init=False)

    def __post_init__(self):
        from embedtune.data import corpus_fingerprint, doc_text

        self.doc_ids = sorted(self.corpus)
        self.manifest = {"doc_hashes": [text_hash(doc_text(self.corpus[d])) for d in self.doc_ids]}
        self.corpus_fingerprint = corpus_fingerprint(self.corpus)
        self.embeddings = self.vectors / np.linalg.norm(self.vectors, axis=1, keepdims=True)

    def embeddings_of(self, ids):
        return self.embeddings[[self.doc_ids.index(d) for d in ids]]


def _docs(prefix, words, n, rng):
    return {f"{prefix}{i:03d}": {"title": "", "text": " ".join(rng.choice(words, size=12))} for i in range(n)}


def _drift_case(new_words, new_center, seed=0):
    rng = np.random.default_rng(seed)
    old_words = ["cell", "protein", "gene", "expression", "tumor", "patient", "study", "mouse"]
    base = _docs("a", old_words, 60, rng)
    center = rng.normal(size=16)
    base_vecs = center + rng.normal(size=(60, 16))
    snapshot = CorpusSnapshot.from_index(base, FakeIndex(base, base_vecs))
    new = _docs("b", new_words, 40, rng)
    grown = base | new
    new_vecs = new_center(center) + rng.normal(size=(40, 16))
    index = FakeIndex(grown, np.vstack([base_vecs, new_vecs]))  # ids sort a..., then b...
    return corpus_drift(snapshot, grown, index, MonitorConfig(drift_max_docs=500), seed=seed)


def test_drift_fires_on_another_domain():
    drift = _drift_case(["diet", "vitamin", "soy", "coffee", "sugar", "fiber"], lambda c: c + 4.0)
    assert drift.new_docs == 40 and drift.new_doc_share == pytest.approx(0.4)
    assert drift.new_vocab_token_share == pytest.approx(0.4)  # every word of the new docs is new
    assert drift.new_docs_vocab_token_share == 1.0 and "vitamin" in drift.top_new_words
    assert drift.domain_auc > 0.95 and drift.centroid_cosine < 0.99
    assert drift.drifted and len(drift.reasons) == 2


def test_no_drift_when_new_documents_look_like_the_old_ones():
    same = ["cell", "protein", "gene", "expression", "tumor", "patient", "study", "mouse"]
    drift = _drift_case(same, lambda c: c)
    assert drift.new_vocab_token_share == 0.0 and drift.top_new_words == []
    assert drift.domain_auc < 0.7 and drift.centroid_cosine > 0.98
    assert not drift.drifted and drift.reasons == []


def test_word_counts():
    assert word_counts(["The cell's gene, the GENE."]) == {"the": 2, "cell's": 1, "gene": 2}


# --------------------------------------------------------------------------- recommendation


def test_recommend_names_each_trigger():
    manifest = {"version": "v1", "base_model": "base/m", "base_model_fingerprint": "sha256:" + "a" * 64}
    calm = recommend(manifest, base_fingerprint="sha256:" + "a" * 64, base_model="base/m")
    assert not calm.retrain and "base model unchanged" in calm.reasons[0]
    upgraded = recommend(manifest, base_fingerprint="sha256:" + "c" * 64, base_model="base/m")
    assert upgraded.triggers == {"corpus_drift": False, "base_model_upgraded": True, "recall_regression": False}
    assert "upgraded base model" in upgraded.text()
    renamed = recommend(manifest, base_model="base/m-v2")
    assert renamed.triggers["base_model_upgraded"] and "base/m-v2" in renamed.reasons[0]
    rng = np.random.default_rng(0)
    ref = recall_values(rng)
    worse = np.where(np.arange(300) < 100, 0.0, ref)
    reg = check_regression([entry("v1", ref, "t0"), entry("v1", worse, "t1")], "v1", CFG)
    regressed = recommend(manifest, regression=reg)
    assert regressed.retrain and regressed.triggers["recall_regression"]
    drifted = recommend(manifest, drift=_drift_case(["diet", "soy"], lambda c: c + 4.0))
    assert drifted.retrain and drifted.triggers["corpus_drift"]


# --------------------------------------------------------------------------- the stage and the scenario


BASE_CORPUS = {
    "d1": ("Cats", "Cats are small domesticated felines that purr when content."),
    "d2": ("Dogs", "Dogs are loyal animals that bark at strangers."),
    "d3": ("Rockets", "Rocket engines burn propellant to produce thrust."),
    "d4": ("Jet engines", "A jet engine produces thrust by expelling hot gas."),
    "d5": ("Bread", "Bread is baked from flour, water and yeast."),
    "d6": ("Tides", "Tides are caused by the gravity of the moon."),
}
BASE_QUERIES = {"q1": "why do cats purr", "q2": "how does an engine make thrust",
                "q3": "what is bread made of", "q4": "barking dogs", "q5": "what causes tides"}
NEW_CORPUS = {f"n{i}": (title, text) for i, (title, text) in enumerate([
    ("Vitamin D", "Vitamin D deficiency is linked to bone loss."),
    ("Soy", "Soy isoflavones and breast cancer risk."),
    ("Coffee", "Coffee intake and liver enzyme levels."),
    ("Fiber", "Dietary fiber lowers cholesterol."),
    ("Sugar", "Added sugar raises the risk of diabetes."),
    ("Salt", "Sodium intake and blood pressure."),
    ("Nuts", "Nut consumption and heart disease."),
    ("Eggs", "Egg yolks and dietary cholesterol."),
])}
NEW_QUERIES = {"t1": "does vitamin d protect bones", "t2": "is coffee bad for the liver",
               "t3": "sugar and diabetes", "r1": "soy and cancer", "r2": "fiber cholesterol",
               "r3": "salt blood pressure", "r4": "nuts heart", "r5": "eggs cholesterol"}


@pytest.fixture
def toy_experiment(tmp_path, monkeypatch):
    """Two tiny BEIR folders, a params file, and a 'fine-tuned' model (the base model itself)."""
    import shutil

    from embedtune.models import resolve_model

    base = write_beir(tmp_path / "base", BASE_CORPUS, BASE_QUERIES,
                      {"test": [("q1", "d1", 1), ("q2", "d3", 1), ("q2", "d4", 1), ("q5", "d6", 1)],
                       "train": [("q3", "d5", 1), ("q4", "d2", 1)]})
    new = write_beir(tmp_path / "new", NEW_CORPUS, NEW_QUERIES,
                     {"test": [("t1", "n0", 1), ("t2", "n2", 1), ("t3", "n4", 1)],
                      "train": [("r1", "n1", 1), ("r2", "n3", 1), ("r3", "n5", 1), ("r4", "n6", 1),
                                ("r5", "n7", 1)]})
    model_dir = tmp_path / "v1model"
    shutil.copytree(resolve_model("sentence-transformers/all-MiniLM-L6-v2").path, model_dir)
    params = tmp_path / "params.yaml"
    params.write_text(f"""
experiment: toy
seed: 3
data: {{dataset: {base}, eval_split: test}}
model: {{device: cpu, batch_size: 8, precision: fp32}}
train: {{precision: fp32}}
evaluate: {{metrics: [recall@10, ndcg@10]}}
monitor:
  registry: {tmp_path / 'registry'}
  scenario_model: {model_dir}
  scenario_new_dataset: {new}
  scenario_new_docs: 8
  scenario_train_pairs: 4
  scenario_train_batch_size: 2
  scenario_learning_rate: 1.0e-4
  permutations: 500
""")
    return {"params": params, "model": model_dir, "tmp": tmp_path}


def test_scenario_runs_end_to_end_on_a_toy_slice(toy_experiment):
    from embedtune.context import open_run
    from embedtune.stages import monitor as stage

    ctx = open_run(toy_experiment["params"], {"monitor.scenario": True}, toy_experiment["tmp"] / "run")
    result = stage.run(ctx)
    doc = json.loads((ctx.run_dir / "scenario.json").read_text())
    steps = doc["steps"]
    assert [s["production"] for s in steps] == ["v1", "v1", "v1", "v2", "v1"]
    assert steps[0]["index"]["encoded"] == 6
    assert (steps[1]["index"]["encoded"], steps[1]["index"]["kept"]) == (8, 6)  # only the new docs
    assert steps[1]["queries"] == 6 and set(steps[1]["groups"]) == {"base", "new"}
    assert steps[1]["drift"]["new_docs"] == 8 and steps[1]["drift"]["new_vocab_token_share"] > 0.3
    assert steps[2]["pairs"] == 4 and steps[2]["train_steps"] == 2
    assert steps[3]["index"]["encoded"] == 14  # v2 gets its own full index
    assert "built with version v1" in steps[3]["mixing_guard"] and "v2" in steps[3]["mixing_guard"]
    assert steps[4]["index"]["encoded"] == 0 and steps[4]["same_as_step_2"]
    assert doc["versions"]["v2"]["parent"] == "v1"
    assert not (toy_experiment["tmp"] / "registry").exists()  # the scenario keeps its own registry
    monitor = json.loads((ctx.run_dir / "monitor.json").read_text())
    assert monitor["production"] == "v1" and monitor["evaluations"] == 4
    assert result.steps_table().shape[0] == 5 and len(result.history_table()) == 4
    assert result.plot() is not None and "v2" in result.versions_table().index
    assert list(result.pointer_table()["action"]) == ["promote", "promote", "rollback"]
    assert result.steps_table()["encoded"].tolist()[:2] == [6, 8]


def test_scenario_without_its_model_says_how_to_train_it(toy_experiment, tmp_path):
    from embedtune.context import open_run
    from embedtune.scenario import ScenarioError, run_scenario

    ctx = open_run(toy_experiment["params"], {"monitor.scenario_model": str(tmp_path / "none")},
                   tmp_path / "run")
    with pytest.raises(ScenarioError, match=r"embedtune run params/scifact.yaml --stages pairs,negatives,train"):
        run_scenario(ctx)


def test_stage_monitors_the_run_model_over_time(toy_experiment, tmp_path):
    import shutil

    from embedtune.context import open_run
    from embedtune.stages import monitor as stage

    run_dir = tmp_path / "run"
    shutil.copytree(toy_experiment["model"], run_dir / "model")
    ctx = open_run(toy_experiment["params"], {}, run_dir)
    first = stage.run(ctx)
    assert first.document["monitored"] == ["v1"] and first.document["regressions"] == {"v1": None}
    assert first.document["index_updates"]["v1"]["encoded"] == 6
    assert first.document["drift"]["new_docs"] == 0 and not first.document["recommendation"]["retrain"]
    second = stage.run(ctx)  # a later run: same model, nothing re-encoded, compared with the first
    assert second.document["index_updates"]["v1"]["encoded"] == 0
    reg = second.document["regressions"]["v1"]
    assert reg["test"] == "paired" and reg["delta"] == 0.0 and not reg["fired"]
    assert len(second.history_table()) == 2 and second.plot() is not None
    assert (tmp_path / "registry" / "versions" / "v1" / "index" / "toy" / "reference.json").is_file()
    assert not second.drift_table().loc["drifted", "value"]
    assert "no version promoted" in second.pointer_table()["note"][0]
