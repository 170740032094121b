"""Calibration: does what dev (or the pilot) predicts come true on test?

For every experiment in the results folder and every point of its sweeps: the gain that was
predicted before test was looked at, against the gain realised on the test queries
(``finetuned_vs_generic`` nDCG@10 in ``metrics.json``, paired p-value):

- the **dev gain** of the training run: the best dev checkpoint minus step 0 (the base model),
  read from the executed ``03_train.ipynb``;
- the **pilot** (``decision.json`` of a decide run with the pilot, in
  ``results/calibration/<experiment>/``): its predicted gain, interval and verdict;
- the **flowchart** verdict of the experiment's own ``decision.json``;
- **00_decide's verdict** as the current code gives it (``results/calibration/<experiment>/``):
  the pilot's where the pilot ran, else the flowchart's (the pilot needs gold train pairs);
- the **keep-base guard** of 03_train (``train.kept`` in ``manifest.json``, runs since the guard):
  did it ship the fine-tuned model? ``finetuned`` in ``metrics.json`` is the best dev checkpoint
  either way, so test says whether shipping it would have paid.

A test outcome "pays" when the fine-tuned model beats generic with p < 0.05; a verdict agrees
when it is ``fine-tune`` exactly for the experiments where fine-tuning paid.

Example:
    $ embedtune calibrate --pilot scifact nfcorpus cranfield     # decide runs with the pilot, then the page
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from embedtune import paths
from embedtune.io import read_json
from embedtune.layout import RunLayout

ALPHA = 0.05
OWN_FOLDERS = {"bench", "scale", "calibration"}


def dev_curve(notebook: Path) -> pd.DataFrame | None:
    """The dev table (step x metric) that an executed ``03_train.ipynb`` printed, or None."""
    if not notebook.is_file():
        return None
    for cell in json.loads(notebook.read_text()).get("cells", []):
        if cell.get("cell_type") == "code" and "dev_table" in "".join(cell.get("source", "")):
            for out in cell.get("outputs", []):
                text = "".join(out.get("data", {}).get("text/plain", ""))
                lines = [line.split() for line in text.splitlines() if line.strip()]
                if len(lines) >= 3 and lines[1] == ["step"]:
                    table = pd.DataFrame([[float(v) for v in row[1:]] for row in lines[2:]], columns=lines[0],
                                         index=[int(row[0]) for row in lines[2:]])
                    return table
    return None


def outcome(metrics: dict) -> dict | None:
    sig = (metrics.get("significance") or {}).get("finetuned_vs_generic", {}).get("ndcg@10")
    if not sig:
        return None
    pays = sig["delta"] > 0 and sig["p_value"] < ALPHA
    return {"test_gain": sig["delta"], "test_p": sig["p_value"], "pays": pays}


def row_for(folder: Path, name: str, kind: str) -> dict | None:
    layout = RunLayout(folder)
    realised = outcome(read_json(layout.metrics))
    if realised is None:
        return None
    row = {"run": name, "kind": kind, **realised}
    curve = dev_curve(layout.executed("train"))
    if curve is not None and "ndcg@10" in curve and 0 in curve.index and len(curve) > 1:
        row["dev_gain"] = float(curve["ndcg@10"].drop(index=0).max() - curve.loc[0, "ndcg@10"])
    kept = (read_json(layout.manifest).get("train") or {}).get("kept")
    if isinstance(kept, bool):
        row["guard_shipped"] = kept
    decision = read_json(layout.decision)
    if decision:
        row["flowchart_verdict"] = decision.get("flowchart_verdict", decision.get("verdict"))
    pilot = read_json(RunLayout(paths.results_dir() / "calibration" / name).decision) if kind == "experiment" else {}
    if pilot:
        row["decide_verdict"] = pilot["verdict"]
    if pilot.get("pilot"):
        row.update(pilot_verdict=pilot["verdict"], pilot_gain=pilot["pilot"]["predicted_gain"],
                   pilot_low=pilot["pilot"]["interval"][0], pilot_high=pilot["pilot"]["interval"][1])
    return row


def collect(results: Path | None = None) -> pd.DataFrame:
    """One row per experiment and per sweep point that has a fine-tuned model's test result."""
    results = results or paths.results_dir()
    rows = []
    for folder in sorted(p for p in results.iterdir() if p.is_dir() and p.name not in OWN_FOLDERS):
        if (row := row_for(folder, folder.name, "experiment")):
            rows.append(row)
        for sweep in sorted(p for p in folder.iterdir() if (p / "sweep.json").is_file()):
            for point in sorted(p for p in sweep.iterdir() if p.is_dir()):
                if (row := row_for(point, f"{folder.name}/{sweep.name}/{point.name}", "study point")):
                    rows.append(row)
    return pd.DataFrame(rows)


def agreement(table: pd.DataFrame) -> pd.DataFrame:
    """How often each predictor agrees with the test outcome (fine-tune exactly when it paid)."""
    rows = []
    for column, label in (("flowchart_verdict", "flowchart verdict (experiments)"),
                          ("pilot_verdict", "pilot verdict (experiments with labels)"),
                          ("decide_verdict", "00_decide's verdict now (the pilot where it ran, else the flowchart)")):
        if column in table:
            sub = table.dropna(subset=[column])
            hits = ((sub[column] == "fine-tune") == sub["pays"]).sum()
            rows.append({"predictor": label, "runs": len(sub), "agree": int(hits)})
    if "dev_gain" in table:
        sub = table.dropna(subset=["dev_gain"])
        hits = ((sub["dev_gain"] > 0) == sub["pays"]).sum()
        rows.append({"predictor": "dev gain > 0 (every run with a dev curve)", "runs": len(sub), "agree": int(hits)})
    if "guard_shipped" in table:
        sub = table.dropna(subset=["guard_shipped"])
        hits = (sub["guard_shipped"].astype(bool) == sub["pays"]).sum()
        rows.append({"predictor": "keep-base guard shipped the model (runs since the guard)", "runs": len(sub),
                     "agree": int(hits)})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["rate"] = (out["agree"] / out["runs"]).round(3)
    return out.set_index("predictor") if not out.empty else out


def plot(table: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for kind, marker in (("experiment", "o"), ("study point", ".")):
        sub = table[(table["kind"] == kind)].dropna(subset=["dev_gain"]) if "dev_gain" in table else table.iloc[:0]
        ax.scatter(sub["dev_gain"], sub["test_gain"], marker=marker, s=60 if kind == "experiment" else 40,
                   label=f"{kind}: dev gain of the training run")
    if "pilot_gain" in table:
        sub = table.dropna(subset=["pilot_gain"])
        ax.errorbar(sub["pilot_gain"], sub["test_gain"], xerr=[sub["pilot_gain"] - sub["pilot_low"],
                                                               sub["pilot_high"] - sub["pilot_gain"]],
                    fmt="s", color="C3", capsize=3, label="experiment: the pilot's prediction")
    lims = [min(ax.get_xlim()[0], ax.get_ylim()[0]), max(ax.get_xlim()[1], ax.get_ylim()[1])]
    ax.plot(lims, lims, color="0.6", linestyle="--", label="predicted = realised")
    ax.axhline(0, color="0.8")
    ax.axvline(0, color="0.8")
    ax.set_xlabel("predicted nDCG@10 gain (dev)")
    ax.set_ylabel("realised nDCG@10 gain (test)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def decide_inputs(name: str) -> tuple[Path, dict]:
    """The params file and overrides an experiment was run with: those its committed
    ``results/<name>/manifest.json`` records, else ``params/<name>.yaml`` as it is."""
    manifest = read_json(RunLayout(paths.results_dir() / name).manifest)
    if manifest.get("params_file"):
        return paths.resolve(manifest["params_file"]), dict(manifest.get("overrides") or {})
    return paths.params_dir() / f"{name}.yaml", {}


def refresh(out: Path | None = None, pilots: list[str] = ()) -> Path:
    """Run 00_decide (the pilot on) for ``pilots`` (experiment names, with the params file and
    overrides each was run with; into results/calibration/<name>), then write ``calibration.json``
    and render the page."""
    from embedtune import notebook
    from embedtune.io import atomic_write_json
    from embedtune.runner import run_experiment

    out = out or paths.results_dir() / "calibration"
    for name in pilots:
        params_file, overrides = decide_inputs(name)
        run_experiment(params_file, stages=["decide"], overrides=overrides, run_dir=out / name, progress=False)
    table = collect()
    atomic_write_json(out / "calibration.json", {"runs": json.loads(table.to_json(orient="records")),
                                                 "agreement": json.loads(agreement(table).reset_index().to_json(orient="records"))})
    notebook.execute("calibration", out / "calibration.ipynb", {"results_dir": str(paths.results_dir())},
                     required={"results_dir"})
    notebook.to_html(out / "calibration.ipynb", out / "calibration.html", hide_code=True, title="embedtune calibration")
    return out / "calibration.html"

