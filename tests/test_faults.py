"""Fault injection: a model server that dies mid-job, Ctrl-C in the middle of a run, and a
backend that fails under `rerankflow serve`. The model server is a small OpenAI-compatible
loopback server with deterministic yes/no log-probabilities (real sockets, real HTTP, real
restarts on the same port); the Ctrl-C test runs SmolLM2-135M through the HF backend.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from rerankflow.cli.main import main
from rerankflow.io.trec import read_run
from rerankflow.pipelines.cache import _verified
from rerankflow.pipelines.job import load_job_text
from rerankflow.pipelines.runner import run_job
from rerankflow.serve.app import create_app
from rerankflow.serve.launch import job_pipelines_to_serve, serve_in_thread

from .support.servers import ModelServer, free_port

pytestmark = pytest.mark.slow  # starts servers, subprocesses and real models


def leftovers(*folders):
    """Temporary files (``.name.XXXX.tmp``) anywhere under ``folders``."""
    return [p for f in folders if Path(f).exists() for p in Path(f).rglob("*.tmp")]


def check_cache(folder):
    """Every entry under ``folder`` parses and matches its checksum; returns how many."""
    files = list(Path(folder).rglob("*.json"))
    for p in files:
        entry = json.loads(p.read_text())
        assert _verified(p.read_bytes(), entry["stage"], p.stem) is not None, p
    return len(files)


HTTP_JOB = """
name: faults
dataset: {{builtin: demo}}
batch_size: 4
cache: {{dir: {cache}}}
pipelines:
  judge:
    - bm25: {{k: 5}}
    - pointwise:
        max_passage_tokens: null
        backend:
          kind: http
          model: judge
          options: {{base_url: "http://127.0.0.1:{port}/v1", api_key_env: null, max_retries: 1,
                     backoff_initial_s: 0.01, backoff_max_s: 0.02, timeout_s: 5}}
"""


def test_server_dies_mid_job_then_the_rerun_resumes_from_the_cache(tmp_path, capsys):
    port = free_port()
    job_file = tmp_path / "job.yaml"
    job_file.write_text(HTTP_JOB.format(cache=tmp_path / "cache", port=port))
    out = tmp_path / "out"
    server = ModelServer(port, die_after=60).start()  # 5 requests a query: 12 queries = 3 batches
    status = main(["-q", "run", str(job_file), "-o", str(out)])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith("rerankflow: error: ") and "Traceback" not in err
    assert f"127.0.0.1:{port}" in err and "attempts" in err  # says which server failed, after retries
    assert not out.exists() or not list(out.glob("*.trec"))  # no run file written as if complete
    assert leftovers(out, tmp_path / "cache") == []
    assert check_cache(tmp_path / "cache") == 12

    server = ModelServer(port).start()
    job = load_job_text(job_file.read_text())
    resumed = run_job(job, tmp_path, out)
    assert server.requests == (26 - 12) * 5  # only the queries not in the cache
    assert resumed.result.systems[0].cache == {"pointwise": {"hits": 12, "computed": 14, "corrupt": 0}}
    fresh = run_job(job, tmp_path, tmp_path / "fresh", use_cache=False)
    assert read_run(out / "judge.trec") == read_run(tmp_path / "fresh" / "judge.trec")
    counts = [
        {
            q: (u["calls"], u["prompt_tokens"], u["output_tokens"])
            for q, u in r.result.systems[0].usage["pointwise"]["per_query"].items()
        }
        for r in (resumed, fresh)
    ]
    assert counts[0] == counts[1]  # usage of cached queries comes back from the cache
    server.stop()


def test_backend_failure_under_serve_is_a_502_and_the_server_recovers(tmp_path):
    port = free_port()
    reranker_only = HTTP_JOB.format(cache=tmp_path / "cache", port=port).replace("    - bm25: {k: 5}\n", "")
    job = load_job_text(reranker_only)
    app = create_app(job_pipelines_to_serve(job, tmp_path))
    server = ModelServer(port).start()
    body = {"model": "judge", "query": "what is BM25", "documents": ["BM25 ranks passages", "cats purr"]}
    with serve_in_thread(app) as url:
        assert httpx.post(url + "/v1/rerank", json=body, timeout=30).status_code == 200
        server.stop()
        failed = httpx.post(url + "/v1/rerank", json=body, timeout=30)
        assert failed.status_code == 502
        error = failed.json()["error"]
        assert error["type"] == "backend_error" and f"127.0.0.1:{port}" in error["message"]
        assert httpx.get(url + "/readyz").status_code == 200  # still up and ready
        server = ModelServer(port).start()
        assert httpx.post(url + "/v1/rerank", json=body, timeout=30).status_code == 200
    server.stop()


SMOLLM_JOB = """
name: interrupt
dataset: {{builtin: demo, limit: 12}}
batch_size: 2
cache: {{dir: {cache}}}
pipelines:
  judge:
    - bm25: {{k: 4}}
    - pointwise:
        backend: {{kind: hf, model: smollm2-135m-instruct}}
        max_passage_tokens: 64
"""


def test_ctrl_c_leaves_no_partial_output_or_cache_entry(tmp_path, smollm2):
    """SIGINT in the middle of a real run: exit 130 with one line, nothing torn; the rerun resumes."""
    cache, out = tmp_path / "cache", tmp_path / "out"
    job_file = tmp_path / "job.yaml"
    job_file.write_text(SMOLLM_JOB.format(cache=cache))
    proc = subprocess.Popen(
        [sys.executable, "-m", "rerankflow.cli.main", "-q", "run", str(job_file), "-o", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # as in a terminal: a shell running CI in the background makes its children ignore SIGINT
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 300
    while len(list(cache.rglob("*.json"))) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert proc.poll() is None, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "rerankflow: interrupted" and "Traceback" not in err
    assert not list(out.glob("*.trec")) and leftovers(out, cache) == []
    done = check_cache(cache)
    assert 4 <= done < 12

    job = load_job_text(job_file.read_text())
    resumed = run_job(job, tmp_path, out)
    assert resumed.result.systems[0].cache["pointwise"]["hits"] == done
    run_job(job, tmp_path, tmp_path / "fresh", use_cache=False)
    assert read_run(out / "judge.trec") == read_run(tmp_path / "fresh" / "judge.trec")
