# Mercato — one command to run, one to test. Each target creates .venv and installs when needed.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?=
FORMAT ?= $(if $(DATA),events,simulated)
PIPELINE_ARGS ?=
QUARANTINE_ARGS ?=
PYTEST_ARGS ?=
export PYTHONPATH := $(CURDIR)

.PHONY: help venv run pipeline quarantine serve test lint typecheck bench ui-mlflow ui-airflow clean

help:
	@echo "make run       pipeline once on the simulated shop, then the scoring API on $${RECSYS_PORT:-$${PORT:-8000}}"
	@echo "make pipeline  one run of the DAG recsys_daily [DATA=path FORMAT=simulated|events|s3rec|diginetica]"
	@echo "make quarantine  set aside the landing files a failed raw gate named [QUARANTINE_ARGS='--list' / '--restore ID' / '--file F']"
	@echo "make serve     the scoring API alone, on the current registry"
	@echo "make test      lint, type check and the whole test suite"
	@echo "make ui-mlflow / ui-airflow   the local MLflow UI (port 5000) / Airflow standalone (port 8080)"

$(VENV)/.installed: requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

venv: $(VENV)/.installed

run: venv
	$(PY) -m jobs.pipeline --format simulated $(PIPELINE_ARGS)
	$(PY) -m serving.demo

pipeline: venv
	$(PY) -m jobs.pipeline --format $(FORMAT) $(if $(DATA),--data "$(DATA)") $(PIPELINE_ARGS)

quarantine: venv
	$(PY) -m jobs.quarantine $(QUARANTINE_ARGS)

serve: venv
	$(PY) -m serving

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

test: venv lint typecheck
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench.quality --profile quick
	$(PY) -m bench.train_speed
	$(PY) -m bench.serving_load
	$(PY) -m bench.durability
	$(PY) -m bench.online_ab
	$(PY) -m bench.online_aa
	$(PY) -m bench.pipeline_incremental

ui-mlflow: venv
	$(PY) -m jobs.pipeline --print-env > /dev/null
	$(VENV)/bin/mlflow ui --backend-store-uri "$$($(PY) -c 'from core.settings import get_settings; print(get_settings().tracking_uri)')" --port 5000

ui-airflow: venv
	eval "$$($(PY) -m jobs.pipeline --print-env)" && PATH="$(CURDIR)/$(VENV)/bin:$$PATH" exec airflow standalone

clean:
	rm -rf .recsys

# Secrets for docker compose (infra/secrets.sh) and the right to erasure (jobs/erasure.py).
SECRETS_FILE ?= .env
ERASE_USER ?=
ERASE_ARGS ?=
.PHONY: secrets erase

secrets:
	sh infra/secrets.sh $(SECRETS_FILE)

erase: venv
	$(PY) -m jobs.erasure $(if $(ERASE_USER),--request "$(ERASE_USER)") $(ERASE_ARGS)

# Operator commands over the serving registry, the lake's gold run dates and MLflow (training/registry.py).
REGISTRY_ARGS ?= status
.PHONY: registry

registry: venv
	$(PY) -m training.registry $(REGISTRY_ARGS)
