"""Click logs: read them, turn them into training pairs or a validation set, or simulate them.

A click log is JSON Lines, one search impression per line (docs/data-sources.md has examples)::

    {"query": "statin muscle pain", "shown": ["d3", "d7", "d1"], "clicks": ["d7"], "dwell": {"d7": 42.0}}
    {"query_id": "q17", "shown": ["d2", "d9"], "clicks": []}

- ``query`` (text) or ``query_id`` (a query of the dataset), or both; at least one.
- ``shown``: the document ids shown, in rank order (first = top).
- ``clicks``: the clicked ids, each one of ``shown`` (optional: none).
- ``dwell``: optional seconds spent on each clicked document.
- Other keys (``session``, ``time``, ...) are kept in ``extra`` and otherwise ignored.

A click counts when its dwell reaches ``min_dwell_s`` (clicks without a dwell time count). A
(query, document) becomes a positive with at least ``min_clicks`` counted clicks; documents shown
above a clicked one and never clicked for that query ("skip-above", Joachims 2002) become negative
candidates. Clicks are biased towards the top of the ranking that logged them: a validation set
made from clicks favours systems that rank like that one, so it is reported beside the gold test
set, never instead of it.

Example:
    >>> log = read_click_log("clicks.jsonl", corpus=ds.corpus, queries=ds.queries)
    >>> rows, negatives = click_pairs(log, ds.corpus, ClickConfig())
    >>> val_queries, val_qrels = click_validation(log, ClickConfig())
    >>> fake = simulate_clicks(ds.qrels["test"], bm25_run, ds.queries, SimulatorConfig(), seed=0)
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from embedtune.config import SimulatorConfig, ClickConfig  # noqa: F401  (re-exported)
from embedtune.data import DataError, Qrels, doc_text
from embedtune.io import atomic_path


class ClickLogError(DataError):
    """A click log line that does not fit the format; the message names the file and line."""


@dataclass
class Impression:
    """One search: what was shown, what was clicked."""

    query_id: str  # the dataset's id, or "click-<hash>" for a query text the dataset lacks
    query: str
    shown: tuple[str, ...]
    clicks: tuple[str, ...] = ()
    dwell: dict[str, float] = field(default_factory=dict)
    line: int = 0  # line in the log it came from (0: simulated)
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        row = {"query_id": self.query_id, "query": self.query, "shown": list(self.shown),
               "clicks": list(self.clicks)}
        if self.dwell:
            row["dwell"] = self.dwell
        return row | self.extra


def click_query_id(text: str) -> str:
    """A stable id for a logged query text that is not one of the dataset's queries."""
    from embedtune.pairs import normalize_query

    return "click-" + hashlib.sha1(normalize_query(text).encode()).hexdigest()[:12]


def read_click_log(path: str | Path, corpus: dict | None = None, queries: dict[str, str] | None = None,
                   strict: bool = True) -> list[Impression]:
    """Read and validate a JSONL click log.

    Args:
        path: the log.
        corpus: when given, every shown id must be one of its documents.
        queries: the dataset's queries: a ``query_id`` must be one of them (when given), a
            ``query`` text that matches one of them (after normalisation) takes its id, and
            other texts get ``click-<hash>`` ids.
        strict: a line naming unknown documents or query ids raises; with False it is
            dropped, and the number dropped is logged as a warning. A malformed line always raises.

    Returns:
        The impressions, in file order.

    Raises:
        ClickLogError: ``<path>:<line>: <what is wrong>`` for the first bad line.
    """
    import logging

    from embedtune.pairs import normalize_query

    from embedtune import paths
    from embedtune.io import read_text

    path = paths.resolve(path)
    if not path.is_file():
        raise ClickLogError(f"{path}: click log not found")
    by_text = {normalize_query(t): q for q, t in (queries or {}).items()}
    out: list[Impression] = []
    dropped = 0
    for lineno, line in enumerate(read_text(path, ClickLogError).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ClickLogError(f"{where}: malformed JSON ({exc.msg})") from exc
        imp = _parse(row, where, lineno)
        try:
            _resolve_query(imp, where, queries, by_text)
            if corpus is not None:
                unknown = [d for d in imp.shown if d not in corpus]
                if unknown:
                    raise ClickLogError(f"{where}: shown doc ids not in the corpus: "
                                        f"{', '.join(map(repr, unknown[:5]))}")
        except ClickLogError:
            if strict:
                raise
            dropped += 1
            continue
        out.append(imp)
    if dropped:
        logging.getLogger(__name__).warning("%s: dropped %d lines naming unknown ids", path, dropped)
    return out


def _parse(row, where: str, lineno: int) -> Impression:
    if not isinstance(row, dict):
        raise ClickLogError(f"{where}: expected a JSON object")
    query, qid = row.get("query"), row.get("query_id")
    if query is None and qid is None:
        raise ClickLogError(f"{where}: needs 'query' (text) or 'query_id'")
    if query is not None and (not isinstance(query, str) or not query.strip()):
        raise ClickLogError(f"{where}: 'query' must be a non-empty string")
    if qid is not None and not isinstance(qid, (str, int)):
        raise ClickLogError(f"{where}: 'query_id' must be a string")
    shown = row.get("shown")
    if not isinstance(shown, list) or not shown or not all(isinstance(d, (str, int)) for d in shown):
        raise ClickLogError(f"{where}: 'shown' must be a non-empty list of document ids in rank order")
    shown = tuple(str(d) for d in shown)
    if len(set(shown)) != len(shown):
        raise ClickLogError(f"{where}: 'shown' lists a document twice")
    clicks = row.get("clicks", [])
    if not isinstance(clicks, list) or not all(isinstance(d, (str, int)) for d in clicks):
        raise ClickLogError(f"{where}: 'clicks' must be a list of document ids")
    clicks = tuple(dict.fromkeys(str(d) for d in clicks))
    not_shown = [d for d in clicks if d not in shown]
    if not_shown:
        raise ClickLogError(f"{where}: clicked ids not in 'shown': {', '.join(map(repr, not_shown))}")
    dwell = row.get("dwell", {}) or {}
    if not isinstance(dwell, dict):
        raise ClickLogError(f"{where}: 'dwell' must map clicked doc ids to seconds")
    parsed = {}
    for did, seconds in dwell.items():
        if did not in clicks:
            raise ClickLogError(f"{where}: dwell time for {did!r}, which was not clicked")
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0 \
                or not math.isfinite(seconds):
            raise ClickLogError(f"{where}: dwell for {did!r} must be a number of seconds >= 0")
        parsed[did] = float(seconds)
    extra = {k: v for k, v in row.items() if k not in ("query", "query_id", "shown", "clicks", "dwell")}
    return Impression(str(qid) if qid is not None else "", query or "", shown, clicks, parsed,
                      lineno, extra)


def _resolve_query(imp: Impression, where: str, queries: dict[str, str] | None,
                   by_text: dict[str, str]) -> None:
    from embedtune.pairs import normalize_query

    if imp.query_id:
        if queries is not None:
            if imp.query_id in queries:
                imp.query = imp.query or queries[imp.query_id]
            elif not imp.query:
                raise ClickLogError(f"{where}: query_id {imp.query_id!r} is not a query of the "
                                    "dataset, and the line gives no query text")
        elif not imp.query:
            raise ClickLogError(f"{where}: query_id without query text needs the dataset's queries")
        return
    imp.query_id = by_text.get(normalize_query(imp.query)) or click_query_id(imp.query)


def write_click_log(impressions: Iterable[Impression], path: str | Path) -> None:
    """Write impressions as a JSONL click log (atomically)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as fh:
            for imp in impressions:
                fh.write(json.dumps(imp.to_json(), ensure_ascii=False) + "\n")


# --------------------------------------------------------------------------- aggregation


@dataclass
class ClickStats:
    """Per query: impressions, counted clicks and skip-aboves per document."""

    queries: dict[str, str] = field(default_factory=dict)  # id -> text
    impressions: dict[str, int] = field(default_factory=dict)  # query id -> impressions
    clicks: dict[str, dict[str, int]] = field(default_factory=dict)  # counted clicks
    raw_clicks: dict[str, dict[str, int]] = field(default_factory=dict)  # every click
    skips: dict[str, dict[str, int]] = field(default_factory=dict)  # skipped above a counted click
    short_clicks: int = 0  # clicks discarded by the dwell threshold

    def positives(self, min_clicks: int) -> Qrels:
        kept = {q: {d: 1 for d, c in docs.items() if c >= min_clicks} for q, docs in self.clicks.items()}
        return {q: docs for q, docs in kept.items() if docs}

    def negatives(self, min_skips: int) -> dict[str, list[str]]:
        """Skipped-above documents never clicked for that query, most skipped first."""
        out = {}
        for q, docs in self.skips.items():
            clicked = self.raw_clicks.get(q, {})
            ids = sorted((d for d, n in docs.items() if n >= min_skips and d not in clicked),
                         key=lambda d: (-docs[d], d))
            if ids:
                out[q] = ids
        return out

    def click_rate_by_rank(self, impressions: list[Impression], depth: int = 10) -> list[float]:
        """Share of impressions with a click at each rank 1..depth (position bias at a glance)."""
        counts, totals = [0] * depth, [0] * depth
        for imp in impressions:
            for r, did in enumerate(imp.shown[:depth]):
                totals[r] += 1
                counts[r] += did in imp.clicks
        return [c / t if t else 0.0 for c, t in zip(counts, totals)]


def aggregate_clicks(impressions: Iterable[Impression], min_dwell_s: float | None = None) -> ClickStats:
    """Count impressions, clicks (those passing the dwell threshold) and skip-aboves per query."""
    stats = ClickStats()
    for imp in impressions:
        q = imp.query_id
        stats.queries.setdefault(q, imp.query)
        stats.impressions[q] = stats.impressions.get(q, 0) + 1
        raw = stats.raw_clicks.setdefault(q, {})
        counted = []
        for did in imp.clicks:
            raw[did] = raw.get(did, 0) + 1
            dwell = imp.dwell.get(did)
            if min_dwell_s is not None and dwell is not None and dwell < min_dwell_s:
                stats.short_clicks += 1
                continue
            counted.append(did)
        clicks = stats.clicks.setdefault(q, {})
        for did in counted:
            clicks[did] = clicks.get(did, 0) + 1
        if counted:
            lowest = max(imp.shown.index(d) for d in counted)
            skips = stats.skips.setdefault(q, {})
            for did in imp.shown[:lowest]:
                if did not in imp.clicks:
                    skips[did] = skips.get(did, 0) + 1
    return stats


def split_click_queries(stats: ClickStats, cfg: ClickConfig, seed: int = 0) -> tuple[set[str], set[str]]:
    """Which click queries train and which validate, as ``cfg.use`` says (a seeded split for both)."""
    ids = sorted(stats.positives(cfg.min_clicks))
    if cfg.use == "train":
        return set(ids), set()
    if cfg.use == "validate":
        return set(), set(ids)
    random.Random(seed).shuffle(ids)
    n_val = round(cfg.validation_share * len(ids))
    return set(ids[n_val:]), set(ids[:n_val])


def click_pairs(impressions: list[Impression], corpus: dict[str, dict[str, str]], cfg: ClickConfig,
                only: set[str] | None = None) -> tuple[list[dict], dict[str, list[str]]]:
    """Training pairs from clicks, and skip-above negative candidates.

    Args:
        impressions: from :func:`read_click_log` or :func:`simulate_clicks`.
        corpus: doc id -> {"title", "text"} (the positive texts).
        cfg: thresholds (``min_clicks``, ``min_dwell_s``, ``min_skips``).
        only: keep these query ids only (e.g. the training side of :func:`split_click_queries`).

    Returns:
        Pairs ``{"query_id", "anchor", "doc_id", "positive", "score": 1, "source": "clicks"}``,
        and query id -> negative candidate doc ids (most skipped first), for the negatives stage.
    """
    stats = aggregate_clicks(impressions, cfg.min_dwell_s)
    rows = []
    positives = stats.positives(cfg.min_clicks)
    for q in sorted(positives):
        if only is not None and q not in only:
            continue
        for did in sorted(positives[q]):
            if did in corpus:
                rows.append({"query_id": q, "anchor": stats.queries[q], "doc_id": did,
                             "positive": doc_text(corpus[did]), "score": 1, "source": "clicks"})
    kept_q = {r["query_id"] for r in rows}
    negatives = {q: ids for q, ids in stats.negatives(cfg.min_skips).items() if q in kept_q}
    return rows, negatives


def click_validation(impressions: list[Impression], cfg: ClickConfig,
                     only: set[str] | None = None) -> tuple[dict[str, str], Qrels]:
    """A validation set from clicks: each query with its counted-clicked documents (grade 1).

    Returns:
        (query id -> text, qrels), ready for the same evaluation as the gold test set.
    """
    stats = aggregate_clicks(impressions, cfg.min_dwell_s)
    qrels = {q: docs for q, docs in stats.positives(cfg.min_clicks).items()
             if only is None or q in only}
    return {q: stats.queries[q] for q in qrels}, qrels


# --------------------------------------------------------------------------- simulation


def simulate_clicks(qrels: Qrels, ranking: dict[str, dict[str, float]], queries: dict[str, str],
                    cfg: SimulatorConfig = SimulatorConfig(), seed: int = 0) -> list[Impression]:
    """Realistic click logs from relevance judgements and a baseline ranking (e.g. BM25's run).

    Each judged query with a ranking gets ``sessions_per_query`` impressions of its top
    ``depth`` documents. The user examines ranks by the click model and clicks an examined
    document with a probability set by its grade (noise for unjudged or grade-0 documents):

    - ``position``: rank r is examined with probability ``(1/r) ** eta``, independently.
    - ``cascade``: ranks are read top-down; after a click on a relevant document the user stops
      with probability ``satisfied``, and after a rank without a click goes on with probability
      ``persistence``.

    Each click gets a log-normal dwell time, long on relevant documents and short on noise.
    Seeded: the same inputs and seed give the same log.
    """
    rng = random.Random(seed)
    out = []
    for q in sorted(qrels):
        if q not in ranking or not ranking[q]:
            continue
        shown = tuple(d for d, _ in sorted(ranking[q].items(), key=lambda kv: (-kv[1], kv[0]))[: cfg.depth])
        grades = qrels[q]
        for s in range(cfg.sessions_per_query):
            clicks, dwell = [], {}
            for r, did in enumerate(shown, 1):
                if cfg.model == "position":
                    if rng.random() >= (1.0 / r) ** cfg.eta:
                        continue
                grade = grades.get(did, 0)
                p = cfg.click_noise if grade <= 0 else cfg.click_relevant * (1.0 if grade >= 2 else 2 / 3)
                clicked = rng.random() < p
                if clicked:
                    clicks.append(did)
                    median = cfg.dwell_relevant_s if grade > 0 else cfg.dwell_noise_s
                    dwell[did] = round(rng.lognormvariate(math.log(median), 0.6), 1)
                if cfg.model == "cascade":
                    if clicked and grade > 0:
                        if rng.random() < cfg.satisfied:
                            break
                    elif not clicked and rng.random() >= cfg.persistence:
                        break
            out.append(Impression(q, queries.get(q, ""), shown, tuple(clicks), dwell, 0,
                                  {"session": f"{q}-{s}"}))
    return out
