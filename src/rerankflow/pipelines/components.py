"""Registration of the built-in stages for YAML jobs (importing this module registers them).

Each stage's settings are its class's ``Options`` (declared next to the class); a YAML config
is those options plus the keys below, which name the objects the job builds and shares: a
backend, a template, an encoder, a tokenizer. Build functions only turn those keys into
objects and hand the options over unchanged.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from ..backends.embeddings import EncoderOptions, SentenceTransformerEncoder, TextEncoder
from ..backends.factory import BackendConfig
from ..backends.hf_classifier import HFClassifierOptions, local_pair_scorer
from ..backends.models import model_identity
from ..backends.rerank_http import RerankEndpointModel, RerankEndpointOptions
from ..backends.vllm_score import VLLMScoreModel
from ..compressors.dedup import NearDuplicateFilter
from ..compressors.llm import LLMExtractor, LLMFilter
from ..compressors.select import BudgetFilter, Reorder
from ..compressors.sentences import SentenceExtractor
from ..compressors.surprisal import SurprisalPruner
from ..errors import ConfigError
from ..generators.answer import AnswerGenerator
from ..generators.condense import Condenser
from ..generators.gate import RetrievalGate
from ..ops import ConvexFusion, Cutoff, Identity, RRFFusion
from ..options import StageOptions
from ..paths import JobPath, OptionalJobPath
from ..registry import register
from ..rerankers.biencoder import BiEncoderReranker
from ..rerankers.cascade import Cascade
from ..rerankers.crossencoder import CrossEncoderReranker
from ..rerankers.documents import DocumentAggregator
from ..rerankers.listwise import ListwiseReranker
from ..rerankers.pairwise import PairwiseReranker
from ..rerankers.pointwise import PointwiseReranker
from ..rerankers.setwise import SetwiseReranker
from ..retrievers.bm25 import BM25Index, BM25Retriever
from ..retrievers.dense import DenseRetriever
from ..retrievers.tokenize import Tokenizer, TokenizerOptions
from ..stage import Transformer
from . import presets
from .context import BuildContext

# -- keys that name objects ---------------------------------------------------------------------


class BM25Keys(TokenizerOptions, StageOptions):
    """BM25 retrieval over the dataset's corpus: tokenizer settings (:class:`TokenizerOptions`)
    and where the index lives."""

    index: OptionalJobPath = Field(None, description="folder to save the index to, or load it from if it exists")


class EncoderKeys(EncoderOptions, StageOptions):
    """A sentence-transformers encoder (shared by every stage of the job that names it): the
    model and the encoder's own options."""

    model: JobPath = Field("all-minilm-l6-v2", description="packaged short name, local folder or HF id")


class BiEncoderKeys(EncoderKeys):
    """Rerank candidates by cosine similarity of query and passage embeddings."""


class RerankEndpointConfig(RerankEndpointOptions):
    """A rerank endpoint: ``/v1/rerank`` (Cohere/Jina shape: vLLM serve, Infinity, Cohere, Jina,
    rerankflow serve) or TEI's ``/rerank``; its settings are the endpoint's own options."""

    kind: Literal["rerank_http"] = "rerank_http"
    base_url: str = Field(..., description="server address, e.g. http://127.0.0.1:8000")
    model: str | None = Field(None, description="model name the server expects (Cohere/Jina shape)")


class CrossEncoderKeys(HFClassifierOptions, StageOptions):
    """Rerank with a cross-encoder: a sentence-transformers model (a local folder offline, or a
    HF id; its options are the model's own), or one served behind a rerank endpoint
    (``backend: {kind: rerank_http, ...}``)."""

    model: OptionalJobPath = Field(None, description="local folder or HF id, e.g. cross-encoder/ms-marco-MiniLM-L6-v2")
    backend: RerankEndpointConfig | None = Field(None, description="a rerank endpoint instead of a local model")
    engine: Literal["auto", "hf", "sentence-transformers", "vllm"] = Field(
        "auto",
        description="what runs a local model: hf (transformers, packed batches, bf16 on GPU), sentence-transformers, "
        "vLLM's pooling runner, or auto (hf on a GPU, sentence-transformers on the CPU)",
    )
    engine_options: dict[str, Any] = Field(
        default_factory=dict, description="vllm engine: options for vllm.LLM (gpu_memory_utilization, dtype...)"
    )
    preset: str | None = Field(
        None, description="a published configuration (rerankflow presets list); default: the preset naming the model"
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the settings this config does not give from its preset (named, or naming the model)."""
        model = data.get("model") if isinstance(data, dict) else None
        return presets.apply_preset(data, cls, str(model) if model else None, "crossencoder")

    @model_validator(mode="after")
    def _one_scorer(self) -> CrossEncoderKeys:
        if (self.model is None) == (self.backend is None):
            raise ValueError("give either model (a local cross-encoder) or backend (a rerank endpoint), not both")
        return self


class LLMKeys(StageOptions):
    """The scoring (or generating) model and the prompt template."""

    backend: BackendConfig
    template: OptionalJobPath = Field(
        None, description="built-in template name or a YAML file (default: the stage's own)"
    )


class RerankerKeys(LLMKeys):
    """An LLM reranker's model and template, and optionally a preset (``rerankflow presets list``)."""

    preset: str | None = Field(
        None,
        description="a published configuration (template, settings); default: the preset that names the backend's "
        "model, if any. Settings written here win",
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Fill the settings and template this config does not give from its preset."""
        backend = data.get("backend") if isinstance(data, dict) else None
        model = backend.get("model") if isinstance(backend, dict) else getattr(backend, "model", None)
        return presets.apply_preset(data, cls, str(model) if model else None)


class TokenizerKeys(StageOptions):
    """The generator's backend, whose tokenizer counts the budget's tokens."""

    tokenizer: BackendConfig = Field(..., description="the generator's backend (its tokenizer counts the tokens)")


class EncoderTokenizerKeys(EncoderKeys, TokenizerKeys):
    """An encoder and the generator's tokenizer."""


class ScoringModelKeys(StageOptions):
    """A model that scores passages, and optionally another model's tokenizer for the budget."""

    backend: BackendConfig = Field(..., description="the language model that scores")
    tokenizer: BackendConfig | None = Field(None, description="the generator's backend, if another model")


class LLMCompressKeys(ScoringModelKeys):
    """A judging model, its template, and optionally the generator's tokenizer."""

    template: OptionalJobPath = Field(None, description="built-in template name or a YAML file")


# -- shared objects -----------------------------------------------------------------------------


def _encoder(cfg: EncoderKeys, ctx: BuildContext) -> TextEncoder:
    options = cfg.pick(EncoderOptions)
    key = ("encoder", cfg.model, options.model_dump_json())
    return ctx.resources.get(key, lambda: SentenceTransformerEncoder(cfg.model, options=options))


def _tokenizer(cfg: BackendConfig | None, ctx: BuildContext) -> Any:
    return ctx.backend(cfg) if cfg is not None else None


# -- retrievers ---------------------------------------------------------------------------------


@register("bm25", kind="retriever", stage=BM25Retriever, keys=BM25Keys)
def _build_bm25(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    tokenizer = cfg.pick(Tokenizer)
    if ctx.index is not None and cfg.index is None:
        if tokenizer != ctx.index.tokenizer:
            raise ConfigError(
                f"the dataset's index was built with {ctx.index.tokenizer}; this stage asks for {tokenizer}. "
                "Drop the tokenizer keys or re-index with those settings"
            )
        return BM25Retriever(ctx.index.bm25, cfg.pick(BM25Retriever.Options), tokenizer=tokenizer)

    def make_index() -> BM25Index:
        if cfg.index is None:
            return BM25Index(ctx.require_corpus("bm25"), tokenizer)
        folder = ctx.resolve(cfg.index)
        if (folder / "meta.json").is_file():
            return BM25Index.load(folder)
        index = BM25Index(ctx.require_corpus("bm25"), tokenizer)
        index.save(folder)
        return index

    # One index per tokenizer (and folder) is shared by every bm25 stage of the job.
    index = ctx.resources.get(("bm25-index", repr(tokenizer), str(cfg.index)), make_index)
    return BM25Retriever(index, cfg.pick(BM25Retriever.Options), tokenizer=tokenizer)


@register("dense", kind="retriever", stage=DenseRetriever, keys=EncoderKeys)
def _build_dense(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    encoder = _encoder(cfg, ctx)
    index = ctx.index
    if index is None:
        return DenseRetriever(ctx.require_corpus("dense"), encoder, cfg.pick(DenseRetriever.Options))
    if index.embeddings is None or model_identity(cfg.model) != index.encoder_identity:
        built = f"with {index.encoder_model!r}" if index.encoder_model else "without dense vectors"
        raise ConfigError(
            f"the dataset's index was built {built}; this stage encodes queries with {cfg.model!r}. "
            "Name the index's model or re-index with this one"
        )
    return DenseRetriever(
        index.chunks, encoder, cfg.pick(DenseRetriever.Options), embeddings=index.embeddings, ann=index.ann
    )


# -- rerankers ----------------------------------------------------------------------------------


@register("biencoder", kind="reranker", stage=BiEncoderReranker, keys=BiEncoderKeys)
def _build_biencoder(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return BiEncoderReranker(_encoder(cfg, ctx))


@register("crossencoder", kind="reranker", stage=CrossEncoderReranker, keys=CrossEncoderKeys)
def _build_crossencoder(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    if cfg.backend is not None:
        endpoint = RerankEndpointModel(cfg.backend.model, options=cfg.backend.pick(RerankEndpointOptions))
        return CrossEncoderReranker(endpoint, cfg.pick(CrossEncoderReranker.Options))
    path = str(ctx.resolve(cfg.model)) if (ctx.base_dir / cfg.model).exists() else cfg.model
    if cfg.engine == "vllm":
        options = {"trust_remote_code": cfg.trust_remote_code, **cfg.engine_options}
        scorer = ctx.resources.get(("vllm-score", path), lambda: VLLMScoreModel(path, **options))
        return CrossEncoderReranker(scorer, cfg.pick(CrossEncoderReranker.Options))
    options = cfg.pick(HFClassifierOptions)
    model = ctx.resources.get(
        ("crossencoder", cfg.model, cfg.engine, options.model_dump_json()),
        lambda: local_pair_scorer(path, cfg.engine, options),
    )
    return CrossEncoderReranker(model, cfg.pick(CrossEncoderReranker.Options))


def _llm_stage(cls: type[Any], name: str | None = None) -> Any:
    """The build function of an LLM reranker (``name``: its stage, checked against a preset) or
    generator: backend, template, options."""

    def build(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
        if name is not None:
            presets.resolve(name, cfg.preset, None)  # the preset (already applied to cfg) is this stage's
        backend = ctx.backend(cfg.backend)
        stage: Transformer = cls(backend, ctx.template(cfg.template), cfg.pick(cls.Options))
        return stage

    return build


for _name, _cls in [
    ("pointwise", PointwiseReranker),
    ("listwise", ListwiseReranker),
    ("pairwise", PairwiseReranker),
    ("setwise", SetwiseReranker),
]:
    register(_name, kind="reranker", stage=_cls, keys=RerankerKeys)(_llm_stage(_cls, _name))


# -- transforms and fusion ----------------------------------------------------------------------


@register("cutoff", kind="transform", stage=Cutoff)
def _build_cutoff(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Cutoff(cfg.k)


@register("documents", kind="transform", stage=DocumentAggregator)
def _build_documents(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return DocumentAggregator(cfg.pick(DocumentAggregator.Options))


@register("identity", kind="transform", stage=Identity)
def _build_identity(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Identity()


@register("rrf", kind="fusion", stage=RRFFusion, nested="inputs")
def _build_rrf(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return RRFFusion(inputs, cfg)


@register("convex", kind="fusion", stage=ConvexFusion, nested="inputs")
def _build_convex(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return ConvexFusion(inputs, cfg)


@register("cascade", kind="reranker", stage=Cascade, nested="steps")
def _build_cascade(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Cascade(inputs, cfg)


# -- compressors --------------------------------------------------------------------------------


@register("budget", kind="compressor", stage=BudgetFilter, keys=TokenizerKeys)
def _build_budget(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return BudgetFilter(tokenizer=_tokenizer(cfg.tokenizer, ctx), options=cfg.pick(BudgetFilter.Options))


@register("dedup", kind="compressor", stage=NearDuplicateFilter, keys=EncoderTokenizerKeys)
def _build_dedup(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return NearDuplicateFilter(
        _encoder(cfg, ctx), tokenizer=_tokenizer(cfg.tokenizer, ctx), options=cfg.pick(NearDuplicateFilter.Options)
    )


@register("sentences", kind="compressor", stage=SentenceExtractor, keys=EncoderTokenizerKeys)
def _build_sentences(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return SentenceExtractor(
        _encoder(cfg, ctx), tokenizer=_tokenizer(cfg.tokenizer, ctx), options=cfg.pick(SentenceExtractor.Options)
    )


@register("surprisal", kind="compressor", stage=SurprisalPruner, keys=ScoringModelKeys)
def _build_surprisal(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return SurprisalPruner(
        ctx.backend(cfg.backend),
        tokenizer=_tokenizer(cfg.tokenizer, ctx),
        options=cfg.pick(SurprisalPruner.Options),
    )


def _llm_compressor(cls: type[LLMFilter] | type[LLMExtractor]) -> Any:
    def build(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
        return cls(
            ctx.backend(cfg.backend),
            ctx.template(cfg.template),
            tokenizer=_tokenizer(cfg.tokenizer, ctx),
            options=cfg.pick(cls.Options),
        )

    return build


register("llm_filter", kind="compressor", stage=LLMFilter, keys=LLMCompressKeys)(_llm_compressor(LLMFilter))
register("llm_extract", kind="compressor", stage=LLMExtractor, keys=LLMCompressKeys)(_llm_compressor(LLMExtractor))


@register("reorder", kind="compressor", stage=Reorder)
def _build_reorder(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Reorder(options=cfg)


# -- generation ---------------------------------------------------------------------------------


class GenerateKeys(StageOptions):
    """The generating model and the prompt template."""

    backend: BackendConfig
    template: JobPath = Field("answer-cited", description="built-in template name or a YAML file")


register("generate", kind="generator", stage=AnswerGenerator, keys=GenerateKeys)(_llm_stage(AnswerGenerator))


# -- conversations ------------------------------------------------------------------------------


class QuerySideKeys(StageOptions):
    """The model that rewrites or judges a message (only for mode llm), and the prompt template."""

    backend: BackendConfig | None = None
    template: OptionalJobPath = Field(
        None, description="built-in template name or a YAML file (default: the stage's own)"
    )


def _query_side(cls: type[Any]) -> Any:
    """The build function of a query-side stage (its backend is optional)."""

    def build(cfg: Any, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
        backend = ctx.backend(cfg.backend) if cfg.backend is not None else None
        template = ctx.template(cfg.template) if cfg.template is not None else None
        stage: Transformer = cls(backend, template, cfg.pick(cls.Options))
        return stage

    return build


register("condense", kind="transform", stage=Condenser, keys=QuerySideKeys)(_query_side(Condenser))
register("gate", kind="transform", stage=RetrievalGate, keys=QuerySideKeys)(_query_side(RetrievalGate))
