"""One bad request fails alone: work isolated inside merged batches, requests checked before they
join one (filters against the corpus's field kinds and the server's limits, lone surrogates),
bounded filter cost, filter evaluation that stops with its request, and the API key on every
path but the probes. Real loopback server (in a thread) with scripted backends."""

import asyncio
import fnmatch
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from rerankflow.cancel import CancelToken
from rerankflow.errors import BackendError, ConfigError, DataError
from rerankflow.generators.answer import AnswerGenerator
from rerankflow.pipelines.job import ServeSpec
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.retrievers.filters import FieldKinds, MaskCache, MetadataFilter
from rerankflow.serve.app import create_app
from rerankflow.serve.launch import serve_in_thread
from rerankflow.serve.served import ServedPipeline, isolated, serve_pipelines
from rerankflow.stage import Transformer
from rerankflow.testing.fake import FakeBackend
from rerankflow.types import Document, Query, Ranking

pytestmark = pytest.mark.slow  # starts the server on loopback (in a thread)

REPLY = "Telescopes are listed in [1]."
DOCS = [
    Document(f"d{i}", f"telescope proposal {i} deadline", None, {"tags": ["astro", f"t{i % 3}"], "year": 2020 + i})
    for i in range(30)
]


class Poison(Transformer):
    """Passes batches through, raising TypeError for a query that contains 'poison' (a bug that
    only one request's data triggers); records batch sizes to show that requests merged."""

    def __init__(self):
        self.sizes = []

    def transform(self, batch):
        self.sizes.append(len(batch))
        if any("poison" in r.query.text for r in batch):
            raise TypeError("'<' not supported between instances of 'list' and 'int'")
        return list(batch)


class Gate(FakeBackend):
    """Generation waits until ``opened`` is set (so later requests queue and merge)."""

    def __init__(self):
        super().__init__([REPLY])
        self.opened = threading.Event()
        self.calls = 0

    async def _agenerate(self, prompts, params):
        self.calls += 1
        await asyncio.to_thread(self.opened.wait, 30)
        return await super()._agenerate(prompts, params)


def chat(text, **extra):
    return {"model": "rag", "messages": [{"role": "user", "content": text}], **extra}


def make_app(gate, poison=None, **spec):
    rag = BM25Retriever(DOCS, k=3)
    if poison is not None:
        rag = rag >> poison
    rag = rag >> AnswerGenerator(gate, max_tokens=16)
    return create_app(serve_pipelines({"rag": rag}), ServeSpec(**spec))


def wait_until(check, timeout=10):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def post_json(url, body):
    """POST ``body`` as ASCII JSON (``\\udc00`` escapes survive; httpx's own encoder refuses them)."""
    return httpx.post(url, content=json.dumps(body), headers={"content-type": "application/json"}, timeout=30)


def post_while_first_holds(base, gate, bodies, queued=None):
    """Send one request that holds the pipeline (its generation waits), then ``bodies`` at
    once (the ``queued`` that pass validation merge into the next batch), then open the gate;
    the responses of ``bodies``."""
    with ThreadPoolExecutor(len(bodies) + 1) as pool:
        first = pool.submit(httpx.post, base + "/v1/chat/completions", json=chat("telescope deadline"), timeout=30)
        wait_until(lambda: gate.calls >= 1)
        futures = [pool.submit(post_json, base + "/v1/chat/completions", b) for b in bodies]
        wait_until(lambda: httpx.get(base + "/healthz").json()["queue_depth"] >= (queued or len(bodies)))
        gate.opened.set()
        assert first.result().status_code == 200
        return [f.result() for f in futures]


def test_a_request_whose_work_raises_inside_a_merged_batch_fails_alone():
    gate, poison = Gate(), Poison()
    with serve_in_thread(make_app(gate, poison, max_concurrent=16)) as base:
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200)
        bodies = [chat(f"telescope proposal {i}") for i in range(6)]
        bodies.insert(3, chat("telescope poison"))
        answers = post_while_first_holds(base, gate, bodies)
    assert max(poison.sizes) == 7  # the seven requests ran as one batch first
    assert [r.status_code for r in answers] == [200, 200, 200, 500, 200, 200, 200]
    assert answers[3].json()["error"]["type"] == "server_error"
    for r in answers[:3] + answers[4:]:
        body = r.json()
        assert body["choices"][0]["message"]["content"] == REPLY and len(body["rerankflow"]["documents"]) == 3


def test_poisoned_filters_and_lone_surrogates_are_400s_and_their_batch_mates_answer():
    gate = Gate()
    with serve_in_thread(make_app(gate, max_concurrent=16)) as base:
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200)
        good = [chat(f"telescope proposal {i}", filter={"tags": "astro"}) for i in range(3)]
        bad = [
            chat("telescope", filter={"tags": {"gt": 0}}),  # a number against a list of strings
            chat("telescope", filter={"year": {"eq": "2021"}}),  # a string against numbers
            chat("telescope", filter={"tags": {"exists": "no"}}),
            chat("telescope\udc00"),
        ]
        answers = post_while_first_holds(base, gate, good + bad, queued=len(good))
        assert [r.status_code for r in answers] == [200, 200, 200, 400, 400, 400, 400]
        errors = [r.json()["error"] for r in answers[3:]]
        assert "field 'tags' holds strings" in errors[0]["message"] and errors[0]["param"] == "filter"
        assert "field 'year' holds numbers" in errors[1]["message"]
        assert "use true or false" in errors[2]["message"]
        assert "messages[0].content: character 9 is a lone surrogate" in errors[3]["message"]
        rerank = {"model": "rag", "query": "q", "documents": ["ok", {"text": "bad \udc00"}]}
        r = post_json(base + "/v1/rerank", rerank)
        assert r.status_code == 400 and "documents[1].text: character 4" in r.json()["error"]["message"]


def test_filter_sizes_are_capped_and_the_caps_are_settings():
    with serve_in_thread(make_app(Gate(), filter_max_values=50, filter_max_glob_chars=20)) as base:
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200)
        r = httpx.post(base + "/v1/chat/completions", json=chat("t", filter={"docid": {"in": list(range(51))}}))
        assert (
            r.status_code == 400 and "51 values; at most 50 (serve.filter_max_values)" in r.json()["error"]["message"]
        )
        r = httpx.post(base + "/v1/chat/completions", json=chat("t", filter={"docid": {"glob": "d" + "*" * 20}}))
        assert r.status_code == 400 and "at most 20 (serve.filter_max_glob_chars)" in r.json()["error"]["message"]
    defaults = ServeSpec()
    assert (defaults.filter_max_values, defaults.filter_max_glob_chars) == (1000, 256)


def test_the_api_key_guards_metrics_and_the_api_docs_but_not_the_probes(monkeypatch):
    monkeypatch.setenv("RF_TEST_KEY", "s3cret")
    with serve_in_thread(make_app(Gate(), api_key_env="RF_TEST_KEY")) as base:
        wait_until(lambda: httpx.get(base + "/readyz").status_code == 200)
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc", "/v1/models", "/nowhere"):
            assert httpx.get(base + path).status_code == 401, path
        assert httpx.get(base + "/healthz").status_code == 200
        key = {"Authorization": "Bearer s3cret"}
        assert httpx.get(base + "/metrics", headers=key).status_code == 200
        assert httpx.get(base + "/openapi.json", headers=key).status_code == 200


# -- the pieces, without a server -------------------------------------------------------------------


def test_isolated_bisects_to_the_failing_items_and_keeps_order():
    runs = []

    def run(items):
        runs.append(list(items))
        if any(x < 0 for x in items):
            raise ValueError(f"bad {min(items)}")
        return [x * 10 for x in items]

    out = isolated(run, [1, 2, -3, 4, 5, 6, -7, 8])
    assert [o if isinstance(o, int) else str(o) for o in out] == [10, 20, "bad -3", 40, 50, 60, "bad -7", 80]
    assert len(runs) < 8 + 8  # halves, not every item again on its own


def test_isolated_does_not_retry_a_failing_backend():
    calls = []

    def run(items):
        calls.append(items)
        raise BackendError("the model server is down")

    with pytest.raises(BackendError):
        isolated(run, [1, 2, 3, 4])
    assert len(calls) == 1


def test_a_cancelled_request_stops_its_filter_evaluation():
    docs = [Document(f"x{i}", "t", None, {"n": i}) for i in range(50)]
    cache = MaskCache(docs)
    cache.BLOCK = 10
    token, seen = CancelToken(), []

    class Counting(MetadataFilter):
        def matches(self, doc):
            seen.append(doc.docid)
            if len(seen) == 15:
                token.cancel("client disconnected")
            return True

    flt = Counting({"n": {"gte": 0}})
    assert cache.mask(flt, token) is None
    assert len(seen) == 20  # the block in progress ends, the next is never started
    assert cache.mask(flt) is not None and len(seen) == 70  # nothing half-done was remembered


def test_served_pipelines_compute_filter_masks_with_each_requests_token():
    bm25 = BM25Retriever(DOCS, k=3)
    served = ServedPipeline("rag", bm25)
    assert served.filtered == [bm25]
    gone = CancelToken()
    gone.cancel("client disconnected")
    bm25.prepare_filter({"tags": "t2"}, gone)
    assert len(bm25._masks._masks) == 0  # a request that went away computes no mask
    spec = {"tags": "t1"}
    served.check_filter(spec, max_values=10, max_glob_chars=10)
    out = asyncio.run(served.prepare(Ranking(Query("q", "telescope", spec)), CancelToken()))
    assert out.candidates and {c.docid for c in out.candidates} <= {d.docid for d in DOCS if "t1" in d.meta["tags"]}
    assert len(bm25._masks._masks) == 1


def test_filter_semantics_hold_on_list_fields_and_never_raise():
    docs = [
        Document("a", "x", None, {"tags": ["a", "b"], "n": [1, 5], "flag": True}),
        Document("b", "x", None, {"tags": "c", "n": 3, "flag": 1}),
    ]

    def hits(spec):
        flt = MetadataFilter(spec)
        return {d.docid for d in docs if flt.matches(d)}

    assert hits({"tags": {"gt": 0}}) == set()  # no TypeError: a number never compares with a string
    assert hits({"n": {"gte": 4}}) == {"a"}  # any element of a list field
    assert hits({"flag": True}) == {"a"} and hits({"flag": 1}) == {"b"}  # True is not 1
    assert hits({"tags": {"glob": "?"}}) == {"a", "b"}
    with pytest.raises(ConfigError, match="use true or false, not 'no'"):
        MetadataFilter({"tags": {"exists": "no"}})
    with pytest.raises(ConfigError, match="use exists: false"):
        MetadataFilter({"tags": {"eq": None}})
    with pytest.raises(ConfigError, match="a pattern is a string"):
        MetadataFilter({"tags": {"glob": 3}})
    kinds = FieldKinds(docs)
    with pytest.raises(DataError, match="field 'tags' holds strings"):
        kinds.check({"tags": {"gt": 0}})
    kinds.check({"n": {"gt": 0}, "missing": {"eq": 1}, "tags": {"exists": False}, "flag": [True, 1]})


def test_glob_patterns_do_not_fill_a_process_wide_cache():
    before = fnmatch._compile_pattern.cache_info().currsize
    docs = [Document("a", "x", None, {"source": "guides/a.md"})]
    for i in range(50):
        assert not MetadataFilter({"source": {"glob": f"nothing-{i}-*"}}).matches(docs[0])
    assert fnmatch._compile_pattern.cache_info().currsize == before


def test_large_in_lists_cost_one_lookup_per_document():
    compared = []

    class Spy(str):
        def __eq__(self, other):
            compared.append(other)
            return str.__eq__(self, other)

        __hash__ = str.__hash__

    flt = MetadataFilter({"docid": {"in": [f"id{i}" for i in range(10_000)]}})
    assert flt.matches(Document(Spy("id9999"), "x")) and not flt.matches(Document(Spy("zz"), "x"))
    assert len(compared) <= 2  # a hash lookup, not 10,000 comparisons


def test_a_filter_that_cannot_run_fails_its_own_request_inside_a_merged_batch():
    """The server checks filters before batching; a caller of ServedPipeline directly does not,
    and a filter that clashes with the stage's own still fails only its request."""
    bm25 = BM25Retriever(DOCS, k=3, filter={"year": {"gte": 2020}})
    served = ServedPipeline("rag", bm25)

    async def both():
        good = served.prepare(Ranking(Query("a", "telescope", {"tags": "t1"})), CancelToken())
        bad = served.prepare(Ranking(Query("b", "telescope", {"year": {"gte": 2021}})), CancelToken())
        return await asyncio.gather(good, bad, return_exceptions=True)

    good, bad = asyncio.run(both())
    assert isinstance(bad, ConfigError) and "sets 'gte' again" in str(bad)
    assert isinstance(good, Ranking) and good.candidates
