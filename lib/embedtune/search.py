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

A search resumes: run the same command again and the trials already in ``search.json`` are told to
the sampler (no trial is trained twice), so a search longer than one sitting can be run in parts
(``train.search.trials`` counts all trials; ``budget_s`` is for this call). ``search.json``
records a fingerprint of the settings every trial shares (the params, without the trial and
time budget); resuming under other settings is refused, as its trials would not be comparable.

Example:
    $ embedtune search params/scifact.yaml --set train.search.trials=6
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from pathlib import Path

import yaml

from embedtune.config import ConfigError, load_config
from embedtune.io import atomic_write_json, atomic_write_text, read_json
from embedtune.layout import RunLayout, resolve_run_dir
from embedtune.runner import run_experiment

log = logging.getLogger(__name__)

STAGES = ["pairs", "negatives", "train"]


class SearchMismatch(ConfigError):
    """``search.json`` in the search folder was made under other settings than this call's (the CLI
    says so in one line and exits 2)."""


def distributions(space) -> dict:
    """The search space (a SearchConfig) as Optuna distributions, one per params key."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    return {
        "train.learning_rate": FloatDistribution(space.learning_rate_min, space.learning_rate_max, log=True),
        "train.epochs": CategoricalDistribution(list(space.epochs)),
        "train.loss": CategoricalDistribution(list(space.losses)),
        "pairs.max_pairs_per_query": CategoricalDistribution(list(space.pairs_per_query)),
        "negatives.relative_margin": CategoricalDistribution(list(space.relative_margins)),
    }


def suggest(trial, space) -> dict:
    """One trial's overrides, sampled from ``space`` (a SearchConfig)."""
    for name, dist in distributions(space).items():
        if hasattr(dist, "choices"):
            trial.suggest_categorical(name, list(dist.choices))
        else:
            trial.suggest_float(name, dist.low, dist.high, log=dist.log)
    return overrides_of(trial.params)


def overrides_of(params: dict) -> dict:
    """A trial's sampled values as params overrides (0 pairs per query: no cap; margin -1: none)."""
    overrides = dict(params)
    overrides["pairs.max_pairs_per_query"] = overrides["pairs.max_pairs_per_query"] or None
    margin = overrides["negatives.relative_margin"]
    overrides["negatives.relative_margin"] = margin if margin >= 0 else None
    return overrides


def fingerprint(cfg) -> str:
    """What every trial of a search shares: the whole config but the trial and time budget."""
    plain = cfg.to_dict()
    for budget in ("trials", "budget_s"):
        plain["train"]["search"].pop(budget, None)
    text = json.dumps(plain, sort_keys=True, default=str)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]


def earlier_trials(folder: Path, cfg) -> tuple[list[dict], float]:
    """The trials and seconds of the search already in ``folder`` (none if it holds no search.json).

    Raises:
        SearchMismatch: that search ran under other settings, so its scores are not comparable.
    """
    path = folder / "search.json"
    if not path.is_file():
        return [], 0.0
    doc = read_json(path)
    if doc.get("fingerprint") != fingerprint(cfg):
        raise SearchMismatch(
            f"{path} holds a search under other settings (params file, --set values or search space) "
            f"than this one, so its trials are not comparable with new ones; give this search another "
            f"folder with --out, or move {folder} away to start over")
    return list(doc["trials"]), float(doc.get("seconds", 0.0))


def tell_earlier(study, trials: list[dict], space) -> None:
    """Add finished trials to ``study`` so that the sampler learns from them without re-running them."""
    import optuna

    dists = distributions(space)
    for t in trials:
        ok = t["status"] == "ok" and not math.isnan(t["dev_ndcg@10"])
        study.add_trial(optuna.trial.create_trial(
            params=t["params"], distributions=dists, value=t["dev_ndcg@10"] if ok else None,
            state=optuna.trial.TrialState.COMPLETE if ok else optuna.trial.TrialState.FAIL))


def dev_score(folder: Path) -> float:
    """The best dev nDCG@10 of a trial's training run (its keep-base test's best checkpoint)."""
    version = read_json(RunLayout(folder).version)
    guard = version.get("keep_base") or {}
    guard = guard.get("dev", guard)  # a cross-fitted test keeps the dev queries' own beside it
    return float(guard.get("best", version.get("dev_best") or math.nan))


def run_search(params_file: str | Path, overrides: dict | None = None, out_dir: str | Path | None = None,
               progress: bool = False) -> dict:
    """Run the search (see the module docstring); returns ``search.json``'s document."""
    import optuna

    overrides = dict(overrides or {})
    cfg = load_config(params_file, overrides)
    space = cfg.train.search
    folder = Path(out_dir) if out_dir else resolve_run_dir(cfg) / "search"
    trials, seconds_before = earlier_trials(folder, cfg)
    folder.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # a resumed search seeds its sampler past the earlier draws, so it does not propose them again
    sampler = optuna.samplers.TPESampler(seed=cfg.seed + len(trials))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    if trials:
        tell_earlier(study, trials, space)
        log.info("search: resuming with the %d trials in %s", len(trials), folder / "search.json")
    start = time.perf_counter() - seconds_before
    budget_end = time.perf_counter() + space.budget_s
    while len(trials) < space.trials and time.perf_counter() < budget_end:
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
        trials.append({"trial": name, "overrides": chosen, "params": dict(trial.params), "dev_ndcg@10": score,
                       "status": status, "seconds": round(time.perf_counter() - t0, 1)})
        log.info("search %s: %s -> dev nDCG@10 %.4f", name, chosen, score)
        _write(folder, cfg, params_file, overrides, trials, start)
    return _write(folder, cfg, params_file, overrides, trials, start)


def _write(folder: Path, cfg, params_file, overrides: dict, trials: list[dict], start: float) -> dict:
    done = [t for t in trials if t["status"] == "ok" and not math.isnan(t["dev_ndcg@10"])]
    best = max(done, key=lambda t: t["dev_ndcg@10"], default=None)
    doc = {"experiment": cfg.experiment, "params_file": str(params_file), "fixed": overrides,
           "fingerprint": fingerprint(cfg), "chosen_on": "the dev queries (best dev checkpoint's nDCG@10); test queries never looked at",
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
