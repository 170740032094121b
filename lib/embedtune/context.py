"""The run folder a stage notebook works in: its config, its data, and its manifest.

Every stage notebook starts with ``ctx = open_run(params_file, overrides, run_dir)``; what one
stage leaves in ``ctx.run_dir`` the next one reads.

Example:
    >>> ctx = open_run("params/smoke.yaml")
    >>> ctx.cfg.data.dataset, ctx.run_dir.name
    ('scifact', 'smoke')
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import platform
import subprocess
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from embedtune import paths
from embedtune.config import ExperimentConfig, load_config, save_config
from embedtune.data import BeirDataset, Splits, load_experiment_data
from embedtune.io import atomic_write_json

PACKAGES = ("embedtune", "torch", "sentence-transformers", "transformers", "ranx", "bm25s",
            "faiss-cpu", "papermill", "numpy", "pandas")


@dataclass
class RunContext:
    cfg: ExperimentConfig
    run_dir: Path

    @functools.cached_property
    def data(self) -> tuple[BeirDataset, Splits]:
        """The dataset and its train/dev/test splits (loaded once per kernel)."""
        return load_experiment_data(self.cfg.data, self.cfg.seed, self.cfg.gold)

    @functools.cached_property
    def base_model(self):
        """The generic (base) model, loaded once per kernel."""
        from embedtune.models import load_model

        m = self.cfg.model
        return load_model(m.name, m.device, m.max_seq_length)

    @functools.cached_property
    def generic_index(self):
        """Base-model embeddings of the corpus (from the embedding cache when present)."""
        from embedtune.retrieval import DenseIndex

        return DenseIndex.build(self.base_model, self.data[0].corpus, self.cfg.model,
                                backend=self.cfg.retrieval.dense_backend)

    @functools.cached_property
    def bm25(self):
        from embedtune.retrieval import BM25Retriever

        return BM25Retriever(self.data[0].corpus, self.cfg.retrieval.bm25)

    def embed_queries(self, model, texts: list[str]):
        """Normalised query embeddings of ``model``, through the embedding cache."""
        from embedtune.models import model_fingerprint
        from embedtune.retrieval import cached_encode, texts_fingerprint

        emb, _ = cached_encode(model, model_fingerprint(model), texts_fingerprint(texts), texts,
                               "query", self.cfg.model)
        return emb

    @property
    def manifest_path(self) -> Path:
        return self.run_dir / "manifest.json"

    def read_manifest(self) -> dict[str, Any]:
        if self.manifest_path.is_file():
            return json.loads(self.manifest_path.read_text())
        return {}

    def update_manifest(self, **sections: Any) -> None:
        """Merge ``sections`` into ``manifest.json`` (dict sections merge one level deep)."""
        manifest = self.read_manifest()
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(manifest.get(key), dict):
                manifest[key].update(value)
            else:
                manifest[key] = value
        atomic_write_json(self.manifest_path, manifest)


def resolve_run_dir(cfg: ExperimentConfig, run_dir: str | Path | None = None) -> Path:
    if run_dir:
        return Path(run_dir)
    root = Path(cfg.results_dir) if cfg.results_dir else paths.results_dir()
    return root / cfg.experiment


def open_run(params_file: str | Path, overrides: dict | None = None,
             run_dir: str | Path | None = None) -> RunContext:
    """Load the config (strictly), make the run folder and save the resolved params in it."""
    params_path = Path(params_file)
    if not params_path.is_absolute() and not params_path.exists():
        params_path = paths.project_root() / params_path
    cfg = load_config(params_path, overrides or {})
    folder = resolve_run_dir(cfg, run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    save_config(cfg, folder / "params.yaml")
    return RunContext(cfg, folder)


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


def environment() -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    device = {"platform": platform.platform(), "python": platform.python_version(),
              "processor": platform.processor() or platform.machine()}
    try:
        import torch

        device["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        device["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return {"packages": versions, "machine": device}


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
