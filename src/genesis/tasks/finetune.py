"""Fine-tune a target task (a classification or segmentation kind) from scratch or from
pretrained weights: the fine-tuning stage of the shared training loop.

One plain training loop for every task (facts §5), ``genesis.train.engine.Trainer``, the
same as pretraining's: the learning rate halved when the validation loss stops improving,
early stopping, the weights of the best validation epoch kept, a divergence guard (a
non-finite loss ends the run with ``DivergedError`` and writes no weights), per-epoch
``curves.csv`` and a checkpoint after every epoch from which an interrupted run continues
exactly where it stopped. This module supplies the stage's own parts: Adam, the paper's
loss (Dice for segmentation, BCE for classification; with more than two classes Dice +
cross-entropy and cross-entropy, ``genesis.tasks.losses``) and the validation metric
(AUC, IoU), and exports the best weights with their provenance.

What the task is (kind, classes) is read from the prepared folder's ``prepare.json``
(``genesis.tasks.kinds.task_info``); the task's name only picks the paper's defaults for
NCC, LCS and BMS. The other parts live in their own modules and are re-exported here:

- ``genesis.tasks.finetune_settings``: ``FinetuneSettings``, the paper's defaults per
  task (``TASK_DEFAULTS``) and per kind (``KIND_DEFAULTS``), ``resolve_settings``;
- ``genesis.tasks.finetune_data``: the training batches and fixed validation inputs of
  each kind, on a nested, seeded ``label_fraction`` subset of the training cases;
- ``genesis.tasks.finetune_model``: ``Init`` (scratch, genesis, released,
  released_keras), ``build_model`` and ``initialise`` (strict loading of the initial
  weights).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genesis.errors import InputError
from genesis.io.tables import FINETUNE_CURVE_COLUMNS
from genesis.seeding import derive_seed, set_determinism
from genesis.settings import to_mapping
from genesis.tasks.finetune_data import (
    ClassificationData,
    LabelledSubset,
    NccData,
    SegmentationData,
    load_task_data,
    segmentation_cube_size,
)
from genesis.tasks.finetune_model import Init, build_model, initialise, memory_format
from genesis.tasks.finetune_settings import (
    KIND_DEFAULTS,
    TASK_DEFAULTS,
    FinetuneSettings,
    check_cube_size,
    resolve_settings,
)
from genesis.tasks.kinds import TaskInfo, check_name, preset_kind, task_info
from genesis.tasks.label_subsets import check_fraction
from genesis.tasks.losses import build_loss
from genesis.train.engine import (
    DivergedError,
    Run,
    SampleMean,
    StepOptions,
    Table,
    Trainer,
    amp_dtype,
    train_epoch,
)
from genesis.train.schedule import run_budget

__all__ = [
    "CHECKPOINT",
    "CURVES",
    "CURVES_TABLE",
    "KIND_DEFAULTS",
    "RESUMABLE_CHANGES",
    "TASK_DEFAULTS",
    "WEIGHTS_STEM",
    "ClassificationData",
    "DivergedError",
    "FinetuneResult",
    "FinetuneSettings",
    "Init",
    "LabelledSubset",
    "NccData",
    "SegmentationData",
    "build_model",
    "check_cube_size",
    "finetune",
    "initialise",
    "load_task_data",
    "memory_format",
    "resolve_settings",
    "run_number",
    "segmentation_cube_size",
    "write_curves",
]

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.pt"
CURVES = "curves.csv"
WEIGHTS_STEM = "weights"
#: ``curves.csv``: one row per epoch, numbers to 6 significant digits.
CURVES_TABLE = Table(FINETUNE_CURVE_COLUMNS, digits=6)
#: Settings that may change between an interrupted run and its resume (budget, not model).
RESUMABLE_CHANGES: frozenset[str] = frozenset({"max_epochs", "max_minutes"})
#: What makes a checkpoint this run's, besides the settings.
IDENTITY_KEYS = ("task", "init", "seed", "label_fraction", "init_weights", "init_weights_sha256")


@dataclass(frozen=True)
class FinetuneResult:
    """What a finished run produced."""

    weights: list[Path]
    curves: list[dict[str, float]]
    best_epoch: int
    stop_reason: str


def finetune(
    task: str,
    data_dir: str | Path,
    output_dir: str | Path,
    init: Init,
    seed: int,
    settings: FinetuneSettings,
    *,
    run: int | None = None,
    label_fraction: float = 1.0,
    device: torch.device | str = "cpu",
    on_epoch_end: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Train (or resume) one run; write checkpoint, curves and best weights to output_dir.

    ``label_fraction`` < 1 trains on that share of the training cases (nested subsets,
    chosen from ``seed``: the same for every init). ``on_epoch_end(epoch)`` is called after
    each epoch's checkpoint (tests interrupt training there).

    Raises:
        DivergedError: a training or validation loss was NaN or infinite; the
            checkpoint of the last good epoch is kept and no weights are written.
    """
    from genesis.provenance import file_sha256

    check_name(task)
    label_fraction = check_fraction(label_fraction, "--label-fraction")
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    info = task_info(data_dir)
    expected_kind = preset_kind(task)
    if expected_kind is not None and expected_kind != info.kind:
        raise InputError(data_dir, f"holds a {info.kind} task, but {task} is {expected_kind}")
    device = torch.device(device)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings_map = to_mapping(settings)
    data = load_task_data(task, info, data_dir, settings, label_fraction, seed)
    subset = data.subset
    if label_fraction < 1:
        log.info(
            "%s: labelled subset %g -> %d of %d training cases",
            task,
            label_fraction,
            subset.n_labelled,
            subset.n_total,
        )
    batch_stats = init.batch_stats(settings)
    set_determinism(derive_seed(seed, "finetune", task, "init"))
    model = build_model(info, settings, batch_stats, keras=init.keras)
    init_record = initialise(model, info, init, settings.reset_head)
    model.to(device, memory_format=memory_format(settings.channels_last))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    # The weights' content, not just their path: re-pretrained weights make a new run.
    identity = {
        "task": task,
        "init": init.name,
        "seed": seed,
        "label_fraction": label_fraction,
        "init_weights": str(init.weights) if init.weights else None,
        "init_weights_sha256": file_sha256(init.weights) if init.weights else None,
    }
    metric = "iou" if info.kind == "segmentation" else "auc"
    trainer = Trainer(
        model,
        optimizer,
        settings,
        Run(
            name=task,
            checkpoint=output_dir / CHECKPOINT,
            table=CURVES_TABLE,
            table_path=output_dir / CURVES,
            identity=identity,
            settings=settings_map,
            resumable=RESUMABLE_CHANGES,
            lr_key=f"tasks.{task}.finetune.lr",
            labels={"val_metric": f"val {metric}"},
        ),
        device=device,
    )
    loss_fn = build_loss(info.kind, info.n_classes)
    trainer.resume(upgrade=_upgrade_checkpoint)
    steps = settings.steps_per_epoch or max(1, math.ceil(data.epoch_size() / settings.batch_size))
    # Inputs go in as they come; the first convolution adopts the model's memory format.
    options = StepOptions(amp_dtype("auto", device))

    def train(epoch: int) -> float:
        epoch_seed = derive_seed(seed, "finetune", task, "epoch", epoch)
        batches = data.batches(epoch_seed, steps, settings.batch_size)
        return train_epoch(
            model, batches, optimizer, loss_fn, SampleMean(), device=device, options=options
        )

    def validation() -> tuple[float, dict[str, float]]:
        loss, value = _validate(
            model, loss_fn, info, *data.validation(), settings.batch_size, device, options
        )
        return loss, {"val_metric": value}

    trainer.fit(
        train, validation, budget=run_budget(settings.max_minutes), on_epoch_end=on_epoch_end
    )
    # Outputs are rewritten even for a run resumed as finished: Snakemake deletes a job's
    # outputs before it runs, and the checkpoint alone must be enough to restore them.
    trainer.write_table()
    assert trainer.best_state is not None  # at least one epoch ran (a fresh run trains)
    model.load_state_dict(trainer.best_state)
    best_epoch = trainer.stopper.best_epoch
    record = {
        "stage": "finetune",
        "task": task,
        "kind": info.kind,
        "init": init.name,
        "seed": seed,
        "run": run,
        **subset.record(),
        "classes": list(info.classes),
        "class_names": list(info.class_names),
        "settings": settings_map,
        "cube_size": list(data.cube_size),
        "batch_stats": batch_stats,
        "init_weights": init_record,
        "best_epoch": best_epoch,
        "best_val_loss": trainer.stopper.best,
        "epochs": trainer.epoch,
        "stop_reason": trainer.stop_reason,
        "seconds": round(trainer.seconds, 2),
        "data": str(data_dir),
    }
    weights = _save_best(model, output_dir, record, settings_map, seed, data_dir, best_epoch)
    from genesis.train.checkpoint import finish_checkpoint

    finish_checkpoint(output_dir / CHECKPOINT)  # the spare .prev is not needed any more
    return FinetuneResult(weights, list(trainer.rows), best_epoch, trainer.stop_reason)


def _validate(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    info: TaskInfo,
    inputs: np.ndarray,
    targets: np.ndarray,
    batch_size: int,
    device: torch.device,
    options: StepOptions,
) -> tuple[float, float]:
    """Loss and metric on the whole validation set (classification: AUC, the mean over
    classes one-vs-rest for more than two; segmentation: pooled IoU, the mean over the
    foreground classes for more than one). A non-finite output gives an infinite loss.

    Outputs are gathered first and the loss computed once, so the segmentation Dice is
    pooled over all validation patches, like the training loss over a batch.
    """
    from genesis.tasks.metrics import iou, mean_class_iou, rank_auc

    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(
                np.asarray(inputs[start : start + batch_size], dtype=np.float32)
            )[:, None].to(device)
            with options.autocast(device):
                outputs.append(model(batch).float().cpu())
        output = torch.cat(outputs)
        target = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        loss = float(loss_fn(output, target))
    if not math.isfinite(loss) or not torch.isfinite(output).all():
        return math.inf, float("nan")
    if info.kind == "segmentation":
        if info.multiclass:
            return loss, mean_class_iou(
                output.argmax(dim=1).numpy(),
                target[:, 0].numpy().astype(np.int64),
                info.n_classes,
            )
        return loss, iou(output.numpy() >= 0.5, target.numpy())
    try:
        if info.multiclass:
            labels = np.asarray(targets).astype(np.int64)
            scores = output.softmax(dim=1).numpy()
            return loss, float(
                np.mean([rank_auc(labels == k, scores[:, k]) for k in range(info.n_classes)])
            )
        return loss, rank_auc(targets, output.reshape(-1).numpy())
    except InputError:  # one class in a tiny validation split: AUC undefined
        return loss, float("nan")


def _upgrade_checkpoint(state: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint of the layout before the shared engine (flat, no ``format``), in
    today's; anything else is returned as it is."""
    legacy = {
        "epoch",
        "curves",
        "model",
        "best_state",
        "optimizer",
        "scheduler",
        "rng",
        "best_val_loss",
        "best_epoch",
        "bad_epochs",
    }
    if "format" in state or not legacy <= set(state):
        return state
    return {
        "format": 2,
        # Checkpoints from before label sweeps trained on every case.
        "identity": {
            key: state.get(key, 1.0 if key == "label_fraction" else None) for key in IDENTITY_KEYS
        },
        "settings": state.get("settings", {}),
        "epoch": state["epoch"],
        "rows": state["curves"],
        "seconds": state.get("seconds", 0.0),
        "stop_reason": state.get("stop_reason", ""),
        "model": state["model"],
        "best_model": state["best_state"],
        "optimizer": state["optimizer"],
        "scheduler": state["scheduler"],
        "early_stop": {
            "best": state["best_val_loss"],
            "best_epoch": state["best_epoch"],
            "bad_epochs": state["bad_epochs"],
        },
        "rng": state["rng"],
    }


def write_curves(path: Path, rows: list[dict[str, float]]) -> None:
    """``curves.csv``: epoch, train_loss, val_loss, val_metric, lr (atomic rewrite)."""
    CURVES_TABLE.write(path, rows)


def _save_best(
    model: nn.Module,
    output_dir: Path,
    record: Mapping[str, Any],
    settings: dict[str, Any],
    seed: int,
    data_dir: Path,
    epoch: int,
) -> list[Path]:
    from genesis.models import save_weights
    from genesis.provenance import provenance_record
    from genesis.tasks.prepared import PREPARE_JSON

    provenance = provenance_record(
        settings=settings, seeds={"finetune": seed}, data_manifest=data_dir / PREPARE_JSON
    )
    provenance["finetune"] = record
    model.cpu()
    return save_weights(model, output_dir / WEIGHTS_STEM, provenance=provenance, epoch=epoch)


def run_number(output_dir: str | Path) -> int | None:
    """``k`` of an output folder named ``run<k>`` (the workflow's layout), else None."""
    match = re.fullmatch(r"run(\d+)", Path(output_dir).name)
    return int(match.group(1)) if match else None
