"""Collect the metrics.json of every fine-tuning run into one summary CSV
(task, init, run, seed, metric, value, dice), one row per run, sorted."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = "collect every run's metrics.json into results/finetune/summary.csv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--metrics", type=Path, nargs="+", required=True, help="metrics.json files, one per run"
    )
    parser.add_argument("--output", type=Path, required=True, help="summary CSV to write")


def run(args: argparse.Namespace) -> int:
    import logging

    from genesis.tasks.aggregate import write_summary

    rows = write_summary(args.metrics, args.output)
    logging.getLogger(__name__).info("wrote %d run(s) to %s", len(rows), args.output)
    return 0
