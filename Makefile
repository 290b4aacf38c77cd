# Flowline's commands. `make run` serves the API; `make test` runs the whole suite. Both bootstrap everything:
# the virtualenv, the pinned requirements, and (when DATABASE_URL is unset) a private PostgreSQL.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt | cksum | cut -d' ' -f1)
# `make test`'s pytest-xdist processes: the suite mostly waits (on gunicorns, workers, Chromium), so more processes
# than this 2-core machine's cores pay; measured in the README's "Tests" section.
PYTEST_WORKERS ?= 6
# `make run` keeps its private cluster's data here between runs.
LOCAL_PG := PG_DATA_DIR=$(CURDIR)/.data/pg scripts/with_pg.sh

.PHONY: run test lint format docs schema migrate rollback migrate-status venv bench bench-queue bench-soak bench-pdf bench-waits bench-webhooks bench-schedules bench-pgbouncer bench-connections bench-scale clean

venv: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Flowline needs Python 3.11 or newer; found " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) || { echo "Could not create a virtualenv: on Debian/Ubuntu run 'sudo apt-get install python3-venv'." >&2; exit 1; }
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@rm -f $(VENV)/.installed-*
	@touch $@

## Serve on 127.0.0.1:8000 (BIND=host:port to change): migrations first, then gunicorn and one worker. Ctrl-C stops them.
run: venv
	$(LOCAL_PG) scripts/serve.sh

## The whole test suite, against a throwaway PostgreSQL (or TEST_DATABASE_URL, whose server must allow CREATE DATABASE),
## after ruff's lint and format checks and mypy's type check of flowline/, app.py and gunicorn.conf.py (`make lint`;
## `make format` rewrites the files ruff would change). The tests run in PYTEST_WORKERS pytest-xdist processes
## (PYTEST_WORKERS=0: all in this one, in file order); tests marked `serial` run while no other test does
## (tests/support/serial.py).
## PYTHONDONTWRITEBYTECODE is emptied for the suite: with it set, every one of its several hundred Python processes
## (xdist workers, gunicorns, workers, commands) compiles what it imports again, and pytest rewrites every test
## module's asserts again (collection: 8 s a process instead of 3).
test: lint
	PYTHONDONTWRITEBYTECODE= DATABASE_URL="$(TEST_DATABASE_URL)" scripts/with_pg.sh $(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: venv
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

## Write .env.example and the README's configuration table from the settings table (flowline/core/config.py).
docs: venv
	$(BIN)/python -m flowline.core.config_docs

## Apply pending migrations to DATABASE_URL (or to `make run`'s private database).
migrate: venv
	$(LOCAL_PG) $(BIN)/python -m flowline.data.migrations apply

## Roll back the newest migration (ID=<migration id> to roll back to and including it; ALL=1 for all). Data in what it created is lost.
rollback: venv
	$(LOCAL_PG) $(BIN)/python -m flowline.data.migrations rollback $(if $(ID),--id $(ID)) $(if $(ALL),--all)

## List migrations and whether each is applied.
migrate-status: venv
	$(LOCAL_PG) $(BIN)/python -m flowline.data.migrations status

## Write schema.sql, the schema after every migration (what a DBA reads), from a throwaway PostgreSQL; commit it
## with the migration that changed it (tests/tools/test_schema_file.py fails until then).
schema: venv
	DATABASE_URL= PG_DATA_DIR= scripts/with_pg.sh $(BIN)/python -m flowline.data.schema

## The HTTP benchmark (needs wrk: apt-get install wrk); prints req/s and latency per route.
bench: venv
	$(BIN)/python -m bench.http_bench

## The queue benchmark: async runs/s with 1 and 4 workers, enqueue-to-start latency, the claim's plan with 1M
## finished runs, and procrastinate's no-op jobs/s beside them (installed in a throwaway venv under /tmp).
bench-queue: venv
	$(BIN)/python -m bench.queue_bench

## The soak test: 10 minutes of steady mixed load (gunicorn and two workers); errors, p99 per route, memory.
bench-soak: venv
	$(BIN)/python -m bench.soak_bench

## Hostile PDF uploads: /livez and GET /workflows/{id} p50/p99 with and without eight at once, and one alone.
bench-pdf: venv
	$(BIN)/python -m bench.pdf_bench

## Bounded waits (needs wrk): GET /workflows/{id} req/s alone and with 100 clients waiting (Prefer: wait=30), and a
## wait's finish -> answer latency.
bench-waits: venv
	$(BIN)/python -m bench.wait_bench

## Webhooks: run finished -> loopback receiver got it (p50/p99, one idle worker), and deliveries/s with 4 workers.
bench-webhooks: venv
	$(BIN)/python -m bench.webhook_bench

bench-schedules: venv
	$(BIN)/python -m bench.schedule_bench

## What relying on no session state costs per request: the app direct, session-free direct, and through a real
## PgBouncer in transaction mode (needs pgbouncer: apt-get install pgbouncer).
bench-pgbouncer: venv
	$(BIN)/python -m bench.pgbouncer_bench

## 8 workers x 4 threads and 2 gunicorn hosts, direct and through PgBouncer (pool 10): server connections held,
## queue runs/s, enqueue-to-start p50/p99 (needs pgbouncer).
bench-connections: venv
	$(BIN)/python -m bench.connections_bench

## 1M then 5M runs over 180 days generated in SQL: the history reads' p50/p99 at each, and prune-runs of 30 days
## by partition drop against row by row (about 30 minutes and 40 GB of disk on a 2-core machine).
bench-scale: venv
	$(BIN)/python -m bench.scale_bench

clean:
	rm -rf $(VENV)
