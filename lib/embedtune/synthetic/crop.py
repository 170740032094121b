"""The no-LLM baseline: pseudo-queries cut from the documents (inverse cloze task, cropping)."""

from __future__ import annotations

import logging
import random
import re

from embedtune.config import CropConfig
from embedtune.data import doc_text
from embedtune.synthetic.prompts import truncate_words
from embedtune.synthetic.synthesize import select_documents

log = logging.getLogger(__name__)


_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation followed by a capital or a digit (good enough for
    abstracts; an abbreviation like "e.g. Foo" splits, which costs one odd pseudo-query)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def crop_queries(corpus: dict[str, dict[str, str]], cfg: CropConfig = CropConfig(), seed: int = 0,
                 exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Pseudo-queries cut from the documents themselves: the baseline that needs no LLM.

    - ``ict`` (inverse cloze task, Lee et al. 2019): a random sentence is the query; the
      document without it is the positive (with it, in ``keep_sentence`` of the pairs, so the
      model still learns some word matching). Documents with one sentence are skipped.
    - ``crop`` (independent cropping, Contriever): two random spans, each ``min_ratio`` to
      ``max_ratio`` of the document's words; one is the query, the other the positive.

    With ``positive: document`` the positive is the whole document instead, as for every other
    source of pairs (then ``ict`` queries appear verbatim in their positive).

    Returns:
        Pairs ``{"query_id": "<method>-<doc id>-<j>", "anchor", "doc_id", "positive", "score": 1,
        "source": method}``.
    """
    rng = random.Random(seed)
    rows = []
    for did in select_documents(corpus, cfg.max_docs, seed, exclude):
        text = doc_text(corpus[did])
        body = corpus[did]["text"]
        for j in range(cfg.queries_per_doc):
            if cfg.method == "ict":
                sentences = split_sentences(body)
                if len(sentences) < 2:
                    break
                pick = rng.randrange(len(sentences))
                query = sentences[pick]
                keep = rng.random() < cfg.keep_sentence
                rest = sentences if keep else sentences[:pick] + sentences[pick + 1 :]
                title = corpus[did].get("title") or ""
                positive = f"{title} {' '.join(rest)}".strip()
            else:
                words = text.split()
                if len(words) < 2 * cfg.min_words:
                    break
                query = _crop(words, cfg, rng)
                positive = _crop(words, cfg, rng)
            query = truncate_words(query, cfg.max_words)
            if len(query.split()) < cfg.min_words:
                continue
            rows.append({"query_id": f"{cfg.method}-{did}-{j}", "anchor": query, "doc_id": did,
                         "positive": text if cfg.positive == "document" else positive,
                         "score": 1, "source": cfg.method})
    return rows


def _crop(words: list[str], cfg: CropConfig, rng: random.Random) -> str:
    ratio = rng.uniform(cfg.min_ratio, cfg.max_ratio)
    length = max(cfg.min_words, min(len(words), round(ratio * len(words))))
    start = rng.randrange(len(words) - length + 1)
    return " ".join(words[start : start + length])
