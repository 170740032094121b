"""Labelling new gold judgements in JupyterLab (``notebooks/label.ipynb``).

:class:`Labeler` shows each query with its top candidates from BM25 or the generic model, and
writes the grades to the gold file (each save rewrites the file atomically), so labelling can
stop and resume at any time. The gold file is read back by :mod:`embedtune.gold`.

Example:
    >>> labeler = open_labeler("params/scifact.yaml", {}, "gold/labels.tsv", split="test")
    >>> label_widget(labeler)   # the last expression of a notebook cell
"""

from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from embedtune.data import Qrels
from embedtune.gold import GOLD_HEADER, GoldSet, gold_query_id, read_gold
from embedtune.io import atomic_write_text

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
        from embedtune.context import load_experiment_data
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
    """What the labelling notebook calls: relative paths are taken from the project root, as
    everywhere (``embedtune.paths.resolve``), then :meth:`Labeler.from_config`."""
    from embedtune import paths
    from embedtune.config import load_config
    from embedtune.context import resolve_params_file

    cfg = load_config(resolve_params_file(params_file), overrides or {})
    gold_path = paths.resolve(gold_file)
    if queries_file:
        queries_file = str(paths.resolve(queries_file))
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
