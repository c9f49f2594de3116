"""Fine-tune a target task (the paper's ncc, lcs, bms, or your own, prepared by
`genesis prepare`) from scratch, from this workflow's pretraining (genesis,
genesis-<variant>) or from released weights, or resume doing so.

Writes OUTPUT_DIR/weights.{pt,safetensors,json} (best validation epoch; the JSON records
task, init, seed, settings and provenance), OUTPUT_DIR/curves.csv (epoch, train_loss,
val_loss, val_metric, lr) and OUTPUT_DIR/checkpoint.pt after every epoch, from which a
rerun resumes. Pretrained weights must fit the model exactly (binary segmentation: the
whole U-Net; more classes: all but the output head; classification: the encoder);
otherwise every mismatched key is listed. Released weights run with the release's
batch-statistics batch norm unless the settings say batch_stats. --label-fraction trains
on a nested, seeded subset of the training cases, the same for every --init of one --seed.
A loss that turns NaN or infinite ends the run with exit 2 and writes no weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from genesis.commands._settings import add_settings_argument, add_task_device_arguments

HELP = "fine-tune a target task from scratch or pretrained weights (resumable)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--task",
        required=True,
        help="task name: ncc, lcs, bms or your own (its kind and classes "
        "come from --data's prepare.json)",
    )
    parser.add_argument(
        "--data", type=Path, required=True, help="prepared task folder, e.g. results/tasks/lcs"
    )
    parser.add_argument(
        "--init", default="scratch", help="scratch, genesis, genesis-<variant> or released"
    )
    parser.add_argument(
        "--weights",
        type=Path,
        default=None,
        help="weights for genesis*/released (weights.pt, .safetensors or Genesis_Chest_CT.pt)",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="run folder, e.g. results/finetune/lcs/genesis/run1",
    )
    parser.add_argument(
        "--seed",
        type=int,
        required=True,
        help="seed of this run (weights init, batches, augmentation)",
    )
    parser.add_argument(
        "--run",
        type=int,
        default=None,
        help="run number recorded in the results (default: k of a run<k> output folder)",
    )
    parser.add_argument(
        "--label-fraction",
        type=float,
        default=1.0,
        help="share of the training cases to learn from, in (0, 1]",
    )
    add_task_device_arguments(parser)
    add_settings_argument(parser, "fine-tuning settings (tasks.<task>.finetune)")


def run(args: argparse.Namespace) -> int:
    import json

    import torch

    from genesis.tasks.finetune import Init, finetune, resolve_settings, run_number
    from genesis.tasks.kinds import task_info
    from genesis.train.devices import lease_device

    torch.set_num_threads(max(1, args.threads))
    settings = resolve_settings(args.task, args.settings, task_info(args.data).kind)
    init = Init(args.init, args.weights)
    number = args.run if args.run is not None else run_number(args.output_dir)
    with lease_device(args.gpu_slots, jobs_per_gpu=args.jobs_per_gpu) as device:
        result = finetune(
            args.task,
            args.data,
            args.output_dir,
            init,
            args.seed,
            settings,
            run=number,
            label_fraction=args.label_fraction,
            device=device,
        )
    print(
        json.dumps(
            {
                "task": args.task,
                "init": args.init,
                "run": number,
                "best_epoch": result.best_epoch,
                "epochs": len(result.curves),
                "stop_reason": result.stop_reason,
            },
            sort_keys=True,
        )
    )
    return 0
