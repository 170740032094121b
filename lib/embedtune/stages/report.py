"""Stage 05_report: the shareable report of one experiment, from what earlier stages left.

Reads ``decision.json``, ``metrics.json``, ``per_query.csv``, ``manifest.json`` and ``model/``;
times the systems one query at a time; writes ``report.json`` (what the results index reads)
and ``figures/*.png``. The runner renders the notebook, code hidden, to ``report.html``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd

from embedtune import plots
from embedtune import report as rp
from embedtune.context import RunContext, stage
from embedtune.io import atomic_path, atomic_write_json, read_json
from embedtune.layout import RunLayout
from embedtune.provenance import now
from embedtune.stats import bootstrap_ci

SYSTEM_ORDER = ("bm25", "generic", "hybrid_generic", "finetuned", "hybrid_finetuned")



@dataclass
class ReportResult:
    run_dir: Path
    metrics: dict
    decision: dict
    per_query: pd.DataFrame
    ci: pd.DataFrame
    cost_stages: pd.DataFrame
    cost: dict
    version: dict
    training_log: dict
    negatives: dict
    pairs: dict
    negative_scores: dict[str, list[float]] = field(default_factory=dict)
    comparisons: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: dict[str, Path] = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    # ---- tables -------------------------------------------------------------------------
    def headline(self) -> pd.DataFrame:
        return rp.headline(self.metrics)

    def headline_sentence(self) -> str:
        return rp.headline_sentence(self.metrics)

    def quality(self, metrics: tuple[str, ...] = ("ndcg@10", "recall@10", "recall@100", "mrr@10",
                                                  "hit_rate@10")) -> pd.DataFrame:
        cfg = self.summary["evaluate"]
        return rp.quality_table(self.ci, self.per_query, [m for m in metrics if m in self.per_query],
                                baseline="generic", max_p=cfg["max_p"], test=cfg["stat_test"],
                                seed=cfg["seed"])

    def significance(self) -> pd.DataFrame:
        rows = [{"comparison": name, "metric": m, "delta": v["delta"], "p_value": v["p_value"]}
                for name, per_metric in self.metrics.get("significance", {}).items()
                for m, v in per_metric.items() if m in ("ndcg@10", "recall@10", "mrr@10")]
        return pd.DataFrame(rows)

    def ood_table(self) -> pd.DataFrame:
        rows = []
        for name, info in self.metrics.get("ood", {}).items():
            sig = info["significance"]["finetuned_vs_generic"]["ndcg@10"]
            rows.append({"dataset": name, "queries": info["n_queries"],
                         "generic ndcg@10": info["generic"]["ndcg@10"],
                         "finetuned ndcg@10": info["finetuned"]["ndcg@10"],
                         "delta": sig["delta"], "p_value": sig["p_value"]})
        return pd.DataFrame(rows).set_index("dataset") if rows else pd.DataFrame()

    def sources_table(self) -> pd.DataFrame:
        """Training pairs per source (gold, synthetic, ict/crop, clicks) after the leakage guard."""
        sources = self.pairs.get("sources", {})
        return pd.DataFrame({"pairs": sources}) if sources else pd.DataFrame()

    def clicks_table(self, metric: str = "ndcg@10") -> pd.DataFrame:
        """Every system on the click validation set (when 01_pairs made one), beside test, with
        each set's rank of the systems and whether the two orders agree (Kendall's tau)."""
        block = self.metrics.get("click_validation")
        if not block:
            return pd.DataFrame()
        clicked = pd.DataFrame(block["systems"]).T
        test = pd.Series({s: v[metric] for s, v in self.metrics["systems"].items()})
        frame = pd.DataFrame({f"clicks {metric}": clicked[metric], f"test {metric}": test}).dropna()
        frame["clicks rank"] = frame[f"clicks {metric}"].rank(ascending=False, method="min").astype(int)
        frame["test rank"] = frame[f"test {metric}"].rank(ascending=False, method="min").astype(int)
        agreement = _click_agreement(self.metrics, metric)
        frame.attrs["caption"] = (
            f"{block['n_queries']} click-validation queries"
            + (" (simulated clicks)" if block.get("simulated") else "")
            + f" beside {self.metrics['dataset']['n_queries']} gold test queries: Kendall's tau "
            f"{agreement['kendall_tau']:.2f}; "
            + ("the same order" if agreement["same_order"] else
               "the same best system, another order" if agreement["same_best"] else
               "a different best system"))
        return frame.sort_values("test rank")

    def comparison_tables(self) -> dict[str, pd.DataFrame]:
        """This run against each run in ``report.compare_with``, query by query (nDCG@10)."""
        return self.comparisons

    def negatives_table(self) -> pd.DataFrame:
        keys = ["candidates", "removed_judged_positive", "removed_margin", "kept"]
        present = {k: self.negatives[k] for k in keys if k in self.negatives}
        return pd.DataFrame(present).astype("Int64") if present else pd.DataFrame()

    def cost_summary(self) -> pd.DataFrame:
        c = self.cost
        rows = {
            "device": c["device"],
            "cores (torch threads)": c["cores"],
            "wall time of all stages": f"{c['wall_seconds'] / 60:.1f} min",
            "of which training": f"{(c['train_seconds'] or 0) / 60:.1f} min",
            "CPU core-hours": f"{c['cpu_core_hours']:.3f}",
            "GPU hours": f"{c['gpu_hours']:.3f}",
            "estimated price": f"${c['price_usd']:.4f} at ${c['prices']['cpu_hour']}/core-hour, "
                               f"${c['prices']['gpu_hour']}/GPU-hour",
            "model size": f"{c['model_bytes'] / 1e6:.1f} MB" if c["model_bytes"] else "no fine-tuned model",
            "index size": f"{(c['index_bytes'] or 0) / 1e6:.1f} MB ({c['embedding_dim']}-d float32)",
            "encoding speed": f"{c['encode_docs_per_second']:.0f} docs/s"
                              if c.get("encode_docs_per_second") else "n/a",
            "encoder": f"{c.get('encoder', 'torch')} ({(c.get('encoding') or {}).get('chosen_by', 'params')})",
        }
        if c.get("ndcg@10_gain_finetuned_vs_generic") is not None:
            rows["nDCG@10 gain bought"] = f"{c['ndcg@10_gain_finetuned_vs_generic']:+.4f}"
        return pd.DataFrame({"value": rows})

    def latency_table(self) -> pd.DataFrame:
        return pd.DataFrame(self.cost["latency_ms"]).T.round(2)

    # ---- figures ------------------------------------------------------------------------
    def show(self, name: str):
        """Draw one figure (and save it under figures/)."""
        fig = FIGURES[name](self)
        if fig is None:
            return None
        fig.tight_layout()
        path = RunLayout(self.run_dir).figure(name)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        self.figures[name] = path
        return fig


def _fig_headline(r: ReportResult):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.8))
    table = r.headline()
    plots.headline_bars(table, "recall@10", claim="brief's claim (recall@10)", ax=a)
    plots.headline_bars(table, "ndcg@10", ax=b)
    return fig


def _fig_ci(r: ReportResult):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.2))
    plots.ci_plot(r.ci, "ndcg@10", ax=a)
    plots.ci_plot(r.ci, "recall@10", ax=b)
    return fig


def _fig_recall(r: ReportResult):
    fig, ax = plt.subplots(figsize=(6.5, 4))
    plots.recall_curve({s: v for s, v in r.metrics["systems"].items()}, ax=ax)
    return fig


def _fig_win_loss(r: ReportResult):
    systems = set(r.per_query["system"])
    if not {"finetuned", "generic"} <= systems:
        return None
    fig, ax = plt.subplots(figsize=(9, 3.2))
    plots.win_loss_plot(rp.win_loss(r.per_query, "finetuned", "generic"), ax=ax)
    return fig


def _fig_training(r: ReportResult):
    if not r.training_log:
        return None
    return plots.training_curves(r.training_log["log_history"], r.training_log["dev_before"])


def _fig_negatives(r: ReportResult):
    if not r.negative_scores.get("negative"):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    plots.score_histograms(r.negative_scores["positive"], r.negative_scores["negative"], ax=ax)
    return fig


def _fig_ood(r: ReportResult):
    if not r.metrics.get("ood"):
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    plots.ood_bars(r.metrics["ood"], ax=ax)
    return fig


def _fig_cost(r: ReportResult):
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.2))
    if not r.cost_stages.empty:
        plots.stage_time_bars(r.cost_stages["seconds"], ax=a)
    plots.latency_bars(r.cost["latency_ms"], ax=b)
    return fig


def _fig_decision(r: ReportResult):
    if not r.decision:
        return None
    return plots.draw_flowchart(r.decision["path"], r.decision.get("flowchart_verdict", r.decision["verdict"]))


def _fig_pilot(r: ReportResult):
    return plots.pilot_curve(r.decision["pilot"]) if r.decision.get("pilot") else None


FIGURES = {"pilot": _fig_pilot, "headline": _fig_headline, "intervals": _fig_ci, "recall_at_k": _fig_recall,
           "win_loss": _fig_win_loss, "training": _fig_training, "negatives": _fig_negatives,
           "ood": _fig_ood, "cost": _fig_cost, "decision": _fig_decision}


def measure_latency(ctx: RunContext, metrics_doc: dict, n_queries: int) -> dict[str, dict]:
    """Time each system answering test queries one at a time (encode + search + fuse), with the
    hybrid weights 04_evaluate chose and no embedding cache."""
    cfg = ctx.cfg
    ds, splits = ctx.data
    qids = sorted(splits.test)
    qids = random.Random(cfg.seed).sample(qids, min(n_queries, len(qids)))
    texts = [ds.queries[q] for q in qids]
    systems = {name: system for name, system in ctx.systems(metrics_doc.get("hybrid", {})).items()
               if name in metrics_doc["systems"]}
    return {name: rp.latency(lambda text, s=system: s.search({"q": text}, cfg.retrieval.top_k, cache=False),
                             texts)
            for name, system in systems.items()}


def negative_scores(ctx: RunContext, max_rows: int = 5000) -> dict[str, list[float]]:
    """Base-model cosine of each training pair's positive and its mined negatives."""
    import numpy as np

    if not ctx.layout.negatives_train.is_file():
        return {}
    rows = ctx.negatives()[:max_rows]
    index = ctx.generic_index
    position = {d: i for i, d in enumerate(index.doc_ids)}
    texts = {r["query_id"]: r["anchor"] for r in rows}  # synthetic queries are not in ds.queries
    qids = sorted(texts)
    q_emb = dict(zip(qids, ctx.embed_queries(ctx.base_model, [texts[q] for q in qids])))
    pos, neg = [], []
    for r in rows:
        q = q_emb[r["query_id"]]
        if r["doc_id"] in position:
            pos.append(float(np.dot(q, index.embeddings[position[r["doc_id"]]])))
        neg += [float(np.dot(q, index.embeddings[position[d]])) for d in r.get("negative_ids", [])
                if d in position]
    return {"positive": pos, "negative": neg}


def compare_with(ctx: RunContext, per_query: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """nDCG@10 of this run's systems against other runs' on the shared test queries.

    ``report.compare_with`` names experiments (folders beside this experiment's in the results
    folder) or paths to run folders (project-relative).

    Raises:
        FileNotFoundError: a named run has no ``per_query.csv`` (run its evaluate stage first).
    """
    from embedtune.layout import compare_with_folder

    cfg = ctx.cfg
    out = {}
    for name in cfg.report.compare_with:
        path = RunLayout(compare_with_folder(cfg, name)).per_query
        if not path.is_file():
            raise FileNotFoundError(f"report.compare_with: {path} not found; run "
                                    f"'embedtune run params/{Path(name).name}.yaml' first")
        out[Path(name).name] = rp.compare_runs(per_query, pd.read_csv(path, dtype={"query_id": str}),
                                               "ndcg@10", cfg.evaluate.stat_test, cfg.seed)
    return out


def _click_agreement(metrics: dict, metric: str = "ndcg@10") -> dict | None:
    block = metrics.get("click_validation")
    if not block:
        return None
    return rp.rank_agreement({s: v[metric] for s, v in block["systems"].items()},
                             {s: v[metric] for s, v in metrics["systems"].items()})


@stage("report")
def run(ctx: RunContext) -> ReportResult:
    cfg = ctx.cfg
    layout = ctx.layout
    folder = layout.root
    metrics = read_json(layout.metrics)
    if not metrics:
        raise FileNotFoundError(f"{layout.metrics}: no metrics yet; run the evaluate stage first")
    per_query = pd.read_csv(layout.per_query, dtype={"query_id": str})
    per_query = per_query[per_query["system"].isin(metrics["systems"])]
    order = [s for s in SYSTEM_ORDER if s in metrics["systems"]] + \
            [s for s in metrics["systems"] if s not in SYSTEM_ORDER]
    per_query["system"] = pd.Categorical(per_query["system"], categories=order, ordered=True)
    per_query = per_query.sort_values(["system", "query_id"])
    per_query["system"] = per_query["system"].astype(str)
    metric_names = [m for m in cfg.evaluate.metrics if m in per_query.columns]
    ci = bootstrap_ci(per_query, metric_names, cfg.report.bootstrap_samples, cfg.report.confidence,
                      cfg.seed)
    ci = ci.reindex([(s, m) for s in order for m in metric_names])

    version = ctx.version()
    latency_ms = measure_latency(ctx, metrics, cfg.report.latency_queries)
    manifest = ctx.read_manifest()
    cost_stages, cost = rp.cost_table(manifest, metrics, version, cfg.report, layout.model_dir,
                                      latency_ms)
    result = ReportResult(
        run_dir=folder, metrics=metrics, decision=read_json(layout.decision),
        per_query=per_query, ci=ci, cost_stages=cost_stages, cost=cost, version=version,
        training_log=read_json(layout.training_log),
        negatives=read_json(layout.negatives_stats),
        pairs=read_json(layout.pairs_stats),
        negative_scores=negative_scores(ctx),
        comparisons=compare_with(ctx, per_query),
    )
    wins = None
    if {"finetuned", "generic"} <= set(per_query["system"]):
        delta = rp.win_loss(per_query, "finetuned", "generic")
        wins = {k: delta.attrs[k] for k in ("wins", "losses", "ties", "metric")}
    result.summary = {
        "experiment": cfg.experiment,
        "dataset": metrics["dataset"]["name"],
        "test_queries": metrics["dataset"]["n_queries"],
        "verdict": result.decision.get("verdict"),
        "headline": rp.headline_sentence(metrics),
        "systems": {s: {m: {"mean": round(ci.loc[(s, m), "mean"], 6),
                            "ci": [round(ci.loc[(s, m), "low"], 6), round(ci.loc[(s, m), "high"], 6)]}
                        for m in metric_names} for s in order},
        "finetuned_vs_generic": metrics.get("significance", {}).get("finetuned_vs_generic", {}),
        "win_loss_finetuned_vs_generic": wins,
        "cost": cost,
        "click_agreement": _click_agreement(metrics),
        "compared_with": {name: table.reset_index().to_dict(orient="records")
                          for name, table in result.comparisons.items()},
        "evaluate": {"max_p": cfg.evaluate.max_p, "stat_test": cfg.evaluate.stat_test, "seed": cfg.seed},
        "confidence": cfg.report.confidence,
        "bootstrap_samples": cfg.report.bootstrap_samples,
        "created": now(),
    }
    atomic_write_json(layout.report_json, result.summary)
    rp.refresh_results_index(folder)
    return result
