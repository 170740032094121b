"""``embedtune search``: choose the training recipe on dev queries only, with Optuna.

Each trial runs 01_pairs, 02_negatives and 03_train (the runner, the stage cache: trials that share
pairs or negatives reuse them, as sweep points do) into ``results/<experiment>/search/<trial>/``
and scores the best dev checkpoint's nDCG@10. Test queries are never looked at: 04_evaluate does
not run. Optuna's TPE sampler proposes the next trial from the finished ones, within the budget
(``train.search.budget_s`` seconds and ``train.search.trials`` trials, whichever ends first).

The space (``train.search``): learning rate (log-uniform), epochs, loss (mnrl / cached_mnrl /
gist), pairs per query (a cap, or none), the negatives' relative margin (or none). The chosen
recipe is written to ``search.json`` with every trial, and as dotted overrides to
``best.yaml``: ``embedtune run params/X.yaml $(embedtune search --print-best params/X.yaml)``, or
copy them into the params file.

Example:
    $ embedtune search params/scifact.yaml --set train.search.trials=6
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import yaml

from embedtune.config import load_config
from embedtune.io import atomic_write_json, atomic_write_text, read_json
from embedtune.layout import RunLayout, resolve_run_dir
from embedtune.runner import run_experiment

log = logging.getLogger(__name__)

STAGES = ["pairs", "negatives", "train"]


def suggest(trial, space) -> dict:
    """One trial's overrides, from ``space`` (a SearchConfig)."""
    overrides = {
        "train.learning_rate": trial.suggest_float("train.learning_rate", space.learning_rate_min,
                                                   space.learning_rate_max, log=True),
        "train.epochs": trial.suggest_categorical("train.epochs", list(space.epochs)),
        "train.loss": trial.suggest_categorical("train.loss", list(space.losses)),
        "pairs.max_pairs_per_query": trial.suggest_categorical("pairs.max_pairs_per_query",
                                                               list(space.pairs_per_query)),
        "negatives.relative_margin": trial.suggest_categorical("negatives.relative_margin",
                                                               list(space.relative_margins)),
    }
    overrides["pairs.max_pairs_per_query"] = overrides["pairs.max_pairs_per_query"] or None  # 0: no cap
    overrides["negatives.relative_margin"] = overrides["negatives.relative_margin"] if \
        overrides["negatives.relative_margin"] >= 0 else None  # -1: no margin
    return overrides


def dev_score(folder: Path) -> float:
    """The best dev nDCG@10 of a trial's training run (its keep-base test's best checkpoint)."""
    version = read_json(RunLayout(folder).version)
    guard = version.get("keep_base") or {}
    return float(guard.get("best", version.get("dev_best") or math.nan))


def run_search(params_file: str | Path, overrides: dict | None = None, out_dir: str | Path | None = None,
               progress: bool = False) -> dict:
    """Run the search (see the module docstring); returns ``search.json``'s document."""
    import optuna

    overrides = dict(overrides or {})
    cfg = load_config(params_file, overrides)
    space = cfg.train.search
    folder = Path(out_dir) if out_dir else resolve_run_dir(cfg) / "search"
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    trials: list[dict] = []
    start = time.perf_counter()
    while len(trials) < space.trials and time.perf_counter() - start < space.budget_s:
        trial = study.ask()
        chosen = suggest(trial, space)
        name = f"trial-{trial.number:02d}"
        t0 = time.perf_counter()
        try:
            run_experiment(params_file, stages=STAGES, overrides={**overrides, **chosen}, run_dir=folder / name,
                           progress=progress, rerun_named=False)
            score = dev_score(folder / name)
            study.tell(trial, score)
            status = "ok"
        except Exception as exc:  # noqa: BLE001 - a failed trial is recorded; the search goes on
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            score, status = math.nan, f"failed: {type(exc).__name__}: {exc}"
        trials.append({"trial": name, "overrides": chosen, "dev_ndcg@10": score, "status": status,
                       "seconds": round(time.perf_counter() - t0, 1)})
        log.info("search %s: %s -> dev nDCG@10 %.4f", name, chosen, score)
        _write(folder, cfg, params_file, overrides, trials, start)
    return _write(folder, cfg, params_file, overrides, trials, start)


def _write(folder: Path, cfg, params_file, overrides: dict, trials: list[dict], start: float) -> dict:
    done = [t for t in trials if t["status"] == "ok" and not math.isnan(t["dev_ndcg@10"])]
    best = max(done, key=lambda t: t["dev_ndcg@10"], default=None)
    doc = {"experiment": cfg.experiment, "params_file": str(params_file), "fixed": overrides,
           "chosen_on": "the dev queries (best dev checkpoint's nDCG@10); test queries never looked at",
           "budget_s": cfg.train.search.budget_s, "seconds": round(time.perf_counter() - start, 1),
           "trials": trials, "best": best}
    atomic_write_json(folder / "search.json", doc)
    if best:
        atomic_write_text(folder / "best.yaml", "# the recipe chosen on dev by embedtune search\n"
                          + yaml.safe_dump(best["overrides"], sort_keys=False))
    return doc


def table(doc: dict):
    """The trials as a table, best first (for a notebook or the terminal)."""
    import pandas as pd

    rows = [{"trial": t["trial"], **{k.split(".")[-1]: v for k, v in t["overrides"].items()},
             "dev nDCG@10": t["dev_ndcg@10"], "seconds": t["seconds"], "status": t["status"]} for t in doc["trials"]]
    return pd.DataFrame(rows).sort_values("dev nDCG@10", ascending=False).set_index("trial") if rows else pd.DataFrame()


def add_parser(subparsers) -> None:
    search = subparsers.add_parser("search", help="choose the training recipe on dev queries with Optuna "
                                                  "(results/<experiment>/search/)")
    search.add_argument("params")
    search.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="a params key fixed for every trial, e.g. train.search.trials=6 (repeatable)")
    search.add_argument("--out", help="the search folder (default: results/<experiment>/search)")
    search.add_argument("--print-best", action="store_true", help="print the best recipe as --set options and stop")


def run_cli(args) -> int:
    from embedtune.config import parse_override

    overrides = dict(parse_override(o) for o in args.overrides)
    if args.print_best:
        cfg = load_config(args.params, overrides)
        doc = read_json((Path(args.out) if args.out else resolve_run_dir(cfg) / "search") / "search.json")
        best = (doc.get("best") or {}).get("overrides", {})
        print(" ".join(f"--set {k}={json.dumps(v)}" for k, v in best.items()))
        return 0
    doc = run_search(args.params, overrides, args.out)
    print(table(doc).to_string())
    print(f"best on dev: {doc['best']}")
    return 0
