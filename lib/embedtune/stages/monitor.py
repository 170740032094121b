"""Stage 06_monitor: model versions side by side, recall over time, drift, re-train, rollback.

Normal monitoring (``monitor.scenario: false``): the model that 03_train left in the run folder
is registered (once: registration is keyed by its weights) in the registry
(``monitor.registry``); it, and the production version when that is another, are evaluated
through their own version-guarded index of the experiment's corpus (updated incrementally) on the
experiment's test queries, the fixed gold set. Each evaluation is appended to the registry's
monitoring log; the latest is checked for a regression against the version's reference; the
corpus is compared with the one the version was first indexed on (drift); and the base model's
fingerprint with the one it was trained from. The first run of a version is its reference, so it
shows no drift and no regression: the log is what makes later runs informative.

With ``monitor.scenario: true`` the stage runs the worked scenario of ``embedtune.scenario``
instead and shows its log and steps.

Leaves ``monitor.json`` in the run folder (and ``scenario.json`` for the scenario).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import matplotlib.pyplot as plt
import pandas as pd

from embedtune.context import RunContext, stage
from embedtune.index_store import CorpusIndex
from embedtune.io import atomic_write_json
from embedtune.models import model_fingerprint
from embedtune.monitor import (CorpusSnapshot, MonitorLog, Recommendation, check_regression,
                               corpus_drift, evaluate_version, recommend)
from embedtune.provenance import now
from embedtune.registry import Registry, registry_dir


@dataclass
class MonitorResult:
    document: dict  # monitor.json
    entries: list[dict]  # the monitoring log (of the gold set shown)
    versions: pd.DataFrame  # the registry, one row per version
    scenario: dict | None = None  # scenario.json, when the scenario ran
    metric: str = "recall@10"
    notes: list[str] = field(default_factory=list)
    pointer: dict = field(default_factory=dict)  # the registry's production pointer

    def pointer_table(self) -> pd.DataFrame:
        """Every promote and rollback of the registry's production pointer, oldest first."""
        events = self.pointer.get("events", [])
        return pd.DataFrame(events) if events else pd.DataFrame({"note": ["no version promoted yet"]})

    def versions_table(self) -> pd.DataFrame:
        return self.versions

    def history_table(self) -> pd.DataFrame:
        """One row per evaluation in the log: when, which version, corpus, mean metrics."""
        rows = []
        for i, e in enumerate(self.entries, 1):
            row = {"n": i, "time": e["time"][:19], "label": e.get("label") or "", "version": e["version"],
                   "queries": e["n_queries"], "docs": e["n_docs"], "corpus": e["corpus_fingerprint"][7:15]}
            row.update({m: e["metrics"][m] for m in (self.metric, "ndcg@10") if m in e["metrics"]})
            for group, values in (e.get("groups") or {}).items():
                row[f"{self.metric} [{group}]"] = values.get(self.metric)
            rows.append(row)
        return pd.DataFrame(rows).set_index("n") if rows else pd.DataFrame()

    def regression_table(self) -> pd.DataFrame:
        rows = [dict(r) for r in self.document["regressions"].values() if r]
        return pd.DataFrame(rows).set_index("version") if rows else pd.DataFrame(
            {"note": ["no version has two evaluations on this gold set yet"]})

    def drift_table(self) -> pd.DataFrame:
        drift = self.document.get("drift")
        if not drift:
            return pd.DataFrame({"note": ["no drift measured"]})
        keep = ["reference_docs", "current_docs", "new_docs", "removed_docs", "new_doc_share",
                "new_vocab_token_share", "new_vocab_type_share", "new_docs_vocab_token_share",
                "centroid_cosine", "domain_auc", "drifted"]
        table = pd.DataFrame({"value": [drift[k] for k in keep]}, index=keep)
        table.loc["top_new_words"] = ", ".join(drift["top_new_words"][:10])
        return table

    def recommendation_text(self) -> str:
        rec = self.document["recommendation"]
        if rec is None:
            return "no recommendation (nothing monitored)"
        return Recommendation(**rec).text()

    def steps_table(self) -> pd.DataFrame:
        """The scenario's steps with their headline numbers (empty outside the scenario)."""
        if not self.scenario:
            return pd.DataFrame({"note": ["monitor.scenario is off: no scenario ran"]})
        rows = []
        for s in self.scenario["steps"]:
            row = {"step": s["step"], "production": s.get("production")}
            if "index" in s:
                row.update({"encoded": s["index"]["encoded"], "kept": s["index"]["kept"],
                            "removed": s["index"]["removed"]})
            row.update({m: s.get(m) for m in (self.metric, "ndcg@10") if m in s})
            for group, values in s.get("groups", {}).items():
                row[f"{self.metric} [{group}]"] = values.get(self.metric)
            rows.append(row)
        counts = {c: "Int64" for c in ("encoded", "kept", "removed")}  # a training step encodes nothing
        return pd.DataFrame(rows).astype(counts).set_index("step")

    def plot(self):
        """The monitored metric over the evaluations, one line per version (and per query group
        when the gold set has groups); a regression is marked where it fired."""
        entries = self.entries
        grouped = any(e.get("groups") for e in entries)
        fig, axes = plt.subplots(1, 2 if grouped else 1, figsize=(12 if grouped else 7, 4), squeeze=False)
        ax = axes[0, 0]
        xs = list(range(1, len(entries) + 1))
        for i, version in enumerate(dict.fromkeys(e["version"] for e in entries)):
            points = [(x, e["metrics"][self.metric]) for x, e in zip(xs, entries) if e["version"] == version]
            ax.plot(*zip(*points), marker="o", color=f"C{i}", label=version)
            regression = self.document["regressions"].get(version)
            if regression:
                ref = regression["reference_mean"]
                ax.axhspan(ref - regression["threshold"], ref, color=f"C{i}", alpha=0.08)
                if regression["fired"]:
                    ax.scatter([points[-1][0]], [points[-1][1]], s=220, facecolors="none",
                               edgecolors="red", linewidths=2, zorder=3,
                               label=f"{version}: regression (p={regression['p_value']:.2g})")
        labels = [e.get("label") or e["time"][:16] for e in entries]
        for a in axes[0]:
            a.set_xticks(xs)
            a.set_xticklabels(labels, rotation=20, ha="right", fontsize=8)
            a.set_ylabel(self.metric)
            a.grid(alpha=0.3)
        ax.set_title(f"{self.metric} on the gold set, per version")
        ax.legend(fontsize=8)
        if grouped:
            b = axes[0, 1]
            names = list(dict.fromkeys(g for e in entries for g in (e.get("groups") or {})))
            for j, name in enumerate(names):
                points = [(x, e["groups"][name][self.metric]) for x, e in zip(xs, entries)
                          if name in (e.get("groups") or {})]
                b.plot(*zip(*points), marker="s", linestyle="--", color=f"C{j + 3}", label=f"{name} queries")
            b.set_title(f"{self.metric} per query group")
            b.legend(fontsize=8)
        fig.tight_layout()
        return fig


def _gold_set(ctx: RunContext):
    ds, splits = ctx.data
    return ds, {q: ds.queries[q] for q in splits.test}, splits.test


@stage("monitor")
def run(ctx: RunContext) -> MonitorResult:
    cfg = ctx.cfg
    if cfg.monitor.scenario:
        return _run_scenario(ctx)
    mc = cfg.monitor
    metrics = list(dict.fromkeys([mc.metric, *cfg.evaluate.metrics]))
    registry = Registry(registry_dir(mc.registry))
    monitor_log = MonitorLog(registry.log_path)
    ds, queries, qrels = _gold_set(ctx)
    if not qrels:
        raise ValueError(f"no judged test queries in split {cfg.data.eval_split!r}: nothing to monitor")
    gold_set = cfg.experiment

    versions, notes = [], []
    model_dir = ctx.layout.model_dir
    if (model_dir / "modules.json").is_file() and ctx.version().get("kept", True):
        versions.append(registry.register(model_dir)["version"])
    elif (model_dir / "modules.json").is_file():
        notes.append("the fine-tuned model was not kept (the keep-base guard: it did not beat the base "
                     "model on dev), so it is not registered or monitored")
    production = registry.production()
    if production and production not in versions:
        versions.append(production)
        notes.append(f"production version {production} monitored on this experiment's gold set too")
    if not versions:
        raise ValueError(f"nothing to monitor: no model in {model_dir} (run the train stage) "
                         f"and no production version in the registry at {registry.root}")

    regressions, indexes, reports = {}, {}, {}
    for version in versions:
        model = registry.load(version, cfg.model.device)
        index = CorpusIndex(registry.index_dir(version, cfg.experiment))
        reports[version] = index.update(model, ds.corpus, version=version, cfg=cfg.model).as_dict()
        reference = index.folder / "reference.json"
        if not reference.is_file():  # the corpus this version was first indexed on
            CorpusSnapshot.from_index(ds.corpus, index).save(reference)
        entry = monitor_log.append(evaluate_version(
            index, model, version, queries, qrels, cfg.model, metrics, monitored=mc.metric,
            gold_set=gold_set, label=f"{version} ({ctx.run_dir.name})", top_k=cfg.retrieval.top_k))
        registry.record_metrics(version, gold_set, {"metrics": entry["metrics"], "evaluated": entry["time"],
                                                    "gold": entry["gold_fingerprint"],
                                                    "corpus": entry["corpus_fingerprint"]})
        regressions[version] = check_regression(monitor_log.entries(gold_set=gold_set), version, mc,
                                                gold_set=gold_set, seed=cfg.seed)
        indexes[version] = index

    served = production if production in versions else versions[0]
    index = indexes[served]
    drift = corpus_drift(CorpusSnapshot.load(index.folder / "reference.json"), ds.corpus, index, mc,
                         seed=cfg.seed)
    advice = recommend(registry.manifest(served), drift=drift, regression=regressions[served],
                       base_fingerprint=model_fingerprint(ctx.base_model), base_model=cfg.model.name)
    doc = {
        "created": now(),
        "registry": str(registry.root),
        "production": production,
        "monitored": versions,
        "served": served,
        "gold_set": {"name": gold_set, "queries": len(qrels), "split": cfg.data.eval_split},
        "metric": mc.metric,
        "index_updates": reports,
        "latest": {v: registry.manifest(v)["metrics"]["gold"][gold_set] for v in versions},
        "regressions": {v: r.as_dict() if r else None for v, r in regressions.items()},
        "drift": drift.as_dict(),
        "recommendation": advice.as_dict(),
        "log": str(monitor_log.path),
        "evaluations": len(monitor_log.entries(gold_set=gold_set)),
        "notes": notes,
    }
    atomic_write_json(ctx.layout.monitor_json, doc)
    ctx.update_manifest(monitor={"versions": versions, "production": production,
                                 "retrain": advice.retrain, "finished": now()})
    return MonitorResult(doc, monitor_log.entries(gold_set=gold_set), registry.table(mc.metric),
                         metric=mc.metric, notes=notes, pointer=registry.pointer())


def _run_scenario(ctx: RunContext) -> MonitorResult:
    from embedtune.scenario import SLOT, run_scenario

    mc = ctx.cfg.monitor
    scenario = run_scenario(ctx)
    registry = Registry(scenario["registry"])
    monitor_log = MonitorLog(registry.log_path)
    steps = {s["step"]: s for s in scenario["steps"]}
    grown = next(s for s in scenario["steps"] if "drift" in s)
    doc = {
        "created": now(),
        "scenario": str(ctx.layout.scenario_json),
        "registry": str(registry.root),
        "production": registry.production(),
        "monitored": registry.version_ids(),
        "gold_set": {"name": SLOT},
        "metric": mc.metric,
        "regressions": {v: (r.as_dict() if (r := check_regression(monitor_log.entries(), v, mc, SLOT,
                                                                   ctx.cfg.seed)) else None)
                        for v in registry.version_ids()},
        "drift": grown["drift"],
        "recommendation": grown["recommendation"],
        "log": str(monitor_log.path),
        "evaluations": len(monitor_log.entries()),
        "steps": list(steps),
    }
    atomic_write_json(ctx.layout.monitor_json, doc)
    ctx.update_manifest(monitor={"scenario": True, "seconds": scenario["seconds"], "finished": now()})
    return MonitorResult(doc, monitor_log.entries(), registry.table(mc.metric), scenario=scenario,
                         metric=mc.metric, pointer=registry.pointer())
