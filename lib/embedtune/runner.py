"""Run stage notebooks in order with papermill; leave executed copies, HTML and a manifest.

Example:
    >>> run_experiment("params/scifact.yaml", stages=["evaluate"], overrides={"model.batch_size": 32})
    PosixPath('results/scifact')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Iterable

from embedtune import paths
from embedtune.config import ConfigError, load_config, save_config
from embedtune.context import environment, git_state, now, resolve_run_dir
from embedtune.io import atomic_path, atomic_write_json, sha256_file

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
BASE_SECTIONS = ("experiment", "seed", "data", "model", "retrieval")
STAGE_SECTIONS = {
    "decide": ("decide", "pairs"),
    "pairs": ("pairs",),
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


def stage_keys(cfg) -> dict[str, str]:
    """Cache key of every stage (see STAGE_SECTIONS and STAGE_INPUTS)."""
    from embedtune import __version__

    plain = cfg.to_dict()
    base = json.dumps({k: plain.get(k) for k in BASE_SECTIONS}, sort_keys=True)
    common = f"{__version__}|{_dataset_fingerprint(cfg.data.dataset)}|{base}"
    keys: dict[str, str] = {}
    for stage in STAGES:  # DESIGN order: every input stage comes first
        digest = hashlib.sha256(common.encode())
        digest.update(json.dumps({k: plain.get(k) for k in STAGE_SECTIONS[stage]}, sort_keys=True).encode())
        notebook = paths.notebooks_dir() / f"{STAGES[stage]}.ipynb"
        if notebook.is_file():
            digest.update(sha256_file(notebook).encode())
        for upstream in STAGE_INPUTS[stage]:
            digest.update(keys[upstream].encode())
        keys[stage] = digest.hexdigest()
    return keys


def _marker(folder: Path, stage: str) -> Path:
    return folder / ".stages" / f"{stage}.json"


def is_fresh(folder: Path, stage: str, key: str) -> bool:
    """True when the stage finished before with the same key and its notebook is there."""
    marker = _marker(folder, stage)
    if not marker.is_file() or not (folder / f"{STAGES[stage]}.ipynb").is_file():
        return False
    return json.loads(marker.read_text()).get("key") == key


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
    body, _ = exporter.from_notebook_node(nbformat.read(notebook, as_version=4))
    with atomic_path(target) as tmp:
        tmp.write_text(body)


def run_experiment(params_file: str | Path, stages: Iterable[str] | None = None,
                   overrides: dict | None = None, run_dir: str | Path | None = None,
                   progress: bool = True, force: bool = False) -> Path:
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
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    manifest.update(experiment=cfg.experiment, params_file=str(params_file), git=git_state(),
                    started=now(), **environment())
    manifest.setdefault("stages", {})
    atomic_write_json(manifest_path, manifest)

    # Library progress bars stay out of executed notebooks and reports; papermill shows progress.
    os.environ["EMBEDTUNE_NO_PROGRESS"] = "1"
    kernel = kernel_name()
    keys = stage_keys(cfg)
    explicit = set(stages or ())
    for stage in selected:
        notebook = paths.notebooks_dir() / f"{STAGES[stage]}.ipynb"
        if not force and stage not in explicit and is_fresh(folder, stage, keys[stage]):
            log.info("stage %s: up to date (same params, data and notebook); skipped", stage)
            _record_stage(manifest_path, stage, 0.0, "cached")
            continue
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
        to_html(out, out.with_suffix(".html"), hide_code=(stage == "report"))
        _record_stage(manifest_path, stage, time.perf_counter() - start, "ok")
    return folder


def _record_stage(manifest_path: Path, stage: str, seconds: float, status: str) -> None:
    """Note a stage's outcome. A skipped ("cached") stage keeps the timing of the run that made
    its outputs, so manifest.json always says what the outputs cost."""
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    stages = manifest.setdefault("stages", {})
    if status == "cached" and stage in stages:
        stages[stage]["status"] = "cached"
    else:
        stages[stage] = {"seconds": round(seconds, 2), "status": status, "finished": now()}
    atomic_write_json(manifest_path, manifest)
