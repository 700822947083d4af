"""The Ray executor on a local Ray cluster (2 CPUs, 2 actors per model stage, real models):
same output as the local executor, usage reports, a worker killed mid-job."""

import functools
import os
import signal
import threading
import time
from pathlib import Path

import pytest

from rerankflow.io.trec import read_run
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.ray_executor import RayPipeline, RayStage
from rerankflow.pipelines.runner import run_job
from rerankflow.stage import Transformer

from .support import ROOT, assert_same_runs

ray = pytest.importorskip("ray", reason="the Ray executor needs the 'ray' extra")


@pytest.fixture(scope="module")
def cluster():
    """A local cluster with two CPUs; workers can import this test module (kill test)."""
    if ray.is_initialized():
        ray.shutdown()
    env = {"PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    ray.init(num_cpus=2, log_to_driver=False, runtime_env={"env_vars": env}, include_dashboard=False)
    yield ray
    ray.shutdown()


JOB = """
name: scale
dataset: {builtin: demo, limit: LIMIT}
executor: EXECUTOR
ray: {actors: 2, num_cpus: 0.5, task_cpus: 0.5}
batch_size: 4
cache: {enabled: false}
pipelines:
  minilm:
    - bm25: {k: 20}
    - biencoder: {model: all-minilm-l6-v2}
  judge:
    - bm25: {k: 3}
    - pointwise:
        backend: {kind: hf, model: smollm2-135m-instruct}
        max_passage_tokens: 64
"""


def job(executor, limit=12):
    return load_job_text(JOB.replace("EXECUTOR", executor).replace("LIMIT", str(limit)))


def test_ray_executor_gives_the_local_output_query_for_query(cluster, tmp_path, minilm, smollm2):
    local = run_job(job("local"), tmp_path, tmp_path / "local")
    remote = run_job(job("ray"), tmp_path, tmp_path / "ray")
    assert repr(remote.pipelines["minilm"]) == "RayPipeline(bm25 >> biencoder, actors=2)"
    for name in ("minilm", "judge"):
        assert_same_runs(read_run(tmp_path / "ray" / f"{name}.trec"), read_run(tmp_path / "local" / f"{name}.trec"))
    by_name = {s.name: s for s in remote.result.systems}
    local_by_name = {s.name: s for s in local.result.systems}
    assert by_name["minilm"].means == pytest.approx(local_by_name["minilm"].means, abs=1e-6)
    counts = [
        {q: (u["calls"], u["prompt_tokens"]) for q, u in s["judge"].usage["pointwise"]["per_query"].items()}
        for s in (by_name, local_by_name)
    ]
    assert counts[0] == counts[1] and len(counts[0]) == 12  # usage comes back from the actors


# -- a worker killed mid-job ------------------------------------------------------------------


def demo_bm25(k):
    from rerankflow.io.dataset import demo_dataset
    from rerankflow.retrievers.bm25 import BM25Retriever

    return BM25Retriever(demo_dataset()[0], k=k)


class StallOnce(Transformer):
    """Wraps a stage; the first call in the whole cluster writes its pid and stalls (to be killed)."""

    def __init__(self, inner, pidfile):
        self.inner, self.pidfile = inner, Path(pidfile)

    def children(self):
        return [self.inner]

    def transform(self, batch):
        try:
            with self.pidfile.open("x") as fh:
                fh.write(str(os.getpid()))
        except FileExistsError:
            return self.inner(batch)
        time.sleep(300)
        raise AssertionError("this worker should have been killed")


def stalling_biencoder(pidfile):
    from rerankflow.backends.embeddings import SentenceTransformerEncoder
    from rerankflow.rerankers.biencoder import BiEncoderReranker

    return StallOnce(BiEncoderReranker(SentenceTransformerEncoder("all-minilm-l6-v2")), pidfile)


def test_a_killed_worker_is_restarted_and_the_job_completes_with_the_same_output(cluster, tmp_path, demo, minilm):
    pidfile = tmp_path / "stalled.pid"
    stages = [
        RayStage(functools.partial(demo_bm25, 20), "bm25", holds_model=False),
        RayStage(functools.partial(stalling_biencoder, pidfile), "biencoder"),
    ]
    pipeline = RayPipeline(stages, actors=2, num_cpus=0.5, task_cpus=0.5, batch_size=4)
    killed = {}

    def kill_when_stalled():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if pidfile.exists() and pidfile.read_text():
                killed["pid"] = int(pidfile.read_text())
                os.kill(killed["pid"], signal.SIGKILL)
                return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_when_stalled, daemon=True)
    killer.start()
    queries = demo[1][:12]
    out = pipeline.search(queries)
    killer.join(timeout=5)
    assert "pid" in killed, "no worker stalled, so none was killed"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["pid"], 0)  # that worker process is gone
    from rerankflow.backends.embeddings import SentenceTransformerEncoder
    from rerankflow.io.trec import rankings_to_run
    from rerankflow.rerankers.biencoder import BiEncoderReranker

    expected = (demo_bm25(20) >> BiEncoderReranker(SentenceTransformerEncoder("all-minilm-l6-v2"))).search(queries)
    assert_same_runs(rankings_to_run(out), rankings_to_run(expected))


def test_ray_workers_fill_the_stage_cache_that_a_local_rerun_reads(cluster, tmp_path, minilm):
    text = JOB.replace("LIMIT", "4").replace("cache: {enabled: false}", f"cache: {{dir: {tmp_path / 'cache'}}}")
    text = text[: text.index("  judge:")]  # the MiniLM pipeline only
    run_job(load_job_text(text.replace("EXECUTOR", "ray")), tmp_path, tmp_path / "ray")
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 4  # written by the actors
    local = run_job(load_job_text(text.replace("EXECUTOR", "local")), tmp_path, tmp_path / "local")
    assert local.result.systems[0].cache == {"biencoder": {"hits": 4, "computed": 0, "corrupt": 0}}
    assert read_run(tmp_path / "local" / "minilm.trec") == read_run(tmp_path / "ray" / "minilm.trec")


# -- compressor records under Ray (was: Ratio and Saved missing from Ray runs) -----------------

RAG_JOB = """
name: rag-scale
dataset: {questions: q.jsonl.gz, distractors: 2}
executor: EXECUTOR
ray: {actors: 2, num_cpus: 0.5, task_cpus: 0.5}
batch_size: 3
cache: {enabled: false}
pipelines:
  squeeze:
    - budget: {tokenizer: {kind: hf, model: smollm2-135m-instruct}, max_tokens: 24}
    - generate: {backend: {kind: hf, model: smollm2-135m-instruct}, max_tokens: 8}
"""

TIMINGS = {"seconds", "load_seconds", "ms_per_query", "latency_s", "date"}


def without_timings(data):
    """results.json with wall-clock fields and the date left out (they differ between any two runs)."""
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k not in TIMINGS}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data


def test_ray_brings_back_compressor_records_and_every_results_field(cluster, tmp_path, smollm2):
    import gzip
    import json

    with gzip.open(tmp_path / "q.jsonl.gz", "wt") as fh:
        for i in range(6):
            ctx = {"title": f"Topic {i}", "text": f"The code word of topic {i} is answer{i}, said the report."}
            fh.write(
                json.dumps(
                    {"question": f"what is the code word of topic {i}?", "answers": [f"answer{i}"], "ctxs": [ctx]}
                )
                + "\n"
            )
    results = {}
    for executor in ("local", "ray"):
        run = run_job(load_job_text(RAG_JOB.replace("EXECUTOR", executor)), tmp_path, tmp_path / executor)
        (system,) = run.result.systems
        assert {"Ratio", "Saved", "EM", "InContext"} <= set(system.means), executor
        results[executor] = without_timings(json.loads((tmp_path / executor / "results.json").read_text()))
    assert results["ray"] == results["local"]
    assert set(results["ray"]["systems"][0]["usage"]) == {"generate"}
