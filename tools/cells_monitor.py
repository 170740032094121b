"""Cells of notebook ``06_monitor``, in the format of ``NOTEBOOKS`` in tools/make_notebooks.py.

To add the notebook, either paste ``CELLS`` as ``NOTEBOOKS["06_monitor"]`` there (the names
``PARAMETERS`` and ``OPEN`` are that file's), or ``from cells_monitor import CELLS`` in it once
``PARAMETERS`` and ``OPEN`` are defined; then run ``python tools/make_notebooks.py``.
"""

import sys
from pathlib import Path

_main = sys.modules.get("__main__")
if Path(getattr(_main, "__file__", "") or "").name == "make_notebooks.py":
    PARAMETERS, OPEN = _main.PARAMETERS, _main.OPEN  # imported by make_notebooks.py run as a script
else:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from make_notebooks import OPEN, PARAMETERS

CELLS = [
    ("md", "# 06 · Monitor: versions, recall over time, drift, re-train, rollback\n\n"
           "The brief's maintenance advice, measured. Every fine-tuned model is a version in the "
           "registry (`embedtune models list`), with one in production; each version searches only "
           "its own index of the corpus (mixing versions is an error), updated by encoding only "
           "added or changed documents. Every evaluation on the gold set (the test queries) is "
           "appended to the monitoring log. A regression is flagged only when the monitored metric "
           "drops by more than `monitor.regression_threshold` **and** a one-sided permutation test "
           "over queries says the drop is not noise. Re-training is recommended on corpus drift, an "
           "upgraded base model, or a regression. With `monitor.scenario: true` (params/maintenance.yaml) "
           "the worked scenario runs instead: drift, recall drop, re-train, promote, rollback. "
           "Writes `monitor.json` (and `scenario.json`)."),
    ("params", PARAMETERS),
    ("code", OPEN.format(imports="from embedtune.stages import monitor")),
    ("code", "result = monitor.run(ctx)\n"
             "print('production:', result.document['production'])\n"
             "result.versions_table()"),
    ("md", "The monitored metric on the gold set, one point per evaluation in the log; the shaded band "
           "is each version's reference minus the regression threshold, a red ring a regression."),
    ("code", "result.plot();"),
    ("code", "result.history_table()"),
    ("md", "Regression check: each version's latest evaluation against its reference (paired when "
           "both scored the same queries; two-sample when the gold set has changed since)."),
    ("code", "result.regression_table()"),
    ("md", "Corpus drift since the corpus the version was first indexed on: new-word share, the shift "
           "of the embedding distribution (centroid cosine; AUC of a classifier telling new documents "
           "from the reference ones: 0.5 = alike, 1.0 = another domain)."),
    ("code", "result.drift_table()"),
    ("code", "print(result.recommendation_text())"),
    ("md", "The worked scenario, step by step (only when `monitor.scenario` is on): what each step "
           "encoded, who was in production, and the metric overall and per query group."),
    ("code", "result.steps_table()"),
    ("md", "Every promote and rollback of the production pointer:"),
    ("code", "result.pointer_table()"),
]
