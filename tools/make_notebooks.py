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

OPEN = ("from IPython.display import display\n"
        "from embedtune import plots\n"
        "from embedtune.context import open_run\n"
        "{imports}\n\n"
        "ctx = open_run(params_file, overrides, run_dir or None)\n"
        "ds, splits = ctx.data\n"
        "summary = plots.describe_data(ds, splits)\n"
        "print(summary.attrs['corpus'])\n"
        "summary")

NOTEBOOKS = {
    "00_decide": [
        ("md", "# 00 · Decide: does fine-tuning pay off here?\n\n"
               "Measures each input of the brief's decision flowchart (special vocabulary, labelled "
               "pairs, generic recall@10 on **dev** queries, what hybrid alone reaches) and walks it. "
               "Test queries are never looked at. Writes `decision.json`."),
        ("params", PARAMETERS),
        ("code", OPEN.format(imports="from embedtune.stages import decide")),
        ("code", "result = decide.run(ctx)\n"
                 "print('Verdict:', result.decision.verdict)\n"
                 "for reason in result.decision.reasons:\n"
                 "    print('-', reason)"),
        ("code", "result.plot();"),
        ("md", "The measurements behind it:"),
        ("code", "import pandas as pd\n"
                 "pd.DataFrame(result.document['dev_scores']).T.round(4)"),
        ("code", "{k: v for k, v in result.vocabulary.items()}"),
    ],
    "01_pairs": [
        ("md", "# 01 · Pairs: gold training pairs and held-out hygiene\n\n"
               "(query, relevant document) pairs from the train qrels. The dev queries choose "
               "checkpoints and fusion weights; the test queries are never used for training or "
               "choosing. The leakage guard drops train/dev queries that duplicate a test query "
               "(exactly after normalisation, or by base-model cosine above `pairs.leakage_cosine`)."),
        ("params", PARAMETERS),
        ("code", OPEN.format(imports="from embedtune.stages import pairs")),
        ("code", "result = pairs.run(ctx)\nresult.table()"),
        ("md", "Queries removed by the leakage guard (train/dev query id -> test query id, cosine):"),
        ("code", "result.leakage.summary() | {'near': result.leakage.near}"),
        ("code", "result.examples()"),
    ],
    "02_negatives": [
        ("md", "# 02 · Negatives: hard negatives without false negatives\n\n"
               "Candidates from BM25 and from the base model (sentence-transformers' "
               "`mine_hard_negatives`), then the false-negative guard: a rank window, a relative "
               "margin below the positive's score, and every judged positive of the query excluded. "
               "A manual curation file (`negatives.manual`) is honoured."),
        ("params", PARAMETERS),
        ("code", OPEN.format(imports="from embedtune.stages import negatives")),
        ("code", "result = negatives.run(ctx)\n"
                 "print('what each filter removed, per source (<NA>: masked inside the miner)')\n"
                 "result.table()"),
        ("code", "result.plot_scores();"),
        ("code", "print(result.stats.st_report.split('Metric')[-1] if 'Metric' in result.stats.st_report else result.stats.st_report)"),
        ("code", "result.examples()"),
    ],
    "03_train": [
        ("md", "# 03 · Train: fine-tune with sentence-transformers\n\n"
               "`SentenceTransformerTrainer` with the loss named in `train.loss`; dev evaluation "
               "after each epoch, the best checkpoint kept and saved with its model card."),
        ("params", PARAMETERS),
        ("code", OPEN.format(imports="from embedtune.stages import train")),
        ("code", "result = train.run(ctx)\n"
                 "{k: result.version[k] for k in ('version', 'loss', 'examples', 'steps', 'train_seconds', 'precision', 'device')}"),
        ("code", "result.plot();"),
        ("code", "result.dev_table().round(4)"),
    ],
    "04_evaluate": [
        ("md", "# 04 · Evaluate: every system on the held-out test queries\n\n"
               "BM25, the generic embedding model, the fine-tuned model (when 03_train ran) and "
               "their hybrids, scored with ranx on the test split. Each hybrid's convex weight is "
               "chosen on dev queries only. Writes `metrics.json`, `per_query.csv` and `runs/`."),
        ("params", PARAMETERS),
        ("code", OPEN.format(imports="from embedtune.stages import evaluate")),
        ("code", "result = evaluate.run(ctx)\n"
                 "result.table().style.format('{:.4f}').set_caption("
                 "f\"{ctx.cfg.experiment}: {result.scores.n_queries} test queries\")"),
        ("md", "Paired significance over queries (`delta` = first minus second system)."),
        ("code", "result.significance_table().query(\"metric in ['ndcg@10', 'recall@10', 'mrr@10']\")"
                 ".style.format({'delta': '{:+.4f}', 'p_value': '{:.4f}'}).hide(axis='index')"),
        ("code", "plots.recall_curve(result.scores.mean);"),
        ("code", "for name, info in result.metrics['hybrid'].items():\n"
                 "    if 'dev_trials' in info:\n"
                 "        plots.fusion_weight_curve(info['dev_trials'], info['bm25_weight'], info['chosen_by'])\n"
                 "        print(f\"{name}: BM25 weight {info['bm25_weight']:.2f}, chosen on {info['chosen_on']}; \"\n"
                 "              f\"RRF instead would give nDCG@10 {info['rrf_for_comparison']['ndcg@10']:.4f}\")\n"
                 "    else:\n"
                 "        print(name, info)"),
        ("md", "Out of domain: the fine-tuned model against the generic one on other datasets."),
        ("code", "result.metrics['ood'] or 'no ood.datasets configured (or no fine-tuned model yet)'"),
        ("code", "result.metrics['cost']"),
    ],
    "05_report": [
        ("params", PARAMETERS),
        ("code", "import warnings\n"
                 "warnings.simplefilter('ignore')  # the stage notebooks keep every warning; the report is for reading\n"
                 "from IPython.display import Markdown, display\n"
                 "from embedtune.context import open_run\n"
                 "from embedtune.stages import report\n\n"
                 "ctx = open_run(params_file, overrides, run_dir or None)\n"
                 "r = report.run(ctx)\n"
                 "d, m = r.decision, r.metrics\n"
                 "display(Markdown(\n"
                 "    f\"# {ctx.cfg.experiment}: does fine-tuning pay off?\\n\\n\"\n"
                 "    f\"**Decision before training** (00_decide, dev queries only): **{d.get('verdict', 'not run')}**. \"\n"
                 "    + ' '.join(d.get('reasons', [])) + \"\\n\\n\"\n"
                 "    f\"**What happened**: {r.headline_sentence()}\\n\\n\"\n"
                 "    f\"Dataset `{m['dataset']['name']}`: {m['dataset']['n_docs']:,} documents; test queries: \"\n"
                 "    f\"{m['dataset']['test_queries']}; dev queries: {m['dataset']['dev_queries']}. \"\n"
                 "    f\"Base model `{m['base_model']}`\"\n"
                 "    + (f\"; fine-tuned `{m['finetuned_model']['version']}` ({m['finetuned_model']['loss']}, \"\n"
                 "       f\"{m['finetuned_model']['examples']:,} examples, {m['finetuned_model']['steps']} steps).\"\n"
                 "       if 'finetuned_model' in m else '.')))"),
        ("code", "r.show('headline');"),
        ("md", "## Every system, every metric\n\n"
               "Mean over the test queries with a 95 % bootstrap interval (queries resampled). "
               "▲ / ▼: significantly better / worse than `generic` (paired test over the same "
               "queries, p < 0.05)."),
        ("code", "r.quality()"),
        ("code", "r.show('intervals');"),
        ("md", "Paired tests of the comparisons that matter (`delta` = first minus second system):"),
        ("code", "r.significance().style.format({'delta': '{:+.4f}', 'p_value': '{:.3g}'}).hide(axis='index')"),
        ("md", "## Recall at every depth"),
        ("code", "r.show('recall_at_k');"),
        ("md", "## Where fine-tuning wins and loses\n\n"
               "nDCG@10 of the fine-tuned model minus the generic one, per test query."),
        ("code", "r.show('win_loss');"),
        ("md", "## Training\n\nTraining loss, and the dev queries (never test) that chose the checkpoint."),
        ("code", "r.show('training');"),
        ("md", "## Training data\n\nTraining pairs per source, after the leakage guard; and, when "
               "click logs validate, every system on the click-validation queries."),
        ("code", "display(r.sources_table())\n"
                 "clicks = r.clicks_table()\n"
                 "if not clicks.empty:\n"
                 "    display(clicks.style.format({c: '{:.4f}' for c in clicks.columns if 'rank' not in c})\n"
                 "            .set_caption(clicks.attrs['caption']))"),
        ("md", "## Against other runs\n\nWhen `report.compare_with` names other experiments on the "
               "same test queries (e.g. gold against generated training queries), each system's "
               "nDCG@10 here and there, with a paired test on the shared queries."),
        ("code", "for name, table in r.comparison_tables().items():\n"
                 "    display(table.style.format({c: '{:.4f}' for c in ('here', 'there', 'delta', 'p_value')})\n"
                 "            .set_caption(f'this run ({r.summary[\"experiment\"]}) against {name}'))\n"
                 "if not r.comparisons:\n"
                 "    print('report.compare_with names no other run')"),
        ("md", "## Hard negatives\n\n"
               "Candidates per source and what the false-negative guard removed; the cosine of "
               "positives and kept negatives under the base model."),
        ("code", "r.negatives_table()"),
        ("code", "r.show('negatives');"),
        ("md", "## Out of domain\n\nThe fine-tuned model on other datasets: a drop is forgetting."),
        ("code", "r.ood_table()"),
        ("code", "r.show('ood');"),
        ("md", "## Cost against benefit\n\n"
               "Wall time is that of the run that made the outputs (embedding-cache hits make re-runs "
               "cheaper). Prices are the rates in `params` (`report.cpu_hour_price`, "
               "`report.gpu_hour_price`). Latency: test queries answered one at a time on this machine."),
        ("code", "r.cost_summary()"),
        ("code", "r.show('cost');"),
        ("code", "r.latency_table()"),
        ("md", "## The decision, step by step"),
        ("code", "r.show('decision');"),
        ("code", "import pandas as pd\n"
                 "pd.DataFrame({k: v for k, v in d.get('measurements', {}).items() if not isinstance(v, dict)}, "
                 "index=['measured']).T"),
        ("md", "## Reproduce"),
        ("code", "import json\n"
                 "man = ctx.read_manifest()\n"
                 "display(Markdown(\n"
                 "    f\"`embedtune run {man.get('params_file')}\"\n"
                 "    + ''.join(f\" --set '{k}={json.dumps(v)}'\" for k, v in (man.get('overrides') or {}).items())\n"
                 "    + f\"` (git `{(man.get('git') or {}).get('commit')}`\"\n"
                 "    f\"{', uncommitted changes' if (man.get('git') or {}).get('dirty') else ''}), \"\n"
                 "    f\"dataset fingerprint `{m['dataset']['fingerprint'][:19]}...`, \"\n"
                 "    f\"torch {man['environment']['packages'].get('torch')}, \"\n"
                 "    f\"sentence-transformers {man['environment']['packages'].get('sentence-transformers')}.\"))"),
    ],
}

NOTEBOOKS["06_monitor"] = [
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


def build(cells, name: str = "nb"):
    """A notebook from (kind, source) cells; cell ids are stable so that regenerating an
    unchanged notebook leaves its file (and every stage cache key) unchanged."""
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
    for i, cell in enumerate(nb.cells):
        cell.id = f"{name[:40]}-{i:02d}"
    return nb


if __name__ == "__main__":
    for name, cells in NOTEBOOKS.items():
        path = ROOT / "notebooks" / f"{name}.ipynb"
        nbformat.write(build(cells, name), path)
        print("wrote", path)
