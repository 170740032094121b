"""The pilot's prediction and verdict, from hand-made per-query dev gains."""

import numpy as np

from embedtune.config import DecideConfig
from embedtune.pilot import summarise, verdict


def _point(pairs, mean, n=200, sd=0.05, seed=0):
    rng = np.random.default_rng(seed + pairs)
    return {"pairs": pairs, "steps": pairs // 32, "seconds": 1.0, "gain": mean,
            "per_query_delta": rng.normal(mean, sd, n) - rng.normal(0, 1e-9, n)}


def test_a_gain_that_grows_with_pairs_is_extrapolated_with_an_interval():
    cfg = DecideConfig()
    points = [_point(128, 0.010), _point(512, 0.030)]
    for p in points:
        p["gain"] = float(p["per_query_delta"].mean())
    out = summarise(points, 2048, cfg)
    slope = (points[1]["gain"] - points[0]["gain"]) / np.log(4)
    assert abs(out["predicted_gain"] - (points[1]["gain"] + slope * np.log(4))) < 1e-9  # on the line, 4x further
    low, high = out["interval"]
    assert low < out["predicted_gain"] < high and low > 0
    assert [len(p["interval"]) for p in out["points"]] == [2, 2]
    assert verdict(out, hybrid_gain=0.02, cfg=cfg)[0] == "fine-tune"


def test_no_gain_means_hybrid_or_skip_and_a_falling_line_is_not_extrapolated_downwards():
    cfg = DecideConfig()
    points = [_point(128, 0.01), _point(512, -0.01)]
    for p in points:
        p["gain"] = float(p["per_query_delta"].mean())
    out = summarise(points, 4096, cfg)
    assert out["predicted_gain"] >= points[1]["gain"] - 1e-9  # more data is not assumed to hurt more
    assert out["interval"][0] < 0
    assert verdict(out, hybrid_gain=0.02, cfg=cfg)[0] == "hybrid"
    assert verdict(out, hybrid_gain=-0.01, cfg=cfg)[0] == "skip"
    one = summarise([_point(64, 0.02)], 64, cfg)  # one size: its own gain
    assert abs(one["predicted_gain"] - one["points"][0]["gain"]) < 1e-12
