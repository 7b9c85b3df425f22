# Everything a fresh Debian machine with Python 3.11 needs: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: chaos chaos-cluster fuzz jmeter locust run up down status test lint typecheck bench rebuild rotate-keys clean system-deps test-deps compose-test offline-images

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

## promtool (tests/deploy checks the Prometheus config and alert rules with it) from Debian's prometheus package;
## chromium (tests/web drive it headless with Playwright, no browser download) from Debian's chromium package.
test-deps:
	@command -v promtool >/dev/null 2>&1 || { \
	  echo "promtool not found: installing Debian's prometheus package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@test -x /usr/bin/chromium || { \
	  echo "chromium not found: installing Debian's chromium package (tests/web drive it headless)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

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

chaos-cluster: venv ## the cluster-fault test kept out of `make test` (intermittent: issue 11): the JetStream leader kill chaos run
	EVENTFLOW_CHAOS_FAULTS="kill meta+stream leader" $(PY) -m pytest -q tests/chaos

fuzz: venv          ## schemathesis on every OpenAPI, direct and through the gateway, 200 examples per operation and mode
	EVENTFLOW_FUZZ_EXAMPLES=$${EVENTFLOW_FUZZ_EXAMPLES:-200} EVENTFLOW_FUZZ_BUDGET_S=0 EVENTFLOW_FUZZ_VIA=direct,gateway $(PY) -m pytest -q -s -p no:cacheprovider --timeout 0 tests/fuzz

LOADTEST_HOST ?= http://127.0.0.1:8080
LOCUST_USERS  ?= 200
LOCUST_TIME   ?= 60s

locust: venv        ## Locust against a running system (make up): browse / buy / cancel; CSV + HTML in var/loadtest/
	$(PY) -m pip install --quiet 'locust>=2.20'
	@mkdir -p var/loadtest
	$(PY) -m locust -f loadtest/locust/locustfile.py --headless -u $(LOCUST_USERS) -r 50 -t $(LOCUST_TIME) \
	  --host $(LOADTEST_HOST) --csv var/loadtest/locust --html var/loadtest/locust.html --only-summary

JMETER_HOME ?= /usr/share/jmeter
JMETER_ARGS ?=

## JMeter: Debian's 2.13 (Maven Central, where 5.x lives, is not reachable from these machines; see
## docs/performance.md) plus a 20-line launcher that lets its plans load on Debian's newer XStream and Java 17.
var/jmeter/EventflowJMeter.class: loadtest/jmeter/EventflowJMeter.java
	@test -f $(JMETER_HOME)/bin/ApacheJMeter.jar || { echo "installing Debian's jmeter package"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends jmeter jmeter-http >/dev/null; }
	@mkdir -p var/jmeter
	javac -nowarn -cp "$(JMETER_HOME)/bin/ApacheJMeter.jar:$$(ls $(JMETER_HOME)/lib/*.jar $(JMETER_HOME)/lib/ext/*.jar | tr '\n' ':')" \
	  -d var/jmeter $<

jmeter: venv var/jmeter/EventflowJMeter.class ## JMeter plan (loadtest/jmeter) against a running system (make up); summary table
	$(PY) -m loadtest.jmeter.run --host $(LOADTEST_HOST) $(JMETER_ARGS)

bench: venv         ## benchmarks; prints tables, writes docs/img/perf-*.png (see bench/, docs/performance.md)
	$(PY) -m bench.ceiling
	$(PY) -m bench.reservations
	$(PY) -m bench.openloop $(OPENLOOP_ARGS)
	$(PY) -m bench.inventory
	$(PY) -m bench.growth $(GROWTH_ARGS)

rebuild: venv       ## rebuild the read models from the log into a new generation and switch (safe while running; SERVICES="users events")
	$(PY) -m eventflow.rebuild $(SERVICES)

rotate-keys: venv   ## re-wrap every data key with the current master key (old ones in EVENTFLOW_MASTER_KEYS_PREVIOUS; docs/privacy.md)
	$(PY) -m services.users.rotar_claves

compose-test: venv  ## the Compose stack for real: images built offline, journey, flash sale with a NATS node killed (see tests/deploy/compose_stack.py)
	$(PY) -m tests.deploy.compose_stack

offline-images: venv  ## the images docker-compose.yml runs, built with no registry (deploy/offline-images.sh)
	PYTHON=$(PY) bash deploy/offline-images.sh

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
