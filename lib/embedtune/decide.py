"""The decision: should this domain fine-tune its embedding model?

Walks the brief's flowchart on measured inputs (never on test queries):

    special vocabulary? --no--> skip
          | yes
    >= 1K labelled pairs? --no--> hybrid
          | yes
    generic recall@10 under the bar (70 %)? --no--> skip (not enough room)
          | yes
    fine-tune

with the brief's "when not to fine-tune" checks on top: generic recall already at or above 90 %
means skip; hybrid alone reaching the bar means hybrid.

Example:
    >>> walk(Measurements(vocab_rare_token_share=0.2, labelled_pairs=1500, generic_recall_at_10=0.6,
    ...                   hybrid_recall_at_10=0.65, generic_success_at_10=0.8), DecideThresholds()).verdict
    'fine-tune'
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from embedtune.config import DecideConfig as DecideThresholds


@dataclass(frozen=True)
class Measurements:
    vocab_rare_token_share: float
    labelled_pairs: int
    generic_recall_at_10: float
    hybrid_recall_at_10: float
    generic_success_at_10: float
    pairs_by_source: dict = field(default_factory=dict)


@dataclass
class Decision:
    verdict: str  # "fine-tune" | "skip" | "hybrid"
    path: list[str]  # flowchart nodes visited, in order
    reasons: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def walk(m: Measurements, t: DecideThresholds) -> Decision:
    """Walk the flowchart; every branch says why in words."""
    path, reasons = ["generic_recall_high"], []
    if m.generic_recall_at_10 >= t.skip_recall:
        reasons.append(f"Generic recall@10 is {m.generic_recall_at_10:.0%} on dev queries, at or above "
                       f"{t.skip_recall:.0%}: too little room for fine-tuning to pay for its upkeep.")
        return Decision("skip", path + ["skip"], reasons)
    path.append("special_vocabulary")
    if m.vocab_rare_token_share < t.rare_token_share:
        reasons.append(f"Only {m.vocab_rare_token_share:.1%} of corpus word tokens are rare in general "
                       f"English (threshold {t.rare_token_share:.0%}): the vocabulary is not special.")
        return Decision("skip", path + ["skip"], reasons)
    reasons.append(f"{m.vocab_rare_token_share:.1%} of corpus word tokens are rare in general English "
                   f"(threshold {t.rare_token_share:.0%}): special vocabulary.")
    path.append("labelled_pairs")
    if m.labelled_pairs < t.min_pairs:
        reasons.append(f"{m.labelled_pairs} labelled pairs, under {t.min_pairs}: use hybrid retrieval "
                       "(or generate synthetic pairs) rather than fine-tune on too little data.")
        return Decision("hybrid", path + ["hybrid"], reasons)
    reasons.append(f"{m.labelled_pairs} labelled pairs (>= {t.min_pairs}).")
    path.append("generic_recall")
    if m.generic_recall_at_10 >= t.recall_bar:
        reasons.append(f"Generic recall@10 is {m.generic_recall_at_10:.0%} on dev queries, not under "
                       f"the {t.recall_bar:.0%} bar: not enough room.")
        return Decision("skip", path + ["skip"], reasons)
    reasons.append(f"Generic recall@10 is {m.generic_recall_at_10:.0%} on dev queries, under the "
                   f"{t.recall_bar:.0%} bar.")
    path.append("hybrid_closes_gap")
    if m.hybrid_recall_at_10 >= t.recall_bar:
        reasons.append(f"Hybrid (BM25 + generic) alone reaches {m.hybrid_recall_at_10:.0%} recall@10 on "
                       "dev queries: it closes the gap without fine-tuning's upkeep.")
        return Decision("hybrid", path + ["hybrid"], reasons)
    if m.generic_success_at_10 >= t.recall_bar:
        reasons.append(f"Note: success@10 (any relevant document in the top 10) is already "
                       f"{m.generic_success_at_10:.0%}; recall@10 is low because queries have many "
                       "relevant documents, which caps recall@10 for every model.")
    return Decision("fine-tune", path + ["fine-tune"], reasons)


WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


def vocabulary_stats(texts: list[str], rare_zipf: float = 3.0, top: int = 20) -> dict:
    """How special a corpus's vocabulary is, against general English (``wordfreq``, offline).

    Returns the share of word tokens and of word types whose Zipf frequency is below
    ``rare_zipf`` (3.0 = about once per million words), and the most frequent such words.
    """
    from wordfreq import zipf_frequency

    counts = Counter(w for text in texts for w in WORD.findall(text.lower()))
    zipf = {w: zipf_frequency(w, "en") for w in counts}
    rare = {w for w, z in zipf.items() if z < rare_zipf}
    tokens = sum(counts.values())
    return {
        "word_tokens": tokens,
        "word_types": len(counts),
        "rare_token_share": sum(counts[w] for w in rare) / tokens if tokens else 0.0,
        "rare_type_share": len(rare) / len(counts) if counts else 0.0,
        "top_rare_terms": [w for w, _ in Counter({w: counts[w] for w in rare}).most_common(top)],
    }


def fragmentation(tokenizer, texts: list[str], sample_words: int = 20000) -> float:
    """Word pieces per word of the model's tokenizer over ``texts`` (1.0 = every word is one piece)."""
    words = [w for text in texts for w in WORD.findall(text.lower())][:sample_words]
    if not words:
        return 0.0
    pieces = sum(len(tokenizer.tokenize(w)) for w in words)
    return pieces / len(words)
