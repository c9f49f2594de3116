"""Regenerate the paper's target-task table (and the ablation table) from finished runs.

Reads ``finetune/summary.csv`` and the published reference numbers; writes
``target_tasks.{csv,md,tex}`` and ``ablation.{csv,md,tex}`` with mean ± std over runs, n,
Welch's p-value against scratch and the published numbers beside them, all in %. The
ablation table is written even when no variant ran (it then says so), so the workflow's
outputs do not depend on the config. Each table gets a ``.provenance.json`` sibling; the
Markdown and LaTeX versions carry the same record as a footer/comment.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genesis.commands._settings import settings_argument

HELP = "target-task and ablation tables with p-values and published numbers"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--summary", type=Path, required=True,
                        help="results/finetune/summary.csv (one row per run)")
    parser.add_argument("--published", type=Path, required=True,
                        help="config/published.csv (published numbers in %%)")
    parser.add_argument("--provenance", type=Path, required=True,
                        help="results/provenance.json from `genesis provenance`")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="folder for target_tasks.* and ablation.*")
    parser.add_argument("--config", type=Path,
                        help="workflow config: its sha256 is checked against the record and "
                        "its seeds are listed")
    parser.add_argument("--seeds", type=settings_argument, default={},
                        help='seeds to record, as a JSON object, e.g. \'{"data": 7, "runs": '
                        '[8, 9]}\'')


def run(args: argparse.Namespace) -> int:
    from genesis.report.tables import write_tables

    paths = write_tables(args.summary, args.published, args.provenance, args.output_dir,
                         args.config, args.seeds)
    log.info("wrote %s", ", ".join(str(path) for path in paths))
    return 0
