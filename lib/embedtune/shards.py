"""Corpora too big for memory: streamed encoding to float16 shards on disk, resumable, searched
with faiss (exact, HNSW or IVF).

A shard folder holds ``manifest.json`` (the model's fingerprint, the encoding settings, the
chunk size, the shards done), and per chunk ``shard-00000.npy`` (float16, L2-normalised rows)
with ``shard-00000.ids`` (its document ids, one per line). Each shard appears complete or not
at all (written atomically), so an interrupted encoding resumes at the first missing shard when
run again with the same model and settings; other settings start a new folder's worth of shards
only after an explicit ``overwrite``.

Memory: the documents are read from ``corpus.jsonl`` one chunk at a time and only the current
chunk's texts and embeddings are held; search maps the shards from disk. 1M x 384 float16 is
0.77 GB on disk.

Example:
    >>> shards = encode_shards(model, iter_corpus("data/big/corpus.jsonl"), Path("cache/big"),
    ...                        chunk_size=20_000, total=count_lines("data/big/corpus.jsonl"))
    >>> index = build_index(shards, "hnsw")
    >>> scores, rows = index.search(query_embeddings, 10)
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from embedtune.io import atomic_path, atomic_write_json, read_json

log = logging.getLogger(__name__)


class ShardError(ValueError):
    """A shard folder made with another model or settings, or damaged."""


def count_lines(path: str | Path) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def iter_corpus(path: str | Path) -> Iterator[tuple[str, str]]:
    """(doc id, title + text) of a BEIR ``corpus.jsonl``, one line at a time (never all in memory)."""
    from embedtune.data import DataError, doc_text

    with open(path, encoding="utf-8-sig") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                yield str(row["_id"]), doc_text({"title": row.get("title") or "", "text": row["text"]})
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{lineno}: not a corpus line ({exc})") from None


def _chunks(docs: Iterable[tuple[str, str]], size: int) -> Iterator[list[tuple[str, str]]]:
    chunk = []
    for doc in docs:
        chunk.append(doc)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


@dataclass
class ShardSet:
    """A folder of encoded shards."""

    folder: Path

    @property
    def manifest(self) -> dict:
        return read_json(self.folder / "manifest.json")

    def shard_paths(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npy"))

    def ids(self) -> list[str]:
        out: list[str] = []
        for path in self.shard_paths():
            out += path.with_suffix(".ids").read_text(encoding="utf-8").split("\n")
        return out

    def __len__(self) -> int:
        return sum(np.load(p, mmap_mode="r").shape[0] for p in self.shard_paths())

    def arrays(self) -> Iterator[np.ndarray]:
        """Each shard's embeddings, memory-mapped (float16)."""
        for path in self.shard_paths():
            yield np.load(path, mmap_mode="r")

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def nbytes(self) -> int:
        return sum(p.stat().st_size for p in self.shard_paths())


def encode_shards(model, docs: Iterable[tuple[str, str]], folder: str | Path, *, chunk_size: int = 10_000,
                  batch_size: int = 64, precision: str = "auto", total: int | None = None,
                  progress: bool = True, overwrite: bool = False, only: Iterable[int] | None = None) -> ShardSet:
    """Encode ``docs`` ((id, text) pairs, streamed) into float16 shards of ``chunk_size`` rows.

    Shards already in ``folder`` for the same model and settings are kept and skipped (their
    documents are read past, not encoded), so a killed run continues where it stopped.
    ``only``: encode these shard numbers and read past the others (one worker's share, see
    :func:`encode_shards_ray`); the manifest is then left to whoever started the workers.

    Raises:
        ShardError: ``folder`` holds shards of another model or settings (and not ``overwrite``).
    """
    from tqdm.auto import tqdm

    from embedtune.backends import Encoder, encoder
    from embedtune.config import ModelConfig

    folder = Path(folder)
    enc = model.embedtune_encoder if isinstance(getattr(model, "embedtune_encoder", None), Encoder) else \
        encoder(model, ModelConfig(precision=precision), backend="torch", quantize="none")
    settings = shard_settings(model, chunk_size, precision)
    before = read_json(folder / "manifest.json")
    if before and {k: before.get(k) for k in settings} != settings:
        if not overwrite:
            raise ShardError(f"{folder} holds shards of another model or settings "
                             f"({ {k: before.get(k) for k in settings if before.get(k) != settings[k]} }); "
                             "use another folder, or overwrite=True")
        for path in folder.glob("shard-*"):
            path.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    share = set(only) if only is not None else None
    if share is None:
        atomic_write_json(folder / "manifest.json", {**settings, "complete": False})
    bar = tqdm(total=total, unit="doc", desc="encoding shards", disable=not progress, smoothing=0.05)
    encoded = skipped = 0
    start = time.perf_counter()
    for number, chunk in enumerate(_chunks(docs, chunk_size)):
        if share is not None and number not in share:
            continue
        emb_path = folder / f"shard-{number:05d}.npy"
        ids_path = emb_path.with_suffix(".ids")
        if emb_path.is_file() and ids_path.is_file():
            ids = ids_path.read_text(encoding="utf-8").split("\n")
            if ids == [d for d, _ in chunk]:  # the same documents: done before
                skipped += len(chunk)
                bar.update(len(chunk))
                continue
        emb = enc.encode([t for _, t in chunk], "document", batch_size=batch_size)
        with atomic_path(ids_path) as tmp:  # ids first: a shard counts only once its .npy is there
            tmp.write_text("\n".join(d for d, _ in chunk), encoding="utf-8")
        with atomic_path(emb_path) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, emb.astype(np.float16))
        encoded += len(chunk)
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start
    if share is not None:
        return ShardSet(folder)
    atomic_write_json(folder / "manifest.json", {
        **settings, "complete": True, "docs": encoded + skipped, "encoded_now": encoded,
        "resumed_past": skipped, "seconds": round(seconds, 1),
        "docs_per_second": round(encoded / seconds, 2) if encoded and seconds > 0 else None})
    return ShardSet(folder)


def shard_settings(model, chunk_size: int, precision: str = "auto") -> dict:
    """What a shard folder's manifest records about the model and the encoding."""
    from embedtune.backends import Encoder, encoder
    from embedtune.config import ModelConfig
    from embedtune.models import model_fingerprint

    enc = model.embedtune_encoder if isinstance(getattr(model, "embedtune_encoder", None), Encoder) else \
        encoder(model, ModelConfig(precision=precision), backend="torch", quantize="none")
    return {"model_fingerprint": model_fingerprint(model), "chunk_size": chunk_size, "encoder": enc.name,
            "max_seq_length": model.max_seq_length, "dtype": "float16", "dim": model.get_embedding_dimension()}


def encode_shards_ray(model_name: str, corpus: str | Path, folder: str | Path, *, workers: int = 2,
                      chunk_size: int = 10_000, batch_size: int = 64, precision: str = "auto",
                      address: str | None = None, gpus_per_worker: float = 0.0) -> ShardSet:
    """:func:`encode_shards` across Ray workers: each worker loads the model and encodes every
    ``workers``-th shard, into the same folder (a shared file system on a cluster). Resumable as
    the single-process encoding is; the manifest is written once every worker is done.

    Args:
        model_name: a model id or path every worker can load.
        corpus: the BEIR ``corpus.jsonl`` (read by each worker, streamed).
        address: a Ray cluster (``ray://host:10001`` or ``auto``); None starts a local instance.
    """
    import ray

    from embedtune.models import load_model

    folder = Path(folder)
    total = count_lines(corpus)
    chunks = (total + chunk_size - 1) // chunk_size
    settings = shard_settings(load_model(model_name, "cpu"), chunk_size, precision)
    before = read_json(folder / "manifest.json")
    if before and {k: before.get(k) for k in settings} != settings:
        raise ShardError(f"{folder} holds shards of another model or settings; use another folder")
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_json(folder / "manifest.json", {**settings, "complete": False})
    env = {k: v for k, v in os.environ.items() if k.startswith(("EMBEDTUNE_", "HF_"))}
    started = not ray.is_initialized()
    if started:
        ray.init(address=address, runtime_env={"env_vars": env}, include_dashboard=False,
                 **({} if address else {"num_cpus": workers}), log_to_driver=False)

    @ray.remote(num_cpus=1, num_gpus=gpus_per_worker)
    def work(share: list[int]) -> int:
        model = load_model(model_name, "cuda" if gpus_per_worker else "cpu")
        encode_shards(model, iter_corpus(corpus), folder, chunk_size=chunk_size, batch_size=batch_size,
                      precision=precision, progress=False, only=share)
        return len(share)

    start = time.perf_counter()
    try:
        ray.get([work.remote(list(range(w, chunks, workers))) for w in range(workers)])
    finally:
        if started:
            ray.shutdown()
    seconds = time.perf_counter() - start
    shards = ShardSet(folder)
    if len(shards) != total:
        raise ShardError(f"{folder}: {len(shards)} of {total} documents encoded")
    atomic_write_json(folder / "manifest.json", {**settings, "complete": True, "docs": total,
                                                 "workers": workers, "seconds": round(seconds, 1),
                                                 "docs_per_second": round(total / seconds, 2)})
    return shards


# ---- search ----------------------------------------------------------------------------------


@dataclass
class FaissIndex:
    """A faiss index over a shard set's rows (inner product = cosine on normalised vectors)."""

    index: object
    kind: str
    params: dict
    build_seconds: float

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) of the ``k`` best rows per query, best first."""
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)

    @property
    def nbytes(self) -> int:
        """The index's size when serialised (what it holds in memory, near enough)."""
        import faiss

        return int(faiss.serialize_index(self.index).nbytes)


def build_index(shards: ShardSet | Iterable[np.ndarray], kind: str = "hnsw", *, dim: int | None = None,
                hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 128,
                nlist: int | None = None, nprobe: int = 32, train_size: int = 100_000,
                seed: int = 0) -> FaissIndex:
    """A faiss index over every shard, added one shard at a time (never all in fp32 at once).

    Kinds: ``flat`` (exact), ``hnsw`` (HNSW graph over fp32 vectors: fast, ~1.8 GB per 1M x 384),
    ``hnsw-sq8`` (the same graph over 8-bit scalar-quantised vectors: ~0.6 GB per 1M x 384), ``ivf``
    (inverted lists over 8-bit vectors: ~0.4 GB per 1M x 384; ``nlist`` defaults to 4 sqrt(N)).
    Quantisers are trained on a seeded sample.
    """
    import faiss

    arrays = list(shards.arrays()) if isinstance(shards, ShardSet) else list(shards)
    dim = dim or (shards.dim if isinstance(shards, ShardSet) else arrays[0].shape[1])
    n = sum(a.shape[0] for a in arrays)
    start = time.perf_counter()
    params: dict = {}
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        params = {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef_search}
    elif kind == "hnsw-sq8":
        index = faiss.IndexHNSWSQ(dim, faiss.ScalarQuantizer.QT_8bit, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = ef_construction
        index.hnsw.efSearch = ef_search
        take = min(n, train_size)
        index.train(_sample_rows(arrays, take, seed))
        params = {"M": hnsw_m, "efConstruction": ef_construction, "efSearch": ef_search, "storage": "SQ8",
                  "trained_on": int(take)}
    elif kind == "ivf":
        nlist = nlist or max(1, int(4 * n ** 0.5))
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit,
                                              faiss.METRIC_INNER_PRODUCT)
        take = min(n, max(train_size, 40 * nlist))
        index.train(_sample_rows(arrays, take, seed))
        index.nprobe = nprobe
        params = {"nlist": nlist, "nprobe": nprobe, "quantizer": "SQ8", "trained_on": int(take)}
    else:
        raise ValueError(f"unknown index kind {kind!r}; flat, hnsw, hnsw-sq8 or ivf")
    for array in arrays:
        for begin in range(0, array.shape[0], 50_000):
            index.add(np.ascontiguousarray(array[begin:begin + 50_000], dtype=np.float32))
    return FaissIndex(index, kind, params, time.perf_counter() - start)


def _sample_rows(arrays: list, take: int, seed: int) -> np.ndarray:
    """A seeded sample of ``take`` rows across the arrays, in fp32 (to train a quantiser)."""
    n = sum(a.shape[0] for a in arrays)
    rows = np.sort(np.random.default_rng(seed).choice(n, size=take, replace=False))
    offsets = np.cumsum([0] + [a.shape[0] for a in arrays])
    return np.concatenate([np.asarray(arrays[i][rows[(rows >= offsets[i]) & (rows < offsets[i + 1])] - offsets[i]],
                                      dtype=np.float32) for i in range(len(arrays))])


def recall_against(exact_rows: np.ndarray, approx_rows: np.ndarray, k: int = 10) -> float:
    """Mean share of the exact top-k that the approximate top-k found (recall@k vs exact)."""
    hits = [len(set(e[:k]) & set(a[:k])) / k for e, a in zip(exact_rows, approx_rows)]
    return float(np.mean(hits)) if hits else float("nan")
