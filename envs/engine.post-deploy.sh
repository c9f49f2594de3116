#!/usr/bin/env bash
# Snakemake runs this once inside the new env, from the directory it was started in
# (the repository root unless you pass --directory; set GENESIS_SRC otherwise).
set -euo pipefail
pip install --no-deps --editable "${GENESIS_SRC:-$PWD}"
