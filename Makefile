# The two commands of the README: `make dev` (the local pipeline with simulated traffic) and
# `make test` (every test). Both create the virtualenv from the pinned constraints on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint bench fuzz clean

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

dev: $(STAMP)
	$(BIN)/analytics-pipeline dev --simulate

test: $(STAMP) lint
	$(BIN)/pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Benchmarks side by side with the ceilings and a peer; writes benchmarks/RESULTS.md and plots.
bench: $(STAMP)
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]'
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

# Coverage-guided fuzzing of the contract parser (atheris); FUZZ_ARGS=-max_total_time=SECONDS.
FUZZ_ARGS ?= -max_total_time=300
fuzz: $(STAMP)
	$(BIN)/python fuzz/fuzz_parse.py $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) .analytics-pipeline .dagster_home
