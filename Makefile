# figway's two everyday commands: `make run` and `make test`. Both build the
# virtual environment they need, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

LOCK   := requirements/dev.lock

.PHONY: run test check lint types audit lock bench bench-rq bench-prefect bench-scale bench-etl bench-etl-10m bench-routing bench-metrics bench-decisions bench-faults services tools clean

# Exactly the locked versions, each checked against its hash (requirements/dev.lock:
# figway's dependencies, the embedded extra and the tools); then figway itself.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

## lock: resolve pyproject.toml again into the hashed lock files (after changing a dependency)
lock: $(STAMP)
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" -q -o requirements/production.lock
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
		--extra dev --extra embedded --extra bigquery \
		--custom-compile-command "make lock" -q -o requirements/dev.lock

## run: figway on its embedded default (SQLite, in-process Redis stand-in and RQ workers)
run: $(STAMP)
	$(BIN)/figway workflows load examples/workflows
	$(BIN)/figway serve

## test: the whole suite, unit tests and integration tests on the real PostgreSQL and Redis
test: $(STAMP) services tools
	$(BIN)/pytest

## check: lint, types (ruff, mypy strict on gateway/ and backends/) and known vulnerabilities
## in the locked dependencies (pip-audit; says so when its database cannot be reached)
check: lint types audit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

types: $(STAMP)
	$(BIN)/mypy

audit: $(STAMP)
	$(BIN)/python scripts/audit

## bench: the benchmarks behind docs/performance.md (real PostgreSQL, Redis and Prefect server;
## bench-routing needs none of them)
bench: bench-rq bench-prefect bench-etl bench-routing bench-metrics bench-decisions

bench-rq: $(STAMP) services
	$(BIN)/python -m bench.rq_path

bench-prefect: $(STAMP) services
	$(BIN)/python -m bench.prefect_path

## bench-scale: submission p50 and node in-job time on an empty database, then with 1,000,000
## finished runs seeded into it, and EXPLAIN of the hot statements. Fewer: ARGS="--scale-runs 100000"
bench-scale: $(STAMP) services
	$(BIN)/python -m bench.rq_path --parts scale --scale-runs 1000000 $(ARGS)

## bench-etl: 100,000 and 1,000,000 rows PostgreSQL -> DuckDB -> PostgreSQL on both backends
## (needs psql as well)
bench-etl: $(STAMP) services
	$(BIN)/python -m bench.etl --rows 100000,1000000

## bench-etl-10m: the same at 10,000,000 rows, one round, no warm-up (memory flat in rows?)
bench-etl-10m: $(STAMP) services
	$(BIN)/python -m bench.etl --rows 10000000 --repeats 1 --warmup 0

bench-routing: $(STAMP)
	$(BIN)/python -m bench.routing

bench-metrics: $(STAMP)
	$(BIN)/python -m bench.metrics

## bench-decisions: the judge on simulated canaries (A/A false rollbacks, power, heavy tails)
## against the old point-estimate rule; in-process, no service (docs/decisions.md)
bench-decisions: $(STAMP)
	$(BIN)/python -m bench.decisions

## bench-faults: 500 runs on RQ and Prefect through a random sequence of Redis restarts and
## wipes, PostgreSQL cuts, RQ worker SIGKILLs, Prefect server outages, Prefect worker and
## flow-run process SIGKILLs (its own redis-server and prefect server; docs/reliability.md).
## Quicker: ARGS="--runs 60 --faults 7"
bench-faults: $(STAMP) services
	$(BIN)/python -m bench.faults $(ARGS)

## services: start PostgreSQL and Redis on loopback when they are not answering
services:
	@bash scripts/ensure-services

## tools: install Prometheus and promtool (for the dashboard and alert tests) when missing
tools:
	@bash scripts/ensure-tools

clean:
	rm -rf $(VENV) .figway .pytest_cache .mypy_cache .ruff_cache
