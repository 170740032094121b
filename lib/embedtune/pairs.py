"""Training pairs (query, relevant document) and held-out hygiene.

Gold pairs come from the train qrels. Before anything trains, the leakage guard removes from
training every train/dev query that duplicates a test query, exactly after normalisation or
nearly (embedding cosine above a threshold), and says how many it removed.

Example:
    >>> rows = gold_pairs(ds, splits.train, min_score=1)
    >>> report = leakage_guard(train_q, dev_q, test_q, embed=None)
"""

from __future__ import annotations

import random
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from embedtune.data import BeirDataset, Qrels, doc_text

Pair = dict  # {"query_id", "anchor", "doc_id", "positive", "score", "source"}


def gold_pairs(ds: BeirDataset, qrels: Qrels, min_score: int = 1, source: str = "gold") -> list[Pair]:
    """One pair per judged (query, document) with ``score >= min_score``, in a stable order."""
    rows = []
    for qid in sorted(qrels):
        for did, score in sorted(qrels[qid].items()):
            if score >= min_score:
                rows.append({"query_id": qid, "anchor": ds.queries[qid], "doc_id": did,
                             "positive": doc_text(ds.corpus[did]), "score": int(score),
                             "source": source})
    return rows


def normalize_query(text: str) -> str:
    """Lower-case, strip accents and punctuation, collapse spaces: what counts as 'the same query'."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    return " ".join(re.sub(r"[^\w\s]", " ", text).split())


@dataclass
class LeakageReport:
    """Train/dev queries removed because they duplicate a test query."""

    exact: dict[str, str] = field(default_factory=dict)  # removed query id -> test query id
    near: dict[str, tuple[str, float]] = field(default_factory=dict)  # id -> (test id, cosine)
    threshold: float | None = None

    @property
    def removed(self) -> set[str]:
        return set(self.exact) | set(self.near)

    def summary(self) -> dict:
        return {"exact_duplicates": len(self.exact), "near_duplicates": len(self.near),
                "cosine_threshold": self.threshold, "removed": sorted(self.removed)}


def leakage_guard(train_queries: dict[str, str], test_queries: dict[str, str],
                  embed: Callable[[list[str]], np.ndarray] | None = None,
                  threshold: float | None = 0.95) -> LeakageReport:
    """Find train (or dev) queries that duplicate a test query.

    Args:
        train_queries: id -> text of the queries that would feed training or choosing.
        test_queries: id -> text of the held-out test queries.
        embed: maps texts to L2-normalised embeddings; None skips the near-duplicate check.
        threshold: cosine at or above which two queries count as near-duplicates.

    Returns:
        Which queries to remove, and why. A query with the same id as a test query counts as
        an exact duplicate too.
    """
    report = LeakageReport(threshold=threshold if embed is not None else None)
    by_text = {}
    for tid, text in test_queries.items():
        by_text.setdefault(normalize_query(text), tid)
    for qid, text in train_queries.items():
        if qid in test_queries:
            report.exact[qid] = qid
        elif (tid := by_text.get(normalize_query(text))) is not None:
            report.exact[qid] = tid
    if embed is None or threshold is None or not test_queries:
        return report
    rest = [q for q in train_queries if q not in report.exact]
    if not rest:
        return report
    test_ids = list(test_queries)
    a = embed([train_queries[q] for q in rest])
    b = embed([test_queries[t] for t in test_ids])
    sims = a @ b.T
    best = sims.argmax(axis=1)
    for i, qid in enumerate(rest):
        score = float(sims[i, best[i]])
        if score >= threshold:
            report.near[qid] = (test_ids[best[i]], round(score, 4))
    return report


def cap_per_query(rows: list[dict], cap: int, seed: int) -> list[dict]:
    """At most ``cap`` pairs per query, a seeded choice; queries keep their order."""
    by_query: dict[str, list[dict]] = {}
    for row in rows:
        by_query.setdefault(row["query_id"], []).append(row)
    rng = random.Random(seed)
    kept = []
    for query_rows in by_query.values():
        kept += query_rows if len(query_rows) <= cap else rng.sample(query_rows, cap)
    return kept


def capped(rows: list[dict], max_per_query: int | None, max_total: int | None, seed: int) -> list[dict]:
    """The pairs as 01_pairs trains on them (``pairs.max_pairs_per_query``, then a seeded sample of
    ``pairs.max_train_pairs``, sorted back); 00_decide's pilot takes the same."""
    if max_per_query is not None:
        rows = cap_per_query(rows, max_per_query, seed)
    if max_total is not None and len(rows) > max_total:
        rows = sorted(random.Random(seed).sample(rows, max_total), key=lambda r: (r["query_id"], r["doc_id"]))
    return rows
