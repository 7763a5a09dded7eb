# Marketable — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PG_URL ?= postgres://postgres@127.0.0.1:5432/marketable
DEMO_CONTACTS ?= 5000
PORT ?= 8000

.DEFAULT_GOAL := help
.PHONY: help install run serve-prod test test-pg test-faults test-schema lint format bench migrate demo

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-9s %s\n", $$1, $$2}'

$(STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

install: $(STAMP) ## Create the virtualenv and install the pinned requirements

migrate: install
	$(PY) manage.py migrate --noinput

demo: migrate
	PORT=$(PORT) $(PY) manage.py seed_demo --contacts $(DEMO_CONTACTS)

run: demo ## Install, migrate, load demo data and serve the admin at http://127.0.0.1:8000/admin/ (another port: make run PORT=8123)
	@echo "Admin: http://127.0.0.1:$(PORT)/admin/  (user: admin; password: see above, .admin_password or ADMIN_PASSWORD)"
	$(PY) manage.py runserver 127.0.0.1:$(PORT)

serve-prod: install ## gunicorn on crm.wsgi with the production settings (README: Production); WEB_CONCURRENCY, GUNICORN_THREADS, BIND
	$(PY) manage.py collectstatic --noinput --verbosity 0
	rm -rf $${PROMETHEUS_MULTIPROC_DIR:-/tmp/marketable-metrics} && mkdir -p $${PROMETHEUS_MULTIPROC_DIR:-/tmp/marketable-metrics}
	PROMETHEUS_MULTIPROC_DIR=$${PROMETHEUS_MULTIPROC_DIR:-/tmp/marketable-metrics} \
	DJANGO_SETTINGS_MODULE=$${DJANGO_SETTINGS_MODULE:-crm.settings.production} \
	$(VENV)/bin/gunicorn -c crm/gunicorn.py crm.wsgi

test: install ## Install and run the tests (SQLite; PostgreSQL when DATABASE_URL is set)
	$(PY) -m pytest

test-pg: install ## Run the tests on PostgreSQL ($(PG_URL))
	DATABASE_URL=$(PG_URL) $(PY) -m pytest

test-faults: install ## Real Celery workers on Redis: jobs end to end, killed with -9 and resumed (PostgreSQL)
	WORKER_TESTS=1 DATABASE_URL=$${DATABASE_URL:-$(PG_URL)_faults} $(PY) -m pytest tests/faults

test-schema: install ## The schemathesis suite over the whole API, on PostgreSQL ($(PG_URL)_schema)
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)_schema} $(PY) -m pytest -m contract tests/contract

lint: install ## ruff (lint and format) and makemigrations --check
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) manage.py makemigrations --check --dry-run

format: install ## Apply ruff's fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

bench: install ## Benchmarks on PostgreSQL; results go to docs/BENCHMARKS.md
	DATABASE_URL=$${DATABASE_URL:-$(PG_URL)_bench} $(PY) -m tests.perf.run
