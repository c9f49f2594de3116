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

.PHONY: demo demo-results validation-results config-docs install test test-fast lint format lock report clean help

help:
	@echo "make install      create .venv with the pinned dependencies and genesis"
	@echo "make demo         install, then run the whole workflow on the embedded phantoms"
	@echo "make demo-results rewrite docs/demo-results.md and the README's demo block from results/"
	@echo "make validation-results  rewrite docs/demo-attempts/validation.md from its kept run files"
	@echo "make config-docs  regenerate config/stages.schema.yaml and config/README.md's key tables"
	@echo "make test         install, then the test suite (test-fast: without the slow runs)"
	@echo "make lint | format | report | lock | clean"

$(STAMP): requirements.lock pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=...)"; exit 1; }
	@date +%s > .install-start
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@echo $$(( $$(date +%s) - $$(cat .install-start) )) > $(VENV)/install_seconds
	@rm -f .install-start
	touch $@

install: $(STAMP)

# The demo runs on the CPU: let as many training jobs run as there are cores (on a GPU
# machine, extra jobs wait for a free GPU slot).
# results/demo_time.json records how long this run took (and the install before it), for
# docs/demo-results.md: numbers quoted in the docs come from files a run wrote.
demo: $(STAMP)
	@date +%s > .demo-start
	$(BIN)/snakemake --cores $(CORES) --resources gpu=$(CORES)
	$(BIN)/snakemake --report results/report.html
	@$(BIN)/python -c "import json, os, sys, time; start = int(open('.demo-start').read()); \
	install = open('$(VENV)/install_seconds').read().strip() if os.path.exists('$(VENV)/install_seconds') else 'nan'; \
	json.dump({'workflow_seconds': int(time.time()) - start, 'install_seconds': float(install), \
	'cores': int('$(CORES)'), 'date': time.strftime('%Y-%m-%d')}, open('results/demo_time.json', 'w'))"
	@rm -f .demo-start

demo-results: $(STAMP)
	$(BIN)/python tools/demo_results.py --results results --output docs/demo-results.md --readme README.md

# The validation experiment's record: its run files (tables, pretraining curve, provenance)
# are kept under docs/demo-attempts/validation/ and the page is generated from them.
VALIDATION := docs/demo-attempts/validation
validation-results: $(STAMP)
	$(BIN)/python tools/demo_results.py --results $(VALIDATION) --output $(VALIDATION).md \
		--no-readme --title "Validation experiment" \
		--run "config/validation.yaml (phases: config/validation-phases/)"

# Every config key is declared once (a settings field, or config/schema.yaml for the
# workflow's own keys); the stage schema and the README's key tables are generated.
config-docs: $(STAMP)
	$(BIN)/python -m genesis.settings_schema
	$(BIN)/python tools/config_docs.py

test: $(STAMP)
	$(BIN)/pytest -n $(CORES) --dist loadgroup

test-fast: $(STAMP)
	$(BIN)/pytest -n $(CORES) -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks tools
	$(BIN)/ruff format --check src tests benchmarks tools
	$(BIN)/snakefmt --check Snakefile rules
	$(BIN)/python tools/config_docs.py --check
	$(BIN)/snakemake --lint

format: $(STAMP)
	$(BIN)/ruff check --fix src tests benchmarks tools
	$(BIN)/ruff format src tests benchmarks tools
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
