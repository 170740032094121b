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

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import copy
import dataclasses
import hashlib
import functools
import itertools
import json
import logging
import math
import multiprocessing
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from embedtune import paths, runner
from embedtune.config import ConfigError, build, load_config, parse_override
from embedtune.context import git_state, now, resolve_run_dir
from embedtune.io import atomic_write_json, atomic_write_text, read_json
from embedtune.runner import run_experiment

log = logging.getLogger(__name__)

COMPARE_NOTEBOOK = "sweep_compare"  # notebooks/sweep_compare.ipynb (written by tools/cells_sweep.py)
COMPARED_METRICS = ("ndcg@10", "recall@10")
_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")
# names a sweep folder may not take: they are a stage's outputs in the experiment folder
_RESERVED = {name for outputs in runner.STAGE_OUTPUTS.values() for name in outputs} | {".stages"}


@dataclass(frozen=True)
class SweepSection:
    """The ``sweep:`` section of a params file (see the module docstring)."""

    name: str | None = None  # folder under results/<experiment>/; None: named after the varied keys
    grid: Any = None  # mapping: dotted key -> list of values (every combination is a point)
    points: tuple[Any, ...] = ()  # extra points: mappings of dotted keys
    baseline: Any = None  # a point name or a mapping of dotted keys; None: the first point
    x: str | None = None  # the key on the plots' x axis; None: the first grid key
    stages: tuple[str, ...] | None = None  # None: every stage that has a notebook
    system: str = "finetuned"  # the system compared across points


@dataclass(frozen=True)
class Point:
    name: str  # its folder name in the sweep folder
    overrides: dict[str, Any]  # what this point sets on top of base.yaml
    values: dict[str, Any]  # every varied key's resolved value (set here, or the base's)


@dataclass
class SweepPlan:
    """Everything a sweep will do, checked before anything runs."""

    name: str
    folder: Path
    params_file: Path  # what the user named
    base: dict  # that file without its sweep section, with the fixed overrides applied
    fixed: dict[str, Any]  # the fixed overrides (``--set``)
    grid: dict[str, list]
    points: list[Point]
    varied: list[str]  # keys whose value differs between points, in grid order
    baseline: str
    x: str | None
    stages: list[str]
    system: str
    experiment_cfg: Any  # the base ExperimentConfig (report and evaluate settings for the page)

    def point_folder(self, point: Point) -> Path:
        return self.folder / point.name


@dataclass
class SweepResult:
    folder: Path
    points: list[dict]  # sweep.json's points
    report: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [p for p in self.points if p["status"] != "ok"]


# --- grid syntax ----------------------------------------------------------------------------


def split_values(text: str) -> list[str]:
    """Split ``text`` at the commas outside brackets, braces and quotes.

    >>> split_values("[],[bm25],[bm25,dense]")
    ['[]', '[bm25]', '[bm25,dense]']
    """
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in "[{":
            depth += 1
        elif ch in "]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced brackets in {text!r}")
        elif ch == "," and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if depth or quote:
        raise ConfigError(f"unbalanced brackets or quotes in {text!r}")
    parts.append("".join(current))
    return [p.strip() for p in parts]


def parse_value(text: str) -> Any:
    """One grid value: YAML, with ``2e-5`` read as a number (plain YAML 1.1 reads it as text)."""
    if not text:
        raise ConfigError("empty grid value; write null for None and '' for an empty string")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"grid value {text!r} is not valid YAML: {exc}") from exc
    return numbers(value)


def numbers(value: Any) -> Any:
    """Strings that spell a number (``"2e-5"``) as numbers, inside lists and mappings too."""
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        return int(text) if re.fullmatch(r"[+-]?\d+", text) else float(text)
    if isinstance(value, list):
        return [numbers(v) for v in value]
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    return value


def parse_grid(text: str) -> tuple[str, list]:
    """``KEY=V1,V2,...`` from the command line (see the module docstring).

    >>> parse_grid("negatives.sources=[],[bm25,dense]")
    ('negatives.sources', [[], ['bm25', 'dense']])
    """
    key, sep, values = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--grid {text!r} is not of the form key=value1,value2,...")
    return key.strip(), [parse_value(v) for v in split_values(values)]


def expand(grid: Mapping[str, list], extra: Iterable[Mapping[str, Any]] = ()) -> list[dict]:
    """Every combination of the grid's values (first key slowest), then the extra points."""
    combos = []
    if grid:
        keys = list(grid)
        combos = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    combos += [dict(p) for p in extra]
    unique = []
    for combo in combos:
        if combo not in unique:
            unique.append(combo)
    return unique


def _slug(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(_slug(v) for v in value) if value else "empty"
    if isinstance(value, dict):
        return "+".join(f"{k}-{_slug(v)}" for k, v in value.items()) or "empty"
    return str(value)


def short_keys(keys: list[str]) -> dict[str, str]:
    """Each dotted key's last part, or the whole key where two last parts would clash."""
    last = [k.rsplit(".", 1)[-1] for k in keys]
    return {k: (s if last.count(s) == 1 else k) for k, s in zip(keys, last)}


def point_name(overrides: Mapping[str, Any], varied: list[str]) -> str:
    """A folder name that says what the point varies: ``loss=mnrl,matryoshka_dims=384+128``."""
    shorts = short_keys(varied)
    parts = [f"{shorts[k]}={_slug(overrides.get(k))}" for k in varied]
    name = re.sub(r"[^A-Za-z0-9._+=,-]+", "-", ",".join(parts)) or "base"
    if len(name) > 100:
        digest = hashlib.sha256(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()
        name = f"{name[:90]}-{digest[:8]}"
    return name


def _cli_value(value: Any) -> str:
    """A value as ``--grid`` / ``--set`` read it back (see :func:`parse_value`)."""
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_cli_value(v) for v in value) + "]"
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str) and (not value or re.search(r"[,\[\]{}'\":#]", value) or value != value.strip()
                                   or parse_value(value) != value):
        return json.dumps(value)
    return str(value)


def label(value: Any) -> str:
    """A value as people write it in a params file (for tables and axes)."""
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(label(v) for v in value) + "]"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


# --- planning -------------------------------------------------------------------------------


def read_params(params_file: str | Path) -> tuple[dict, SweepSection | None]:
    """The params file's mapping without its ``sweep:`` section, and that section (validated)."""
    path = Path(params_file)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    section = raw.pop("sweep", None)
    if section is None:
        return raw, None
    spec = build(SweepSection, section, prefix="sweep.")
    if spec.grid is not None and not (isinstance(spec.grid, dict) and all(
            isinstance(v, list) and v for v in spec.grid.values())):
        raise ConfigError("sweep.grid: expected a mapping of dotted keys to non-empty lists of values, "
                          "e.g. {train.loss: [mnrl, triplet]}")
    if not all(isinstance(p, dict) and p for p in spec.points):
        raise ConfigError("sweep.points: expected a list of mappings of dotted keys, e.g. "
                          "[{train.loss: mnrl, train.epochs: 5}]")
    return raw, spec


def plan_sweep(params_file: str | Path, grid: Mapping[str, list] | None = None, *,
               points: Iterable[Mapping[str, Any]] = (), name: str | None = None,
               baseline: str | Mapping[str, Any] | None = None, x: str | None = None,
               stages: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None,
               system: str | None = None, out_dir: str | Path | None = None) -> SweepPlan:
    """Resolve a sweep and validate every point's config, before anything runs.

    Arguments given here win over the params file's ``sweep:`` section; ``grid`` keys are added
    to (or replace) the section's grid keys. ``overrides`` are fixed for every point.

    Raises:
        ConfigError: no grid, a bad grid value or key (with the point that has it), a baseline
            that names no point, an unknown stage.
    """
    raw, spec = read_params(params_file)
    spec = spec or SweepSection()
    base = copy.deepcopy(raw)
    fixed = {k: numbers(v) for k, v in (overrides or {}).items()}
    full_grid = {k: numbers(list(v)) for k, v in (spec.grid or {}).items()}
    for key, values in (grid or {}).items():
        full_grid.pop(key, None)  # a command-line key moves to the end: it varies fastest
        full_grid[key] = numbers(list(values))
    extra = [numbers(dict(p)) for p in (points or spec.points)]
    combos = expand(full_grid, extra)
    if not combos:
        raise ConfigError(f"{params_file}: nothing to sweep; give --grid key=v1,v2 or a sweep.grid section")
    keys = list(dict.fromkeys(k for combo in combos for k in combo))
    # validate against the strict config loader, exactly as each point's run will load it
    resolved = []
    with tempfile.TemporaryDirectory() as tmp:
        base_file = Path(tmp) / "base.yaml"
        base_file.write_text(yaml.safe_dump(base, sort_keys=False))
        cfg = load_config(base_file, fixed)
        for combo in combos:
            try:
                resolved.append(load_config(base_file, {**fixed, **combo}).to_dict())
            except ConfigError as exc:
                raise ConfigError(f"sweep point {combo}: {exc}") from exc
    for key, value in fixed.items():
        _set_dotted(base, key, value)
    # varied: the swept keys whose resolved value differs between points
    varied = [k for k in keys if len({json.dumps(_dotted(r, k), sort_keys=True) for r in resolved}) > 1]
    named = [Point(point_name(c, [k for k in varied if k in c]), c, {k: _dotted(r, k) for k in varied})
             for c, r in zip(combos, resolved)]
    names = [p.name for p in named]
    for i, p in enumerate(named):  # two points that slug alike keep apart
        if names.count(p.name) > 1:
            named[i] = dataclasses.replace(p, name=f"{p.name}-{i + 1}")
    sweep_name = name or spec.name or "-".join(short_keys(varied).values()) or "sweep"
    if sweep_name in _RESERVED or "/" in sweep_name or sweep_name.startswith("."):
        raise ConfigError(f"sweep name {sweep_name!r} would clash with a run folder's own files; "
                          "choose another (--name)")
    folder = Path(out_dir) if out_dir else resolve_run_dir(cfg) / sweep_name
    baseline_name = _resolve_baseline(baseline if baseline is not None else spec.baseline, named)
    x_key = x or spec.x or (varied[0] if varied else None)
    if x_key is not None and x_key not in keys:
        raise ConfigError(f"sweep x {x_key!r} is not a swept key; swept: {', '.join(keys)}")
    selected = runner.select_stages(list(stages) if stages is not None else spec.stages)
    return SweepPlan(name=sweep_name, folder=folder, params_file=Path(params_file), base=base,
                     fixed=fixed, grid=full_grid, points=named, varied=varied, baseline=baseline_name, x=x_key,
                     stages=selected, system=system or spec.system, experiment_cfg=cfg)


def _resolve_baseline(baseline: str | Mapping[str, Any] | None, points: list[Point]) -> str:
    if baseline is None:
        return points[0].name
    if isinstance(baseline, str):
        if baseline in {p.name for p in points}:
            return baseline
        raise ConfigError(f"sweep baseline {baseline!r} names no point; points: "
                          f"{', '.join(p.name for p in points)}")
    wanted = numbers(dict(baseline))
    matches = [p for p in points
               if all((p.values[k] if k in p.values else p.overrides.get(k)) == v for k, v in wanted.items())]
    if len(matches) != 1:
        raise ConfigError(f"sweep baseline {dict(baseline)} matches {len(matches)} points, not one")
    return matches[0].name


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    # as embedtune.config applies overrides (already validated by load_config)
    if isinstance(value, str):
        value = yaml.safe_load(value) if value.strip() else None
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _dotted(plain: Mapping[str, Any], key: str) -> Any:
    node: Any = plain
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


# --- running --------------------------------------------------------------------------------


class StageReuse:
    """The ``stage_guard`` a sweep gives :func:`run_experiment`: before a point runs a stage, reuse
    that stage's outputs from a folder where it finished under the same key; with ``lock``, hold
    a lock per (stage, key) so that parallel points run a shared stage once."""

    def __init__(self, sweep_dir: Path, lock: bool = False):
        self.sweep_dir = Path(sweep_dir)
        self.lock = lock

    def candidates(self) -> list[Path]:
        """The sweep's points, the experiment's run folder, then the experiment's other sweeps."""
        experiment = self.sweep_dir.parent
        own = sorted(p for p in self.sweep_dir.glob("*") if (p / ".stages").is_dir())
        main = [experiment] if (experiment / ".stages").is_dir() else []
        others = sorted(p for p in experiment.glob("*/*")
                        if p.parent != self.sweep_dir and (p / ".stages").is_dir())
        return own + main + others

    @contextlib.contextmanager
    def __call__(self, stage: str, key: str, folder: Path):
        with self._locked(stage, key):
            if not runner.is_fresh(folder, stage, key):
                source = next((c for c in self.candidates()
                               if c.resolve() != Path(folder).resolve() and runner.is_fresh(c, stage, key)),
                              None)
                if source is not None:
                    log.info("stage %s: reusing the outputs of %s (same key)", stage, source)
                    runner.reuse_stage(source, folder, stage, key)
            yield

    def _locked(self, stage: str, key: str):
        if not self.lock:
            return contextlib.nullcontext()
        from filelock import FileLock  # cross-platform; a dependency of torch and huggingface-hub

        locks = self.sweep_dir / ".locks"
        locks.mkdir(parents=True, exist_ok=True)
        return FileLock(str(locks / f"{stage}-{key[:16]}.lock"))


def _run_point(job: dict) -> dict:
    """Run one point (in this process or a worker); never raises for a failed point."""
    folder = Path(job["folder"])
    start = time.perf_counter()
    error = None
    try:
        run_experiment(job["params_file"], stages=job["stages"], overrides=job["overrides"],
                       run_dir=folder, progress=False, rerun_named=False,
                       stage_guard=StageReuse(Path(job["sweep_dir"]), lock=job["lock"]))
    except Exception as exc:  # noqa: BLE001 - a failed point is reported; the others go on
        error = f"{type(exc).__name__}: {exc}"
    stages = _stage_status(folder, job["stages"])
    return {"status": "ok" if error is None else "failed", "error": error,
            "failed_stage": next((s for s, v in stages.items() if v == "failed"), None) if error else None,
            "stages": stages, "seconds": round(time.perf_counter() - start, 1), "finished": now()}


def _stage_status(folder: Path, stages: list[str]) -> dict[str, str]:
    manifest = read_json(folder / "manifest.json").get("stages", {})
    return {s: manifest[s]["status"] for s in stages if s in manifest}


def _up_to_date(plan: SweepPlan, point: Point, base_file: Path) -> bool:
    folder = plan.point_folder(point)
    if not (folder / ".stages").is_dir():
        return False
    keys = runner.stage_keys(load_config(base_file, point.overrides))
    return all(runner.is_fresh(folder, s, keys[s]) for s in plan.stages)


def _limit_threads(threads: int) -> None:
    # each worker's kernels inherit this: N workers x all cores each would only thrash
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def _pool(workers: int) -> cf.Executor:
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_limit_threads,
                                  initargs=(max(1, (os.cpu_count() or 1) // workers),))


def run_sweep(params_file: str | Path, grid: Mapping[str, list] | None = None, *,
              points: Iterable[Mapping[str, Any]] = (), name: str | None = None,
              baseline: str | Mapping[str, Any] | None = None, x: str | None = None,
              stages: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None,
              system: str | None = None, out_dir: str | Path | None = None, workers: int = 1,
              report: bool = True, progress: bool = True) -> SweepResult:
    """Run every point of a sweep through the stage notebooks, then render the comparison page.

    Args:
        params_file: the experiment's YAML, with or without a ``sweep:`` section.
        grid: dotted key -> values; every combination is a point (see the module docstring).
        points: extra points beside the grid (mappings of dotted keys).
        name: the sweep's folder name under ``results/<experiment>/``.
        baseline: the point the others are tested against (its name, or a mapping of keys).
        x: the key on the plots' x axis (default: the first varied key).
        stages: the stages each point runs (default: every stage that has a notebook).
        overrides: dotted keys fixed for every point.
        system: the system compared across points (default ``finetuned``).
        out_dir: the sweep folder (default ``results/<experiment>/<name>``).
        workers: points run at once, each in its own process (1: one after another, here).
        report: render ``compare.html`` at the end.
        progress: a progress bar over points.

    Returns:
        The sweep folder and its points' outcomes (as in ``sweep.json``).

    Raises:
        ConfigError: a bad sweep or point config, before anything runs. A point that fails
            while running does not raise: it is reported in ``sweep.json`` and the result.
    """
    from tqdm.auto import tqdm

    plan = plan_sweep(params_file, grid, points=points, name=name, baseline=baseline, x=x,
                      stages=stages, overrides=overrides, system=system, out_dir=out_dir)
    folder = plan.folder.resolve()
    plan.folder = folder
    folder.mkdir(parents=True, exist_ok=True)
    base_file = folder / "base.yaml"
    atomic_write_text(base_file, f"# {plan.params_file} without its sweep section; every point of "
                                 f"sweep {plan.name} starts from it\n"
                      + yaml.safe_dump(plan.base, sort_keys=False))
    before = read_json(folder / "sweep.json")
    previous = {p["name"]: p for p in before.get("points", [])}
    summary = _summary(plan, previous)
    todo = []
    for point, entry in zip(plan.points, summary["points"]):
        if _up_to_date(plan, point, base_file):
            entry.update(status="ok", error=None, failed_stage=None,
                         stages=_stage_status(plan.point_folder(point), plan.stages))
        else:
            entry.update(status="pending", error=None, failed_stage=None)
            todo.append((point, entry))
    _write_summary(folder, summary)
    log.info("sweep %s: %d points, %d to run, in %s", plan.name, len(plan.points), len(todo), folder)

    jobs = {point.name: {"params_file": str(base_file), "overrides": point.overrides,
                         "folder": str(plan.point_folder(point)), "stages": plan.stages,
                         "sweep_dir": str(folder), "lock": workers > 1} for point, _ in todo}
    bar = tqdm(total=len(todo), desc=f"sweep {plan.name}", unit="point", disable=not progress or not todo)

    def finish(entry: dict, outcome: dict) -> None:
        entry.update(outcome)
        _write_summary(folder, summary)
        bar.update()
        if outcome["status"] != "ok":
            log.warning("sweep point %s failed: %s", entry["name"], outcome["error"])

    try:
        if workers <= 1:
            for point, entry in todo:
                bar.set_postfix_str(point.name)
                entry["status"] = "running"
                _write_summary(folder, summary)
                finish(entry, _run_point(jobs[point.name]))
        else:
            with _pool(min(workers, len(todo))) as pool:
                futures = {}
                for point, entry in todo:
                    entry["status"] = "running"
                    futures[pool.submit(_run_point, jobs[point.name])] = entry
                _write_summary(folder, summary)
                for future in cf.as_completed(futures):
                    finish(futures[future], future.result())
    finally:
        bar.close()
        for entry in summary["points"]:  # an interrupted sweep: nothing stays "running"
            if entry["status"] in ("running", "pending"):
                entry.update(status="interrupted")
        _write_summary(folder, summary)

    result = SweepResult(folder, summary["points"])
    if report:
        result.report = render_comparison(folder)
        summary["report"] = result.report
    elif before.get("report"):  # the page of an earlier run stays, and says whether it is behind
        summary["report"] = before["report"] | {"stale": bool(todo) or before["report"].get("stale", False)}
    _write_summary(folder, summary)
    return result


def _summary(plan: SweepPlan, previous: dict[str, dict]) -> dict:
    cfg = plan.experiment_cfg
    points = []
    for point in plan.points:
        before = previous.get(point.name, {})
        points.append({"name": point.name, "overrides": point.overrides, "values": point.values,
                       "folder": point.name,  # relative to the sweep folder
                       "status": before.get("status", "pending"), "error": before.get("error"),
                       "failed_stage": before.get("failed_stage"), "stages": before.get("stages", {}),
                       "seconds": before.get("seconds"), "finished": before.get("finished")})
    return {
        "sweep": plan.name,
        "experiment": cfg.experiment,
        "params_file": str(plan.params_file),
        "base_params": "base.yaml",
        "fixed": plan.fixed,
        "grid": plan.grid,
        "extra_points": len(plan.points) - len(expand(plan.grid)),
        "varied": plan.varied,
        "x": plan.x,
        "baseline": plan.baseline,
        "system": plan.system,
        "stages": plan.stages,
        "bootstrap_samples": cfg.report.bootstrap_samples,
        "confidence": cfg.report.confidence,
        "stat_test": cfg.evaluate.stat_test,
        "max_p": cfg.evaluate.max_p,
        "seed": cfg.seed,
        "git": git_state(),
        "updated": now(),
        "points": points,
    }


def _write_summary(folder: Path, summary: dict) -> None:
    summary["updated"] = now()
    atomic_write_json(folder / "sweep.json", summary)



def read_summary(sweep_dir: str | Path) -> dict:
    """``sweep.json`` of a sweep folder."""
    path = Path(sweep_dir) / "sweep.json"
    if not path.is_file():
        raise ConfigError(f"{sweep_dir}: no sweep.json; run the sweep first")
    return json.loads(path.read_text())


def render_comparison(sweep_dir: str | Path, progress: bool = False) -> dict:
    """Execute ``notebooks/sweep_compare.ipynb`` for a sweep; leave ``compare.ipynb`` and
    ``compare.html`` (code hidden) in its folder.

    Returns:
        ``{"status": "ok", "html": ...}``, or ``{"status": "failed", "error": ...}`` with the
        executed copy kept as ``compare.failed.ipynb``.
    """
    import papermill

    folder = Path(sweep_dir).resolve()
    notebook = paths.notebooks_dir() / f"{COMPARE_NOTEBOOK}.ipynb"
    out, tmp, failed = folder / "compare.ipynb", folder / ".compare.running.ipynb", folder / "compare.failed.ipynb"
    failed.unlink(missing_ok=True)
    try:
        papermill.execute_notebook(str(notebook), str(tmp), parameters={"sweep_dir": str(folder)},
                                   kernel_name=runner.kernel_name(), progress_bar=progress,
                                   cwd=str(paths.project_root()))
    except papermill.PapermillExecutionError as exc:
        os.replace(tmp, failed)
        return {"status": "failed", "error": f"{exc.ename}: {exc.evalue}", "notebook": str(failed)}
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    runner.to_html(out, folder / "compare.html", hide_code=True)
    from embedtune.report import refresh_results_index

    refresh_results_index(folder, depth=2)  # a sweep of this project's experiment: list it
    return {"status": "ok", "html": str(folder / "compare.html"), "finished": now()}


# --- comparison -----------------------------------------------------------------------------


def holm(p_values: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (same order): several points against one baseline.

    >>> holm([0.01, 0.04, 0.03])
    [0.03, 0.06, 0.06]
    """
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[i]))
        adjusted[i] = running
    return adjusted


@dataclass
class PointResult:
    name: str
    overrides: dict
    status: str
    error: str | None
    folder: Path
    values: dict  # the varied keys' values
    metrics: dict  # metrics.json ({} when the point has none)
    per_query: Any  # pandas frame: system, query_id, one column per metric (None when missing)
    train_seconds: float | None
    model_bytes: int | None


def _load_point(entry: dict, sweep_dir: Path) -> PointResult:
    import pandas as pd

    folder = Path(entry["folder"])
    if not folder.is_absolute():
        folder = sweep_dir / folder
    metrics = read_json(folder / "metrics.json")
    per_query = None
    if entry["status"] == "ok" and (folder / "per_query.csv").is_file():
        per_query = pd.read_csv(folder / "per_query.csv", dtype={"query_id": str})
    version = read_json(folder / "model" / "version.json")
    train_seconds = version.get("train_seconds", (metrics.get("cost") or {}).get("train_seconds"))
    model = folder / "model"
    from embedtune.report import folder_bytes

    model_bytes = folder_bytes(model) or None
    return PointResult(entry["name"], entry["overrides"], entry["status"], entry.get("error"), folder,
                       entry.get("values", entry["overrides"]), metrics, per_query, train_seconds,
                       model_bytes)


@dataclass
class SweepComparison:
    """Every point of a sweep side by side: quality with intervals, significance, cost."""

    summary: dict  # sweep.json
    points: list[PointResult]
    system: str
    metrics: tuple[str, ...] = COMPARED_METRICS

    @property
    def baseline(self) -> str:
        return self.summary["baseline"]

    @property
    def ok(self) -> list[PointResult]:
        return [p for p in self.points if p.status == "ok" and p.per_query is not None]

    def long(self):
        return self._long.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _long(self):
        """Per-query values of the compared system, one "system" per point (report.py's shape)."""
        import pandas as pd

        frames = []
        for p in self.ok:
            rows = p.per_query[p.per_query["system"] == self.system]
            frames.append(rows.assign(system=p.name))
        if not frames:
            return pd.DataFrame(columns=["system", "query_id", *self.metrics])
        return pd.concat(frames, ignore_index=True)

    def intervals(self):
        return self._intervals.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _intervals(self):
        """(point, metric) -> mean, low, high: percentile bootstrap over the test queries."""
        from embedtune.report import bootstrap_ci

        long = self._long
        if long.empty:
            import pandas as pd

            return pd.DataFrame(columns=["mean", "low", "high"])
        return bootstrap_ci(long, list(self.metrics), samples=self.summary["bootstrap_samples"],
                            confidence=self.summary["confidence"], seed=self.summary["seed"])

    def significance(self):
        return self._significance.copy()  # computed once: the inputs are fixed, the statistics seeded

    @functools.cached_property
    def _significance(self):
        """Each point against the baseline point, paired over the queries both answered.

        Columns: point, metric, delta (point minus baseline), p_value, p_holm (Holm-adjusted over
        the points, per metric), significant (p_holm below ``evaluate.max_p``).
        """
        import pandas as pd

        from embedtune.report import paired_p_values

        long = self._long
        rows = []
        if self.baseline in set(long["system"]):
            for metric in self.metrics:
                tests = paired_p_values(long, metric, self.baseline, self.summary["stat_test"])
                adjusted = holm([p for _, p in tests.values()])
                for (point, (delta, p)), p_holm in zip(tests.items(), adjusted):
                    rows.append({"point": point, "metric": metric, "delta": delta, "p_value": p,
                                 "p_holm": p_holm, "significant": p_holm < self.summary["max_p"]})
        columns = ["point", "metric", "delta", "p_value", "p_holm", "significant"]
        return pd.DataFrame(rows, columns=columns)

    def table(self):
        """One row per point: varied values, status, quality with intervals, deltas, cost."""
        import pandas as pd

        ci = self._intervals
        sig = self._significance.set_index(["point", "metric"])
        rows = []
        for p in self.points:
            row: dict[str, Any] = {"point": p.name}
            row.update({k: label(p.values.get(k)) for k in self.summary["varied"]})
            row["status"] = p.status + (" (baseline)" if p.name == self.baseline else "")
            for metric in self.metrics:
                have = (p.name, metric) in ci.index
                row[metric] = ci.loc[(p.name, metric), "mean"] if have else math.nan
                row[f"{metric} low"] = ci.loc[(p.name, metric), "low"] if have else math.nan
                row[f"{metric} high"] = ci.loc[(p.name, metric), "high"] if have else math.nan
            for metric in self.metrics:
                have = (p.name, metric) in sig.index
                row[f"{metric} vs baseline"] = sig.loc[(p.name, metric), "delta"] if have else math.nan
                row[f"{metric} p"] = sig.loc[(p.name, metric), "p_value"] if have else math.nan
            vs_generic = (p.metrics.get("significance") or {}).get(f"{self.system}_vs_generic", {})
            row["ndcg@10 vs generic"] = vs_generic.get("ndcg@10", {}).get("delta", math.nan)
            row["ndcg@10 vs generic p"] = vs_generic.get("ndcg@10", {}).get("p_value", math.nan)
            row["test queries"] = (p.metrics.get("dataset") or {}).get("n_queries")
            row["train seconds"] = p.train_seconds
            row["model MB"] = p.model_bytes / 1e6 if p.model_bytes else None
            row["error"] = p.error
            rows.append(row)
        return pd.DataFrame(rows).set_index("point")

    def report_table(self):
        """:meth:`table` for reading: "mean [low, high]" cells, signed deltas with p-values
        (the errors of failed points are in :meth:`failures`)."""
        import pandas as pd

        table = self.table()
        out = pd.DataFrame(index=table.index)
        for key in self.summary["varied"]:
            out[key] = table[key]
        out["status"] = table["status"]
        level = round(100 * self.summary["confidence"])
        for metric in self.metrics:
            out[f"{metric} [{level} % CI]"] = [
                "" if math.isnan(m) else f"{m:.4f} [{lo:.4f}, {hi:.4f}]"
                for m, lo, hi in zip(table[metric], table[f"{metric} low"], table[f"{metric} high"])]
        for metric in self.metrics:
            out[f"{metric} vs baseline (p)"] = [
                "" if math.isnan(d) else f"{d:+.4f} ({p:.3g})"
                for d, p in zip(table[f"{metric} vs baseline"], table[f"{metric} p"])]
        out["ndcg@10 vs generic (p)"] = [
            "" if d is None or math.isnan(d) else f"{d:+.4f} ({p:.3g})"
            for d, p in zip(table["ndcg@10 vs generic"], table["ndcg@10 vs generic p"])]
        out["train s"] = table["train seconds"].map(lambda v: "" if pd.isna(v) else f"{v:,.0f}")
        out["model MB"] = table["model MB"].map(lambda v: "" if pd.isna(v) else f"{v:,.1f}")
        return out  # errors: see failures()

    def headline(self) -> str:
        """A sentence or two: how many points, the best one, and whether it beats the baseline."""
        n_failed = sum(p.status != "ok" for p in self.points)
        text = (f"Sweep {self.summary['sweep']} of {self.summary['experiment']}: {len(self.points)} points "
                f"varying {', '.join(self.summary['varied']) or 'nothing'}"
                f"{f', {n_failed} not finished' if n_failed else ''}; system compared: {self.system}; "
                f"baseline point: {self.baseline}.")
        table = self.table()
        scored = table.dropna(subset=["ndcg@10"]) if "ndcg@10" in table else table.iloc[:0]
        if scored.empty:
            return text + " No point has results yet."
        if self.baseline not in scored.index:
            text += " The baseline point has no results, so no point is tested against it."
        best = scored["ndcg@10"].idxmax()
        row = scored.loc[best]
        text += (f" Best nDCG@10: {best} with {row['ndcg@10']:.4f} "
                 f"[{row['ndcg@10 low']:.4f}, {row['ndcg@10 high']:.4f}]")
        if best != self.baseline and not math.isnan(row["ndcg@10 vs baseline"]):
            sig = self._significance.set_index(["point", "metric"])
            p_holm = sig.loc[(best, "ndcg@10"), "p_holm"]
            verdict = "significant" if p_holm < self.summary["max_p"] else "not significant"
            text += (f", {row['ndcg@10 vs baseline']:+.4f} against the baseline "
                     f"(p = {row['ndcg@10 p']:.3g}, Holm-adjusted {p_holm:.3g}: {verdict}).")
        else:
            text += "."
        return text

    def command(self) -> str:
        """The command line that runs this sweep again (extra points come from the params file)."""
        import shlex

        s = self.summary
        parts = ["embedtune", "sweep", shlex.quote(s["params_file"]), "--name", shlex.quote(s["sweep"])]
        for key, values in s["grid"].items():
            parts += ["--grid", shlex.quote(f"{key}={','.join(_cli_value(v) for v in values)}")]
        for key, value in (s.get("fixed") or {}).items():
            parts += ["--set", shlex.quote(f"{key}={_cli_value(value)}")]
        parts += ["--stages", ",".join(s["stages"]), "--baseline", shlex.quote(s["baseline"])]
        if s.get("x"):
            parts += ["--x", s["x"]]
        return " ".join(parts)

    def failures(self):
        """The points that did not finish, with their error and the stage that failed."""
        import pandas as pd

        entries = {e["name"]: e for e in self.summary["points"]}
        rows = [{"point": p.name, "status": p.status, "failed stage": entries[p.name].get("failed_stage"),
                 "error": p.error, "folder": str(p.folder)} for p in self.points if p.status != "ok"]
        return pd.DataFrame(rows, columns=["point", "status", "failed stage", "error", "folder"])

    def plot(self, metrics: Iterable[str] | None = None):
        """The swept parameter against each metric, with the bootstrap intervals as error bars;
        one line per combination of the other varied keys, and the baseline point's generic
        model as a dashed line (no fine-tuning)."""
        import matplotlib.pyplot as plt

        metrics = list(metrics or self.metrics)
        table = self.table()
        x_key = self.summary.get("x")
        fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
        done = [p for p in self.points if p.name in table.index and not math.isnan(table.loc[p.name, metrics[0]])]
        x_of = (lambda p: p.values.get(x_key)) if x_key else (lambda p: p.name)
        values = [x_of(p) for p in self.points]  # every point, finished or not: one axis per sweep
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        order = list(dict.fromkeys(label(x_of(p)) for p in self.points))  # grid order
        others = [k for k in self.summary["varied"] if k != x_key]
        series: dict[str, list[PointResult]] = {}
        for p in done:
            name = ", ".join(f"{k}={label(p.values.get(k))}" for k in others) or self.system
            series.setdefault(name, []).append(p)
        generic = self._generic(metrics)
        for ax, metric in zip(axes[0], metrics):
            for name, members in series.items():
                at = sorted(((x_of(p) if numeric else order.index(label(x_of(p))), p.name) for p in members))
                xs = [x for x, _ in at]
                ys = [table.loc[n, metric] for _, n in at]
                err = [[y - table.loc[n, f"{metric} low"] for y, (_, n) in zip(ys, at)],
                       [table.loc[n, f"{metric} high"] - y for y, (_, n) in zip(ys, at)]]
                ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
            if generic.get(metric) is not None:
                ax.axhline(generic[metric], color="0.5", linestyle="--", label="generic (no fine-tuning)")
            if numeric:
                if min(values) > 0 and max(values) / min(values) >= 20:
                    ax.set_xscale("log")
                distinct = sorted(set(values))
                if len(distinct) <= 12:  # a grid's few values: tick exactly those
                    ax.minorticks_off()
                    ax.set_xticks(distinct, [label(v) for v in distinct])
            else:
                ax.set_xticks(range(len(order)), order, rotation=20, ha="right")
            ax.set_xlabel(x_key or "point")
            ax.set_ylabel(f"{metric} ({self.system})")
            ax.grid(alpha=0.3)
            ax.set_title(f"{metric} against {x_key or 'point'}")
        axes[0][-1].legend(fontsize=8)
        fig.tight_layout()
        return fig

    def truncated(self, metric: str = "ndcg@10"):
        """``metric`` of each point's fine-tuned and generic model at the full dimension and at
        every ``evaluate.dims`` cut (Matryoshka evaluation); empty when no point has cuts."""
        import pandas as pd

        rows = []
        for p in self.ok:
            cuts = p.metrics.get("truncated") or {}
            if not cuts:
                continue
            full = p.metrics["cost"].get("embedding_dim", "full")
            for system in ("finetuned", "generic"):
                row = {"point": p.name, "system": system,
                       str(full): (p.metrics["systems"].get(system) or {}).get(metric, math.nan)}
                row.update({dim: (block.get(system) or {}).get(metric, math.nan) for dim, block in cuts.items()})
                rows.append(row)
        if not rows:
            return pd.DataFrame()
        table = pd.DataFrame(rows).set_index(["point", "system"])
        ordered = sorted(table.columns, key=lambda c: -int(c) if str(c).isdigit() else 0)
        table = table[ordered]
        table.columns = [f"{metric} @{c}" for c in ordered]
        return table

    def over_seeds(self, metric: str = "ndcg@10"):
        """The finished points grouped by every varied key but ``seed``: what the seed moves.

        One row per group: the seeds it has, the mean, standard deviation, lowest and highest of
        the points' means, and the seed-averaged fine-tuning against the generic model: each test
        query's ``metric`` averaged over the group's seeds, paired against the generic model's on
        the same queries (``stat_test``), with ``p_holm`` Holm-adjusted over the groups. Empty
        unless ``seed`` is one of the varied keys.
        """
        import pandas as pd

        from embedtune.report import paired_test

        if "seed" not in self.summary["varied"]:
            return pd.DataFrame()
        others = [k for k in self.summary["varied"] if k != "seed"]
        groups: dict[tuple, list[PointResult]] = {}
        for p in self.ok:
            groups.setdefault(tuple(label(p.values.get(k)) for k in others), []).append(p)
        x_key = self.summary.get("x")
        if x_key in others and all(isinstance(p.values.get(x_key), (int, float)) for p in self.ok):
            position = others.index(x_key)
            groups = dict(sorted(groups.items(), key=lambda kv: float(kv[0][position])))
        rows, tests = [], []
        for key, members in groups.items():
            wide = {}
            for p in members:
                frame = p.per_query.set_index("query_id")
                for system in (self.system, "generic"):
                    wide[(system, p.name)] = frame.loc[frame["system"] == system, metric]
            wide = pd.DataFrame(wide).dropna()  # the queries every seed answered
            tuned = wide[self.system].mean(axis=1)
            generic = wide["generic"].mean(axis=1)
            means = wide[self.system].mean()  # each seed's mean over those queries
            delta, p_value = paired_test(tuned.to_numpy(), generic.to_numpy(), self.summary["stat_test"])
            tests.append(p_value)
            row = dict(zip(others, key))
            row.update({"seeds": ", ".join(label(p.values.get("seed")) for p in members),
                        "n seeds": len(members), "queries": len(wide), "mean": means.mean(),
                        "sd": means.std(ddof=1) if len(members) > 1 else math.nan,
                        "min": means.min(), "max": means.max(), "generic": generic.mean(),
                        "vs generic": delta, "p_value": p_value})
            rows.append(row)
        for row, p_holm in zip(rows, holm(tests)):
            row["p_holm"] = p_holm
            row["significant"] = p_holm < self.summary["max_p"]
        return pd.DataFrame(rows)

    def _generic(self, metrics: list[str]) -> dict:
        point = next((p for p in self.ok if p.name == self.baseline), None) or (self.ok[0] if self.ok else None)
        if point is None or self.system == "generic":
            return {}
        return {m: (point.metrics.get("systems") or {}).get("generic", {}).get(m) for m in metrics}


def load_comparison(sweep_dir: str | Path, system: str | None = None) -> SweepComparison:
    """Read a sweep folder (``sweep.json`` and every point's ``metrics.json``/``per_query.csv``)."""
    folder = Path(sweep_dir)
    summary = read_summary(folder)
    points = [_load_point(entry, folder) for entry in summary["points"]]
    return SweepComparison(summary, points, system or summary.get("system", "finetuned"))


# --- command line ---------------------------------------------------------------------------


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``embedtune sweep`` to the CLI's subparsers (``embedtune.cli``)."""
    sweep = subparsers.add_parser(
        "sweep", help="run a grid of parameter points through the stage notebooks and compare them",
        description="Run every point of a grid through the stage notebooks (shared stages run once), "
                    "then render one comparison page: results/<experiment>/<sweep>/compare.html.")
    sweep.add_argument("params", help="the experiment's params YAML (its sweep: section, if any, is the grid)")
    sweep.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                       help="a swept key and its values, e.g. --grid train.loss=mnrl,triplet or "
                            "--grid 'negatives.sources=[],[bm25],[bm25,dense]': each value is YAML, and a "
                            "comma inside brackets or quotes does not split (repeatable: every combination)")
    sweep.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="a params key fixed for every point (repeatable)")
    sweep.add_argument("--name", help="the sweep's folder under results/<experiment>/ (default: the varied keys)")
    sweep.add_argument("--baseline", help="the point the others are tested against (its folder name; "
                                          "default: the first point)")
    sweep.add_argument("--x", help="the key on the plots' x axis (default: the first varied key)")
    sweep.add_argument("--stages", help="comma-separated stages each point runs (default: every stage "
                                        "that has a notebook)")
    sweep.add_argument("--system", help="the system compared across points (default: finetuned)")
    sweep.add_argument("--out", help="the sweep folder (default: results/<experiment>/<name>)")
    sweep.add_argument("--workers", type=int, default=1, help="points run at once, one process each (default 1)")
    sweep.add_argument("--no-report", action="store_true", help="skip the comparison page")
    sweep.add_argument("--report-only", action="store_true",
                       help="only render the comparison page of a sweep that ran")
    sweep.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    return sweep


def run_cli(args: argparse.Namespace) -> int:
    """``embedtune sweep``: 0 when every point (and the page) finished, 1 when some failed,
    2 for a bad sweep (nothing ran)."""
    from embedtune.data import DataError
    from embedtune.models import ModelError

    try:
        grid = dict(parse_grid(g) for g in args.grid)
        overrides = dict(parse_override(o) for o in args.overrides)
        stages = [s.strip() for s in args.stages.split(",")] if args.stages else None
        if args.report_only:
            folder = Path(args.out) if args.out else plan_sweep(
                args.params, grid, name=args.name, overrides=overrides, stages=stages).folder
            rendered = render_comparison(folder)
            print(f"comparison: {rendered.get('html') or rendered}")
            return 0 if rendered["status"] == "ok" else 1
        result = run_sweep(args.params, grid, name=args.name, baseline=args.baseline, x=args.x,
                           stages=stages, overrides=overrides, system=args.system, out_dir=args.out,
                           workers=args.workers, report=not args.no_report,
                           progress=not args.no_progress)
    except (ConfigError, DataError, ModelError) as exc:
        print(f"embedtune: error: {exc}", file=sys.stderr)
        return 2
    for point in result.points:
        where = f" ({point['failed_stage']})" if point.get("failed_stage") else ""
        print(f"{point['status']:>11}  {point['name']}{where}"
              + (f": {point['error']}" if point.get("error") else ""))
    if result.report:
        print(f"comparison: {result.report.get('html') or result.report.get('error')}")
    print(f"sweep: {result.folder / 'sweep.json'}")
    return 1 if result.failed or result.report.get("status") == "failed" else 0
