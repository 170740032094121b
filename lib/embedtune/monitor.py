"""Monitoring: recall over time per version, regression flags, corpus drift, when to re-train.

The brief's maintenance advice, made measurable:

- *Monitor recall over time*: every evaluation of a version on a gold set appends one line to a
  JSONL log (time, version, gold set, corpus fingerprint, mean metrics, and the monitored metric
  per query, so later checks can pair queries).
- *Re-train when recall metrics regress*: :func:`check_regression` holds a version's latest
  evaluation to its reference (its first, or its best). It fires only when the drop exceeds
  ``monitor.regression_threshold`` **and** a one-sided permutation test over queries says the drop
  is unlikely to be noise (``p < monitor.regression_p``): paired (sign flips per query) when both
  evaluations scored the same queries, two-sample when the gold set has since changed.
- *Re-train when the corpus shifts substantially*: :func:`corpus_drift` measures the share of word
  tokens whose word the reference corpus never used, and how the embedding distribution moved:
  the cosine between the two corpus centroids (1 = no shift of the mean), and the cross-validated
  AUC of a logistic-regression domain classifier telling reference documents from new ones
  (0.5 = the new documents look like the old ones; 1.0 = a different domain). The classifier
  sees the whole distribution, not only its mean, and its AUC reads the same on every model and
  corpus size, which is why it, not the centroid, carries the threshold. Measured with the
  scifact fine-tuned model: 1,500 nfcorpus documents against scifact's give AUC 0.93, two random
  sets of scifact documents 0.47; the centroid cosine of two random sets of 300 scifact documents
  is only 0.88 (a fine-tuned model spreads documents out, so their mean is short and noisy).
  Vocabulary says less here: nfcorpus's medical words are mostly scifact's (0.9 % of the grown
  corpus's tokens are new words; 3.9 % within the nfcorpus documents, against 2.4 % for held-out
  scifact documents), so its threshold is meant for a corpus that brings a new vocabulary.
- *Re-train when the generic embedding model is upgraded*: the base model's fingerprint now
  differs from the one the version was trained from.

Example:
    >>> log = MonitorLog(registry.log_path)
    >>> log.append(evaluate_version(index, model, "v1", queries, qrels, ModelConfig(), ["recall@10"]))
    >>> check_regression(log.entries(), "v1", MonitorConfig()).fired
    False
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from embedtune.config import ModelConfig, MonitorConfig
from embedtune.data import corpus_fingerprint, doc_text
from embedtune.io import atomic_write_json

log = logging.getLogger(__name__)

WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")  # as embedtune.decide counts words


# --------------------------------------------------------------------------- the log


def gold_fingerprint(queries: dict[str, str], qrels: dict[str, dict[str, int]]) -> str:
    """sha256 over the judged queries' texts and judgements: which gold set was evaluated."""
    digest = hashlib.sha256()
    for qid in sorted(qrels):
        digest.update(f"{qid}\x1f{queries.get(qid, '')}\x1e".encode())
        for did, score in sorted(qrels[qid].items()):
            digest.update(f"{did}\x1f{score}\x1e".encode())
    return "sha256:" + digest.hexdigest()


class MonitorLog:
    """An append-only JSONL file, one evaluation per line.

    Each entry is written with a single ``write`` on a file opened in append mode and then
    fsynced, so concurrent writers do not interleave within a line and a crash loses at most the
    line being written; a torn last line is skipped (with a warning) when reading.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        from embedtune.provenance import now

        entry = {"time": entry.get("time") or now(), **{k: v for k, v in entry.items() if k != "time"}}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        return entry

    def entries(self, version: str | None = None, gold_set: str | None = None) -> list[dict]:
        """Entries in the order they were written, optionally of one version and gold set."""
        if not self.path.is_file():
            return []
        out = []
        with open(self.path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("%s:%d: unreadable line skipped (an interrupted write?)", self.path, lineno)
                    continue
                if version is not None and entry["version"] != version:
                    continue
                if gold_set is not None and entry.get("gold_set") != gold_set:
                    continue
                out.append(entry)
        return out


def evaluate_version(index, model, version: str, queries: dict[str, str],
                     qrels: dict[str, dict[str, int]], cfg: ModelConfig, metrics: list[str], *,
                     monitored: str = "recall@10", gold_set: str = "gold", label: str | None = None,
                     groups: dict[str, set[str]] | None = None, top_k: int = 100) -> dict[str, Any]:
    """Evaluate ``version`` through its version-guarded index; return a log entry (not written).

    Args:
        index: the :class:`~embedtune.index_store.CorpusIndex` of ``version``.
        queries, qrels: the gold set (every judged query is evaluated).
        metrics: ranx metric names averaged into the entry.
        monitored: the metric also kept per query (for paired regression tests).
        gold_set: the gold set's name; the log compares evaluations within one name.
        groups: optional named subsets of the queries, each averaged separately
            (e.g. the queries of each domain).
    """
    from embedtune.evaluate import evaluate_runs

    metrics = list(dict.fromkeys([*metrics, monitored]))
    asked = {q: queries[q] for q in qrels}
    run = index.search(model, asked, version=version, cfg=cfg, top_k=top_k)
    scores = evaluate_runs(qrels, {version: run}, metrics)
    per_query = scores.per_query.loc[version]
    entry = {
        "version": version,
        "label": label,
        "gold_set": gold_set,
        "gold_fingerprint": gold_fingerprint(queries, qrels),
        "corpus_fingerprint": index.corpus_fingerprint,
        "model_fingerprint": index.model_fingerprint,
        "n_queries": scores.n_queries,
        "n_docs": len(index.doc_ids),
        "metrics": {m: round(v, 6) for m, v in scores.mean[version].items()},
        "per_query": {monitored: {q: round(float(v), 6) for q, v in per_query[monitored].items()}},
    }
    if groups:
        scored = set(per_query.index)
        entry["groups"] = {}
        for name, ids in groups.items():
            mine = sorted(ids & scored)
            if mine:
                entry["groups"][name] = {"n_queries": len(mine), **{
                    m: round(float(per_query.loc[mine, m].mean()), 6) for m in metrics}}
    return entry


# --------------------------------------------------------------------------- regression


@dataclass
class Regression:
    """The latest evaluation of a version against its reference evaluation."""

    version: str
    metric: str
    reference_time: str
    latest_time: str
    reference_mean: float
    latest_mean: float
    delta: float  # latest - reference (negative: a drop)
    p_value: float  # one-sided: how likely a drop this large is under "no change"
    test: str  # "paired" (same queries) or "two-sample" (the gold set changed)
    n_reference: int
    n_latest: int
    shared_queries: int
    shared_delta: float | None  # latest - reference on the queries both scored
    threshold: float
    alpha: float
    fired: bool

    def as_dict(self) -> dict:
        return asdict(self)

    def explain(self) -> str:
        verdict = "REGRESSION" if self.fired else "no regression"
        text = (f"{self.version}: {self.metric} {self.reference_mean:.3f} -> {self.latest_mean:.3f} "
                f"({self.delta:+.3f}; {self.test} permutation test p = {self.p_value:.3g}; flag at a "
                f"drop > {self.threshold:.3f} with p < {self.alpha}): {verdict}")
        if self.test == "two-sample" and self.shared_delta is not None:
            text += f". On the {self.shared_queries} queries both scored: {self.shared_delta:+.3f}"
        return text


def drop_test(reference: dict[str, float], latest: dict[str, float], permutations: int = 5000,
              seed: int = 0) -> tuple[float, float, str]:
    """Mean drop from ``reference`` to ``latest`` (per-query values) and its one-sided p-value.

    Paired (each query's two values swapped at random) when both scored the same queries;
    otherwise a two-sample test (queries reassigned at random between the two sets).

    Returns:
        ``(latest mean - reference mean, p-value for "latest is lower", test name)``.
    """
    from scipy.stats import permutation_test

    def drop(a, b, axis=-1):
        return np.mean(a, axis=axis) - np.mean(b, axis=axis)

    paired = set(reference) == set(latest)
    if paired:
        qids = sorted(reference)
        a = np.array([reference[q] for q in qids])
        b = np.array([latest[q] for q in qids])
        if np.all(a == b):
            return 0.0, 1.0, "paired"
    else:
        a, b = np.array(list(reference.values())), np.array(list(latest.values()))
    result = permutation_test((a, b), drop, permutation_type="samples" if paired else "independent",
                              alternative="greater", n_resamples=permutations, vectorized=True,
                              random_state=seed)
    return float(b.mean() - a.mean()), float(result.pvalue), "paired" if paired else "two-sample"


def check_regression(entries: list[dict], version: str, cfg: MonitorConfig,
                     gold_set: str | None = None, seed: int = 0) -> Regression | None:
    """Compare ``version``'s latest evaluation with its reference (``monitor.reference``).

    Returns:
        None when the version has fewer than two evaluations (on ``gold_set``, if given).
    """
    mine = [e for e in entries if e["version"] == version
            and (gold_set is None or e.get("gold_set") == gold_set)]
    metric = cfg.metric
    mine = [e for e in mine if metric in e.get("per_query", {})]
    if len(mine) < 2:
        return None
    latest = mine[-1]
    earlier = mine[:-1]
    reference = earlier[0] if cfg.reference == "first" else max(earlier, key=lambda e: e["metrics"][metric])
    ref_q, new_q = reference["per_query"][metric], latest["per_query"][metric]
    delta, p, test = drop_test(ref_q, new_q, cfg.permutations, seed)
    shared = sorted(set(ref_q) & set(new_q))
    shared_delta = (float(np.mean([new_q[q] - ref_q[q] for q in shared])) if shared else None)
    return Regression(
        version=version, metric=metric, reference_time=reference["time"], latest_time=latest["time"],
        reference_mean=float(np.mean(list(ref_q.values()))), latest_mean=float(np.mean(list(new_q.values()))),
        delta=delta, p_value=p, test=test, n_reference=len(ref_q), n_latest=len(new_q),
        shared_queries=len(shared), shared_delta=shared_delta, threshold=cfg.regression_threshold,
        alpha=cfg.regression_p, fired=bool(-delta > cfg.regression_threshold and p < cfg.regression_p),
    )


# --------------------------------------------------------------------------- drift


def word_counts(texts) -> Counter:
    return Counter(w for text in texts for w in WORD.findall(text.lower()))


@dataclass
class CorpusSnapshot:
    """What drift is measured against: the corpus a version's index was first built on."""

    corpus_fingerprint: str
    doc_hashes: dict[str, str]  # doc id -> sha256 of its text
    vocabulary: dict[str, int]  # word -> count
    centroid: list[float]  # mean of the normalised document embeddings (of the indexing model)
    model_version: str
    created: str

    @classmethod
    def from_index(cls, corpus: dict[str, dict[str, str]], index) -> "CorpusSnapshot":
        from embedtune.provenance import now

        return cls(index.corpus_fingerprint, dict(zip(index.doc_ids, index.manifest["doc_hashes"])),
                   dict(word_counts(doc_text(corpus[d]) for d in index.doc_ids)),
                   [round(float(x), 7) for x in index.embeddings.mean(axis=0)],
                   index.model_version, now())

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "CorpusSnapshot":
        return cls(**json.loads(Path(path).read_text()))


@dataclass
class Drift:
    reference_docs: int
    current_docs: int
    new_docs: int  # added or changed since the reference
    removed_docs: int
    new_doc_share: float  # of the current corpus
    new_vocab_token_share: float  # current word tokens whose word the reference never used
    new_vocab_type_share: float  # current word types the reference never used
    new_docs_vocab_token_share: float | None  # the same, within the new documents only
    top_new_words: list[str]
    centroid_cosine: float  # reference vs current corpus mean embedding
    domain_auc: float | None  # reference vs new documents (None: too few of either)
    model_version: str
    thresholds: dict[str, float]
    drifted: bool
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def domain_auc(reference: np.ndarray, new: np.ndarray, max_docs: int, seed: int = 0) -> float | None:
    """Cross-validated ROC AUC of a logistic regression telling ``new`` rows from ``reference``
    rows (each side subsampled to ``max_docs``). None with fewer than 10 rows on a side."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if min(len(reference), len(new)) < 10:
        return None
    rng = np.random.default_rng(seed)
    ref = reference[rng.permutation(len(reference))[:max_docs]]
    cur = new[rng.permutation(len(new))[:max_docs]]
    x = np.vstack([ref, cur])
    y = np.r_[np.zeros(len(ref)), np.ones(len(cur))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    proba = cross_val_predict(LogisticRegression(max_iter=2000), x, y, cv=folds,
                              method="predict_proba")[:, 1]
    return float(roc_auc_score(y, proba))


def corpus_drift(reference: CorpusSnapshot, corpus: dict[str, dict[str, str]], index,
                 cfg: MonitorConfig, seed: int = 0) -> Drift:
    """How far ``corpus`` (embedded in ``index``, which must be current) moved from ``reference``.

    The domain classifier compares the reference documents still present and unchanged with
    the added or changed ones, both embedded by the index's model.
    """
    if index.corpus_fingerprint != corpus_fingerprint(corpus):
        raise ValueError(f"the index at {index.folder} does not hold this corpus; update it first")
    current = dict(zip(index.doc_ids, index.manifest["doc_hashes"]))  # the index holds this corpus
    old = [d for d in index.doc_ids if reference.doc_hashes.get(d) == current[d]]
    new = [d for d in index.doc_ids if reference.doc_hashes.get(d) != current[d]]
    removed = sum(1 for d in reference.doc_hashes if d not in corpus)

    counts = word_counts(doc_text(corpus[d]) for d in corpus)
    known = reference.vocabulary
    unseen = {w: c for w, c in counts.items() if w not in known}
    tokens = sum(counts.values())
    new_counts = word_counts(doc_text(corpus[d]) for d in new)
    new_tokens = sum(new_counts.values())

    emb = index.embeddings
    centroid = emb.mean(axis=0)
    ref_centroid = np.asarray(reference.centroid)
    cosine = float(centroid @ ref_centroid / (np.linalg.norm(centroid) * np.linalg.norm(ref_centroid)))
    auc = domain_auc(index.embeddings_of(old), index.embeddings_of(new), cfg.drift_max_docs, seed) \
        if new and old else None

    share = len(new) / len(corpus)
    vocab_share = sum(unseen.values()) / tokens if tokens else 0.0
    reasons = []
    if vocab_share >= cfg.drift_new_vocab_share:
        reasons.append(f"{vocab_share:.1%} of the corpus's word tokens are words the reference corpus "
                       f"never used (threshold {cfg.drift_new_vocab_share:.0%})")
    if auc is not None and auc >= cfg.drift_domain_auc and share >= cfg.drift_min_new_docs:
        reasons.append(f"{len(new)} new documents ({share:.0%} of the corpus, threshold "
                       f"{cfg.drift_min_new_docs:.0%}) are told apart from the reference documents "
                       f"with AUC {auc:.2f} (threshold {cfg.drift_domain_auc:.2f}): another domain")
    return Drift(
        reference_docs=len(reference.doc_hashes), current_docs=len(corpus), new_docs=len(new),
        removed_docs=removed, new_doc_share=round(share, 6),
        new_vocab_token_share=round(vocab_share, 6),
        new_vocab_type_share=round(len(unseen) / len(counts), 6) if counts else 0.0,
        new_docs_vocab_token_share=round(sum(c for w, c in new_counts.items() if w not in known)
                                         / new_tokens, 6) if new_tokens else None,
        top_new_words=[w for w, _ in Counter(unseen).most_common(15)],
        centroid_cosine=round(cosine, 6), domain_auc=None if auc is None else round(auc, 4),
        model_version=index.model_version,
        thresholds={"new_vocab_token_share": cfg.drift_new_vocab_share,
                    "domain_auc": cfg.drift_domain_auc, "min_new_doc_share": cfg.drift_min_new_docs},
        drifted=bool(reasons), reasons=reasons,
    )


# --------------------------------------------------------------------------- recommendation


@dataclass
class Recommendation:
    retrain: bool
    triggers: dict[str, bool]  # corpus_drift, base_model_upgraded, recall_regression
    reasons: list[str]

    def as_dict(self) -> dict:
        return asdict(self)

    def text(self) -> str:
        head = "Re-train recommended:" if self.retrain else "No re-train needed:"
        return "\n".join([head, *[f"- {r}" for r in self.reasons]])


def recommend(version_manifest: dict, *, drift: Drift | None = None,
              regression: Regression | None = None, base_fingerprint: str | None = None,
              base_model: str | None = None) -> Recommendation:
    """The brief's three re-train triggers, each with the measurement behind it.

    Args:
        version_manifest: the registry manifest of the version in service.
        drift: :func:`corpus_drift` of the current corpus, if measured.
        regression: :func:`check_regression` of the version, if it has two evaluations.
        base_fingerprint: the fingerprint of the base model as it resolves today.
        base_model: its name (an upgrade may also be a new name in params).
    """
    reasons: list[str] = []
    triggers = {"corpus_drift": False, "base_model_upgraded": False, "recall_regression": False}
    version = version_manifest["version"]
    if drift is not None:
        triggers["corpus_drift"] = drift.drifted
        reasons += drift.reasons or [
            f"corpus drift below the thresholds: {drift.new_vocab_token_share:.1%} new-word tokens, "
            f"{drift.new_docs} new documents ({drift.new_doc_share:.0%})"
            + (f", domain AUC {drift.domain_auc:.2f}" if drift.domain_auc is not None else "")]
    was_fp, was_name = version_manifest.get("base_model_fingerprint"), version_manifest.get("base_model")
    if base_fingerprint is not None and was_fp is not None and base_fingerprint != was_fp:
        triggers["base_model_upgraded"] = True
        reasons.append(f"the base model {base_model or was_name} now has weights {base_fingerprint[7:19]}; "
                       f"{version} was fine-tuned from {was_name} with weights {was_fp[7:19]}: an upgraded "
                       "base model")
    elif base_model is not None and was_name is not None and base_model != was_name:
        triggers["base_model_upgraded"] = True
        reasons.append(f"params now name the base model {base_model}; {version} was fine-tuned from {was_name}")
    elif base_fingerprint is not None and was_fp is not None:
        reasons.append(f"base model unchanged ({was_name}, weights {was_fp[7:19]})")
    if regression is not None:
        triggers["recall_regression"] = regression.fired
        reasons.append(regression.explain())
    return Recommendation(any(triggers.values()), triggers, reasons)
