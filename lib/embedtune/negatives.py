"""Hard negatives: BM25 and dense candidates, minus anything that may be a false negative.

Sources:
- ``dense``: sentence-transformers' ``mine_hard_negatives`` with the base model (its
  ``cache_folder`` keeps the embeddings; one folder per model fingerprint, since its own key
  ignores which local model encoded them).
- ``bm25``: ``bm25s`` top-k.

False-negative guard, for both: a rank window (``range_min`` .. ``range_max``), a relative margin
below the positives' scores under the base model (NV-Retriever's TopK-PercPos: keep a candidate
only if its score < positive - margin x |positive|, where, as in sentence-transformers' miner,
"positive" is the lowest-scoring judged positive of the query), and the exclusion of every
judged positive of the query in any split, not only the paired one. On datasets with many loosely
related positives per query (nfcorpus) the lowest positive scores low, and the margin leaves few
hard negatives: the statistics show how many. A manual curation TSV (query-id, doc-id,
include|exclude) is honoured last.

Example:
    >>> rows, stats = mine(ds, pairs, judged, cfg.negatives, model, index, bm25)
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune import paths
from embedtune.config import NegativesConfig
from embedtune.data import BeirDataset, doc_text
from embedtune.models import autocast
from embedtune.pairs import Pair

log = logging.getLogger(__name__)


class CurationError(ValueError):
    """A manual curation file that cannot be read; the message names file and line."""


def judged_positives(ds: BeirDataset, min_score: int = 1) -> dict[str, set[str]]:
    """Every document judged relevant for each query, over all splits of the dataset."""
    judged: dict[str, set[str]] = defaultdict(set)
    for qrels in ds.qrels.values():
        for qid, docs in qrels.items():
            judged[qid].update(d for d, s in docs.items() if s >= min_score)
    return judged


def read_curation(path: str | Path, ds: BeirDataset) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Read ``query-id<TAB>doc-id<TAB>include|exclude`` lines (header optional).

    Returns:
        ``(include, exclude)``: query id -> doc ids.
    """
    include: dict[str, set[str]] = defaultdict(set)
    exclude: dict[str, set[str]] = defaultdict(set)
    from embedtune.io import read_text

    path = paths.resolve(path)
    if not path.is_file():
        raise CurationError(f"manual curation file not found: {path}")
    for lineno, row in enumerate(csv.reader(read_text(path, CurationError).splitlines(), delimiter="\t"), 1):
        if not row or not "".join(row).strip():
            continue
        if lineno == 1 and row[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(row) != 3:
            raise CurationError(f"{path}:{lineno}: expected query-id, doc-id, include|exclude")
        qid, did, action = (c.strip() for c in row)
        if qid not in ds.queries:
            raise CurationError(f"{path}:{lineno}: unknown query id {qid!r}")
        if did not in ds.corpus:
            raise CurationError(f"{path}:{lineno}: unknown doc id {did!r}")
        if action not in ("include", "exclude"):
            raise CurationError(f"{path}:{lineno}: action must be include or exclude, got {action!r}")
        (include if action == "include" else exclude)[qid].add(did)
    return include, exclude


@dataclass
class MiningStats:
    """What each filter removed, per source, and the teacher scores of what was kept."""

    candidates: dict[str, int] = field(default_factory=dict)
    removed_judged: dict[str, int] = field(default_factory=dict)
    removed_margin: dict[str, int] = field(default_factory=dict)
    removed_manual: int = 0
    added_manual: int = 0
    kept: dict[str, int] = field(default_factory=dict)
    pairs_without_negative: int = 0
    positive_scores: list[float] = field(default_factory=list)
    negative_scores: list[float] = field(default_factory=list)
    st_report: str = ""  # what mine_hard_negatives printed

    def summary(self) -> dict:
        pos, neg = np.asarray(self.positive_scores), np.asarray(self.negative_scores)
        describe = lambda x: ({"mean": float(x.mean()), "median": float(np.median(x)),  # noqa: E731
                               "min": float(x.min()), "max": float(x.max())} if x.size else {})
        return {
            "candidates": self.candidates, "removed_judged_positive": self.removed_judged,
            "removed_margin": self.removed_margin, "removed_manual": self.removed_manual,
            "added_manual": self.added_manual, "kept": self.kept,
            "pairs_without_negative": self.pairs_without_negative,
            "positive_score": describe(pos), "negative_score": describe(neg),
        }


def seed_miner_cache(cache_folder: Path, model, corpus_texts: list[str], corpus_emb: np.ndarray,
                     queries: list[str], query_emb: np.ndarray) -> int:
    """Put embeddings the project already has (the generic index, cached query embeddings) where
    ``mine_hard_negatives`` looks for its own (its ``cache_folder``), so it encodes nothing.

    The file names follow sentence-transformers' scheme (sha256 of the model's base name, the
    prompts and the texts); should that scheme change, the miner finds no file and encodes as
    before: slower, never wrong. Returns how many files were written.
    """
    from embedtune.io import atomic_path

    name = model.model_card_data.base_model or ""
    written = 0
    for kind, texts, emb in (("query", queries, query_emb), ("corpus", corpus_texts, corpus_emb)):
        digest = hashlib.sha256(repr((name, None, None, texts)).encode()).hexdigest()
        path = Path(cache_folder) / f"{kind}_embeddings_{digest}.npy"
        if not path.is_file():
            with atomic_path(path) as tmp:
                with open(tmp, "wb") as fh:
                    np.save(fh, np.ascontiguousarray(emb, dtype=np.float32))
            written += 1
    return written


def _dense_candidates(pairs: list[Pair], judged: dict[str, set[str]], ds: BeirDataset, model,
                      cfg: NegativesConfig, cache_folder: Path, precision: str,
                      stats: MiningStats, teacher: np.ndarray | None = None,
                      doc_index: dict[str, int] | None = None,
                      query_emb: dict[str, np.ndarray] | None = None) -> dict[tuple[str, str], list[tuple[str, float]]]:
    """mine_hard_negatives over the whole corpus; returns (query id, doc id) -> [(neg id, score)].

    With the base model's corpus and query embeddings (``teacher``, ``query_emb``) the miner's
    cache is seeded first, so the corpus is not encoded a second time."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    # Every judged positive of each query goes in as a row, so the miner masks all of them.
    rows = {"anchor": [], "positive": []}
    anchor_ids: dict[str, str] = {}
    own: dict[str, set[str]] = defaultdict(set)  # a pair's own document (synthetic queries have no qrels)
    for pair in pairs:
        anchor_ids.setdefault(pair["anchor"], pair["query_id"])
        own[pair["query_id"]].add(pair["doc_id"])
    for anchor, qid in anchor_ids.items():
        for did in sorted(judged.get(qid, set()) | own[qid]):
            rows["anchor"].append(anchor)
            rows["positive"].append(doc_text(ds.corpus[did]))
    text_to_id = {doc_text(doc): did for did, doc in ds.corpus.items()}
    first_id = {}
    for did in sorted(ds.corpus):
        first_id.setdefault(doc_text(ds.corpus[did]), did)
    corpus_texts = list(first_id)  # what the miner's corpus becomes: the unique texts, in this order
    if teacher is not None and doc_index is not None and query_emb is not None:
        seed_miner_cache(cache_folder, model, corpus_texts,
                         teacher[[doc_index[first_id[t]] for t in corpus_texts]],
                         list(anchor_ids), np.stack([query_emb[q] for q in anchor_ids.values()]))
    from embedtune.progress import show_progress

    printed = io.StringIO()
    # the miner's own progress bars go to stderr; keep them out of executed notebooks
    quiet = contextlib.nullcontext() if show_progress() else contextlib.redirect_stderr(io.StringIO())
    with contextlib.redirect_stdout(printed), quiet, autocast(str(model.device), precision):
        mined = mine_hard_negatives(
            Dataset.from_dict(rows), model, corpus=corpus_texts,
            range_min=cfg.range_min, range_max=cfg.range_max,
            relative_margin=cfg.relative_margin, num_negatives=cfg.range_max,
            sampling_strategy="top", output_format="triplet", output_scores=True,
            batch_size=64, use_faiss=False, verbose=True, cache_folder=str(cache_folder),
        )
    stats.st_report = printed.getvalue()
    out: dict[tuple[str, str], list[tuple[str, float]]] = defaultdict(list)
    for row in mined:
        qid = anchor_ids[row["anchor"]]
        pos_id, neg_id = text_to_id[row["positive"]], text_to_id[row["negative"]]
        out[(qid, pos_id)].append((neg_id, float(row["scores"][2] if len(row["scores"]) > 2 else row["scores"][-1])))
    return out


def mine(ds: BeirDataset, pairs: list[Pair], judged: dict[str, set[str]], cfg: NegativesConfig,
         model, teacher: "np.ndarray | None", doc_index: dict[str, int] | None,
         query_emb: dict[str, np.ndarray] | None, bm25=None, precision: str = "auto",
         cache_root: Path | None = None) -> tuple[list[dict], MiningStats]:
    """Hard negatives for each (query, positive) pair.

    Args:
        ds: the dataset (corpus and queries).
        pairs: training pairs.
        judged: every judged positive per query (all splits); never returned as a negative.
        cfg: sources, per-pair count, rank window, margin, manual curation file.
        model: the base model (dense mining).
        teacher: base-model document embeddings (rows of ``doc_index``), to score BM25 candidates.
        doc_index: doc id -> row of ``teacher``.
        query_emb: query id -> base-model query embedding.
        bm25: a :class:`~embedtune.retrieval.BM25Retriever` when ``bm25`` is a source.

    Returns:
        Rows ``{query_id, anchor, doc_id, positive, negative_ids, negatives}`` (one per pair,
        possibly with no negatives), and the statistics.
    """
    stats = MiningStats()
    include, exclude = read_curation(cfg.manual, ds) if cfg.manual else ({}, {})
    per_source: dict[str, dict[tuple[str, str], list[tuple[str, float]]]] = {}

    if "dense" in cfg.sources:
        from embedtune.models import model_fingerprint

        folder = (cache_root or paths.cache_dir()) / "mining" / model_fingerprint(model)[7:23]
        found = _dense_candidates(pairs, judged, ds, model, cfg, folder, precision, stats,
                                  teacher, doc_index, query_emb)
        per_source["dense"] = found
        skipped = re.search(r"Skipped ([\d,]+) potential negatives .* relative_margin", stats.st_report)
        stats.removed_margin["dense"] = int(skipped.group(1).replace(",", "")) if skipped else 0
        stats.candidates["dense"] = sum(len(v) for v in found.values()) + stats.removed_margin["dense"]
        stats.removed_judged["dense"] = None  # masked inside the miner; checked again below

    if "bm25" in cfg.sources:
        if bm25 is None or teacher is None or doc_index is None or query_emb is None:
            raise ValueError("bm25 negatives need a BM25 retriever and base-model embeddings")
        per_source["bm25"] = {}
        qids = sorted({p["query_id"] for p in pairs})
        depth = cfg.range_max + max((len(judged.get(q, ())) for q in qids), default=0)
        texts = {p["query_id"]: p["anchor"] for p in pairs}  # also queries the dataset lacks
        ranked = bm25.search({q: texts[q] for q in qids}, top_k=depth)
        cand = judged_out = margin_out = 0
        lowest_judged: dict[str, float] = {}  # per query: the same for each of its pairs
        for pair in pairs:
            qid, pos = pair["query_id"], pair["doc_id"]
            positives = judged.get(qid, set()) | {pos}
            docs = [d for d in ranked.get(qid, {}) if d not in positives]
            judged_out += len(ranked.get(qid, {})) - len(docs)
            window = docs[cfg.range_min:cfg.range_max]
            cand += len(window)
            q = query_emb[qid]
            if qid not in lowest_judged:
                lowest_judged[qid] = min((float(teacher[doc_index[d]] @ q) for d in judged.get(qid, ())
                                          if d in doc_index), default=float("inf"))
            pos_score = min(lowest_judged[qid], float(teacher[doc_index[pos]] @ q) if pos in doc_index
                            else float("inf"))
            kept = []
            for d in window:
                score = float(teacher[doc_index[d]] @ q)
                if cfg.relative_margin is not None and score > pos_score - cfg.relative_margin * abs(pos_score):
                    margin_out += 1
                    continue
                kept.append((d, score))
            per_source["bm25"][(qid, pos)] = kept
        stats.candidates["bm25"] = cand
        stats.removed_judged["bm25"] = judged_out
        stats.removed_margin["bm25"] = margin_out

    stats.kept = {s: 0 for s in per_source}
    rows = []
    for pair in pairs:
        qid, pos = pair["query_id"], pair["doc_id"]
        positives = judged.get(qid, set()) | {pos}
        chosen = sorted(include.get(qid, set()) - positives)  # manual includes come first
        stats.added_manual += len(chosen)
        wanted = cfg.per_pair + len(chosen)
        # take the best remaining candidate of each source in turn until enough are chosen
        queues = [(s, list(per_source[s].get((qid, pos), []))) for s in cfg.sources if s in per_source]
        if queues:  # rotate which source goes first, so each contributes even at per_pair=1
            shift = len(rows) % len(queues)
            queues = queues[shift:] + queues[:shift]
        while len(chosen) < wanted and any(queue for _, queue in queues):
            for source, queue in queues:
                while queue and len(chosen) < wanted:
                    did, _ = queue.pop(0)
                    if did in positives or did in chosen:  # never a judged positive, whatever the source
                        continue
                    if did in exclude.get(qid, ()):
                        stats.removed_manual += 1
                        continue
                    chosen.append(did)
                    stats.kept[source] += 1
                    break
        if not chosen and per_source:
            stats.pairs_without_negative += 1
        if teacher is not None and query_emb is not None and doc_index is not None:
            q = query_emb[qid]
            stats.positive_scores.append(float(teacher[doc_index[pos]] @ q))
            stats.negative_scores += [float(teacher[doc_index[d]] @ q) for d in chosen]
        rows.append({**pair, "negative_ids": chosen,
                     "negatives": [doc_text(ds.corpus[d]) for d in chosen]})
    return rows, stats
