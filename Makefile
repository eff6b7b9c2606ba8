PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# One stamp per set of extras, so each target installs only what it needs and `make test` after
# `make run` still installs the test extras.
RUN_STAMP := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: run test test-fast lint bench bench-postgres chaos migrate clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(RUN_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	touch $@

$(TEST_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,fuzz,browser]'
	touch $@

# The benchmarks reuse the test fixtures (tests/support) and the fake providers (synchook/fakes).
$(BENCH_STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $@

run: $(RUN_STAMP)
	$(BIN)/synchook dev

migrate: $(RUN_STAMP)
	$(BIN)/synchook migrate

lint: $(TEST_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check synchook sync_trigger subscriptions webhooks
	$(BIN)/mypy

# Two processes (the machine's two cores); heavy multi-process tests share one xdist group so they never overlap.
test: $(TEST_STAMP) lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(TEST_STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow"

chaos: $(TEST_STAMP)
	SYNCHOOK_CHAOS_HEAVY=1 $(BIN)/python -m pytest tests/chaos tests/security -m heavy

bench: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite

# The same on PostgreSQL, in a throwaway database made on SYNCHOOK_BENCH_POSTGRES_URL's server (default: the one on
# 127.0.0.1:5432); (c)'s backlog is 200,000 deliveries there, which keeps it under ten minutes. CalDAV's is SQLite's.
bench-postgres: $(BENCH_STAMP)
	$(BIN)/python -m bench.suite --db postgres

clean:
	rm -rf $(VENV) .synchook .pytest_cache .mypy_cache .ruff_cache
