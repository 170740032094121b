"""The worked maintenance scenario: drift, a recall drop, a re-train, a promote and a rollback.

A model fine-tuned on the experiment's dataset (scifact in ``params/maintenance.yaml``) is
registered as v1 and promoted; its index of that corpus is built and it is evaluated on the test
queries. Then the corpus grows with a seeded subsample of another domain's documents
(``monitor.scenario_new_dataset``, nfcorpus) and the gold set with that domain's test queries,
judged within the subsample. The index is updated incrementally (only the new documents are
encoded, which is checked), the monitor measures the drift and the recall drop, and recommends a
re-train. v1 is re-trained on the new domain's train pairs (within the subsample), registered as
v2, given its own full index, evaluated and promoted; then production is rolled back to v1,
which serves from its own index again. Every step's numbers go to ``scenario.json``.

Everything lives under ``<run>/scenario/``, with a registry of its own: the scenario never
touches the project's registry or its production pointer.

Example:
    >>> ctx = open_run("params/maintenance.yaml")
    >>> doc = run_scenario(ctx)          # ~15 minutes on a 2-core CPU
    >>> [s["step"] for s in doc["steps"]]
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import random
import shutil
import time
from pathlib import Path

from embedtune import paths
from embedtune.config import ExperimentConfig
from embedtune.context import RunContext
from embedtune.data import Qrels, doc_text, load_beir, relevant_only
from embedtune.index_store import CorpusIndex, VersionMismatchError
from embedtune.io import atomic_write_json
from embedtune.pairs import cap_per_query
from embedtune.models import load_model, model_fingerprint
from embedtune.monitor import (CorpusSnapshot, MonitorLog, check_regression, corpus_drift,
                               drop_test, evaluate_version, recommend)
from embedtune.provenance import git_state, now
from embedtune.registry import Registry
from embedtune.progress import show_progress

log = logging.getLogger(__name__)

SLOT = "serving"  # the index slot: the corpus in service, whatever it holds over time


class ScenarioError(RuntimeError):
    """The scenario cannot run (its v1 model is missing) or broke one of its own checks."""


@dataclasses.dataclass
class NewDomain:
    """The documents, judged test queries and train pairs a corpus grows with (ids namespaced)."""

    name: str
    corpus: dict[str, dict[str, str]]
    queries: dict[str, str]
    test: Qrels
    train_rows: list[dict]
    train_pairs_available: int


def scenario_model_dir(cfg: ExperimentConfig) -> Path:
    """The fine-tuned model served as v1; a clear error when it is missing."""
    path = paths.resolve(cfg.monitor.scenario_model)
    if not (path / "modules.json").is_file():
        raise ScenarioError(
            f"the scenario serves the fine-tuned model at {path} as v1, but there is none. Train it "
            "first: `embedtune run params/scifact.yaml --stages pairs,negatives,train` (or set "
            "monitor.scenario_model to the model/ folder of another run)"
        )
    return path


def new_domain(cfg: ExperimentConfig, taken: set[str]) -> NewDomain:
    """A seeded subsample of ``monitor.scenario_new_dataset``: documents, then the test queries
    and train pairs judged within them (judgements of documents left out are dropped)."""
    mc = cfg.monitor
    ds = load_beir(mc.scenario_new_dataset, strict=cfg.data.strict)
    prefix = f"{ds.name}:"
    order = sorted(ds.corpus)
    random.Random(cfg.seed).shuffle(order)
    chosen = set(order[: mc.scenario_new_docs])

    def within(split: str) -> Qrels:
        qrels = relevant_only(ds.qrels.get(split, {}), cfg.data.min_score)
        kept = {q: {d: s for d, s in docs.items() if d in chosen} for q, docs in qrels.items()}
        return {q: docs for q, docs in kept.items() if docs}

    test = within(cfg.data.eval_split)
    if not test:
        raise ScenarioError(f"no {ds.name} {cfg.data.eval_split!r} query has a relevant document among "
                            f"the {len(chosen)} sampled; raise monitor.scenario_new_docs")
    if mc.scenario_new_queries is not None and len(test) > mc.scenario_new_queries:
        keep = random.Random(cfg.seed).sample(sorted(test), mc.scenario_new_queries)
        test = {q: test[q] for q in sorted(keep)}
    train = within(cfg.data.train_split)
    rows = [{"query_id": prefix + q, "anchor": ds.queries[q], "doc_id": prefix + d,
             "positive": doc_text(ds.corpus[d]), "score": s}
            for q in sorted(train) if q not in test for d, s in sorted(train[q].items())]
    available = len(rows)
    rows = cap_per_query(rows, mc.scenario_pairs_per_query, cfg.seed)
    if len(rows) > mc.scenario_train_pairs:
        rows = sorted(random.Random(cfg.seed).sample(rows, mc.scenario_train_pairs),
                      key=lambda r: (r["query_id"], r["doc_id"]))
    corpus = {prefix + d: ds.corpus[d] for d in sorted(chosen)}
    clash = taken & set(corpus)
    if clash:
        raise ScenarioError(f"document ids {sorted(clash)[:3]} exist in both corpora")
    used_q = set(test) | {r["query_id"][len(prefix):] for r in rows}
    return NewDomain(ds.name, corpus, {prefix + q: ds.queries[q] for q in sorted(used_q)},
                     {prefix + q: {prefix + d: s for d, s in docs.items()} for q, docs in test.items()},
                     rows, available)


def _summary(entry: dict, metrics=("recall@10", "ndcg@10")) -> dict:
    return {"queries": entry["n_queries"], "docs": entry["n_docs"],
            **{m: entry["metrics"][m] for m in metrics if m in entry["metrics"]},
            "groups": entry.get("groups", {})}


def run_scenario(ctx: RunContext) -> dict:
    """Run the scenario (module docstring) and return the ``scenario.json`` document."""
    cfg, mc = ctx.cfg, ctx.cfg.monitor
    metrics = list(dict.fromkeys([mc.metric, "recall@10", "ndcg@10", "recall@100", "mrr@10"]))
    model_dir = scenario_model_dir(cfg)
    work = ctx.layout.scenario_dir
    shutil.rmtree(work, ignore_errors=True)  # a run tells one story from the start
    registry = Registry(work / "registry")
    monitor_log = MonitorLog(registry.log_path)
    steps: list[dict] = []
    started = time.perf_counter()

    def evaluate(index, model, version, label):
        entry = evaluate_version(index, model, version, queries, qrels, cfg.model, metrics,
                                 monitored=mc.metric, gold_set=SLOT, label=label, groups=groups,
                                 top_k=cfg.retrieval.top_k)
        entry = monitor_log.append(entry)
        registry.record_metrics(version, SLOT, {"metrics": entry["metrics"], "groups": entry.get("groups"),
                                                "evaluated": entry["time"], "gold": entry["gold_fingerprint"],
                                                "corpus": entry["corpus_fingerprint"]})
        return entry

    # 1. v1 in production, serving the experiment's own corpus -----------------------------
    ds, splits = ctx.data
    v1 = registry.register(model_dir, note="the fine-tuned model the scenario starts from")["version"]
    registry.promote(v1)
    model1 = registry.load(v1, cfg.model.device)
    index1 = CorpusIndex(registry.index_dir(v1, SLOT))
    corpus = dict(ds.corpus)
    queries = {q: ds.queries[q] for q in splits.test}
    qrels = dict(splits.test)
    groups = {ds.name: set(qrels)}
    built = index1.update(model1, corpus, version=v1, cfg=cfg.model)
    snapshot = CorpusSnapshot.from_index(corpus, index1)
    snapshot.save(index1.folder / "reference.json")
    e0 = evaluate(index1, model1, v1, f"{v1}, {ds.name} corpus")
    steps.append({"step": f"1. {v1} in production on {ds.name}", "production": registry.production(),
                  "index": built.as_dict(), **_summary(e0)})

    # 2. the corpus grows with another domain ------------------------------------------------
    new = new_domain(cfg, set(corpus))
    corpus.update(new.corpus)
    queries.update({q: new.queries[q] for q in new.test})
    qrels.update(new.test)
    groups[new.name] = set(new.test)
    grown = index1.update(model1, corpus, version=v1, cfg=cfg.model)
    if (grown.encoded, grown.added, grown.removed, grown.kept) != (len(new.corpus), len(new.corpus), 0, built.encoded):
        raise ScenarioError(f"the incremental re-embed should have encoded only the {len(new.corpus)} "
                            f"new documents and kept {built.encoded}; it did {grown.as_dict()}")
    drift = corpus_drift(snapshot, corpus, index1, mc, seed=cfg.seed)
    e1 = evaluate(index1, model1, v1, f"{v1}, +{len(new.corpus)} {new.name} docs")
    regression = check_regression(monitor_log.entries(), v1, mc, gold_set=SLOT, seed=cfg.seed)
    base = load_model(cfg.model.name, cfg.model.device, cfg.model.max_seq_length)
    advice = recommend(registry.manifest(v1), drift=drift, regression=regression,
                       base_fingerprint=model_fingerprint(base), base_model=cfg.model.name)
    del base
    steps.append({"step": f"2. corpus grows with {new.name}", "production": registry.production(),
                  "index": grown.as_dict(), "new_docs": len(new.corpus), "new_queries": len(new.test),
                  **_summary(e1), "drift": drift.as_dict(),
                  "regression": regression.as_dict() if regression else None,
                  "recommendation": advice.as_dict()})

    # 3. re-train on the new domain's pairs --------------------------------------------------
    from embedtune.train import fine_tune, training_dataset

    train_cfg = dataclasses.replace(cfg.train, loss="mnrl", matryoshka_dims=(),
                                    epochs=mc.scenario_train_epochs,
                                    batch_size=mc.scenario_train_batch_size,
                                    learning_rate=mc.scenario_learning_rate)
    doc_ids = sorted(corpus)
    judged = {q: set(docs) for q, docs in new.test.items()}
    for r in new.train_rows:
        judged.setdefault(r["query_id"], set()).add(r["doc_id"])
    train_ds = training_dataset(new.train_rows, "mnrl", [doc_text(corpus[d]) for d in doc_ids],
                                judged, doc_ids, cfg.seed)
    model2 = copy.deepcopy(model1)  # v1 itself stays as registered; the copy is trained in place
    v1_manifest = registry.manifest(v1)
    result = fine_tune(model2, train_ds, None, train_cfg, work / "model_v2", cfg.seed,
                       progress=show_progress())
    fingerprint = model_fingerprint(model2)
    if fingerprint == v1_manifest["fingerprint"]:
        raise ScenarioError(f"the re-train left {v1}'s weights unchanged ({result.steps} steps; with "
                            "one step, warm-up keeps the learning rate at 0): give it more pairs")
    data_fp = hashlib.sha256(json.dumps([[r["query_id"], r["doc_id"]] for r in new.train_rows]).encode())
    atomic_write_json(work / "model_v2" / "version.json", {
        "version": f"{cfg.experiment}-retrain-{fingerprint[7:15]}",
        "base_model": v1_manifest["base_model"],
        "base_model_fingerprint": v1_manifest["base_model_fingerprint"],
        "fingerprint": fingerprint,
        "training_data_fingerprint": "sha256:" + data_fp.hexdigest(),
        "loss": "mnrl", "examples": len(train_ds), "steps": result.steps,
        "train_seconds": round(result.seconds, 1), "precision": result.precision,
        "device": str(model2.device), "git": git_state(), "created": now(),
    })
    v2 = registry.register(work / "model_v2", params=cfg.to_dict(), parent=v1,
                           note=f"{v1} re-trained on {len(new.train_rows)} {new.name} train pairs")["version"]
    steps.append({"step": f"3. re-train {v1} -> {v2} on {new.name}", "production": registry.production(),
                  "pairs": len(new.train_rows), "pairs_available": new.train_pairs_available,
                  "train_queries": len({r["query_id"] for r in new.train_rows}),
                  "train_steps": result.steps, "train_seconds": round(result.seconds, 1),
                  "epochs": train_cfg.epochs, "batch_size": train_cfg.batch_size,
                  "learning_rate": train_cfg.learning_rate, "parent": v1})

    # 4. v2 gets its own full index, is evaluated and promoted -------------------------------
    index2 = CorpusIndex(registry.index_dir(v2, SLOT))
    full = index2.update(model2, corpus, version=v2, cfg=cfg.model)
    try:  # the guard: v2 cannot search v1's vectors
        index1.search(model2, {"q": "x"}, version=v2, cfg=cfg.model)
        raise ScenarioError("searching v1's index with v2 did not raise")
    except VersionMismatchError as exc:
        guard = str(exc)
    e2 = evaluate(index2, model2, v2, f"{v2} (re-trained)")
    delta, p, test = drop_test(e1["per_query"][mc.metric], e2["per_query"][mc.metric],
                               mc.permutations, cfg.seed)
    registry.promote(v2)
    steps.append({"step": f"4. {v2} evaluated and promoted", "production": registry.production(),
                  "index": full.as_dict(), **_summary(e2),
                  "vs_previous": {"metric": mc.metric, "delta": round(delta, 6),
                                  "p_value_v2_worse": round(p, 6), "test": test},
                  "mixing_guard": guard})

    # 5. roll back to v1, which serves from its own index again -------------------------------
    pointer = registry.rollback()
    live = pointer["production"]
    serving = CorpusIndex(registry.index_dir(live, SLOT))
    model_live = {v1: model1, v2: model2}[live]  # both unchanged since they were registered
    refreshed = serving.update(model_live, corpus, version=live, cfg=cfg.model)  # already current
    e3 = evaluate(serving, model_live, live, f"rollback to {live}")
    steps.append({"step": f"5. rollback {v2} -> {live}", "production": live, "index": refreshed.as_dict(),
                  **_summary(e3), "same_as_step_2": e3["metrics"] == e1["metrics"],
                  "pointer_events": pointer["events"]})

    doc = {
        "experiment": cfg.experiment,
        "created": now(),
        "seconds": round(time.perf_counter() - started, 1),
        "base_dataset": ds.name,
        "new_dataset": new.name,
        "monitored_metric": mc.metric,
        "registry": str(registry.root),
        "versions": {v: registry.manifest(v) for v in registry.version_ids()},
        "steps": steps,
    }
    for manifest in doc["versions"].values():
        manifest.pop("files", None)
        manifest.pop("params", None)
    atomic_write_json(ctx.layout.scenario_json, doc)
    return doc
