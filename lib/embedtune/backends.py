"""Encoding back-ends: plain sentence-transformers (torch), OpenVINO and ONNX Runtime, fp32 or int8.

``model.backend`` and ``model.quantize`` in params choose one; every stage that encodes (the
corpus indexes, queries, latency, monitoring) goes through it, and the embedding cache keys name
it. Training always runs in torch.

- ``torch``: ``SentenceTransformer.encode_*``, fp32 or bf16 autocast (``model.precision``).
- ``openvino``: the model's transformer, pooling and normalisation converted into one graph with
  ``openvino.convert_model``; ``int8``: static quantisation with nncf, calibrated on a seeded
  sample of the experiment's own corpus (no hub dataset).
- ``onnx``: the same graph exported with ``torch.onnx.export`` and run by ONNX Runtime;
  ``int8``: dynamic quantisation (per channel).
- ``auto``: the fastest of these whose nDCG@10 on the experiment's dev queries stays within
  ``model.auto_tolerance`` of torch fp32 (:func:`choose`); the choice and its measurements are
  saved and shown.

sentence-transformers' own ``backend=`` needs its ``[onnx,openvino]`` extras, which pull it back
to 5.x; these back-ends need only ``openvino``, ``nncf``, ``onnx`` and ``onnxruntime`` (the
``fast`` extra). Exported models are cached under ``cache/exported/``.

Example:
    >>> enc = encoder(model, ModelConfig(backend="openvino", quantize="int8"), calibration=texts[:300])
    >>> emb = enc.encode(["a passage"], "document", batch_size=32)
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embedtune import paths

log = logging.getLogger(__name__)

CALIBRATION_DOCS = 300  # passages nncf calibrates int8 activations on


class BackendError(ValueError):
    """A back-end that cannot run this model, or whose packages are missing."""


def available(backend: str) -> bool:
    import importlib.util

    need = {"torch": ["torch"], "openvino": ["openvino", "nncf"], "onnx": ["onnx", "onnxruntime"]}[backend]
    return all(importlib.util.find_spec(m) is not None for m in need)


@dataclass
class Encoder:
    """Encodes texts with one model through one back-end; ``name`` keys the embedding cache."""

    model: object
    backend: str = "torch"
    quantize: str = "none"
    precision: str = "fp32"  # torch only: fp32 or bf16 (resolved)
    calibration: str | None = None  # fingerprint of the int8 calibration texts
    processes: int = 1  # torch: sentence-transformers' multi-process pool when > 1
    _run: object = field(default=None, repr=False)
    _inputs: tuple[str, ...] = field(default=(), repr=False)

    @property
    def name(self) -> str:
        if self.backend == "torch":
            return self.precision
        suffix = f"-{self.calibration[:8]}" if self.quantize == "int8" and self.calibration else ""
        return f"{self.backend}-{'int8' if self.quantize == 'int8' else 'fp32'}{suffix}"

    def encode(self, texts: list[str], kind: str, batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """L2-normalised float32 embeddings of ``texts`` as ``kind`` (query or document)."""
        from embedtune.models import encode_documents, encode_queries

        if self.backend == "torch":
            fn = encode_queries if kind == "query" else encode_documents
            if self.processes > 1 and self._run is None:
                from embedtune.models import process_pool

                self._run = process_pool(self.model, self.processes)
            return fn(self.model, texts, batch_size=batch_size, precision=self.precision, show_progress=show_progress,
                      pool=self._run if self.processes > 1 else None)
        prompt = (getattr(self.model, "prompts", None) or {}).get(kind) or ""
        texts = [prompt + t for t in texts] if prompt else list(texts)
        tokenizer = self.model.tokenizer
        order = np.argsort([-len(t) for t in texts], kind="stable")  # like sentence-transformers: little padding
        out = np.empty((len(texts), self.model.get_embedding_dimension()), dtype=np.float32)
        for begin in range(0, len(texts), batch_size):
            rows = order[begin:begin + batch_size]
            feed = tokenizer([texts[i] for i in rows], padding=True, truncation=True,
                             max_length=self.model.max_seq_length, return_tensors="np")
            out[rows] = self._run({k: feed[k].astype(np.int64) for k in self._inputs})
        return out


def encoder(model, cfg, calibration: list[str] | None = None, backend: str | None = None,
            quantize: str | None = None) -> Encoder:
    """The encoder that ``cfg`` (a ModelConfig) asks for, for ``model``.

    ``backend``/``quantize`` override the config's (``auto`` is resolved by :func:`choose`, not
    here). ``calibration``: corpus passages for int8 OpenVINO (a seeded sample is taken).
    """
    from embedtune.models import resolve_precision

    backend = backend or cfg.backend
    quantize = quantize or cfg.quantize
    if backend == "auto":
        raise BackendError("model.backend auto is resolved per experiment (embedtune.backends.choose)")
    precision = resolve_precision(cfg.precision, str(model.device))
    if backend == "torch":
        if quantize != "none":
            raise BackendError("model.quantize int8 needs backend openvino or onnx (torch: use precision bf16)")
        return Encoder(model, "torch", "none", precision, processes=cfg.processes)
    if not available(backend):
        raise BackendError(f"model.backend {backend} needs its packages: pip install -e '.[fast]' "
                           "(openvino, nncf, onnx, onnxruntime)")
    if str(model.device) != "cpu":
        raise BackendError(f"model.backend {backend} runs on the CPU; on {model.device} use backend torch")
    sample = None
    if quantize == "int8" and backend == "openvino":
        if not calibration:
            raise BackendError("int8 OpenVINO needs calibration passages from the experiment's corpus")
        sample = _sample(calibration)
    calib_fp = hashlib.sha256("\x1e".join(sample).encode()).hexdigest() if sample else None
    enc = Encoder(model, backend, quantize, "fp32", calib_fp)
    folder = _export_folder(model, enc)
    enc._run, enc._inputs = _load(model, backend, quantize, folder, sample)
    return enc


def _sample(texts: list[str], n: int = CALIBRATION_DOCS, seed: int = 0) -> list[str]:
    import random

    texts = sorted(set(texts))
    return texts if len(texts) <= n else random.Random(seed).sample(texts, n)


def _export_folder(model, enc: Encoder) -> Path:
    from embedtune.models import model_fingerprint

    key = f"{model_fingerprint(model)[7:23]}-{model.max_seq_length}-{enc.name}"
    return paths.cache_dir() / "exported" / key


class _Pooled:
    """The model's transformer, pooling and normalisation as one torch module (for export)."""

    @staticmethod
    def build(model):
        import torch

        modules = [type(m).__name__ for m in model]
        if modules[:2] != ["Transformer", "Pooling"] or not set(modules[2:]) <= {"Normalize"}:
            raise BackendError(f"backends openvino/onnx export Transformer + Pooling (+ Normalize) models; "
                               f"this one is {' + '.join(modules)}: use model.backend torch")
        mode = model[1].get_config_dict().get("pooling_mode", "mean")
        if mode not in ("mean", "cls"):
            raise BackendError(f"pooling {mode!r} is not exported; use model.backend torch")
        hf = model[0].auto_model

        class Pooled(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.hf = hf

            def forward(self, input_ids, attention_mask, token_type_ids=None):
                kwargs = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
                hidden = self.hf(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
                if mode == "cls":
                    pooled = hidden[:, 0]
                else:
                    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        return Pooled().eval()


def _example(model):
    feed = model.tokenizer(["an example passage to trace the graph", "short"], padding=True, return_tensors="pt")
    names = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in feed]
    return names, {k: feed[k] for k in names}


def _load(model, backend: str, quantize: str, folder: Path, calibration: list[str] | None):
    """(run(feed) -> embeddings, input names), exporting into ``folder`` on first use."""
    import torch

    from embedtune.io import atomic_path

    names, example = _example(model)
    threads = torch.get_num_threads()
    graph = folder / ("model.xml" if backend == "openvino" else "model.onnx")
    if not graph.is_file():
        start = time.perf_counter()
        module = _Pooled.build(model)
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            target = tmp / graph.name
            if backend == "openvino":
                _export_openvino(module, example, target, model, names, calibration if quantize == "int8" else None)
            else:
                _export_onnx(module, example, names, target, quantize == "int8")
            (tmp / "export.json").write_text(json.dumps({"backend": backend, "quantize": quantize,
                                                         "seconds": round(time.perf_counter() - start, 1),
                                                         "calibration_docs": len(calibration or [])}))
        log.info("exported %s (%s, %s) in %.0f s", folder.name, backend, quantize, time.perf_counter() - start)
    if backend == "openvino":
        import openvino as ov

        compiled = ov.Core().compile_model(str(graph), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
        request = compiled.create_infer_request()
        return (lambda feed: np.asarray(request.infer(feed)[0], dtype=np.float32)), tuple(names)
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    return (lambda feed: np.asarray(session.run(None, feed)[0], dtype=np.float32)), tuple(names)


def _export_openvino(module, example: dict, target: Path, model, names, calibration) -> None:
    import openvino as ov
    import torch

    with torch.no_grad():
        graph = ov.convert_model(module, example_input=example)
    if calibration:
        import nncf

        items = []
        for text in calibration:
            feed = model.tokenizer([text], truncation=True, max_length=model.max_seq_length, return_tensors="np")
            items.append({k: feed[k].astype(np.int64) for k in names})
        graph = nncf.quantize(graph, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                              subset_size=len(items))
    ov.save_model(graph, str(target), compress_to_fp16=False)


def _export_onnx(module, example: dict, names: list[str], target: Path, int8: bool) -> None:
    import torch

    plain = target.with_name("fp32.onnx") if int8 else target
    axes = {k: {0: "batch", 1: "sequence"} for k in names} | {"embedding": {0: "batch"}}
    with torch.no_grad():
        torch.onnx.export(module, tuple(example[k] for k in names), str(plain), input_names=names,
                          output_names=["embedding"], dynamic_axes=axes, opset_version=17, dynamo=False)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = target.with_name("prepared.onnx")
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(str(prepared), str(target), weight_type=QuantType.QUInt8, per_channel=True)
        for path in (plain, prepared):
            os.remove(path)


def candidates(model) -> list[tuple[str, str, str]]:
    """(backend, quantize, precision) settings ``auto`` may choose from on this machine."""
    from embedtune.models import cpu_has_bf16

    out = [("torch", "none", "fp32")]
    if str(model.device) == "cpu" and cpu_has_bf16():
        out.append(("torch", "none", "bf16"))
    if str(model.device) == "cpu":
        for backend in ("openvino", "onnx"):
            if available(backend):
                out += [(backend, "none", "fp32"), (backend, "int8", "fp32")]
    return out


def machine() -> str:
    """The processor, as the choice and the benchmarks record it."""
    import platform

    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def choose(model, cfg, queries: dict[str, str], qrels: dict, corpus: dict[str, str],
           calibration: list[str] | None) -> dict:
    """``backend: auto``: encode a dev corpus and the dev queries with every candidate setting and
    keep the fastest whose dev nDCG@10 is within ``cfg.auto_tolerance`` of torch fp32.

    Speed is documents per second over the dev corpus (after a warm-up, export time not counted);
    the choice is cached per model, dev set, machine and candidate list, so an experiment measures
    once.

    Returns:
        ``{"backend", "quantize", "precision", "chosen_by", "reference_ndcg@10", "candidates": [...]}``.
    """
    import dataclasses

    from embedtune.evaluate import evaluate_runs
    from embedtune.models import model_fingerprint

    settings = candidates(model)
    ids, texts = list(corpus), list(corpus.values())
    digest = hashlib.sha256(json.dumps([model_fingerprint(model), sorted(queries.items()), sorted(corpus),
                                        machine(), settings, cfg.auto_tolerance]).encode()).hexdigest()
    cached = paths.cache_dir() / "backends" / f"choice-{digest[:20]}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    rows = []
    for backend, quantize, precision in settings:
        setting_cfg = dataclasses.replace(cfg, backend=backend, quantize=quantize, precision=precision)
        start = time.perf_counter()
        try:
            enc = encoder(model, setting_cfg, calibration)
        except BackendError as exc:
            rows.append({"backend": backend, "quantize": quantize, "precision": precision, "error": str(exc)})
            continue
        export_seconds = time.perf_counter() - start
        enc.encode(texts[:16], "document", cfg.batch_size)  # warm-up
        start = time.perf_counter()
        docs = enc.encode(texts, "document", cfg.batch_size)
        seconds = time.perf_counter() - start
        q = enc.encode(list(queries.values()), "query", cfg.batch_size)
        sims = q @ docs.T
        top = np.argsort(-sims, axis=1, kind="stable")[:, :10]
        run = {qid: {ids[j]: float(sims[i, j]) for j in top[i]} for i, qid in enumerate(queries)}
        ndcg = evaluate_runs(qrels, {"s": run}, ["ndcg@10"]).mean["s"]["ndcg@10"]
        rows.append({"backend": backend, "quantize": quantize, "precision": precision, "encoder": enc.name,
                     "docs_per_second": round(len(texts) / seconds, 2), "ndcg@10": round(ndcg, 5),
                     "export_seconds": round(export_seconds, 1)})
        log.info("backend auto: %s %s %s: %.1f docs/s, dev nDCG@10 %.4f", backend, quantize, precision,
                 len(texts) / seconds, ndcg)
    reference = next(r for r in rows if (r["backend"], r["quantize"], r["precision"]) == ("torch", "none", "fp32"))
    eligible = [r for r in rows if "error" not in r and r["ndcg@10"] >= reference["ndcg@10"] - cfg.auto_tolerance]
    best = max(eligible, key=lambda r: r["docs_per_second"])
    choice = {"backend": best["backend"], "quantize": best["quantize"], "precision": best["precision"],
              "chosen_by": f"auto: the fastest of {len(rows)} settings within {cfg.auto_tolerance} dev nDCG@10 of "
                           f"torch fp32 ({len(queries)} dev queries, {len(texts)} documents, {machine()})",
              "reference_ndcg@10": reference["ndcg@10"], "speedup": round(best["docs_per_second"] /
                                                                          reference["docs_per_second"], 2),
              "machine": machine(), "candidates": rows}
    from embedtune.io import atomic_write_json

    atomic_write_json(cached, choice)
    return choice
