"""Print the reproducibility record (git commit, package versions, hardware) as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genesis.commands._settings import settings_argument

HELP = "print or write the reproducibility record (commit, versions, hardware)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="config file whose hash is recorded")
    parser.add_argument(
        "--resolved-config",
        type=settings_argument,
        help="the resolved workflow config as JSON (what Snakemake passes); its hash and "
        "content are recorded",
    )
    parser.add_argument("--output", type=Path, help="write JSON here instead of stdout")


def run(args: argparse.Namespace) -> int:
    from genesis.atomic import write_json
    from genesis.provenance import provenance_record, settings_hash

    record = provenance_record(config_path=args.config)
    if args.resolved_config is not None:
        record["config_hash"] = settings_hash(args.resolved_config)
        record["config"] = args.resolved_config
    if args.output:
        write_json(args.output, record)
    else:
        print(json.dumps(record, indent=2, sort_keys=True))
    return 0
