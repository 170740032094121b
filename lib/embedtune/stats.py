"""The statistics behind every number's uncertainty: paired tests over queries, bootstrap
intervals, Holm's adjustment. ``metrics.json`` (04_evaluate), the report's markers (05_report)
and the sweep page all call these, so the same comparison gets the same p-value everywhere.

Tests (``evaluate.stat_test``):
- ``student``: the two-sided paired t-test (ranx's ``paired_student_t_test``, i.e. scipy's
  ``ttest_rel``);
- ``fisher``: a paired randomization test (Fisher's, as ranx names it): 9,999 seeded random
  sign flips of the per-query differences (``scipy.stats.permutation_test``), so it gives the
  same p-value on every machine and thread count.

Example:
    >>> paired_test(np.array([0.5, 0.7, 0.9]), np.array([0.4, 0.6, 0.9]))
    (0.0666..., 0.1835...)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

RESAMPLES = 9999


def paired_test(a: np.ndarray, b: np.ndarray, test: str = "student", seed: int = 42) -> tuple[float, float]:
    """(mean of ``a - b``, two-sided p) over paired per-query values.

    Identical inputs give p = 1 (the t statistic is undefined there).
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    delta = float((a - b).mean()) if len(a) else float("nan")
    if len(a) < 2 or not np.any(a != b):
        return delta, 1.0
    if test == "fisher":
        from scipy.stats import permutation_test

        p = permutation_test((a, b), lambda x, y, axis=-1: np.mean(x - y, axis=axis),
                             permutation_type="samples", n_resamples=RESAMPLES, vectorized=True,
                             random_state=np.random.default_rng(seed)).pvalue
    elif test == "student":
        from ranx.statistical_tests import paired_student_t_test

        p, _ = paired_student_t_test(a, b)
    else:
        raise ValueError(f"unknown stat_test {test!r}; use student or fisher")
    return delta, float(p)


def wide(per_query: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Queries as rows, systems as columns, from a long frame (columns system, query_id, metrics)."""
    frame = per_query.reset_index() if "system" not in per_query.columns else per_query
    return frame.pivot(index="query_id", columns="system", values=metric)


def versus(per_query: pd.DataFrame, metric: str, first: str, second: str, test: str = "student",
           seed: int = 42) -> tuple[float, float, int]:
    """``first`` against ``second`` on the queries both were scored on: (delta, p, n queries)."""
    table = wide(per_query, metric)
    pair = table[[first, second]].dropna()
    delta, p = paired_test(pair[first].to_numpy(), pair[second].to_numpy(), test, seed)
    return delta, p, len(pair)


def against(per_query: pd.DataFrame, metric: str, baseline: str, test: str = "student",
            seed: int = 42) -> dict[str, tuple[float, float]]:
    """(delta, p) of every other system against ``baseline`` (paired)."""
    table = wide(per_query, metric)
    if baseline not in table:
        return {}
    return {s: versus(per_query, metric, s, baseline, test, seed)[:2] for s in table.columns if s != baseline}


def comparisons(per_query: pd.DataFrame, names: list[str], metrics: list[str], test: str = "student",
                seed: int = 42) -> dict[str, dict[str, dict[str, float]]]:
    """Paired tests for comparisons named ``"a_vs_b"``: ``{name: {metric: {delta, p_value}}}``.

    Comparisons naming a system that was not scored are left out.
    """
    systems = set(wide(per_query, metrics[0]).columns) if metrics else set()
    out = {}
    for name in names:
        a, _, b = name.partition("_vs_")
        if a in systems and b in systems:
            out[name] = {}
            for m in metrics:
                delta, p, _ = versus(per_query, m, a, b, test, seed)
                out[name][m] = {"delta": delta, "p_value": p}
    return out


def bootstrap_ci(per_query: pd.DataFrame, metrics: list[str], samples: int = 2000,
                 confidence: float = 0.95, seed: int = 42) -> pd.DataFrame:
    """Mean of each system and metric over queries, with a percentile bootstrap interval.

    Queries are resampled with replacement (``scipy.stats.bootstrap``); the interval says how
    much the mean would move with another draw of test queries of the same size.

    Returns:
        A frame indexed by (system, metric) with columns ``mean``, ``low``, ``high``.
    """
    from scipy.stats import bootstrap

    rows = []
    for metric in metrics:
        table = wide(per_query, metric)
        for system in table.columns:
            values = table[system].dropna().to_numpy()
            if len(values) < 2 or np.all(values == values[0]):
                low = high = float(values.mean()) if len(values) else float("nan")
            else:
                res = bootstrap((values,), np.mean, n_resamples=samples, confidence_level=confidence,
                                method="percentile", random_state=np.random.default_rng(seed))
                low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
            rows.append({"system": system, "metric": metric, "mean": float(values.mean()),
                         "low": low, "high": high})
    return pd.DataFrame(rows, columns=["system", "metric", "mean", "low", "high"]).set_index(["system", "metric"])


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order): several points against one baseline.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted
