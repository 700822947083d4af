"""Request and response bodies of the server: OpenAI chat completions and Cohere/Jina rerank.

Requests are validated by pydantic; an argument the server does not know is an error that
names it (as OpenAI's own API does), never silently ignored. Responses are plain dicts in
the shapes the official clients parse, plus one extension field, ``rerankflow``, holding
the passages the answer was given and the citations that point into them.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..backends.types import GenerationParams
from ..errors import ConfigError
from ..retrievers.filters import MetadataFilter
from ..types import Answer, Candidate, Document, Ranking, Turn


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


_SURROGATE = re.compile("[\ud800-\udfff]")


def lone_surrogate(data: Any, path: str = "") -> str | None:
    """Where ``data`` (parsed JSON) holds a string with a lone UTF-16 surrogate (``"\\udc00"``
    is valid JSON but no Unicode text: tokenizers and encoders fail on it), or ``None``."""
    if isinstance(data, str):
        found = _SURROGATE.search(data)
        if found:
            return f"{path or 'body'}: character {found.start()} is a lone surrogate ({found.group()!r})"
        return None
    if isinstance(data, dict):
        items: Any = ((f"{path}.{k}" if path else str(k), v) for k, v in data.items())
        keys = (lone_surrogate(k, f"{path or 'body'} key") for k in data if isinstance(k, str))
        return next((hit for hit in keys if hit), None) or next(
            (hit for p, v in items if (hit := lone_surrogate(v, p))), None
        )
    if isinstance(data, list):
        return next((hit for i, v in enumerate(data) if (hit := lone_surrogate(v, f"{path}[{i}]"))), None)
    return None


BUDGET_MS = Field(
    None,
    ge=1,
    description="rerankflow extension: milliseconds this request may take; anytime rerankers return their best "
    "ranking by then (default and cap: serve.budget_ms, serve.max_budget_ms)",
)


class _Request(_Body):
    """A request body: valid Unicode everywhere (checked before any field)."""

    @model_validator(mode="before")
    @classmethod
    def _unicode(cls, data: Any) -> Any:
        where = lone_surrogate(data)
        if where:
            raise ValueError(f"{where}; send valid Unicode text (a surrogate pair, or the character itself)")
        return data


class TextPart(_Body):
    """A text part of a multi-part message content."""

    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    """One message of the conversation."""

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        """The message's text (parts joined by newlines)."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content)


class StreamOptions(_Body):
    """``stream_options`` of a streamed request."""

    include_usage: bool = False


class ChatRequest(_Request):
    """``POST /v1/chat/completions``: the last user message is the query."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    budget_ms: int | None = BUDGET_MS
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: Literal[1] = 1
    user: str | None = None
    filter: dict[str, Any] | None = Field(
        None, description="rerankflow extension: a metadata filter for the retrievers (docs/indexing.md#filters)"
    )

    @field_validator("filter")
    @classmethod
    def _filter_valid(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            try:
                MetadataFilter(v)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return v

    def query(self) -> str:
        """Text of the last user message (empty if there is none)."""
        users = [m for m in self.messages if m.role == "user"]
        return users[-1].text() if users else ""

    def history(self, *, system: bool = True) -> tuple[Turn, ...]:
        """The conversation before the last user message: user and assistant turns, and the
        system (or developer) messages unless ``system`` is false; tool messages are left out."""
        last = max((i for i, m in enumerate(self.messages) if m.role == "user"), default=0)
        turns = []
        for m in self.messages[:last]:
            role = "system" if m.role in ("system", "developer") else m.role
            wanted = role in ("user", "assistant") or (role == "system" and system)
            if wanted and m.text().strip():
                turns.append(Turn(role, m.text()))
        return tuple(turns)

    def params(self, defaults: GenerationParams, max_tokens_limit: int) -> GenerationParams:
        """The pipeline's generation settings with this request's overrides applied."""
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        limit = self.max_completion_tokens or self.max_tokens
        return GenerationParams(
            max_tokens=min(limit, max_tokens_limit) if limit else defaults.max_tokens,
            temperature=defaults.temperature if self.temperature is None else self.temperature,
            top_p=defaults.top_p if self.top_p is None else self.top_p,
            stop=tuple(stop) if stop is not None else defaults.stop,
            seed=defaults.seed if self.seed is None else self.seed,
        )


class RerankDocument(_Body):
    """A document given as an object (Cohere/Jina also accept plain strings)."""

    text: str
    title: str | None = None
    id: str | None = None


class _RerankBody(_Request):
    """A rerank request: a query with text."""

    query: str
    budget_ms: int | None = BUDGET_MS

    @field_validator("query")
    @classmethod
    def _query_has_text(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("query is empty")
        return v


class RerankRequest(_RerankBody):
    """``POST /v1/rerank`` in the Cohere (v1)/Jina shape."""

    model: str | None = None
    documents: list[str | RerankDocument]
    top_n: int | None = Field(None, ge=1)
    return_documents: bool = False

    def as_documents(self) -> list[Document]:
        """Documents with their request position as id (``"0"``, ``"1"``...)."""
        out = []
        for i, d in enumerate(self.documents):
            if isinstance(d, str):
                out.append(Document(str(i), d))
            else:
                out.append(Document(str(i), d.text, d.title, {"id": d.id} if d.id is not None else {}))
        return out


class RerankV2Request(_RerankBody):
    """``POST /v2/rerank`` in Cohere's v2 shape (what ``cohere.ClientV2().rerank`` sends):
    ``model`` is required and documents are strings."""

    model: str
    documents: list[str]
    top_n: int | None = Field(None, ge=1)

    def as_documents(self) -> list[Document]:
        """Documents with their request position as id."""
        return [Document(str(i), d) for i, d in enumerate(self.documents)]


class TEIRerankRequest(_RerankBody):
    """``POST /rerank`` in the shape of Hugging Face text-embeddings-inference (TEI).
    ``truncate`` and ``truncation_direction`` are accepted; passages are cut by the pipeline's
    own settings either way. ``raw_scores`` is accepted; the score is the pipeline's final
    score either way (TEI's sigmoid applies to a cross-encoder's logit, which a pipeline's
    last stage need not produce)."""

    model: str | None = Field(None, description="rerankflow extension: the pipeline, when several rerank")
    texts: list[str]
    return_text: bool = False
    raw_scores: bool = False
    truncate: bool | None = None
    truncation_direction: Literal["right", "left", "Right", "Left"] | None = None

    def as_documents(self) -> list[Document]:
        """Documents with their request position as id."""
        return [Document(str(i), d) for i, d in enumerate(self.texts)]


def new_id(prefix: str) -> str:
    """A fresh response id such as ``chatcmpl-3f2a...``."""
    return f"{prefix}-{uuid.uuid4().hex}"


def passages(ranking: Ranking, llm_usage: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``rerankflow`` extension: the query's id, the query that was searched (after a
    ``condense`` stage: the standalone query; ``None`` when a ``gate`` skipped retrieval),
    whether retrieval ran, how many earlier turns came with the request, the passages sent to
    the model ([n] is ``documents[n-1]``), the citations found in the answer, and (given)
    the LLM use of every stage with its cost."""
    answer = ranking.answer
    scores = {c.docid: c.score for c in ranking.candidates}
    context = answer.context if answer else tuple(c.doc for c in ranking.candidates)
    cited = set(answer.cited_docids) if answer else set()
    by_id = {d.docid: d for d in context}
    return {
        "query_id": ranking.query.qid,
        "searched": None if ranking.retrieval_skipped else ranking.query.text,
        "retrieved": not ranking.retrieval_skipped,
        "history_turns": len(ranking.query.history),
        "documents": [
            {
                "number": n,
                "docid": d.docid,
                "title": d.title,
                "text": d.text,
                "score": scores.get(d.docid),
                "cited": d.docid in cited,
                **location(d),
            }
            for n, d in enumerate(context, 1)
        ],
        "citations": [
            {"number": c.number, "docid": c.docid, **(location(by_id[c.docid]) if c.docid in by_id else {})}
            for c in answer.citations
        ]
        if answer
        else [],
        **({"usage": llm_usage} if llm_usage is not None else {}),
        **budget_used(ranking),
    }


def budget_used(ranking: Ranking) -> dict[str, Any]:
    """``{"budget": [...]}``: what a budget did in each reranker that ran under one (the head
    it reranked, what stopped it, the work left); empty when none did."""
    used = [{"stage": r.stage, **r.budget.as_dict()} for r in ranking.trace if r.budget is not None]
    return {"budget": used} if used else {}


LOCATION_KEYS = ("doc_id", "source", "start", "end", "heading", "page")


def location(doc: Document) -> dict[str, Any]:
    """Where an indexed chunk comes from (document, file, character offsets, heading, page);
    empty for documents that did not come from an index."""
    return {k: doc.meta[k] for k in LOCATION_KEYS if k in doc.meta}


def ranked_meta(candidate: Candidate, rank: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """What an adapter's document carries (LangChain, Haystack): the document's own metadata,
    ``extra`` over it (the caller's), then ``title``, ``rank`` (0-based) and every stage's ``scores``."""
    return {**candidate.doc.meta, **(extra or {}), "title": candidate.doc.title, "rank": rank,
            "scores": candidate.scores()}  # fmt: skip


def usage(answer: Answer) -> dict[str, int]:
    """OpenAI ``usage`` of the generator call."""
    return {
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.prompt_tokens + answer.output_tokens,
    }


def finish_reason(answer: Answer) -> str:
    """``stop`` or ``length`` (what OpenAI clients expect)."""
    return "length" if answer.finish_reason == "length" else "stop"


def chat_completion(
    rid: str, model: str, ranking: Ranking, answer: Answer, llm_usage: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A ``chat.completion`` response (``llm_usage``: every stage's LLM use, in the extension)."""
    return {
        "id": rid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer.text},
                "finish_reason": finish_reason(answer),
                "logprobs": None,
            }
        ],
        "usage": usage(answer),
        "rerankflow": passages(ranking.with_answer(answer), llm_usage),
    }


def chat_chunk(
    rid: str,
    model: str,
    created: int,
    *,
    delta: dict[str, Any] | None = None,
    finish: str | None = None,
    extra: dict[str, Any] | None = None,
    with_usage: bool = False,
) -> dict[str, Any]:
    """One ``chat.completion.chunk`` (``delta=None``: the usage-only chunk with no choices)."""
    body: dict[str, Any] = {"id": rid, "object": "chat.completion.chunk", "created": created, "model": model}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
    if with_usage:
        body["usage"] = None
    if extra:
        body.update(extra)
    return body


def rerank_response(rid: str, model: str, request: RerankRequest, ranking: Ranking) -> dict[str, Any]:
    """Cohere v1/Jina ``results``: request index and the pipeline's final score, best first."""
    top = ranking.candidates[: request.top_n] if request.top_n else ranking.candidates
    results = []
    for c in top:
        item: dict[str, Any] = {"index": int(c.docid), "relevance_score": c.score}
        if request.return_documents:
            item["document"] = {"text": c.doc.text}
        results.append(item)
    return {"id": rid, "model": model, "results": results, **({"rerankflow": b} if (b := budget_used(ranking)) else {})}


def rerank_v2_response(rid: str, request: RerankV2Request, ranking: Ranking) -> dict[str, Any]:
    """Cohere v2: ``results`` (index, relevance_score), best first, and ``meta``."""
    top = ranking.candidates[: request.top_n] if request.top_n else ranking.candidates
    return {
        "id": rid,
        "results": [{"index": int(c.docid), "relevance_score": c.score} for c in top],
        "meta": {"api_version": {"version": "2"}},
    }


def tei_rerank_response(request: TEIRerankRequest, ranking: Ranking) -> list[dict[str, Any]]:
    """TEI: a list of ``{index, score}`` (and ``text`` when asked), best first."""
    return [
        {"index": int(c.docid), "score": c.score, **({"text": c.doc.text} if request.return_text else {})}
        for c in ranking.candidates
    ]
