# demo, test and soak create .venv on first use (bench and interop create
# .venv-peers): a fresh machine needs only python3.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed
PEERS := .venv-peers
PEERS_STAMP := $(PEERS)/.installed
# No telemetry from Haystack in tests, demos or benchmarks.
export HAYSTACK_TELEMETRY_ENABLED := False

# Every integrations/<distribution>/ with a pyproject.toml is a distribution:
# each loop below runs over this list, so a new adapter joins by existing.
INTEGRATIONS := $(patsubst %/pyproject.toml,%,$(sort $(wildcard integrations/*/pyproject.toml)))
PYPROJECTS := pyproject.toml $(addsuffix /pyproject.toml,$(INTEGRATIONS))
# The framework adapters; the Ray glue (Ray is hundreds of MB) has its own target.
ADAPTERS := $(filter-out integrations/nimrank-ray,$(INTEGRATIONS))
# The client and every adapter editable, with the suite's tools and each
# adapter's own test extra; nimrank-ray without Ray, so that it is type-checked.
EDITABLE := -e '.[dev]' $(foreach d,$(ADAPTERS),-e '$(d)[test]')

# Scratch virtualenvs of compat, pythons and dists (never .venv).
SCRATCH := .venvs
DIST := dist
# make pythons runs the suite on the oldest and the newest of these found.
SUPPORTED_PYTHONS := 3.10 3.11 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv

.PHONY: demo test lint bench soak interop ray hostile compat pythons dists clean

$(STAMP): $(PYPROJECTS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(EDITABLE)
	$(BIN)/python -m pip install --quiet --no-deps -e integrations/nimrank-ray
	touch $(STAMP)

# The demo needs the client and its server only: no framework, no dev tools.
$(DEMO_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
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

hostile: $(STAMP)
	$(BIN)/python -m pytest -q -m hostile tests/hostile

interop: $(PEERS_STAMP)
	$(PEERS)/bin/python -m pytest -q -m interop tests/interop

# NVIDIA's and LiteLLM's clients pin their own framework versions: they live in
# a virtualenv of their own so they never disturb .venv (and `make test`).
$(PEERS_STAMP): $(PYPROJECTS) tests/interop/requirements-peers.txt
	test -x $(PEERS)/bin/python || $(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -e '.[dev]' -r tests/interop/requirements-peers.txt
	touch $(PEERS_STAMP)

bench: $(PEERS_STAMP)
	$(PEERS)/bin/python tests/benchmarks/run.py --peers

# Each adapter against the oldest and the newest framework release its range
# allows (the range and the tests are in its pyproject.toml), each in a fresh
# virtualenv holding only nimrank, that adapter and the test tools.
# Older llama-index-core releases download tiktoken's encodings at first use
# (newer ones bundle them): the tests get .venv's bundled copy, not the network.
compat: $(STAMP)
	@set -e; export TIKTOKEN_CACHE_DIR=$$($(BIN)/python -c 'import os, llama_index.core as c; \
	  print(os.path.join(os.path.dirname(c.__file__), "_static", "tiktoken_cache"))' 2>/dev/null || true); \
	for d in $(ADAPTERS); do for end in oldest newest; do \
	  pin=$$($(BIN)/python tests/distributions.py pin $$d $$end); \
	  tests=$$($(BIN)/python tests/distributions.py tests $$d); \
	  env=$(SCRATCH)/compat-$$(basename $$d)-$$end; \
	  echo "== make compat: $$(basename $$d) with $$pin ($$end)"; \
	  rm -rf $$env; $(PYTHON) -m venv $$env; \
	  $$env/bin/python -m pip install --quiet -e '.[test]' -e "$$d[test]" "$$pin"; \
	  $$env/bin/python -m pip list 2>/dev/null | grep -i "^$${pin%%[=<>]*} "; \
	  $$env/bin/python -m pytest -q -p no:cacheprovider $$tests; \
	done; done

# The suite on the oldest and the newest supported Python found (pyenv or
# PATH), each in its own virtualenv; a missing one is skipped with a message.
pythons:
	@set -e; found=; for v in $(SUPPORTED_PYTHONS); do \
	  py=$$(ls -d $(PYENV_ROOT)/versions/$$v.*/bin/python$$v 2>/dev/null | sort -V | tail -n 1); \
	  [ -n "$$py" ] || py=$$(command -v python$$v || true); \
	  if [ -n "$$py" ]; then found="$$found $$py"; else echo "make pythons: Python $$v not found: skipped"; fi; \
	done; \
	set -- $$found; [ $$# -gt 0 ] || { echo "make pythons: no supported Python found"; exit 1; }; \
	oldest=$$1; eval newest=\$${$$#}; \
	for py in $$oldest $$newest; do \
	  v=$$($$py -c 'import sys; print("%d.%d" % sys.version_info[:2])'); \
	  env=$(SCRATCH)/python$$v; \
	  echo "== make pythons: the suite on $$($$py --version) ($$py)"; \
	  $(MAKE) --no-print-directory VENV=$$env PYTHON=$$py $$env/.installed; \
	  $$env/bin/python -m pytest -q -p no:cacheprovider; \
	  [ "$$oldest" != "$$newest" ] || break; \
	done

# Every wheel and sdist (each wheel built from its sdist, so the sdist must be
# complete), their contents checked, then each wheel installed alone in a fresh
# virtualenv (the adapters with the nimrank wheel just built, via --find-links)
# and smoke-checked: its README quickstart against `nimrank serve`.
dists: $(STAMP)
	rm -rf $(DIST) $(SCRATCH)/dist-*
	@set -e; for d in . $(ADAPTERS); do \
	  $(BIN)/python -m build --no-isolation --outdir $(DIST) $$d >/dev/null; \
	done
	$(BIN)/python tests/smoke/distribution_contents.py $(DIST) . $(ADAPTERS)
	@set -e; for whl in $(DIST)/*.whl; do \
	  name=$$(basename $$whl | cut -d- -f1 | tr _ -); \
	  env=$(SCRATCH)/dist-$$name; \
	  echo "== make dists: $$name alone in $$env"; \
	  $(PYTHON) -m venv $$env; \
	  $$env/bin/python -m pip install --quiet --find-links $(DIST) $$whl; \
	  if [ -f tests/smoke/check_$$name.py ]; then $$env/bin/python tests/smoke/check_$$name.py; \
	  else echo "make dists: WARNING: no tests/smoke/check_$$name.py, only imported it"; \
	    $$env/bin/python -c "import $$($(BIN)/python tests/distributions.py import integrations/$$name)"; fi; \
	done

clean:
	rm -rf $(VENV) $(PEERS) $(SCRATCH) $(DIST) .pytest_cache .mypy_cache .ruff_cache .hypothesis
