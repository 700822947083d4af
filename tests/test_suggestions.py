"""Every name a user can mistype gets a "did you mean" from one helper (rerankflow.suggest):
stage names, YAML keys, Python keywords, measures (case and cutoff), presets; YAML errors name
FILE:LINE."""

import pytest

from rerankflow.errors import ConfigError
from rerankflow.eval.measures import parse_measures
from rerankflow.pipelines.job import load_job
from rerankflow.rerankers.listwise import ListwiseReranker
from rerankflow.suggest import close_names, did_you_mean
from rerankflow.testing.fake import FakeBackend


def job(tmp_path, body):
    path = tmp_path / "job.yaml"
    path.write_text("dataset: {builtin: demo}\n" + body)
    return path


def test_close_names_prefer_a_case_difference_then_similar_names():
    assert close_names("ndcg", ["nDCG", "NDCG", "AP"]) == ["nDCG", "NDCG"]
    assert close_names("bm52", ["bm25", "dense", "rrf"]) == ["bm25"]
    assert close_names("zzz", ["bm25", "dense"]) == [] and did_you_mean("zzz", ["bm25"]) == ""
    assert did_you_mean("windw", ["window", "stride"]) == "; did you mean 'window'?"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("pipelines:\n  a: [bm52]\n", r"job\.yaml:3: pipelines\.a\[0\]: unknown stage 'bm52'; did you mean 'bm25'\?"),
        (
            "pipelines:\n  a: [bm25, listwise: {backend: {kind: vllm, model: m}, windw: 20}]\n",
            r"job\.yaml:3: .*unknown key 'windw'; did you mean 'window'\?; valid keys: .*window",
        ),
        (
            "pipelines:\n  a:\n    - bm25\n    - listwise:\n        preset: rank_zephir\n        backend: {kind: vllm, model: m}\n",
            r"job\.yaml:5: .*no preset 'rank_zephir'; did you mean 'rank_zephyr'\?",
        ),
        (
            "pipelines:\n  a: [bm25]\nmeasures: [ndcg@10]\n",
            r"job\.yaml:4: .*unknown measure 'ndcg'.*did you mean 'NDCG' or 'nDCG'",
        ),
        (
            "pipelines:\n  a: [bm25]\nmeasures: [nDCG@ten]\n",
            r"job\.yaml:4: .*cutoff of 'nDCG@ten' must be a whole number",
        ),
    ],
)
def test_yaml_mistakes_are_suggested_with_file_and_line(tmp_path, body, message):
    with pytest.raises(ConfigError, match=message):
        load_job(job(tmp_path, body))


def test_a_python_keyword_typo_names_the_valid_settings():
    with pytest.raises(
        ConfigError, match=r"listwise: unknown setting 'windw'; did you mean 'window'\?; valid settings: .*stride"
    ):
        ListwiseReranker(FakeBackend(), windw=20)


def test_measure_errors_leak_no_parser_internals():
    with pytest.raises(ConfigError) as err:
        parse_measures(["nDCG@ten"])
    assert "values must be str" not in str(err.value) and "nDCG@10" in str(err.value)


def test_validate_checks_that_the_files_a_run_reads_exist(tmp_path, capsys):
    from rerankflow.cli.main import main

    path = job(tmp_path, "pipelines: {p: [bm25]}\n").with_name("missing.yaml")
    path.write_text("dataset: {corpus: nope.jsonl, topics: t.tsv}\npipelines: {p: [bm25]}\n")
    assert main(["validate", str(path)]) == 2
    assert "missing.yaml:1: dataset.corpus:" in capsys.readouterr().err
    typo = tmp_path / "typo.yaml"
    typo.write_text(
        "dataset: {builtin: demo}\npipelines:\n  p:\n    - bm25\n"
        "    - pointwise: {backend: {kind: hf, model: m}, template: pointwise-yes-n}\n"
    )
    assert main(["validate", str(typo)]) == 2
    err = capsys.readouterr().err
    assert "typo.yaml:5:" in err and "did you mean 'pointwise-yes-no'" in err
    ok = job(tmp_path, "pipelines: {p: [bm25]}\n")
    assert main(["validate", str(ok)]) == 0
