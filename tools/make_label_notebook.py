"""Write notebooks/label.ipynb, the manual labelling notebook (run once after editing the cells).

It is a thin driver like the stage notebooks: a tagged parameters cell, then calls into
embedtune.gold, whose Labeler and label_widget hold all the logic (and the widget callbacks).
It is not a pipeline stage: a person runs it in JupyterLab, and papermill never does.
Usage: python tools/make_label_notebook.py
"""

import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from make_notebooks import build  # noqa: E402  (the stage notebooks' builder: same cells, same ids)
NAME = "label"

PARAMETERS = '''params_file = "params/smoke.yaml"   # experiment whose dataset (and slice) is labelled
overrides = {}                      # dotted keys, e.g. {"data.max_docs": 2000}
gold_file = "gold/labels.tsv"       # labels go here (project-relative; created when missing)
split = "test"                      # label the queries of this split: train, dev or test ...
queries_file = ""                   # ... or the queries in this text file, one per line
candidates = "bm25"                 # who proposes the candidates: bm25 or generic (the base model)
k = 10                              # candidates shown per query'''

CELLS = [
    ("md", "# Label: manual gold judgements\n\n"
           "Shows each query with its top `k` candidates from BM25 or the generic model; grade each "
           "candidate (0 not relevant, 1 relevant, 2 highly relevant) and press **Save & next**. "
           "Every save rewrites `gold_file` atomically, so you can stop at any time and re-run the "
           "notebook to resume at the first query not yet saved (skips last for the session only). "
           "Unmarked candidates are saved as 0, judged not relevant.\n\n"
           "The file is a TSV (`query_id, query, doc_id, grade`) that the pipeline imports beside "
           "the BEIR qrels (docs/data-sources.md). The brief's sweet spot: a few hundred manual "
           "pairs as gold."),
    ("params", PARAMETERS),
    ("code", "from embedtune import gold\n\n"
             "labeler = gold.open_labeler(params_file, overrides, gold_file, split=split,\n"
             "                            queries_file=queries_file or None, candidates=candidates, k=k)\n"
             "labeler.progress()"),
    ("code", "gold.label_widget(labeler)"),
    ("md", "When you are done (or want to check), read the file back as the pipeline will:"),
    ("code", "imported = labeler.read()\n"
             "imported.stats if imported else 'no labels saved yet'"),
]


def main() -> None:
    path = ROOT / "notebooks" / f"{NAME}.ipynb"
    nbformat.write(build(CELLS, NAME), path)
    print(f"wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
