"""Models Genesis pretraining: restore transformed cubes with a 3D U-Net (facts §4).

One readable loop (``pretrain``) around ``genesis.train.loop``: stream cube shards, transform
them on the training device, minimise the MSE between the sigmoid output and the original
cube with SGD, halve the learning rate on a validation plateau, stop early, and after every
epoch write an atomic checkpoint from which a rerun resumes. The best weights are exported
in the release layout with a provenance sidecar; per-epoch metrics go to ``metrics.csv``.

Determinism: on the CPU a resumed run ends with the same weights as an uninterrupted one
(model, optimiser, scheduler, early-stopping and RNG states are all in the checkpoint; data
order and transforms are derived from (seed, epoch, position)). On CUDA the run uses
cuDNN autotuning and non-deterministic kernels for speed, so GPU runs agree only closely.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genesis.atomic import write_text
from genesis.errors import ConfigError, InputError
from genesis.io.tables import PRETRAIN_METRICS_COLUMNS
from genesis.models import UNet3D, save_weights
from genesis.provenance import file_sha256, provenance_record
from genesis.seeding import derive_seed, set_determinism
from genesis.settings import from_mapping, to_mapping
from genesis.train.checkpoint import (
    load_checkpoint,
    restore_rng_state,
    rng_state,
    save_checkpoint,
)
from genesis.train.devices import lease_device
from genesis.train.distributed import (
    DistContext,
    any_process,
    barrier,
    context_from_env,
    convert_sync_batchnorm,
    init_process_group,
    shutdown,
)
from genesis.train.loaders import train_loader, val_loader, validation_indices
from genesis.train.loop import StepOptions, Transform, train_epoch, validate
from genesis.train.schedule import EarlyStopping, TimeBudget
from genesis.train.settings import PretrainSettings
from genesis.train.shards import CubeDataset, ShardInfo, check_shards
from genesis.transforms import (
    VARIANTS,
    GenesisTransform,
    TransformSettings,
    settings_for_variant,
)

log = logging.getLogger(__name__)


#: Settings that may change between a run and its resumption (how long, with what
#: resources); any other difference means the checkpoint belongs to another experiment.
RESUMABLE_CHANGES = frozenset({"max_epochs", "max_minutes", "num_workers", "gpus", "compile",
                               "early_stop_patience"})


@dataclass(frozen=True)
class PretrainResult:
    """What a finished (or budget-stopped) run reports."""
    epochs: int
    best_epoch: int
    best_val_loss: float
    identity_loss: float
    stopped_early: bool
    weights: list[Path]


def metrics_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=PRETRAIN_METRICS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format(row[key]) for key in PRETRAIN_METRICS_COLUMNS})
    return buffer.getvalue()


def _format(value: Any) -> str:
    return f"{value:.8g}" if isinstance(value, float) else str(value)


def write_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite the whole CSV atomically from the history kept in the checkpoint."""
    write_text(path, metrics_csv(rows))


def _stamp(path: Path) -> list[int]:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def resume_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Settings/run keys whose change makes a checkpoint belong to another experiment."""
    keys = sorted(set(saved) | set(current))
    return [key for key in keys
            if key not in RESUMABLE_CHANGES and saved.get(key) != current.get(key)]


def make_optimizer(settings: PretrainSettings, params: Any) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(params, lr=settings.lr, momentum=settings.momentum,
                               weight_decay=settings.weight_decay)
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """``auto``: bf16 autocast on CUDA (where supported), fp32 elsewhere."""
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers, whose keys are the release's."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def cpu_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True).contiguous()
            for k, v in unwrap(model).state_dict().items()}


def build_transform(variant: str, overrides: Mapping[str, Any]) -> Transform:
    """The variant's ``GenesisTransform``, with ``pretrain.transforms`` overrides applied.

    The variant alone decides which transformations are on, so ``enabled`` is refused
    here rather than silently replaced.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    if "enabled" in overrides:
        raise ConfigError("pretrain.transforms.enabled: choose transformations with the "
                          f"variant ({', '.join(VARIANTS)}), not with 'enabled'")
    base = from_mapping(TransformSettings, overrides, "pretrain.transforms")
    return GenesisTransform(settings_for_variant(variant, base))


def pretrain(
    train: Sequence[str | Path],
    val: Sequence[str | Path],
    output_dir: str | Path,
    *,
    variant: str = "all",
    seed: int = 0,
    settings: PretrainSettings | None = None,
    threads: int = 1,
    gpu_slots: int | None = None,
    progress: bool = True,
) -> PretrainResult:
    """Pretrain (or resume pretraining) one variant; see the module docs.

    Runs as one process, or as one rank of a torchrun launch (``WORLD_SIZE`` > 1).
    """
    settings = settings or PretrainSettings()
    ctx = context_from_env()
    if settings.batch_size % ctx.world_size:
        raise ConfigError(f"pretrain.batch_size ({settings.batch_size}) must be divisible by "
                          f"the number of processes ({ctx.world_size}): it is the global batch")
    local_batch = settings.batch_size // ctx.world_size
    if settings.transform_group and local_batch % settings.transform_group:
        raise ConfigError(f"pretrain.transform_group ({settings.transform_group}) must divide "
                          f"the per-process batch ({local_batch} = batch_size / processes)")
    torch.set_num_threads(max(1, threads // ctx.local_world_size))
    with lease_device(gpu_slots) as device:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # keep every allocation on the leased GPU
        init_process_group(ctx, device)
        try:
            return _Run(train, val, Path(output_dir), variant, seed, settings, ctx, device,
                        progress).fit()
        finally:
            shutdown()


class _Run:
    """The state of one pretraining run; ``fit`` is the loop."""
    def __init__(self, train: Sequence[str | Path], val: Sequence[str | Path], output_dir: Path,
                 variant: str, seed: int, settings: PretrainSettings, ctx: DistContext,
                 device: torch.device, progress: bool) -> None:
        self.settings, self.ctx, self.device = settings, ctx, device
        self.output_dir, self.variant, self.seed = output_dir, variant, seed
        self.progress = progress
        train_infos, val_infos = check_shards(train, "train"), check_shards(val, "val")
        self.train_set, self.val_set = CubeDataset(train_infos), CubeDataset(val_infos)
        self._check_cube_shapes(train_infos, val_infos)
        self.transform = build_transform(variant, settings.transforms)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: autotune once, run fast
        else:
            set_determinism(seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "pretrain", "init"))
            model = UNet3D(width=settings.width)
        if ctx.enabled and settings.sync_batchnorm:
            model = convert_sync_batchnorm(model, device)
        channels_last = device.type == "cuda" if settings.channels_last is None \
            else settings.channels_last
        self.options = StepOptions(amp_dtype(settings.amp, device), channels_last)
        memory_format = torch.channels_last_3d if channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.optimizer = make_optimizer(settings, self.model.parameters())
        self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            self.optimizer, mode="min", factor=settings.lr_factor, patience=settings.lr_patience)
        self.stopper = EarlyStopping(settings.early_stop_patience)
        self.manifests = [info.manifest for info in (*train_infos, *val_infos) if info.manifest]
        self.run_key = {
            "seed": seed, "variant": variant,
            "train": [str(info.path) for info in train_infos],
            "val": [str(info.path) for info in val_infos],
            "n_train": len(self.train_set), "n_val": len(self.val_set),
            # Re-extracted shards (new modification time or size) make a new experiment:
            # a rerun after Snakemake rebuilt the cubes must not resume on the old ones.
            "shard_stamps": [_stamp(info.path) for info in (*train_infos, *val_infos)],
        }
        self.epoch = 0
        self.rows: list[dict[str, Any]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.checkpoint_path = output_dir / "checkpoint.pt"
        self._resume()

    def _check_cube_shapes(self, train_infos: Sequence[ShardInfo],
                           val_infos: Sequence[ShardInfo]) -> None:
        expected = self.settings.cube_size or train_infos[0].cube_shape
        for info in (*train_infos, *val_infos):
            if tuple(info.cube_shape) != tuple(expected):
                raise InputError(info.path, f"cubes are {info.cube_shape}, expected "
                                 f"{tuple(expected)} (pretrain.cube_size / the training shards)")

    # --- checkpoints ------------------------------------------------------------------

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        if state is None:
            return
        changed = resume_mismatch({**state.get("settings", {}), **state.get("run", {})},
                                  {**to_mapping(self.settings), **self.run_key})
        if changed:
            log.warning("%s was written with different %s; starting afresh (it will be "
                        "overwritten)", self.checkpoint_path, ", ".join(changed))
            return
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stop"])
        self.rows = list(state["metrics"])
        self.best_state = state["best_model"]
        self.epoch = int(state["epoch"])
        restore_rng_state(state["rng"])
        log.info("resuming from %s after epoch %d", self.checkpoint_path, self.epoch)

    def _save_checkpoint(self) -> None:
        save_checkpoint(self.checkpoint_path, {
            "format": 1,
            "epoch": self.epoch,
            "model": cpu_state(self.model),
            "best_model": self.best_state,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stop": self.stopper.state_dict(),
            "metrics": self.rows,
            "rng": rng_state(),
            "settings": to_mapping(self.settings),
            "run": self.run_key,
        })

    def _export(self) -> list[Path]:
        """Write the best weights (release layout + safetensors + provenance sidecar)."""
        assert self.best_state is not None
        model = UNet3D(width=self.settings.width)
        model.load_state_dict(self.best_state)
        last = self.rows[-1]
        record = provenance_record(settings=to_mapping(self.settings), seeds={"seed": self.seed})
        record.update({
            "stage": "pretrain", "variant": self.variant,
            "data_manifests": {str(p): file_sha256(p) for p in self.manifests},
            "shards": {"train": self.run_key["train"], "val": self.run_key["val"]},
            "best_epoch": self.stopper.best_epoch, "best_val_loss": self.stopper.best,
            "identity_loss": last["identity_loss"], "epochs_run": self.epoch,
            "device": str(self.device), "world_size": self.ctx.world_size,
        })
        return save_weights(model, self.output_dir / "weights", provenance=record,
                            epoch=self.stopper.best_epoch)

    # --- the loop ---------------------------------------------------------------------

    def fit(self) -> PretrainResult:
        settings, ctx, device = self.settings, self.ctx, self.device
        global_batch = settings.batch_size
        available = len(self.train_set) // global_batch
        if available == 0:
            raise InputError(self.train_set.shards[0].path,
                             f"{len(self.train_set)} training cube(s) in all shards are fewer "
                             f"than one batch of {global_batch}")
        steps = min(settings.steps_per_epoch or available, available)
        if settings.steps_per_epoch and settings.steps_per_epoch > available:
            log.warning("pretrain.steps_per_epoch=%d exceeds one pass over the training "
                        "cubes; using %d", settings.steps_per_epoch, available)
        pin = device.type == "cuda"
        loader = train_loader(self.train_set, seed=self.seed,
                              local_batch=global_batch // ctx.world_size, ctx=ctx,
                              num_workers=settings.num_workers, pin_memory=pin)
        val_batches = val_loader(
            self.val_set, validation_indices(len(self.val_set), settings.val_cubes, self.seed),
            batch=settings.val_batch_size or global_batch, ctx=ctx,
            num_workers=min(settings.num_workers, 2), pin_memory=pin)
        train_net, eval_net = self._networks()
        budget = TimeBudget(settings.max_minutes)
        if ctx.is_main:
            log.info("pretraining %s on %s: %d train / %d val cubes %s, %d steps of %d per "
                     "epoch, %d process(es)", self.variant, device, len(self.train_set),
                     len(self.val_set), "x".join(map(str, self.train_set.cube_shape)),
                     steps, global_batch, ctx.world_size)
        while self.epoch < settings.max_epochs and not self.stopper.should_stop:
            started = time.perf_counter()
            loader.sampler.set_epoch(self.epoch)
            lr = float(self.optimizer.param_groups[0]["lr"])
            with self._progress(steps) as bar:
                train_loss = train_epoch(
                    train_net, loader, self.optimizer, self.transform, epoch=self.epoch,
                    seed=self.seed, steps=steps, global_batch=global_batch, ctx=ctx,
                    device=device, options=self.options, group=settings.transform_group,
                    on_step=lambda _: bar.update())
            val_loss, identity = validate(eval_net, val_batches, self.transform,
                                          seed=self.seed, ctx=ctx, device=device,
                                          options=self.options)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                raise ConfigError(f"pretrain.lr: training diverged at epoch {self.epoch + 1} "
                                  f"(train loss {train_loss}, val loss {val_loss}); lower lr")
            self.scheduler.step(val_loss)
            self.epoch += 1
            improved = self.stopper.update(val_loss, self.epoch)
            if improved:
                self.best_state = cpu_state(self.model)
            seconds = time.perf_counter() - started
            self.rows.append({"epoch": self.epoch, "train_loss": train_loss,
                              "val_loss": val_loss, "identity_loss": identity, "lr": lr,
                              "seconds": seconds})
            if ctx.is_main:
                if improved:
                    self._export()
                write_metrics(self.output_dir / "metrics.csv", self.rows)
                self._save_checkpoint()
                log.info("epoch %d: train %.5f, val %.5f (identity %.5f), lr %.3g, %.1f s%s",
                         self.epoch, train_loss, val_loss, identity, lr, seconds,
                         " *" if improved else "")
            barrier(ctx, device)
            more = self.epoch < settings.max_epochs and not self.stopper.should_stop
            if more and any_process(budget.exhausted(seconds), ctx, device):
                log.info("stopping: another epoch would exceed pretrain.max_minutes=%g",
                         settings.max_minutes)
                break
        return self._finish()

    def _finish(self) -> PretrainResult:
        if self.best_state is None:
            raise ConfigError("pretrain.max_epochs: no epoch was run, so there are no "
                              "weights to export")
        weights: list[Path] = []
        identity = float(self.rows[-1]["identity_loss"])
        if self.ctx.is_main:
            weights = self._export()
            write_metrics(self.output_dir / "metrics.csv", self.rows)
            if self.stopper.should_stop:
                log.info("early stopping: no improvement for %d epochs", self.stopper.bad_epochs)
            log.info("best validation restoration loss %.5f at epoch %d; identity baseline "
                     "(transformed input vs original) %.5f; ratio %.3f", self.stopper.best,
                     self.stopper.best_epoch, identity, self.stopper.best / identity)
        barrier(self.ctx, self.device)
        return PretrainResult(self.epoch, self.stopper.best_epoch, self.stopper.best, identity,
                              self.stopper.should_stop, weights)

    def _networks(self) -> tuple[nn.Module, nn.Module]:
        """The module to train (DDP-wrapped, compiled) and the one to validate."""
        train_net: nn.Module = self.model
        if self.ctx.enabled:
            ids = [self.device.index] if self.device.type == "cuda" else None
            train_net = DistributedDataParallel(self.model, device_ids=ids)
        eval_net: nn.Module = self.model
        if self.settings.compile:
            train_net = torch.compile(train_net)
            eval_net = torch.compile(self.model)
        return train_net, eval_net

    def _progress(self, steps: int) -> Any:
        return tqdm(total=steps, desc=f"epoch {self.epoch + 1}", unit="step", file=sys.stderr,
                    leave=False, mininterval=2.0,
                    disable=not (self.progress and self.ctx.is_main))
