"""A corpus index on disk that knows which model version built it, and updates incrementally.

The brief's rule "re-embed corpora with new versions (cannot mix versions)" is enforced here:
an index records the model version and weight fingerprint it was built with, and the corpus
fingerprint it holds. Searching or updating it with another version raises
:class:`VersionMismatchError`, naming both. Each version gets its own index folder
(``Registry.index_dir(version, slot)``), so a rollback never serves stale vectors.

``update`` keeps a sha256 of every document's text (title + text, what the model sees) and
encodes only documents that were added or changed; removed ones are dropped. A full build goes
through the project's embedding cache (``retrieval.cached_encode``, the vectors 04_evaluate uses),
so a corpus already embedded by that model and precision is not encoded again. The result equals a
full rebuild: same ids in the same order, and embeddings equal up to float round-off. That holds
to ~1e-6 in fp32 (checked with atol 1e-5 in the tests). Under bf16 autocast an embedding also
depends on the other texts in its batch (padding length changes the kernels' rounding), so
incremental and full builds agree only to bf16 precision (cosine >= 0.999), as a bf16 rebuild
agrees with itself after a corpus reorder.

Files: ``manifest.json`` (the commit point) and ``embeddings-<token>.npy``. New embeddings go to
a new file and the manifest naming them replaces the old one atomically, so a reader sees
either the old index or the new one, never a mix.

Example:
    >>> index = CorpusIndex(registry.index_dir("v1", "scifact"))
    >>> index.update(model, corpus, version="v1", cfg=ModelConfig())
    UpdateReport(encoded=12, added=10, changed=2, removed=1, kept=5171, seconds=0.8, from_cache=False)
    >>> run = index.search(model, queries, version="v1", cfg=ModelConfig())
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from embedtune.config import ModelConfig
from embedtune.data import corpus_fingerprint, doc_text
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import model_fingerprint
from embedtune.progress import show_progress
from embedtune.retrieval import DenseIndex, Run, cached_encode, encoder_of

log = logging.getLogger(__name__)


class VersionMismatchError(ValueError):
    """An index used with a model version other than the one that built it."""


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class UpdateReport:
    """What one :meth:`CorpusIndex.update` did. ``encoded == added + changed``."""

    encoded: int
    added: int
    changed: int
    removed: int
    kept: int
    seconds: float
    from_cache: bool = False  # a full build whose embeddings the project's embedding cache held

    def as_dict(self) -> dict:
        return asdict(self)


class CorpusIndex:
    """Document embeddings of one corpus under one model version, kept in ``folder``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self._manifest: dict | None = None
        self._embeddings: np.ndarray | None = None
        if self.manifest_path.is_file():
            self._manifest = json.loads(self.manifest_path.read_text())

    # ------------------------------------------------------------------ state

    @property
    def manifest_path(self) -> Path:
        return self.folder / "manifest.json"

    @property
    def exists(self) -> bool:
        return self._manifest is not None

    @property
    def manifest(self) -> dict:
        if self._manifest is None:
            raise FileNotFoundError(f"no index at {self.folder} yet; build it with update() "
                                    "(or `embedtune reembed`)")
        return self._manifest

    @property
    def model_version(self) -> str:
        return self.manifest["model_version"]

    @property
    def model_fingerprint(self) -> str:
        return self.manifest["model_fingerprint"]

    @property
    def corpus_fingerprint(self) -> str:
        return self.manifest["corpus_fingerprint"]

    @property
    def doc_ids(self) -> list[str]:
        return self.manifest["doc_ids"]

    @property
    def embeddings(self) -> np.ndarray:
        if self._embeddings is None:
            self._embeddings = np.load(self.folder / self.manifest["embeddings_file"])
        return self._embeddings

    def embeddings_of(self, doc_ids: list[str]) -> np.ndarray:
        row = {d: i for i, d in enumerate(self.doc_ids)}
        return self.embeddings[[row[d] for d in doc_ids]]

    def check(self, version: str, fingerprint: str | None = None, action: str = "search") -> None:
        """Raise :class:`VersionMismatchError` unless this index was built by ``version``
        (and, when given, by a model with this weight fingerprint)."""
        built = self.model_version
        if version != built:
            raise VersionMismatchError(
                f"cannot {action} the index at {self.folder} with model version {version}: it was "
                f"built with version {built}. Embeddings of two versions must not be mixed: rebuild "
                f"it from scratch for {version} with `embedtune reembed PARAMS --version {version} "
                f"--full`, or search it with {built}."
            )
        if fingerprint is not None and fingerprint != self.model_fingerprint:
            raise VersionMismatchError(
                f"cannot {action} the index at {self.folder}: it was built with version {built} "
                f"(weights {self.model_fingerprint[7:19]}), but the model given as {version} has "
                f"weights {fingerprint[7:19]}; it is another model under the same name."
            )

    # ------------------------------------------------------------------ building

    def update(self, model, corpus: dict[str, dict[str, str]], *, version: str, cfg: ModelConfig,
               full: bool = False) -> UpdateReport:
        """Bring the index up to date with ``corpus``, encoding only what changed.

        Args:
            model: the SentenceTransformer of ``version``.
            corpus: doc id -> ``{"title", "text"}`` (BEIR); the whole current corpus.
            version: the registry version of ``model``; an index built by another version is
                an error (each version has its own index folder).
            cfg: encoding settings (batch size, precision). A precision other than the one the
                index was built with re-encodes every document: precisions are not mixed either.
            full: re-encode every document (a full rebuild).

        Returns:
            Counts: encoded (= added + changed), removed, kept.
        """
        start = time.perf_counter()
        m_fp = model_fingerprint(model)
        enc = encoder_of(model, cfg)
        precision = enc.name  # the encoder (back-end, quantisation, precision): never mixed in one index
        old_rows: dict[str, int] = {}
        old_hashes: dict[str, str] = {}
        if self.exists and not full:  # a full rebuild replaces whatever is there, another version's too
            self.check(version, m_fp, action="update")
            if self.manifest["precision"] == precision:
                old_rows = {d: i for i, d in enumerate(self.doc_ids)}
                old_hashes = dict(zip(self.doc_ids, self.manifest["doc_hashes"]))
            else:
                log.info("index at %s is %s, asked %s: re-encoding every document",
                         self.folder, self.manifest["precision"], precision)
        doc_ids = sorted(corpus)
        hashes = [text_hash(doc_text(corpus[d])) for d in doc_ids]
        kept = [i for i, (d, h) in enumerate(zip(doc_ids, hashes)) if old_hashes.get(d) == h]
        kept_set = set(kept)
        to_encode = [i for i in range(len(doc_ids)) if i not in kept_set]
        added = sum(1 for i in to_encode if doc_ids[i] not in old_hashes)
        removed = len(set(old_hashes) - set(corpus))
        c_fp = corpus_fingerprint(corpus)
        from_cache = False
        if to_encode and not kept:
            # a full build is what DenseIndex.build encodes too: same cache key, shared cache
            texts = [doc_text(corpus[d]) for d in doc_ids]
            emb, info = cached_encode(model, m_fp, c_fp, texts, "document", cfg)
            from_cache = info["from_cache"]
        else:
            emb = np.empty((len(doc_ids), model.get_embedding_dimension()), dtype=np.float32)
            if kept:
                emb[kept] = self.embeddings[[old_rows[doc_ids[i]] for i in kept]]
        if to_encode and kept:
            emb[to_encode] = enc.encode(
                [doc_text(corpus[doc_ids[i]]) for i in to_encode], "document", batch_size=cfg.batch_size,
                show_progress=show_progress() and len(to_encode) > 1000)
        report = UpdateReport(encoded=len(to_encode), added=added, changed=len(to_encode) - added,
                              removed=removed, kept=len(kept),
                              seconds=round(time.perf_counter() - start, 3), from_cache=from_cache)
        self._commit(version, m_fp, c_fp, precision, doc_ids, hashes, emb, report)
        log.info("index %s (%s): %s", self.folder, version, report)
        return report

    def _commit(self, version, m_fp, c_fp, precision, doc_ids, hashes, emb, report) -> None:
        from embedtune.provenance import now

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"embeddings-{uuid.uuid4().hex[:12]}.npy"
        with atomic_path(self.folder / name) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
        previous = self._manifest or {}
        manifest = {
            "model_version": version,
            "model_fingerprint": m_fp,
            "corpus_fingerprint": c_fp,
            "precision": precision,
            "dim": int(emb.shape[1]),
            "n_docs": len(doc_ids),
            "embeddings_file": name,
            "created": previous.get("created") or now(),
            "updated": now(),
            "updates": previous.get("updates", []) + [{"at": now(), **report.as_dict()}],
            "doc_ids": doc_ids,
            "doc_hashes": hashes,
        }
        atomic_write_json(self.manifest_path, manifest)  # the commit point
        self._manifest, self._embeddings = manifest, emb
        # files no manifest names: the previous embeddings, or leftovers of an interrupted update
        for stale in self.folder.glob("embeddings-*.npy"):
            if stale.name != name:
                stale.unlink(missing_ok=True)

    # ------------------------------------------------------------------ searching

    def search(self, model, queries: dict[str, str], *, version: str, cfg: ModelConfig,
               top_k: int = 100, backend: str = "exact") -> Run:
        """Search with ``model`` (registry ``version``); any other version is an error.

        Raises:
            VersionMismatchError: ``version`` (or the model's weights) differ from the index's.
        """
        self.check(version, model_fingerprint(model))
        dense = DenseIndex(self.doc_ids, self.embeddings, self.model_fingerprint,
                           self.corpus_fingerprint, 0.0, True, backend)
        return dense.search(model, queries, cfg, top_k)

    def summary(self) -> dict:
        """The manifest without its per-document lists."""
        return {k: v for k, v in self.manifest.items() if k not in ("doc_ids", "doc_hashes")}
