"""Running a sweep's points through the stage notebooks, sharing the stages they have in common."""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import logging
import multiprocessing
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from embedtune import notebook
from embedtune.config import load_config
from embedtune.io import atomic_write_json, atomic_write_text, read_json
from embedtune.keys import stage_keys
from embedtune.layout import RunLayout
from embedtune.provenance import git_state, now
from embedtune.runfolder import is_fresh, reuse_stage, stage_statuses
from embedtune.runner import run_experiment
from embedtune.sweep.grid import expand
from embedtune.sweep.plan import Point, SweepPlan, plan_sweep

log = logging.getLogger(__name__)

COMPARE_NOTEBOOK = "sweep_compare"  # notebooks/sweep_compare.py


@dataclass
class SweepResult:
    folder: Path
    points: list[dict]  # sweep.json's points
    report: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [p for p in self.points if p["status"] != "ok"]


class StageReuse:
    """The ``stage_guard`` a sweep gives :func:`run_experiment`: before a point runs a stage, reuse
    that stage's outputs from a folder where it finished under the same key; with ``lock``, hold
    a lock per (stage, key) so that parallel points run a shared stage once.

    Args:
        sweep_dir: the sweep folder.
        cfg, params_file, overrides: the point's config and how it was given (for its records).
        lock: hold a lock per (stage, key) (parallel workers).
    """

    def __init__(self, sweep_dir: Path, cfg, params_file: str, overrides: dict, lock: bool = False):
        self.sweep_dir = Path(sweep_dir)
        self.cfg, self.params_file, self.overrides = cfg, params_file, overrides
        self.lock = lock

    def candidates(self) -> list[Path]:
        """The sweep's points, the experiment's run folder, then the experiment's other sweeps."""
        experiment = self.sweep_dir.parent
        ran = lambda folder: RunLayout(folder).stages_dir.is_dir()  # noqa: E731
        own = sorted(p for p in self.sweep_dir.glob("*") if ran(p))
        main = [experiment] if ran(experiment) else []
        others = sorted(p for p in experiment.glob("*/*") if p.parent != self.sweep_dir and ran(p))
        return own + main + others

    @contextlib.contextmanager
    def __call__(self, stage: str, key: str, folder: Path):
        with self._locked(stage, key):
            if not is_fresh(RunLayout(folder), stage, key):
                source = next((c for c in self.candidates()
                               if c.resolve() != Path(folder).resolve() and is_fresh(RunLayout(c), stage, key)),
                              None)
                if source is not None:
                    log.info("stage %s: reusing the outputs of %s (same key)", stage, source)
                    reuse_stage(source, folder, stage, key, self.cfg, params_file=self.params_file,
                                overrides=self.overrides)
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
        cfg = load_config(job["params_file"], job["overrides"])
        run_experiment(job["params_file"], stages=job["stages"], overrides=job["overrides"],
                       run_dir=folder, progress=False, rerun_named=False,
                       stage_guard=StageReuse(Path(job["sweep_dir"]), cfg, job["params_file"],
                                              job["overrides"], lock=job["lock"]))
    except Exception as exc:  # noqa: BLE001 - a failed point is reported; the others go on
        error = f"{type(exc).__name__}: {exc}"
    stages = stage_statuses(RunLayout(folder), job["stages"])
    return {"status": "ok" if error is None else "failed", "error": error,
            "failed_stage": next((s for s, v in stages.items() if v != "ok" and v != "reused"), None)
            if error else None,
            "stages": stages, "seconds": round(time.perf_counter() - start, 1), "finished": now()}


def _up_to_date(plan: SweepPlan, point: Point, base_file: Path) -> bool:
    layout = RunLayout(plan.point_folder(point))
    if not layout.stages_dir.is_dir():
        return False
    keys = stage_keys(load_config(base_file, point.overrides))
    return all(is_fresh(layout, s, keys[s]) for s in plan.stages)


def _limit_threads(threads: int) -> None:
    # each worker's kernels inherit this: N workers x all cores each would only thrash
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))


def _pool(workers: int) -> cf.Executor:
    return cf.ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                  initializer=_limit_threads,
                                  initargs=(max(1, (os.cpu_count() or 1) // workers),))


class RayExecutor:
    """Points as Ray tasks (one CPU each, and one GPU where the cluster has them), on a local Ray
    instance of ``workers`` CPUs or on the cluster at ``address``. Every worker must see the project,
    the data and the sweep folder at the same paths (a shared file system), as the runner reads and
    writes them there; EMBEDTUNE_* and HF_* variables travel with the tasks."""

    def __init__(self, workers: int, address: str | None = None):
        import ray

        self._started = not ray.is_initialized()
        if self._started:
            env = {k: v for k, v in os.environ.items() if k.startswith(("EMBEDTUNE_", "HF_"))}
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     runtime_env={"env_vars": env}, **({} if address else {"num_cpus": workers}))
        gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
        self._task = ray.remote(num_cpus=1, num_gpus=gpus)(_run_point)

    def submit(self, fn, job: dict) -> cf.Future:
        assert fn is _run_point
        return self._task.remote(job).future()

    def __enter__(self) -> "RayExecutor":
        return self

    def __exit__(self, *exc) -> None:
        import ray

        if self._started:
            ray.shutdown()


def run_sweep(params_file: str | Path, grid: Mapping[str, list] | None = None, *,
              points: Iterable[Mapping[str, Any]] = (), name: str | None = None,
              baseline: str | Mapping[str, Any] | None = None, x: str | None = None,
              stages: Iterable[str] | None = None, overrides: Mapping[str, Any] | None = None,
              system: str | None = None, out_dir: str | Path | None = None, workers: int = 1,
              report: bool = True, progress: bool = True, executor: str = "local",
              address: str | None = None) -> SweepResult:
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
        executor: ``local`` (processes on this machine) or ``ray`` (Ray tasks: a local Ray
            instance of ``workers`` CPUs, or the cluster at ``address``; see :class:`RayExecutor`).
        address: the Ray cluster, e.g. ``ray://head:10001`` or ``auto``.
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
                         stages=stage_statuses(RunLayout(plan.point_folder(point)), plan.stages))
        else:
            entry.update(status="pending", error=None, failed_stage=None)
            todo.append((point, entry))
    _write_summary(folder, summary)
    log.info("sweep %s: %d points, %d to run, in %s", plan.name, len(plan.points), len(todo), folder)

    jobs = {point.name: {"params_file": str(base_file), "overrides": point.overrides,
                         "folder": str(plan.point_folder(point)), "stages": plan.stages,
                         "sweep_dir": str(folder), "lock": workers > 1 or executor == "ray"} for point, _ in todo}
    bar = tqdm(total=len(todo), desc=f"sweep {plan.name}", unit="point", disable=not progress or not todo)

    def finish(entry: dict, outcome: dict) -> None:
        entry.update(outcome)
        _write_summary(folder, summary)
        bar.update()
        if outcome["status"] != "ok":
            log.warning("sweep point %s failed: %s", entry["name"], outcome["error"])

    try:
        if workers <= 1 and executor == "local":
            for point, entry in todo:
                bar.set_postfix_str(point.name)
                entry["status"] = "running"
                _write_summary(folder, summary)
                finish(entry, _run_point(jobs[point.name]))
        else:
            with (RayExecutor(workers, address) if executor == "ray" else _pool(min(workers, len(todo)))) as pool:
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



def render_comparison(sweep_dir: str | Path, progress: bool = False) -> dict:
    """Execute ``notebooks/sweep_compare.py`` for a sweep; leave ``compare.ipynb`` and
    ``compare.html`` (code hidden) in its folder.

    Returns:
        ``{"status": "ok", "html": ...}``, or ``{"status": "failed", "error": ...}`` with the
        executed copy kept as ``compare.failed.ipynb``.
    """
    folder = Path(sweep_dir).resolve()
    out = folder / "compare.ipynb"
    try:
        notebook.execute(COMPARE_NOTEBOOK, out, {"sweep_dir": str(folder)}, required={"sweep_dir"},
                         progress=progress)
    except notebook.NotebookError as exc:
        return {"status": "failed", "error": f"{exc.ename}: {exc.evalue}", "notebook": str(exc.failed)}
    notebook.to_html(out, folder / "compare.html", hide_code=True)
    from embedtune.report import refresh_results_index

    refresh_results_index(folder, depth=2)  # a sweep of this project's experiment: list it
    return {"status": "ok", "html": str(folder / "compare.html"), "finished": now()}
