# Strongroom: `make run` starts a node at https://localhost:7272; `make test` runs the suite.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ./var
SERVE_ARGS ?=

.PHONY: run test lint unit venv test-venv sysdeps-run sysdeps-test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.run-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.test-deps: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.run-deps

sysdeps-run:
	@bash appliance/provision/system-deps.sh run

sysdeps-test:
	@bash appliance/provision/system-deps.sh test

venv: sysdeps-run $(VENV)/.run-deps

test-venv: sysdeps-test $(VENV)/.test-deps

run: venv
	$(BIN)/strongroom serve --data-dir $(DATA) $(SERVE_ARGS)

lint: test-venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint
	vagrant validate --ignore-provider
	$(BIN)/pytest -q

unit: test-venv
	$(BIN)/pytest -q tests/unit

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
