"""Stage 00_decide: measure the decision's inputs and walk the brief's flowchart.

Every measurement is on the corpus, the train pairs or the dev queries; never on test queries.
Leaves ``decision.json`` in the run folder.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

from embedtune import plots
from embedtune.context import RunContext, stage
from embedtune.data import doc_text
from embedtune.decide import Decision, Measurements, fragmentation, vocabulary_stats, walk
from embedtune.pilot import verdict as pilot_verdict
from embedtune.evaluate import evaluate_runs
from embedtune.fusion import HybridRetriever
from embedtune.io import atomic_write_json
from embedtune.pairs import capped, gold_pairs, leakage_guard
from embedtune.provenance import now

@dataclass
class DecideResult:
    decision: Decision
    measurements: Measurements
    vocabulary: dict
    document: dict

    def plot(self):
        """The flowchart, with the path taken and the verdict highlighted."""
        return plots.draw_flowchart(self.decision.path, self.document["flowchart_verdict"])

    def pilot_table(self):
        """Each pilot run: pairs, steps, seconds, dev gain with its interval; and the extrapolation."""
        import pandas as pd

        pilot = self.document.get("pilot")
        if not pilot:
            return "no pilot (decide.pilot is off, or fewer than 16 labelled pairs)"
        rows = [{"pairs": p["pairs"], "steps": p["steps"], "seconds": p["seconds"], "dev nDCG@10 gain": p["gain"],
                 "interval": f"[{p['interval'][0]:+.4f}, {p['interval'][1]:+.4f}]"} for p in pilot["points"]]
        rows.append({"pairs": pilot["all_pairs"], "steps": None, "seconds": None,
                     "dev nDCG@10 gain": pilot["predicted_gain"],
                     "interval": f"[{pilot['interval'][0]:+.4f}, {pilot['interval'][1]:+.4f}] (extrapolated)"})
        return pd.DataFrame(rows).set_index("pairs")

    def plot_pilot(self):
        return plots.pilot_curve(self.document["pilot"]) if self.document.get("pilot") else None


def _click_rows(ctx: RunContext, train: dict, dev: dict) -> list[dict]:
    """The click pairs 01_pairs will train on (a real log at clicks.path, or one simulated from
    the train qrels); none when clicks are not a training source."""
    cfg = ctx.cfg
    has_log = bool(cfg.clicks.path or cfg.clicks.simulate)
    if "clicks" not in cfg.pairs.sources or cfg.clicks.use == "validate" or not has_log:
        return []
    return ctx.click_source(train, dev)[0]


@stage("decide")
def run(ctx: RunContext) -> DecideResult:
    cfg = ctx.cfg
    ds, splits = ctx.data
    texts = [doc_text(ds.corpus[d]) for d in sorted(ds.corpus)]
    vocab = vocabulary_stats(texts, rare_zipf=cfg.decide.rare_zipf)
    from wordfreq import top_n_list

    tokenizer = ctx.base_model.tokenizer
    vocab["pieces_per_word"] = fragmentation(tokenizer, texts)
    vocab["pieces_per_word_general_english"] = fragmentation(tokenizer, [" ".join(top_n_list("en", 5000))])

    test_q = {q: ds.queries[q] for q in splits.test}
    used_q = {q: ds.queries[q] for q in list(splits.train) + list(splits.dev)}
    embed = (lambda t: ctx.embed_queries(ctx.base_model, t)) if cfg.pairs.leakage_cosine else None
    leakage = leakage_guard(used_q, test_q, embed=embed, threshold=cfg.pairs.leakage_cosine)
    train = {q: d for q, d in splits.train.items() if q not in leakage.removed}
    dev = {q: d for q, d in splits.dev.items() if q not in leakage.removed}
    labelled = gold_pairs(ds, train, cfg.pairs.min_score)
    gold = len(labelled)
    if "gold" not in cfg.pairs.sources:
        gold, labelled = 0, []  # withheld: this experiment trains on other sources only
    labelled = capped(labelled, cfg.pairs.max_pairs_per_query, cfg.pairs.max_train_pairs, cfg.seed)
    clicked = _click_rows(ctx, train, dev)
    labelled = labelled + clicked  # the pilot trains on both, as 03_train will
    pairs_by_source = {"gold": gold, "clicks": len(clicked), "synthetic": 0}
    # synthetic queries are not labels: they are generated in 01_pairs and counted there

    dev_scores = {}
    if dev:
        dev_q = {q: ds.queries[q] for q in dev}
        generic = ctx.generic
        # RRF, not the convex weight: a weight chosen on these dev queries would flatter hybrid here
        rrf = dataclasses.replace(cfg.retrieval.hybrid, method="rrf")
        systems = {"generic": generic, "hybrid": HybridRetriever("hybrid", ctx.bm25, generic, rrf),
                   "bm25": ctx.bm25}
        dev_scores = evaluate_runs(dev, {name: s.search(dev_q, cfg.retrieval.top_k) for name, s in systems.items()},
                                   ["recall@10", "hit_rate@10", "ndcg@10"]).mean
    else:
        raise ValueError("00_decide needs dev queries (never test): add a dev split or train qrels")
    measurements = Measurements(
        vocab_rare_token_share=vocab["rare_token_share"],
        labelled_pairs=sum(pairs_by_source.values()),
        generic_recall_at_10=dev_scores["generic"]["recall@10"],
        hybrid_recall_at_10=dev_scores["hybrid"]["recall@10"],
        generic_success_at_10=dev_scores["generic"]["hit_rate@10"],
        pairs_by_source=pairs_by_source,
    )
    decision = walk(measurements, cfg.decide)
    pilot, verdict, reasons = None, decision.verdict, list(decision.reasons)
    if cfg.decide.pilot and len(labelled) >= 16:  # the brief's flowchart stays beside the measured pilot
        pilot = run_pilot_on_dev(ctx, labelled, dev)
        verdict, why = pilot_verdict(pilot, dev_scores["hybrid"]["ndcg@10"] - dev_scores["generic"]["ndcg@10"],
                                     cfg.decide)
        reasons.append(f"Pilot: {why}")
    document = {
        "experiment": cfg.experiment,
        "verdict": verdict,
        "flowchart_verdict": decision.verdict,
        "path": decision.path,
        "reasons": reasons,
        "pilot": pilot,
        "measurements": asdict(measurements),
        "vocabulary": vocab,
        "dev_queries": len(dev),
        "dev_scores": dev_scores,
        "leakage_removed": len(leakage.removed),
        "thresholds": asdict(cfg.decide),
        "created": now(),
    }
    atomic_write_json(ctx.layout.decision, document)
    return DecideResult(Decision(verdict, decision.path, reasons), measurements, vocab, document)


def run_pilot_on_dev(ctx: RunContext, pairs: list[dict], dev: dict) -> dict:
    """The pilot (embedtune.pilot) on these dev queries; the base model's dev scores come from
    the embeddings the generic index already holds."""
    from embedtune.models import resolve_precision
    from embedtune.pilot import run_pilot
    from embedtune.train import dev_evaluator

    cfg = ctx.cfg
    ds, _ = ctx.data
    queries = {q: ds.queries[q] for q in dev}
    corpus = ctx.dev_corpus(dev, cfg.decide.pilot_dev_docs, bm25_depth=10)
    evaluator = dev_evaluator(queries, dev, corpus, cfg.model.batch_size,
                              resolve_precision(cfg.train.precision, str(ctx.base_model.device)))
    index = ctx.generic_index
    row = {d: i for i, d in enumerate(index.doc_ids)}
    evaluator.score(index.embeddings[[row[d] for d in evaluator.doc_ids]],
                    ctx.embed_queries(ctx.base_model, evaluator.query_texts))
    return run_pilot(cfg.model.name, pairs, queries, dev, corpus, evaluator.per_query[0], cfg.decide, cfg.train,
                     cfg.seed, str(ctx.base_model.device), cfg.model.max_seq_length)
