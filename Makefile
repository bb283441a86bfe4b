# The two commands of the README: `make dev` (the local pipeline with simulated traffic) and
# `make test` (every test). Both create the virtualenv from the pinned constraints on first use.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint bench fuzz clean lambda-zip postgres

$(STAMP): pyproject.toml testkit/pyproject.toml constraints.txt Makefile
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required, found " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt -e '.[dev,bench]' -e ./testkit
	touch $(STAMP)

# The BigQuery emulator (bqemulator) in a virtualenv of its own: it pins duckdb 1.5.5 and must
# find its spatial extension offline (see analytics_pipeline/local/bigquery_emulator.py).
BQ_VENV := .venv-bqemulator
BQ_STAMP := $(BQ_VENV)/.installed

$(BQ_STAMP): $(STAMP) constraints-bqemulator.txt
	rm -f $(BQ_STAMP)
	$(BIN)/python -m analytics_pipeline.local.bigquery_emulator install --venv $(BQ_VENV)

# The npm SDKs the collector tests drive (@segment/analytics-node, analytics.js), from the lock.
JS_DIR := analytics_pipeline_tests/js
JS_STAMP := $(JS_DIR)/node_modules/.package-lock.json

$(JS_STAMP): $(JS_DIR)/package.json $(JS_DIR)/package-lock.json
	cd $(JS_DIR) && npm ci --no-audit --no-fund

# Debian's chromium for the analytics.js test (Playwright drives it; no browser download).
CHROMIUM := /usr/bin/chromium

$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

dev: $(STAMP)
	$(BIN)/analytics-pipeline dev --simulate

test: $(STAMP) $(BQ_STAMP) $(JS_STAMP) $(CHROMIUM) postgres lint
	$(BIN)/pytest

# PostgreSQL server binaries (Debian packages) for the Dagster-on-PostgreSQL test, which starts
# a throwaway cluster of its own on a free 127.0.0.1 port and stops it by PID. Debian's package
# would create and start a "main" cluster: a drop-in written before the install turns that off.
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
postgres:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "PostgreSQL server binaries: present"; \
	else \
	  $(SUDO) mkdir -p /etc/postgresql-common/createcluster.d && \
	  echo "create_main_cluster = false" \
	    | $(SUDO) tee /etc/postgresql-common/createcluster.d/analytics-pipeline.conf >/dev/null && \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	    apt-get install -y -qq --no-install-recommends postgresql; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The ingest Lambda package (deploy/lambda/build_zip.py): the handler's modules and its run-time
# wheels for Lambda's Python 3.11; LAMBDA_ARCH=arm64 for Graviton (must match the stack's
# LambdaArchitecture parameter).
LAMBDA_ARCH ?= x86_64
lambda-zip: $(STAMP)
	$(BIN)/python deploy/lambda/build_zip.py --arch $(LAMBDA_ARCH) --output dist/ingest-lambda.zip

# Benchmarks side by side with the ceilings and a peer; writes benchmarks/RESULTS.md and plots.
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run $(BENCH_ARGS)

# Coverage-guided fuzzing of the contract parser (atheris); FUZZ_ARGS=-max_total_time=SECONDS.
FUZZ_ARGS ?= -max_total_time=300
fuzz: $(STAMP)
	$(BIN)/python fuzz/fuzz_parse.py $(FUZZ_ARGS)

clean:
	rm -rf $(VENV) $(BQ_VENV) .analytics-pipeline .dagster_home
