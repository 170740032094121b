"""Manual gold labels: import CSV/TSV judgements beside BEIR qrels, and label new ones.

A gold file has one judgement per row: a query (its id in the dataset, or its text), a document
id, and an optional grade (default 1; 0 = judged not relevant). With a header row, columns are
found by name and may come in any order::

    query_id<TAB>query<TAB>doc_id<TAB>grade
    q17<TAB>statin muscle pain<TAB>4983<TAB>2

Header names understood: ``query_id`` (also ``query-id``, ``qid``), ``query`` (``query_text``,
``question``, ``text``), ``doc_id`` (``corpus-id``, ``corpus_id``, ``docid``, ``pid``) and
``grade`` (``score``, ``relevance``, ``label``). Without a header, the columns are ``query,
doc_id[, grade]`` and a query that is one of the dataset's ids is taken as that id, anything else
as text. A query text that is not one of the dataset's queries becomes a new query with id
``gold-<hash of the normalised text>``, so the same text always gets the same id.
``.tsv`` files are tab-separated, ``.csv`` comma-separated; other names are sniffed.

New labels are made in the labelling notebook (``embedtune.labeling``, ``notebooks/label.ipynb``).

Example:
    >>> gold = read_gold("labels.tsv", ds.corpus, ds.queries)
    >>> ds = with_gold(ds, gold, split="test")        # merged into the test qrels
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

from embedtune.config import GoldConfig  # noqa: F401  (re-exported)
from embedtune.data import BeirDataset, DataError, Qrels, relevant_only
from embedtune.io import read_text

COLUMNS = {
    "query_id": ("query_id", "query-id", "qid", "queryid"),
    "query": ("query", "query_text", "query-text", "question", "text"),
    "doc_id": ("doc_id", "doc-id", "corpus-id", "corpus_id", "docid", "document_id", "pid"),
    "grade": ("grade", "score", "relevance", "label", "rel"),
}
_ALIAS = {alias: name for name, aliases in COLUMNS.items() for alias in aliases}
GOLD_HEADER = ("query_id", "query", "doc_id", "grade")  # what the Labeler writes
MAX_ERRORS_SHOWN = 10


class GoldError(DataError):
    """A gold file that cannot be imported; the message lists the bad lines."""


def gold_query_id(text: str) -> str:
    """The id a new query text gets: stable across files and sessions."""
    from embedtune.pairs import normalize_query

    return "gold-" + hashlib.sha1(normalize_query(text).encode()).hexdigest()[:12]


@dataclass
class GoldSet:
    """Judgements read from a gold file."""

    qrels: Qrels  # query id -> doc id -> grade (0 = judged not relevant)
    queries: dict[str, str]  # id -> text of every query in the file
    new_queries: set[str] = field(default_factory=set)  # ids the dataset does not have
    stats: dict = field(default_factory=dict)

    def relevant(self, min_score: int = 1) -> Qrels:
        return relevant_only(self.qrels, min_score)


def _delimiter(path: Path, sample: str) -> str:
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    try:
        return csv.Sniffer().sniff(sample, delimiters=",\t;").delimiter
    except csv.Error:
        return "\t" if "\t" in sample else ","


def _header(cells: list[str]) -> dict[str, int] | None:
    """Column name -> index when ``cells`` is a header row, else None."""
    names = [c.strip().lower().lstrip("\ufeff") for c in cells]
    known = [n in _ALIAS for n in names]
    if not any(known):
        return None
    if not all(known):
        unknown = [c for c, k in zip(cells, known) if not k]
        raise GoldError(f"header names unknown columns {unknown}; known: "
                        + ", ".join(f"{k} ({'/'.join(v[1:])})" for k, v in COLUMNS.items()))
    cols = {}
    for i, n in enumerate(names):
        if _ALIAS[n] in cols:
            raise GoldError(f"header has two {_ALIAS[n]} columns")
        cols[_ALIAS[n]] = i
    if "doc_id" not in cols or not ({"query_id", "query"} & set(cols)):
        raise GoldError("header needs a doc_id column and a query_id or query column")
    return cols


def parse_grade(text: str, default: int, max_grade: int | None) -> int:
    """A grade cell: empty gives ``default``; otherwise a whole number >= 0 (``2.0`` is 2)."""
    text = text.strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"grade {text!r} is not a number") from None
    if value != int(value) or value < 0:
        raise ValueError(f"grade {text!r} is not a whole number >= 0")
    if max_grade is not None and value > max_grade:
        raise ValueError(f"grade {text!r} is above the highest grade, {max_grade}")
    return int(value)


def read_gold(path: str | Path, corpus: dict[str, dict[str, str]], queries: dict[str, str],
              default_grade: int = 1, max_grade: int | None = None) -> GoldSet:
    """Import a CSV/TSV gold file (format in the module docstring).

    Args:
        path: the file.
        corpus: the dataset's documents: every doc id must be one of them.
        queries: the dataset's queries: ids are looked up here, and texts matched (after
            normalisation) to reuse their ids.
        default_grade: the grade of a row without one.
        max_grade: reject grades above this (None: no limit).

    Returns:
        The judgements. A (query, document) judged twice keeps the later row's grade.

    Raises:
        GoldError: listing every bad line (up to ten shown) with its line number: unknown doc
            ids, bad grades, missing cells, unknown query ids without a text.
    """
    from embedtune.pairs import normalize_query

    path = Path(path)
    if not path.is_file():
        raise GoldError(f"{path}: gold file not found")
    text = read_text(path, GoldError)
    delimiter = _delimiter(path, text[:4096])
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    rows = [(i, r) for i, r in enumerate(reader, 1) if any(c.strip() for c in r)]
    if not rows:
        raise GoldError(f"{path}: empty gold file")
    try:
        cols = _header(rows[0][1])
    except GoldError as exc:
        raise GoldError(f"{path}:{rows[0][0]}: {exc}") from None
    if cols is not None:
        rows = rows[1:]
    by_text = {normalize_query(t): q for q, t in queries.items()}
    qrels: Qrels = {}
    found: dict[str, str] = {}
    new: set[str] = set()
    errors: list[str] = []
    overridden = 0
    for lineno, cells in rows:
        where = f"{path}:{lineno}"
        try:
            if cols is None:
                if len(cells) not in (2, 3):
                    raise ValueError(f"expected 2 or 3 columns (query, doc_id[, grade]) without a "
                                     f"header, got {len(cells)}")
                query_cell, doc_cell = cells[0].strip(), cells[1].strip()
                grade_cell = cells[2] if len(cells) == 3 else ""
                qid_cell, text_cell = (query_cell, "") if query_cell in queries else ("", query_cell)
            else:
                short = [n for n in ("query_id", "query", "doc_id") if n in cols and cols[n] >= len(cells)]
                if short:  # a missing grade cell is a row without a grade; any other is an error
                    raise ValueError(f"expected {max(cols[n] for n in short) + 1} columns, got {len(cells)}")
                get = lambda name: (cells[cols[name]].strip()  # noqa: E731
                                    if name in cols and cols[name] < len(cells) else "")
                qid_cell, text_cell, doc_cell, grade_cell = (get("query_id"), get("query"),
                                                             get("doc_id"), get("grade"))
            if qid_cell and qid_cell in queries:
                qid, qtext = qid_cell, queries[qid_cell]
            elif qid_cell and text_cell:
                qid, qtext = qid_cell, text_cell
                new.add(qid)
            elif qid_cell:
                raise ValueError(f"query id {qid_cell!r} is not a query of the dataset (give its "
                                 "text in a query column to add it)")
            elif text_cell:
                qtext = " ".join(text_cell.split())
                qid = by_text.get(normalize_query(qtext))
                if qid is None:
                    qid = gold_query_id(qtext)
                    new.add(qid)
            else:
                raise ValueError("empty query")
            if not doc_cell:
                raise ValueError("empty doc id")
            if doc_cell not in corpus:
                hint = " (a header row? see the known column names)" if lineno == 1 else ""
                raise ValueError(f"doc id {doc_cell!r} is not in the corpus{hint}")
            grade = parse_grade(grade_cell, default_grade, max_grade)
        except ValueError as exc:
            errors.append(f"{where}: {exc}")
            continue
        found.setdefault(qid, qtext)
        judged = qrels.setdefault(qid, {})
        overridden += doc_cell in judged
        judged[doc_cell] = grade
    if errors:
        more = f"\n... and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
        raise GoldError(f"{path}: {len(errors)} bad line(s):\n" + "\n".join(errors[:MAX_ERRORS_SHOWN]) + more)
    judgements = sum(len(d) for d in qrels.values())
    stats = {"rows": len(rows), "queries": len(qrels), "new_queries": len(new),
             "judgements": judgements, "relevant": sum(g > 0 for d in qrels.values() for g in d.values()),
             "overridden": overridden, "header": cols is not None,
             "delimiter": {"\t": "tab", ",": "comma", ";": "semicolon"}.get(delimiter, delimiter)}
    return GoldSet(qrels, found, new, stats)


def merge_qrels(*parts: Qrels) -> Qrels:
    """Union of qrels; where two judge the same (query, doc), the later part wins.

    Example:
        >>> merge_qrels({"q1": {"d1": 1}}, {"q1": {"d1": 2, "d2": 0}})
        {'q1': {'d1': 2, 'd2': 0}}
    """
    merged: Qrels = {}
    for part in parts:
        for q, docs in part.items():
            merged.setdefault(q, {}).update(docs)
    return merged


def with_gold(ds: BeirDataset, gold: GoldSet, split: str = "gold") -> BeirDataset:
    """A copy of ``ds`` with the gold queries added and the gold judgements merged into ``split``
    (a new split, or an existing one whose judgements the gold file overrides)."""
    qrels = dict(ds.qrels)
    qrels[split] = merge_qrels(ds.qrels.get(split, {}), gold.qrels)
    return BeirDataset(name=ds.name, path=ds.path, corpus=ds.corpus,
                       queries={**ds.queries, **{q: gold.queries[q] for q in gold.new_queries}},
                       qrels=qrels, dropped=ds.dropped)


def apply_gold(ds: BeirDataset, cfg: GoldConfig) -> tuple[BeirDataset, dict[str, dict]]:
    """Read every file of ``cfg.files`` and merge it into ``ds`` (split ``cfg.split``); later
    files override earlier ones and the BEIR qrels where they judge the same pair.

    Call it before the splits are made. With ``split: gold`` and ``data.eval_split: gold`` (plus
    ``data.query_split``), a dataset without qrels of its own is evaluated on the gold file alone.

    Returns:
        The merged dataset, and each file's import statistics (file -> stats).
    """
    from embedtune import paths

    stats = {}
    for name in cfg.files:
        path = paths.resolve(name)
        gold = read_gold(path, ds.corpus, ds.queries, cfg.default_grade, cfg.max_grade)
        ds = with_gold(ds, gold, cfg.split)
        stats[name] = gold.stats
    return ds, stats
