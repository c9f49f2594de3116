"""Prepare a target task's data and its split: the paper's NCC cubes or LCS/BMS volumes,
or a user's own classification or segmentation task.

Examples:

    genesis prepare ncc --data data/luna16 --output-dir results/tasks/ncc
    genesis prepare spleen --kind segmentation --data /data/Task09_Spleen \
        --output-dir results/tasks/spleen --settings '{"cube_size": [64, 64, 32]}'
    genesis prepare nodules --kind classification --data nodules.csv \
        --output-dir results/tasks/nodules

A user task's --data is an MSD-layout folder (dataset.json, imagesTr/, labelsTr/) or a CSV
of image,label[,split] (segmentation); a CSV of path,x,y,z,label[,split] (world mm, LPS)
or path,label[,split] (classification). Writes OUTPUT_DIR/split.csv (the case assignment;
pass a versioned copy back with --split-file to pin it), OUTPUT_DIR/prepare.json (kind,
classes, counts, skipped cases with reasons, settings, provenance) and the prepared arrays
that fine-tuning and evaluation read through genesis.tasks.prepared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from genesis.commands._settings import add_settings_argument

HELP = "prepare target-task data (paper tasks or your own) and its split"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument(
        "task",
        nargs="?",
        default=None,
        help="task name: ncc, lcs, bms (the paper's) or your own (default: "
        "the output folder's name)",
    )
    parser.add_argument(
        "--kind",
        choices=("classification", "segmentation"),
        default=None,
        help="kind of a user task (ncc/lcs/bms have theirs built in)",
    )
    parser.add_argument(
        "--data",
        type=Path,
        required=True,
        help="ncc: LUNA16 folder; lcs: MSD Task03_Liver or LiTS folder; bms: "
        "MSD Task01_BrainTumour or BraTS 2018 folder; a user task: an "
        "MSD-layout folder or a CSV (see above)",
    )
    parser.add_argument(
        "--output-dir", type=Path, required=True, help="task folder, e.g. results/tasks/ncc"
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=0,
        help="base seed (NCC negative sampling, BMS fold shuffle, seeded splits of user tasks)",
    )
    parser.add_argument(
        "--split-file",
        type=Path,
        default=None,
        help="pinned split CSV (e.g. config/splits/ncc.csv); used and checked "
        "when it exists, otherwise the split is computed",
    )
    add_settings_argument(parser, "preparation settings (tasks.<task>.prepare)")


def run(args: argparse.Namespace) -> int:
    from genesis.errors import ConfigError
    from genesis.tasks.kinds import check_kind, check_name, preset_kind

    task = args.task or args.output_dir.name
    check_name(task)
    builtin = preset_kind(task)
    if builtin is not None and args.kind not in (None, builtin):
        raise ConfigError(f"--kind {args.kind}: {task} is a built-in {builtin} task")
    if builtin is None and args.kind is None:
        raise ConfigError(
            f"{task} is not a built-in task (ncc, lcs, bms): give its --kind "
            "(classification or segmentation)"
        )
    kind = check_kind(builtin or args.kind, "--kind")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    summary = prepare_task(
        task, kind, args.data, args.output_dir, args.settings, args.seed, args.split_file
    )
    print(
        json.dumps(
            {
                "task": task,
                "kind": kind,
                "counts": summary["counts"],
                "skipped": summary["n_skipped"],
            },
            sort_keys=True,
        )
    )
    return 0


def prepare_task(
    task: str,
    kind: str,
    data: Path,
    output_dir: Path,
    settings: dict[str, Any],
    seed: int,
    split_file: Path | None,
) -> dict[str, Any]:
    """Dispatch to the preset's or the kind's preparation, settings checked by section."""
    from genesis.settings import from_mapping
    from genesis.tasks.kinds import PRESETS, preset_preparation

    section = f"tasks.{task}.prepare"
    if task in PRESETS:
        settings_class, prepare = preset_preparation(task)
        parsed = from_mapping(settings_class, settings, section)
        return prepare(data, output_dir, parsed, seed, split_file)  # type: ignore[operator]
    if kind == "segmentation":
        from genesis.tasks.prepare_segmentation import (
            SegmentationSettings,
            prepare_segmentation,
        )

        parsed = _settings(SegmentationSettings, settings, section)
        return prepare_segmentation(task, data, output_dir, parsed, seed, split_file)
    from genesis.tasks.prepare_classification import (
        ClassificationSettings,
        prepare_classification,
    )

    parsed = _settings(ClassificationSettings, settings, section)
    return prepare_classification(data, output_dir, parsed, seed, split_file, section=section)


def _settings(cls: type, settings: dict[str, Any], section: str) -> Any:
    """Parse with the task's own section name in every error message."""
    from genesis.errors import ConfigError
    from genesis.settings import from_mapping

    try:
        return from_mapping(cls, settings, section)
    except ConfigError as error:
        raise ConfigError(str(error).replace("tasks.<task>.prepare", section)) from None
