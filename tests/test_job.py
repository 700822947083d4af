import textwrap
from pathlib import Path

import pytest

from rerankflow import ConfigError
from rerankflow.pipelines.job import Job, dump_job, load_job, load_job_text
from rerankflow.pipelines.schema import job_schema

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))

BASE = """\
name: t
dataset:
  builtin: demo
pipelines:
  main:
    - bm25: {k: 10}
"""


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_round_trips(path):
    job = load_job(path)
    text = dump_job(job)
    again = load_job_text(text)
    assert again == job
    assert dump_job(again) == text


def test_defaults_are_written_out_and_round_trip():
    job = load_job_text(BASE)
    assert job.pipelines["main"][0].config.k1 == 0.9
    dumped = dump_job(job)
    assert "k1: 0.9" in dumped and "engine: sparse" in dumped
    assert load_job_text(dumped) == job
    assert job.model_copy() == job


def test_nested_fusion_round_trips():
    job = load_job_text(
        textwrap.dedent(
            """\
        dataset: {builtin: demo}
        pipelines:
          h:
            - rrf:
                k: 10
                inputs:
                  - [bm25]
                  - [dense: {k: 5}, cutoff: {k: 3}]
        """
        )
    )
    spec = job.pipelines["h"][0]
    assert spec.name == "rrf" and len(spec.inputs) == 2 and spec.inputs[1][1].config.k == 3
    assert load_job_text(dump_job(job)) == job


@pytest.mark.parametrize(
    "body,path,line,message",
    [
        (
            BASE + "datset: 1\n",
            "datset",
            7,
            "unknown key 'datset'; did you mean 'dataset'?; valid keys: name, dataset, pipelines",
        ),
        (
            BASE.replace("bm25: {k: 10}", "bm26: {k: 10}"),
            "pipelines.main[0]",
            6,
            "unknown stage 'bm26'; did you mean 'bm25'?; valid stages: biencoder, bm25",
        ),
        (
            BASE.replace("{k: 10}", "{kk: 10}"),
            "pipelines.main[0].bm25.kk",
            6,
            "unknown key 'kk'; did you mean 'k'?; valid keys: k, k1, b",
        ),
        (BASE.replace("{k: 10}", "{b: 2}"), "pipelines.main[0].bm25.b", 6, "less than or equal to 1 (got 2)"),
        (BASE.replace("{k: 10}", "{variant: bm42}"), "pipelines.main[0].bm25.variant", 6, "'lucene' or 'okapi'"),
        (BASE.replace("{k: 10}", "{stemmer: klingon}"), "pipelines.main[0].bm25.stemmer", 6, "valid: none, "),
        (BASE.replace("builtin: demo", "builtin: nope"), "dataset.builtin", 3, "Input should be 'demo'"),
        (
            BASE + "measures: [nDCGG@10]\n",
            "measures[0]",
            7,
            "unknown measure 'nDCGG' in 'nDCGG@10'; did you mean 'nDCG'",
        ),
        (BASE + "baseline: other\n", "baseline", 7, "baseline 'other' is not a pipeline; choose one of: main"),
        (BASE + "batch_size: 0\n", "batch_size", 7, "greater than or equal to 1"),
        (
            BASE + "output: {directory: x}\n",
            "output.directory",
            7,
            "unknown key 'directory'; valid keys: dir, run_files",
        ),
        (
            BASE.replace("    - bm25: {k: 10}\n", "    - rrf: {inputs: [[bm25]]}\n"),
            "pipelines.main[0].rrf.inputs",
            6,
            "at least two pipelines",
        ),
        (
            BASE.replace("    - bm25: {k: 10}\n", "    - rrf: {inputs: [[bm25], [dense: {faiss: maybe}]]}\n"),
            "pipelines.main[0].rrf.inputs[1][0].dense.faiss",
            6,
            "valid boolean",
        ),
        (
            BASE.replace("    - bm25: {k: 10}\n", "    - {bm25: {}, dense: {}}\n"),
            "pipelines.main[0]",
            6,
            "exactly one key",
        ),
        (BASE.replace("    - bm25: {k: 10}\n", "    []\n"), "pipelines.main", 5, "non-empty list"),
    ],
)
def test_errors_name_path_line_and_choices(body, path, line, message):
    with pytest.raises(ConfigError) as info:
        load_job_text(body, file="job.yaml")
    err = info.value
    assert message in err.message
    assert str(err).startswith(f"job.yaml:{line}: {path}: ")


def test_yaml_syntax_errors_and_duplicates_have_lines():
    with pytest.raises(ConfigError, match=r"job.yaml:4: invalid YAML: .*flow sequence started on line 3"):
        load_job_text("name: a\ndataset:\n  builtin: [demo\n", file="job.yaml")
    with pytest.raises(ConfigError, match=r"job.yaml:4: dataset: key 'builtin' appears twice \(first on line 3\)"):
        load_job_text("name: a\ndataset:\n  builtin: demo\n  builtin: demo\npipelines: {a: [bm25]}\n", file="job.yaml")
    with pytest.raises(ConfigError, match="YAML mapping"):
        load_job_text("- just\n- a list\n")


def test_unsafe_yaml_tags_are_rejected():
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_job_text("name: !!python/object/apply:os.system ['echo hi']\n")


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="job file not found"):
        load_job(tmp_path / "nope.yaml")


def test_schema_lists_every_stage():
    schema = job_schema()
    stage_names = {next(iter(o["properties"])) for o in schema["$defs"]["Stage"]["oneOf"] if "properties" in o}
    assert {"bm25", "dense", "biencoder", "rrf", "convex", "cutoff", "identity"} <= stage_names
    assert set(Job.model_fields) == set(schema["properties"])
    bm25 = next(o for o in schema["$defs"]["Stage"]["oneOf"] if "bm25" in o.get("properties", {}))
    assert bm25["properties"]["bm25"]["additionalProperties"] is False
