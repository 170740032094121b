"""What a generated query must pass: not degenerate, and found again by a retriever (round trip)."""

from __future__ import annotations

import functools
import logging
import re
from typing import Callable

from embedtune.config import FilterConfig

log = logging.getLogger(__name__)


Run = dict[str, dict[str, float]]
SearchFn = Callable[[dict[str, str], int], Run]  # (queries id -> text, top_k) -> run


_WORD = re.compile(r"\w+", re.UNICODE)


def _stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN

        extra = STOPWORDS_EN
    except ImportError:
        extra = ()
    return frozenset(extra) | frozenset(
        "what which who whom whose when where why how does do did is are was were can could "
        "should would will may might about from with than that this these those there their "
        "have has had been being into onto over under any some more most other".split())


STOPWORDS = _stopwords()


def content_words(text: str) -> set[str]:
    """Lower-cased, stemmed words of 3+ letters that are not stop words (numbers count)."""
    words = [w for w in _WORD.findall(text.lower())
             if (len(w) >= 3 or w.isdigit()) and w not in STOPWORDS]
    stemmer = _stemmer()
    return set(stemmer.stemWords(words)) if stemmer else set(words)


@functools.cache
def _stemmer():
    """One English Snowball stemmer per process (PyStemmer), or None without it."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


def degenerate_reason(query: str, passage: str, example_queries: set[str],
                      cfg: FilterConfig = FilterConfig()) -> str | None:
    """Why a generated query is unusable, or None when it passes.

    Reasons: ``empty``, ``too_short``, ``too_long``, ``prompt_echo`` (it repeats the prompt's
    ``Passage:``/``Query:`` labels), ``repeated_ngram`` (a word n-gram occurs twice, or a word
    follows itself: the model looped), ``example_copy`` (a prompt example's query, after
    normalisation), ``no_shared_word`` (no content word in common with the passage).

    Example:
        >>> degenerate_reason("cats cats cats", "Cats purr.", set())
        'repeated_ngram'
    """
    from embedtune.pairs import normalize_query

    words = query.split()
    if not words:
        return "empty"
    if len(words) < cfg.min_words:
        return "too_short"
    if len(words) > cfg.max_words:
        return "too_long"
    if re.search(r"\b(passage|query)\s*:", query, flags=re.IGNORECASE):
        return "prompt_echo"
    tokens = _WORD.findall(query.lower())
    if any(a == b for a, b in zip(tokens, tokens[1:])):
        return "repeated_ngram"
    n = cfg.repeat_ngram
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) != len(set(grams)):
        return "repeated_ngram"
    if normalize_query(query) in example_queries:
        return "example_copy"
    if cfg.shared_content_word and not content_words(query) & content_words(passage):
        return "no_shared_word"
    return None


def as_search_fn(retriever, model=None, model_cfg=None) -> SearchFn:
    """Adapt a retriever to ``search(queries, top_k) -> run``.

    Args:
        retriever: a callable with that signature; a :class:`~embedtune.retrieval.BM25Retriever`
            (or anything with ``.search(queries, top_k=...)``); or a
            :class:`~embedtune.retrieval.DenseIndex`, which also needs ``model`` and ``model_cfg``.
    """
    from embedtune.retrieval import DenseIndex

    if isinstance(retriever, DenseIndex):
        if model is None or model_cfg is None:
            raise ValueError("a DenseIndex searches with a model: pass model= and model_cfg=")
        return lambda queries, k: retriever.search(model, queries, model_cfg, top_k=k)
    if hasattr(retriever, "search"):
        return lambda queries, k: retriever.search(queries, top_k=k)
    if callable(retriever):
        return retriever
    raise TypeError(f"cannot search with {type(retriever).__name__}")


def rank_of(run_for_query: dict[str, float], doc_id: str) -> int | None:
    """1-based rank of ``doc_id`` in one query's run (ties broken by doc id), or None."""
    ranked = sorted(run_for_query.items(), key=lambda kv: (-kv[1], kv[0]))
    for rank, (did, _) in enumerate(ranked, 1):
        if did == doc_id:
            return rank
    return None


def roundtrip_filter(rows: list[dict], search: SearchFn, k: int = 20
                     ) -> tuple[list[dict], list[dict], dict[str, int | None]]:
    """Round-trip consistency (InPars, Promptagator): keep a generated query only when its
    source document ranks in the top ``k`` when the query is searched over the corpus.

    Args:
        rows: pairs with ``query_id``, ``anchor`` (the query) and ``doc_id`` (its source).
        search: ``search(queries, top_k) -> run`` over the corpus (see :func:`as_search_fn`).
        k: the depth that counts as found.

    Returns:
        The kept rows, the dropped rows, and each query id's rank of its source (None: not in top k).
    """
    if not rows:
        return [], [], {}
    run = search({r["query_id"]: r["anchor"] for r in rows}, k)
    ranks = {r["query_id"]: rank_of(run.get(r["query_id"], {}), r["doc_id"]) for r in rows}
    kept = [r for r in rows if ranks[r["query_id"]] is not None and ranks[r["query_id"]] <= k]
    dropped = [r for r in rows if not (ranks[r["query_id"]] is not None and ranks[r["query_id"]] <= k)]
    return kept, dropped, ranks
