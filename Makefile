# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck format venv clean bench system-deps

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

# Static types (config: [tool.mypy] in pyproject.toml).
typecheck: $(STAMP)
	$(BIN)/mypy istiolite

format: $(STAMP)
	$(BIN)/ruff format istiolite tests bench
	$(BIN)/ruff check --fix istiolite tests bench

# tests/e2e (network namespaces, iptables) needs iproute2, iptables and setpriv: as root (CI),
# install them when missing; otherwise those tests are skipped with the reason.
system-deps:
	@export PATH="$$PATH:/usr/sbin:/sbin" DEBIAN_FRONTEND=noninteractive; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && ! { command -v ip && command -v iptables-restore && command -v setpriv; } >/dev/null; then \
	  echo "installing iproute2 iptables util-linux for tests/e2e"; \
	  apt-get install -y -q iproute2 iptables util-linux >/dev/null 2>&1 \
	    || { apt-get update -q >/dev/null && apt-get install -y -q iproute2 iptables util-linux >/dev/null; }; \
	fi

test: $(STAMP) lint typecheck system-deps
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench.startup
	$(BIN)/python -m bench.scale

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache .mypy_cache
