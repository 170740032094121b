"""Where a result came from: the time, the git commit, package versions and the machine."""

from __future__ import annotations

import datetime as dt
import platform
import subprocess
from importlib import metadata
from typing import Any

from embedtune import paths

PACKAGES = ("embedtune", "torch", "sentence-transformers", "transformers", "ranx", "bm25s",
            "faiss-cpu", "papermill", "numpy", "pandas")


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def git_state() -> dict[str, Any]:
    root = paths.project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=root, capture_output=True, text=True,
                                    check=True).stdout.strip())
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}


def package_versions(names=PACKAGES) -> dict[str, str | None]:
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def environment() -> dict[str, Any]:
    device = {"platform": platform.platform(), "python": platform.python_version(),
              "processor": platform.processor() or platform.machine()}
    try:
        import torch

        device["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        device["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return {"packages": package_versions(), "machine": device}
