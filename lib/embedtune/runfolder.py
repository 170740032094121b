"""One writer per run folder, and what a run folder records when a stage finishes.

- :class:`FolderLock`: a file lock on ``<run folder>/.lock``. A second ``embedtune run`` (or a
  notebook run by hand) on the same folder is told who holds it, and waits or stops.
- Markers (``.stages/<stage>.json``): written only when a stage finishes, with its cache key and
  the keys of the upstream outputs it read. A stage is *fresh* (skipped) when its marker's key
  is the current key and its upstream outputs are the ones it read.
- ``params.yaml`` and ``manifest.json`` change only when a stage finishes (or fails, or is
  interrupted: then the manifest says so), never before.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Any, Iterator

from embedtune.io import atomic_write_json, read_json
from embedtune.layout import RunLayout
from embedtune.pipeline import stage as declared
from embedtune.provenance import environment, git_state, now

log = logging.getLogger(__name__)

# Set by the runner for the notebook kernels it starts: the folder whose lock the runner holds
# for them (a kernel is another process, so it cannot take the lock again itself).
LOCK_ENV = "EMBEDTUNE_LOCK_HELD"


class FolderBusyError(RuntimeError):
    """Another process is writing the run folder."""


class StaleUpstreamError(RuntimeError):
    """A stage would read outputs that were not made under the current params."""


_HELD: dict[str, int] = {}  # folders this process holds the lock of -> nesting depth


def _holder_text(holder: dict) -> str:
    if not holder:
        return "another process"
    return (f"pid {holder.get('pid')} on {holder.get('host')} ({holder.get('purpose')}: "
            f"{holder.get('command')}), since {holder.get('since')}")


class FolderLock:
    """Hold ``layout.lock`` while writing a run folder.

    Args:
        layout: the run folder.
        purpose: what the holder is doing, shown to whoever finds the folder busy.
        wait: False: raise :class:`FolderBusyError` at once when the folder is busy; True: wait.

    Re-entrant within a process; a notebook kernel that the runner started (``LOCK_ENV``) does
    not lock again the folder the runner holds for it.
    """

    def __init__(self, layout: RunLayout, purpose: str, wait: bool = False):
        self.layout = layout
        self.purpose = purpose
        self.wait = wait
        self._lock = None
        self._key = str(layout.root.resolve())

    def __enter__(self) -> "FolderLock":
        if os.environ.get(LOCK_ENV) == self._key or _HELD.get(self._key):
            _HELD[self._key] = _HELD.get(self._key, 0) + 1
            return self
        from filelock import FileLock, Timeout

        self.layout.root.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.layout.lock))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = read_json(self.layout.lock_holder)
            if not self.wait:
                raise FolderBusyError(
                    f"{self.layout.root} is being written by {_holder_text(holder)}. Wait for it to "
                    "finish (embedtune run --wait), or write to another folder (--run-dir)") from None
            log.warning("%s is being written by %s; waiting", self.layout.root, _holder_text(holder))
            lock.acquire()
        self._lock = lock
        _HELD[self._key] = 1
        atomic_write_json(self.layout.lock_holder, {
            "pid": os.getpid(), "host": socket.gethostname(), "purpose": self.purpose,
            "command": " ".join(os.path.basename(a) if i == 0 else a for i, a in enumerate(sys.argv)),
            "since": now()})
        return self

    def __exit__(self, *exc) -> None:
        _HELD[self._key] -= 1
        if _HELD[self._key] == 0:
            del _HELD[self._key]
            if self._lock is not None:
                self.layout.lock_holder.unlink(missing_ok=True)
                self._lock.release()


@contextlib.contextmanager
def lock_held_for_kernels(layout: RunLayout) -> Iterator[None]:
    """Tell the notebook kernels started inside the block that this process holds the lock."""
    before = os.environ.get(LOCK_ENV)
    os.environ[LOCK_ENV] = str(layout.root.resolve())
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(LOCK_ENV, None)
        else:
            os.environ[LOCK_ENV] = before


# ---- markers ---------------------------------------------------------------------------------


def read_marker(layout: RunLayout, stage: str) -> dict:
    return read_json(layout.marker(stage))


def upstream_state(layout: RunLayout, stage: str) -> dict[str, str | None]:
    """The key under which each upstream stage's outputs in the folder were made (None: none)."""
    return {u: read_marker(layout, u).get("key") for u in declared(stage).upstream}


def is_fresh(layout: RunLayout, stage: str, key: str) -> bool:
    """True when ``stage`` finished under ``key``, reading the upstream outputs now in the folder."""
    marker = read_marker(layout, stage)
    return (marker.get("key") == key and marker.get("upstream", {}) == upstream_state(layout, stage)
            and layout.has_products(stage))


def stale_upstream(layout: RunLayout, stage: str, keys: dict[str, str]) -> list[str]:
    """Upstream stages whose outputs are in the folder but were not made under ``keys``."""
    stale = []
    for u in declared(stage).upstream:
        if layout.has_products(u) and read_marker(layout, u).get("key") != keys[u]:
            stale.append(u)
    return stale


def check_upstream(layout: RunLayout, stage: str, keys: dict[str, str]) -> None:
    """Raise when ``stage`` would read outputs made under other params (or left by a failed run)."""
    stale = stale_upstream(layout, stage, keys)
    if stale:
        names = ",".join(stale + [stage])
        raise StaleUpstreamError(
            f"stage {stage} reads the outputs of {', '.join(stale)} in {layout.root}, which were not "
            f"made with these params (other params, or an unfinished run). Run them first: "
            f"embedtune run PARAMS --stages {names}")


def start_stage(layout: RunLayout, stage: str) -> None:
    """A stage starts: until it finishes, its outputs are not fresh."""
    layout.marker(stage).unlink(missing_ok=True)


def finish_stage(layout: RunLayout, stage: str, key: str, cfg, *, seconds: float,
                 params_file: str | None, overrides: dict, by: str,
                 manifest_sections: dict[str, Any] | None = None,
                 reused_from: Path | None = None) -> None:
    """Record a finished stage: params.yaml, the manifest (its sections and timing), the marker."""
    from embedtune.config import save_config

    save_config(cfg, layout.params)
    manifest = read_json(layout.manifest)
    for section, value in (manifest_sections or {}).items():
        if isinstance(value, dict) and isinstance(manifest.get(section), dict):
            manifest[section].update(value)
        else:
            manifest[section] = value
    provenance = {"params_file": params_file, "overrides": overrides, "git": git_state()}
    record = {"status": "reused" if reused_from else "ok", "seconds": round(seconds, 2),
              "finished": now(), "by": by, **provenance}
    if reused_from:
        record["from"] = str(reused_from)
    manifest.update(experiment=cfg.experiment, **provenance, **environment())
    manifest.setdefault("stages", {})[stage] = record
    atomic_write_json(layout.manifest, manifest)
    marker = {"key": key, "upstream": upstream_state(layout, stage), "finished": record["finished"],
              "by": by}
    if reused_from:
        marker["reused_from"] = str(reused_from)
    atomic_write_json(layout.marker(stage), marker)


def end_stage(layout: RunLayout, stage: str, status: str, seconds: float) -> None:
    """Record a stage that did not finish (``failed`` or ``interrupted``); its marker is gone."""
    layout.marker(stage).unlink(missing_ok=True)
    manifest = read_json(layout.manifest)
    manifest.setdefault("stages", {})[stage] = {"status": status, "seconds": round(seconds, 2),
                                                "finished": now()}
    atomic_write_json(layout.manifest, manifest)


def stage_statuses(layout: RunLayout, stages) -> dict[str, str]:
    """Each stage's status from the manifest, ``incomplete`` where the manifest says it finished
    but its marker is gone (a run killed mid-stage)."""
    recorded = read_json(layout.manifest).get("stages", {})
    out = {}
    for stage in stages:
        if stage not in recorded:
            continue
        status = recorded[stage].get("status")
        if status in ("ok", "reused") and not layout.marker(stage).is_file():
            status = "incomplete"
        out[stage] = status
    return out


# ---- sharing a finished stage between folders (sweeps) ------------------------------------------


def reuse_stage(source: Path, target: Path, stage: str, key: str, cfg, *,
                params_file: str | None, overrides: dict) -> None:
    """Give ``target`` the outputs of a stage that finished in ``source`` under the same key.

    Outputs, executed notebook and HTML are hard-linked (copied where links cannot be made, e.g.
    across file systems); the stage's manifest sections and timing come along, and the marker
    records where the outputs came from. A later run of that stage in ``target`` first removes
    the links, so it never writes through them into ``source``.

    Raises:
        ValueError: the stage is not fresh in ``source`` under ``key``.
    """
    src, dst = RunLayout(source), RunLayout(target)
    if not is_fresh(src, stage, key):
        raise ValueError(f"{source}: stage {stage} is not fresh under key {key[:12]}...; nothing to reuse")
    start_stage(dst, stage)  # the outputs are half-copied until the marker is back
    names = [p.name for p in src.products(stage)] + [src.executed(stage).name, src.html(stage).name]
    for name in names:
        remove(dst.root / name)
    for name in names:
        if (src.root / name).exists():
            link_tree(src.root / name, dst.root / name)
    source_manifest = read_json(src.manifest)
    sections = {s: source_manifest[s] for s in declared(stage).manifest_sections if s in source_manifest}
    timing = source_manifest.get("stages", {}).get(stage, {})
    origin = Path(timing.get("from") or src.root.resolve())
    finish_stage(dst, stage, key, cfg, seconds=timing.get("seconds", 0.0), params_file=params_file,
                 overrides=overrides, by="reuse", manifest_sections=sections, reused_from=origin)


def link_tree(src: Path, dst: Path) -> None:
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


def remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)
