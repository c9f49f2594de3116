"""The training loop shared by pretraining and fine-tuning.

A stage (``genesis.train.pretrain``, ``genesis.tasks.finetune``) supplies only what is its
own: the model with its head and the optimiser, the training of one epoch (its batches and
loss, run through ``train_epoch``) and the validation (its loss and metric). ``Trainer``
owns everything else, the same for both stages:

- the epoch loop and its stop rules, checked in this order: early stopping (``patience``
  epochs without a strictly lower validation loss), the ``max_epochs`` cap and a
  wall-clock budget (``genesis.train.schedule.Budget``: the stage says how time counts);
  the reason is kept (``stop_reason``) and saved;
- the plateau schedule: the learning rate is multiplied by ``lr_factor`` after
  ``lr_patience`` epochs without a lower validation loss;
- the divergence guard: a non-finite training or validation loss, or a non-finite learning
  rate, raises ``DivergedError`` before anything of that epoch is written, so the last
  checkpoint is the last good epoch and the diverged weights are never exported;
- the best-state copy: CPU tensors of the epoch with the lowest validation loss;
- the per-epoch table (``Table``: ``metrics.csv``, ``curves.csv``), rewritten atomically
  after every epoch from the rows kept in the checkpoint;
- checkpoints (``genesis.train.checkpoint``): after every epoch, atomically, with model,
  optimiser, schedule, early-stopping and RNG states, so a resumed run ends exactly like
  an uninterrupted one; and the resume check: a checkpoint is resumed only when its
  identity keys and every setting outside ``Run.resumable`` are those of this run, else
  a warning says why and the run starts afresh (overwriting it);
- the step: autocast policy (``StepOptions``, ``amp_dtype``), zero_grad, backward, step,
  and the epoch's mean loss (``BatchMean`` across processes, or ``SampleMean``).

With several processes (DDP) every process runs the loop on the same, all-reduced losses,
so their decisions agree; only the main process writes files.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from genesis.atomic import write_text
from genesis.errors import GenesisError
from genesis.train.checkpoint import load_checkpoint, restore_rng_state, rng_state, save_checkpoint
from genesis.train.distributed import DistContext, all_reduce_sum, barrier
from genesis.train.schedule import Budget, EarlyStopping, no_budget, plateau_schedule

log = logging.getLogger(__name__)

#: Layout version of the checkpoints ``Trainer.save`` writes.
CHECKPOINT_FORMAT = 2
#: Keys of that layout; a checkpoint missing one is not resumed.
CHECKPOINT_KEYS = frozenset(
    {
        "format",
        "identity",
        "settings",
        "epoch",
        "rows",
        "seconds",
        "stop_reason",
        "model",
        "best_model",
        "optimizer",
        "scheduler",
        "early_stop",
        "rng",
    }
)

#: (inputs, targets) of one training batch.
Batch = tuple[Tensor, Tensor]
#: (model outputs, targets) -> scalar loss.
LossFn = Callable[[Tensor, Tensor], Tensor]


class DivergedError(GenesisError):
    """A loss or the learning rate became NaN or infinite: the run stops, and the
    diverged epoch is neither checkpointed nor exported."""


# --------------------------------------------------------------------------------------
# The step: autocast policy, one epoch of updates, the mean loss


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype (None: fp32). ``auto``: bf16 on a CUDA GPU that supports it, fp32
    elsewhere (on the CPU bf16 is slower and less exact); ``bf16`` and ``fp32`` force."""
    if setting == "fp32":
        return None
    if setting == "bf16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class StepOptions:
    """How a step runs on this device: autocast dtype (None: fp32) and whether inputs are
    converted to the channels-last-3d layout (the model's own layout is the stage's)."""

    amp_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self, device: torch.device) -> torch.autocast | nullcontext[None]:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device.type, dtype=self.amp_dtype)

    def prepare(self, x: Tensor) -> Tensor:
        return x.contiguous(memory_format=torch.channels_last_3d) if self.channels_last else x


class LossMean(Protocol):
    """Accumulates the batch losses of an epoch into the epoch's training loss."""

    def add(self, loss: Tensor, n: int) -> None: ...

    def result(self) -> float: ...


class BatchMean:
    """Mean of the batch losses, summed in float64 on the device and over processes (each
    process's loss is the mean over its share of the global batch, as DDP averages)."""

    def __init__(self, device: torch.device, ctx: DistContext | None = None) -> None:
        self.ctx = ctx or DistContext()
        self.total = torch.zeros((), device=device, dtype=torch.float64)
        self.batches = 0

    def add(self, loss: Tensor, n: int) -> None:
        self.total += loss
        self.batches += 1

    def result(self) -> float:
        if self.batches == 0:
            raise RuntimeError("the training loader yielded no batches")
        all_reduce_sum(self.total, self.ctx)
        return float(self.total.item()) / (self.batches * self.ctx.world_size)


class SampleMean:
    """Mean of the batch losses weighted by batch size (one process)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, loss: Tensor, n: int) -> None:
        self.total += float(loss) * n
        self.count += n

    def result(self) -> float:
        if self.count == 0:
            raise RuntimeError("the training batches were empty")
        return self.total / self.count


def train_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    loss_fn: LossFn,
    mean: LossMean,
    *,
    device: torch.device,
    options: StepOptions,
    on_step: Callable[[int], None] | None = None,
) -> float:
    """One epoch of updates on ``batches``; the epoch's training loss (``mean``).

    The forward pass runs under the autocast policy, the loss outside it (loss functions
    cast what they need to float32).
    """
    model.train()
    for step, (inputs, targets) in enumerate(batches):
        inputs = inputs.to(device, non_blocking=True)
        targets = targets.to(device, non_blocking=True)
        with options.autocast(device):
            outputs = model(options.prepare(inputs))
        loss = loss_fn(outputs, targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        mean.add(loss.detach(), len(inputs))
        if on_step is not None:
            on_step(step)
    return mean.result()


# --------------------------------------------------------------------------------------
# Pieces of the loop


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers, whose keys are the release's."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if inner is None:
            return model
        model = inner


def cpu_state(model: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the (unwrapped) model's state: the best-state copy and checkpoints."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous()
        for k, v in unwrap(model).state_dict().items()
    }


def check_finite(
    name: str, epoch: int, train_loss: float, val_loss: float, lr: float, lr_key: str
) -> None:
    """The divergence guard: ``DivergedError`` unless both losses and the rate are finite."""
    if all(math.isfinite(value) for value in (train_loss, val_loss, lr)):
        return
    kept = f" (the checkpoint of epoch {epoch - 1} is kept)" if epoch > 1 else ""
    raise DivergedError(
        f"{name}: diverged at epoch {epoch} (training loss {train_loss:.4g}, validation "
        f"loss {val_loss:.4g}, learning rate {lr:.3g}); stopped before saving or exporting "
        f"its weights{kept}. Lower {lr_key}"
    )


@dataclass(frozen=True)
class Table:
    """A per-epoch CSV: ``columns`` in order; integers as they are, every other value
    with ``digits`` significant digits. Rewritten whole, atomically, after each epoch."""

    columns: tuple[str, ...]
    digits: int

    def render(self, rows: Iterable[Mapping[str, Any]]) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(self.columns)
        for row in rows:
            writer.writerow([self._cell(row[key]) for key in self.columns])
        return buffer.getvalue()

    def write(self, path: str | Path, rows: Iterable[Mapping[str, Any]]) -> None:
        write_text(path, self.render(rows))

    def _cell(self, value: Any) -> str:
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        return f"{value:.{self.digits}g}"


def changed_settings(
    saved: Mapping[str, Any], current: Mapping[str, Any], resumable: frozenset[str]
) -> list[str]:
    """Keys outside ``resumable`` whose value differs (tuples and lists compare equal)."""
    keys = sorted(set(saved) | set(current))
    return [
        key
        for key in keys
        if key not in resumable and _norm(saved.get(key)) != _norm(current.get(key))
    ]


def stale_reason(
    checkpoint: Mapping[str, Any],
    identity: Mapping[str, Any],
    settings: Mapping[str, Any],
    resumable: frozenset[str],
) -> str | None:
    """Why ``checkpoint`` cannot be resumed by this run, or None when it can.

    It belongs to another run when an identity key differs (seed, data, initial weights,
    ...), or was trained otherwise when a setting outside ``resumable`` differs.
    """
    missing = sorted(CHECKPOINT_KEYS - set(checkpoint))
    if checkpoint.get("format") != CHECKPOINT_FORMAT or missing:
        return (
            f"checkpoint layout not recognised (format {checkpoint.get('format')!r}, "
            f"missing {', '.join(missing) or 'nothing'})"
        )
    saved = checkpoint["identity"]
    for key in sorted(set(saved) | set(identity)):
        if _norm(saved.get(key)) != _norm(identity.get(key)):
            return (
                f"checkpoint belongs to another run ({key} {_brief(saved.get(key))}, "
                f"now {_brief(identity.get(key))})"
            )
    changed = changed_settings(checkpoint["settings"], settings, resumable)
    if changed:
        return f"checkpoint was trained with other settings ({', '.join(changed)})"
    return None


def _norm(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_norm(item) for item in value]
    return value


def _brief(value: Any, limit: int = 100) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------------------
# The loop


class LoopSettings(Protocol):
    """The settings the loop reads (``PretrainSettings`` and ``FinetuneSettings`` have them)."""

    @property
    def max_epochs(self) -> int: ...

    @property
    def early_stop_patience(self) -> int: ...

    @property
    def lr_patience(self) -> int: ...

    @property
    def lr_factor(self) -> float: ...


@dataclass(frozen=True)
class Run:
    """Who a run is and where it writes.

    ``identity``: what makes it this run (seed, data, initial weights, ...);
    ``settings``: its settings as a mapping, of which only ``resumable`` ones may change
    between an interrupted run and its resumption; ``lr_key``: the setting a divergence
    message asks to lower; ``labels``: display names of table columns in the log.
    """

    name: str
    checkpoint: Path
    table: Table
    table_path: Path
    identity: Mapping[str, Any]
    settings: Mapping[str, Any]
    resumable: frozenset[str]
    lr_key: str
    labels: Mapping[str, str] = field(default_factory=dict)


#: One epoch of training: epoch number (1-based) -> the epoch's training loss.
TrainFn = Callable[[int], float]
#: Validation: () -> (validation loss, {column: metric}) for the table's other columns.
ValidateFn = Callable[[], tuple[float, Mapping[str, float]]]
#: Called with the epoch number.
EpochHook = Callable[[int], None]


class Trainer:
    """The state of one run (epoch, rows, best weights, schedule, early stopping) and the
    loop that advances it; see the module docs."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: LoopSettings,
        run: Run,
        *,
        ctx: DistContext | None = None,
        device: torch.device | None = None,
    ) -> None:
        self.model, self.optimizer, self.settings, self.run = model, optimizer, settings, run
        self.ctx = ctx or DistContext()
        self.device = device or torch.device("cpu")
        self.scheduler = plateau_schedule(optimizer, settings.lr_factor, settings.lr_patience)
        self.stopper = EarlyStopping(settings.early_stop_patience)
        self.epoch = 0
        self.rows: list[dict[str, Any]] = []
        self.best_state: dict[str, Tensor] | None = None
        self.seconds = 0.0  # training time of the run, over every invocation
        self.stop_reason = ""

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # --- checkpoints ------------------------------------------------------------------

    def resume(self, upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> bool:
        """Continue from the run's checkpoint if it is this run's; True when resumed.

        ``upgrade`` converts a checkpoint of an older layout to this one (stages keep
        their earlier runs resumable). Restores the RNG states too: call it where the
        uninterrupted run would be at that point.
        """
        path = self.run.checkpoint
        state = load_checkpoint(path)
        if state is None:
            return False
        if upgrade is not None:
            state = upgrade(state)
        stale = stale_reason(state, self.run.identity, self.run.settings, self.run.resumable)
        if stale:
            log.warning("%s: %s; starting afresh (it will be overwritten)", path, stale)
            return False
        unwrap(self.model).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stop"])
        self.rows = [dict(row) for row in state["rows"]]
        self.best_state = state["best_model"]
        self.epoch = int(state["epoch"])
        self.seconds = float(state["seconds"])
        self.stop_reason = str(state["stop_reason"])
        restore_rng_state(state["rng"])
        log.info("resuming %s after epoch %d", path, self.epoch)
        return True

    def save(self) -> None:
        """Write the checkpoint (atomically; the previous one is kept as ``.prev``)."""
        save_checkpoint(
            self.run.checkpoint,
            {
                "format": CHECKPOINT_FORMAT,
                "identity": dict(self.run.identity),
                "settings": dict(self.run.settings),
                "epoch": self.epoch,
                "rows": self.rows,
                "seconds": self.seconds,
                "stop_reason": self.stop_reason,
                "model": cpu_state(self.model),
                "best_model": self.best_state,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "early_stop": self.stopper.state_dict(),
                "rng": rng_state(),
            },
        )

    def write_table(self) -> None:
        self.run.table.write(self.run.table_path, self.rows)

    # --- the loop ---------------------------------------------------------------------

    def check_stop(self, budget: Budget = no_budget, last_epoch: float | None = None) -> str:
        """The reason to stop now ("" to go on), also kept as ``stop_reason``."""
        settings = self.settings
        if self.stopper.should_stop:
            reason = (
                f"early stopping: no lower validation loss for "
                f"{settings.early_stop_patience} epochs"
            )
        elif self.epoch >= settings.max_epochs:
            reason = f"max_epochs ({settings.max_epochs}) reached"
        else:
            reason = budget(self.seconds, last_epoch)
        self.stop_reason = reason
        return reason

    def fit(
        self,
        train: TrainFn,
        validate: ValidateFn,
        *,
        budget: Budget = no_budget,
        on_best: EpochHook | None = None,
        on_epoch_end: EpochHook | None = None,
    ) -> str:
        """Run epochs until a stop rule holds (maybe none: a resumed, finished run); the
        stop reason.

        After each epoch the main process calls ``on_best(epoch)`` when the epoch is a new
        best, then rewrites the table and the checkpoint; every process then meets at a
        barrier and calls ``on_epoch_end(epoch)``.
        """
        clock = time.monotonic() - self.seconds
        self.check_stop(budget)
        while not self.stop_reason:
            epoch = self.epoch + 1
            started = time.perf_counter()
            lr = self.lr
            train_loss = train(epoch)
            val_loss, metrics = validate()
            check_finite(self.run.name, epoch, train_loss, val_loss, lr, self.run.lr_key)
            self.scheduler.step(val_loss)
            improved = self.stopper.update(val_loss, epoch)
            if improved:
                self.best_state = cpu_state(self.model)
            seconds = time.perf_counter() - started
            self.epoch = epoch
            self.seconds = time.monotonic() - clock
            values = {
                "epoch": epoch,
                "train_loss": train_loss,
                "val_loss": val_loss,
                **metrics,
                "lr": lr,
                "seconds": seconds,
            }
            self.rows.append({key: values[key] for key in self.run.table.columns})
            self.check_stop(budget, seconds)
            if self.ctx.is_main:
                if improved and on_best is not None:
                    on_best(epoch)
                self.write_table()
                self.save()
                self._log(values, improved)
            barrier(self.ctx, self.device)
            if on_epoch_end is not None:
                on_epoch_end(epoch)
        return self.stop_reason

    def _log(self, values: Mapping[str, Any], improved: bool) -> None:
        labels = self.run.labels
        extra = "".join(
            f", {labels.get(key, key)} {value:.4f}"
            for key, value in values.items()
            if key not in ("epoch", "train_loss", "val_loss", "lr", "seconds")
        )
        log.info(
            "%s epoch %d: train %.4f, val %.4f%s, lr %.3g (%.1f s)%s%s",
            self.run.name,
            values["epoch"],
            values["train_loss"],
            values["val_loss"],
            extra,
            values["lr"],
            values["seconds"],
            " *" if improved else "",
            f"; stopping: {self.stop_reason}" if self.stop_reason else "",
        )
