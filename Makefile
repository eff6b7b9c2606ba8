PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-fast lint bench chaos migrate clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,fuzz,browser,bench]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/synchook dev

migrate: $(STAMP)
	$(BIN)/synchook migrate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check synchook sync_trigger subscriptions webhooks
	$(BIN)/mypy

test: $(STAMP) lint
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow"

chaos: $(STAMP)
	$(BIN)/python -m pytest tests/chaos -m "heavy or not heavy"

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .synchook .pytest_cache .mypy_cache .ruff_cache
