# The commands people and CI run. `make run` serves on SQLite with two printed owner keys;
# `make test` installs everything the tests need and runs lint, types, the suite and the
# container image's smoke test (installing Debian packages with apt-get: it needs root).
# `make test-fast` is the in-process tier on SQLite, for the edit-test loop (no servers, CLI,
# nginx or Chromium).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test test-fast lint postgres redis chromium nginx wrk jq container-smoke bench bench-growth

$(BIN)/apikeys: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-deps: $(BIN)/apikeys
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/apikeys
	$(BIN)/apikeys quickstart --host $(HOST) --port $(PORT)

postgres:
	@./.ci/ensure-postgres

redis:
	@./.ci/ensure-redis

chromium:
	@./.ci/ensure-chromium

nginx:
	@./.ci/ensure-nginx

# Builds and checks the image with podman (installed if missing; needs root).
container-smoke:
	./.ci/container-smoke

lint: $(VENV)/.test-deps
	$(BIN)/ruff check src migrations tests bench examples
	$(BIN)/ruff format --check src migrations tests bench examples
	$(BIN)/mypy
	$(BIN)/mypy bench
	$(BIN)/mypy --strict examples/*.py

test: lint postgres redis chromium nginx wrk jq
	$(BIN)/pytest
	./.ci/container-smoke

test-fast: $(VENV)/.test-deps postgres redis
	$(BIN)/pytest -m "not full" --backends sqlite

# The load generator of the benchmark (and of its smoke test).
wrk:
	@command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk; }

# The README's examples take values out of JSON answers with it (tests/test_readme.py).
jq:
	@command -v jq >/dev/null || { apt-get update -qq && apt-get install -y -qq jq; }

# The service against bare FastAPI on SQLite and PostgreSQL: writes bench/RESULTS.md.
bench: $(VENV)/.test-deps postgres wrk
	$(BIN)/python -m bench $(BENCH_ARGS)

# 1,000 vs 1,000,000 keys: writes bench/GROWTH.md.
bench-growth: $(VENV)/.test-deps postgres wrk
	$(BIN)/python -m bench --growth $(BENCH_ARGS)
