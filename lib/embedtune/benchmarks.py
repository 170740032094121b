"""``embedtune bench``: the project's speed figures, each as a ratio to its plain peer measured in
the same run, with the quality each setting keeps.

Sections (each row: what, peer, figure, ratio to the peer, quality):

- **encoding**: documents per second of every back-end / precision against plain
  sentence-transformers fp32 (``SentenceTransformer.encode``) on the same passages, in interleaved
  rounds (peer, setting, peer, setting, ...; the ratio is the median of the per-round ratios, so a
  machine that slows down mid-run does not favour either), each in its own process (peak memory);
  and each setting's nDCG@10 on the test queries of scifact and nfcorpus minus fp32's.
- **training**: training samples per second and dev nDCG@10 after the same steps: the plain
  ``SentenceTransformerTrainer`` (fp32, sentence-transformers' IR evaluator) against
  ``embedtune.train.fine_tune`` (its precision, its dev evaluator), and at max_seq_length 128.
- **bm25**: queries per second of ``BM25Retriever.search`` against raw ``bm25s``.
- **dense search**: queries per second of exact numpy search against faiss flat / HNSW / IVF,
  with their recall@10 against exact.
- **latency**: p50 / p95 of one query at a time per system.
- **pipeline** (``--sections pipeline``): ``embedtune run PARAMS`` from a cold cache, then again (warm).

Every figure carries the machine it was measured on (processor, cores). Writes
``results/bench/bench.json`` and ``bench.html`` (``notebooks/bench.py``).

Example:
    $ embedtune bench                                  # about an hour and a half on 2 cores
    $ embedtune bench --sections pipeline              # then `embedtune run params/scifact.yaml`, cold and warm
    $ embedtune bench --sections encoding,bm25 --docs 40 --rounds 1 --out /tmp/b   # minutes
"""

from __future__ import annotations

import json
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from embedtune import paths
from embedtune.io import atomic_write_json

log = logging.getLogger(__name__)

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
PLAIN = "plain-st-fp32"
SETTINGS = ("torch:none:fp32", "torch:none:bf16", "openvino:none:fp32", "openvino:int8:fp32",
            "onnx:none:fp32", "onnx:int8:fp32")


def peak_rss_mb() -> float:
    """This process's peak resident memory (MB): VmHWM, which starts afresh at exec. (ru_maxrss
    does not: a child started by a big parent reports the parent's peak.)"""
    try:
        with open("/proc/self/status") as fh:
            return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine_info() -> dict:
    import torch

    from embedtune.backends import machine
    from embedtune.models import cpu_has_bf16

    flags = ""
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {"processor": machine(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "bf16": cpu_has_bf16(), "avx512": "avx512f" in flags, "vnni": "vnni" in flags,
            "amx": "amx_tile" in flags}


def _texts(dataset: str, n: int | None, seed: int = 0) -> list[str]:
    import random

    from embedtune.data import doc_text, load_beir

    ds = load_beir(dataset)
    texts = [doc_text(d) for d in ds.corpus.values()]
    return texts if n is None or n >= len(texts) else random.Random(seed).sample(texts, n)


# ---- workers: one measurement in a fresh process ------------------------------------------------


def _worker_encode(setting: str, dataset: str, docs: int, batch_size: int) -> dict:
    """Documents per second of one setting (after a warm-up), and the process's peak memory."""
    texts = _texts(dataset, docs)
    if setting == PLAIN:
        from sentence_transformers import SentenceTransformer

        from embedtune.models import resolve_model

        model = SentenceTransformer(resolve_model(MODEL).path, device="cpu")
        run = lambda t: model.encode(t, batch_size=batch_size, normalize_embeddings=True)  # noqa: E731
    else:
        from embedtune.backends import encoder
        from embedtune.config import ModelConfig
        from embedtune.models import load_model

        backend, quantize, precision = setting.split(":")
        model = load_model(MODEL, "cpu")
        enc = encoder(model, ModelConfig(backend=backend, quantize=quantize, precision=precision),
                      calibration=_texts(dataset, None))
        run = lambda t: enc.encode(t, "document", batch_size)  # noqa: E731
    run(texts[:16])
    start = time.perf_counter()
    run(texts)
    seconds = time.perf_counter() - start
    return {"docs_per_second": len(texts) / seconds, "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def _worker_train(mode: str, steps: int, batch_size: int, seq: int) -> dict:
    """``steps`` training steps of MNRL on scifact (query, positive, BM25 negative) triples, then
    dev nDCG@10: ``plain`` (SentenceTransformerTrainer defaults, fp32, its IR evaluator) or
    ``embedtune`` (fine_tune with its precision and dev evaluator)."""
    from embedtune.context import open_run
    from embedtune.data import doc_text
    from embedtune.models import load_model

    ctx = open_run(paths.params_dir() / "scifact.yaml", {"train.max_seq_length": seq},
                   Path(tempfile.mkdtemp(prefix="embedtune-bench-")))
    ds, splits = ctx.data
    queries = {q: ds.queries[q] for q in sorted(splits.train)}
    ranked = ctx.bm25.search(queries, top_k=10)
    rows = []
    for q in queries:
        for d in sorted(splits.train[q]):
            negative = next((n for n in ranked.get(q, {}) if n not in splits.train[q]), None)
            if negative:
                rows.append({"anchor": queries[q], "positive": doc_text(ds.corpus[d]),
                             "negative": doc_text(ds.corpus[negative])})
    rows = rows[: steps * batch_size]
    dev = splits.dev
    dev_queries = {q: ds.queries[q] for q in dev}
    corpus = ctx.dev_corpus(dev, 1000)
    model = load_model(MODEL, "cpu", seq)
    from datasets import Dataset

    data = Dataset.from_list(rows)
    start = time.perf_counter()
    if mode == "plain":
        from sentence_transformers.sentence_transformer import losses
        from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
        from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
        from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

        evaluator = InformationRetrievalEvaluator(dev_queries, corpus, {q: set(d) for q, d in dev.items()},
                                                  name="dev", show_progress_bar=False, write_csv=False)
        from sentence_transformers.sentence_transformer.training_args import BatchSamplers

        from embedtune.config import TrainConfig

        same = TrainConfig()  # the hyper-parameters embedtune trains with: only the speed work differs
        args = SentenceTransformerTrainingArguments(output_dir=tempfile.mkdtemp(), num_train_epochs=1,
                                                    per_device_train_batch_size=batch_size, use_cpu=True,
                                                    learning_rate=same.learning_rate, warmup_steps=same.warmup_ratio,
                                                    weight_decay=same.weight_decay, seed=42, data_seed=42,
                                                    batch_sampler=BatchSamplers.NO_DUPLICATES,
                                                    report_to="none", disable_tqdm=True, eval_strategy="no",
                                                    save_strategy="no")
        trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=data,
                                             loss=losses.MultipleNegativesRankingLoss(model))
        trainer.train()
        start_eval = time.perf_counter()
        ndcg = evaluator(model)["dev_cosine_ndcg@10"]
        eval_seconds = time.perf_counter() - start_eval
        train_seconds = time.perf_counter() - start  # to a trained and evaluated model, as fine_tune
        precision = "fp32"
    else:
        from embedtune.config import TrainConfig
        from embedtune.models import resolve_precision
        from embedtune.train import dev_evaluator, fine_tune

        precision = resolve_precision("auto", "cpu")
        evaluator = dev_evaluator(dev_queries, dev, corpus, 64, precision)
        cfg = TrainConfig(epochs=1, batch_size=batch_size, evals_per_epoch=1, keep_base_p=None)
        result = fine_tune(model, data, evaluator, cfg, Path(tempfile.mkdtemp()) / "model", 42,
                           dev_before={})  # no step-0 evaluation: the peer has none either
        eval_seconds = None  # inside fine_tune: evaluated once, at the end of the epoch
        train_seconds = result.seconds
        ndcg = result.best_metric
    return {"samples_per_second": len(rows) / train_seconds, "train_seconds": train_seconds,
            "eval_seconds": eval_seconds, "dev_ndcg@10": ndcg, "samples": len(rows), "precision": precision,
            "max_seq_length": seq, "peak_rss_mb": peak_rss_mb()}


def _in_subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, "-m", "embedtune.benchmarks", "worker", *args], capture_output=True,
                         text=True, env=dict(os.environ, EMBEDTUNE_NO_PROGRESS="1"))
    if out.returncode != 0:
        raise RuntimeError(f"bench worker {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---- sections -------------------------------------------------------------------------------


def encoding_speed(docs: int, rounds: int, settings: list[str], dataset: str = "scifact",
                   batch_size: int = 64) -> list[dict]:
    rows = []
    for setting in settings:
        pairs = []
        for _ in range(rounds):
            peer = _in_subprocess("encode", PLAIN, dataset, str(docs), str(batch_size))
            mine = _in_subprocess("encode", setting, dataset, str(docs), str(batch_size))
            pairs.append((peer, mine))
            log.info("bench encode %s: %.1f vs %.1f docs/s", setting, mine["docs_per_second"], peer["docs_per_second"])
        rows.append({
            "setting": setting, "peer": PLAIN, "docs": docs, "rounds": rounds,
            "docs_per_second": statistics.median(m["docs_per_second"] for _, m in pairs),
            "peer_docs_per_second": statistics.median(p["docs_per_second"] for p, _ in pairs),
            "ratio": statistics.median(m["docs_per_second"] / p["docs_per_second"] for p, m in pairs),
            "ratio_min": min(m["docs_per_second"] / p["docs_per_second"] for p, m in pairs),
            "ratio_max": max(m["docs_per_second"] / p["docs_per_second"] for p, m in pairs),
            "peak_rss_mb": max(m["peak_rss_mb"] for _, m in pairs),
            "peer_peak_rss_mb": max(p["peak_rss_mb"] for p, _ in pairs)})
    return rows


def quality_corpus(corpus: dict, qrels: dict, docs: int | None, seed: int = 0) -> tuple[dict, dict]:
    """The corpus and test qrels a quality figure is measured on: all of them, or (``docs``) the
    judged documents of seeded test queries (taken while those fill at most 60 % of ``docs``)
    plus seeded random others up to ``docs``."""
    import random

    if docs is None or docs >= len(corpus):
        return corpus, qrels
    rng = random.Random(seed)
    order = sorted(qrels)
    rng.shuffle(order)
    kept, judged = {}, set()
    for q in order:
        mine = {d for d in qrels[q] if d in corpus}
        if kept and len(judged | mine) > 0.6 * docs:
            continue
        kept[q], judged = qrels[q], judged | mine
    others = sorted(set(corpus) - judged)
    chosen = sorted(judged) + rng.sample(others, max(0, min(len(others), docs - len(judged))))
    return {d: corpus[d] for d in chosen}, kept


def encoding_quality(settings: list[str], datasets: list[str], docs: int | None = None) -> dict:
    """nDCG@10 of each setting on each dataset's test queries (exact search over the full corpus,
    or over :func:`quality_corpus` of ``docs`` documents)."""
    from embedtune.backends import BackendError, encoder
    from embedtune.config import ModelConfig
    from embedtune.data import doc_text, load_beir, relevant_only
    from embedtune.evaluate import evaluate_runs
    from embedtune.models import load_model
    from embedtune.retrieval import DenseIndex

    out: dict = {}
    for dataset in datasets:
        ds = load_beir(dataset)
        corpus, qrels = quality_corpus(ds.corpus, relevant_only(ds.qrels["test"], 1), docs)
        queries = {q: ds.queries[q] for q in qrels}
        calibration = [doc_text(d) for d in ds.corpus.values()]
        out[dataset] = {}
        for setting in settings:
            backend, quantize, precision = setting.split(":")
            cfg = ModelConfig(backend=backend, quantize=quantize, precision=precision, batch_size=64)
            model = load_model(MODEL, "cpu")
            try:
                model.embedtune_encoder = encoder(model, cfg, calibration)
            except BackendError as exc:
                out[dataset][setting] = {"error": str(exc)}
                continue
            index = DenseIndex.build(model, corpus, cfg)
            run = index.search(model, queries, cfg, 100)
            out[dataset][setting] = {"ndcg@10": evaluate_runs(qrels, {"s": run}, ["ndcg@10"]).mean["s"]["ndcg@10"],
                                     "queries": len(qrels), "docs": len(corpus), "corpus_docs": len(ds.corpus)}
            log.info("bench quality %s %s: %.4f", dataset, setting, out[dataset][setting]["ndcg@10"])
        reference = out[dataset].get("torch:none:fp32", {}).get("ndcg@10")
        for row in out[dataset].values():
            if "ndcg@10" in row and reference is not None:
                row["delta_vs_fp32"] = row["ndcg@10"] - reference
    return out


def training(steps: int, batch_size: int) -> list[dict]:
    plain = _in_subprocess("train", "plain", str(steps), str(batch_size), "256")
    rows = []
    for mode, seq in (("plain", 256), ("embedtune", 256), ("embedtune", 128)):
        mine = plain if (mode, seq) == ("plain", 256) else _in_subprocess("train", mode, str(steps), str(batch_size), str(seq))
        rows.append({"setting": f"{mode} max_seq_length {seq} ({mine['precision']})", "peer": "plain ST Trainer fp32",
                     **mine, "ratio": mine["samples_per_second"] / plain["samples_per_second"],
                     "dev_delta_vs_peer": mine["dev_ndcg@10"] - plain["dev_ndcg@10"]})
    return rows


def bm25(dataset: str = "scifact", rounds: int = 5) -> dict:
    import bm25s
    import Stemmer

    from embedtune.config import BM25Config
    from embedtune.data import doc_text, load_beir
    from embedtune.retrieval import BM25Retriever

    ds = load_beir(dataset)
    queries = {q: ds.queries[q] for q in ds.qrels["test"]}
    mine = BM25Retriever(ds.corpus, BM25Config())
    stemmer = Stemmer.Stemmer("english")
    raw = bm25s.BM25(method="lucene", k1=1.5, b=0.75)
    raw.index(bm25s.tokenize([doc_text(ds.corpus[d]) for d in sorted(ds.corpus)], stopwords="en",
                             stemmer=stemmer, show_progress=False), show_progress=False)

    def peer():
        tokens = bm25s.tokenize(list(queries.values()), stopwords="en", stemmer=stemmer, show_progress=False)
        raw.retrieve(tokens, k=100, show_progress=False, n_threads=0)

    ratios, ours, theirs = [], [], []
    for _ in range(rounds):
        start = time.perf_counter()
        peer()
        theirs.append(len(queries) / (time.perf_counter() - start))
        start = time.perf_counter()
        mine.search(queries, 100)
        ours.append(len(queries) / (time.perf_counter() - start))
        ratios.append(ours[-1] / theirs[-1])
    return {"setting": "BM25Retriever.search", "peer": "bm25s (tokenize + retrieve)", "queries": len(queries),
            "queries_per_second": statistics.median(ours), "peer_queries_per_second": statistics.median(theirs),
            "ratio": statistics.median(ratios)}


def dense_search(dataset: str = "scifact", rounds: int = 3) -> list[dict]:
    from embedtune.config import ModelConfig
    from embedtune.data import load_beir
    from embedtune.models import load_model
    from embedtune.retrieval import DenseIndex

    ds = load_beir(dataset)
    cfg = ModelConfig(precision="fp32")
    model = load_model(MODEL, "cpu")
    exact = DenseIndex.build(model, ds.corpus, cfg)
    queries = [ds.queries[q] for q in ds.qrels["test"]]
    from embedtune.retrieval import cached_encode, texts_fingerprint

    q_emb, _ = cached_encode(model, exact.model_fingerprint, texts_fingerprint(queries), queries, "query", cfg)
    rows = []
    for backend in ("faiss", "hnsw", "ivf"):
        other = DenseIndex(exact.doc_ids, exact.embeddings, exact.model_fingerprint, exact.corpus_fingerprint,
                           0.0, True, backend)
        other.faiss_index()  # built before timing
        ratios, ours, theirs = [], [], []
        for _ in range(rounds):
            start = time.perf_counter()
            exact.search_embeddings(q_emb, 100)
            theirs.append(len(queries) / (time.perf_counter() - start))
            start = time.perf_counter()
            other.search_embeddings(q_emb, 100)
            ours.append(len(queries) / (time.perf_counter() - start))
            ratios.append(ours[-1] / theirs[-1])
        rows.append({"setting": f"faiss {backend}", "peer": "exact numpy", "docs": len(exact.doc_ids),
                     "queries_per_second": statistics.median(ours), "peer_queries_per_second": statistics.median(theirs),
                     "ratio": statistics.median(ratios), "recall@10_vs_exact": other.recall_against_exact(q_emb, 10),
                     "build_seconds": other.faiss_index().build_seconds})
    return rows


def latency(dataset: str = "scifact", n_queries: int = 50, settings: tuple[str, ...] = ("torch:none:fp32",)) -> list[dict]:
    import dataclasses

    from embedtune.backends import encoder
    from embedtune.config import BM25Config, HybridConfig, ModelConfig
    from embedtune.data import doc_text, load_beir
    from embedtune.fusion import HybridRetriever
    from embedtune.models import load_model
    from embedtune.report import latency as measure
    from embedtune.retrieval import BM25Retriever, DenseIndex, DenseRetriever

    ds = load_beir(dataset)
    texts = [ds.queries[q] for q in sorted(ds.qrels["test"])][:n_queries]
    bm25 = BM25Retriever(ds.corpus, BM25Config())
    rows = [{"system": "bm25", **measure(lambda t: bm25.search({"q": t}, 100, cache=False), texts)}]
    calibration = [doc_text(d) for d in ds.corpus.values()]
    for setting in settings:
        backend, quantize, precision = setting.split(":")
        cfg = ModelConfig(backend=backend, quantize=quantize, precision=precision)
        model = load_model(MODEL, "cpu")
        model.embedtune_encoder = encoder(model, cfg, calibration)
        dense = DenseRetriever("dense", model, DenseIndex.build(model, ds.corpus, cfg), cfg)
        hybrid = HybridRetriever("hybrid", bm25, dense, dataclasses.replace(HybridConfig(), method="rrf"))
        for name, system in ((f"dense ({setting})", dense), (f"hybrid rrf ({setting})", hybrid)):
            rows.append({"system": name, **measure(lambda t, s=system: s.search({"q": t}, 100, cache=False), texts)})
    return rows


def pipeline(params: str, run_dir: str | None) -> dict:
    """``embedtune run PARAMS`` from an empty embedding cache (cold), then again (warm)."""
    folder = run_dir or tempfile.mkdtemp(prefix="embedtune-bench-run-")
    env = dict(os.environ, EMBEDTUNE_CACHE_DIR=tempfile.mkdtemp(prefix="embedtune-bench-cache-"))
    out = {"params": params, "run_dir": folder}
    for label in ("cold", "warm"):
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "embedtune.cli", "run", params, "--run-dir", folder, "--no-progress"],
                       check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out[f"{label}_seconds"] = round(time.perf_counter() - start, 1)
        out[f"{label}_peak_rss_mb"] = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024
    manifest = json.loads((Path(folder) / "manifest.json").read_text())
    out["stages_seconds"] = {s: v.get("seconds") for s, v in manifest.get("stages", {}).items()}
    return out


SECTIONS = ("encoding", "quality", "training", "bm25", "dense_search", "latency", "pipeline")


def run_bench(out: Path, docs: int = 300, rounds: int = 3, train_steps: int = 8, train_batch: int = 32,
              sections: list[str] | None = None, pipeline_params: str = "params/scifact.yaml",
              pipeline_run_dir: str | None = None, settings: list[str] | None = None,
              quality_docs: int | None = None) -> dict:
    """Measure ``sections`` (default: all but the pipeline) and merge them into ``out/bench.json``
    (sections measured earlier stay, each with the machine and time it was measured)."""
    from embedtune import backends
    from embedtune.io import read_json

    sections = list(sections or [s for s in SECTIONS if s != "pipeline"])
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown bench sections {sorted(unknown)}; sections: {', '.join(SECTIONS)}")
    settings = [s for s in (settings or SETTINGS) if backends.available(s.split(":")[0])]
    doc = read_json(out / "bench.json")
    info = machine_info()
    if doc.get("machine") and doc["machine"] != info:
        doc = {}  # another machine: its figures cannot be read beside these
    doc.update(machine=info, model=MODEL, started=time.strftime("%Y-%m-%dT%H:%M:%S"),
               command=" ".join(["embedtune", *sys.argv[1:]]) if sys.argv[1:2] == ["bench"] else doc.get("command"))
    doc.setdefault("measured", {})

    def save(section: str) -> None:
        doc["measured"][section] = time.strftime("%Y-%m-%dT%H:%M:%S")
        doc["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        atomic_write_json(out / "bench.json", doc)

    with_bf16 = [s for s in settings if s != "torch:none:bf16" or info["bf16"]]
    if "encoding" in sections:
        doc["encoding"] = []
        for setting in settings:  # no bf16 hardware: emulated bf16 is several times slower, so few docs
            n = docs if setting != "torch:none:bf16" or info["bf16"] else min(docs, 32)
            doc["encoding"] += encoding_speed(n, rounds, [setting])
            save("encoding")
    if "quality" in sections:
        doc["quality"] = encoding_quality(with_bf16, ["scifact", "nfcorpus"], quality_docs)
        save("quality")
    if "training" in sections:
        doc["training"] = training(train_steps, train_batch)
        save("training")
    if "bm25" in sections:
        doc["bm25"] = bm25()
        save("bm25")
    if "dense_search" in sections:
        doc["dense_search"] = dense_search()
        save("dense_search")
    if "latency" in sections:
        within = [r for r in doc.get("encoding", []) if r["setting"] != "torch:none:fp32" and abs(
            ((doc.get("quality") or {}).get("scifact", {}).get(r["setting"]) or {}).get("delta_vs_fp32", 1)) <= 0.002]
        fastest = max(within, key=lambda r: r["ratio"], default=None)
        doc["latency"] = latency(settings=("torch:none:fp32",) + ((fastest["setting"],) if fastest else ()))
        save("latency")
    if "pipeline" in sections:
        doc["pipeline"] = pipeline(pipeline_params, pipeline_run_dir)
        save("pipeline")
    return doc


def render(out: Path) -> None:
    from embedtune import notebook

    notebook.execute("bench", out / "bench.ipynb", {"bench_json": str(out / "bench.json")},
                     required={"bench_json"})
    notebook.to_html(out / "bench.ipynb", out / "bench.html", hide_code=True, title="embedtune bench")


def add_parser(subparsers) -> None:
    bench = subparsers.add_parser("bench", help="measure every speed figure against its plain peer "
                                                "(results/bench/bench.json and bench.html)")
    bench.add_argument("--out", default=str(paths.results_dir() / "bench"))
    bench.add_argument("--sections", help=f"comma-separated, of: {','.join(SECTIONS)} (default: all but pipeline); "
                                          "measured sections replace theirs in bench.json, the others stay")
    bench.add_argument("--docs", type=int, default=300, help="passages per encoding measurement")
    bench.add_argument("--rounds", type=int, default=3, help="interleaved rounds per encoding setting")
    bench.add_argument("--quality-docs", type=int, help="quality on every judged test document plus random "
                       "others up to this many (default: the full corpora)")
    bench.add_argument("--train-steps", type=int, default=8)
    bench.add_argument("--settings", help="comma-separated backend:quantize:precision (default: all available)")
    bench.add_argument("--pipeline-params", default="params/scifact.yaml", help="what the pipeline section runs")
    bench.add_argument("--pipeline-run-dir", help="its run folder (default: a temporary one)")


def run_cli(args) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_bench(out, docs=args.docs, rounds=args.rounds, train_steps=args.train_steps,
              sections=args.sections.split(",") if args.sections else None, pipeline_params=args.pipeline_params,
              pipeline_run_dir=args.pipeline_run_dir, settings=args.settings.split(",") if args.settings else None,
              quality_docs=args.quality_docs)
    render(out)
    print(f"bench: {out / 'bench.html'}")
    return 0


def _worker_main(argv: list[str]) -> None:
    kind = argv[0]
    if kind == "encode":
        setting, dataset, docs, batch = argv[1:5]
        result = _worker_encode(setting, dataset, int(docs), int(batch))
    elif kind == "train":
        mode, steps, batch, seq = argv[1:5]
        result = _worker_train(mode, int(steps), int(batch), int(seq))
    else:
        raise SystemExit(f"unknown worker {kind}")
    print(json.dumps(result))


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    logging.basicConfig(level=logging.WARNING)
    _worker_main(sys.argv[2:])
