"""Sweeps: every point of a parameter grid through the stage notebooks, then one comparison page.

``embedtune sweep params/scifact.yaml --grid train.loss=mnrl,triplet`` runs each point with
:func:`embedtune.runner.run_experiment` (papermill, the stage notebooks) into
``results/<experiment>/<sweep>/<point>/``, writes ``sweep.json`` beside the point folders, and
renders ``compare.html`` from ``notebooks/sweep_compare.ipynb``.

Shared work runs once. Before a point runs a stage, the sweep looks for a folder where that stage
finished under the same cache key (:func:`embedtune.runner.stage_keys`: same params sections,
data, notebook and upstream keys) and reuses its outputs instead, hard-linked
(:func:`embedtune.runner.reuse_stage`). It looks in the sweep's other points, then in the
experiment's own run folder (``results/<experiment>``), then in the points of the experiment's
other sweeps. Points that differ only in ``train.*`` therefore share ``00_decide``, ``01_pairs``
and ``02_negatives``; the generic model's corpus embeddings are shared anyway through the
embedding cache. With several workers, a lock per (stage, key) makes the second point wait for the
first instead of running the stage again.

A point that fails is recorded in ``sweep.json`` (status, error, the stage that failed) and the
others go on. Running the same sweep again runs only the points that are not up to date, and in
them only the stages that are not (the stage cache).

Grid syntax, on the command line: ``--grid KEY=V1,V2,...`` (repeatable; the grid is every
combination, the first ``--grid`` varying slowest). Values are split at the commas that are
outside brackets, braces and quotes, and each value is read as YAML, so:

- ``train.learning_rate=1e-5,2e-5,5e-5``: numbers (also ``2e-5``, which plain YAML reads as text);
- ``train.loss=mnrl,cached_mnrl``: strings; ``negatives.relative_margin=0.05,null``: ``null`` is None;
- ``negatives.sources=[],[bm25],[dense],[bm25,dense]``: four lists (one value per bracket);
- ``train.matryoshka_dims=[],[384,256,128,64]``: two lists;
- ``data.dataset="a,b"``: quote a value that holds a comma.

In a params file, a ``sweep:`` section (``embedtune sweep`` strips it before the strict config
loader sees the rest)::

    sweep:
      name: losses            # folder under results/<experiment>/; default: the varied keys
      grid:                   # every combination (the first key varies slowest)
        train.loss: [mnrl, cached_mnrl, triplet, cosent, gist]
        train.matryoshka_dims: [[], [384, 256, 128, 64]]
      points:                 # extra points beside the grid, each a mapping of dotted keys
        - {train.loss: mnrl, train.epochs: 5}
      baseline: {train.loss: mnrl, train.matryoshka_dims: []}   # or a point name; default: the first
      x: train.loss           # the plots' x axis; default: the first grid key
      stages: [pairs, negatives, train, evaluate]  # default: every stage that has a notebook
      system: finetuned       # the system compared across points

``--grid`` on the command line adds keys to that grid (or replaces a key's values).

Example:
    >>> result = run_sweep("params/smoke.yaml", {"train.learning_rate": [2e-5, 5e-5]})
    >>> [p["status"] for p in result.points]
    ['ok', 'ok']
"""

from embedtune.sweep.compare import SweepComparison, load_comparison, read_summary
from embedtune.sweep.execute import SweepResult, render_comparison, run_sweep
from embedtune.sweep.grid import expand, label, parse_grid, parse_value, point_name, split_values
from embedtune.sweep.plan import SweepPlan, plan_sweep

__all__ = ["SweepComparison", "SweepPlan", "SweepResult", "expand", "label", "load_comparison",
           "parse_grid", "parse_value", "plan_sweep", "point_name", "read_summary",
           "render_comparison", "run_sweep", "split_values"]
