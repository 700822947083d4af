"""A reranker behind an HTTP rerank endpoint: ``/v1/rerank`` (Cohere and Jina shape: vLLM
serve, Infinity, Cohere, Jina, ``rerankflow serve``) or ``/rerank`` (Hugging Face TEI shape).

Pairs are grouped by query (consecutive pairs with the same query go together) and sent in
requests of at most ``batch_size`` documents, concurrently up to ``max_concurrency``, with the
retries and limits of :class:`~rerankflow.backends.http_transport.HTTPTransport`. Every answer
must score every document it was sent exactly once; anything else is an error naming the URL.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from ..errors import BackendError
from .base import run_sync
from .batching import query_runs
from .http_transport import HTTPTransport, TransportOptions

RerankAPI = Literal["cohere", "tei"]


class RerankEndpointOptions(TransportOptions):
    """A rerank endpoint: where it is (:class:`TransportOptions`) and which API shape it speaks."""

    base_url: str = Field("http://127.0.0.1:8000", description="server address, e.g. http://127.0.0.1:8000")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    api: RerankAPI = Field("cohere", description="request/answer shape")
    path: str | None = Field(None, description="default: /v1/rerank (cohere), /rerank (tei)")
    batch_size: int = Field(64, ge=1, description="documents per request")
    max_concurrency: int = Field(8, ge=1, description="requests in flight at once")


class RerankEndpointModel:
    """One relevance score per (query, passage) pair from a rerank endpoint (see the module
    docstring); a drop-in for :class:`~rerankflow.backends.cross_encoder.CrossEncoderModel`."""

    def __init__(self, model: str | None, *, options: RerankEndpointOptions | None = None, **settings: Any) -> None:
        self.model = model
        self.options = RerankEndpointOptions.build(options, settings, "rerank endpoint", BackendError)
        self.api: RerankAPI = self.options.api
        self.path = self.options.path or ("/v1/rerank" if self.api == "cohere" else "/rerank")
        self.http = HTTPTransport(self.options)

    def load(self) -> None:
        """Nothing to load; checks that the HTTP libraries are there."""
        HTTPTransport.check_installed()

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, passage) pair, in input order (higher is more relevant)."""
        if not pairs:
            return []
        self.load()
        spans = query_runs([q for q, _ in pairs], self.options.batch_size)  # one request per span
        bodies = [self._body(pairs[a][0], [p for _, p in pairs[a:b]]) for a, b in spans]
        answers = run_sync(self.http.post_all(self.path, bodies, self._check))
        scores: list[float] = []
        for (a, b), (data, _) in zip(spans, answers, strict=True):
            scores.extend(self._scores(data, b - a))
        return scores

    def _body(self, query: str, documents: list[str]) -> dict[str, Any]:
        if self.api == "tei":
            return {"query": query, "texts": documents, "raw_scores": False}
        body: dict[str, Any] = {"query": query, "documents": documents, "top_n": len(documents)}
        if self.model:
            body["model"] = self.model
        return body

    def _results(self, data: Any) -> Any:
        return data if self.api == "tei" else (data.get("results") if isinstance(data, dict) else None)

    def _check(self, url: str, data: Any) -> None:
        results = self._results(data)
        key = "score" if self.api == "tei" else "relevance_score"
        if not isinstance(results, list) or not all(
            isinstance(r, dict) and isinstance(r.get("index"), int) and isinstance(r.get(key), (int, float))
            for r in results
        ):
            shape = "a list of {index, score}" if self.api == "tei" else "'results': [{index, relevance_score}]"
            raise BackendError(f"{url} answered without {shape} (api: {self.api}): {str(data)[:120]}")

    def _scores(self, data: Any, n: int) -> list[float]:
        key = "score" if self.api == "tei" else "relevance_score"
        by_index: dict[int, float] = {}
        for r in self._results(data):
            if r["index"] in by_index or not 0 <= r["index"] < n:
                raise BackendError(
                    f"{self.http.base_url}{self.path} scored document {r['index']} twice or out of range (sent {n})"
                )
            by_index[r["index"]] = float(r[key])
        missing = sorted(set(range(n)) - set(by_index))
        if missing:
            raise BackendError(
                f"{self.http.base_url}{self.path} left documents {missing[:10]} of {n} unscored "
                "(the endpoint must return every document: top_n is sent as the number of documents)"
            )
        return [by_index[i] for i in range(n)]

    @property
    def identity(self) -> str:
        """What the scores depend on (a stage-cache key part)."""
        return f"rerank-endpoint:{self.http.base_url}{self.path}:{self.api}:{self.model}"

    def __repr__(self) -> str:
        return f"RerankEndpointModel({self.model!r}, base_url={self.http.base_url!r})"
