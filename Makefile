# Every target bootstraps .venv (idempotent): a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast lint format bench histories clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

# `make demo ARGS=--auto-approve` runs unattended.
demo: $(STAMP)
	$(BIN)/retrain demo $(ARGS)

test: lint
	$(BIN)/python -m pytest -q --durations=10

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The drift bench times Evidently from a venv of its own: the project plus the `bench` extra
# (pandas 2), so the project's own venv keeps its dependencies.
BENCH_VENV := .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	@test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	@touch $@

bench: $(STAMP) $(BENCH_VENV)/.installed
	$(BIN)/python -m bench.signal_throughput
	$(BIN)/python -m bench.drift_suite --evidently-python $(BENCH_VENV)/bin/python

# Re-record the committed histories that tests/test_replay.py replays.
histories: $(STAMP)
	$(BIN)/python -m tests.histories.record
	$(BIN)/python -m tests.histories.record_loop
	$(BIN)/python -m tests.histories.record_rollout
	$(BIN)/python -m tests.histories.record_drift

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
