# Two commands do all the set-up on a fresh machine with Python 3.11 and make:
#   make demo   create .venv, install the pinned dependencies, run the workflow
#   make test   the same install, then the test suite
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= 2
# Jobs call `genesis`, `papermill` and `jupyter` from the venv.
export PATH := $(abspath $(BIN)):$(PATH)
# Text files (tables, reports) are UTF-8 whatever the machine's locale.
export PYTHONUTF8 := 1

.PHONY: demo test test-fast lint format lock report clean help

help:
	@echo "make demo | test | test-fast | lint | format | report | lock | clean"

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

install: $(STAMP)

# The demo runs on the CPU: let as many training jobs run as there are cores (on a GPU
# machine, extra jobs wait for a free GPU slot).
demo: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(CORES)
	$(BIN)/snakemake --report results/report.html

test: $(STAMP)
	$(BIN)/pytest -n $(CORES) --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/pytest -n $(CORES) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks
	$(BIN)/ruff format src tests benchmarks
	$(BIN)/snakefmt Snakefile rules

report: $(STAMP)
	$(BIN)/snakemake --report results/report.html

# Re-resolve the pins from requirements.in (torch stays pinned there).
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/pip install --quiet -r requirements.in -r requirements-dev.in
	.lockenv/bin/pip freeze | sed 's/^torch==\(.*\)+cpu$$/torch==\1/' > requirements.lock
	rm -rf .lockenv

clean:
	rm -rf results .snakemake
