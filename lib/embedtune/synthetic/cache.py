"""Raw generations cached on disk, so a re-run or an interrupted run costs nothing for what is done."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from dataclasses import asdict
from pathlib import Path

from embedtune import paths
from embedtune.config import SamplingConfig

log = logging.getLogger(__name__)


class GenerationCache:
    """Raw generations on disk, one JSON line per (document, model, prompt, sampling) key.

    Lines are appended and flushed as they come, so an interrupted run keeps what it made; a
    torn last line is ignored when read. One file per generator identity under
    ``<cache>/synthetic/``. Holds no secret: the identity never includes an API key.
    """

    def __init__(self, identity: str, folder: Path | None = None, enabled: bool = True):
        self.enabled = enabled
        folder = folder or paths.cache_dir() / "synthetic"
        self.path = folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsonl"
        self._entries: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        if enabled and self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry["outputs"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by an interruption

    @staticmethod
    def key(doc_fingerprint: str, identity: str, prompt: str, sampling: SamplingConfig, n: int) -> str:
        blob = json.dumps([doc_fingerprint, identity, prompt, asdict(sampling), n], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: str, doc_id: str, outputs: list[str]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = outputs
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "doc_id": doc_id, "outputs": outputs},
                                    ensure_ascii=False) + "\n")


def text_fingerprint(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()
