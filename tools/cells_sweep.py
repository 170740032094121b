"""Cells of ``notebooks/sweep_compare.ipynb``, the comparison page of a sweep (``embedtune sweep``).

Same (kind, source) cells as ``NOTEBOOKS`` in ``make_notebooks.py``. ``embedtune.sweep``
executes the notebook with papermill into ``results/<experiment>/<sweep>/compare.ipynb`` and
renders ``compare.html`` with the code hidden.
Usage: python tools/cells_sweep.py
"""

from pathlib import Path

import nbformat

from make_notebooks import build

ROOT = Path(__file__).resolve().parents[1]

PARAMETERS = '''sweep_dir = ""                      # the sweep folder (holds sweep.json), e.g. results/scifact/loss
system = ""                         # system compared across points; empty: the sweep's own (finetuned)'''

SWEEP_COMPARE = [
    ("params", PARAMETERS),
    ("code", "import warnings\n"
             "warnings.simplefilter('ignore')  # the page is for reading\n"
             "from IPython.display import Markdown, display\n"
             "from embedtune.sweep import load_comparison\n\n"
             "cmp = load_comparison(sweep_dir, system or None)\n"
             "display(Markdown(f\"# Sweep `{cmp.summary['sweep']}` of `{cmp.summary['experiment']}`\\n\\n\"\n"
             "                 + cmp.headline()))"),
    ("md", "## Every point\n\n"
           "Mean over the test queries with a bootstrap interval (queries resampled). "
           "*vs baseline*: the point minus the baseline point on the same queries, with the paired "
           "test's p-value; *vs generic*: the point's fine-tuned model minus the generic model "
           "(from its `metrics.json`). Training time is that of the run that trained the model; "
           "model size is its folder on disk."),
    ("code", "cmp.report_table()"),
    ("md", "## The swept parameter against quality\n\n"
           "Error bars: the bootstrap intervals above. One line per combination of the other "
           "swept keys; the dashed line is the generic model, not fine-tuned."),
    ("code", "cmp.plot();"),
    ("md", "## Across seeds\n\n"
           "When the sweep varies `seed` (the seed draws the training subsample and the training "
           "order), the points that differ only in it form a group. *mean*, *sd*, *min*, *max*: "
           "of the points' nDCG@10; *vs generic*: each test query's nDCG@10 averaged over the "
           "group's seeds, minus the generic model's, paired over the queries, with `p_holm` "
           "Holm-adjusted over the groups. One seed per group leaves *sd* empty and the test is "
           "that one model's."),
    ("code", "seeds = cmp.over_seeds('ndcg@10')\n"
             "(seeds.style.format({'mean': '{:.4f}', 'sd': '{:.4f}', 'min': '{:.4f}', 'max': '{:.4f}',\n"
             "                     'generic': '{:.4f}', 'vs generic': '{:+.4f}', 'p_value': '{:.3g}',\n"
             "                     'p_holm': '{:.3g}'}, na_rep='').hide(axis='index')\n"
             " if len(seeds) else Markdown('This sweep does not vary the seed.'))"),
    ("md", "## Significance against the baseline point\n\n"
           "Paired over the test queries both points answered (`evaluate.stat_test`: `student` is "
           "the paired t-test, `fisher` a randomization test). With several points tested against "
           "one baseline, `p_holm` is Holm-adjusted over the points; `significant` uses it."),
    ("code", "cmp.significance().style.format({'delta': '{:+.4f}', 'p_value': '{:.3g}', 'p_holm': '{:.3g}'})"
             ".hide(axis='index')"),
    ("md", "## At truncated dimensions\n\n"
           "With `evaluate.dims` set, each point's models are also scored with their embeddings cut "
           "to the first *d* dimensions and renormalised (an index full/*d* times smaller): what "
           "Matryoshka training is for. The generic rows are the same base model in every point."),
    ("code", "cuts = cmp.truncated()\n"
             "cuts.style.format('{:.4f}') if len(cuts) else Markdown('No point was scored at truncated dimensions.')"),
    ("md", "## Points that did not finish"),
    ("code", "failures = cmp.failures()\n"
             "failures.style.hide(axis='index') if len(failures) else Markdown('Every point finished.')"),
    ("md", "## Reproduce"),
    ("code", "s = cmp.summary\n"
             "display(Markdown(\n"
             "    f\"```\\n{cmp.command()}\\n```\\n\\n\"\n"
             "    f\"git `{(s.get('git') or {}).get('commit')}`\"\n"
             "    f\"{' (uncommitted changes)' if (s.get('git') or {}).get('dirty') else ''}\"\n"
             "    + (f\"; plus {s['extra_points']} extra points from the params file's sweep section\" if s.get('extra_points') else '')\n"
             "    + f\". Every point starts from `{s['base_params']}` in the sweep folder; `sweep.json` \"\n"
             "    \"lists each point's overrides, status and folder.\"))"),
]


if __name__ == "__main__":
    path = ROOT / "notebooks" / "sweep_compare.ipynb"
    nbformat.write(build(SWEEP_COMPARE, "sweep_compare"), path)
    print("wrote", path)
