"""Run stage notebooks in order with papermill; leave executed copies, HTML and a manifest.

The runner holds the run folder's lock for the whole run (a second run on the folder is told who
holds it), skips a stage whose cache key (``embedtune.keys``) and upstream outputs are those of
its last finished run, and refuses to run a stage on upstream outputs made under other params.
Each stage records itself when it finishes (``embedtune.context.stage``), in the notebook's
kernel: the runner checks that the record matches the key it expected.

Example:
    >>> run_experiment("params/scifact.yaml", stages=["evaluate"], overrides={"model.batch_size": 32})
    PosixPath('/.../results/scifact')
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Callable, ContextManager, Iterable

from embedtune import notebook
from embedtune.config import (SECRET_OVERRIDES_ENV, ConfigError, has_secret, load_config,
                              redact_overrides)
from embedtune.context import resolve_params_file
from embedtune.layout import resolve_run_dir
from embedtune.keys import stage_keys
from embedtune.layout import RunLayout
from embedtune.pipeline import STAGE_NAMES, UnknownStageError, stage as declared
from embedtune.progress import NO_PROGRESS_ENV
from embedtune.runfolder import (FolderLock, check_upstream, end_stage, is_fresh, lock_held_for_kernels,
                                 read_marker, remove)

log = logging.getLogger(__name__)

NOTEBOOK_PARAMETERS = {"params_file", "overrides", "run_dir"}


class StageError(RuntimeError):
    """A stage notebook failed; the message names the notebook to open."""


def available_stages() -> list[str]:
    """Stages whose notebook exists, in execution order."""
    return [s for s in STAGE_NAMES if notebook.available(declared(s).notebook)]


def select_stages(stages: Iterable[str] | None) -> list[str]:
    have = available_stages()
    if stages is None:
        return have
    chosen = list(stages)
    for name in chosen:
        try:
            declared(name)
        except UnknownStageError as exc:
            raise ConfigError(str(exc)) from None
        if name not in have:
            raise ConfigError(f"stage {name!r} has no notebook yet "
                              f"(notebooks/{declared(name).notebook}.py); available: {', '.join(have)}")
    return [s for s in STAGE_NAMES if s in chosen]


@contextlib.contextmanager
def _environment(**values: str) -> None:
    before = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_experiment(params_file: str | Path, stages: Iterable[str] | None = None,
                   overrides: dict | None = None, run_dir: str | Path | None = None,
                   progress: bool = True, force: bool = False, rerun_named: bool = True,
                   stage_guard: Callable[[str, str, Path], ContextManager] | None = None,
                   wait: bool = False) -> Path:
    """Execute the selected stage notebooks for one experiment.

    Args:
        params_file: the experiment's YAML (relative to the working directory, else to the
            project root).
        stages: stage names (default: every stage that has a notebook), run in DESIGN order.
            Stages named here always run; otherwise a stage that is fresh (same cache key, same
            upstream outputs) is skipped.
        overrides: dotted keys applied on top of the params file, validated before anything runs.
        run_dir: where outputs go (default ``results/<experiment>``).
        progress: show papermill's per-cell progress bar in the terminal.
        force: run every selected stage, fresh or not.
        rerun_named: False: a stage named in ``stages`` is skipped too when it is fresh.
        stage_guard: called as ``stage_guard(stage, key, folder)`` around each stage's freshness
            check and execution; the context it returns may reuse a sibling's outputs or hold a
            lock. Sweeps use it (``embedtune.sweep``).
        wait: when another process writes the run folder, wait for it instead of failing.

    Returns:
        The run folder.

    Raises:
        ConfigError: bad params or overrides, before any notebook starts.
        FolderBusyError: another process writes the run folder (and ``wait`` is False).
        StaleUpstreamError: a stage would read upstream outputs made under other params.
        StageError: a notebook failed; its executed copy is kept as ``*.failed.ipynb``.
    """
    overrides = dict(overrides or {})
    params_path = resolve_params_file(params_file)
    cfg = load_config(params_path, overrides)  # fails here, not inside a kernel
    selected = select_stages(stages)
    stage_keys(cfg)  # reads every input named in params: a missing one fails here, nothing written
    layout = RunLayout(resolve_run_dir(cfg, run_dir).resolve())
    explicit = set(stages or ()) if rerun_named else set()
    # the kernels get the overrides redacted; the real ones (a key in a URL) only through the
    # environment, so no secret lands in an executed notebook
    secrets = {SECRET_OVERRIDES_ENV: json.dumps(overrides)} if has_secret(overrides) else {}
    params = {"params_file": str(params_path), "overrides": redact_overrides(overrides),
              "run_dir": str(layout.root)}
    with FolderLock(layout, purpose="embedtune run", wait=wait), lock_held_for_kernels(layout), \
            _environment(**{NO_PROGRESS_ENV: "1"}, **secrets):  # progress: papermill's bar only
        for name in selected:
            keys = stage_keys(cfg)  # now: an earlier stage may have changed what this one reads
            guard = stage_guard(name, keys[name], layout.root) if stage_guard else contextlib.nullcontext()
            with guard:
                if not force and name not in explicit and is_fresh(layout, name, keys[name]):
                    reused = read_marker(layout, name).get("reused_from")
                    log.info("stage %s: up to date (same params, inputs, code and upstream outputs)%s; "
                             "skipped", name, f", outputs from {reused}" if reused else "")
                    continue
                check_upstream(layout, name, keys)
                if read_marker(layout, name).get("reused_from"):  # hard links: never write through
                    for path in layout.products(name):
                        remove(path)
                _run_stage(layout, name, keys[name], params, progress)
    return layout.root


def _run_stage(layout: RunLayout, name: str, key: str, params: dict, progress: bool) -> None:
    stem = declared(name).notebook
    log.info("stage %s: %s -> %s", name, stem, layout.executed(name))
    start = time.perf_counter()
    try:
        notebook.execute(stem, layout.executed(name), params, required=NOTEBOOK_PARAMETERS,
                         progress=progress)
    except notebook.NotebookError as exc:
        end_stage(layout, name, "failed", time.perf_counter() - start)
        raise StageError(f"stage {name} failed: {exc}") from exc
    except KeyboardInterrupt:
        end_stage(layout, name, "interrupted", time.perf_counter() - start)
        raise
    marker = read_marker(layout, name)
    if marker.get("key") != key:
        end_stage(layout, name, "failed", time.perf_counter() - start)
        raise StageError(
            f"stage {name}: notebooks/{stem} finished without recording the stage under the expected "
            f"key (recorded {str(marker.get('key'))[:12]}, expected {key[:12]}); does it still call "
            f"{declared(name).module}.run(ctx)?")
    if name == "report":  # the page to share: code hidden, a stable name
        notebook.to_html(layout.executed(name), layout.report_html, hide_code=True)
    else:
        notebook.to_html(layout.executed(name), layout.html(name))
