"""Model registry: every fine-tuned model is a numbered version, one of them is in production.

A registry is a folder (git-ignored; ``monitor.registry`` in params, else ``$EMBEDTUNE_REGISTRY``,
else ``<project>/models``)::

    models/
      production.json        the pointer: current version, its lineage, and every promote/rollback
      monitor.jsonl          one line per evaluation of a version on a gold set (embedtune.monitor)
      versions/v1/
        manifest.json        base model + fingerprint, training-data fingerprint, params, metrics,
                             git commit, time, sha256 of every model file
        model/               a copy of the saved sentence-transformers model
        index/<slot>/        corpus indexes built with this version (embedtune.index_store)

The pointer is a small JSON file replaced with ``os.replace``: a promote interrupted at any
point leaves the old pointer in place, readable and valid. ``rollback`` returns to the version
that was in production before the current one. Writers take a file lock, so two promotes at
once cannot lose one another's history.

Example:
    >>> reg = Registry(registry_dir())
    >>> v = reg.register("results/scifact/model")["version"]     # "v1"; again: the same "v1"
    >>> reg.promote(v); reg.production()
    'v1'
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from embedtune import paths
from embedtune.io import atomic_path, atomic_write_json, sha256_file

log = logging.getLogger(__name__)

POINTER = "production.json"


class RegistryError(ValueError):
    """A version that does not exist, is damaged, or an action the pointer's history forbids."""


def registry_dir(configured: str | None = None) -> Path:
    """The registry folder: ``configured`` (relative to the project root), else
    ``$EMBEDTUNE_REGISTRY``, else ``<project>/models``."""
    if configured:
        return paths.resolve(configured)
    env = os.environ.get("EMBEDTUNE_REGISTRY")
    return Path(env) if env else paths.project_root() / "models"


def _version_number(version: str) -> int:
    return int(version[1:]) if version[:1] == "v" and version[1:].isdigit() else -1


def _file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@dataclass
class Registry:
    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    # ------------------------------------------------------------------ layout

    @property
    def versions_dir(self) -> Path:
        return self.root / "versions"

    @property
    def pointer_path(self) -> Path:
        return self.root / POINTER

    @property
    def log_path(self) -> Path:
        """The monitoring log of this registry (see :class:`embedtune.monitor.MonitorLog`)."""
        return self.root / "monitor.jsonl"

    def model_path(self, version: str) -> Path:
        return self._folder(version) / "model"

    def index_dir(self, version: str, slot: str) -> Path:
        """Where the corpus index ``slot`` built with ``version`` lives (one folder per version,
        so embeddings of two versions can never share a file)."""
        return self._folder(version) / "index" / slot

    def _folder(self, version: str) -> Path:
        if not isinstance(version, str) or not re.fullmatch(r"v[1-9][0-9]{0,8}", version):
            raise RegistryError(f"{version!r} is not a version id: versions are v1, v2, ... "
                                f"(`embedtune models list` shows those in {self.root})")
        folder = self.versions_dir / version
        if not (folder / "manifest.json").is_file():
            known = ", ".join(self.version_ids()) or "none yet"
            raise RegistryError(f"no version {version!r} in the registry at {self.root} (versions: {known})")
        return folder

    def _lock(self):
        from filelock import FileLock

        self.root.mkdir(parents=True, exist_ok=True)
        return FileLock(str(self.root / ".lock"), timeout=60)

    # ------------------------------------------------------------------ versions

    def version_ids(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        found = [p.name for p in self.versions_dir.iterdir() if (p / "manifest.json").is_file()]
        return sorted(found, key=_version_number)

    def manifest(self, version: str) -> dict[str, Any]:
        return json.loads((self._folder(version) / "manifest.json").read_text())

    def manifests(self) -> list[dict[str, Any]]:
        return [self.manifest(v) for v in self.version_ids()]

    def find(self, fingerprint: str) -> str | None:
        """The version whose model has this fingerprint, if registered."""
        for manifest in self.manifests():
            if manifest["fingerprint"] == fingerprint:
                return manifest["version"]
        return None

    def register(self, model_dir: str | Path, *, params: dict | None = None,
                 metrics: dict | None = None, parent: str | None = None,
                 note: str | None = None, **info: Any) -> dict[str, Any]:
        """Copy a saved model into the registry as the next version; return its manifest.

        The model's ``version.json`` (written by 03_train) supplies the fingerprints, the base
        model, the training data fingerprint and the training facts; ``params.yaml`` beside it
        supplies the resolved params. Keyword ``info`` (e.g. ``base_model_fingerprint=...``)
        fills or overrides those. A model already registered (same weight fingerprint) is not
        copied again: its existing manifest is returned.

        Raises:
            RegistryError: ``model_dir`` holds no sentence-transformers model.
        """
        import yaml

        from embedtune.provenance import git_state, now

        model_dir = Path(model_dir)
        if not (model_dir / "modules.json").is_file():
            raise RegistryError(f"{model_dir} holds no saved sentence-transformers model (no modules.json)")
        trained = json.loads((model_dir / "version.json").read_text()) \
            if (model_dir / "version.json").is_file() else {}
        trained.update({k: v for k, v in info.items() if v is not None})
        fingerprint = trained.get("fingerprint")
        if fingerprint is None:  # a model saved by hand: fingerprint its weights
            from embedtune.models import load_model, model_fingerprint

            fingerprint = model_fingerprint(load_model(str(model_dir), device="cpu"))
        if params is None and (model_dir / "params.yaml").is_file():
            params = yaml.safe_load((model_dir / "params.yaml").read_text())
        with self._lock():
            existing = self.find(fingerprint)
            if existing is not None:
                log.info("%s is already registered as %s", model_dir, existing)
                return self.manifest(existing)
            numbers = [_version_number(v) for v in self.version_ids()]
            version = f"v{max(numbers, default=0) + 1}"
            manifest = {
                "version": version,
                "label": trained.get("version"),  # 03_train's name, e.g. scifact-710be898
                "created": now(),
                "fingerprint": fingerprint,
                "base_model": trained.get("base_model"),
                "base_model_fingerprint": trained.get("base_model_fingerprint"),
                "training_data_fingerprint": trained.get("training_data_fingerprint"),
                "parent": parent,
                "training": {k: trained[k] for k in ("loss", "examples", "steps", "train_seconds",
                                                     "precision", "device") if k in trained},
                "params": params,
                "metrics": {"dev": {"before": trained.get("dev_before"), "best": trained.get("dev_best")}
                            if "dev_best" in trained else None, **(metrics or {})},
                "git": trained.get("git") or git_state(),
                "source": str(model_dir.resolve()),
                "note": note,
            }
            self.versions_dir.mkdir(parents=True, exist_ok=True)
            # the version folder appears complete or not at all
            with atomic_path(self.versions_dir / version) as tmp:
                shutil.copytree(model_dir, tmp / "model")
                manifest["files"] = _file_hashes(tmp / "model")
                atomic_write_json(tmp / "manifest.json", manifest)
            log.info("registered %s as %s in %s", model_dir, version, self.root)
            return manifest

    def record_metrics(self, version: str, gold_set: str, metrics: dict[str, Any]) -> None:
        """Keep a version's latest metrics on a gold set in its manifest (the log keeps them all)."""
        with self._lock():
            folder = self._folder(version)
            manifest = json.loads((folder / "manifest.json").read_text())
            manifest.setdefault("metrics", {}).setdefault("gold", {})[gold_set] = metrics
            atomic_write_json(folder / "manifest.json", manifest)

    def verify(self, version: str) -> None:
        """Check that a version's model files are those registered (sha256 of each file).

        Raises:
            RegistryError: naming the missing or changed files.
        """
        manifest = self.manifest(version)
        actual = _file_hashes(self.model_path(version))
        expected = manifest.get("files", {})
        if not expected:
            raise RegistryError(f"version {version} lists no files, so it cannot be verified; it was "
                                "not registered by embedtune: register the model again")
        missing = sorted(set(expected) - set(actual))
        changed = sorted(f for f in expected if f in actual and actual[f] != expected[f])
        if missing or changed:
            raise RegistryError(f"version {version} is damaged: missing {missing or 'none'}, "
                                f"changed {changed or 'none'}; register the model again")

    def load(self, version: str, device: str = "auto"):
        """The SentenceTransformer of ``version`` (tagged with ``embedtune_version``)."""
        from embedtune.models import load_model

        model = load_model(str(self.model_path(version)), device)
        model.embedtune_version = version
        return model

    # ------------------------------------------------------------------ production pointer

    def pointer(self) -> dict[str, Any]:
        """The production pointer: ``{"production", "lineage", "events", "updated"}``."""
        if not self.pointer_path.is_file():
            return {"production": None, "lineage": [], "events": [], "updated": None}
        return json.loads(self.pointer_path.read_text())

    def production(self) -> str | None:
        return self.pointer()["production"]

    def promote(self, version: str) -> dict[str, Any]:
        """Put ``version`` in production (after checking its files); returns the new pointer.

        Promoting the version already in production changes nothing.
        """
        with self._lock():
            self.verify(version)
            pointer = self.pointer()
            if pointer["production"] == version:
                return pointer
            return self._write_pointer(pointer, version, "promote", lineage=pointer["lineage"] + [version])

    def rollback(self) -> dict[str, Any]:
        """Return production to the version that preceded the current one; returns the new pointer.

        Raises:
            RegistryError: nothing is in production, or the current version is the first.
        """
        with self._lock():
            pointer = self.pointer()
            lineage = pointer["lineage"]
            if len(lineage) < 2:
                current = pointer["production"]
                raise RegistryError(f"nothing to roll back to: {current} is the first version ever "
                                    "promoted" if current else "nothing to roll back: no version "
                                    "has been promoted yet")
            target = lineage[-2]
            self.verify(target)
            return self._write_pointer(pointer, target, "rollback", lineage=lineage[:-1])

    def _write_pointer(self, pointer: dict, version: str, action: str, lineage: list[str]) -> dict:
        from embedtune.provenance import now

        event = {"action": action, "from": pointer["production"], "to": version, "at": now()}
        new = {"production": version, "lineage": lineage, "events": pointer["events"] + [event],
               "updated": event["at"]}
        atomic_write_json(self.pointer_path, new)  # the old file stays until os.replace succeeds
        log.info("%s: production %s -> %s", action, event["from"], version)
        return new

    # ------------------------------------------------------------------ display

    def table(self, metric: str = "recall@10"):
        """One row per version: when, from what, its latest gold-set metric, and which is live."""
        import pandas as pd

        production = self.production()
        rows = []
        for m in self.manifests():
            gold = (m.get("metrics") or {}).get("gold") or {}
            latest = {name: values.get("metrics", {}).get(metric) for name, values in gold.items()}
            rows.append({
                "version": m["version"],
                "production": "*" if m["version"] == production else "",
                "label": m.get("label"),
                "created": m["created"],
                "parent": m.get("parent"),
                "base_model": m.get("base_model"),
                "fingerprint": m["fingerprint"][7:19],
                "training_data": (m.get("training_data_fingerprint") or "")[7:19] or None,
                "git": ((m.get("git") or {}).get("commit") or "")[:10] or None,
                **{f"{metric} ({name})": value for name, value in latest.items()},
            })
        return pd.DataFrame(rows).set_index("version") if rows else pd.DataFrame()
