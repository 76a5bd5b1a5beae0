# allocguard — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install demo demo-traces demo-steps watch test lint unit unit-future chaos bench-smoke image chart-check alerting-check stack-up stack-down stack-status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(BIN)/allocguard: pyproject.toml setup.py consumer/_bytetest.c handlers/_holdscan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	@touch $@

install: $(BIN)/allocguard ## create .venv and install allocguard with its dev tools

SEED_VICTIM := d99ceb12-193a-4e80-840e-35cb236d9452

demo: install ## local stack up; allocguard run remediates the seed incident live
	$(BIN)/allocguard stack up
	$(BIN)/allocguard demo

demo-traces: install ## the demo with Jaeger beside the stack (built once): prints the incident's trace link
	$(BIN)/allocguard stack up --tracing
	$(BIN)/allocguard demo

demo-steps: install ## the same, step by step: simulate, diagnose, remediate (no consumer), diagnose
	$(BIN)/allocguard stack up
	$(BIN)/allocguard simulate seed-incident
	eval "$$($(BIN)/allocguard stack env)" && $(BIN)/allocguard diagnose $(SEED_VICTIM) \
		&& $(BIN)/allocguard remediate $(SEED_VICTIM) --mode auto && $(BIN)/allocguard diagnose $(SEED_VICTIM)

watch: install ## local stack up, then print decoded CDC events of a demo booking lifecycle
	$(BIN)/allocguard stack up
	$(BIN)/allocguard watch --demo

lint: install ## ruff, ruff format --check, strict mypy, layers (imports only downward, no cycle), literal dates that expire
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m tests.support.layers
	$(BIN)/python -m tests.support.date_lint tests bench

test: lint chart-check alerting-check unit-future ## lint, the service-free tests 400 days ahead, then the whole suite on the real stack
	$(BIN)/python -m pytest

# The tests not marked `stack` (tests/conftest.py refuses an unmarked test that uses the stack), pointed at closed
# ports: one that reached for a service would fail, not quietly use a running stack.
UNIT := env ALLOCGUARD_PG_PORT=1 ALLOCGUARD_KAFKA_PORT=1 ALLOCGUARD_CONNECT_PORT=1 $(BIN)/python -m pytest -m "not stack" -q
FUTURE_DAYS := 400
SLEEP_FIX := $(VENV)/faketime-sleep-fix.so

unit: install chart-check ## the tests that need no service (≈ 3 min, 2 of it the CLI contract); the chart's tools are fetched first
	$(UNIT)

$(SLEEP_FIX): tests/support/faketime_sleep_fix.c
	gcc -O2 -Wall -shared -fPIC -o $@ $< -ldl

# chart-check first: helm, the Strimzi CRD generator and the Prometheus Operator's CRDs are fetched and built with
# the real clock (TLS certificates are checked against it)
unit-future: install $(SLEEP_FIX) chart-check ## make unit's tests with the process clock 400 days ahead (Debian's faketime)
	@command -v faketime >/dev/null || { echo "faketime is missing: apt-get install -y faketime" >&2; exit 2; }
	LD_PRELOAD=$(abspath $(SLEEP_FIX)) FAKETIME_DONT_FAKE_MONOTONIC=1 ALLOCGUARD_CLOCK_AHEAD_DAYS=$(FUTURE_DAYS) \
		faketime -f +$(FUTURE_DAYS)d $(UNIT) -m "not stack and not realclock"

chaos: install ## the chaos suite's long form (>= 50 kill -9, broker and PostgreSQL outages); prints its ledger
	ALLOCGUARD_CHAOS=long $(BIN)/python -m pytest tests/chaos -s

bench-smoke: install ## the benches' short form (100k messages of the platform's traffic: quiet (0 signals) and healthy (10 % hold announcements); allocguard in process and as `allocguard run` vs raw consume; < 2 min)
	$(BIN)/python -m bench.throughput --messages 100000 --mixes quiet,healthy --repeats 1 --process

image: install ## build the container image with podman (Debian bases by mmdebstrap when no registry is reachable)
	$(BIN)/python -m consumer.local.image build

chart-check: install ## helm lint --strict, helm template, every resource against its schema, Pod Security restricted
	PATH="$$PATH:/usr/local/go/bin" $(BIN)/python -m tests.support.manifests

alerting-check: install ## promtool check rules + promtool test rules (promtool built once from the Go module proxy)
	cd deploy/prometheus && PATH="$$PATH:/usr/local/go/bin" PYTHONPATH=$(CURDIR) $(CURDIR)/$(BIN)/python -c \
		"import subprocess, sys; from tests.deploy.test_alerting import promtool; t = str(promtool()); \
		sys.exit(subprocess.call([t, 'check', 'rules', 'allocguard-rules.yaml']) or subprocess.call([t, 'test', 'rules', 'allocguard-rules.test.yaml']))"

stack-up: install ## start the local stack (idempotent)
	$(BIN)/allocguard stack up

stack-down: install ## stop what the local stack started
	$(BIN)/allocguard stack down

stack-status: install ## show the local stack
	$(BIN)/allocguard stack status

clean: stack-down ## stop the stack and delete its state (.allocguard/)
	rm -rf .allocguard
