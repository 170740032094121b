"""Tables and figures of the bench page (``notebooks/bench.py``) from ``bench.json``."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

TOLERANCE = 0.002  # nDCG@10 a faster setting may lose and still count


@dataclass
class BenchPage:
    doc: dict

    def header(self) -> str:
        m = self.doc["machine"]
        features = ", ".join(f for f in ("bf16", "avx512", "vnni", "amx") if m.get(f)) or "none of bf16, AVX-512, VNNI, AMX"
        when = ", ".join(f"{k} {v}" for k, v in (self.doc.get("measured") or {}).items())
        return (f"# embedtune bench\n\nModel `{self.doc['model']}`, measured ({when}) on **{m['processor']}**, {m['cores']} cores "
                f"({m['torch_threads']} torch threads); CPU features: {features}. Every ratio is against its "
                f"plain peer measured in the same run. Command: `{self.doc.get('command') or 'embedtune bench'}`.")

    def _quality(self, setting: str, dataset: str) -> float | None:
        return ((self.doc.get("quality") or {}).get(dataset) or {}).get(setting, {}).get("delta_vs_fp32")

    def encoding(self) -> pd.DataFrame:
        rows = []
        for r in self.doc.get("encoding", []):
            rows.append({"setting": r["setting"], "docs": r["docs"], "docs/s": round(r["docs_per_second"], 1),
                         "plain fp32 docs/s": round(r["peer_docs_per_second"], 1),
                         "ratio [min, max]": f"{r['ratio']:.2f} [{r['ratio_min']:.2f}, {r['ratio_max']:.2f}]",
                         "nDCG@10 Δ scifact": self._quality(r["setting"], "scifact"),
                         "nDCG@10 Δ nfcorpus": self._quality(r["setting"], "nfcorpus"),
                         "peak MB": round(r["peak_rss_mb"]), "plain peak MB": round(r["peer_peak_rss_mb"])})
        return pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()

    def quality_note(self) -> str:
        """What each nDCG@10 change was measured on: queries and documents per dataset."""
        parts = []
        for dataset, rows in (self.doc.get("quality") or {}).items():
            row = next((r for r in rows.values() if "docs" in r), None)
            if row:
                whole = row.get("corpus_docs", row["docs"])
                corpus = "the whole corpus" if row["docs"] >= whole else \
                    f"{row['docs']:,} of its {whole:,} documents (every judged one of those queries, random others)"
                parts.append(f"{dataset}: {row['queries']} test queries, {corpus}")
        return ("nDCG@10 changes measured on " + "; ".join(parts) + ".") if parts else "nDCG@10 not measured."

    def encoding_plot(self):
        import matplotlib.pyplot as plt

        rows = self.doc.get("encoding", [])
        fig, ax = plt.subplots(figsize=(7, 0.5 + 0.45 * max(1, len(rows))))
        names = [r["setting"] for r in rows]
        ax.barh(names, [r["ratio"] for r in rows], color="C0")
        ax.errorbar([r["ratio"] for r in rows], names, xerr=[[r["ratio"] - r["ratio_min"] for r in rows],
                                                            [r["ratio_max"] - r["ratio"] for r in rows]],
                    fmt="none", color="0.3", capsize=3)
        ax.axvline(1.0, color="0.5", linestyle="--")
        ax.axvline(4.0, color="C3", linestyle=":", label="goal: 4x")
        ax.set_xlabel("docs/s relative to plain sentence-transformers fp32")
        ax.legend(loc="lower right")
        fig.tight_layout()
        return fig

    def training(self) -> pd.DataFrame:
        rows = [{"setting": r["setting"], "samples": r["samples"], "samples/s": round(r["samples_per_second"], 2),
                 "ratio": round(r["ratio"], 2), "dev nDCG@10": round(r["dev_ndcg@10"], 4),
                 "dev Δ vs plain": round(r["dev_delta_vs_peer"], 4), "peak MB": round(r["peak_rss_mb"])}
                for r in self.doc.get("training", [])]
        return pd.DataFrame(rows).set_index("setting") if rows else pd.DataFrame()

    def bm25(self) -> pd.DataFrame:
        r = self.doc.get("bm25")
        return pd.DataFrame([r]).set_index("setting").round(2) if r else pd.DataFrame()

    def dense_search(self) -> pd.DataFrame:
        rows = self.doc.get("dense_search", [])
        return pd.DataFrame(rows).set_index("setting").round(3) if rows else pd.DataFrame()

    def latency(self) -> pd.DataFrame:
        rows = self.doc.get("latency", [])
        return pd.DataFrame(rows).set_index("system").round(2) if rows else pd.DataFrame()

    def pipeline(self):
        p = self.doc.get("pipeline")
        if not p:
            return "not measured (embedtune bench --sections pipeline)"
        return pd.DataFrame([{"run": "cold (empty cache)", "seconds": p["cold_seconds"], "peak MB": round(p["cold_peak_rss_mb"])},
                             {"run": "warm (nothing changed)", "seconds": p["warm_seconds"], "peak MB": round(p["warm_peak_rss_mb"])}]
                            ).set_index("run")

    def goals(self) -> pd.DataFrame:
        """Each goal, the best figure this run measured for it, and whether it is met here."""
        enc = [r for r in self.doc.get("encoding", [])
               if all((d := self._quality(r["setting"], ds)) is not None and d >= -TOLERANCE for ds in ("scifact", "nfcorpus"))
               and r["setting"] != "torch:none:fp32"]
        best_enc = max(enc, key=lambda r: r["ratio"], default=None)
        train = [r for r in self.doc.get("training", []) if not r["setting"].startswith("plain")
                 and r["dev_delta_vs_peer"] >= -TOLERANCE]
        best_train = max(train, key=lambda r: r["ratio"], default=None)
        cold = (self.doc.get("pipeline") or {}).get("cold_seconds")
        rows = [
            {"goal": "encoding >= 4x plain fp32, nDCG@10 loss <= 0.002",
             "best measured": f"{best_enc['ratio']:.2f}x ({best_enc['setting']})" if best_enc else "no setting within the loss",
             "met": bool(best_enc and best_enc["ratio"] >= 4)},
            {"goal": "training >= 2x plain fp32 Trainer at equal dev nDCG@10",
             "best measured": f"{best_train['ratio']:.2f}x ({best_train['setting']})" if best_train else "no setting at equal dev",
             "met": bool(best_train and best_train["ratio"] >= 2)},
            {"goal": "scifact pipeline cold <= 10 min",
             "best measured": f"{cold / 60:.1f} min" if cold else "not measured in this run",
             "met": bool(cold and cold <= 600)},
        ]
        return pd.DataFrame(rows).set_index("goal")


def load(path: str | Path) -> BenchPage:
    return BenchPage(json.loads(Path(path).read_text()))
