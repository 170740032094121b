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

:class:`Labeler` backs the labelling notebook (``notebooks/label.ipynb``): it shows each query
with its top candidates from BM25 or the generic model, and appends the grades to the gold file
(each save rewrites the file atomically), so labelling can stop and resume at any time.

Example:
    >>> gold = read_gold("labels.tsv", ds.corpus, ds.queries)
    >>> ds = with_gold(ds, gold, split="test")        # merged into the test qrels
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from embedtune.config import GoldConfig  # noqa: F401  (re-exported)
from embedtune.data import BeirDataset, DataError, Qrels, relevant_only
from embedtune.io import atomic_write_text

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
    text = path.read_text(encoding="utf-8-sig")
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
        path = Path(name).expanduser()
        if not path.is_absolute() and not path.exists():
            path = paths.project_root() / path
        gold = read_gold(path, ds.corpus, ds.queries, cfg.default_grade, cfg.max_grade)
        ds = with_gold(ds, gold, cfg.split)
        stats[name] = gold.stats
    return ds, stats


# --------------------------------------------------------------------------- labelling


@dataclass
class Candidate:
    doc_id: str
    title: str
    text: str
    score: float
    rank: int


class Labeler:
    """Labelling state for one gold file: which queries are done, their candidates, saving.

    A query is done once the gold file holds any label for it; saving writes a grade for every
    candidate shown (unmarked ones as 0, judged not relevant), so re-opening resumes at the first
    query not yet saved. Skips last for the session only.

    Args:
        gold_file: the TSV the labels go to (created with a header when missing).
        corpus: the documents.
        queries: id -> text of the queries to label, in labelling order.
        search: ``search(queries, top_k) -> run`` proposing candidates (see
            :func:`embedtune.synthetic.as_search_fn`).
        k: candidates shown per query.
        grades: the grades offered, lowest first; 0 means not relevant.
        dataset_queries: the dataset's queries, to read the existing file (default ``queries``).
    """

    def __init__(self, gold_file: str | Path, corpus: dict[str, dict[str, str]],
                 queries: dict[str, str], search, k: int = 10, grades: Sequence[int] = (0, 1, 2),
                 dataset_queries: dict[str, str] | None = None):
        self.gold_file = Path(gold_file)
        self.corpus, self.queries, self.k = corpus, dict(queries), k
        self.grades = tuple(grades)
        self._search = search
        self._known = {**(dataset_queries or {}), **self.queries}
        self.skipped: set[str] = set()
        self.labels: Qrels = {}
        if self.gold_file.is_file() and self.gold_file.stat().st_size:
            self.labels = read_gold(self.gold_file, corpus, self._known,
                                    max_grade=max(self.grades)).qrels

    @classmethod
    def from_config(cls, cfg, gold_file: str | Path, split: str = "train",
                    queries_file: str | None = None, candidates: str = "bm25", k: int = 10,
                    grades: Sequence[int] = (0, 1, 2)) -> "Labeler":
        """A labeler over an experiment's dataset (as its params load it, slice included).

        Args:
            cfg: an :class:`~embedtune.config.ExperimentConfig`.
            gold_file: where the labels go.
            split: label the queries of this split (``train``, ``dev`` or ``test``) ...
            queries_file: ... or the queries in this text file, one per line (new queries get
                ``gold-<hash>`` ids; queries the dataset already has keep theirs).
            candidates: ``bm25`` or ``generic`` (the base model, cached embeddings).
        """
        from embedtune.data import load_experiment_data
        from embedtune.synthetic import as_search_fn

        ds, splits = load_experiment_data(cfg.data, cfg.seed)
        if queries_file:
            from embedtune.pairs import normalize_query

            by_text = {normalize_query(t): q for q, t in ds.queries.items()}
            lines = [" ".join(l.split()) for l in Path(queries_file).read_text(encoding="utf-8").splitlines()]
            queries = {by_text.get(normalize_query(t)) or gold_query_id(t): t for t in lines if t}
        else:
            if split not in ("train", "dev", "test"):
                raise ValueError(f"split must be train, dev or test, got {split!r}")
            queries = {q: ds.queries[q] for q in sorted(getattr(splits, split))}
        if candidates == "bm25":
            from embedtune.retrieval import BM25Retriever

            search = as_search_fn(BM25Retriever(ds.corpus, cfg.retrieval.bm25))
        elif candidates == "generic":
            from embedtune.models import load_model
            from embedtune.retrieval import DenseIndex

            model = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
            index = DenseIndex.build(model, ds.corpus, cfg.model)
            search = as_search_fn(index, model, cfg.model)
        else:
            raise ValueError(f"candidates must be bm25 or generic, got {candidates!r}")
        return cls(gold_file, ds.corpus, queries, search, k, grades, dataset_queries=ds.queries)

    def read(self) -> GoldSet | None:
        """The gold file as the importer reads it (None before the first save)."""
        if not self.gold_file.is_file():
            return None
        return read_gold(self.gold_file, self.corpus, self._known, max_grade=max(self.grades))

    def pending(self) -> list[str]:
        return [q for q in self.queries if q not in self.labels]

    def next_query(self) -> str | None:
        """The first query without labels that was not skipped in this session, or None."""
        return next((q for q in self.pending() if q not in self.skipped), None)

    def candidates(self, qid: str) -> list[Candidate]:
        run = self._search({qid: self.queries[qid]}, self.k).get(qid, {})
        ranked = sorted(run.items(), key=lambda kv: (-kv[1], kv[0]))[: self.k]
        return [Candidate(d, self.corpus[d].get("title", ""), self.corpus[d]["text"], s, r)
                for r, (d, s) in enumerate(ranked, 1)]

    def save(self, qid: str, grades: dict[str, int]) -> None:
        """Write the grades of one query's candidates to the gold file (atomically: the whole
        file is rewritten beside and renamed over, so an interruption never tears it)."""
        if qid not in self.queries:
            raise KeyError(f"{qid!r} is not a query being labelled")
        unknown = [d for d in grades if d not in self.corpus]
        if unknown:
            raise KeyError(f"doc ids not in the corpus: {unknown}")
        bad = {d: g for d, g in grades.items() if g not in self.grades}
        if bad:
            raise ValueError(f"grades must be one of {self.grades}, got {bad}")
        buffer = io.StringIO()
        writer = csv.writer(buffer, delimiter="\t", lineterminator="\n")
        existing = self.gold_file.read_text(encoding="utf-8") if self.gold_file.is_file() else ""
        if not existing.strip():
            writer.writerow(GOLD_HEADER)
        elif not existing.endswith("\n"):
            buffer.write("\n")
        text = " ".join(self.queries[qid].split())
        for did, grade in grades.items():
            writer.writerow((qid, text, did, grade))
        atomic_write_text(self.gold_file, existing + buffer.getvalue())
        self.labels.setdefault(qid, {}).update(grades)
        self.skipped.discard(qid)

    def skip(self, qid: str) -> None:
        self.skipped.add(qid)

    def progress(self) -> dict:
        done = [q for q in self.queries if q in self.labels]
        return {"queries": len(self.queries), "labelled": len(done),
                "pending": len(self.queries) - len(done), "skipped_this_session": len(self.skipped),
                "relevant_judgements": sum(g > 0 for q in done for g in self.labels[q].values()),
                "gold_file": str(self.gold_file)}


def open_labeler(params_file: str | Path, overrides: dict | None, gold_file: str | Path,
                 split: str = "test", queries_file: str | None = None, candidates: str = "bm25",
                 k: int = 10) -> Labeler:
    """What the labelling notebook calls: relative paths are taken from the project root (the
    notebook runs in ``notebooks/``), then :meth:`Labeler.from_config`."""
    from embedtune import paths
    from embedtune.config import load_config

    params_path = Path(params_file)
    if not params_path.is_absolute() and not params_path.exists():
        params_path = paths.project_root() / params_path
    cfg = load_config(params_path, overrides or {})
    gold_path = Path(gold_file).expanduser()
    if not gold_path.is_absolute():
        gold_path = paths.project_root() / gold_path
    if queries_file:
        qpath = Path(queries_file).expanduser()
        queries_file = str(qpath if qpath.is_absolute() or qpath.exists() else paths.project_root() / qpath)
    return Labeler.from_config(cfg, gold_path, split=split, queries_file=queries_file or None,
                               candidates=candidates, k=k)


GRADE_NAMES = {0: "not relevant", 1: "relevant", 2: "highly relevant", 3: "perfect"}


def label_widget(labeler: Labeler, snippet_chars: int = 600):
    """The labelling UI for JupyterLab (ipywidgets): the query, its candidates with a grade
    toggle each, and Save & next / Skip buttons. Display it as a cell's last expression."""
    import ipywidgets as w

    status, error, body = w.HTML(), w.HTML(), w.VBox()
    state: dict = {"qid": None, "toggles": {}}

    def render() -> None:
        progress = labeler.progress()
        where = html.escape(str(labeler.gold_file))
        status.value = (f"<b>{progress['labelled']}</b> of {progress['queries']} queries labelled, "
                        f"{progress['pending']} to go; labels go to <code>{where}</code>")
        qid = labeler.next_query()
        state["qid"], state["toggles"] = qid, {}
        if qid is None:
            body.children = [w.HTML("<h3>Nothing left to label.</h3>")]
            return
        items = [w.HTML(f"<h3>Query {html.escape(qid)}: {html.escape(labeler.queries[qid])}</h3>")]
        options = [(f"{g} {GRADE_NAMES.get(g, '')}".strip(), g) for g in labeler.grades]
        for cand in labeler.candidates(qid):
            toggle = w.ToggleButtons(options=options, value=labeler.grades[0],
                                     style={"button_width": "auto"})
            state["toggles"][cand.doc_id] = toggle
            text = cand.text if len(cand.text) <= snippet_chars else cand.text[:snippet_chars] + " ..."
            items.append(w.HTML(f"<hr><b>#{cand.rank} {html.escape(cand.doc_id)}</b> "
                                f"<i>{html.escape(cand.title)}</i><br>{html.escape(text)}"))
            items.append(toggle)
        save = w.Button(description="Save & next", button_style="success")
        skip = w.Button(description="Skip")
        save.on_click(on_save)
        skip.on_click(on_skip)
        items.append(w.HBox([save, skip]))
        body.children = items

    def on_save(_button) -> None:
        # a callback's exception would only reach the log console; show it where the user looks
        try:
            labeler.save(state["qid"], {d: t.value for d, t in state["toggles"].items()})
        except (OSError, KeyError, ValueError) as exc:
            error.value = f"<b style='color:#b00'>not saved: {html.escape(str(exc))}</b>"
            return
        error.value = ""
        render()

    def on_skip(_button) -> None:
        labeler.skip(state["qid"])
        render()

    render()
    return w.VBox([status, error, body])
