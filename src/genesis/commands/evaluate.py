"""Evaluate a fine-tuned run on its task's test split.

Classification (ncc, your own): ROC AUC over the test cubes (macro one-vs-rest for more
than two classes). Segmentation (lcs, bms, your own): IoU and Dice of whole test volumes,
per class and their mean, segmented by Gaussian-blended sliding windows; the predicted
label maps are also written as RUN_DIR/predictions/<case>.nii.gz on the source scan's
grid and geometry, with the source label values. Writes RUN_DIR/metrics.json (task, kind,
init, run, seed, fraction, n_labelled, metric, value, dice, per_class, n_cases, weights)
and RUN_DIR/per_case.csv (classification: candidate,label,score[_<class>...];
segmentation: case,iou,dice[,iou_<class>,dice_<class>...]).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genesis.commands._settings import add_settings_argument, add_task_device_arguments

HELP = "score a fine-tuned run on the test split (AUC, or IoU/Dice with NIfTI masks)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task", required=True, help="task name: ncc, lcs, bms or your own")
    parser.add_argument(
        "--data", type=Path, required=True, help="prepared task folder, e.g. results/tasks/lcs"
    )
    parser.add_argument(
        "--run-dir",
        type=Path,
        required=True,
        help="fine-tuned run folder holding weights.pt and weights.json",
    )
    add_task_device_arguments(parser)
    add_settings_argument(parser, "evaluation settings (tasks.<task>.evaluate)")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from genesis.settings import from_mapping
    from genesis.tasks.evaluate import EvaluateSettings, evaluate
    from genesis.train.devices import lease_device

    torch.set_num_threads(max(1, args.threads))
    settings = from_mapping(EvaluateSettings, args.settings, f"tasks.{args.task}.evaluate")
    with lease_device(args.gpu_slots, jobs_per_gpu=args.jobs_per_gpu) as device:
        metrics = evaluate(args.task, args.data, args.run_dir, settings, device=device)
    print(
        json.dumps(
            {key: metrics[key] for key in ("task", "init", "run", "metric", "value", "n_cases")},
            sort_keys=True,
        )
    )
    return 0
