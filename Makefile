# Everything a fresh Debian machine with Python 3.11 needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: chaos fuzz locust run up down status test lint typecheck bench rebuild clean system-deps test-deps compose-test offline-images

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

## redis-server comes from PATH, or from Debian's package when it is missing.
system-deps:
	@command -v redis-server >/dev/null 2>&1 || { \
	  echo "redis-server not found: installing Debian's redis-server package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }

venv: $(STAMP) system-deps

## promtool (tests/deploy checks the Prometheus config and alert rules with it) from Debian's prometheus package.
test-deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool not found: installing Debian's prometheus package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

run: venv           ## start NATS, Redis and every service in the foreground; Ctrl-C stops all
	$(PY) -m eventflow.run

up: venv            ## same, in the background; returns when everything is ready
	$(PY) -m eventflow.run --detach

down:               ## stop what `make up` started
	@test -x $(PY) && $(PY) -m eventflow.run --down || true

status:             ## list each process, its port and whether it is ready (nothing running is not an error)
	@test -x $(PY) || { echo "EventFlow is not installed here yet: make run"; exit 0; }; \
	$(PY) -m eventflow.run --status; rc=$$?; [ $$rc -eq 3 ] || exit $$rc

test: venv test-deps ## lint, types, then every test on real NATS and Redis servers the fixtures start
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) -m pytest -q $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

typecheck: venv
	$(PY) -m mypy

chaos: venv         ## the chaos suite: 1,000 buyers for 300 tickets on a 3-node JetStream cluster, one run per fault, invariants, a table
	$(PY) -m tests.chaos.suite --buyers $${CHAOS_BUYERS:-1000} --tickets $${CHAOS_TICKETS:-300}

fuzz: venv          ## schemathesis on every OpenAPI, direct and through the gateway, 200 examples per operation and mode
	EVENTFLOW_FUZZ_EXAMPLES=$${EVENTFLOW_FUZZ_EXAMPLES:-200} EVENTFLOW_FUZZ_BUDGET_S=0 $(PY) -m pytest -q -s -p no:cacheprovider --timeout 0 tests/fuzz

LOADTEST_HOST ?= http://127.0.0.1:8080
LOCUST_USERS  ?= 200
LOCUST_TIME   ?= 60s

locust: venv        ## Locust against a running system (make up): browse / buy / cancel; CSV + HTML in var/loadtest/
	$(PY) -m pip install --quiet 'locust>=2.20'
	@mkdir -p var/loadtest
	$(PY) -m locust -f loadtest/locust/locustfile.py --headless -u $(LOCUST_USERS) -r 50 -t $(LOCUST_TIME) \
	  --host $(LOADTEST_HOST) --csv var/loadtest/locust --html var/loadtest/locust.html --only-summary

bench: venv         ## benchmarks; prints tables (see bench/)
	$(PY) -m bench.reservations
	$(PY) -m bench.inventory

rebuild: venv       ## rebuild the read models from the log into a new generation and switch (safe while running; SERVICES="users events")
	$(PY) -m eventflow.rebuild $(SERVICES)

compose-test: venv  ## the Compose stack for real: images built offline, journey, flash sale with a NATS node killed (see tests/deploy/compose_stack.py)
	$(PY) -m tests.deploy.compose_stack

offline-images: venv  ## the images docker-compose.yml runs, built with no registry (deploy/offline-images.sh)
	PYTHON=$(PY) bash deploy/offline-images.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
