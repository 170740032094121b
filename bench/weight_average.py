"""Do averaged weights retrieve better than one fine-tuned model? (model soups, WiSE-FT)

Two weight-space tricks from the fine-tuning literature, measured on an experiment's dev queries:

- a *soup*: the element-wise mean of several fine-tuned models' weights (Wortsman et al. 2022,
  "Model soups"), here the seeds of one recipe;
- *WiSE-FT*: ``(1 - alpha) * base + alpha * fine-tuned`` (Wortsman et al. 2022, "Robust
  fine-tuning of zero-shot models"), which often keeps the base model's breadth.

Every candidate encodes the whole corpus and is scored on the run folder's (leakage-guarded) dev
queries, dense and hybrid (BM25 + dense, the convex weight fitted on those same dev queries, so the
dev hybrid number is optimistic). The candidate with the best dev dense nDCG@10 is chosen there.
With ``--test`` the test split is scored afterwards for the base model, each fine-tuned model and
the chosen candidate only, with paired t-tests: the choice never sees test.

Usage: bench/weight_average.py PARAMS RUN_DIR MODEL_DIR [MODEL_DIR ...] [--alphas 0.5,0.75] [--test]
  e.g. bench/weight_average.py params/nfcorpus.yaml results/nfcorpus/seeds/seed=42 \
           models/versions/v9/model models/versions/v7/model models/versions/v8/model --test
"""
import argparse
import time

import numpy as np
import torch

from embedtune.context import open_run
from embedtune.evaluate import evaluate_runs
from embedtune.fusion import HybridRetriever
from embedtune.models import load_model
from embedtune.retrieval import DenseIndex, DenseRetriever
from embedtune.stats import paired_test


def averaged(states: list[dict], weights: list[float]) -> dict:
    """The weighted sum of state dicts; integer buffers (position ids) are taken from the first."""
    out = {}
    for key, first in states[0].items():
        if first.is_floating_point():
            out[key] = sum(w * s[key].float() for w, s in zip(weights, states)).to(first.dtype)
        else:
            out[key] = first.clone()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("params")
    parser.add_argument("run_dir", help="a run folder of PARAMS whose 01_pairs left the dev queries")
    parser.add_argument("models", nargs="+", help="fine-tuned model folders of the same base model")
    parser.add_argument("--alphas", default="0.5,0.75", help="WiSE-FT weights of the fine-tuned side")
    parser.add_argument("--test", action="store_true", help="score the dev-chosen candidate on test")
    args = parser.parse_args()

    ctx = open_run(args.params, run_dir=args.run_dir)
    cfg = ctx.cfg
    ds, splits = ctx.data
    dev_qrels = ctx.dev_qrels()
    dev_q = {q: ds.queries[q] for q in dev_qrels}
    top_k = cfg.retrieval.top_k
    base = ctx.base_model
    base_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
    tuned = [load_model(path, cfg.model.device).state_dict() for path in args.models]

    candidates = {"base": base_state}
    for i, state in enumerate(tuned):
        candidates[f"model{i + 1}"] = state
    soup = averaged(tuned, [1 / len(tuned)] * len(tuned)) if len(tuned) > 1 else tuned[0]
    if len(tuned) > 1:
        candidates["soup"] = soup
    for alpha in (float(a) for a in args.alphas.split(",")):
        candidates[f"wise{alpha:g}(model1)"] = averaged([base_state, tuned[0]], [1 - alpha, alpha])
        if len(tuned) > 1:
            candidates[f"wise{alpha:g}(soup)"] = averaged([base_state, soup], [1 - alpha, alpha])
    print(f"{cfg.experiment}: {len(ds.corpus)} documents, {len(dev_q)} dev queries, "
          f"models: {', '.join(f'model{i + 1}={p}' for i, p in enumerate(args.models))}", flush=True)

    systems: dict[str, tuple] = {}
    dev_scores: dict[str, float] = {}
    for name, state in candidates.items():
        start = time.perf_counter()
        model = ctx.with_encoder(load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length))
        model.load_state_dict(state)
        index = DenseIndex.build(model, ds.corpus, cfg.model, cache=False)
        dense = DenseRetriever(name, model, index, cfg.model)
        hybrid, info = HybridRetriever.fit(f"hybrid_{name}", ctx.bm25, dense, cfg.retrieval.hybrid,
                                           dev_qrels, dev_q, top_k)
        systems[name] = (dense, hybrid)
        mean = evaluate_runs(dev_qrels, {"dense": dense.search(dev_q, top_k),
                                         "hybrid": hybrid.search(dev_q, top_k)}, ["ndcg@10"]).mean
        dev_scores[name] = mean["dense"]["ndcg@10"]
        print(f"  dev {name:18s} dense {mean['dense']['ndcg@10']:.4f}  hybrid {mean['hybrid']['ndcg@10']:.4f} "
              f"(bm25 weight {info.get('bm25_weight')}, {time.perf_counter() - start:.0f} s)", flush=True)

    chosen = max((n for n in dev_scores if n != "base"), key=dev_scores.get)
    print(f"chosen on dev: {chosen} ({dev_scores[chosen]:.4f})", flush=True)
    if not args.test:
        return

    test_q = {q: ds.queries[q] for q in splits.test}
    shown = ["base", *[f"model{i + 1}" for i in range(len(tuned))], chosen]
    runs = {}
    for name in dict.fromkeys(shown):
        dense, hybrid = systems[name]
        runs[name], runs[f"hybrid_{name}"] = dense.search(test_q, top_k), hybrid.search(test_q, top_k)
    scores = evaluate_runs(splits.test, runs, ["ndcg@10"])
    table = scores.per_query.reset_index().pivot(index="query_id", columns="system", values="ndcg@10")
    print(f"test ({len(test_q)} queries), nDCG@10; delta and paired t-test p against the base model:")
    for name in runs:
        reference = "hybrid_base" if name.startswith("hybrid_") else "base"
        delta, p = paired_test(table[name].to_numpy(), table[reference].to_numpy())
        print(f"  test {name:25s} {scores.mean[name]['ndcg@10']:.4f}  {delta:+.4f} p={p:.2g}")
    for other in (f"model{i + 1}" for i in range(len(tuned))):
        if other != chosen:
            delta, p = paired_test(table[chosen].to_numpy(), table[other].to_numpy())
            print(f"  test {chosen} vs {other}: {delta:+.4f} p={p:.2g}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    np.set_printoptions(precision=4)
    main()
