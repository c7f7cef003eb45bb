# The README's commands. Everything runs from the project's own virtualenv in .venv.
#
#   make demo     the whole portal in one command (web, a Celery worker, Celery beat)
#   make worker   one more Celery worker against the same settings
#   make test     the test suite, against PostgreSQL and Redis

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# The interpreter that creates the virtualenv: Python 3.11 (Django 5.2 LTS), whatever it is called here.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)

.PHONY: help demo worker test install install-test

help:
	@echo "make demo     run the portal: web on http://127.0.0.1:$${PORT:-8000}/, a Celery worker and beat"
	@echo "make worker   start one more Celery worker (same DATABASE_URL / REDIS_URL as the demo)"
	@echo "make test     run the tests (PostgreSQL and Redis; DATABASE_URL / REDIS_URL override)"

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 or python3 on PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Stamp files: pip runs again only when pyproject.toml is newer than the last install.
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

demo: $(VENV)/.installed
	$(PY) -m portal.demo

# The embedded default's filesystem broker is best served by a thread pool; with Redis, Celery's
# default (a process per core) is the production shape.
WORKER_POOL ?= $(if $(REDIS_URL),,--pool=threads --concurrency=4)

worker: $(VENV)/.installed
	$(PY) -m celery -A portal worker --loglevel=info $(WORKER_POOL) -n worker-$$$$@%h

# The tests run against the real services. pytest-django creates (and drops) the test database
# test_<name> itself; Redis database 15 keeps the tests' queue apart from a demo's.
test: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/hotpatch_portal
test: export REDIS_URL ?= redis://127.0.0.1:6379/15
test: $(VENV)/.installed-test
	$(VENV)/bin/pytest $(PYTEST_ARGS)
