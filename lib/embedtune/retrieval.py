"""First-stage retrieval: exact (or faiss) dense search over cached embeddings, and BM25.

Every system is a :class:`Retriever`: a name and ``search(queries, top_k) -> run``, where a run
is a plain ``{query_id: {doc_id: score}}`` dict (what ranx and BEIR take), ``top_k`` deep.
Here: :class:`BM25Retriever` and :class:`DenseRetriever`; the hybrids are
``embedtune.fusion.HybridRetriever``.

Example:
    >>> index = DenseIndex.build(model, corpus, model_cfg)          # encodes once, then cached
    >>> run = DenseRetriever("generic", model, index, model_cfg).search(queries, top_k=100)
    >>> bm25 = BM25Retriever(corpus, BM25Config()).search(queries, top_k=100)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from embedtune import paths
from embedtune.config import BM25Config, ModelConfig
from embedtune.data import corpus_fingerprint, doc_text
from embedtune.io import atomic_path, atomic_write_json
from embedtune.models import model_fingerprint
from embedtune.progress import show_progress

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]


class Retriever(Protocol):
    """A system under evaluation: BM25, a dense model over its index, or a hybrid of the two."""

    name: str

    def search(self, queries: dict[str, str], top_k: int = 100, cache: bool = True) -> Run:
        """Rank the corpus for each query (``cache``: query embeddings may come from the cache)."""
        ...


def top_k_from_scores(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the ``k`` largest scores per row, best first.

    Ties are broken by the lower column index, so results do not depend on the partition order.
    """
    k = min(k, scores.shape[1])
    # a stable sort, not argpartition: which of several tied scores makes the cut must not
    # depend on the partition's internals (ties are common with quantised or cropped texts)
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(scores, idx, axis=1)


@dataclass
class DenseIndex:
    """Normalised document embeddings for one (model, corpus) pair.

    ``backend``: ``exact`` (numpy, blocks of queries), ``faiss`` (faiss flat: exact), ``hnsw`` or
    ``ivf`` (approximate faiss indexes, built once on first search with ``ann`` parameters; see
    :func:`embedtune.shards.build_index`).
    """

    doc_ids: list[str]
    embeddings: np.ndarray  # (n_docs, dim), float32, L2-normalised
    model_fingerprint: str
    corpus_fingerprint: str
    encode_seconds: float  # time the encoding took when it was computed (also when cached)
    from_cache: bool
    backend: str = "exact"
    ann: dict = field(default_factory=dict)  # build_index parameters for hnsw / ivf
    _faiss: dict = field(default_factory=dict, repr=False, compare=False)  # (id, shape) -> index

    @classmethod
    def build(cls, model, corpus: dict[str, dict[str, str]], cfg: ModelConfig,
              backend: str = "exact", cache: bool = True, ann: dict | None = None) -> "DenseIndex":
        """Encode the corpus, or load the embeddings cached for this model and corpus.

        The cache key is the model fingerprint (weights + settings), the corpus fingerprint
        and the precision, so a changed model or corpus can never reuse stale vectors.
        """
        doc_ids = sorted(corpus)
        m_fp = model_fingerprint(model)
        c_fp = corpus_fingerprint(corpus)
        emb, info = cached_encode(model, m_fp, c_fp, [doc_text(corpus[d]) for d in doc_ids],
                                  "document", cfg, cache=cache)
        return cls(doc_ids, emb, m_fp, c_fp, info["seconds"], info["from_cache"], backend, dict(ann or {}))

    @property
    def docs_per_second(self) -> float | None:
        """Encoding throughput measured when these embeddings were computed."""
        return len(self.doc_ids) / self.encode_seconds if self.encode_seconds > 0 else None

    def search_embeddings(self, query_emb: np.ndarray, top_k: int,
                          batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Top-k document indices and cosine scores for normalised query embeddings."""
        if self.backend != "exact":
            scores, idx = self.faiss_index().search(query_emb, min(top_k, len(self.doc_ids)))
            return idx, scores
        all_idx, all_scores = [], []
        for start in range(0, len(query_emb), batch_size):
            sims = query_emb[start : start + batch_size] @ self.embeddings.T
            idx, vals = top_k_from_scores(sims, top_k)
            all_idx.append(idx)
            all_scores.append(vals)
        return np.vstack(all_idx), np.vstack(all_scores)

    def faiss_index(self):
        """The faiss index of this backend over these embeddings (built once, then kept)."""
        from embedtune.shards import build_index

        key = (id(self.embeddings), self.embeddings.shape)
        if key not in self._faiss:
            kind = "flat" if self.backend == "faiss" else self.backend
            self._faiss.clear()
            self._faiss[key] = build_index([self.embeddings], kind, **self.ann)
        return self._faiss[key]

    def recall_against_exact(self, query_emb: np.ndarray, k: int = 10) -> float:
        """How much of the exact top-k this backend's top-k holds (1.0 for exact backends)."""
        from embedtune.shards import recall_against

        exact = dataclasses.replace(self, backend="exact", _faiss={})
        return recall_against(exact.search_embeddings(query_emb, k)[0], self.search_embeddings(query_emb, k)[0], k)

    def search(self, model, queries: dict[str, str], cfg: ModelConfig, top_k: int = 100,
               cache: bool = True) -> Run:
        """Encode the queries with ``model`` (cached too) and return a run over this index."""
        qids = list(queries)
        texts = [queries[q] for q in qids]
        q_emb, _ = cached_encode(model, self.model_fingerprint, texts_fingerprint(texts), texts,
                                 "query", cfg, cache=cache)
        idx, scores = self.search_embeddings(q_emb, top_k)
        return {
            qid: {self.doc_ids[j]: float(s) for j, s in zip(idx[i], scores[i]) if j >= 0}
            for i, qid in enumerate(qids)
        }


def ann_params(cfg) -> dict:
    """:func:`embedtune.shards.build_index` parameters from a RetrievalConfig."""
    if cfg.dense_backend == "hnsw":
        return {"hnsw_m": cfg.hnsw_m, "ef_search": cfg.hnsw_ef_search}
    if cfg.dense_backend == "ivf":
        return {"nlist": cfg.ivf_nlist, "nprobe": cfg.ivf_nprobe}
    return {}


def texts_fingerprint(texts: list[str]) -> str:
    digest = hashlib.sha256()
    for t in texts:
        digest.update(t.encode())
        digest.update(b"\x1e")
    return "sha256:" + digest.hexdigest()


def encoder_of(model, cfg: ModelConfig):
    """The encoder ``model`` was set up with (``RunContext.with_encoder``), else plain torch."""
    from embedtune.backends import Encoder, encoder

    attached = getattr(model, "embedtune_encoder", None)
    if isinstance(attached, Encoder):
        return attached
    return encoder(model, cfg, backend="torch", quantize="none")


def cached_encode(model, model_fp: str, texts_fp: str, texts: list[str], kind: str,
                  cfg: ModelConfig, cache: bool = True) -> tuple[np.ndarray, dict]:
    """Encode ``texts`` as queries or documents, or load them from the embedding cache.

    The cache key joins the model fingerprint, the texts' fingerprint, the kind and the encoder
    (back-end, quantisation, precision). A JSON sidecar keeps how long the encoding took, so
    throughput stays known.

    Returns:
        The embeddings, and ``{"seconds": encode time, "from_cache": bool, "encoder": name}``.
    """
    enc = encoder_of(model, cfg)
    key = f"{kind}-{model_fp[7:23]}-{texts_fp[7:23]}-{enc.name}"
    path = paths.cache_dir() / "embeddings" / f"{key}.npy"
    meta_path = path.with_suffix(".json")
    if cache and path.is_file() and meta_path.is_file():
        emb = np.load(path)
        if emb.shape[0] == len(texts):
            meta = json.loads(meta_path.read_text())
            log.info("loaded %d cached %s embeddings from %s", len(texts), kind, path)
            return emb, {"seconds": meta["seconds"], "from_cache": True, "encoder": enc.name}
    start = time.perf_counter()
    emb = enc.encode(texts, kind, batch_size=cfg.batch_size, show_progress=show_progress() and kind == "document")
    seconds = time.perf_counter() - start
    if cache:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb)
        atomic_write_json(meta_path, {"seconds": seconds, "n": len(texts), "kind": kind,
                                      "device": str(model.device), "encoder": enc.name})
    return emb, {"seconds": seconds, "from_cache": False, "encoder": enc.name}


@dataclass
class DenseRetriever:
    """A model searching its index of the corpus (exact cosine, or faiss)."""

    name: str
    model: Any
    index: DenseIndex
    cfg: ModelConfig

    def search(self, queries: dict[str, str], top_k: int = 100, cache: bool = True) -> Run:
        return self.index.search(self.model, queries, self.cfg, top_k, cache=cache)


class BM25Retriever:
    """BM25 with ``bm25s`` over title + text (defaults: Lucene, k1=1.5, b=0.75, English
    stopwords, Snowball stemmer), as in bm25s' published BEIR benchmark."""

    name = "bm25"

    def __init__(self, corpus: dict[str, dict[str, str]], cfg: BM25Config):
        import bm25s

        self.cfg = cfg
        self.doc_ids = sorted(corpus)
        self._stemmer = None
        if cfg.stemmer:
            import Stemmer

            self._stemmer = Stemmer.Stemmer(cfg.stemmer)
        start = time.perf_counter()
        tokens = bm25s.tokenize(
            [doc_text(corpus[d]) for d in self.doc_ids],
            stopwords=cfg.stopwords or [],
            stemmer=self._stemmer,
            return_ids=True,
            show_progress=False,
        )
        self.model = bm25s.BM25(method=cfg.method, k1=cfg.k1, b=cfg.b)
        self.model.index(tokens, show_progress=False)
        self.index_seconds = time.perf_counter() - start

    def search(self, queries: dict[str, str], top_k: int = 100, cache: bool = True) -> Run:
        import bm25s

        qids = list(queries)
        tokens = bm25s.tokenize(
            [queries[q] for q in qids],
            stopwords=self.cfg.stopwords or [],
            stemmer=self._stemmer,
            return_ids=False,
            show_progress=False,
        )
        k = min(top_k, len(self.doc_ids))
        idx, scores = self.model.retrieve(tokens, k=k, sorted=True, return_as="tuple",
                                          n_threads=0, show_progress=False)
        run: Run = {}
        for i, qid in enumerate(qids):
            # bm25s pads with zero scores when fewer than k docs match; those are not hits
            run[qid] = {self.doc_ids[j]: float(s) for j, s in zip(idx[i], scores[i]) if s > 0}
        return run


def save_run(run: Run, path: Path, name: str) -> None:
    """Write a run as a TREC run file (qid Q0 docid rank score name), atomically."""
    lines = []
    for qid in sorted(run):
        ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
        lines += [f"{qid} Q0 {did} {r} {s:.6f} {name}" for r, (did, s) in enumerate(ranked, 1)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
