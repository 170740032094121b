"""The whole step: documents chosen, queries generated, filtered and counted."""

from __future__ import annotations

import hashlib
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from embedtune.config import SyntheticConfig
from embedtune.data import doc_text
from embedtune.synthetic.cache import GenerationCache, text_fingerprint
from embedtune.synthetic.filters import SearchFn, degenerate_reason, roundtrip_filter
from embedtune.synthetic.generators import QueryGenerator
from embedtune.synthetic.prompts import BUILTIN_EXAMPLES, Example, build_prompt, rotate_examples

log = logging.getLogger(__name__)


def select_documents(corpus: dict[str, dict[str, str]], max_docs: int | None, seed: int,
                     exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """A seeded choice of up to ``max_docs`` document ids (sorted), skipping ``exclude``.

    Empty documents are skipped: there is nothing to ask about them."""
    ids = sorted(d for d in corpus if d not in exclude and doc_text(corpus[d]).strip())
    if max_docs is not None and len(ids) > max_docs:
        ids = sorted(random.Random(seed).sample(ids, max_docs))
    return ids


@dataclass
class SyntheticResult:
    """Generated pairs that passed every filter, what was dropped and why, and the counts."""

    pairs: list[dict]  # {"query_id", "anchor", "doc_id", "positive", "score", "source"}
    rejected: list[dict]  # the same keys plus "reason"
    stats: dict
    roundtrip_ranks: dict[str, int | None] = field(default_factory=dict)

    def samples(self, n: int = 8, seed: int = 0):
        """A seeded sample of kept and rejected queries, side by side with their passages."""
        import pandas as pd

        rng = random.Random(seed)
        kept = rng.sample(self.pairs, min(n, len(self.pairs)))
        dropped = rng.sample(self.rejected, min(n, len(self.rejected)))
        rows = [{"kept": True, "reason": "", **r} for r in kept] + [{"kept": False, **r} for r in dropped]
        if not rows:
            return pd.DataFrame(columns=["kept", "reason", "doc_id", "anchor", "positive"])
        frame = pd.DataFrame(rows)[["kept", "reason", "doc_id", "anchor", "positive"]]
        frame["positive"] = frame["positive"].str.slice(0, 140) + "..."
        return frame.rename(columns={"anchor": "query", "positive": "passage"})

    def table(self):
        """Generated, dropped per reason, and kept, as a one-column table."""
        import pandas as pd

        flat = {k: v for k, v in self.stats.items() if not isinstance(v, dict)}
        flat |= {f"dropped: {k}": v for k, v in self.stats["dropped"].items()}
        return pd.DataFrame([flat]).T.rename(columns={0: "value"})


def synthesize(corpus: dict[str, dict[str, str]], generator: QueryGenerator, cfg: SyntheticConfig,
               examples: Sequence[Example] | None = None, search: SearchFn | None = None,
               seed: int = 0, exclude: set[str] | frozenset[str] = frozenset(),
               cache_folder: Path | None = None) -> SyntheticResult:
    """Generate queries for a budget of documents, filter them, and return training pairs.

    Args:
        corpus: doc id -> {"title", "text"}.
        generator: from :func:`make_generator`, or any :class:`QueryGenerator`.
        cfg: budget, prompt, sampling and filter settings.
        examples: the few-shot pool (:func:`examples_from_pairs` of the *train* pairs); None or
            empty uses :data:`BUILTIN_EXAMPLES`.
        search: for round-trip consistency (:func:`as_search_fn`); required unless
            ``cfg.filters.roundtrip`` is ``"none"``.
        seed: chooses the documents.
        exclude: documents that get no queries.
        cache_folder: where generations are cached (default ``<cache>/synthetic``).

    Returns:
        The pairs (``source: "synthetic"``, query ids ``syn-<doc id>-<j>``), the rejected
        generations with their reason, and the counts.
    """
    from tqdm.auto import tqdm

    from embedtune.pairs import normalize_query
    from embedtune.progress import show_progress

    if cfg.filters.roundtrip != "none" and search is None:
        raise ValueError(f"synthetic.filters.roundtrip is {cfg.filters.roundtrip!r} but no search "
                         "function was given")
    pool = list(examples) if examples else list(BUILTIN_EXAMPLES)
    example_queries = {normalize_query(q) for _, q in pool}
    doc_ids = select_documents(corpus, cfg.max_docs, seed, exclude)
    texts = {d: doc_text(corpus[d]) for d in doc_ids}
    prompts = [build_prompt(texts[d], rotate_examples(pool, i, cfg.n_examples),
                            cfg.max_passage_words, cfg.max_example_words)
               for i, d in enumerate(doc_ids)]
    fps = [text_fingerprint(texts[d]) for d in doc_ids]
    seeds = [int(hashlib.sha256(f"{cfg.sampling.seed}:{fp}".encode()).hexdigest()[:8], 16) for fp in fps]
    cache = GenerationCache(generator.identity, cache_folder, enabled=cfg.cache)
    keys = [cache.key(fp, generator.identity, p, cfg.sampling, cfg.queries_per_doc)
            for fp, p in zip(fps, prompts)]
    outputs: dict[int, list[str]] = {}
    todo = []
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            outputs[i] = hit
        else:
            todo.append(i)

    bar = tqdm(total=len(todo), desc="generating queries", unit="doc", disable=not show_progress())

    def done(j: int, result: list[str]) -> None:
        i = todo[j]
        outputs[i] = result
        cache.put(keys[i], doc_ids[i], result)
        bar.update(1)

    start = time.perf_counter()
    try:
        generator.complete_many([prompts[i] for i in todo], cfg.queries_per_doc, cfg.sampling,
                                [seeds[i] for i in todo], done)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    dropped: dict[str, int] = {}
    candidates, rejected = [], []
    for i, did in enumerate(doc_ids):
        seen: set[str] = set()
        for j, query in enumerate(outputs[i]):
            row = {"query_id": f"syn-{did}-{j}", "anchor": query, "doc_id": did,
                   "positive": texts[did], "score": 1, "source": "synthetic"}
            reason = degenerate_reason(query, texts[did], example_queries, cfg.filters)
            if reason is None and normalize_query(query) in seen:
                reason = "duplicate"
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                rejected.append(row | {"reason": reason})
                continue
            seen.add(normalize_query(query))
            candidates.append(row)

    ranks: dict[str, int | None] = {}
    kept = candidates
    if cfg.filters.roundtrip != "none":
        kept, lost, ranks = roundtrip_filter(candidates, search, cfg.filters.roundtrip_k)
        key = f"roundtrip_{cfg.filters.roundtrip}@{cfg.filters.roundtrip_k}"
        if lost:
            dropped[key] = len(lost)
        rejected += [r | {"reason": key} for r in lost]
    n_generated = sum(len(outputs[i]) for i in range(len(doc_ids)))
    stats = {
        "generator": generator.identity,
        "documents": len(doc_ids),
        "generated": n_generated,
        "from_cache": len(doc_ids) - len(todo),
        "kept": len(kept),
        "kept_share": round(len(kept) / n_generated, 4) if n_generated else 0.0,
        "generate_seconds": round(seconds, 2),
        "seconds_per_document": round(seconds / len(todo), 3) if todo else None,
        "dropped": dict(sorted(dropped.items())),
    }
    return SyntheticResult(kept, rejected, stats, ranks)
