"""A finished sweep's points side by side: quality with intervals, tests against the baseline
point (Holm-adjusted), cost, and the seed's spread."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from embedtune.config import ConfigError
from embedtune.io import read_json
from embedtune.layout import RunLayout
from embedtune.stats import against, bootstrap_ci, holm, paired_test
from embedtune.sweep.grid import cli_value, label

COMPARED_METRICS = ("ndcg@10", "recall@10")


@dataclass
class PointResult:
    name: str
    overrides: dict
    status: str
    error: str | None
    folder: Path
    values: dict  # the varied keys' values
    metrics: dict  # metrics.json ({} when the point has none)
    per_query: Any  # pandas frame: system, query_id, one column per metric (None when missing)
    train_seconds: float | None
    model_bytes: int | None


def _load_point(entry: dict, sweep_dir: Path) -> PointResult:
    import pandas as pd

    from embedtune.report import folder_bytes

    folder = Path(entry["folder"])
    if not folder.is_absolute():
        folder = sweep_dir / folder
    layout = RunLayout(folder)
    metrics = read_json(layout.metrics)
    per_query = None
    if entry["status"] == "ok" and layout.per_query.is_file():
        per_query = pd.read_csv(layout.per_query, dtype={"query_id": str})
    version = read_json(layout.version)
    train_seconds = version.get("train_seconds", (metrics.get("cost") or {}).get("train_seconds"))
    model_bytes = folder_bytes(layout.model_dir) or None
    return PointResult(entry["name"], entry["overrides"], entry["status"], entry.get("error"), folder,
                       entry.get("values", entry["overrides"]), metrics, per_query, train_seconds,
                       model_bytes)


@dataclass
class SweepComparison:
    """Every point of a sweep side by side: quality with intervals, significance, cost."""

    summary: dict  # sweep.json
    points: list[PointResult]
    system: str
    metrics: tuple[str, ...] = COMPARED_METRICS

    @property
    def baseline(self) -> str:
        return self.summary["baseline"]

    @property
    def ok(self) -> list[PointResult]:
        return [p for p in self.points if p.status == "ok" and p.per_query is not None]

    def long(self):
        return self._long.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _long(self):
        """Per-query values of the compared system, one "system" per point (report.py's shape)."""
        import pandas as pd

        frames = []
        for p in self.ok:
            rows = p.per_query[p.per_query["system"] == self.system]
            frames.append(rows.assign(system=p.name))
        if not frames:
            return pd.DataFrame(columns=["system", "query_id", *self.metrics])
        return pd.concat(frames, ignore_index=True)

    def intervals(self):
        return self._intervals.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _intervals(self):
        """(point, metric) -> mean, low, high: percentile bootstrap over the test queries."""
        long = self._long
        if long.empty:
            import pandas as pd

            return pd.DataFrame(columns=["mean", "low", "high"])
        return bootstrap_ci(long, list(self.metrics), samples=self.summary["bootstrap_samples"],
                            confidence=self.summary["confidence"], seed=self.summary["seed"])

    def significance(self):
        return self._significance.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _significance(self):
        """Each point against the baseline point, paired over the queries both answered.

        Columns: point, metric, delta (point minus baseline), p_value, p_holm (Holm-adjusted over
        the points, per metric), significant (p_holm below ``evaluate.max_p``).
        """
        import pandas as pd

        long = self._long
        rows = []
        if self.baseline in set(long["system"]):
            for metric in self.metrics:
                tests = against(long, metric, self.baseline, self.summary["stat_test"], self.summary["seed"])
                adjusted = holm([p for _, p in tests.values()])
                for (point, (delta, p)), p_holm in zip(tests.items(), adjusted):
                    rows.append({"point": point, "metric": metric, "delta": delta, "p_value": p,
                                 "p_holm": p_holm, "significant": p_holm < self.summary["max_p"]})
        columns = ["point", "metric", "delta", "p_value", "p_holm", "significant"]
        return pd.DataFrame(rows, columns=columns)

    def table(self):
        """One row per point: varied values, status, quality with intervals, deltas, cost."""
        import pandas as pd

        ci = self._intervals
        sig = self._significance.set_index(["point", "metric"])
        rows = []
        for p in self.points:
            row: dict[str, Any] = {"point": p.name}
            row.update({k: label(p.values.get(k)) for k in self.summary["varied"]})
            row["status"] = p.status + (" (baseline)" if p.name == self.baseline else "")
            for metric in self.metrics:
                have = (p.name, metric) in ci.index
                row[metric] = ci.loc[(p.name, metric), "mean"] if have else math.nan
                row[f"{metric} low"] = ci.loc[(p.name, metric), "low"] if have else math.nan
                row[f"{metric} high"] = ci.loc[(p.name, metric), "high"] if have else math.nan
            for metric in self.metrics:
                have = (p.name, metric) in sig.index
                row[f"{metric} vs baseline"] = sig.loc[(p.name, metric), "delta"] if have else math.nan
                row[f"{metric} p"] = sig.loc[(p.name, metric), "p_value"] if have else math.nan
            vs_generic = (p.metrics.get("significance") or {}).get(f"{self.system}_vs_generic", {})
            row["ndcg@10 vs generic"] = vs_generic.get("ndcg@10", {}).get("delta", math.nan)
            row["ndcg@10 vs generic p"] = vs_generic.get("ndcg@10", {}).get("p_value", math.nan)
            row["test queries"] = (p.metrics.get("dataset") or {}).get("n_queries")
            row["train seconds"] = p.train_seconds
            row["model MB"] = p.model_bytes / 1e6 if p.model_bytes else None
            row["error"] = p.error
            rows.append(row)
        return pd.DataFrame(rows).set_index("point")

    def report_table(self):
        """:meth:`table` for reading: "mean [low, high]" cells, signed deltas with p-values
        (the errors of failed points are in :meth:`failures`)."""
        import pandas as pd

        table = self.table()
        out = pd.DataFrame(index=table.index)
        for key in self.summary["varied"]:
            out[key] = table[key]
        out["status"] = table["status"]
        level = round(100 * self.summary["confidence"])
        for metric in self.metrics:
            out[f"{metric} [{level} % CI]"] = [
                "" if math.isnan(m) else f"{m:.4f} [{lo:.4f}, {hi:.4f}]"
                for m, lo, hi in zip(table[metric], table[f"{metric} low"], table[f"{metric} high"])]
        for metric in self.metrics:
            out[f"{metric} vs baseline (p)"] = [
                "" if math.isnan(d) else f"{d:+.4f} ({p:.3g})"
                for d, p in zip(table[f"{metric} vs baseline"], table[f"{metric} p"])]
        out["ndcg@10 vs generic (p)"] = [
            "" if d is None or math.isnan(d) else f"{d:+.4f} ({p:.3g})"
            for d, p in zip(table["ndcg@10 vs generic"], table["ndcg@10 vs generic p"])]
        out["train s"] = table["train seconds"].map(lambda v: "" if pd.isna(v) else f"{v:,.0f}")
        out["model MB"] = table["model MB"].map(lambda v: "" if pd.isna(v) else f"{v:,.1f}")
        return out  # errors: see failures()

    def headline(self) -> str:
        """A sentence or two: how many points, the best one, and whether it beats the baseline."""
        n_failed = sum(p.status != "ok" for p in self.points)
        text = (f"Sweep {self.summary['sweep']} of {self.summary['experiment']}: {len(self.points)} points "
                f"varying {', '.join(self.summary['varied']) or 'nothing'}"
                f"{f', {n_failed} not finished' if n_failed else ''}; system compared: {self.system}; "
                f"baseline point: {self.baseline}.")
        table = self.table()
        scored = table.dropna(subset=["ndcg@10"]) if "ndcg@10" in table else table.iloc[:0]
        if scored.empty:
            return text + " No point has results yet."
        if self.baseline not in scored.index:
            text += " The baseline point has no results, so no point is tested against it."
        best = scored["ndcg@10"].idxmax()
        row = scored.loc[best]
        text += (f" Best nDCG@10: {best} with {row['ndcg@10']:.4f} "
                 f"[{row['ndcg@10 low']:.4f}, {row['ndcg@10 high']:.4f}]")
        if best != self.baseline and not math.isnan(row["ndcg@10 vs baseline"]):
            sig = self._significance.set_index(["point", "metric"])
            p_holm = sig.loc[(best, "ndcg@10"), "p_holm"]
            verdict = "significant" if p_holm < self.summary["max_p"] else "not significant"
            text += (f", {row['ndcg@10 vs baseline']:+.4f} against the baseline "
                     f"(p = {row['ndcg@10 p']:.3g}, Holm-adjusted {p_holm:.3g}: {verdict}).")
        else:
            text += "."
        return text

    def command(self) -> str:
        """The command line that runs this sweep again (extra points come from the params file)."""
        import shlex

        s = self.summary
        parts = ["embedtune", "sweep", shlex.quote(s["params_file"]), "--name", shlex.quote(s["sweep"])]
        for key, values in s["grid"].items():
            parts += ["--grid", shlex.quote(f"{key}={','.join(cli_value(v) for v in values)}")]
        for key, value in (s.get("fixed") or {}).items():
            parts += ["--set", shlex.quote(f"{key}={cli_value(value)}")]
        parts += ["--stages", ",".join(s["stages"]), "--baseline", shlex.quote(s["baseline"])]
        if s.get("x"):
            parts += ["--x", s["x"]]
        return " ".join(parts)

    def failures(self):
        """The points that did not finish, with their error and the stage that failed."""
        import pandas as pd

        entries = {e["name"]: e for e in self.summary["points"]}
        rows = [{"point": p.name, "status": p.status, "failed stage": entries[p.name].get("failed_stage"),
                 "error": p.error, "folder": str(p.folder)} for p in self.points if p.status != "ok"]
        return pd.DataFrame(rows, columns=["point", "status", "failed stage", "error", "folder"])

    def plot(self, metrics: Iterable[str] | None = None):
        """The swept parameter against each metric, with the bootstrap intervals as error bars;
        one line per combination of the other varied keys, and the baseline point's generic
        model as a dashed line (no fine-tuning)."""
        import matplotlib.pyplot as plt

        metrics = list(metrics or self.metrics)
        table = self.table()
        x_key = self.summary.get("x")
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
        done = [p for p in self.points if p.name in table.index and not math.isnan(table.loc[p.name, metrics[0]])]
        x_of = (lambda p: p.values.get(x_key)) if x_key else (lambda p: p.name)
        values = [x_of(p) for p in self.points]  # every point, finished or not: one axis per sweep
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        order = list(dict.fromkeys(label(x_of(p)) for p in self.points))  # grid order
        others = [k for k in self.summary["varied"] if k != x_key]
        series: dict[str, list[PointResult]] = {}
        for p in done:
            name = ", ".join(f"{k}={label(p.values.get(k))}" for k in others) or self.system
            series.setdefault(name, []).append(p)
        generic = self._generic(metrics)
        for ax, metric in zip(axes[0], metrics):
            for name, members in series.items():
                at = sorted(((x_of(p) if numeric else order.index(label(x_of(p))), p.name) for p in members))
                xs = [x for x, _ in at]
                ys = [table.loc[n, metric] for _, n in at]
                err = [[y - table.loc[n, f"{metric} low"] for y, (_, n) in zip(ys, at)],
                       [table.loc[n, f"{metric} high"] - y for y, (_, n) in zip(ys, at)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
            if generic.get(metric) is not None:
                ax.axhline(generic[metric], color="0.5", linestyle="--", label="generic (no fine-tuning)")
            if numeric:
                if min(values) > 0 and max(values) / min(values) >= 20:
                    ax.set_xscale("log")
                distinct = sorted(set(values))
                if len(distinct) <= 12:  # a grid's few values: tick exactly those
                    ax.minorticks_off()
                    ax.set_xticks(distinct, [label(v) for v in distinct])
            else:
                ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
            ax.set_xlabel(x_key or "point")
            ax.set_ylabel(f"{metric} ({self.system})")
            ax.grid(alpha=0.3)
            ax.set_title(f"{metric} against {x_key or 'point'}")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def truncated(self, metric: str = "ndcg@10"):
        """``metric`` of each point's fine-tuned and generic model at the full dimension and at
        every ``evaluate.dims`` cut (Matryoshka evaluation); empty when no point has cuts."""
        import pandas as pd

        rows = []
        for p in self.ok:
            cuts = p.metrics.get("truncated") or {}
            if not cuts:
                continue
            full = p.metrics["cost"].get("embedding_dim", "full")
            for system in ("finetuned", "generic"):
                row = {"point": p.name, "system": system,
                       str(full): (p.metrics["systems"].get(system) or {}).get(metric, math.nan)}
                row.update({dim: (block.get(system) or {}).get(metric, math.nan) for dim, block in cuts.items()})
                rows.append(row)
        if not rows:
            return pd.DataFrame()
        table = pd.DataFrame(rows).set_index(["point", "system"])
        ordered = sorted(table.columns, key=lambda c: -int(c) if str(c).isdigit() else 0)
        table = table[ordered]
        table.columns = [f"{metric} @{c}" for c in ordered]
        return table

    def over_seeds(self, metric: str = "ndcg@10"):
        """The finished points grouped by every varied key but ``seed``: what the seed moves.

        One row per group: the seeds it has, the mean, standard deviation, lowest and highest of
        the points' means, and the seed-averaged fine-tuning against the generic model: each test
        query's ``metric`` averaged over the group's seeds, paired against the generic model's on
        the same queries (``stat_test``), with ``p_holm`` Holm-adjusted over the groups. Empty
        unless ``seed`` is one of the varied keys.
        """
        import pandas as pd

        if "seed" not in self.summary["varied"]:
            return pd.DataFrame()
        others = [k for k in self.summary["varied"] if k != "seed"]
        groups: dict[tuple, list[PointResult]] = {}
        for p in self.ok:
            groups.setdefault(tuple(label(p.values.get(k)) for k in others), []).append(p)
        x_key = self.summary.get("x")
        if x_key in others and all(isinstance(p.values.get(x_key), (int, float)) for p in self.ok):
            position = others.index(x_key)
            groups = dict(sorted(groups.items(), key=lambda kv: float(kv[0][position])))
        rows, tests = [], []
        for key, members in groups.items():
            wide = {}
            for p in members:
                frame = p.per_query.set_index("query_id")
                for system in (self.system, "generic"):
                    wide[(system, p.name)] = frame.loc[frame["system"] == system, metric]
            wide = pd.DataFrame(wide).dropna()  # the queries every seed answered
            tuned = wide[self.system].mean(axis=1)
            generic = wide["generic"].mean(axis=1)
            means = wide[self.system].mean()  # each seed's mean over those queries
            delta, p_value = paired_test(tuned.to_numpy(), generic.to_numpy(), self.summary["stat_test"],
                                         self.summary["seed"])
            tests.append(p_value)
            row = dict(zip(others, key))
            row.update({"seeds": ", ".join(label(p.values.get("seed")) for p in members),
                        "n seeds": len(members), "queries": len(wide), "mean": means.mean(),
                        "sd": means.std(ddof=1) if len(members) > 1 else math.nan,
                        "min": means.min(), "max": means.max(), "generic": generic.mean(),
                        "vs generic": delta, "p_value": p_value})
            rows.append(row)
        for row, p_holm in zip(rows, holm(tests)):
            row["p_holm"] = p_holm
            row["significant"] = p_holm < self.summary["max_p"]
        return pd.DataFrame(rows)

    def _generic(self, metrics: list[str]) -> dict:
        point = next((p for p in self.ok if p.name == self.baseline), None) or (self.ok[0] if self.ok else None)
        if point is None or self.system == "generic":
            return {}
        return {m: (point.metrics.get("systems") or {}).get("generic", {}).get(m) for m in metrics}


def read_summary(sweep_dir: str | Path) -> dict:
    """``sweep.json`` of a sweep folder."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no sweep.json; run the sweep first")
    return json.loads(path.read_text())


def load_comparison(sweep_dir: str | Path, system: str | None = None) -> SweepComparison:
    """Read a sweep folder (``sweep.json`` and every point's ``metrics.json``/``per_query.csv``)."""
    folder = Path(sweep_dir)
    summary = read_summary(folder)
    points = [_load_point(entry, folder) for entry in summary["points"]]
    return SweepComparison(summary, points, system or summary.get("system", "finetuned"))
