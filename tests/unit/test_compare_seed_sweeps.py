"""bench/compare_seed_sweeps.py: the tool the nfcorpus mpnet adoption rule runs. Its dev-only
comparison must pair each dev query across sweeps at the checkpoints that ship, and read no test
score."""

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from ranx.statistical_tests import paired_student_t_test

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "compare_seed_sweeps.py"


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("compare_seed_sweeps", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class NoTestScores:
    """Stands in for a point's test per_query.csv: any use of it fails the test."""

    def __getattr__(self, name):
        raise AssertionError("the dev-only comparison read a test score")


def _point(folder: Path, seed: int, shipped: dict[str, float], other_steps: dict[str, float] | None = None):
    """A finished point whose dev_per_query.csv marks ``shipped`` (query -> nDCG@10) as the judged
    checkpoint, beside an unjudged step and a guard curve that must both be ignored."""
    folder.mkdir(parents=True)
    rows = [("dev", 0, 20, q, v, True) for q, v in shipped.items()]
    rows += [("dev", 0, 0, q, 1.0, False) for q in shipped]
    rows += [("guard", 0, 20, q, 0.0, False) for q in shipped]
    rows += [("dev", 1, 40, q, v, False) for q, v in (other_steps or {}).items()]
    pd.DataFrame(rows, columns=["curve", "evaluation", "step", "query_id", "ndcg@10", "tested"]).to_csv(
        folder / "dev_per_query.csv", index=False)
    return SimpleNamespace(folder=folder, values={"seed": seed}, per_query=NoTestScores())


def _sweeps(tmp_path, a_scores, b_scores):
    sweeps = {}
    for name, per_seed in (("a", a_scores), ("b", b_scores)):
        sweeps[tmp_path / name] = {str(seed): _point(tmp_path / name / f"seed={seed}", seed, scores)
                                   for seed, scores in per_seed.items()}
    return sweeps


def _run(tool, monkeypatch, capsys, sweeps, *extra):
    monkeypatch.setattr(tool, "points", lambda sweep: sweeps[sweep])
    a, b = list(sweeps)
    monkeypatch.setattr(sys, "argv", ["compare_seed_sweeps.py", str(a), str(b), *extra])
    tool.main()
    return json.loads(capsys.readouterr().out)


def test_dev_chosen_reads_only_the_judged_checkpoint_of_the_runs_own_curve(tool, tmp_path):
    point = _point(tmp_path / "p", 42, {"q1": 0.5, "q2": 0.25}, other_steps={"q1": 0.9, "q2": 0.9})
    chosen = tool.dev_chosen(point.folder)
    assert chosen.to_dict() == {"q1": 0.5, "q2": 0.25}
    assert tool.dev_best(point) == pytest.approx(0.375)
    assert tool.dev_chosen(tmp_path / "no-such-run") is None


def test_dev_only_pairs_each_query_averaged_over_seeds_and_reads_no_test_score(tool, tmp_path, monkeypatch, capsys):
    rng = np.random.default_rng(0)
    queries = [f"q{i}" for i in range(30)]
    a = {seed: dict(zip(queries, rng.uniform(0.2, 0.6, len(queries)))) for seed in (42, 43, 44)}
    b = {seed: {q: v + rng.uniform(0.0, 0.1) for q, v in a[seed].items()} for seed in (42, 43, 44)}
    del b[44]["q0"]  # a query one seed lacks drops out of the pairing
    out = _run(tool, monkeypatch, capsys, _sweeps(tmp_path, a, b), "--dev-only")

    paired = [q for q in queries if q != "q0"]
    mean_a = np.array([np.mean([a[s][q] for s in a]) for q in paired])
    mean_b = np.array([np.mean([b[s][q] for s in b]) for q in paired])
    p, _ = paired_student_t_test(mean_b, mean_a)
    dev = out["b_vs_a_dev"]
    assert dev["dev_queries"] == len(paired)
    assert dev["delta"] == pytest.approx(float((mean_b - mean_a).mean()), abs=5e-5)
    assert dev["a"] == pytest.approx(mean_a.mean(), abs=5e-5) and dev["b"] == pytest.approx(mean_b.mean(), abs=5e-5)
    assert dev["p_one_sided"] == pytest.approx(p / 2, rel=0.01)  # B better: half the two-sided p
    assert out["sweeps"][str(tmp_path / "a")]["dev_best"]["42"] == pytest.approx(np.mean(list(a[42].values())),
                                                                                abs=5e-5)
    assert "b_vs_a" not in out  # nothing from test


def test_a_worse_b_gets_a_one_sided_p_above_one_half(tool, tmp_path, monkeypatch, capsys):
    queries = [f"q{i}" for i in range(10)]
    a = {42: {q: 0.5 + 0.01 * i for i, q in enumerate(queries)}}
    b = {42: {q: v - 0.02 - 0.001 * i for i, (q, v) in enumerate(a[42].items())}}
    dev = _run(tool, monkeypatch, capsys, _sweeps(tmp_path, a, b), "--dev-only")["b_vs_a_dev"]
    assert dev["delta"] < 0 and dev["p_one_sided"] > 0.5


def test_no_dev_comparison_unless_every_point_of_both_sweeps_has_its_dev_table(tool, tmp_path):
    sweeps = _sweeps(tmp_path, {42: {"q1": 0.5, "q2": 0.4}, 43: {"q1": 0.3, "q2": 0.2}},
                     {42: {"q1": 0.6, "q2": 0.45}, 43: {"q1": 0.42, "q2": 0.3}})
    a, b = list(sweeps)
    assert tool.dev_comparison(sweeps, a, b)["b_vs_a_dev"]["dev_queries"] == 2
    (sweeps[b]["43"].folder / "dev_per_query.csv").unlink()
    assert tool.dev_comparison(sweeps, a, b) == {}
