"""Models Genesis pretraining: restore transformed cubes with a 3D U-Net (facts §4).

The pretraining stage of the shared loop (``genesis.train.engine.Trainer``): stream cube
shards, transform them on the training device (``genesis.train.loop``), minimise the MSE
between the sigmoid output and the original cube with SGD. The engine halves the learning
rate on a validation plateau, stops early, guards against divergence and after every epoch
writes ``metrics.csv`` and an atomic checkpoint from which a rerun resumes. The best
weights are exported in the release layout with a provenance sidecar, after every new best
epoch (so a long run always has usable weights) and at the end.

Determinism: on the CPU a resumed run ends with the same weights as an uninterrupted one
(model, optimiser, scheduler, early-stopping and RNG states are all in the checkpoint; data
order and transforms are derived from (seed, epoch, position)). On CUDA the run uses
cuDNN autotuning and non-deterministic kernels for speed, so GPU runs agree only closely.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from genesis.errors import ConfigError, InputError
from genesis.io.tables import PRETRAIN_METRICS_COLUMNS
from genesis.models import UNet3D, save_weights
from genesis.provenance import file_sha256, provenance_record
from genesis.seeding import derive_seed, set_determinism
from genesis.settings import from_mapping, to_mapping
from genesis.train.checkpoint import finish_checkpoint
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
from genesis.train.engine import (
    DivergedError,
    Run,
    StepOptions,
    Table,
    Trainer,
    amp_dtype,
    changed_settings,
    cpu_state,
    unwrap,
)
from genesis.train.loaders import (
    resolve_num_workers,
    train_loader,
    val_loader,
    validation_indices,
)
from genesis.train.loop import Transform, train_epoch, validate
from genesis.train.schedule import TimeBudget
from genesis.train.settings import SECTION, PretrainSettings
from genesis.train.shards import CubeDataset, ShardInfo, check_shards
from genesis.transforms import (
    VARIANTS,
    GenesisTransform,
    TransformSettings,
    settings_for_variant,
)

__all__ = [
    "METRICS",
    "RESUMABLE_CHANGES",
    "DivergedError",
    "PretrainResult",
    "amp_dtype",
    "build_transform",
    "cpu_state",
    "make_optimizer",
    "metrics_csv",
    "pretrain",
    "resume_mismatch",
    "unwrap",
    "write_metrics",
]

log = logging.getLogger(__name__)


#: Settings that may change between a run and its resumption (how long, with what
#: resources); any other difference means the checkpoint belongs to another experiment.
RESUMABLE_CHANGES = frozenset(
    {"max_epochs", "max_minutes", "num_workers", "gpus", "compile", "early_stop_patience"}
)


@dataclass(frozen=True)
class PretrainResult:
    """What a finished (or budget-stopped) run reports."""

    epochs: int
    best_epoch: int
    best_val_loss: float
    identity_loss: float
    stopped_early: bool
    weights: list[Path]
    #: Why training stopped (early stopping, max_epochs, the time budget).
    stop_reason: str = ""


#: ``metrics.csv``: one row per epoch, floats to 8 significant digits.
METRICS = Table(PRETRAIN_METRICS_COLUMNS, digits=8)


def metrics_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    return METRICS.render(rows)


def write_metrics(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite the whole CSV atomically from the history kept in the checkpoint."""
    METRICS.write(path, rows)


def _stamp(path: Path) -> list[int]:
    stat = Path(path).stat()
    return [stat.st_size, stat.st_mtime_ns]


def resume_mismatch(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """Settings/run keys whose change makes a checkpoint belong to another experiment."""
    return changed_settings(saved, current, RESUMABLE_CHANGES)


def make_optimizer(settings: PretrainSettings, params: Any) -> torch.optim.Optimizer:
    if settings.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=settings.lr, momentum=settings.momentum, weight_decay=settings.weight_decay
        )
    return torch.optim.Adam(params, lr=settings.lr, weight_decay=settings.weight_decay)


def build_transform(variant: str, overrides: Mapping[str, Any]) -> Transform:
    """The variant's ``GenesisTransform``, with ``pretrain.settings.transforms`` overrides
    applied.

    The variant alone decides which transformations are on, so ``enabled`` is refused
    here rather than silently replaced.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")
    if "enabled" in overrides:
        raise ConfigError(
            f"{SECTION}.transforms.enabled: choose transformations with the "
            f"variant ({', '.join(VARIANTS)}), not with 'enabled'"
        )
    base = from_mapping(TransformSettings, overrides, f"{SECTION}.transforms")
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
        raise ConfigError(
            f"{SECTION}.batch_size ({settings.batch_size}) must be divisible by "
            f"the number of processes ({ctx.world_size}): it is the global batch"
        )
    local_batch = settings.batch_size // ctx.world_size
    if settings.transform_group and local_batch % settings.transform_group:
        raise ConfigError(
            f"{SECTION}.transform_group ({settings.transform_group}) must divide "
            f"the per-process batch ({local_batch} = batch_size / processes)"
        )
    torch.set_num_threads(max(1, threads // ctx.local_world_size))
    with lease_device(gpu_slots) as device:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # keep every allocation on the leased GPU
        init_process_group(ctx, device)
        try:
            return _Run(
                train, val, Path(output_dir), variant, seed, settings, ctx, device, progress
            ).fit()
        finally:
            shutdown()


class _Run:
    """One pretraining run: the data, model and optimiser the engine's loop trains."""

    def __init__(
        self,
        train: Sequence[str | Path],
        val: Sequence[str | Path],
        output_dir: Path,
        variant: str,
        seed: int,
        settings: PretrainSettings,
        ctx: DistContext,
        device: torch.device,
        progress: bool,
    ) -> None:
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
        channels_last = (
            device.type == "cuda" if settings.channels_last is None else settings.channels_last
        )
        self.options = StepOptions(amp_dtype(settings.amp, device), channels_last)
        memory_format = torch.channels_last_3d if channels_last else torch.preserve_format
        self.model = model.to(device, memory_format=memory_format)
        self.optimizer = make_optimizer(settings, self.model.parameters())
        self.manifests = [info.manifest for info in (*train_infos, *val_infos) if info.manifest]
        self.run_key = {
            "seed": seed,
            "variant": variant,
            "train": [str(info.path) for info in train_infos],
            "val": [str(info.path) for info in val_infos],
            "n_train": len(self.train_set),
            "n_val": len(self.val_set),
            # Re-extracted shards (new modification time or size) make a new experiment:
            # a rerun after Snakemake rebuilt the cubes must not resume on the old ones.
            "shard_stamps": [_stamp(info.path) for info in (*train_infos, *val_infos)],
        }
        self.trainer = Trainer(
            self.model,
            self.optimizer,
            settings,
            Run(
                name="pretrain",
                checkpoint=output_dir / "checkpoint.pt",
                table=METRICS,
                table_path=output_dir / "metrics.csv",
                identity=self.run_key,
                settings=to_mapping(settings),
                resumable=RESUMABLE_CHANGES,
                lr_key=f"{SECTION}.lr",
                labels={"identity_loss": "identity"},
            ),
            ctx=ctx,
            device=device,
        )
        self.trainer.resume(upgrade=_upgrade_checkpoint)

    def _check_cube_shapes(
        self, train_infos: Sequence[ShardInfo], val_infos: Sequence[ShardInfo]
    ) -> None:
        expected = self.settings.cube_size or train_infos[0].cube_shape
        for info in (*train_infos, *val_infos):
            if tuple(info.cube_shape) != tuple(expected):
                raise InputError(
                    info.path,
                    f"cubes are {info.cube_shape}, expected "
                    f"{tuple(expected)} ({SECTION}.cube_size / the training "
                    "shards)",
                )

    def _export(self) -> list[Path]:
        """Write the best weights (release layout + safetensors + provenance sidecar)."""
        trainer = self.trainer
        assert trainer.best_state is not None
        model = UNet3D(width=self.settings.width)
        model.load_state_dict(trainer.best_state)
        last = trainer.rows[-1]
        record = provenance_record(settings=to_mapping(self.settings), seeds={"seed": self.seed})
        record.update(
            {
                "stage": "pretrain",
                "variant": self.variant,
                "data_manifests": {str(p): file_sha256(p) for p in self.manifests},
                "shards": {"train": self.run_key["train"], "val": self.run_key["val"]},
                "best_epoch": trainer.stopper.best_epoch,
                "best_val_loss": trainer.stopper.best,
                "identity_loss": last["identity_loss"],
                "epochs_run": trainer.epoch,
                "device": str(self.device),
                "world_size": self.ctx.world_size,
            }
        )
        return save_weights(
            model, self.output_dir / "weights", provenance=record, epoch=trainer.stopper.best_epoch
        )

    # --- the stage's parts of the loop --------------------------------------------------

    def fit(self) -> PretrainResult:
        settings, ctx, device = self.settings, self.ctx, self.device
        global_batch = settings.batch_size
        available = len(self.train_set) // global_batch
        if available == 0:
            raise InputError(
                self.train_set.shards[0].path,
                f"{len(self.train_set)} training cube(s) in all shards are fewer "
                f"than one batch of {global_batch}",
            )
        steps = min(settings.steps_per_epoch or available, available)
        if settings.steps_per_epoch and settings.steps_per_epoch > available:
            log.warning(
                "%s.steps_per_epoch=%d exceeds one pass over the training cubes; using %d",
                SECTION,
                settings.steps_per_epoch,
                available,
            )
        pin = device.type == "cuda"
        loader = train_loader(
            self.train_set,
            seed=self.seed,
            local_batch=global_batch // ctx.world_size,
            ctx=ctx,
            num_workers=resolve_num_workers(settings.num_workers, self.ctx.local_world_size),
            pin_memory=pin,
        )
        val_batches = val_loader(
            self.val_set,
            validation_indices(len(self.val_set), settings.val_cubes, self.seed),
            batch=settings.val_batch_size or global_batch,
            ctx=ctx,
            num_workers=min(resolve_num_workers(settings.num_workers, ctx.local_world_size), 2),
            pin_memory=pin,
        )
        train_net, eval_net = self._networks()
        budget = TimeBudget(settings.max_minutes)
        if ctx.is_main:
            log.info(
                "pretraining %s on %s: %d train / %d val cubes %s, %d steps of %d per "
                "epoch, %d process(es)",
                self.variant,
                device,
                len(self.train_set),
                len(self.val_set),
                "x".join(map(str, self.train_set.cube_shape)),
                steps,
                global_batch,
                ctx.world_size,
            )

        def train(epoch: int) -> float:
            # The loaders and transform seeds count epochs from 0.
            loader.sampler.set_epoch(epoch - 1)
            with self._progress(epoch, steps) as bar:
                return train_epoch(
                    train_net,
                    loader,
                    self.optimizer,
                    self.transform,
                    epoch=epoch - 1,
                    seed=self.seed,
                    steps=steps,
                    global_batch=global_batch,
                    ctx=ctx,
                    device=device,
                    options=self.options,
                    group=settings.transform_group,
                    on_step=lambda _: bar.update(),
                )

        def validation() -> tuple[float, dict[str, float]]:
            val_loss, identity = validate(
                eval_net,
                val_batches,
                self.transform,
                seed=self.seed,
                ctx=ctx,
                device=device,
                options=self.options,
            )
            return val_loss, {"identity_loss": identity}

        def invocation_budget(run_seconds: float, last_epoch: float | None) -> str:
            """Per invocation: stop before an epoch as long as the last would overrun."""
            if last_epoch is not None and any_process(budget.exhausted(last_epoch), ctx, device):
                return f"another epoch would exceed {SECTION}.max_minutes={settings.max_minutes:g}"
            return ""

        self.trainer.fit(
            train, validation, budget=invocation_budget, on_best=lambda _: self._export()
        )
        return self._finish()

    def _finish(self) -> PretrainResult:
        trainer = self.trainer
        if trainer.best_state is None:
            raise ConfigError(
                f"{SECTION}.max_epochs: no epoch was run, so there are no weights to export"
            )
        weights: list[Path] = []
        identity = float(trainer.rows[-1]["identity_loss"])
        best, best_epoch = trainer.stopper.best, trainer.stopper.best_epoch
        if self.ctx.is_main:
            weights = self._export()
            trainer.write_table()
            finish_checkpoint(trainer.run.checkpoint)  # the spare .prev is not needed now
            log.info("stopping: %s", trainer.stop_reason)
            log.info(
                "best validation restoration loss %.5f at epoch %d; identity baseline "
                "(transformed input vs original) %.5f; ratio %.3f",
                best,
                best_epoch,
                identity,
                best / identity,
            )
        barrier(self.ctx, self.device)
        return PretrainResult(
            trainer.epoch,
            best_epoch,
            best,
            identity,
            trainer.stopper.should_stop,
            weights,
            trainer.stop_reason,
        )

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

    def _progress(self, epoch: int, steps: int) -> Any:
        """A step bar on a terminal only: in a log file (a workflow job) its carriage-return
        updates would bury the epoch lines, which say the same once per epoch."""
        return tqdm(
            total=steps,
            desc=f"epoch {epoch}",
            unit="step",
            file=sys.stderr,
            leave=False,
            mininterval=2.0,
            disable=not (self.progress and self.ctx.is_main and sys.stderr.isatty()),
        )


def _upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the layout before the shared engine (``format`` 1), in today's."""
    if state.get("format") != 1 or not {"run", "metrics"} <= set(state):
        return state
    upgraded = {key: value for key, value in state.items() if key not in ("run", "metrics")}
    upgraded.update(
        format=2, identity=state["run"], rows=state["metrics"], seconds=0.0, stop_reason=""
    )
    return upgraded
