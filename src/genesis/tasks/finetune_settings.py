"""Fine-tuning settings: the paper's defaults per task (facts §5), a user task's by kind,
validated (every key named in errors), without importing torch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genesis.errors import ConfigError
from genesis.settings import from_mapping
from genesis.tasks.kinds import KIND_PRESETS, PRESETS, check_name

#: Placeholder section in errors; ``resolve_settings`` names the task's real one.
SECTION = "tasks.<task>.finetune"


@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning settings (section ``tasks.<task>.finetune``); see ``TASK_DEFAULTS``."""

    #: Adam learning rate (paper: NCC 1e-3, LCS 1e-2, BMS 1e-3).
    lr: float = 1e-3
    #: Training batch size (paper: NCC 24; segmentation not stated, 16 here).
    batch_size: int = 24
    #: Early stopping: epochs without a lower validation loss (the facts' "patience":
    #: NCC 10, LCS 20, BMS 30).
    early_stop_patience: int = 10
    #: Epochs without improvement before the learning rate is multiplied by lr_factor
    #: (not stated in the facts; half the early-stopping patience by default).
    lr_patience: int = 5
    #: Learning-rate factor on a plateau (the paper halves it).
    lr_factor: float = 0.5
    #: Epoch cap (early stopping usually ends training first).
    max_epochs: int = 10000
    #: Batches per epoch; None: one pass over the training cubes (NCC) or over
    #: patches_per_case patches of every training case (segmentation).
    steps_per_epoch: int | None = None
    #: U-Net / encoder base width (32 = the release; must match pretrained weights).
    width: int = 32
    #: Hidden units of the NCC classification head (1024 in the release).
    hidden: int = 1024
    #: Model input (x, y, z); None: the size recorded by `prepare` (else 64x64x32). NCC
    #: cubes are cut at prepare time, so there it must equal the prepared size.
    cube_size: tuple[int, int, int] | None = None
    #: Batch norm with batch statistics in eval too; None: true for `released` only.
    batch_stats: bool | None = None
    #: Segmentation: training patches drawn per training case per epoch.
    patches_per_case: int = 16
    #: Segmentation: share of patches centred on a foreground voxel.
    foreground_ratio: float = 0.5
    #: Segmentation: fixed validation patches per validation case.
    val_patches_per_case: int = 8
    #: NCC: random shifts (within the stored margin) and flips of training cubes.
    augment: bool = True
    #: NCC: share of positives in every training batch; None samples batches from the
    #: natural class mix (the paper). Balancing speeds up learning from few positives.
    positive_fraction: float | None = None
    #: Optional wall-clock budget; training stops after the epoch that exceeds it.
    max_minutes: float | None = None
    #: channels_last_3d memory layout: same results, about 20% faster 3D convolutions on
    #: CPU (oneDNN) and usually on GPU too.
    channels_last: bool = True
    #: Segmentation from pretrained weights: re-initialise the final 1x1x1 convolution.
    #: The restoration head outputs intensities, not masks; a short run (the demo) cannot
    #: repurpose it and predicts no foreground at all. false: transfer every layer (paper).
    reset_head: bool = False

    def __post_init__(self) -> None:
        for key in (
            "batch_size",
            "early_stop_patience",
            "lr_patience",
            "max_epochs",
            "width",
            "hidden",
            "patches_per_case",
            "val_patches_per_case",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"{SECTION}.{key} must be at least 1, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(
                f"{SECTION}.steps_per_epoch must be at least 1 or null, got {self.steps_per_epoch}"
            )
        _check_number("lr", self.lr, "(0, inf)")
        _check_number("lr_factor", self.lr_factor, "(0, 1)")
        _check_number("foreground_ratio", self.foreground_ratio, "[0, 1]")
        if self.positive_fraction is not None:
            _check_number("positive_fraction", self.positive_fraction, "[0, 1]", null=True)
        if self.max_minutes is not None:
            _check_number("max_minutes", self.max_minutes, "(0, inf)", null=True)
        if self.cube_size is not None:
            check_cube_size(self.cube_size, f"{SECTION}.cube_size")


def _check_number(key: str, value: float, interval: str, null: bool = False) -> None:
    """``value`` finite and in ``interval`` ("(0, 1)", "[0, 1]", "(0, inf)"), else a
    ConfigError naming the key."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if not (math.isfinite(value) and above and below):
        kind = "a finite number" + (" or null" if null else "")
        raise ConfigError(f"{SECTION}.{key} must be {kind} in {interval}, got {value!r}")


#: The paper's optimiser settings per task (facts §5); config keys override them.
TASK_DEFAULTS: dict[str, FinetuneSettings] = {
    task: FinetuneSettings(**dict(preset.finetune)) for task, preset in PRESETS.items()
}
#: Defaults of a user's own task, by kind (``genesis.tasks.kinds.KIND_PRESETS``).
KIND_DEFAULTS: dict[str, FinetuneSettings] = {
    kind: TASK_DEFAULTS[task] for kind, task in KIND_PRESETS.items()
}


def check_cube_size(size: tuple[int, ...], key: str) -> None:
    """The U-Net's rule (x, y divisible by 16, z by 8) as a ConfigError naming ``key``."""
    from genesis.models import InputShapeError, check_input_shape

    try:
        check_input_shape(size)
    except InputShapeError as error:
        raise ConfigError(f"{key}: {error.problem}") from None


def resolve_settings(
    task: str, mapping: Mapping[str, Any] | None, kind: str | None = None
) -> FinetuneSettings:
    """The task's defaults with the given keys (checked like any config) on top.

    The paper's tasks start from their published settings (``TASK_DEFAULTS``), a user's
    task from its kind's (``KIND_DEFAULTS``); ``kind`` is then required.
    """
    check_name(task)
    section = f"tasks.{task}.finetune"
    if task in TASK_DEFAULTS:
        defaults = TASK_DEFAULTS[task]
    elif kind in KIND_DEFAULTS:
        defaults = KIND_DEFAULTS[kind]
    else:
        raise ConfigError(
            f"task {task!r} is not a built-in task: its kind must be one of "
            f"{list(KIND_DEFAULTS)}, got {kind!r}"
        )
    given = dict(mapping or {})
    try:
        parsed = from_mapping(FinetuneSettings, given, section)  # key and type errors
        return dataclasses.replace(defaults, **{key: getattr(parsed, key) for key in given})
    except ConfigError as error:  # __post_init__ does not know the task's section name
        raise ConfigError(str(error).replace(SECTION, section)) from None
