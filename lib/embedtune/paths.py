"""Every path embedtune uses comes from here, rooted at the project (or overridden by env vars)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def project_root() -> Path:
    return Path(os.environ.get("EMBEDTUNE_ROOT", PROJECT_ROOT))


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def params_dir() -> Path:
    return project_root() / "params"


def results_dir() -> Path:
    return Path(os.environ.get("EMBEDTUNE_RESULTS_DIR", project_root() / "results"))


def data_dir() -> Path:
    """Where downloaded datasets go (``data/``)."""
    return project_root() / "data"


def env_data_dir() -> Path | None:
    value = os.environ.get("EMBEDTUNE_DATA_DIR")
    return Path(value) if value else None


def cache_dir() -> Path:
    """Embeddings, BM25 indexes and other derived artifacts; safe to delete."""
    return Path(os.environ.get("EMBEDTUNE_CACHE_DIR", project_root() / "cache"))


def resolve(value: str | Path) -> Path:
    """A path named in params or on the command line: ``~`` expanded; a relative path is relative
    to the project root, never to the working directory (the CLI runs notebooks from the project
    root, JupyterLab from notebooks/: both resolve alike)."""
    path = Path(value).expanduser()
    return path if path.is_absolute() else project_root() / path
