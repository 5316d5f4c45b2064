# The two commands: `make test` (everything, on a fresh machine) and `make demo` (a rehearsal).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install test lint typecheck bench clean demo demo-service demo-targets

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# scripts/test-env.sh brings up PostgreSQL, a Docker engine and Redis where it can, and says
# which tests will be skipped (and why) where it cannot.
test: lint
	PYTEST=$(BIN)/pytest bash scripts/test-env.sh
	$(BIN)/pytest

# A full rehearsal on a sandbox (its own databases, api, outbox): two demo engineers approve.
demo: $(STAMP)
	$(BIN)/rollback-bot rehearse --sandbox --approver alice --approver bob --initiator carol --clients 20

# The same in the real claude-agent-api's model: one door key (API_KEY in the sandbox service's
# .env) that step 4 replaces, installs and restarts the api for, before anyone is mailed.
demo-service: $(STAMP)
	$(BIN)/rollback-bot rehearse --sandbox --key-model service --approver alice --approver bob --initiator carol --clients 20

# Two targets on one bot database, in the runbook's order: rehearse on a staging sandbox, show
# production's plan quoting that rehearsal, then roll a production sandbox back.
demo-targets: $(STAMP)
	$(BIN)/rollback-bot rehearse --sandbox --targets staging,production --approver alice --approver bob --initiator carol --clients 20

# Benchmarks (not tests: they print tables; see README "Performance").
bench: $(STAMP)
	$(BIN)/python -m bench.ack_latency
	$(BIN)/python -m bench.rotation
	$(BIN)/python -m bench.email_throughput
	$(BIN)/python -m bench.thread_budget
	$(BIN)/python -m bench.backup_overhead
	$(BIN)/python -m bench.directory_load
	$(BIN)/python -m bench.event_chain
	$(BIN)/python -m bench.whole_rollback

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache
