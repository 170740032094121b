import pytest

from embedtune.decide import DecideThresholds, Measurements, fragmentation, vocabulary_stats, walk

T = DecideThresholds()


def m(**kw):
    base = dict(vocab_rare_token_share=0.2, labelled_pairs=1500, generic_recall_at_10=0.6,
                hybrid_recall_at_10=0.65, generic_success_at_10=0.65)
    return Measurements(**(base | kw))


@pytest.mark.parametrize("inputs,verdict,last", [
    (dict(), "fine-tune", "fine-tune"),
    (dict(vocab_rare_token_share=0.05), "skip", "skip"),                # no special vocabulary
    (dict(labelled_pairs=999), "hybrid", "hybrid"),                     # too few labels
    (dict(generic_recall_at_10=0.75, hybrid_recall_at_10=0.8), "skip", "skip"),  # not enough room
    (dict(hybrid_recall_at_10=0.72), "hybrid", "hybrid"),               # hybrid closes the gap
    (dict(generic_recall_at_10=0.93), "skip", "skip"),                  # already 90 %
])
def test_every_branch(inputs, verdict, last):
    decision = walk(m(**inputs), T)
    assert decision.verdict == verdict
    assert decision.path[-1] == last
    assert decision.reasons


def test_boundaries_follow_the_brief():
    assert walk(m(labelled_pairs=1000), T).verdict == "fine-tune"  # "at least 1K"
    assert walk(m(generic_recall_at_10=0.70, hybrid_recall_at_10=0.75), T).verdict == "skip"  # "under 70 %"
    assert walk(m(generic_recall_at_10=0.90), T).path == ["generic_recall_high", "skip"]
    assert walk(m(), T).path == ["generic_recall_high", "special_vocabulary", "labelled_pairs",
                                 "generic_recall", "hybrid_closes_gap", "fine-tune"]


def test_success_note_for_many_relevant_docs():
    decision = walk(m(generic_recall_at_10=0.15, hybrid_recall_at_10=0.16, generic_success_at_10=0.7), T)
    assert decision.verdict == "fine-tune"
    assert any("success@10" in r for r in decision.reasons)


def test_vocabulary_stats_by_hand():
    stats = vocabulary_stats(["the cat sat on the mat", "the thermoelectric heterojunction"], rare_zipf=3.0)
    assert stats["word_tokens"] == 9
    # 'thermoelectric' and 'heterojunction' are rare in general English; the rest are not
    assert stats["rare_token_share"] == pytest.approx(2 / 9)
    assert set(stats["top_rare_terms"]) == {"thermoelectric", "heterojunction"}


def test_fragmentation():
    class Splitter:  # a toy tokenizer: pieces of three letters
        def tokenize(self, word):
            return [word[i:i + 3] for i in range(0, len(word), 3)]

    assert fragmentation(Splitter(), ["abc abcdef"]) == pytest.approx(1.5)
