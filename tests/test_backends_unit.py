"""Backend plumbing: batching, sync wrappers, validation, factory (real tokenizer where tokens matter)."""

import asyncio
import math

import pytest

from rerankflow.backends.base import run_sync
from rerankflow.backends.factory import BackendConfig, create_backend, shared_backend
from rerankflow.backends.hf import plan_batches
from rerankflow.backends.types import CallStats, LabelScores, Prompt
from rerankflow.coalesce import Coalescer, shares
from rerankflow.errors import BackendError, ConfigError
from rerankflow.resources import ResourcePool
from rerankflow.testing.fake import FakeBackend


def test_coalescer_merges_concurrent_submissions_and_keeps_order():
    calls = []

    def run(items):
        calls.append(list(items))
        return [x * 10 for x in items]

    co = Coalescer(run)

    async def main():
        return await asyncio.gather(co.submit([1, 2]), co.submit([3]), co.submit([4, 5, 6]))

    assert asyncio.run(main()) == [[10, 20], [30], [40, 50, 60]]
    assert calls == [[1, 2, 3, 4, 5, 6]]  # one engine call for all three requests


def test_coalescer_forms_the_next_batch_while_one_runs():
    import threading
    import time

    calls = []
    started = threading.Event()

    def run(items):
        calls.append(list(items))
        started.set()
        time.sleep(0.1)
        return items

    co = Coalescer(run)

    async def main():
        first = asyncio.create_task(co.submit(["a"]))
        await asyncio.to_thread(started.wait)
        later = [asyncio.create_task(co.submit([x])) for x in "bcd"]
        return await first, await asyncio.gather(*later)

    assert asyncio.run(main()) == (["a"], [["b"], ["c"], ["d"]])
    assert calls == [["a"], ["b", "c", "d"]]


def test_a_batch_time_is_shared_by_weight_and_sums_to_its_run_time():
    """Each item's latency is its share of the batch's run time by weight (tokens), so shares
    differ with the work and add up to the batch's wall time instead of counting it per item."""
    import time

    def run(items):
        time.sleep(0.2)
        return items

    co = Coalescer(run, weight=lambda item, result: len(item))

    async def main():
        return await asyncio.gather(co.submit_timed(["aaa", "a"]), co.submit_timed(["aaaaaa"]))

    (out1, (t_aaa, t_a)), (out2, (t_six,)) = asyncio.run(main())
    assert out1 == ["aaa", "a"] and out2 == ["aaaaaa"]
    assert t_aaa == pytest.approx(3 * t_a) and t_six == pytest.approx(6 * t_a)
    assert 0.2 <= t_aaa + t_a + t_six < 0.5
    assert shares(1.0, [0, 0]) == [0.5, 0.5] and shares(2.0, [1, 3]) == [0.5, 1.5] and shares(1.0, []) == []


def test_coalescer_failure_reaches_every_waiter():
    def run(items):
        raise ValueError("engine down")

    co = Coalescer(run)

    async def main():
        return await asyncio.gather(co.submit([1]), co.submit([2]), return_exceptions=True)

    results = asyncio.run(main())
    assert all(isinstance(r, ValueError) for r in results)


def test_run_sync_works_inside_a_running_loop():
    async def inner():
        return run_sync(asyncio.sleep(0, result=42))

    assert asyncio.run(inner()) == 42
    with pytest.raises(ZeroDivisionError):
        run_sync(_raise())


async def _raise():
    return 1 / 0


def test_label_scores_normalized_is_a_log_softmax():
    s = LabelScores({"yes": math.log(0.2), "no": math.log(0.05)}, CallStats("x", "m", 1, 1, 0.0))
    n = s.normalized()
    assert math.exp(n["yes"]) == pytest.approx(0.8) and math.exp(n["no"]) == pytest.approx(0.2)


def test_fake_backend_scripts_and_ledger():
    fake = FakeBackend(["a", "b"], labels=lambda p, labels: {lab: -i for i, lab in enumerate(labels)})
    out = fake.generate([Prompt.raw("one two"), Prompt.raw("x"), Prompt.raw("y")])
    assert [c.text for c in out] == ["a", "b", "a"]
    assert fake.label_logprobs([Prompt.raw("q")], ["A", "B"])[0].logprobs == {"A": 0, "B": -1}
    assert fake.ledger.calls == 4 and fake.ledger.prompt_tokens == 2 + 1 + 1 + 1
    with pytest.raises(BackendError, match="distinct"):
        fake.label_logprobs([Prompt.raw("q")], ["A", "A"])
    with pytest.raises(BackendError, match="one each"):
        fake.continuation_logprobs([Prompt.raw("q")], [])


def test_prompt_needs_exactly_one_form():
    with pytest.raises(BackendError):
        Prompt()
    assert Prompt.chat("hi", system="sys").messages[0].role == "system"


def test_plan_batches_sorts_by_length_and_respects_budget():
    lengths = [5, 100, 7, 90, 6, 95]
    batches = plan_batches(lengths, max_batch_tokens=200, max_batch_size=8)
    assert sorted(i for b in batches for i in b) == list(range(6))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 200 or len(b) == 1
    assert batches[0] == [1, 5]  # the longest first, grouped with similar lengths


def test_factory_validates_options_and_shares_engines():
    with pytest.raises(ConfigError, match="options.bogus: hf backend: unknown key 'bogus'; valid keys: device, dtype"):
        create_backend(BackendConfig(kind="hf", model="x", options={"bogus": 1}))
    pool = ResourcePool()
    a = shared_backend(BackendConfig(kind="hf", model="x", options={"device": "cpu"}), pool)
    b = shared_backend(BackendConfig(kind="hf", model="x", options={"device": "cpu"}), pool)
    c = shared_backend(BackendConfig(kind="hf", model="y"), pool)
    assert a is b and a is not c


@pytest.mark.slow
def test_real_tokenizer_labels_and_truncation(hf_backend):
    tok = hf_backend.tokenizer
    from rerankflow.backends import tokens

    assert len(tokens.label_ids(tok, ["yes", "no", "A", "B"])) == 4
    with pytest.raises(BackendError, match="single tokens"):
        tokens.label_ids(tok, ["definitely-not-one-token"])
    text = "Reciprocal rank fusion adds one over k plus the rank of each document."
    cut = hf_backend.truncate(text, 5)
    assert text.startswith(cut) and hf_backend.count_tokens(cut) <= 5 < hf_backend.count_tokens(text)
    assert hf_backend.truncate(text, 1000) == text and hf_backend.truncate(text, 0) == ""
    rendered = tokens.render(tok, Prompt.chat("hello"))
    assert "hello" in rendered and rendered != "hello"  # the model's chat template was applied
    texts = [text, "short", "", "Another sentence that is long enough to be cut somewhere in the middle."]
    assert hf_backend.truncate_many(texts, 5) == [hf_backend.truncate(t, 5) for t in texts]


@pytest.mark.slow
def test_hf_mixed_batch_of_labels_and_continuations_matches_separate_calls(hf_backend):
    """Label and continuation requests that arrive together share forward passes; each result
    must equal what the request gets on its own (the gather picks the right positions)."""
    prompts = [Prompt.chat(f"Is {w} a fruit? Answer yes or no.") for w in ("an apple", "a brick", "a pear tree")]
    raw = [Prompt.raw(f"A short note about {w}:") for w in ("rivers", "the moon")]
    alone_labels = hf_backend.label_logprobs(prompts, ["yes", "no"])
    alone_conts = hf_backend.continuation_logprobs(raw, [" water flows downhill", ""])

    async def together():
        return await asyncio.gather(
            hf_backend.alabel_logprobs(prompts, ["yes", "no"]),
            hf_backend.acontinuation_logprobs(raw, [" water flows downhill", ""]),
        )

    labels, conts = run_sync(together())
    for a, b in zip(alone_labels, labels, strict=True):
        assert a.logprobs.keys() == b.logprobs.keys()
        assert all(abs(a.logprobs[k] - b.logprobs[k]) < 0.1 for k in a.logprobs)
    assert len(conts[0].token_logprobs) == len(alone_conts[0].token_logprobs) > 2 and conts[1].token_logprobs == ()
    assert max(abs(x - y) for x, y in zip(alone_conts[0].token_logprobs, conts[0].token_logprobs, strict=True)) < 0.1


@pytest.mark.slow
def test_hf_concurrent_generate_calls_share_one_generate_per_settings(hf_backend, monkeypatch):
    """The window scheduler's concurrent calls must reach transformers as one batch (the GPU
    benchmark measured no gain from the scheduler before they did)."""
    from rerankflow.backends.types import GenerationParams

    batch_sizes = []
    real = hf_backend.hf_model.generate

    def counting(**kwargs):
        batch_sizes.append(int(kwargs["input_ids"].shape[0]))
        return real(**kwargs)

    monkeypatch.setattr(hf_backend.hf_model, "generate", counting)
    short, longer = GenerationParams(max_tokens=3), GenerationParams(max_tokens=5)
    words = ("one", "two", "three")

    async def calls(params_each):
        return await asyncio.gather(
            *(hf_backend.agenerate([Prompt.chat(f"Say {w}.")], p) for w, p in zip(words, params_each, strict=True))
        )

    same = run_sync(calls([short, short, short]))
    assert batch_sizes == [3] and all(len(c) == 1 and c[0].stats.output_tokens <= 3 for c in same)
    batch_sizes.clear()
    mixed = run_sync(calls([short, longer, short]))
    assert sorted(batch_sizes) == [1, 2]  # different settings never share a generate call
    assert mixed[1][0].stats.output_tokens <= 5 and all(c[0].stats.output_tokens <= 3 for c in (mixed[0], mixed[2]))


def test_prefix_groups_find_runs_sharing_a_prefix():
    from rerankflow.backends.hf import prefix_groups

    a = [1] * 40
    seqs = [[*a, 2, 3], [*a, 4], [*a, 5, 6, 7], [9] * 50, [8] * 50 + [1], [8] * 50 + [2], a]
    assert prefix_groups(seqs, 32) == [([0, 1, 2], 40), ([3], 0), ([4, 5], 50), ([6], 0)]
    assert prefix_groups([[*a, 1], [*a, 2]], 41) == [([0], 0), ([1], 0)]  # shorter than the minimum
    assert prefix_groups([a, a], 32) == [([0, 1], 39)]  # one token stays to be computed
