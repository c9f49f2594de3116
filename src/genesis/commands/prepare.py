"""Prepare a target task's data: NCC candidate cubes, or LCS/BMS normalised volumes.

Writes OUTPUT_DIR/split.csv (the case assignment; pass a versioned copy back with
--split-file to pin it), OUTPUT_DIR/prepare.json (counts, skipped cases with reasons,
settings, provenance) and the prepared arrays that fine-tuning and evaluation read through
genesis.tasks.prepared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "prepare target-task data (ncc cubes, lcs/bms volumes) and its split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task", choices=("ncc", "lcs", "bms"), help="target task")
    parser.add_argument("--data", type=Path, required=True,
                        help="ncc: LUNA16 folder (subset*/, candidates_V2.csv) or its parent; "
                        "lcs: MSD Task03_Liver or LiTS folder; bms: MSD Task01_BrainTumour "
                        "or BraTS 2018 folder")
    parser.add_argument("--output-dir", type=Path, required=True,
                        help="task folder, e.g. results/tasks/ncc")
    parser.add_argument("--seed", type=int, default=0,
                        help="base seed (NCC negative sampling, BMS fold shuffle)")
    parser.add_argument("--split-file", type=Path, default=None,
                        help="pinned split CSV (e.g. config/splits/ncc.csv); used and checked "
                        "when it exists, otherwise the split is computed")
    add_settings_argument(parser, "preparation settings (tasks.<task>.prepare)")


def run(args: argparse.Namespace) -> int:
    from genesis.settings import from_mapping

    if args.task == "ncc":
        from genesis.tasks.prepare_ncc import NccSettings as Settings
        from genesis.tasks.prepare_ncc import prepare_ncc as prepare
    elif args.task == "lcs":
        from genesis.tasks.prepare_lcs import LcsSettings as Settings
        from genesis.tasks.prepare_lcs import prepare_lcs as prepare
    else:
        from genesis.tasks.prepare_bms import BmsSettings as Settings
        from genesis.tasks.prepare_bms import prepare_bms as prepare
    settings = from_mapping(Settings, args.settings, f"tasks.{args.task}.prepare")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = prepare(args.data, args.output_dir, settings, args.seed, args.split_file)
    print(json.dumps({"task": args.task, "counts": summary["counts"],
                      "skipped": summary["n_skipped"]}, sort_keys=True))
    return 0
