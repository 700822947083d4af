"""The built-in stages and their YAML configs (importing this module registers them)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from ..backends.embeddings import TextEncoder
from ..backends.factory import BackendConfig
from ..paths import JobPath, OptionalJobPath
from ..registry import StageConfig, register
from ..stage import Cutoff, Identity, Transformer
from .context import BuildContext


class BM25Config(StageConfig):
    """BM25 retrieval over the dataset's corpus (see rerankflow.retrievers.bm25)."""

    k: int = Field(100, ge=1, description="candidates returned per query")
    k1: float = Field(0.9, ge=0)
    b: float = Field(0.4, ge=0, le=1)
    variant: Literal["lucene", "okapi"] = "lucene"
    epsilon: float = Field(0.25, description="okapi only: floor for negative IDF, as a fraction of the mean IDF")
    engine: Literal["sparse", "rank_bm25"] = "sparse"
    lowercase: bool = True
    stopwords: Literal["english", "none"] = "english"
    stemmer: str = Field("porter", description="PyStemmer algorithm (porter, english, ...) or none")
    index: OptionalJobPath = Field(None, description="folder to save the index to, or load it from if it exists")

    @field_validator("stemmer")
    @classmethod
    def _known_stemmer(cls, v: str) -> str:
        import Stemmer

        valid = ["none", *Stemmer.algorithms()]
        if v not in valid:
            raise ValueError(f"unknown stemmer {v!r}; valid: {', '.join(valid)}")
        return v


@register("bm25", kind="retriever", config=BM25Config)
def _build_bm25(cfg: BM25Config, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..retrievers.bm25 import BM25Index, BM25Retriever
    from ..retrievers.tokenize import Tokenizer

    tokenizer = Tokenizer(lowercase=cfg.lowercase, stopwords=cfg.stopwords, stemmer=cfg.stemmer)

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
    key = ("bm25-index", repr(tokenizer), str(cfg.index))
    index = ctx.resources.get(key, make_index)
    return BM25Retriever(
        index,
        k=cfg.k,
        k1=cfg.k1,
        b=cfg.b,
        variant=cfg.variant,
        epsilon=cfg.epsilon,
        engine=cfg.engine,
        tokenizer=tokenizer,
    )


class EncoderConfig(StageConfig):
    """Shared settings of a sentence-transformers encoder."""

    model: JobPath = Field("all-minilm-l6-v2", description="packaged short name, local folder or HF id")
    batch_size: int = Field(64, ge=1)
    max_length: int | None = Field(None, ge=8, description="truncate inputs to this many tokens")
    device: str | None = Field(None, description="cpu, cuda, cuda:1, ... (default: best available)")


def _encoder(cfg: EncoderConfig, ctx: BuildContext) -> TextEncoder:
    from ..backends.embeddings import SentenceTransformerEncoder

    key = ("encoder", cfg.model, str(cfg.device), str(cfg.batch_size), str(cfg.max_length))
    return ctx.resources.get(
        key,
        lambda: SentenceTransformerEncoder(
            cfg.model, device=cfg.device, batch_size=cfg.batch_size, max_length=cfg.max_length
        ),
    )


class DenseConfig(EncoderConfig):
    """Dense retrieval over the dataset's corpus (exact inner product, optional FAISS)."""

    k: int = Field(100, ge=1, description="candidates returned per query")
    faiss: bool = Field(False, description="search with a FAISS flat index (needs faiss-cpu)")
    cache: bool = Field(True, description="cache corpus embeddings on disk")


@register("dense", kind="retriever", config=DenseConfig)
def _build_dense(cfg: DenseConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..retrievers.dense import DenseRetriever

    return DenseRetriever(
        ctx.require_corpus("dense"),
        _encoder(cfg, ctx),
        k=cfg.k,
        use_faiss=cfg.faiss,
        cache=cfg.cache,
    )


class BiEncoderConfig(EncoderConfig):
    """Rerank candidates by cosine similarity of query and passage embeddings."""


@register("biencoder", kind="reranker", config=BiEncoderConfig)
def _build_biencoder(cfg: BiEncoderConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..rerankers.biencoder import BiEncoderReranker

    return BiEncoderReranker(_encoder(cfg, ctx))


class CrossEncoderConfig(StageConfig):
    """Rerank with a sentence-transformers cross-encoder (a local folder offline, or a HF id)."""

    model: JobPath = Field(..., description="local folder or HF id, e.g. cross-encoder/ms-marco-MiniLM-L6-v2")
    batch_size: int = Field(32, ge=1)
    max_length: int | None = Field(512, ge=8, description="truncate query + passage to this many tokens")
    device: str | None = Field(None, description="cpu, cuda, ... (default: best available)")
    trust_remote_code: bool = Field(False, description="run code shipped with the model (off unless you trust it)")


@register("crossencoder", kind="reranker", config=CrossEncoderConfig)
def _build_crossencoder(cfg: CrossEncoderConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.cross_encoder import CrossEncoderModel
    from ..rerankers.crossencoder import CrossEncoderReranker

    model = ctx.resources.get(
        ("crossencoder", cfg.model, str(cfg.max_length), str(cfg.device)),
        lambda: CrossEncoderModel(
            str(ctx.resolve(cfg.model)) if (ctx.base_dir / cfg.model).exists() else cfg.model,
            device=cfg.device,
            batch_size=cfg.batch_size,
            max_length=cfg.max_length,
            trust_remote_code=cfg.trust_remote_code,
        ),
    )
    return CrossEncoderReranker(model)


class CutoffConfig(StageConfig):
    """Keep the top k candidates of each ranking."""

    k: int = Field(..., ge=0)


@register("cutoff", kind="transform", config=CutoffConfig)
def _build_cutoff(cfg: CutoffConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Cutoff(cfg.k)


class IdentityConfig(StageConfig):
    """Pass rankings through unchanged (in fusion: the incoming candidates)."""


@register("identity", kind="transform", config=IdentityConfig)
def _build_identity(cfg: IdentityConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    return Identity()


class RRFConfig(StageConfig):
    """Reciprocal rank fusion of the sub-pipelines under 'inputs'."""

    k: float = Field(60.0, ge=0)
    weights: list[float] | None = Field(None, description="one non-negative weight per input")
    rank_base: int = Field(1, ge=0, description="rank of the best document in the formula (1 as in the paper)")


@register("rrf", kind="fusion", config=RRFConfig, nested="inputs")
def _build_rrf(cfg: RRFConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..stage import RRFFusion

    return RRFFusion(inputs, k=cfg.k, weights=cfg.weights, rank_base=cfg.rank_base)


class ConvexConfig(StageConfig):
    """Convex combination of per-query normalised scores of the sub-pipelines under 'inputs'."""

    weights: list[float] | None = Field(None, description="one non-negative weight per input (normalised to sum 1)")
    normalization: Literal["minmax", "zscore", "none"] = "minmax"


@register("convex", kind="fusion", config=ConvexConfig, nested="inputs")
def _build_convex(cfg: ConvexConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..stage import ConvexFusion

    return ConvexFusion(inputs, weights=cfg.weights, normalization=cfg.normalization)


class PointwiseConfig(StageConfig):
    """Pointwise LLM reranking: yes/no label logprobs, expected grade, or query likelihood."""

    backend: BackendConfig
    mode: Literal["yes_no", "grade", "query_likelihood"] = "yes_no"
    template: OptionalJobPath = Field(
        None, description="built-in template name or a YAML file (default: the mode's own)"
    )
    score: Literal["margin", "p_yes"] = Field("margin", description="yes_no only: log-odds margin or P(yes)")
    max_passage_tokens: int | None = Field(256, ge=1, description="cut passages to this many tokens")
    max_candidates: int | None = Field(
        1000, ge=1, description="longest candidate list accepted per query (error above)"
    )


@register("pointwise", kind="reranker", config=PointwiseConfig)
def _build_pointwise(cfg: PointwiseConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..rerankers.pointwise import PointwiseReranker

    backend = shared_backend(cfg.backend, ctx.resources)
    return PointwiseReranker(
        backend,
        cfg.template,
        mode=cfg.mode,
        score=cfg.score,
        max_passage_tokens=cfg.max_passage_tokens,
        max_candidates=cfg.max_candidates,
        template_dir=ctx.base_dir,
    )


class PlannedConfig(StageConfig):
    """Settings shared by the listwise, pairwise and setwise LLM rerankers."""

    backend: BackendConfig
    template: OptionalJobPath = Field(
        None, description="built-in template name or a YAML file (default: the method's own)"
    )
    depth: int | None = Field(None, ge=1, description="rerank only the top depth candidates (the rest follow in order)")
    max_passage_tokens: int | None = Field(256, ge=1, description="cut passages to this many tokens")
    scheduler: Literal["concurrent", "sequential"] = Field(
        "concurrent", description="concurrent: all queries' calls interleave; sequential: one call at a time"
    )
    max_concurrency: int = Field(64, ge=1, description="calls in flight at once")
    max_candidates: int | None = Field(
        1000, ge=1, description="longest candidate list (within depth) accepted per query (error above)"
    )

    def common(self, ctx: BuildContext) -> dict[str, Any]:
        """Keyword arguments every planned reranker takes."""
        return {
            "depth": self.depth,
            "max_passage_tokens": self.max_passage_tokens,
            "scheduler": self.scheduler,
            "max_concurrency": self.max_concurrency,
            "max_candidates": self.max_candidates,
            "template_dir": ctx.base_dir,
        }


class ListwiseConfig(PlannedConfig):
    """Listwise LLM reranking: sliding window, single pass or JointRank; permutation or FIRST scoring."""

    method: Literal["sliding", "single_pass", "jointrank"] = "sliding"
    scorer: Literal["generate", "first_token"] = Field(
        "generate", description="generate a permutation, or order by first-token label logprobs (FIRST)"
    )
    window: int = Field(20, ge=2)
    stride: int | None = Field(None, ge=1, description="sliding only (default: window // 2)")
    design: Literal["covering", "replicated"] = Field("covering", description="jointrank only: block design")
    replicas: int = Field(2, ge=1, description="jointrank replicated design: partitions ranked")
    aggregate: Literal["winrate", "pagerank"] = Field("winrate", description="jointrank only")
    seed: int = Field(0, description="jointrank replicated design: shuffle seed")
    max_prompt_tokens: int = Field(4096, ge=16, description="single_pass only: longest prompt allowed")
    max_output_tokens: int | None = Field(None, ge=1, description="generate only (default: 5 per passage + 8)")


@register("listwise", kind="reranker", config=ListwiseConfig)
def _build_listwise(cfg: ListwiseConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..rerankers.listwise import ListwiseReranker

    return ListwiseReranker(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template,
        method=cfg.method,
        scorer=cfg.scorer,
        window=cfg.window,
        stride=cfg.stride,
        design=cfg.design,
        replicas=cfg.replicas,
        aggregate=cfg.aggregate,
        seed=cfg.seed,
        max_prompt_tokens=cfg.max_prompt_tokens,
        max_output_tokens=cfg.max_output_tokens,
        **cfg.common(ctx),
    )


class PairwiseConfig(PlannedConfig):
    """Pairwise ranking prompting (PRP): all pairs (needs depth), heapsort or bubble passes."""

    method: Literal["allpairs", "heapsort", "bubble"] = "heapsort"
    top_k: int = Field(10, ge=1, description="heapsort/bubble: how many top candidates to find")
    both_orders: bool = Field(True, description="ask each comparison in both passage orders and average")


@register("pairwise", kind="reranker", config=PairwiseConfig)
def _build_pairwise(cfg: PairwiseConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..rerankers.pairwise import PairwiseReranker

    return PairwiseReranker(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template,
        method=cfg.method,
        top_k=cfg.top_k,
        both_orders=cfg.both_orders,
        **cfg.common(ctx),
    )


class SetwiseConfig(PlannedConfig):
    """Setwise heapsort: each prompt shows a node and num_child children and asks for the best."""

    num_child: int = Field(3, ge=1)
    top_k: int = Field(10, ge=1)
    scorer: Literal["labels", "generate"] = "labels"


@register("setwise", kind="reranker", config=SetwiseConfig)
def _build_setwise(cfg: SetwiseConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..rerankers.setwise import SetwiseReranker

    return SetwiseReranker(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template,
        num_child=cfg.num_child,
        top_k=cfg.top_k,
        scorer=cfg.scorer,
        **cfg.common(ctx),
    )


class BudgetFields(StageConfig):
    """The token budget every compressor takes (counted with the generator's tokenizer)."""

    max_tokens: int | None = Field(None, ge=1, description="keep at most this many context tokens")
    ratio: float | None = Field(None, gt=0, le=1, description="keep at most this fraction of the incoming tokens")

    def budget(self) -> Any:
        """The :class:`~rerankflow.compressors.base.Budget` these fields describe."""
        from ..compressors.base import Budget

        return Budget(self.max_tokens, self.ratio)


class BudgetConfig(BudgetFields):
    """Keep the best candidates whose passages fit a token budget of the generator's tokenizer."""

    backend: BackendConfig = Field(..., description="the generator's backend (its tokenizer counts the tokens)")
    min_score: float | None = Field(None, description="also drop candidates scoring below this")
    overflow: Literal["skip", "stop"] = Field("skip", description="skip a passage that does not fit, or stop there")


@register("budget", kind="compressor", config=BudgetConfig)
def _build_budget(cfg: BudgetConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.select import BudgetFilter

    backend = shared_backend(cfg.backend, ctx.resources)
    return BudgetFilter(
        backend.count_tokens, cfg.max_tokens, ratio=cfg.ratio, min_score=cfg.min_score, overflow=cfg.overflow
    )


class DedupConfig(BudgetFields, EncoderConfig):
    """Drop passages whose embedding cosine to a better-ranked kept passage reaches threshold."""

    backend: BackendConfig = Field(..., description="the generator's backend (its tokenizer counts the tokens)")
    threshold: float = Field(0.95, ge=-1, le=1, description="cosine similarity that makes a near-duplicate")


@register("dedup", kind="compressor", config=DedupConfig)
def _build_dedup(cfg: DedupConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.dedup import NearDuplicateFilter

    backend = shared_backend(cfg.backend, ctx.resources)
    return NearDuplicateFilter(_encoder(cfg, ctx), backend.count_tokens, threshold=cfg.threshold, budget=cfg.budget())


class SentencesConfig(BudgetFields, EncoderConfig):
    """Keep the sentences most similar to the question (embeddings) within the budget, in source order."""

    backend: BackendConfig = Field(..., description="the generator's backend (its tokenizer counts the tokens)")
    min_similarity: float | None = Field(None, ge=-1, le=1, description="also drop sentences below this cosine")


@register("sentences", kind="compressor", config=SentencesConfig)
def _build_sentences(cfg: SentencesConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.sentences import SentenceExtractor

    backend = shared_backend(cfg.backend, ctx.resources)
    return SentenceExtractor(
        _encoder(cfg, ctx), backend.count_tokens, backend.truncate, cfg.budget(), min_similarity=cfg.min_similarity
    )


class SurprisalConfig(BudgetFields):
    """Drop the least informative words (LM self-information; question-aware with mode: question)."""

    backend: BackendConfig = Field(..., description="the language model that scores tokens")
    count_with: BackendConfig | None = Field(None, description="the generator's backend, if another model")
    mode: Literal["self_info", "question"] = "self_info"
    question_weight: float = Field(1.0, ge=0, description="question mode: weight of the question's contrastive term")


@register("surprisal", kind="compressor", config=SurprisalConfig)
def _build_surprisal(cfg: SurprisalConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.surprisal import SurprisalPruner

    counter = shared_backend(cfg.count_with, ctx.resources) if cfg.count_with else None
    return SurprisalPruner(
        shared_backend(cfg.backend, ctx.resources),
        cfg.budget(),
        mode=cfg.mode,
        question_weight=cfg.question_weight,
        count_backend=counter,
    )


class LLMCompressConfig(BudgetFields):
    """Settings shared by the LLM filter and extractor."""

    backend: BackendConfig = Field(..., description="the judging language model")
    count_with: BackendConfig | None = Field(None, description="the generator's backend, if another model")
    template: OptionalJobPath = Field(None, description="built-in template name or a YAML file")

    def counter(self, ctx: BuildContext) -> Any:
        """The token counter: the generator's backend if named, else the judge's."""
        from ..backends.factory import shared_backend

        return shared_backend(self.count_with, ctx.resources).count_tokens if self.count_with else None


class LLMFilterConfig(LLMCompressConfig):
    """Keep passages the LLM says help answer the question (P(yes) >= threshold)."""

    threshold: float = Field(0.5, ge=0, le=1)
    keep_at_least: int = Field(1, ge=0, description="always keep this many best-judged passages")
    max_passage_tokens: int | None = Field(256, ge=1)


@register("llm_filter", kind="compressor", config=LLMFilterConfig)
def _build_llm_filter(cfg: LLMFilterConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.llm import LLMFilter

    return LLMFilter(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template or "context-filter",
        threshold=cfg.threshold,
        keep_at_least=cfg.keep_at_least,
        count_tokens=cfg.counter(ctx),
        budget=cfg.budget(),
        max_passage_tokens=cfg.max_passage_tokens,
        template_dir=ctx.base_dir,
    )


class LLMExtractConfig(LLMCompressConfig):
    """Keep the sentences of each passage that the LLM picks (by number)."""

    max_output_tokens: int = Field(32, ge=1)
    max_passage_tokens: int | None = Field(None, ge=1, description="cut the numbered sentences to this many tokens")


@register("llm_extract", kind="compressor", config=LLMExtractConfig)
def _build_llm_extract(cfg: LLMExtractConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..compressors.llm import LLMExtractor

    return LLMExtractor(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template or "context-extract",
        count_tokens=cfg.counter(ctx),
        budget=cfg.budget(),
        max_passage_tokens=cfg.max_passage_tokens,
        max_output_tokens=cfg.max_output_tokens,
        template_dir=ctx.base_dir,
    )


class ReorderConfig(StageConfig):
    """Order the context for the generator: relevance, best at both ends, or first-stage order."""

    policy: Literal["relevance", "ends", "original"] = "relevance"


@register("reorder", kind="compressor", config=ReorderConfig)
def _build_reorder(cfg: ReorderConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..compressors.select import Reorder

    return Reorder(cfg.policy)


class GenerateConfig(StageConfig):
    """Generate an answer from the ranking's passages with numbered citations [n]."""

    backend: BackendConfig
    template: JobPath = Field("answer-cited", description="built-in template name or a YAML file")
    max_tokens: int = Field(128, ge=1, description="longest answer, in tokens")
    temperature: float = Field(0.0, ge=0)
    seed: int | None = 0
    max_passages: int | None = Field(
        50, ge=1, description="most passages one prompt may show (error above: cut or compress first)"
    )


@register("generate", kind="generator", config=GenerateConfig)
def _build_generate(cfg: GenerateConfig, ctx: BuildContext, inputs: list[Transformer]) -> Transformer:
    from ..backends.factory import shared_backend
    from ..generators.answer import AnswerGenerator

    return AnswerGenerator(
        shared_backend(cfg.backend, ctx.resources),
        cfg.template,
        max_tokens=cfg.max_tokens,
        temperature=cfg.temperature,
        seed=cfg.seed,
        max_passages=cfg.max_passages,
        template_dir=ctx.base_dir,
    )
