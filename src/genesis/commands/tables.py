"""Regenerate the paper's target-task table (and the ablation table) from finished runs.

Reads ``finetune/summary.csv`` and the published reference numbers; writes
``target_tasks.{csv,md,tex}`` and ``ablation.{csv,md,tex}`` with mean ± std over runs, n,
Welch's and the paired t-test's p-values against scratch and the published numbers beside
them, all in %, from the runs on all training cases (fraction 1.0). The ablation table is
written even when no variant ran (it then says so), so the workflow's outputs do not depend
on the config. ``--label-efficiency STEM`` also writes ``STEM.{csv,md,tex}``: every
fraction of a label sweep, with paired p-values against scratch. ``--data-label`` names
the data (e.g. "synthetic phantoms") in every title. Each table gets a ``.provenance.json``
sibling; the Markdown and LaTeX versions carry the same record as a footer/comment.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from genesis.commands._settings import settings_argument

HELP = "target-task, ablation and label-efficiency tables with p-values and published numbers"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--summary", type=Path, required=True, help="results/finetune/summary.csv (one row per run)"
    )
    parser.add_argument(
        "--published",
        type=Path,
        required=True,
        help="config/published.csv (published numbers in %%)",
    )
    parser.add_argument(
        "--provenance",
        type=Path,
        required=True,
        help="results/provenance.json from `genesis provenance`",
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="folder for target_tasks.* and ablation.*"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="workflow config: its sha256 is checked against the record and its seeds are listed",
    )
    parser.add_argument(
        "--seeds",
        type=settings_argument,
        default={},
        help='seeds to record, as a JSON object, e.g. \'{"data": 7, "runs": [8, 9]}\'',
    )
    parser.add_argument(
        "--data-label",
        metavar="TEXT",
        help='what the data are, put in every title and the notes, e.g. "synthetic phantoms", '
        '"LUNA16 / MSD" or "own data: spleen CT" (default: no label)',
    )
    parser.add_argument(
        "--label-efficiency",
        type=Path,
        metavar="STEM",
        help="also write the label-efficiency table (every labelled fraction, paired p vs "
        "scratch) as STEM.csv, STEM.md, STEM.tex and STEM.provenance.json, e.g. "
        "results/tables/label_efficiency",
    )


def run(args: argparse.Namespace) -> int:
    from genesis.report.tables import write_tables

    paths = write_tables(
        args.summary,
        args.published,
        args.provenance,
        args.output_dir,
        args.config,
        args.seeds,
        data_label=args.data_label,
    )
    if args.label_efficiency is not None:
        from genesis.report.label_efficiency import write_stage

        paths += write_stage(
            args.summary,
            args.provenance,
            args.label_efficiency,
            args.config,
            args.seeds,
            args.data_label,
        )
    log.info("wrote %s", ", ".join(str(path) for path in paths))
    return 0
