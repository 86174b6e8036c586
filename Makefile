# Every target sets up its own virtual environment on first use.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# where pip finds torch: empty = pip's own configuration (here the machine's local wheel directory, which holds the
# CPU wheel); on a machine that reaches PyPI, where torch==2.13.0 on Linux is the CUDA build, pass
# TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: demo test lint format bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))  # the CPU wheel first
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: $(VENV)/.installed     ## train a character LM on the built-in corpus and print samples
	$(PY) -m rnnkit train --preset default --out runs/demo --force

test: $(VENV)/.installed     ## the test suite (fast, no network, no ../shared needed)
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check rnnkit tests bench
	$(VENV)/bin/ruff format --check rnnkit tests bench

format: $(VENV)/.installed
	$(VENV)/bin/ruff format rnnkit tests bench
	$(VENV)/bin/ruff check --fix rnnkit tests bench

bench: $(VENV)/.installed    ## the engine benchmark (random data); bench/charlm.py and text.py read ../shared/data (or RNNKIT_DATA), energy.py scikit-learn's digits
	$(PY) bench/engine.py

clean:
	rm -rf $(VENV) runs .pytest_cache build rnnkit.egg-info  # (a wheel built later took build/'s stale files)
