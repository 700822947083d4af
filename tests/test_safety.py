"""Safe by default: job paths stay in the job's folder, secrets come only from the environment
and never show up in errors, logs or outputs, no unsafe loaders, remote code off by default."""

import logging
import re
from pathlib import Path

import pytest

from rerankflow import registry
from rerankflow.backends.cross_encoder import CrossEncoderModel
from rerankflow.backends.hf import HFBackend
from rerankflow.backends.http import OpenAIHTTPBackend
from rerankflow.backends.vllm_offline import VLLMOfflineBackend
from rerankflow.cli.main import main
from rerankflow.errors import BackendError, ConfigError
from rerankflow.pipelines.job import dump_job, load_job_text
from rerankflow.pipelines.runner import run_job

from .support import EXAMPLES
from .support.servers import ModelServer, free_port

SRC = Path(__file__).resolve().parent.parent / "src" / "rerankflow"

OUTSIDE = [
    ("dataset: {topics: ../q.tsv}\npipelines: {a: [bm25]}\n", "dataset.topics", 1),
    ("dataset: {builtin: demo}\noutput: {dir: ../../elsewhere}\npipelines: {a: [bm25]}\n", "output.dir", 2),
    ("dataset: {builtin: demo}\ncache: {dir: a/../../c}\npipelines: {a: [bm25]}\n", "cache.dir", 2),
    (
        "dataset: {builtin: demo}\npipelines:\n  a:\n    - bm25\n    - pointwise:\n"
        "        template: ../t.yaml\n        backend: {kind: hf, model: m}\n",
        "pipelines.a[1].pointwise.template",
        6,
    ),
    (
        "dataset: {builtin: demo}\npipelines:\n  a:\n    - listwise:\n        backend: {kind: hf, model: ../../m}\n",
        "pipelines.a[0].listwise.backend.model",
        5,
    ),
    (
        "dataset: {builtin: demo}\npipelines:\n  a:\n    - rrf:\n        inputs:\n"
        "          - [bm25: {index: ../idx}]\n          - [dense]\n",
        "pipelines.a[0].rrf.inputs[0][0].bm25.index",
        6,
    ),
]


@pytest.mark.parametrize(("text", "where", "line"), OUTSIDE)
def test_relative_paths_may_not_leave_the_job_folder(text, where, line):
    with pytest.raises(ConfigError) as exc:
        load_job_text(text, file="job.yaml")
    message = str(exc.value)
    assert message.startswith(f"job.yaml:{line}: {where}: ")
    assert "leaves the job's folder" in message and "allow_outside_paths" in message


@pytest.mark.parametrize(("text", "where", "line"), OUTSIDE)
def test_absolute_paths_or_an_explicit_opt_in_are_accepted(text, where, line, tmp_path):
    allowed = load_job_text("allow_outside_paths: true\n" + text)
    assert allowed.allow_outside_paths
    assert load_job_text(dump_job(allowed)) == allowed
    absolute = re.sub(r"(?<=[ \[{])(?:a/)?\.\./(?:\.\./)?", str(tmp_path) + "/", text)
    assert "../" not in absolute
    load_job_text(absolute)


def test_paths_inside_the_folder_are_fine_and_examples_say_when_they_leave_it():
    load_job_text("dataset: {topics: data/../q.tsv}\noutput: {dir: runs/x}\npipelines: {a: [bm25]}\n")
    for path in EXAMPLES.glob("*.yaml"):
        text = path.read_text()
        assert ("../" in text.split("pipelines:")[0]) == ("allow_outside_paths: true" in text), path


def http_job(port, cache):
    return f"""
name: secret
dataset: {{builtin: demo, limit: 2}}
cache: {{dir: {cache}}}
pipelines:
  judge:
    - bm25: {{k: 3}}
    - pointwise:
        max_passage_tokens: null
        backend:
          kind: http
          model: judge
          options: {{base_url: "http://127.0.0.1:{port}/v1", api_key_env: JUDGE_KEY, max_retries: 0}}
"""


SECRET = "sk-test-4f9a1c77e2b0d3"


@pytest.mark.slow
def test_the_api_key_comes_from_the_environment_and_is_never_echoed(tmp_path, monkeypatch, capsys, caplog):
    caplog.set_level(logging.DEBUG)
    port = free_port()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(http_job(port, tmp_path / "cache"))
    server = ModelServer(port, api_key="the-right-key").start()
    monkeypatch.setenv("JUDGE_KEY", SECRET)
    try:
        assert main(["-q", "run", str(job_file), "-o", str(tmp_path / "refused")]) == 2
        err = capsys.readouterr().err
        assert "HTTP 401" in err and "invalid API key '***'" in err  # the server echoed it; we did not
        monkeypatch.setenv("JUDGE_KEY", "the-right-key")
        done = run_job(load_job_text(job_file.read_text()), tmp_path, tmp_path / "out")
        assert done.result.systems[0].queries == 2
    finally:
        server.stop()
    shown = err + capsys.readouterr().out + caplog.text
    written = "".join(p.read_text() for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET not in shown and "the-right-key" not in shown + written
    assert "JUDGE_KEY" in (tmp_path / "out" / "job.yaml").read_text()  # the variable's name, not its value


def test_credentials_in_urls_are_refused():
    with pytest.raises(BackendError, match="api_key_env"):
        OpenAIHTTPBackend("m", base_url="http://user:hunter2@127.0.0.1:1/v1")
    OpenAIHTTPBackend("m", base_url="http://127.0.0.1:1/v1")


def test_remote_code_is_off_unless_asked_for():
    for cls in (HFBackend, VLLMOfflineBackend, CrossEncoderModel):
        assert cls.Options.model_fields["trust_remote_code"].default is False, cls
    assert registry.get("crossencoder").config(model="x").trust_remote_code is False


UNSAFE = re.compile(
    r"\byaml\.(?:load|unsafe_load|full_load)\(|\bimport (?:pickle|marshal|shelve|dill|cloudpickle)\b|"
    r"\b(?:pickle|dill|cloudpickle)\.loads?\(|torch\.load\(|"
    r"allow_pickle=True|\beval\(|\bexec\(|shell=True"
)


def test_no_unsafe_loader_or_code_execution_in_the_source():
    found = [
        f"{p.relative_to(SRC)}:{i}: {line.strip()}"
        for p in SRC.rglob("*.py")
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if UNSAFE.search(line.replace(".eval()", ""))
    ]
    assert found == []


def candidates(n, qid="q1"):
    from rerankflow.types import Candidate, Document, Query, Ranking

    docs = [Document(f"d{i}", f"passage number {i}") for i in range(n)]
    return Ranking(Query(qid, "a question"), tuple(Candidate(d, float(n - i)) for i, d in enumerate(docs)))


def test_llm_stages_refuse_more_candidates_than_their_limit_and_say_how_to_fix_it():
    from rerankflow.errors import DataError
    from rerankflow.generators.answer import AnswerGenerator
    from rerankflow.rerankers.listwise import ListwiseReranker
    from rerankflow.rerankers.pointwise import PointwiseReranker
    from rerankflow.testing.fake import FakeBackend

    fake = FakeBackend(["[1] > [2]"])
    pointwise = PointwiseReranker(fake, max_candidates=3, max_passage_tokens=None)
    assert len(pointwise([candidates(3)])[0]) == 3
    with pytest.raises(DataError, match=r"query 'q9' brings 4 candidates to pointwise.* at most 3 \(max_candidates\)"):
        pointwise([candidates(2), candidates(4, "q9")])
    listwise = ListwiseReranker(fake, window=4, max_candidates=3, max_passage_tokens=None)
    with pytest.raises(DataError, match="'% 3'"):
        listwise([candidates(5)])
    deep = ListwiseReranker(fake, window=4, depth=3, max_candidates=3, max_passage_tokens=None)
    assert len(deep([candidates(10)])[0]) == 10  # only the depth is sent to the model
    generate = AnswerGenerator(FakeBackend(["an answer [1]"]), max_passages=2)
    with pytest.raises(DataError, match=r"max_passages"):
        generate([candidates(3)])
    assert generate([candidates(2)])[0].answer.text == "an answer [1]"


def test_documented_limits_match_the_code():
    """docs/reliability.md's table of limits shows the defaults the configs really have."""
    from rerankflow.backends.http import OpenAIHTTPBackend
    from rerankflow.generators.answer import GenerateOptions
    from rerankflow.pipelines.job import ServeSpec
    from rerankflow.rerankers.base import PlannedOptions
    from rerankflow.rerankers.pointwise import PointwiseOptions
    from rerankflow.yamlio import MAX_NODES

    doc = (Path(__file__).resolve().parent.parent / "docs" / "reliability.md").read_text()
    rows = dict(re.findall(r"^\| `([\w.]+)` \| ([^|]+?) \|", doc, flags=re.MULTILINE))
    http = OpenAIHTTPBackend.Options.model_fields
    actual = {
        "pointwise.max_candidates": PointwiseOptions.model_fields["max_candidates"].default,
        "listwise.max_candidates": PlannedOptions.model_fields["max_candidates"].default,
        "pointwise.max_passage_tokens": PointwiseOptions.model_fields["max_passage_tokens"].default,
        "listwise.max_passage_tokens": PlannedOptions.model_fields["max_passage_tokens"].default,
        "listwise.max_concurrency": PlannedOptions.model_fields["max_concurrency"].default,
        "generate.max_passages": GenerateOptions.model_fields["max_passages"].default,
        "generate.max_tokens": GenerateOptions.model_fields["max_tokens"].default,
        "http.max_concurrency": http["max_concurrency"].default,
        "http.timeout_s": http["timeout_s"].default,
        "http.max_retries": http["max_retries"].default,
        "http.retry_budget_s": http["retry_budget_s"].default,
        **{
            f"serve.{k}": v.default
            for k, v in ServeSpec.model_fields.items()
            if k.startswith(("max_", "timeout", "filter_"))
        },
        "yaml.max_values": MAX_NODES,
    }
    for key, value in actual.items():
        assert key in rows, f"docs/reliability.md does not list {key}"
        expected = f"{value:g}" if isinstance(value, float) else str(value)
        assert rows[key].replace(",", "") == expected, key
