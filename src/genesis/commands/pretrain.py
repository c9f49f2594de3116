"""Pretrain a 3D U-Net by restoring transformed cubes (Models Genesis), or resume doing so.

Streams the training cube shards, applies the variant's transformations on the training
device, and writes OUTPUT_DIR/weights.{pt,safetensors,json} (best validation loss),
OUTPUT_DIR/metrics.csv and OUTPUT_DIR/checkpoint.pt (after every epoch; a rerun resumes
from it). With --gpus N > 1 the command re-executes itself under
``torchrun --standalone --nproc_per_node N`` (DDP; --settings batch_size is the global
batch). Each process leases a free GPU (lock files in $GENESIS_GPU_LOCK_DIR) unless
CUDA_VISIBLE_DEVICES is set, and falls back to the CPU when there is none.

A validation shard that is also a training shard (the same file, or one with the same
bytes) is refused. Temporaries that a killed run left beside the outputs are removed
when the command starts.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from genesis.commands._settings import add_settings_argument

HELP = "pretrain a 3D U-Net on cube shards by image restoration (resumable, multi-GPU)"

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train",
        type=Path,
        nargs="+",
        required=True,
        metavar="SHARD.npy",
        help="training cube shards (float16 (n, X, Y, Z) in [0, 1])",
    )
    parser.add_argument(
        "--val",
        type=Path,
        nargs="+",
        required=True,
        metavar="SHARD.npy",
        help="validation cube shards",
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        required=True,
        help="where weights.*, metrics.csv and checkpoint.pt go",
    )
    parser.add_argument(
        "--variant",
        default="all",
        help="which transformations: all (the four combined) or one of "
        "nonlinear, local_shuffle, inpainting, outpainting (ablation)",
    )
    parser.add_argument("--seed", type=int, default=0, help="base seed of every random stream")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch (shared by all local processes)",
    )
    parser.add_argument(
        "--gpus",
        type=int,
        default=None,
        help="processes/GPUs for DDP (default: settings gpus, i.e. 1)",
    )
    parser.add_argument(
        "--gpu-slots",
        type=int,
        default=None,
        help="number of GPU lock slots (default: $GENESIS_GPU_SLOTS or all visible GPUs)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_settings_argument(parser, "pretraining settings (config section `pretrain.settings`)")


def relaunch_argv(args: argparse.Namespace) -> list[str]:
    """The ``genesis ...`` arguments that repeat this invocation in every torchrun process."""
    argv = ["--verbose"] if getattr(args, "verbose", False) else []
    argv += [
        "pretrain",
        "--train",
        *map(str, args.train),
        "--val",
        *map(str, args.val),
        "--output-dir",
        str(args.output_dir),
        "--variant",
        args.variant,
        "--seed",
        str(args.seed),
        "--threads",
        str(args.threads),
        "--settings",
        json.dumps(args.settings, sort_keys=True),
    ]
    if args.gpus is not None:
        argv += ["--gpus", str(args.gpus)]
    if args.gpu_slots is not None:
        argv += ["--gpu-slots", str(args.gpu_slots)]
    if args.no_progress:
        argv.append("--no-progress")
    return argv


def shared_shards(train: list[Path], val: list[Path]) -> list[tuple[Path, Path, str]]:
    """(train, val, how) for each validation shard that is also a training shard: the same
    file (``how`` = "same file") or the same bytes (``how`` = "same sha256 <hex>").
    Only shards of equal size are hashed."""
    from genesis.provenance import file_sha256

    hashes: dict[Path, str] = {}

    def digest(path: Path) -> str:
        if path not in hashes:
            hashes[path] = file_sha256(path)
        return hashes[path]

    shared = []
    for v in val:
        for t in train:
            if not (t.is_file() and v.is_file()):
                continue  # a missing shard is reported, naming it, when shards are opened
            if os.path.samefile(t, v):
                shared.append((t, v, "same file"))
            elif t.stat().st_size == v.stat().st_size and digest(t) == digest(v):
                shared.append((t, v, f"same sha256 {digest(v)[:12]}..."))
    return shared


def output_files(output_dir: Path) -> list[Path]:
    """What ``genesis pretrain`` writes into ``output_dir`` (named here, not imported from
    the modules that write them, which import torch: this runs before the re-exec)."""
    names = (
        "weights.pt",
        "weights.safetensors",
        "weights.json",
        "metrics.csv",
        "checkpoint.pt",
        "checkpoint.pt.prev",
    )
    return [output_dir / name for name in names]


def run(args: argparse.Namespace) -> int:
    from genesis.atomic import remove_stale_temporaries
    from genesis.errors import ConfigError
    from genesis.train.launch import launched_by_torchrun, torchrun_command
    from genesis.train.settings import PretrainSettings

    shared = shared_shards(args.train, args.val)
    if shared:
        train, val, how = shared[0]
        raise ConfigError(
            f"--val {val} is also a training shard ({how} as --train {train}); "
            "validation cubes must come from other scans"
        )
    settings = PretrainSettings.from_mapping(args.settings)
    remove_stale_temporaries(output_files(args.output_dir))
    gpus = settings.gpus if args.gpus is None else args.gpus
    if gpus < 1:
        raise ConfigError(f"--gpus must be at least 1, got {gpus}")
    if gpus > 1 and not launched_by_torchrun():
        command = torchrun_command(gpus, relaunch_argv(args))
        log.info("launching %d processes: %s", gpus, " ".join(command))
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(command[0], command)  # same pid: signals from Snakemake reach torchrun
    from genesis.train.pretrain import pretrain  # imports torch: after the re-exec

    pretrain(
        args.train,
        args.val,
        args.output_dir,
        variant=args.variant,
        seed=args.seed,
        settings=settings,
        threads=args.threads,
        gpu_slots=args.gpu_slots,
        progress=not args.no_progress,
    )
    return 0
