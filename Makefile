# Fresh machine: `make demo` (runs the farm on the sample catalog) or `make test`.
# CPU machines get the lean CPU build of torch; on a GPU machine use
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint unit integration services browser bench faults

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/farm demo

services:
	.ci/services

browser:
	.ci/browser

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

unit: setup
	$(BIN)/pytest tests/unit -q

integration: setup services browser
	$(BIN)/pytest tests/integration -q

test: setup services browser lint
	$(BIN)/pytest tests -q -ra

# The CPU benchmarks in quick mode (Redis and PostgreSQL needed); bench/README.md has the rest.
bench: setup services
	$(BIN)/python -m bench.overhead --quick
	$(BIN)/python -m bench.submit --quick
	$(BIN)/python -m bench.scale --quick
	$(BIN)/python -m bench.text --quick
	$(BIN)/python -m bench.stream --quick
	$(BIN)/python -m bench.claims --articles 200

# The fault-injection suite and the bad-input corpus, totalled (README "Reliability").
faults: setup services
	$(BIN)/python -m bench.faults
