"""The run folder a stage works in: its config, its data, the products of earlier stages.

Every stage notebook starts with ``ctx = open_run(params_file, overrides, run_dir)`` and calls
its stage module's ``run(ctx)``. A stage's ``run`` is wrapped by :func:`stage`, which holds the
run folder's lock while the stage writes, refuses to read upstream outputs made under other
params, and, only when the stage finishes, saves the resolved params, its manifest sections and
its marker (cache key). A notebook run by hand in JupyterLab records itself exactly as a run by
``embedtune run`` does, so a later ``embedtune run`` never takes its outputs for another
config's.

Paths in params (datasets, models, gold files, ...) are relative to the project root, whatever
the working directory: the CLI, a notebook in JupyterLab and the API resolve them alike
(``embedtune.paths.resolve``). The params file itself may be given relative to the working
directory or to the project root.

Example:
    >>> ctx = open_run("params/smoke.yaml")
    >>> ctx.cfg.data.dataset, ctx.run_dir.name
    ('scifact', 'smoke')
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from embedtune import paths
from embedtune.config import ExperimentConfig, load_config, redact_overrides, secret_overrides
from embedtune.data import BeirDataset, Splits, load_beir, make_splits, take_slice
from embedtune.io import read_json, read_rows
from embedtune.layout import RunLayout, resolve_run_dir
from embedtune.runfolder import (LOCK_ENV, FolderLock, check_upstream, end_stage, finish_stage,
                                 start_stage)


@dataclass
class RunContext:
    cfg: ExperimentConfig
    layout: RunLayout
    params_file: str | None = None  # the params file as resolved (recorded in the manifest)
    overrides: dict = field(default_factory=dict)  # as applied (secrets redacted when recorded)
    _pending: dict = field(default_factory=dict, repr=False)  # manifest sections, written at finish

    @property
    def run_dir(self) -> Path:
        return self.layout.root

    # ---- what every stage reads -----------------------------------------------------------
    @functools.cached_property
    def data(self) -> tuple[BeirDataset, Splits]:
        """The dataset and its train/dev/test splits (loaded once per kernel)."""
        return load_experiment_data(self.cfg.data, self.cfg.seed, self.cfg.gold)

    @functools.cached_property
    def base_model(self):
        """The generic (base) model, loaded once per kernel, encoding through ``model.backend``."""
        from embedtune.models import load_model

        m = self.cfg.model
        return self.with_encoder(load_model(m.name, m.device, m.max_seq_length))

    @functools.cached_property
    def encoding(self) -> dict:
        """The back-end every encoding uses: ``model.backend`` / ``model.quantize``, or with
        ``backend: auto`` the choice measured on the dev queries (cached; see embedtune.backends.choose)."""
        m = self.cfg.model
        if m.backend != "auto":
            return {"backend": m.backend, "quantize": m.quantize, "chosen_by": "params"}
        from embedtune.backends import choose
        from embedtune.models import load_model

        from embedtune.pairs import normalize_query

        ds, splits = self.data
        # the dev split as every stage sees it (01_pairs may not have run yet), without queries that
        # repeat a test query: the same dev queries, so the same choice, in every stage
        test_texts = {normalize_query(ds.queries[q]) for q in splits.test}
        dev = {q: d for q, d in splits.dev.items() if normalize_query(ds.queries[q]) not in test_texts}
        if not dev:
            raise ValueError("model.backend auto chooses on dev queries, and this experiment has none; "
                             "set model.backend")
        model = load_model(m.name, m.device, m.max_seq_length)
        return choose(model, m, {q: ds.queries[q] for q in dev}, dev,
                      self.dev_corpus(dev, m.auto_docs, bm25_depth=10, fill=False), self.calibration_texts)

    @functools.cached_property
    def calibration_texts(self) -> list[str]:
        """Passages of this experiment's corpus that int8 back-ends calibrate on (sampled there)."""
        from embedtune.data import doc_text

        return [doc_text(doc) for doc in self.data[0].corpus.values()]

    def with_encoder(self, model):
        """``model``, set to encode through this experiment's back-end (``model.embedtune_encoder``)."""
        import dataclasses

        from embedtune.backends import encoder

        chosen = self.encoding
        cfg = dataclasses.replace(self.cfg.model, backend=chosen["backend"], quantize=chosen["quantize"],
                                  precision=chosen.get("precision", self.cfg.model.precision))
        model.embedtune_encoder = encoder(model, cfg, self.calibration_texts)
        return model

    def dev_corpus(self, dev_qrels: dict, size: int, bm25_depth: int = 20, fill: bool = True) -> dict[str, str]:
        """A dev corpus that is hard like the real one but cheap to encode: the judged documents of
        the dev queries, their BM25 top ``bm25_depth`` (the distractors a full search meets first),
        then (``fill``) seeded random documents up to ``size``; without ``fill`` it is cut to
        ``size`` (judged documents first)."""
        import random

        from embedtune.data import doc_text

        ds, _ = self.data
        judged = sorted({d for docs in dev_qrels.values() for d in docs})
        ranked = self.bm25.search({q: ds.queries[q] for q in dev_qrels}, top_k=bm25_depth)
        near = sorted({d for docs in ranked.values() for d in docs} - set(judged))
        rng = random.Random(self.cfg.seed)
        if fill:
            others = sorted(d for d in ds.corpus if d not in set(judged) | set(near))
            rng.shuffle(others)
            keep = set(judged) | set(near) | set(others[: max(0, size - len(judged) - len(near))])
        else:
            rng.shuffle(near)
            keep = set(judged) | set(near[: max(0, size - len(judged))])
        return {d: doc_text(ds.corpus[d]) for d in sorted(keep)}

    def click_source(self, train_qrels: dict, dev_qrels: dict) -> tuple[list[dict], dict | None, dict]:
        """Click-log pairs (``clicks.use``: train / both) and the click validation set (validate / both),
        with a summary. 01_pairs trains on them; 00_decide's pilot too.

        A real log is read from ``clicks.path``; with ``clicks.simulate`` a log is simulated from
        the qrels and the ranking users were shown (``clicks.simulator.ranker``: the generic
        model's or BM25's): train queries for training clicks, dev queries for validation.
        """
        from embedtune import clicks

        cfg = self.cfg
        ds, _ = self.data
        if cfg.clicks.path:
            impressions = clicks.read_click_log(cfg.clicks.path, ds.corpus, ds.queries, strict=cfg.clicks.strict)
            counted = clicks.aggregate_clicks(impressions, cfg.clicks.min_dwell_s)
            train_ids, val_ids = clicks.split_click_queries(counted, cfg.clicks, cfg.seed)
        elif cfg.clicks.simulate:
            qrels = ({} if cfg.clicks.use == "validate" else train_qrels) | \
                    ({} if cfg.clicks.use == "train" else dev_qrels)
            queries = {q: ds.queries[q] for q in qrels}
            depth = cfg.clicks.simulator.depth
            shown = (self.bm25.search(queries, depth) if cfg.clicks.simulator.ranker == "bm25"
                     else self.generic.search(queries, depth))
            impressions = clicks.simulate_clicks(qrels, shown, queries, cfg.clicks.simulator, cfg.seed)
            train_ids, val_ids = set(train_qrels), set(dev_qrels)
        else:
            raise ValueError("pairs.sources has clicks but there is no clicks.path and clicks.simulate is off")
        rows: list[dict] = []
        if cfg.clicks.use in ("train", "both"):
            rows, _ = clicks.click_pairs(impressions, ds.corpus, cfg.clicks, only=train_ids)
        validation = None
        if cfg.clicks.use in ("validate", "both"):
            queries, qrels = clicks.click_validation(impressions, cfg.clicks, only=val_ids)
            validation = {"queries": queries, "qrels": qrels}
        return rows, validation, {"impressions": len(impressions), "pairs": len(rows),
                                  "validation_queries": len(validation["qrels"]) if validation else 0,
                                  "simulated": bool(cfg.clicks.simulate and not cfg.clicks.path)}

    @functools.cached_property
    def generic_index(self):
        """Base-model embeddings of the corpus (from the embedding cache when present)."""
        from embedtune.retrieval import DenseIndex, ann_params

        return DenseIndex.build(self.base_model, self.data[0].corpus, self.cfg.model,
                                backend=self.cfg.retrieval.dense_backend,
                                ann=ann_params(self.cfg.retrieval))

    @functools.cached_property
    def bm25(self):
        from embedtune.retrieval import BM25Retriever

        return BM25Retriever(self.data[0].corpus, self.cfg.retrieval.bm25)

    def embed_queries(self, model, texts: list[str]):
        """Normalised query embeddings of ``model``, through the embedding cache."""
        from embedtune.models import model_fingerprint
        from embedtune.retrieval import cached_encode, texts_fingerprint

        emb, _ = cached_encode(model, model_fingerprint(model), texts_fingerprint(texts), texts,
                               "query", self.cfg.model)
        return emb

    # ---- the systems under evaluation -----------------------------------------------------
    @functools.cached_property
    def generic(self):
        """The base model over its index of the corpus (a :class:`~embedtune.retrieval.DenseRetriever`)."""
        from embedtune.retrieval import DenseRetriever

        return DenseRetriever("generic", self.base_model, self.generic_index, self.cfg.model)

    @functools.cached_property
    def dense_systems(self) -> dict:
        """``generic`` and, when 03_train left a model, ``finetuned`` over its own index."""
        from embedtune.retrieval import DenseIndex, DenseRetriever, ann_params

        cfg = self.cfg
        out = {"generic": self.generic}
        finetuned = self.finetuned_model()
        if finetuned is not None:
            index = DenseIndex.build(finetuned, self.data[0].corpus, cfg.model,
                                     backend=cfg.retrieval.dense_backend,
                                     ann=ann_params(cfg.retrieval))
            out["finetuned"] = DenseRetriever("finetuned", finetuned, index, cfg.model)
        return out

    def systems(self, hybrid: dict[str, dict]) -> dict:
        """Every system, in evaluation order: ``bm25``, the dense systems, and their hybrids as
        ``hybrid`` (name -> the block 04_evaluate chose: weight, method) says."""
        from embedtune.fusion import HybridRetriever

        out = {"bm25": self.bm25, **self.dense_systems}
        for dense, system in self.dense_systems.items():
            name = f"hybrid_{dense}"
            if name in hybrid:
                out[name] = HybridRetriever.as_chosen(name, self.bm25, system, self.cfg.retrieval.hybrid,
                                                      hybrid[name])
        return out

    # ---- the products of earlier stages ---------------------------------------------------
    def pairs(self) -> list[dict]:
        """The training pairs that 01_pairs left."""
        path = self.layout.pairs_train
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no pairs yet; run the pairs stage first")
        return read_rows(path)

    def dev_qrels(self) -> dict:
        """The leakage-guarded dev queries of 01_pairs when that stage ran, else the plain dev split."""
        path = self.layout.dev_qrels
        return json.loads(path.read_text()) if path.is_file() else self.data[1].dev

    def negatives(self) -> list[dict]:
        """The pairs with hard negatives that 02_negatives left."""
        path = self.layout.negatives_train
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no negatives yet; run the negatives stage first")
        return read_rows(path)

    def finetuned_model(self):
        """The fine-tuned model that 03_train left in the run folder (encoding through the
        experiment's back-end), or None."""
        if not (self.layout.model_dir / "modules.json").is_file():
            return None
        from embedtune.models import load_model

        return self.with_encoder(load_model(str(self.layout.model_dir), self.cfg.model.device))

    def version(self) -> dict:
        """``model/version.json`` of 03_train ({} when there is no fine-tuned model)."""
        return read_json(self.layout.version)

    def command(self) -> str:
        """The command line that runs this experiment again (secrets redacted)."""
        import shlex

        params = Path(self.params_file) if self.params_file else None
        if params is not None and params.is_relative_to(paths.project_root()):
            params = params.relative_to(paths.project_root())
        parts = ["embedtune", "run", shlex.quote(str(params))]
        for key, value in redact_overrides(self.overrides).items():
            parts += ["--set", shlex.quote(f"{key}={json.dumps(value)}")]
        return " ".join(parts)

    # ---- the manifest ---------------------------------------------------------------------
    def read_manifest(self) -> dict[str, Any]:
        return read_json(self.layout.manifest)

    def update_manifest(self, **sections: Any) -> None:
        """Sections to merge into ``manifest.json`` (dict sections one level deep) when the stage
        finishes; nothing is written before."""
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(self._pending.get(key), dict):
                self._pending[key].update(value)
            else:
                self._pending[key] = value

    @contextlib.contextmanager
    def running(self, name: str) -> Iterator[None]:
        """Hold the folder while stage ``name`` writes; record it only when it finishes."""
        from embedtune.keys import stage_keys

        keys = stage_keys(self.cfg)
        by = "runner" if os.environ.get(LOCK_ENV) == str(self.layout.root.resolve()) else "notebook"
        with FolderLock(self.layout, purpose=f"stage {name}"):
            check_upstream(self.layout, name, keys)
            start_stage(self.layout, name)
            self._pending = {}
            start = time.perf_counter()
            try:
                yield
            except KeyboardInterrupt:
                end_stage(self.layout, name, "interrupted", time.perf_counter() - start)
                raise
            except BaseException:
                end_stage(self.layout, name, "failed", time.perf_counter() - start)
                raise
            finish_stage(self.layout, name, keys[name], self.cfg, seconds=time.perf_counter() - start,
                         params_file=self.params_file, overrides=redact_overrides(self.overrides),
                         by=by, manifest_sections=self._pending)


def stage(name: str) -> Callable:
    """Make ``run(ctx)`` a stage: see :meth:`RunContext.running`.

    Example:
        >>> @stage("pairs")
        ... def run(ctx: RunContext) -> PairsResult: ...
    """
    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def run(ctx: RunContext, *args, **kwargs):
            with ctx.running(name):
                return fn(ctx, *args, **kwargs)
        return run
    return decorate


def load_experiment_data(cfg, seed: int, gold=None) -> tuple[BeirDataset, Splits]:
    """Load the dataset of an experiment (``cfg``: a DataConfig), merge the manual gold files
    (``gold``: a GoldConfig), make its splits, and slice it if asked."""
    ds = load_beir(cfg.dataset, strict=cfg.strict)
    if gold is not None and gold.files:
        from embedtune.gold import apply_gold

        ds, _ = apply_gold(ds, gold)
    seed = seed if cfg.split_seed is None else cfg.split_seed
    splits = make_splits(ds, cfg, seed)
    return take_slice(ds, splits, cfg.max_queries, cfg.max_docs, seed)


def resolve_params_file(params_file: str | Path) -> Path:
    """The params file: as given when it exists (absolute, or relative to the working
    directory), else relative to the project root (a notebook's ``params/smoke.yaml``)."""
    path = Path(params_file).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    return (paths.project_root() / path).resolve()


def open_run(params_file: str | Path, overrides: dict | None = None,
             run_dir: str | Path | None = None) -> RunContext:
    """Load the config (strictly) and open the run folder. Nothing is written until a stage
    finishes.

    Secret values in ``overrides`` (an endpoint URL with a key) that the runner passed as
    redacted are taken from the environment it started the kernel with, never from a file.
    """
    params_path = resolve_params_file(params_file)
    overrides = secret_overrides(dict(overrides or {}))
    cfg = load_config(params_path, overrides)
    folder = resolve_run_dir(cfg, run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    return RunContext(cfg, RunLayout(folder), str(params_path), overrides)
