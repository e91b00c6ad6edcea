# The two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-long lint typecheck unit servers bench clean dashboards docs

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "lingtan needs Python 3.11 or newer; set PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: $(STAMP)
	$(BIN)/lingtan demo

servers:
	@./tests/install-servers.sh

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check telemetry collectors ingest rules lingtan

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) servers lint typecheck
	$(BIN)/python -m pytest -q

# Tests marked `long` (minutes: fault runs, exhaustive sweeps, a real pip install), skipped by `test`.
test-long: $(STAMP) servers
	LINGTAN_TEST_LONG=1 $(BIN)/python -m pytest -q -m long

# Regenerate docs/config-reference.md from the pydantic models (a test fails when stale).
docs: $(STAMP)
	$(BIN)/lingtan config-reference

# Regenerate deploy/grafana/dashboards/*.json from lingtan/grafana (a test fails when stale).
dashboards: $(STAMP)
	$(BIN)/lingtan grafana dashboards

# The whole pipeline in one table (bench/README.md), then the wire codec; each component's own
# benchmark (bench/edge.py, ingest.py, rules.py) still runs alone with more options.
bench: $(STAMP) servers
	bench/run
	$(BIN)/python bench/wire.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
