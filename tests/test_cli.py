import json
import subprocess
import sys
from pathlib import Path

import pytest

from rerankflow.cli.main import main

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def job(tmp_path, dataset="builtin: demo", stage="bm25: {k: 10}"):
    return write(tmp_path, "job.yaml", f"name: t\ndataset:\n  {dataset}\npipelines:\n  p:\n    - {stage}\n")


def run_cli(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("rerankflow: error: ")
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(
    "make,needle",
    [
        (lambda t: write(t, "job.yaml", "name: t\ndataset: {builtin: demo\n"), "job.yaml:3: invalid YAML"),
        (lambda t: job(t, stage="rerank9000: {}"), "job.yaml:6: pipelines.p[0]: unknown stage 'rerank9000'"),
        (lambda t: t / "missing.yaml", "missing.yaml: job file not found"),
        (lambda t: job(t, dataset="topics: missing.tsv"), "missing.tsv: topics file not found"),
        (
            lambda t: (
                write(t, "empty.jsonl", "\n"),
                write(t, "q.tsv", "1\tx\n"),
                job(t, dataset="{corpus: empty.jsonl, topics: q.tsv}"),
            )[-1],
            "empty.jsonl: the corpus is empty",
        ),
        (
            lambda t: (
                write(t, "c.jsonl", '{"docid": "a", "text": "x"}\n'),
                write(t, "q.tsv", "1\tx\n2\t \n"),
                job(t, dataset="{corpus: c.jsonl, topics: q.tsv}"),
            )[-1],
            "q.tsv:2: query '2' is empty",
        ),
    ],
    ids=["malformed-yaml", "unknown-stage", "missing-job", "missing-data", "empty-corpus", "empty-query"],
)
def test_user_errors_are_one_line_exit_2(tmp_path, capsys, make, needle):
    path = make(tmp_path)
    code, _, err = run_cli(["-q", "run", str(path)], capsys)
    assert code == 2
    assert needle in one_line_error(err)


@pytest.mark.slow
def test_debug_shows_traceback(tmp_path):
    path = job(tmp_path, stage="nope")
    proc = subprocess.run(
        [sys.executable, "-m", "rerankflow.cli.main", "--debug", "validate", str(path)], capture_output=True, text=True
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr and "unknown stage 'nope'" in proc.stderr


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    exe = Path(sys.executable).parent / "rerankflow"
    proc = subprocess.run([str(exe), "validate", str(job(tmp_path, stage="nope"))], capture_output=True, text=True)
    assert proc.returncode == 2
    one_line_error(proc.stderr)


def test_validate_schema_stages(tmp_path, capsys):
    code, out, _ = run_cli(["validate", str(job(tmp_path))], capsys)
    assert code == 0 and "ok: job 't' with 1 pipeline: p" in out
    code, out, _ = run_cli(["schema"], capsys)
    assert code == 0 and json.loads(out)["title"] == "Job"
    code, out, _ = run_cli(["stages"], capsys)
    assert code == 0 and "bm25" in out and "rrf" in out


def test_run_writes_runs_and_results_consistent_with_eval(tmp_path, capsys):
    path = write(
        tmp_path,
        "job.yaml",
        "name: t\ndataset: {builtin: demo}\npipelines:\n  a: [bm25]\n  b: [bm25: {k1: 1.2, b: 0.75}]\nmeasures: [nDCG@10, R@10]\nbaseline: a\n",
    )
    code, out, _ = run_cli(["-q", "run", str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 0
    assert "p(t) nDCG@10" in out and "BM25Retriever" in out
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    by = {s["name"]: s for s in results["systems"]}
    qrels = str(ROOT / "src" / "rerankflow" / "demo" / "qrels.txt")
    code, out, _ = run_cli(
        ["eval", str(tmp_path / "out" / "a.trec"), "--qrels", qrels, "-m", "nDCG@10", "R@10"], capsys
    )
    assert code == 0
    values = [float(x) for x in out.splitlines()[1].split()[1:]]
    assert values == pytest.approx([by["a"]["means"]["nDCG@10"], by["a"]["means"]["R@10"]], abs=1e-4)
    assert 0 < values[0] <= 1


def test_models_and_prompts_commands(capsys, tmp_path):
    code, out, _ = run_cli(["models", "list"], capsys)
    assert code == 0 and "smollm2-135m-instruct" in out and "all-minilm-l6-v2" in out
    code, _, err = run_cli(["models", "prepare", "no-such-model"], capsys)
    assert code == 2 and "unknown packaged model 'no-such-model'" in one_line_error(err)
    code, out, _ = run_cli(["prompts", "list"], capsys)
    assert code == 0 and "pointwise-yes-no" in out
    code, out, _ = run_cli(["prompts", "show", "listwise"], capsys)
    assert code == 0 and "placeholders:" in out and "{passages}" in out
    bad = write(tmp_path, "t.yaml", "name: t\nplaceholders: [query]\nuser: '{passage}'\n")
    code, _, err = run_cli(["prompts", "show", str(bad)], capsys)
    assert code == 2 and "t.yaml: placeholders ['passage'] are used but not declared" in one_line_error(err)


def test_stages_say_where_each_stage_lives(capsys):
    """`rerankflow stages` names the module and class of every stage (YAML names and file names
    need not agree; the listing says where to look)."""
    import importlib

    assert main(["stages"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert {r[0] for r in rows} >= {"bm25", "listwise", "rrf", "cutoff", "budget", "generate", "documents"}
    for name, _kind, where, *_ in rows:
        module, cls = where.rsplit(".", 1)
        assert hasattr(importlib.import_module(module), cls), name


def test_version_and_global_flags_after_the_subcommand(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("rerankflow ")
    assert main(["stages", "--quiet"]) == 0 and main(["stages", "-q", "--debug"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize(
    ("argv", "check"),
    [
        (["stages", "--json"], lambda d: {r["name"] for r in d} >= {"bm25", "listwise"}),
        (["presets", "list", "--json"], lambda d: any(p["name"] == "rank_zephyr" for p in d)),
    ],
)
def test_json_output(argv, check, capsys):
    assert main(argv) == 0
    assert check(json.loads(capsys.readouterr().out))


def test_validate_and_eval_print_json(tmp_path, capsys):
    job = tmp_path / "job.yaml"
    job.write_text("name: j\ndataset: {builtin: demo}\npipelines: {p: [bm25]}\n")
    assert main(["validate", str(job), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "job": "j", "pipelines": ["p"]}
    (tmp_path / "qrels").write_text("1 0 a 1\n1 0 b 0\n")
    (tmp_path / "run").write_text("1 Q0 a 1 2.0 x\n1 Q0 b 2 1.0 x\n")
    assert main(["eval", str(tmp_path / "run"), "--qrels", str(tmp_path / "qrels"), "-m", "RR@10", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"run": str(tmp_path / "run"), "RR@10": 1.0}]


def test_shell_completion_and_presets_list_fit_a_terminal(capsys):
    assert main(["completion", "bash"]) == 0
    script = capsys.readouterr().out
    assert "rerankflow" in script and "presets" in script and "--json" in script
    assert main(["presets", "list"]) == 0
    assert max(len(line) for line in capsys.readouterr().out.splitlines()) <= 160


def test_serve_checks_the_port_before_loading_anything(tmp_path, capsys, monkeypatch):
    import socket

    from rerankflow.serve import launch

    def must_not_build(*args, **kwargs):
        raise AssertionError("pipelines were built although the port is taken")

    monkeypatch.setattr(launch, "job_pipelines_to_serve", must_not_build)
    job = tmp_path / "job.yaml"
    job.write_text("dataset: {builtin: demo}\npipelines: {p: [bm25]}\n")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        assert main(["serve", str(job), "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port}" in err and "--port" in err and len(err.strip().splitlines()) == 1


def test_serve_an_index_folder_without_writing_a_job(tmp_path, capsys, monkeypatch):
    """`serve FOLDER` serves chat over an index (BM25 only here: made with --no-dense);
    --print-job prints that job, which validates as a file; a folder without a manifest or
    index-only flags on a job file are one-line errors."""
    import yaml

    from rerankflow.serve import launch

    (tmp_path / "notes.md").write_text("# Telescopes\n\nProposals for the big telescope are due in March.\n")
    index = tmp_path / "idx"
    assert main(["index", str(tmp_path / "notes.md"), "-o", str(index), "--no-dense", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["serve", str(index), "--llm", "some/model", "--backend", "vllm", "--print-job"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    assert job["dataset"] == {"index": str(index.resolve())}
    stages = job["pipelines"]["rag"]
    assert stages[:3] == ["gate", {"condense": {"mode": "user_turns", "turns": 2}}, {"bm25": {"k": 20}}]
    assert stages[-1]["generate"]["backend"] == {
        "kind": "vllm",
        "model": "some/model",
    }
    saved = tmp_path / "chat.yaml"
    saved.write_text(yaml.safe_dump(job))
    assert main(["validate", str(saved)]) == 0 and "1 pipeline: rag" in capsys.readouterr().out

    served = {}
    monkeypatch.setattr(launch, "run_server", lambda job, base, spec, names: served.update(job=job, spec=spec))
    assert main(["serve", str(index), "--port", "0"]) == 0
    assert list(served["job"].pipelines) == ["rag"] and served["job"].name == "idx"

    assert main(["serve", "--index", str(index), "--model", "org/m", "--print-job"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["pipelines"]["rag"][-1]["generate"]["backend"]["model"] == "org/m"
    assert main(["serve"]) == 2 and "one of the two" in capsys.readouterr().err
    assert main(["serve", str(tmp_path), "--print-job"]) == 2
    assert "not an index folder" in capsys.readouterr().err
    assert main(["serve", str(saved), "--llm", "x"]) == 2
    assert "go with an index folder" in capsys.readouterr().err


def test_a_model_name_one_typo_from_a_packaged_model_is_suggested(tmp_path, capsys):
    from rerankflow.backends.models import check_name
    from rerankflow.errors import BackendError

    with pytest.raises(BackendError, match=r"did you mean 'smollm2-135m-instruct'\?"):
        check_name("smollm2-135m-instrcut")
    for fine in ("gpt2", "org/smollm2-135m-instrcut", str(tmp_path), "smollm2-135m-instruct"):
        check_name(fine)
    job = tmp_path / "job.yaml"
    job.write_text(
        "dataset: {builtin: demo}\npipelines:\n  p:\n    - bm25\n"
        "    - pointwise: {backend: {kind: hf, model: smollm2-135m-instrct}}\n"
        "  q: [bm25, {pointwise: {backend: {kind: http, model: smollm2-135m-instrct}}}]\n"
    )
    assert main(["validate", str(job)]) == 2
    err = capsys.readouterr().err
    assert "job.yaml:5: pipelines.p[1].pointwise.backend.model" in err and "smollm2-135m-instruct'?" in err
    job.write_text(
        job.read_text().split("  p:")[0]
        + "  q: [bm25, {pointwise: {backend: {kind: http, model: smollm2-135m-instrct}}}]\n"
    )
    assert main(["validate", str(job)]) == 0  # a served model is the server's name for it: not checked
