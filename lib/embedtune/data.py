"""BEIR-format datasets: resolution, download, validation and query splits.

A BEIR folder holds ``corpus.jsonl`` (``_id``, optional ``title``, ``text``), ``queries.jsonl``
(``_id``, ``text``) and ``qrels/<split>.tsv`` (``query-id  corpus-id  score``, with a header).

Example:
    >>> ds = load_beir("scifact")                     # $EMBEDTUNE_DATA_DIR/scifact, data/scifact, or download
    >>> splits = make_splits(ds, DataConfig(dataset="scifact"), seed=42)
    >>> len(splits.test), len(ds.corpus)
    (300, 5183)
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from embedtune import paths
from embedtune.config import DataConfig
from embedtune.io import atomic_path, read_text

log = logging.getLogger(__name__)

BEIR_MIRROR = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
# md5 of each zip, as published in BEIR's README table.
BEIR_MD5 = {
    "scifact": "5f7d1de60b170fc8027bb7898e2efca1",
    "nfcorpus": "a89dba18a62ef92f7d323ec890a0d38d",
    "fiqa": "17918ed23cd04fb15047f73e6c3bd9d9",
    "arguana": "8ad3e3c2a5867cdced806d6503f29b99",
    "scidocs": "38121350fc3a4d2f48850f6aff52e4a9",
    "quora": "18fb154900ba42a600f84b839c173167",
    "webis-touche2020": "46f650ba5a527fc69e0a6521c5a23563",
    "dbpedia-entity": "c2a39eb420a3164af735795df012ac2c",
    "climate-fever": "8b66f0a9126c521bae2bde127b4dc99d",
    "fever": "5a818580227bfb4b35bb6fa46d9b6c03",
    "hotpotqa": "f412724f78b0d91183a0e86805e16114",
    "nq": "d4d3d2e48787a744b6f6e691ff534307",
    "cqadupstack": "4e41456d7df8ee7760a7f866133bda78",
}

Qrels = dict[str, dict[str, int]]  # query id -> doc id -> graded relevance


class DataError(ValueError):
    """Input data that is missing or not valid BEIR format; the message names file and line."""


class DatasetNotFound(DataError):
    """A dataset name found nowhere locally (it may still be downloaded)."""


@dataclass
class BeirDataset:
    """A loaded BEIR folder. ``qrels`` maps split name to judgements, as read from disk."""

    name: str
    path: Path
    corpus: dict[str, dict[str, str]]  # doc id -> {"title": ..., "text": ...}, file order
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, Qrels]  # split -> qrels
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> count

    @property
    def splits(self) -> list[str]:
        return sorted(self.qrels)

    def fingerprint(self) -> str:
        """sha256 over the corpus, queries and qrels as loaded (a slice has its own)."""
        digest = hashlib.sha256()
        digest.update(corpus_fingerprint(self.corpus).encode())
        for qid in sorted(self.queries):
            digest.update(f"q\x1f{qid}\x1f{self.queries[qid]}\x1e".encode())
        for split in sorted(self.qrels):
            for qid in sorted(self.qrels[split]):
                for did, score in sorted(self.qrels[split][qid].items()):
                    digest.update(f"r\x1f{split}\x1f{qid}\x1f{did}\x1f{score}\x1e".encode())
        return "sha256:" + digest.hexdigest()


@dataclass
class Splits:
    """Query splits for one experiment. ``test`` is evaluated and never used for choosing."""

    train: Qrels
    dev: Qrels
    test: Qrels
    dev_source: str  # how dev was made, in words, for the report
    test_source: str


def corpus_fingerprint(corpus: dict[str, dict[str, str]]) -> str:
    """sha256 of the corpus content (ids, titles, texts), independent of file order."""
    digest = hashlib.sha256()
    for did in sorted(corpus):
        doc = corpus[did]
        digest.update(f"{did}\x1f{doc.get('title', '')}\x1f{doc['text']}\x1e".encode())
    return "sha256:" + digest.hexdigest()


def doc_text(doc: dict[str, str]) -> str:
    """The text a model or BM25 sees: title and text joined by a space, as BEIR does."""
    title = doc.get("title") or ""
    return f"{title} {doc['text']}".strip() if title else doc["text"]


# --------------------------------------------------------------------------- resolution


def looks_like_path(name_or_path: str) -> bool:
    """A dataset value with a slash, or starting with ``.`` or ``~``, is a path; else a name."""
    return "/" in name_or_path or name_or_path.startswith((".", "~"))


def dataset_files(folder: Path) -> list[Path]:
    """The files a BEIR folder is read from, checked: corpus, queries and every qrels split.

    Raises:
        DataError: a file is missing, naming what is there instead.
    """
    folder = Path(folder)
    missing = [name for name in ("corpus.jsonl", "queries.jsonl") if not (folder / name).is_file()]
    qrels = sorted((folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
    if not qrels:
        missing.append("qrels/<split>.tsv")
    if missing:
        raise DataError(f"{folder} is not a BEIR-format folder: no {', '.join(missing)} (a BEIR folder "
                        "holds corpus.jsonl, queries.jsonl and qrels/<split>.tsv)")
    return [folder / "corpus.jsonl", folder / "queries.jsonl", *qrels]


def resolve_dataset(name_or_path: str, download: bool = True) -> Path:
    """Find a BEIR folder by path or name (DESIGN.md: env dir, then ``data/``, then download).

    A path (see :func:`looks_like_path`) is relative to the project root. The folder found is
    checked to hold a BEIR dataset.

    Raises:
        DataError: when the dataset is nowhere and cannot be downloaded; says where it looked.
    """
    if looks_like_path(name_or_path):
        candidate = paths.resolve(name_or_path)
        if not candidate.is_dir():
            raise DataError(f"dataset folder not found: {candidate} (relative paths are relative to "
                            f"the project root, {paths.project_root()})")
        dataset_files(candidate)
        return candidate.resolve()

    looked = []
    env_dir = paths.env_data_dir()
    if env_dir is not None:
        looked.append(env_dir / name_or_path)
    looked.append(paths.data_dir() / name_or_path)
    for place in looked:
        if (place / "corpus.jsonl").is_file():
            dataset_files(place)
            return place.resolve()

    if name_or_path not in BEIR_MD5:
        raise DataError(
            f"dataset {name_or_path!r} not found; looked in: {', '.join(map(str, looked))}. "
            f"It is not a known BEIR dataset ({', '.join(sorted(BEIR_MD5))}) either: pass a path to "
            "a BEIR-format folder, or set EMBEDTUNE_DATA_DIR to the folder that holds it."
        )
    if not download:
        raise DatasetNotFound(f"dataset {name_or_path!r} not found; looked in: {', '.join(map(str, looked))}")
    try:
        return download_beir(name_or_path, paths.data_dir())
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DataError(
            f"dataset {name_or_path!r} not found locally (looked in: {', '.join(map(str, looked))}) "
            f"and the download from {BEIR_MIRROR.format(name=name_or_path)} failed ({exc}). "
            "Offline? Copy the BEIR folder into data/ or point EMBEDTUNE_DATA_DIR at a folder that holds it."
        ) from exc


def download_beir(name: str, target_root: Path, url: str | None = None, md5: str | None = None) -> Path:
    """Download a BEIR zip, verify its md5, and unzip it safely into ``target_root/name``.

    Nothing is left behind on failure: the zip goes to a temporary folder, and the extracted
    folder appears under its final name only once complete.
    """
    url = url or BEIR_MIRROR.format(name=name)
    md5 = md5 or BEIR_MD5[name]
    target_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_root, prefix=f".{name}.download.") as tmp:
        zip_path = Path(tmp) / f"{name}.zip"
        log.info("downloading %s", url)
        with urllib.request.urlopen(url, timeout=30) as response, open(zip_path, "wb") as out:
            shutil.copyfileobj(response, out)
        digest = hashlib.md5(zip_path.read_bytes()).hexdigest()
        if digest != md5:
            raise DataError(f"{url}: md5 {digest} does not match the published {md5}; not extracted")
        extracted = Path(tmp) / "extracted"
        safe_unzip(zip_path, extracted)
        inner = extracted / name if (extracted / name).is_dir() else extracted
        final = target_root / name
        with atomic_path(final) as out:
            shutil.move(str(inner), out)
    return final.resolve()


def safe_unzip(zip_path: Path, target: Path) -> None:
    """Extract a zip, refusing members that would land outside ``target`` (zip-slip) or links."""
    target = target.resolve()
    with zipfile.ZipFile(zip_path) as archive:
        for member in archive.infolist():
            dest = (target / member.filename).resolve()
            if not dest.is_relative_to(target):
                raise DataError(f"{zip_path}: member {member.filename!r} would escape the target folder")
            if (member.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(f"{zip_path}: member {member.filename!r} is a symbolic link")
        archive.extractall(target)


# --------------------------------------------------------------------------- loading


def _lines(path: Path):
    """(line number, line) of a UTF-8 text file (a byte-order mark is skipped)."""
    return enumerate(read_text(path, DataError).splitlines(), 1)


def _read_jsonl(path: Path, kind: str) -> tuple[dict[str, dict], dict[str, int]]:
    """The rows of a JSON-lines file by ``_id``, and the line each came from."""
    if not path.is_file():
        raise DataError(f"{path}: missing ({kind} file of a BEIR folder)")
    rows: dict[str, dict] = {}
    where: dict[str, int] = {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}:{lineno}: malformed JSON ({exc.msg})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object")
        if "_id" not in row:
            raise DataError(f"{path}:{lineno}: missing '_id'")
        if not isinstance(row.get("text"), str):
            raise DataError(f"{path}:{lineno}: missing 'text' (or not a string)")
        rid = str(row["_id"])
        if rid in rows:
            raise DataError(f"{path}:{lineno}: duplicate _id {rid!r} (first on line {where[rid]})")
        rows[rid] = row
        where[rid] = lineno
    return rows, where


def load_corpus(path: Path) -> dict[str, dict[str, str]]:
    rows, where = _read_jsonl(path, "corpus")
    if not rows:
        raise DataError(f"{path}: empty corpus")
    empty = [rid for rid, r in rows.items() if not r["text"].strip() and not str(r.get("title") or "").strip()]
    if empty:  # real BEIR data has them (cranfield: 2); BEIR keeps them, and so do the published scores
        log.warning("%s: %d document(s) with neither text nor title (first: line %d, %r); kept, as BEIR "
                    "keeps them", path, len(empty), where[empty[0]], empty[0])
    return {rid: {"title": str(r.get("title") or ""), "text": r["text"]} for rid, r in rows.items()}


def load_queries(path: Path) -> dict[str, str]:
    rows, where = _read_jsonl(path, "queries")
    for rid, r in rows.items():
        if not r["text"].strip():
            raise DataError(f"{path}:{where[rid]}: query {rid!r} has an empty text (it would score 0 "
                            "for every system); remove it or give it text")
    return {rid: r["text"] for rid, r in rows.items()}


def load_qrels(path: Path, lines: dict | None = None) -> Qrels:
    """Read one qrels TSV (header optional). Returns ``{qid: {doc_id: score}}``; with ``lines``
    (a dict), ``lines[(qid, doc_id)]`` is set to the line each judgement came from."""
    qrels: Qrels = {}
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        cols = line.split("\t")
        if lineno == 1 and cols[0].strip().lower() in ("query-id", "query_id", "qid"):
            continue
        if len(cols) == 4:  # TREC style: qid 0 docid score
            cols = [cols[0], cols[2], cols[3]]
        if len(cols) != 3:
            raise DataError(f"{path}:{lineno}: expected 3 tab-separated columns, got {len(cols)}")
        qid, did, score = (c.strip() for c in cols)
        try:
            value = int(float(score))
        except ValueError:
            raise DataError(f"{path}:{lineno}: score {score!r} is not a number") from None
        qrels.setdefault(qid, {})[did] = value
        if lines is not None:
            lines[(qid, did)] = lineno
    return qrels


def _unknown_ids(file: Path, raw: Qrels, lines: dict, queries: dict, corpus: dict) -> str | None:
    """A message naming the first unknown ids of a qrels file with their lines, or None."""
    bad = [(lines[(q, d)], f"query id {q!r}" if q not in queries else f"doc id {d!r}")
           for q, docs in raw.items() for d in docs if q not in queries or d not in corpus]
    if not bad:
        return None
    bad.sort()
    shown = "; ".join(f"line {n}: {what}" for n, what in bad[:3])
    more = f" (and {len(bad) - 3} more)" if len(bad) > 3 else ""
    return (f"{file}: {len(bad)} judgements name ids that queries.jsonl / corpus.jsonl lack: "
            f"{shown}{more}")


def load_beir(name_or_path: str, strict: bool = True, download: bool = True) -> BeirDataset:
    """Load and validate a BEIR-format dataset.

    Args:
        name_or_path: a dataset name or a folder, resolved by :func:`resolve_dataset`.
        strict: qrels naming unknown queries or documents raise; otherwise they are dropped
            and counted in ``dataset.dropped``.
        download: allow downloading a known BEIR dataset when it is not found locally.
    """
    folder = resolve_dataset(name_or_path, download=download)
    files = dataset_files(folder)[2:]
    corpus = load_corpus(folder / "corpus.jsonl")
    queries = load_queries(folder / "queries.jsonl")
    qrels, dropped = {}, {}
    for file in files:
        split = file.stem
        lines: dict = {}
        raw = load_qrels(file, lines)
        unknown_q = sum(1 for q in raw if q not in queries)
        unknown_d = sum(1 for q in raw for d in raw[q] if d not in corpus)
        message = _unknown_ids(file, raw, lines, queries, corpus)
        if message:
            if strict:
                raise DataError(message + "; fix them, or set data.strict: false to drop them")
            log.warning("%s; dropped", message)
            raw = {
                q: {d: s for d, s in docs.items() if d in corpus}
                for q, docs in raw.items()
                if q in queries
            }
            raw = {q: docs for q, docs in raw.items() if docs}
        dropped[split] = {"unknown_queries": unknown_q, "unknown_docs": unknown_d}
        qrels[split] = raw
    return BeirDataset(
        name=folder.name if looks_like_path(name_or_path) else name_or_path,
        path=folder,
        corpus=corpus,
        queries=queries,
        qrels=qrels,
        dropped=dropped,
    )


# --------------------------------------------------------------------------- splits


def relevant_only(qrels: Qrels, min_score: int) -> Qrels:
    """Keep judgements with ``score >= min_score``, and queries that keep at least one."""
    kept = {q: {d: s for d, s in docs.items() if s >= min_score} for q, docs in qrels.items()}
    return {q: docs for q, docs in kept.items() if docs}


def _require_split(ds: BeirDataset, split: str, role: str) -> Qrels:
    if split not in ds.qrels:
        raise DataError(
            f"{ds.path}: {role} split {split!r} does not exist; available: {', '.join(ds.splits)}"
        )
    return ds.qrels[split]


def _shuffled(ids, seed: int) -> list[str]:
    ordered = sorted(ids)
    random.Random(seed).shuffle(ordered)
    return ordered


def make_splits(ds: BeirDataset, cfg: DataConfig, seed: int) -> Splits:
    """Decide train / dev / test queries from the config. Test is never used for choosing.

    - ``query_split`` set: the eval split's judged queries are divided by a seeded shuffle.
    - else test is ``eval_split``; dev is the official ``dev_split`` when given, otherwise a
      seeded ``dev_fraction`` of the train queries (none when there is no train split).
    """
    evaluated = relevant_only(_require_split(ds, cfg.eval_split, "eval"), cfg.min_score)
    if cfg.query_split is not None:
        shares = cfg.query_split
        total = shares.train + shares.dev + shares.test
        if abs(total - 1.0) > 1e-6 or min(shares.train, shares.dev, shares.test) < 0:
            raise DataError(f"data.query_split shares must be >= 0 and sum to 1, got {total}")
        order = _shuffled(evaluated, seed)
        n_train = round(shares.train * len(order))
        n_dev = round(shares.dev * len(order))
        pick = lambda ids: {q: evaluated[q] for q in ids}  # noqa: E731
        return Splits(
            train=pick(order[:n_train]),
            dev=pick(order[n_train : n_train + n_dev]),
            test=pick(order[n_train + n_dev :]),
            dev_source=f"{shares.dev:.0%} of the judged '{cfg.eval_split}' queries (seed {seed})",
            test_source=f"{shares.test:.0%} of the judged '{cfg.eval_split}' queries (seed {seed})",
        )

    test_source = f"official '{cfg.eval_split}' split"
    train = relevant_only(ds.qrels.get(cfg.train_split, {}), cfg.min_score)
    if cfg.dev_split is not None:
        dev = relevant_only(_require_split(ds, cfg.dev_split, "dev"), cfg.min_score)
        return Splits(train, dev, evaluated, f"official '{cfg.dev_split}' split", test_source)
    if not train:
        return Splits({}, {}, evaluated, "none (no train or dev split)", test_source)
    order = _shuffled(train, seed)
    n_dev = max(1, round(cfg.dev_fraction * len(order)))
    dev = {q: train[q] for q in order[:n_dev]}
    train = {q: train[q] for q in order[n_dev:]}
    return Splits(
        train,
        dev,
        evaluated,
        f"{cfg.dev_fraction:.0%} of '{cfg.train_split}' queries held out (seed {seed})",
        test_source,
    )


def take_slice(ds: BeirDataset, splits: Splits, max_queries: int | None, max_docs: int | None,
               seed: int) -> tuple[BeirDataset, Splits]:
    """A small, self-consistent slice for smoke tests: the first ``max_queries`` of each split,
    every document judged for them, and ``max_docs`` other documents (seeded choice)."""
    if max_queries is None and max_docs is None:
        return ds, splits

    def first(qrels: Qrels) -> Qrels:
        keep = sorted(qrels)[:max_queries] if max_queries is not None else sorted(qrels)
        return {q: qrels[q] for q in keep}

    splits = Splits(first(splits.train), first(splits.dev), first(splits.test),
                    splits.dev_source, splits.test_source)
    judged = {d for part in (splits.train, splits.dev, splits.test) for docs in part.values() for d in docs}
    corpus = ds.corpus
    if max_docs is not None:
        others = _shuffled((d for d in ds.corpus if d not in judged), seed)[:max_docs]
        keep = judged | set(others)
        corpus = {d: doc for d, doc in ds.corpus.items() if d in keep}
    used_q = {q for part in (splits.train, splits.dev, splits.test) for q in part}
    sliced = BeirDataset(
        name=ds.name,
        path=ds.path,
        corpus=corpus,
        queries={q: t for q, t in ds.queries.items() if q in used_q},
        qrels={"train": splits.train, "dev": splits.dev, "test": splits.test},
        dropped=ds.dropped,
    )
    return sliced, splits
