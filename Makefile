# tillpulse — the commands a newcomer needs. `make help` lists them.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: help venv test test-fast lint bench demo servers-check clean wheel

help:
	@echo "make demo    a simulated fleet through the whole local pipeline (DURATION=4m TERMINALS=200)"
	@echo "make test    install what is missing (the venv; the Debian servers as root) and run the whole test suite"
	@echo "make lint    ruff + mypy --strict + the import contracts (lint-imports)"
	@echo "make bench   run the benchmarks in bench/ (prints JSON lines)"
	@echo "make wheel   build dist/tillpulse-<version>-py3-none-any.whl (docs/edge-install.md)"

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

venv: $(VENV)/.installed

# The test suite starts real servers: install the missing Debian packages with apt-get
# as root (or with passwordless sudo), else print the one command to run and stop.
# The demo's --install-missing does the same (testkit/install_servers.py).
servers-check: venv
	$(PY) -m testkit.install_servers --for tests

test: venv servers-check
	$(PY) -m pytest

test-fast: venv
	$(PY) -m pytest -m "not integration and not slow"

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy --strict wire runtime testkit tillpulse edge gateway firmware_sim cloud dashboards broker
	$(VENV)/bin/lint-imports   # the layers and independence contracts in pyproject.toml

bench: venv
	$(PY) -m bench.lineproto
	$(PY) -m bench.outbox
	$(PY) -m bench.spool
	$(PY) -m bench.pipeline
	$(PY) -m bench.reader
	$(PY) -m bench.streaming_detector
	$(PY) -m bench.cli_help
	$(PY) -m bench.detector_quality   # ~20 minutes: three fleets simulated, trained, replayed

# The main job in one command: Mosquitto, influxd, gateway, edge agents, a simulated
# trading day with injected incidents and the cloud detection job, shown live.
# As root a missing Mosquitto or InfluxDB is installed with apt-get; otherwise the
# command to install it is printed. `make demo DURATION=2m TERMINALS=50`.
demo: DURATION ?= 4m
demo: TERMINALS ?= 200
demo: venv
	$(PY) -m tillpulse demo --install-missing --duration $(DURATION) --terminals $(TERMINALS)

# The wheel a field engineer copies to a Pi. setuptools reuses build/lib, where a module
# deleted from the tree would still be: start from an empty one.
wheel: venv
	rm -rf build
	$(PY) -m pip wheel --quiet --no-deps --wheel-dir dist .
	@ls dist/tillpulse-*.whl

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
