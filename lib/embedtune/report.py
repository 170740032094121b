"""What the report computes from a finished run: confidence intervals, significance markers,
the headline, per-query wins and losses, latency and cost.

Everything here reads the run folder's files (``metrics.json``, ``per_query.csv``,
``manifest.json``, ``model/``) or times the real systems; nothing is estimated from constants
except the prices, which come from ``params`` (``report.cpu_hour_price``, ``report.gpu_hour_price``).

Example:
    >>> metrics = json.loads(Path("results/scifact/metrics.json").read_text())
    >>> headline_sentence(metrics)
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from embedtune.stats import against, paired_test, wide

# The brief's claim, as it frames it: recall@10 of generic -> fine-tuned -> hybrid.
BRIEF_CLAIM = {"generic": 0.70, "finetuned": 0.85, "hybrid_finetuned": 0.92}
HEADLINE_SYSTEMS = ("bm25", "generic", "finetuned", "hybrid_finetuned")


def compare_runs(here: pd.DataFrame, there: pd.DataFrame, metric: str = "ndcg@10",
                 test: str = "student", seed: int = 42) -> pd.DataFrame:
    """Each system of two runs on the queries both scored: means, delta (here - there), paired p.

    Two experiments on the same test split (e.g. cranfield with generated training queries against
    cranfield with gold ones) score the same queries; ``queries`` says how many were shared, and
    ``only_here`` / ``only_there`` how many were not (both 0 when the test sets are the same).
    """
    a, b = wide(here, metric), wide(there, metric)
    common = a.index.intersection(b.index)
    rows = []
    for system in [s for s in a.columns if s in b.columns]:
        pair = pd.concat([a.loc[common, system], b.loc[common, system]], axis=1).dropna()
        x, y = pair.iloc[:, 0].to_numpy(), pair.iloc[:, 1].to_numpy()
        delta, p = paired_test(x, y, test, seed) if len(pair) > 1 else (float("nan"), float("nan"))
        rows.append({"system": system, "queries": len(pair), "here": float(x.mean()),
                     "there": float(y.mean()), "delta": delta, "p_value": p,
                     "only_here": len(a.index.difference(b.index)),
                     "only_there": len(b.index.difference(a.index))})
    return pd.DataFrame(rows).set_index("system") if rows else pd.DataFrame()


def rank_agreement(first: dict[str, float], second: dict[str, float]) -> dict:
    """Do two evaluations order the same systems alike? Kendall's tau and the two orders.

    Used to read a click validation set beside the gold test set: tau = 1 is the same order.
    """
    from scipy.stats import kendalltau

    systems = [s for s in first if s in second]
    order_first = sorted(systems, key=lambda s: -first[s])
    order_second = sorted(systems, key=lambda s: -second[s])
    tau = (float(kendalltau([first[s] for s in systems], [second[s] for s in systems]).statistic)
           if len(systems) > 1 else float("nan"))
    return {"systems": len(systems), "kendall_tau": tau, "same_order": order_first == order_second,
            "same_best": bool(systems) and order_first[0] == order_second[0],
            "order_first": order_first, "order_second": order_second}


def quality_table(ci: pd.DataFrame, per_query: pd.DataFrame, metrics: list[str],
                  baseline: str = "generic", max_p: float = 0.05,
                  test: str = "student", seed: int = 42) -> pd.DataFrame:
    """Every system x metric as ``mean [low, high]`` with a marker against ``baseline``:
    ``▲`` significantly better, ``▼`` significantly worse (paired test, p < max_p)."""
    systems = list(dict.fromkeys(s for s, _ in ci.index))
    cells = {}
    for metric in metrics:
        tests = against(per_query, metric, baseline, test, seed)
        column = {}
        for system in systems:
            if (system, metric) not in ci.index:
                continue
            row = ci.loc[(system, metric)]
            mark = ""
            if system in tests and tests[system][1] < max_p:
                mark = " ▲" if tests[system][0] > 0 else " ▼"
            column[system] = f"{row['mean']:.3f} [{row['low']:.3f}, {row['high']:.3f}]{mark}"
        cells[metric] = column
    return pd.DataFrame(cells).loc[systems]


def headline(metrics_doc: dict) -> pd.DataFrame:
    """generic -> fine-tuned -> hybrid on the test queries, beside the brief's claim."""
    systems = metrics_doc["systems"]
    rows = []
    for system in HEADLINE_SYSTEMS:
        if system in systems:
            values = systems[system]
            rows.append({"system": system, "recall@10": values.get("recall@10"),
                         "ndcg@10": values.get("ndcg@10"), "hit_rate@10": values.get("hit_rate@10"),
                         "brief's claim (recall@10)": BRIEF_CLAIM.get(system)})
    return pd.DataFrame(rows).set_index("system")


def headline_sentence(metrics_doc: dict) -> str:
    """The headline in words, with the measured numbers."""
    s = metrics_doc["systems"]
    n = metrics_doc["dataset"]["n_queries"]
    parts = [f"{name} {s[name]['recall@10']:.0%}" for name in ("generic", "finetuned", "hybrid_finetuned")
             if name in s]
    text = (f"recall@10 on {n} held-out test queries: " + " → ".join(parts)
            + " (the brief's claim: 70 % → 85 % → 92 %).")
    hits = [f"{name} {s[name]['hit_rate@10']:.0%}" for name in ("generic", "finetuned", "hybrid_finetuned")
            if name in s and "hit_rate@10" in s[name]]
    if hits:  # with many relevant documents per query recall@10 is low for every model
        text += " success@10 (a relevant document in the top 10): " + " → ".join(hits) + "."
    sig = metrics_doc.get("significance", {}).get("finetuned_vs_generic", {}).get("ndcg@10")
    if sig:
        text += (f" nDCG@10 fine-tuned vs generic: {sig['delta']:+.3f} "
                 f"(paired p = {sig['p_value']:.2g}).")
    model = metrics_doc.get("finetuned_model") or {}
    if model.get("kept") is False:
        text += (f" **The fine-tuned model was not kept**: {model['keep_base']['reason']}; nothing was "
                 "registered. Its test scores above are shown for the record, not as what ships.")
    return text


def win_loss(per_query: pd.DataFrame, system: str, baseline: str, metric: str = "ndcg@10",
             tolerance: float = 1e-9) -> pd.Series:
    """Per-query ``system - baseline``, sorted; its attrs hold the win / tie / loss counts."""
    table = wide(per_query, metric)
    delta = (table[system] - table[baseline]).dropna().sort_values()
    delta.attrs.update(wins=int((delta > tolerance).sum()), losses=int((delta < -tolerance).sum()),
                       ties=int((delta.abs() <= tolerance).sum()), metric=metric,
                       system=system, baseline=baseline)
    return delta


def latency(search_one: Callable[[str], object], queries: list[str], warmup: int = 3) -> dict:
    """p50 / p95 / mean wall time (ms) of answering one query at a time."""
    for text in queries[:warmup]:
        search_one(text)
    times = []
    for text in queries:
        start = time.perf_counter()
        search_one(text)
        times.append((time.perf_counter() - start) * 1000)
    times = np.array(times)
    return {"p50_ms": float(np.percentile(times, 50)), "p95_ms": float(np.percentile(times, 95)),
            "mean_ms": float(times.mean()), "queries": len(times)}


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def cost_table(manifest: dict, metrics_doc: dict, version: dict, prices, model_dir: Path,
               latency_ms: dict[str, dict]) -> tuple[pd.DataFrame, dict]:
    """Cost against benefit: stage wall times, device, core/GPU hours, price, sizes, latency.

    CPU hours count every core the run could use (``torch`` threads) for the whole wall time of
    each stage; GPU hours count the stages' wall time when a CUDA device did the work.

    Returns:
        (per-stage table, summary dict).
    """
    from embedtune.pipeline import STAGE_NAMES

    stages = manifest.get("stages", {})
    order = [s for s in STAGE_NAMES if s in stages] + [s for s in stages if s not in STAGE_NAMES]
    rows = [{"stage": name, "seconds": stages[name].get("seconds", 0.0), "status": stages[name].get("status")}
            for name in order if name not in ("report", "monitor")]
    frame = pd.DataFrame(rows).set_index("stage") if rows else pd.DataFrame(columns=["seconds", "status"])
    seconds = float(frame["seconds"].sum()) if rows else 0.0
    cost = metrics_doc.get("cost", {})
    device = cost.get("train_device") or cost.get("device") or "cpu"
    cores = int(manifest.get("machine", {}).get("torch_threads") or manifest.get("torch_threads") or 1)
    on_gpu = str(device).startswith("cuda")
    cpu_hours = seconds * cores / 3600
    gpu_hours = seconds / 3600 if on_gpu else 0.0
    price = cpu_hours * prices.cpu_hour_price + gpu_hours * prices.gpu_hour_price
    systems = metrics_doc["systems"]
    gain = None
    if "finetuned" in systems and "generic" in systems:
        gain = systems["finetuned"]["ndcg@10"] - systems["generic"]["ndcg@10"]
    summary = {
        "device": device,
        "cores": cores,
        "wall_seconds": round(seconds, 1),
        "train_seconds": version.get("train_seconds"),
        "cpu_core_hours": round(cpu_hours, 4),
        "gpu_hours": round(gpu_hours, 4),
        "price_usd": round(price, 4),
        "prices": {"cpu_hour": prices.cpu_hour_price, "gpu_hour": prices.gpu_hour_price},
        "model_bytes": folder_bytes(model_dir),
        "index_bytes": cost.get("index_bytes"),
        "embedding_dim": cost.get("embedding_dim"),
        "encode_docs_per_second": cost.get("encode_docs_per_second"),
        "encoder": cost.get("encoder"),
        "encoding": cost.get("encoding"),
        "ndcg@10_gain_finetuned_vs_generic": gain,
        "latency_ms": latency_ms,
    }
    return frame, summary


def refresh_results_index(folder: Path, depth: int = 1) -> None:
    """Rewrite ``results/README.md`` when ``folder`` lies ``depth`` levels under this project's
    results folder (an experiment: 1; a sweep: 2); anywhere else (tests, --run-dir) do nothing."""
    from embedtune import paths
    from embedtune.io import atomic_path

    results = paths.results_dir().resolve()
    parent = Path(folder).resolve()
    for _ in range(depth):
        parent = parent.parent
    if parent == results:
        with atomic_path(results / "README.md") as tmp:
            tmp.write_text(results_index(results))


def results_index(results: Path) -> str:
    """``results/README.md``: every experiment that has a report, with its headline numbers."""
    import json

    lines = [
        "# Results",
        "",
        "Every committed experiment, from its `report.json` / `metrics.json` (test split, nDCG@10 "
        "with its 95 % bootstrap interval; recall@10 in brackets). Regenerated by each report "
        "stage; reproduce a row with `.venv/bin/embedtune run params/<experiment>.yaml`.",
        "",
        "| experiment | test queries | decide said | generic | fine-tuned | hybrid (fine-tuned) "
        "| fine-tuned vs generic | report |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(summary: dict, system: str) -> str:
        values = summary["systems"].get(system)
        if not values:
            return "-"
        n, r = values["ndcg@10"], values.get("recall@10", {})
        return (f"{n['mean']:.3f} [{n['ci'][0]:.3f}, {n['ci'][1]:.3f}]"
                + (f" ({r['mean']:.3f})" if r else ""))

    for path in sorted(results.glob("*/report.json")):
        summary = json.loads(path.read_text())
        sig = summary.get("finetuned_vs_generic", {}).get("ndcg@10")
        delta = f"{sig['delta']:+.3f}, p = {sig['p_value']:.2g}" if sig else "-"
        lines.append(f"| {summary['experiment']} | {summary['test_queries']} | {summary.get('verdict') or '-'} "
                     f"| {cell(summary, 'generic')} | {cell(summary, 'finetuned')} "
                     f"| {cell(summary, 'hybrid_finetuned')} | {delta} "
                     f"| [report]({path.parent.name}/report.html) |")
    extra = sorted(p for p in results.glob("*/*/sweep.json"))
    if extra:
        lines += ["", "## Sweeps", ""]
        lines += [f"- [{p.parent.parent.name}/{p.parent.name}]({p.parent.parent.name}/{p.parent.name}/compare.html)"
                  for p in extra]
    return "\n".join(lines) + "\n"
