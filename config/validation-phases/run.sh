#!/bin/bash
# Runs config/validation.yaml in phases, smallest label fraction first, so that a run cut
# short (a 2-core machine does not finish it in one sitting) still leaves complete,
# paired tables. After each phase its tables are copied to results/validation-phases/<p>/.
# Usage, from the repository root: bash config/validation-phases/run.sh [cores]
set -u
cores="${1:-2}"
base=(config/config.yaml config/validation.yaml)
snakemake pretrained --cores "$cores" --resources gpu="$cores" --configfile "${base[@]}" || exit 1
for phase in p1 p2 p3 p4; do
  echo "=== $phase start $(date -u +%FT%TZ)"
  snakemake --cores "$cores" --resources gpu="$cores" --keep-going \
    --configfile "${base[@]}" "config/validation-phases/$phase.yaml"
  echo "=== $phase rc $? end $(date -u +%FT%TZ)"
  mkdir -p "results/validation-phases/$phase"
  cp -r results/tables "results/validation-phases/$phase/"
done
# The whole experiment: adds NCC and the notebook reports.
snakemake --cores "$cores" --resources gpu="$cores" --keep-going --configfile "${base[@]}"
