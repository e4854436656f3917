# demo, test and soak create .venv on first use (bench and interop create
# .venv-peers): a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
# No telemetry from Haystack in tests, demos or benchmarks.
export HAYSTACK_TELEMETRY_ENABLED := False

.PHONY: demo test lint bench soak interop ray clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,server,llama-index,haystack,langchain]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/quickstart.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

# -m on the command line replaces the marker filter in pyproject's addopts;
# -s prints the soak's figures.
soak: $(STAMP)
	$(BIN)/python -m pytest -q -s -m soak tests/integration/test_soak.py

# Ray Data (nimrank-ray and Ray itself) goes into .venv only for this target.
RAY_STAMP := $(VENV)/.ray-installed
$(RAY_STAMP): $(STAMP) integrations/nimrank-ray/pyproject.toml
	$(BIN)/python -m pip install --quiet -e integrations/nimrank-ray
	touch $(RAY_STAMP)

ray: $(RAY_STAMP)
	$(BIN)/python -m pytest -q -m ray tests/ray_data

interop: $(PEERS_STAMP)
	$(PEERS)/bin/python -m pytest -q -m interop tests/interop

# NVIDIA's and LiteLLM's clients pin their own framework versions: they live in
# a virtualenv of their own so they never disturb .venv (and `make test`).
$(PEERS_STAMP): pyproject.toml tests/interop/requirements-peers.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -e '.[dev]' -r tests/interop/requirements-peers.txt
	touch $(PEERS_STAMP)

bench: $(PEERS_STAMP)
	$(PEERS)/bin/python tests/benchmarks/run.py --peers

clean:
	rm -rf $(VENV) $(PEERS) .pytest_cache .mypy_cache .ruff_cache .hypothesis
