# Two commands on a fresh machine:  `make demo`  and  `make test`.
# Each creates .venv and installs what it needs first.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: demo test lint pytest pytest-postgres bench clean

$(VENV)/.demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[django,numpy]'
	touch $@

$(VENV)/.dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[dev]'
	touch $@ $(VENV)/.demo

$(VENV)/.bench: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -e '.[bench]'
	touch $@

## Benchmark servicewire against its peers (bench/README.md); BENCH_ARGS=--quick for a smoke run.
bench: $(VENV)/.bench
	$(PY) -m bench $(BENCH_ARGS)

## Run the bundled example site and call it through the real client.
demo: $(VENV)/.demo
	$(VENV)/bin/servicewire demo

## Lint, type-check, then the whole suite on SQLite and again on PostgreSQL.
test: lint pytest pytest-postgres

lint: $(VENV)/.dev
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests
	$(VENV)/bin/mypy

pytest: $(VENV)/.dev
	$(PY) -m pytest

# Skipped, with the reason shown, when PostgreSQL is not running (except in CI).
pytest-postgres: $(VENV)/.dev
	SERVICEWIRE_TEST_DATABASE=postgres $(PY) -m pytest -p no:cacheprovider

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
