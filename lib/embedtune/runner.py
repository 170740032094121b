"""Run stage notebooks in order with papermill; leave executed copies, HTML and a manifest.

Example:
    >>> run_experiment("params/scifact.yaml", stages=["evaluate"], overrides={"model.batch_size": 32})
    PosixPath('results/scifact')
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Callable, ContextManager, Iterable

from embedtune import paths
from embedtune.config import ConfigError, load_config, save_config
from embedtune.context import environment, git_state, now, resolve_run_dir
from embedtune.io import atomic_path, atomic_write_json, read_json, sha256_file

log = logging.getLogger(__name__)

# Stage name -> notebook stem, in execution order (DESIGN.md).
STAGES = {
    "decide": "00_decide",
    "pairs": "01_pairs",
    "negatives": "02_negatives",
    "train": "03_train",
    "evaluate": "04_evaluate",
    "report": "05_report",
    "monitor": "06_monitor",
}
NOTEBOOK_PARAMETERS = {"params_file", "overrides", "run_dir"}
# Each stage's cache key hashes the sections every stage reads, its own sections, its notebook,
# the dataset's files, the embedtune version, and the keys of the stages whose outputs it reads.
BASE_SECTIONS = ("experiment", "seed", "data", "gold", "model", "retrieval")
STAGE_SECTIONS = {
    "decide": ("decide", "pairs", "clicks"),
    "pairs": ("pairs", "synthetic", "crop", "clicks"),
    "negatives": ("negatives",),
    "train": ("train",),
    "evaluate": ("evaluate", "ood"),
    "report": ("report",),
    "monitor": ("monitor",),
}
STAGE_INPUTS = {
    "decide": (),
    "pairs": (),
    "negatives": ("pairs",),
    "train": ("negatives",),
    "evaluate": ("train",),
    "report": ("decide", "evaluate"),
    "monitor": ("evaluate",),
}
# What each stage leaves in the run folder (besides its executed notebook, HTML and marker), and
# the manifest.json sections it writes: what a point of a sweep copies when it reuses a stage.
STAGE_OUTPUTS = {
    "decide": ("decision.json",),
    "pairs": ("pairs",),
    "negatives": ("negatives",),
    "train": ("model",),
    "evaluate": ("metrics.json", "per_query.csv", "runs"),
    "report": ("report.html", "report.json", "figures"),
    "monitor": ("monitor.json", "scenario.json"),
}
STAGE_MANIFEST_SECTIONS = {
    "train": ("train",),
    "evaluate": ("dataset", "model", "environment", "evaluate"),
    "monitor": ("monitor",),
}
KERNEL_NAME = "embedtune"


class StageError(RuntimeError):
    """A stage notebook failed; the message names the notebook to open."""


def available_stages() -> list[str]:
    """Stages whose notebook exists, in execution order."""
    return [s for s, stem in STAGES.items() if (paths.notebooks_dir() / f"{stem}.ipynb").is_file()]


def select_stages(stages: Iterable[str] | None) -> list[str]:
    have = available_stages()
    if stages is None:
        return have
    chosen = list(stages)
    for stage in chosen:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if stage not in have:
            raise ConfigError(f"stage {stage!r} has no notebook yet "
                              f"(notebooks/{STAGES[stage]}.ipynb); available: {', '.join(have)}")
    return [s for s in STAGES if s in chosen]


def _dataset_fingerprint(name: str) -> str:
    from embedtune.data import DataError, resolve_dataset

    try:
        folder = resolve_dataset(name, download=False)
    except DataError:
        return name  # not local yet: the stage will download it, and the key says so
    files = [folder / "corpus.jsonl", folder / "queries.jsonl", *sorted((folder / "qrels").glob("*.tsv"))]
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.name.encode())
        digest.update(sha256_file(f).encode())
    return digest.hexdigest()


def _unused_sections(cfg) -> set[str]:
    """Training-data sections that ``pairs.sources`` does not use: they stay out of the keys, so
    changing, say, ``synthetic.max_docs`` never re-runs a gold-only experiment's stages."""
    sources = set(cfg.pairs.sources)
    used = {"synthetic": "synthetic" in sources, "crop": bool(sources & {"ict", "crop"}),
            "clicks": "clicks" in sources or bool(cfg.clicks.path) or cfg.clicks.simulate}
    return {section for section, is_used in used.items() if not is_used}


def stage_keys(cfg) -> dict[str, str]:
    """Cache key of every stage (see STAGE_SECTIONS and STAGE_INPUTS)."""
    from embedtune import __version__

    plain = cfg.to_dict()
    base = json.dumps({k: plain.get(k) for k in BASE_SECTIONS}, sort_keys=True)
    common = f"{__version__}|{_dataset_fingerprint(cfg.data.dataset)}|{base}"
    keys: dict[str, str] = {}
    unused = _unused_sections(cfg)
    for stage in STAGES:  # DESIGN order: every input stage comes first
        digest = hashlib.sha256(common.encode())
        sections = [k for k in STAGE_SECTIONS[stage] if k not in unused]
        digest.update(json.dumps({k: plain.get(k) for k in sections}, sort_keys=True).encode())
        notebook = paths.notebooks_dir() / f"{STAGES[stage]}.ipynb"
        if notebook.is_file():
            digest.update(sha256_file(notebook).encode())
        for upstream in STAGE_INPUTS[stage]:
            digest.update(keys[upstream].encode())
        keys[stage] = digest.hexdigest()
    return keys


def _marker(folder: Path, stage: str) -> Path:
    return folder / ".stages" / f"{stage}.json"


def _read_marker(folder: Path, stage: str) -> dict:
    return read_json(_marker(folder, stage))


def is_fresh(folder: Path, stage: str, key: str) -> bool:
    """True when the stage finished before with the same key and its notebook is there."""
    return (folder / f"{STAGES[stage]}.ipynb").is_file() and _read_marker(folder, stage).get("key") == key


def reuse_stage(source: Path, target: Path, stage: str, key: str) -> None:
    """Give ``target`` the outputs of a stage that finished in ``source`` with the same cache key.

    Outputs, executed notebook and HTML are hard-linked (copied where links cannot be made, e.g.
    across file systems); the stage's manifest sections and timing come along, and the marker
    records where the outputs came from. A later run of that stage in ``target`` first removes
    the links, so it never writes through them into ``source``.

    Raises:
        ValueError: the stage is not fresh in ``source`` under ``key``.
    """
    source, target = Path(source), Path(target)
    if not is_fresh(source, stage, key):
        raise ValueError(f"{source}: stage {stage} is not fresh under key {key[:12]}...; nothing to reuse")
    stem = STAGES[stage]
    _marker(target, stage).unlink(missing_ok=True)  # the outputs are half-copied until the marker is back
    names = [*STAGE_OUTPUTS.get(stage, ()), f"{stem}.ipynb", f"{stem}.html"]
    for name in names:
        _remove(target / name)
    for name in names:
        if (source / name).exists():
            _link_tree(source / name, target / name)
    source_manifest = read_json(source / "manifest.json")
    manifest_path = target / "manifest.json"
    manifest = read_json(manifest_path)
    for section in STAGE_MANIFEST_SECTIONS.get(stage, ()):
        if section in source_manifest:
            manifest[section] = source_manifest[section]
    timing = dict(source_manifest.get("stages", {}).get(stage, {}))
    manifest.setdefault("stages", {})[stage] = {
        "seconds": timing.get("seconds", 0.0), "status": "reused", "finished": timing.get("finished"),
        "from": str(timing.get("from") or source)}
    atomic_write_json(manifest_path, manifest)
    atomic_write_json(_marker(target, stage), {"key": key, "finished": now(),
                                               "reused_from": str(source.resolve())})


def _link_tree(src: Path, dst: Path) -> None:
    def link(s: str, d: str) -> None:
        try:
            os.link(s, d)
        except OSError:
            shutil.copy2(s, d)

    if src.is_dir():
        shutil.copytree(src, dst, copy_function=link)
    else:
        dst.parent.mkdir(parents=True, exist_ok=True)
        link(str(src), str(dst))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)



def kernel_name() -> str:
    """The kernel registered by ``make`` for this venv, else the running interpreter's own."""
    from jupyter_client.kernelspec import KernelSpecManager

    return KERNEL_NAME if KERNEL_NAME in KernelSpecManager().find_kernel_specs() else "python3"


def check_notebook_parameters(notebook: Path) -> None:
    """Papermill only warns on unknown parameters; we fail instead."""
    import papermill

    declared = set(papermill.inspect_notebook(str(notebook)))
    missing = NOTEBOOK_PARAMETERS - declared
    if missing:
        raise ConfigError(f"{notebook}: its parameters cell lacks {', '.join(sorted(missing))}")


def to_html(notebook: Path, target: Path, hide_code: bool = False) -> None:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(exclude_input=hide_code, exclude_input_prompt=hide_code,
                            exclude_output_prompt=hide_code)
    node = nbformat.read(notebook, as_version=4)
    node.metadata.pop("widgets", None)  # stale widget state (progress bars) is not content
    title = f"{notebook.parent.name}: {'report' if hide_code else notebook.stem}"
    body, _ = exporter.from_notebook_node(node, resources={"metadata": {"name": title}})
    with atomic_path(target) as tmp:
        tmp.write_text(body)


def run_experiment(params_file: str | Path, stages: Iterable[str] | None = None,
                   overrides: dict | None = None, run_dir: str | Path | None = None,
                   progress: bool = True, force: bool = False, rerun_named: bool = True,
                   stage_guard: Callable[[str, str, Path], ContextManager] | None = None) -> Path:
    """Execute the selected stage notebooks for one experiment.

    Args:
        params_file: the experiment's YAML.
        stages: stage names (default: every stage that has a notebook), run in DESIGN order.
            Stages named here always run; otherwise a stage whose cache key (config sections,
            data, notebook) matches its last successful run is skipped.
        overrides: dotted keys applied on top of the params file, validated before anything runs.
        run_dir: where outputs go (default ``results/<experiment>``).
        progress: show papermill's per-cell progress bar in the terminal.
        force: run every selected stage, fresh or not.
        rerun_named: False: a stage named in ``stages`` is skipped too when it is fresh.
        stage_guard: called as ``stage_guard(stage, key, folder)`` around each stage's freshness
            check and execution; the context it returns may reuse a sibling's outputs (see
            :func:`reuse_stage`) or hold a lock. Sweeps use it (``embedtune.sweep``).

    Returns:
        The run folder.

    Raises:
        ConfigError: bad params or overrides, before any notebook starts.
        StageError: a notebook failed; its executed copy is kept as ``*.failed.ipynb``.
    """
    import papermill

    cfg = load_config(params_file, overrides or {})  # fails here, not inside a kernel
    selected = select_stages(stages)
    folder = resolve_run_dir(cfg, run_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    resolved = folder / "params.yaml"
    save_config(cfg, resolved)

    manifest_path = folder / "manifest.json"
    manifest = read_json(manifest_path)
    manifest.update(experiment=cfg.experiment, params_file=str(params_file), overrides=overrides or {},
                    git=git_state(),
                    started=now(), **environment())
    manifest.setdefault("stages", {})
    atomic_write_json(manifest_path, manifest)

    # Library progress bars stay out of executed notebooks and reports; papermill shows progress.
    os.environ["EMBEDTUNE_NO_PROGRESS"] = "1"
    kernel = kernel_name()
    keys = stage_keys(cfg)
    explicit = set(stages or ()) if rerun_named else set()
    for stage in selected:
        guard = stage_guard(stage, keys[stage], folder) if stage_guard else contextlib.nullcontext()
        with guard:
            notebook = paths.notebooks_dir() / f"{STAGES[stage]}.ipynb"
            marker = _read_marker(folder, stage)
            if not force and stage not in explicit and is_fresh(folder, stage, keys[stage]):
                reused = marker.get("reused_from")
                log.info("stage %s: up to date (same params, data and notebook)%s; skipped", stage,
                         f", outputs from {reused}" if reused else "")
                _record_stage(manifest_path, stage, 0.0, "reused" if reused else "cached")
                continue
            if marker.get("reused_from"):  # hard links into another run: never write through them
                for name in STAGE_OUTPUTS.get(stage, ()):
                    _remove(folder / name)
            _marker(folder, stage).unlink(missing_ok=True)
            check_notebook_parameters(notebook)
            out = folder / notebook.name
            log.info("stage %s: %s -> %s", stage, notebook.name, out)
            start = time.perf_counter()
            tmp = folder / f".{notebook.stem}.running.ipynb"
            failed = folder / f"{notebook.stem}.failed.ipynb"
            failed.unlink(missing_ok=True)
            try:
                papermill.execute_notebook(
                    str(notebook), str(tmp),
                    parameters={"params_file": str(resolved), "overrides": {}, "run_dir": str(folder)},
                    kernel_name=kernel, progress_bar=progress, cwd=str(paths.project_root()),
                )
            except papermill.PapermillExecutionError as exc:
                os.replace(tmp, failed)
                _record_stage(manifest_path, stage, time.perf_counter() - start, "failed")
                raise StageError(f"stage {stage} failed in {notebook.name} (cell {exc.exec_count}): "
                                 f"{exc.ename}: {exc.evalue}. Executed copy: {failed}") from exc
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, out)
            atomic_write_json(_marker(folder, stage), {"key": keys[stage], "finished": now()})
            if stage == "report":  # the page to share: code hidden, a stable name
                to_html(out, folder / "report.html", hide_code=True)
            else:
                to_html(out, out.with_suffix(".html"))
            _record_stage(manifest_path, stage, time.perf_counter() - start, "ok")
    return folder


def _record_stage(manifest_path: Path, stage: str, seconds: float, status: str) -> None:
    """Note a stage's outcome. A skipped ("cached" or "reused") stage keeps the timing of the run
    that made its outputs, so manifest.json always says what the outputs cost."""
    manifest = read_json(manifest_path)
    stages = manifest.setdefault("stages", {})
    if status in ("cached", "reused") and stage in stages:
        stages[stage]["status"] = status
    else:
        stages[stage] = {"seconds": round(seconds, 2), "status": status, "finished": now()}
    atomic_write_json(manifest_path, manifest)
