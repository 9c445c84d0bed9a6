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

bench: $(STAMP)
	$(BIN)/python -m bench.signal_throughput

# Re-record the committed histories that tests/test_replay.py replays.
histories: $(STAMP)
	$(BIN)/python -m tests.histories.record
	$(BIN)/python -m tests.histories.record_loop
	$(BIN)/python -m tests.histories.record_rollout

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
