"""The transformers classifier path for cross-encoders gives sentence-transformers' scores
(float32, CPU) on a real BERT architecture (MiniLM's encoder with a seeded untrained head:
random weights, labelled as such), whatever the batching, and the stage picks it on a GPU."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rerankflow.backends.cross_encoder import CrossEncoderModel
from rerankflow.backends.hf_classifier import HFClassifierModel, HFClassifierOptions, activation_of, local_pair_scorer
from rerankflow.errors import BackendError

from .support import random_minilm_classifier

pytestmark = pytest.mark.slow  # loads a real model


@pytest.fixture(scope="module")
def ce_folder(tmp_path_factory):
    return random_minilm_classifier(tmp_path_factory.mktemp("minilm-ce"))


@pytest.fixture(scope="module")
def reference(ce_folder):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(str(ce_folder), max_length=128, device="cpu")


WORDS = st.sampled_from(["bm25", "ranks", "passages", "by", "term", "frequency", "document", "length", "the", "cat"])
TEXT = st.lists(WORDS, min_size=1, max_size=180).map(" ".join)


@settings(max_examples=8, deadline=None)
@given(pairs=st.lists(st.tuples(TEXT, TEXT), min_size=1, max_size=40), budget=st.sampled_from([64, 300, 4096]))
def test_packed_batches_give_sentence_transformers_scores(ce_folder, reference, pairs, budget):
    model = HFClassifierModel(str(ce_folder), device="cpu", max_length=128, max_batch_tokens=budget)
    expected = reference.predict(pairs, batch_size=32, show_progress_bar=False)
    assert model.score(pairs) == pytest.approx(expected.tolist(), abs=1e-5)


def test_the_activation_is_the_one_the_config_names(ce_folder, tmp_path, reference):
    import shutil

    from sentence_transformers import CrossEncoder

    assert activation_of(ce_folder, 1) == "sigmoid"
    raw = tmp_path / "identity"
    shutil.copytree(ce_folder, raw)
    config = json.loads((raw / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (raw / "config.json").write_text(json.dumps(config))
    pairs = [("what is bm25", "bm25 ranks passages"), ("cats", "the cat sat on the mat " * 40)]
    expected = CrossEncoder(str(raw), max_length=128, device="cpu").predict(pairs, show_progress_bar=False)
    got = HFClassifierModel(str(raw), device="cpu", max_length=128).score(pairs)
    assert got == pytest.approx(expected.tolist(), abs=1e-5)
    assert min(got) < 0 or max(got) > 1 or got != pytest.approx(reference.predict(pairs).tolist(), abs=1e-5)
    config["sentence_transformers"] = {"activation_fn": "my.module.Activation"}
    (raw / "config.json").write_text(json.dumps(config))
    with pytest.raises(BackendError, match="not one this path knows"):
        activation_of(raw, 1)


def test_auto_picks_sentence_transformers_on_the_cpu_and_this_path_on_a_gpu(ce_folder):
    cpu = local_pair_scorer(str(ce_folder), "auto", HFClassifierOptions(device="cpu"))
    gpu = local_pair_scorer(str(ce_folder), "auto", HFClassifierOptions(device="cuda"))
    assert isinstance(cpu, CrossEncoderModel) and isinstance(gpu, HFClassifierModel)
    assert isinstance(local_pair_scorer(str(ce_folder), "hf", HFClassifierOptions(device="cpu")), HFClassifierModel)
    assert HFClassifierModel(str(ce_folder), device="cpu").score([]) == []


def test_bfloat16_scores_stay_close_to_float32(ce_folder, reference):
    pairs = [(f"query {i}", "bm25 ranks passages by term frequency " * (i % 7 + 1)) for i in range(24)]
    half = HFClassifierModel(str(ce_folder), device="cpu", max_length=128, dtype="bfloat16").score(pairs)
    assert half == pytest.approx(reference.predict(pairs).tolist(), abs=2e-2)
