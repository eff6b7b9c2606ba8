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

# Two processes (the machine's two cores); heavy multi-process tests share one xdist group so they never overlap.
test: $(STAMP) lint
	$(BIN)/python -m pytest -n 2 --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/python -m pytest -x -q -m "not slow"

chaos: $(STAMP)
	SYNCHOOK_CHAOS_HEAVY=1 $(BIN)/python -m pytest tests/chaos tests/security -m heavy

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .synchook .pytest_cache .mypy_cache .ruff_cache
