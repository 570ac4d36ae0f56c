# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format venv clean bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m istiolite.demo

lint: $(STAMP)
	$(BIN)/ruff check istiolite tests bench
	$(BIN)/ruff format --check istiolite tests bench

format: $(STAMP)
	$(BIN)/ruff format istiolite tests bench
	$(BIN)/ruff check --fix istiolite tests bench

test: $(STAMP) lint
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
