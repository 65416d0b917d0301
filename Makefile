# Fresh machine: `make demo` (runs the farm on the sample catalog) or `make test`.
# CPU machines get the lean CPU build of torch; on a GPU machine use
#   make setup TORCH_SPEC="torch --index-url https://download.pytorch.org/whl/cu128"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test lint unit integration services browser bench faults device-wheels \
	screenshots

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e '.[dev]'
	@# CLIP's BPE merges, from which the tiny models' CLIP tokenizers are built (demo and tests):
	@# only that file is read, never the package, whose torchvision breaks beside the CPU torch.
	$(BIN)/pip install --quiet --no-deps open-clip-torch==3.3.0
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

# Two pytest workers: the integration tests that use the machine's Redis and PostgreSQL run
# one at a time on one of them (several restart those services, and many wait out leases);
# the unit tests and the tests with services of their own, or none, fill the other
# (tests/conftest.py).
# The fleet's fault scenarios (minutes each) run in `make faults`, which runs the rest too.
test: setup services browser lint
	$(BIN)/pytest tests -q -ra -m "not fleet" -n 2 --dist loadgroup

# The review studio's README screenshots (docs/img), made over `farm demo` in a scratch folder.
screenshots: setup browser
	$(BIN)/python docs/screenshots.py

# The CPU benchmarks in their quick sizes (Redis and PostgreSQL needed); bench/README.md has the rest.
bench: setup services
	$(BIN)/python -m bench.submit --quick
	$(BIN)/python -m bench.scale --quick
	$(BIN)/python -m bench.scale --gpus 2 --costs h100 --quick
	$(BIN)/python -m bench.text --quick
	$(BIN)/python -m bench.stream --quick
	$(BIN)/python -m bench.messages
	$(BIN)/python -m bench.recovery --rounds 1
	$(BIN)/python -m bench.claims --articles 200

# The fault-injection suite and the bad-input corpus, totalled (README "Reliability").
faults: setup services
	$(BIN)/python -m bench.faults

# Wheels that bench/gpu_device.sh installs on a lent GPU machine (bench/README.md, "On a GPU").
WHEEL_PYTHON ?= 3.12
device-wheels:
	rm -rf .whl && mkdir -p .whl
	$(PYTHON) -m pip download --quiet --no-deps --only-binary=:all: -d .whl \
	  --python-version $(WHEEL_PYTHON) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
	  --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
	  -r bench/device_wheels.txt
	du -sh .whl
