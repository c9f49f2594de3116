"""Fine-tuning settings: the paper's defaults per task (facts §5), a user task's by kind,
validated (every key named in errors), without importing torch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genesis.errors import ConfigError
from genesis.settings import check_bounds, from_mapping, setting
from genesis.tasks.kinds import KIND_PRESETS, PRESETS, check_name

#: Placeholder section in errors; ``resolve_settings`` names the task's real one.
SECTION = "tasks.<task>.finetune"


@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning settings (section ``tasks.<task>.finetune``); see ``TASK_DEFAULTS``."""

    lr: float = setting(
        1e-3,
        "Adam learning rate (paper: NCC 1e-3, LCS 1e-2, BMS 1e-3).",
        bounds="(0, inf)",
    )
    batch_size: int = setting(
        24,
        "Training batch (paper: NCC 24; not stated for segmentation).",
        bounds="[1, inf)",
    )
    early_stop_patience: int = setting(
        10,
        "Stop after this many epochs without a lower validation loss (paper: NCC 10, LCS 20, BMS "
        "30).",
        bounds="[1, inf)",
    )
    lr_patience: int = setting(
        5,
        "Epochs without improvement before the learning rate is multiplied by `lr_factor` (not "
        "stated in the paper; half the early-stopping patience).",
        bounds="[1, inf)",
    )
    lr_factor: float = setting(
        0.5,
        "Learning-rate factor on a plateau, in (0, 1) (paper: halve).",
        bounds="(0, 1)",
    )
    max_epochs: int = setting(
        10000,
        "Epoch cap; early stopping usually ends training first.",
        bounds="[1, inf)",
    )
    steps_per_epoch: int | None = setting(
        None,
        "Batches per epoch; null: one pass over the training cubes (NCC) or over "
        "`patches_per_case` patches of every training case (segmentation).",
        bounds="[1, inf)",
    )
    width: int = setting(
        32,
        "U-Net / encoder base width (32 = the release; must match pretrained weights); the "
        "workflow fills it in from model.width.",
        bounds="[1, inf)",
    )
    hidden: int = setting(
        1024,
        "NCC: hidden units of the classification head (release: 1024).",
        bounds="[1, inf)",
    )
    cube_size: tuple[int, int, int] | None = setting(
        None,
        "Model input (x, y, z); null: the size recorded by prepare (else 64x64x32). NCC cubes are "
        "cut at prepare time, so there it must equal the prepared size. The workflow fills it in "
        "from the top-level cube_size.",
        bounds="[1, inf)",
    )
    batch_stats: bool | None = setting(
        None,
        "Batch norm with batch statistics in evaluation too, as the release's model; null: true "
        "for `released`, false (standard batch norm) otherwise.",
    )
    patches_per_case: int = setting(
        16,
        "Segmentation: training patches drawn per training case per epoch.",
        bounds="[1, inf)",
    )
    foreground_ratio: float = setting(
        0.5,
        "Segmentation: share of patches centred on a foreground voxel.",
        bounds="[0, 1]",
    )
    val_patches_per_case: int = setting(
        8,
        "Segmentation: fixed validation patches per validation case (the same for every run).",
        bounds="[1, inf)",
    )
    augment: bool = setting(
        True,
        "NCC: random shifts (within `tasks.ncc.prepare.max_shift`) and flips of the training "
        "cubes.",
    )
    positive_fraction: float | None = setting(
        None,
        "NCC: share of positives in each training batch (balanced sampling); null keeps the "
        "natural class mix, as the paper. Balanced batches let a short demo run learn at all.",
        bounds="[0, 1]",
    )
    max_minutes: float | None = setting(
        None,
        "Wall-clock budget; training stops after the epoch that exceeds it. null: none.",
        bounds="(0, inf)",
    )
    channels_last: bool = setting(
        True,
        "channels-last-3d memory layout: the same results, about 20% faster 3D convolutions on the "
        "CPU (oneDNN) and usually on the GPU too.",
    )
    reset_head: bool = setting(
        False,
        "Segmentation from pretrained weights: re-initialise the final 1x1x1 convolution after "
        "loading. The restoration head outputs intensities, not masks; a short run (the demo) "
        "cannot repurpose it and predicts no foreground. false transfers every layer, as the "
        "paper.",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        if self.cube_size is not None:
            check_cube_size(self.cube_size, f"{SECTION}.cube_size")


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
