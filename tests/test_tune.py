"""`rerankflow tune`: finds a known optimum, resumes after a kill without rerunning finished
trials, and writes a job that reproduces the score it reports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rerankflow.errors import ConfigError
from rerankflow.eval.experiment import Experiment
from rerankflow.eval.report import write_report
from rerankflow.io.dataset import demo_dataset
from rerankflow.pipelines.job import load_job, load_job_text
from rerankflow.pipelines.runner import build_job
from rerankflow.pipelines.tune import pick, split_queries, tune_job
from rerankflow.pipelines.tune_spec import TuneSpec
from rerankflow.types import Ranking

pytest.importorskip("optuna")

# Recall at 20 grows with how many BM25 candidates the cutoff keeps: the optimum is k = 20.
JOB = """
name: tune-cutoff
dataset: {builtin: demo}
measures: [R@20]
pipelines:
  cut:
    - bm25: {k: 30}
    - cutoff: {k: 5}
tune:
  pipeline: cut
  objective: R@20
  space:
    1.cutoff.k: {choices: [1, 3, 8, 20]}
  sampler: grid
  trials: 4
"""


def test_grid_tuning_finds_the_known_optimum_and_its_job_reproduces_the_score(tmp_path):
    (tmp_path / "job.yaml").write_text(JOB)
    job = load_job(tmp_path / "job.yaml")
    result = tune_job(job, tmp_path, tmp_path / "out")
    assert len(result.trials) == 4
    best = next(p for p in result.front if p["number"] == result.chosen)
    assert best["params"] == {"1.cutoff.k": 20}
    by_k = {t["params"]["1.cutoff.k"]: t["tuning"]["objective"] for t in result.trials}
    assert by_k[20] == max(by_k.values()) > by_k[1]
    saved = json.loads((tmp_path / "out" / "tune.json").read_text())
    assert saved["chosen"] == result.chosen and len(saved["queries"]["held_out"]) > 0

    tuned = load_job(tmp_path / "out" / "best.yaml")  # runnable, and reproduces the tuning score
    assert tuned.tune is None
    _, pipelines = build_job(tuned, tmp_path)
    tuning = set(saved["queries"]["tuning"])
    topics = [r for r in demo_dataset_topics() if r.query.qid in tuning]
    qrels = {q: j for q, j in demo_dataset()[2].items() if q in tuning}  # measured over the split alone
    rerun = Experiment(pipelines, topics, qrels, ["R@20"]).run()
    assert rerun.systems[0].means["R@20"] == pytest.approx(best["tuning"]["objective"], abs=1e-12)

    page = write_report(tmp_path / "out").read_text()
    assert "Tuning of tune-cutoff" in page and "the front (best trials)" in page


def demo_dataset_topics() -> list[Ranking]:
    _, queries, _ = demo_dataset()
    return [Ranking(q) for q in queries]


def test_the_query_split_is_seeded_and_complete():
    topics = demo_dataset_topics()
    a, b = split_queries(topics, 0.5, seed=3)
    assert split_queries(topics, 0.5, seed=3) == (a, b)
    assert sorted(r.query.qid for r in a + b) == sorted(r.query.qid for r in topics)
    assert a and b and split_queries(topics, 0.5, seed=4)[0] != a


def test_pick_takes_the_cheapest_point_near_the_best():
    spec = TuneSpec(pipeline="p", space={"0.x.k": {"choices": [1]}}, costs=["llm_calls"], pick_within=0.02)
    front = [
        {"number": 0, "tuning": {"objective": 0.70, "llm_calls": 40}},
        {"number": 1, "tuning": {"objective": 0.69, "llm_calls": 10}},
        {"number": 2, "tuning": {"objective": 0.60, "llm_calls": 2}},
    ]
    assert pick(front, spec) == 1
    assert pick(front, spec.model_copy(update={"pick_within": 0.0})) == 0


def test_tune_settings_are_checked():
    with pytest.raises(ConfigError, match="is not in"):
        load_job_text(JOB.replace("1.cutoff.k:", "1.cutoff.kk:"))
    with pytest.raises(ConfigError, match="not a pipeline"):
        load_job_text(JOB.replace("pipeline: cut", "pipeline: cutt"))
    with pytest.raises(ConfigError, match="choices"):
        load_job_text(JOB.replace("{choices: [1, 3, 8, 20]}", "{low: 1, high: 20}"))
    with pytest.raises(ConfigError, match="low <= high"):
        load_job_text(JOB.replace("{choices: [1, 3, 8, 20]}", "{low: 9, high: 2}").replace("sampler: grid", ""))


@pytest.mark.slow
def test_a_killed_tuning_run_resumes_without_repeating_finished_trials(tmp_path):
    text = JOB.replace("{choices: [1, 3, 8, 20]}", "{low: 1, high: 30}").replace("sampler: grid", "sampler: random")
    (tmp_path / "job.yaml").write_text(text.replace("trials: 4", "trials: 40"))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "rerankflow.cli.main", "tune", str(tmp_path / "job.yaml"), "-o", str(out)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    log = out / "trials.jsonl"
    deadline = time.monotonic() + 120
    while not (log.is_file() and len(log.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the tuning run ended before it could be killed"
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = [json.loads(line) for line in log.read_text().splitlines()]
    assert 3 <= len(first) < 40
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300)
    every = [json.loads(line) for line in log.read_text().splitlines()]
    numbers = [t["number"] for t in every]
    assert len(every) == 40 and len(set(numbers)) == 40  # 40 trials finished, none twice
    assert every[: len(first)] == first
    saved = json.loads((out / "tune.json").read_text())
    assert len(saved["trials"]) == 40
