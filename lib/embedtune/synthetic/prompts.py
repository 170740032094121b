"""Few-shot prompts for query generation: the example pool, its rotation, and cleaning the output."""

from __future__ import annotations

import logging
import random
import re
from typing import Sequence

from embedtune.config import SyntheticConfig

log = logging.getLogger(__name__)


Example = tuple[str, str]  # (passage, query)


BUILTIN_EXAMPLES: tuple[Example, ...] = (
    ("The Great Barrier Reef, off the coast of Queensland, is the world's largest coral reef "
     "system. Rising sea temperatures caused mass bleaching events in 2016, 2017 and 2020.",
     "what causes coral bleaching on the great barrier reef"),
    ("Metformin lowers blood glucose mainly by reducing glucose production in the liver and by "
     "improving insulin sensitivity. Stomach upset is common when treatment starts.",
     "how does metformin lower blood sugar"),
    ("To reset the router, hold the button on the back for ten seconds until the power light "
     "blinks. Every custom setting, including the Wi-Fi password, returns to its default.",
     "router factory reset button"),
    ("In contract law, consideration is something of value exchanged by each party; a promise "
     "made without consideration is generally not enforceable.",
     "is a promise without consideration enforceable"),
)


def truncate_words(text: str, n: int) -> str:
    words = text.split()
    return text.strip() if len(words) <= n else " ".join(words[:n])


def examples_from_pairs(rows: Sequence[dict], n: int = 8, seed: int = 0,
                        max_words: int = 60) -> list[Example]:
    """A seeded pool of few-shot examples from training pairs (one per query, distinct queries).

    Use only train pairs: the examples are shown to the LLM, and a test query must never be.

    Args:
        rows: pairs with ``anchor`` and ``positive`` (as :func:`embedtune.pairs.gold_pairs` makes).
        n: examples in the pool; each prompt shows ``SyntheticConfig.n_examples`` of them.
        seed: which pairs.
        max_words: example passages are cut to this many words.
    """
    by_query: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["query_id"], r["doc_id"])):
        by_query.setdefault(row["query_id"], row)
    chosen = sorted(by_query)
    random.Random(seed).shuffle(chosen)
    return [(truncate_words(by_query[q]["positive"], max_words), by_query[q]["anchor"].strip())
            for q in chosen[:n]]


def example_pool(cfg: SyntheticConfig, train_rows: Sequence[dict] = (), seed: int = 0) -> list[Example]:
    """The few-shot pool that ``cfg.examples`` asks for: train pairs when there are any, else
    :data:`BUILTIN_EXAMPLES`. Pass the *train* pairs only (never dev or test)."""
    if cfg.examples == "train" and train_rows:
        return examples_from_pairs(train_rows, cfg.example_pool, seed, cfg.max_example_words)
    return list(BUILTIN_EXAMPLES)


def rotate_examples(pool: Sequence[Example], index: int, n: int) -> list[Example]:
    """The ``n`` examples that document number ``index`` sees: a window sliding over the pool,
    so that no single example dominates the style of every query."""
    if not pool or n <= 0:
        return []
    n = min(n, len(pool))
    return [pool[(index + j) % len(pool)] for j in range(n)]


def build_prompt(passage: str, examples: Sequence[Example], max_passage_words: int = 160,
                 max_example_words: int = 60) -> str:
    """A few-shot completion prompt that ends in ``Query:`` for the model to complete.

    Example:
        >>> build_prompt("Cats purr.", [("Dogs bark.", "why do dogs bark")])
        'Passage: Dogs bark.\\nQuery: why do dogs bark\\n\\nPassage: Cats purr.\\nQuery:'
    """
    shots = [f"Passage: {_one_line(truncate_words(p, max_example_words))}\nQuery: {_one_line(q)}"
             for p, q in examples]
    shots.append(f"Passage: {_one_line(truncate_words(passage, max_passage_words))}\nQuery:")
    return "\n\n".join(shots)


def _one_line(text: str) -> str:
    return " ".join(text.split())


CHAT_INSTRUCTION = ("Write one search query that a user could type to find the last passage, in "
                    "the style of the example queries. Reply with the query only.")


def clean_output(text: str) -> str:
    """The query in a raw completion: the first non-empty line, without a ``Query:`` label or quotes."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            line = re.sub(r"^(query|question)\s*:\s*", "", line, flags=re.IGNORECASE)
            return line.strip().strip("\"'`").strip()
    return ""
