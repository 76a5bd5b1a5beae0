# allocguard — `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.DEFAULT_GOAL := help
.PHONY: help install demo demo-traces demo-steps watch test lint unit chaos stack-up stack-down stack-status clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-13s %s\n", $$1, $$2}'

$(BIN)/allocguard: pyproject.toml setup.py consumer/_bytetest.c
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
	$(BIN)/allocguard diagnose $(SEED_VICTIM)
	$(BIN)/allocguard remediate $(SEED_VICTIM) --mode auto
	$(BIN)/allocguard diagnose $(SEED_VICTIM)

watch: install ## local stack up, then print decoded CDC events of a demo booking lifecycle
	$(BIN)/allocguard stack up
	$(BIN)/allocguard watch --demo

lint: install ## ruff, ruff format --check, strict mypy
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: lint ## lint, then the whole suite against the real stack (started if not running)
	$(BIN)/python -m pytest

unit: install ## only the fast tests that need no services
	$(BIN)/python -m pytest tests/unit

chaos: install ## the chaos suite's long form (>= 50 kill -9, broker and PostgreSQL outages); prints its ledger
	ALLOCGUARD_CHAOS=long $(BIN)/python -m pytest tests/chaos -s

stack-up: install ## start the local stack (idempotent)
	$(BIN)/allocguard stack up

stack-down: install ## stop what the local stack started
	$(BIN)/allocguard stack down

stack-status: install ## show the local stack
	$(BIN)/allocguard stack status

clean: stack-down ## stop the stack and delete its state (.allocguard/)
	rm -rf .allocguard
