"""The scale run: ~200K real passages encoded to shards and searched on the CPU, then search over
1M vectors. Writes results/scale/scale.json and results/scale/README.md.

Passages: overlapping 32-word spans (stride 9 words: 214,834 of them) cut from the local corpora (scifact, nfcorpus,
cranfield); queries: their test queries. 1M vectors: the real passage vectors plus noisy copies of
them (each a real vector plus Gaussian noise, renormalised) up to 1M, since no 1M-passage corpus is
local; recall is measured against exact search over the same 1M vectors.

Usage (about 75 min on 2 AVX2 cores, 55 of them encoding; the encoding resumes if stopped):
    HF_HUB_OFFLINE=1 EMBEDTUNE_DATA_DIR=../shared/datasets .venv/bin/python bench/scale.py
    HF_HUB_OFFLINE=1 .venv/bin/python bench/scale.py --stride 200   # a quick try (14,536 passages)
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from embedtune import paths
from embedtune.data import doc_text, load_beir, relevant_only
from embedtune.io import atomic_write_json, atomic_write_text
from embedtune.shards import count_lines, encode_shards, iter_corpus

DATASETS = ("scifact", "nfcorpus", "cranfield")


def spans(words: int, stride: int, out: Path) -> int:
    """Write the passages as a BEIR corpus.jsonl; returns how many."""
    n = 0
    with open(out, "w", encoding="utf-8") as fh:
        for name in DATASETS:
            ds = load_beir(name)
            for did, doc in ds.corpus.items():
                tokens = doc_text(doc).split()
                for start in range(0, max(1, len(tokens) - words + 1), stride):
                    fh.write(json.dumps({"_id": f"{name}:{did}:{start}", "text": " ".join(tokens[start:start + words])}) + "\n")
                    n += 1
    return n


def queries() -> list[str]:
    out = []
    for name in DATASETS:
        ds = load_beir(name)
        out += [ds.queries[q] for q in sorted(relevant_only(ds.qrels["test"], 1))]
    return out


def measure_index(kind: str, vectors: str, queries_file: str, k: int = 10, ef_search: tuple[int, ...] = (128, 256, 512)) -> dict:
    """Build ``kind`` over the vectors in a fresh process (build time, peak memory while building),
    save it, then load it in a second fresh process that only serves: q/s and recall@10 vs exact
    (for HNSW at each ``ef_search``), and the serving process's peak memory."""
    saved = vectors.replace(".npy", f".{kind}.faiss")
    build = f"""
import json, numpy as np, faiss
from embedtune.benchmarks import peak_rss_mb
from embedtune.shards import build_index
index = build_index([np.load({vectors!r}, mmap_mode="r")], {kind!r})
faiss.write_index(index.index, {saved!r})
print(json.dumps({{"kind": {kind!r}, "params": index.params, "build_seconds": round(index.build_seconds, 1),
                  "index_mb": round(index.nbytes / 2**20), "build_peak_rss_mb": round(peak_rss_mb())}}))
"""
    serve = f"""
import json, time, numpy as np, faiss
from embedtune.benchmarks import peak_rss_mb
from embedtune.shards import recall_against
index = faiss.read_index({saved!r})
q = np.ascontiguousarray(np.load({queries_file!r}), dtype=np.float32)
exact_rows = np.load({vectors!r}.replace(".npy", ".exact.npy"))
out = []
for ef in ({list(ef_search)!r} if {kind!r}.startswith("hnsw") else [None]):
    if ef:
        faiss.downcast_index(index).hnsw.efSearch = ef
    index.search(q[:32], {k})  # warm
    start = time.perf_counter(); _, rows = index.search(q, {k}); seconds = time.perf_counter() - start
    out.append({{"efSearch": ef, "queries_per_second": round(len(q) / seconds, 1),
                "recall@10_vs_exact": recall_against(exact_rows, rows, {k})}})
print(json.dumps({{"settings": out, "serve_peak_rss_mb": round(peak_rss_mb())}}))
"""
    def last_json(code: str) -> dict:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return json.loads(run.stdout.strip().splitlines()[-1])

    row = last_json(build)
    served = last_json(serve)
    Path(saved).unlink()
    first = served["settings"][0]
    return {**row, "queries_per_second": first["queries_per_second"], "recall@10_vs_exact": first["recall@10_vs_exact"],
            "serve_peak_rss_mb": served["serve_peak_rss_mb"], "settings": served["settings"]}


def exact_rows(vectors: np.ndarray, q: np.ndarray, k: int = 10, block: int = 200_000) -> np.ndarray:
    """Exact top-k rows, scanning the vectors in blocks (never all in fp32 at once)."""
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), k), dtype=np.int64)
    for begin in range(0, len(vectors), block):
        sims = q @ np.asarray(vectors[begin:begin + block], dtype=np.float32).T
        s = np.concatenate([best_s, sims], axis=1)
        i = np.concatenate([best_i, np.arange(begin, begin + sims.shape[1])[None, :].repeat(len(q), 0)], axis=1)
        top = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, top, 1), np.take_along_axis(i, top, 1)
    return best_i


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--words", type=int, default=32)
    parser.add_argument("--stride", type=int, default=9)
    parser.add_argument("--total", type=int, default=1_000_000, help="vectors in the second search test")
    parser.add_argument("--backend", default="openvino", help="model.backend for the encoding (openvino fp32: the "
                        "same nDCG@10 as torch in the bench, 1.5x faster on CPU)")
    parser.add_argument("--out", default=str(paths.results_dir() / "scale"))
    parser.add_argument("--search", default="real,1M", help="which search tests to (re)measure; the others stay")
    args = parser.parse_args()
    from embedtune.backends import encoder
    from embedtune.benchmarks import machine_info, peak_rss_mb
    from embedtune.config import ModelConfig
    from embedtune.models import load_model

    out = Path(args.out)
    work = paths.cache_dir() / "scale"
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / f"spans-{args.words}-{args.stride}.jsonl"
    if not corpus.is_file():
        spans(args.words, args.stride, corpus)
    n = count_lines(corpus)
    model = load_model("sentence-transformers/all-MiniLM-L6-v2", "cpu")
    cfg = ModelConfig(backend=args.backend, precision="auto")
    model.embedtune_encoder = encoder(model, cfg, [t for _, t in iter_corpus(corpus)][:5000])
    folder = work / f"shards-{args.words}-{args.stride}-{model.embedtune_encoder.name}"
    start = time.perf_counter()
    shards = encode_shards(model, iter_corpus(corpus), folder, chunk_size=20_000, batch_size=128, total=n)
    encode = dict(shards.manifest, wall_seconds=round(time.perf_counter() - start, 1),
                  peak_rss_mb=round(peak_rss_mb()), shard_mb=round(shards.nbytes / 2**20))
    q = model.embedtune_encoder.encode(queries(), "query", 64)
    np.save(work / "queries.npy", q)
    report = {"machine": machine_info(), "command": " ".join(["bench/scale.py", *sys.argv[1:]]), "passages": n,
              "queries": len(q), "span_words": args.words, "stride": args.stride, "encoding": encode, "search": {}}
    earlier = json.loads((out / "scale.json").read_text()) if (out / "scale.json").is_file() else {}
    if earlier.get("passages") == n and earlier.get("machine") == report["machine"]:
        report["search"] = earlier.get("search", {})  # sections not measured now stay
        if not encode.get("encoded_now") and earlier.get("encoding", {}).get("encoded_now"):
            report["encoding"] = earlier["encoding"]  # the figures of the run that encoded
    atomic_write_json(out / "scale.json", report)  # the encoding figures, before any search
    atomic_write_text(out / "README.md", readme(report))
    real = np.concatenate([np.asarray(a, dtype=np.float16) for a in shards.arrays()])
    for label, total in (("real", len(real)), ("1M", args.total)):
        if label not in args.search.split(","):
            continue
        vectors = work / f"vectors-{label}.npy"
        if label == "real":
            np.save(vectors, real)
        else:  # real vectors, then noisy copies of them, to `total`
            rng = np.random.default_rng(0)
            mm = np.lib.format.open_memmap(vectors, mode="w+", dtype=np.float16, shape=(total, real.shape[1]))
            mm[: len(real)] = real
            for begin in range(len(real), total, 100_000):
                end = min(total, begin + 100_000)
                base = np.asarray(real[rng.integers(0, len(real), end - begin)], dtype=np.float32)
                noisy = base + rng.normal(0, 0.03, base.shape).astype(np.float32)
                mm[begin:end] = (noisy / np.linalg.norm(noisy, axis=1, keepdims=True)).astype(np.float16)
            mm.flush()
            del mm
        start = time.perf_counter()
        rows = exact_rows(np.load(vectors, mmap_mode="r"), q)
        np.save(str(vectors).replace(".npy", ".exact.npy"), rows)
        exact_qps = len(q) / (time.perf_counter() - start)
        block = report["search"][label] = {"vectors": total, "indexes": [],
                                           "exact_numpy_blocks_queries_per_second": round(exact_qps, 1)}
        for kind in ("flat", "ivf", "hnsw-sq8", "hnsw"):  # cheapest first; saved after each
            block["indexes"].append(measure_index(kind, str(vectors), str(work / "queries.npy")))
            atomic_write_json(out / "scale.json", report)
            atomic_write_text(out / "README.md", readme(report))
            print(json.dumps(block["indexes"][-1]), flush=True)


def readme(r: dict) -> str:
    e = r["encoding"]
    lines = ["# Scale run", "",
             f"`HF_HUB_OFFLINE=1 EMBEDTUNE_DATA_DIR=../shared/datasets .venv/bin/python {r['command']}` on "
             f"{r['machine']['processor']} ({r['machine']['cores']} cores; AVX-512 {r['machine'].get('avx512')}, "
             f"AMX {r['machine'].get('amx')}).", "",
             f"**Encoding**: {r['passages']:,} passages ({r['span_words']}-word spans, stride {r['stride']}, cut from scifact, "
             f"nfcorpus and cranfield), all-MiniLM-L6-v2 through `{e['encoder']}`, streamed to float16 shards of "
             f"{e['chunk_size']:,}: {e.get('docs_per_second')} docs/s, {e['wall_seconds'] / 60:.0f} min, "
             f"{e['shard_mb']} MiB of shards, peak memory {e['peak_rss_mb']} MiB (resumable: a killed run continues at its "
             f"first missing shard).", "",
             f"**Search** with the {r['queries']} test queries of the three datasets; recall@10 against exact search over the "
             "same vectors. Each index is built in a fresh process (peak memory while building: the memory-mapped fp16 "
             "input plus fp32 copies of what is being added), saved, then loaded and searched in another fresh process "
             "that holds only the index and the queries (peak memory serving). `1M`: the real vectors plus "
             "noisy copies of them (Gaussian noise, sd 0.03 per dimension, renormalised) up to 1M.", "",
             "| vectors | index | build s | efSearch | queries/s | recall@10 vs exact | index MiB | peak MiB building | peak MiB serving |",
             "|---|---|---|---|---|---|---|---|---|"]
    for label, block in r["search"].items():
        for ix in block["indexes"]:
            params = {key: v for key, v in (ix["params"] or {}).items() if key != "efSearch"}
            for s in ix["settings"]:
                lines.append(f"| {block['vectors']:,} ({label}) | {ix['kind']} {params or ''} | {ix['build_seconds']} | "
                             f"{s['efSearch'] or ''} | {s['queries_per_second']} | {s['recall@10_vs_exact']:.3f} | "
                             f"{ix['index_mb']} | {ix['build_peak_rss_mb']} | {ix['serve_peak_rss_mb']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
