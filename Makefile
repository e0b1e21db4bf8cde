# tokenlog — every entry point. `make help` lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell for p in python3.13 python3.12 python3.11 python3; do \
	command -v $$p >/dev/null && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml constraints.txt 2>/dev/null | sha1sum | cut -c1-12)
PYTEST_ARGS :=
# (set on the command line only, `make test PYTEST_ARGS=...`: a PYTEST_ARGS in the environment,
# say a CI variable, must not deselect tests without anyone seeing it)

.PHONY: help setup run test test-deps lint typecheck kafka-up kafka-down kafka-status kafka-logs kafka-cluster topics schemas-check bench bench-quick chaos soak mutants lock clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  make %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml constraints.txt
	@test -n "$(PYTHON)" || { echo "error: Python 3.11+ is required (python3.11 or newer on PATH)"; exit 1; }
	@rm -f $(VENV)/.installed-*
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(STAMP) ## create .venv and install the project with its pinned dependencies

run: setup ## start the local broker (unless KAFKA_BOOTSTRAP_SERVERS is set), topics and every service; Ctrl-C stops all
	$(BIN)/python -m infra.run

test: setup test-deps ## run the whole suite against a real broker the test session starts (or KAFKA_BOOTSTRAP_SERVERS)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-deps: setup ## what the suite needs besides Python, Java, Maven: the AI SDK's npm packages (npm ci when the lockfile changed), Debian's Chromium (apt-get, as root)
	$(BIN)/python -m tests.prereqs

lint: setup ## ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup ## mypy --strict
	$(BIN)/mypy

kafka-up: setup ## start the local broker in the background and provision topics
	$(BIN)/python -m infra.broker start
	$(BIN)/python -m infra.topics ensure

kafka-down: setup ## stop the local broker (by PID: SIGTERM, then SIGKILL)
	$(BIN)/python -m infra.broker stop

kafka-status: setup ## is the local broker running and answering?
	$(BIN)/python -m infra.broker status

kafka-logs: setup ## tail the local broker's log
	$(BIN)/python -m infra.broker logs

NODES ?= 3
kafka-cluster: setup ## an ephemeral cluster of NODES (default 3) brokers in the foreground, replication NODES; Ctrl-C ends it
	$(BIN)/python -m infra.broker cluster --nodes $(NODES)

topics: setup ## list the topics on the broker with their partitions and configs
	$(BIN)/python -m infra.topics list

schemas-check: setup ## every current Avro schema against every released version, both ways
	$(BIN)/python -m schemas.compat

bench: setup ## the benchmark suite (bench/results/latest/: summary.md, results.json, plots) and component benchmarks
	$(BIN)/python -m bench.suite
	$(BIN)/python -m bench.codec
	$(BIN)/python -m bench.worker
	$(BIN)/python -m bench.sessions
	$(BIN)/python -m bench.gateway
	$(BIN)/python -m bench.replay

bench-quick: setup ## a one-minute run of the benchmark suite (bench/results/quick/); CI runs it
	$(BIN)/python -m bench.suite --quick

chaos: setup ## the chaos scenarios at full size (3 runs each, more clients); make test runs one short run of each
	TOKENLOG_CHAOS=full $(BIN)/python -m pytest tests/chaos $(PYTEST_ARGS)

MINUTES ?= 30
soak: setup ## steady load with random disconnects for MINUTES (default 30); fails on a leak or a lost/doubled event
	$(BIN)/python -m tests.chaos.soak --minutes $(MINUTES) --out bench/results/soak

mutants: setup ## inject five bugs one at a time and show the tests that must catch each fail (tests/mutants.py); restores the tree
	$(BIN)/python -m tests.mutants $(MUTANTS_ARGS)

lock: ## re-resolve dependencies within pyproject's ranges and write constraints.txt
	rm -rf .lockvenv && $(PYTHON) -m venv .lockvenv
	.lockvenv/bin/python -m pip install --quiet --disable-pip-version-check '.[dev]'
	.lockvenv/bin/python -m pip freeze --exclude tokenlog > constraints.txt
	rm -rf .lockvenv

clean: ## remove the virtualenv and caches (keeps the broker's data in .local/kafka)
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
