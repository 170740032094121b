"""Write the stage notebooks from the cell sources below (run once after editing them).

Notebooks are thin drivers: a tagged parameters cell, then calls into the library.
Usage: python tools/make_notebooks.py
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]

PARAMETERS = '''params_file = "params/smoke.yaml"   # experiment to run (a params/*.yaml file)
overrides = {}                      # dotted keys, e.g. {"model.batch_size": 16}
run_dir = ""                        # output folder; empty: results/<experiment>'''

NOTEBOOKS = {
    "04_evaluate": [
        ("md", "# 04 · Evaluate: every system on the held-out test queries\n\n"
               "BM25, the generic embedding model and their hybrid, scored with ranx on the "
               "test split. The hybrid's convex weight is chosen on dev queries only. "
               "Writes `metrics.json`, `per_query.csv` and `runs/` into the run folder."),
        ("params", PARAMETERS),
        ("code", "from IPython.display import display\n"
                 "from embedtune import plots\n"
                 "from embedtune.context import open_run\n"
                 "from embedtune.stages import evaluate\n\n"
                 "ctx = open_run(params_file, overrides, run_dir or None)\n"
                 "ds, splits = ctx.data\n"
                 "summary = plots.describe_data(ds, splits)\n"
                 "print(summary.attrs['corpus'])\n"
                 "summary"),
        ("code", "result = evaluate.run(ctx)\n"
                 "result.table().style.format('{:.4f}').set_caption("
                 "f\"{ctx.cfg.experiment}: {result.scores.n_queries} test queries\")"),
        ("md", "Paired significance over queries (ranx; `delta` = first minus second system)."),
        ("code", "result.significance_table().query(\"metric in ['ndcg@10', 'recall@10', 'mrr@10']\")"
                 ".style.format({'delta': '{:+.4f}', 'p_value': '{:.4f}'}).hide(axis='index')"),
        ("code", "plots.recall_curve(result.scores.mean);"),
        ("code", "hybrid = result.metrics['hybrid']\n"
                 "if 'dev_trials' in hybrid:\n"
                 "    plots.fusion_weight_curve(hybrid['dev_trials'], hybrid['bm25_weight'], hybrid['chosen_by'])\n"
                 "    print(f\"BM25 weight {hybrid['bm25_weight']:.2f}, chosen on {hybrid['chosen_on']}\")\n"
                 "    print('RRF on the same test queries, for comparison:', "
                 "{k: round(v, 4) for k, v in hybrid['rrf_for_comparison'].items() if k in ('ndcg@10', 'recall@10')})\n"
                 "else:\n"
                 "    print(hybrid)"),
        ("code", "result.metrics['cost']"),
    ],
}


def build(cells):
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "embedtune", "display_name": "Python (embedtune)",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        if kind == "md":
            nb.cells.append(new_markdown_cell(source))
        else:
            cell = new_code_cell(source)
            if kind == "params":
                cell.metadata["tags"] = ["parameters"]
            nb.cells.append(cell)
    return nb


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(build(cells), path)
        print("wrote", path)
