# gradequeue: `make run` runs the service, `make test` runs the tests. Both set up the virtualenv first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 18040
export GRADEQUEUE_DEV ?= 1

.PHONY: install run test lint format migrate flower clean bench bench-test

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("gradequeue needs Python 3.11 or newer") if sys.version_info < (3, 11) else None'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e ".[dev]"
	touch $@

# With DATABASE_URL=mysql://... the MySQL/MariaDB driver too (the "mysql" extra; pyproject.toml says what
# building it needs). The SQLite default needs nothing more.
ifneq ($(filter mysql://%,$(DATABASE_URL)),)
$(VENV)/.installed-mysql: $(VENV)/.installed
	$(VENV)/bin/pip install --quiet -e ".[dev,mysql]"
	touch $@

install: $(VENV)/.installed-mysql
endif

install: $(VENV)/.installed

migrate: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py seed_queues
	$(PY) manage.py sync_schedule

run: migrate
	$(PY) manage.py dev_setup --base-url http://$(HOST):$(PORT)
	GQ_PYTHON=$(PY) GQ_HOST=$(HOST) GQ_PORT=$(PORT) $(VENV)/bin/honcho start --no-colour -f Procfile

# Flower: the Celery monitor (workers, task rates, failures) on the configured broker, at http://$(HOST):$(FLOWER_PORT)/.
FLOWER_PORT ?= 5555
flower: install
	$(VENV)/bin/celery -A celery_app flower --address=$(HOST) --port=$(FLOWER_PORT) --purge_offline_workers=300

test: install
	$(VENV)/bin/pytest $(PYTEST_ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) var

# The side-by-side benchmark (BENCHMARKS.md): gradequeue against edx-submissions 4.0.2 and two limits, on
# PostgreSQL, RabbitMQ and Redis at 127.0.0.1. BENCH_QUICK=1 runs a few-minute subset.
BENCH_PG ?= postgres://postgres@127.0.0.1:5432
export BENCH_PG

# edx-submissions is served by the same server as gradequeue (config/serve.py, Granian).
EDX_VENV_STAMP := bench/.venv-edx/.installed-granian
$(EDX_VENV_STAMP):
	$(PYTHON) -m venv bench/.venv-edx
	bench/.venv-edx/bin/pip install --quiet --upgrade pip
	bench/.venv-edx/bin/pip install --quiet "edx-submissions==4.0.2" openedx-events "psycopg[binary]" "granian>=2.8,<3"
	touch $@

bench: install $(EDX_VENV_STAMP)
	$(PY) bench/run.py $(if $(BENCH_QUICK),--quick) $(BENCH_ARGS)

# The benchmark's own tests (bench/tests/: the load generator's HTTP, the fault campaign's instruments), kept out
# of the product's suite (make test collects tests/ only).
bench-test: install
	$(VENV)/bin/pytest bench/tests $(PYTEST_ARGS)
