"""Pretraining settings: the release's defaults, validated, without importing torch.

Kept apart from the training code so that ``genesis pretrain --gpus N`` can read its
settings and re-execute itself under torchrun before paying for ``import torch``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from genesis.settings import check_bounds, from_mapping, setting

#: The config section of these settings; error messages name ``pretrain.settings.<key>``.
SECTION = "pretrain.settings"


@dataclass(frozen=True)
class PretrainSettings:
    """Pretraining settings; defaults are the release's (facts §4), demos override them.

    ``transforms`` holds overrides of ``genesis.transforms.TransformSettings`` on top of
    the variant's settings.
    """

    width: int = setting(
        32,
        "Base width of the 3D U-Net (32 = the release); the workflow fills it in from model.width.",
        bounds="[1, inf)",
    )
    cube_size: tuple[int, int, int] | None = setting(
        None,
        "Cube size (x, y, z); the workflow fills it in from the top-level cube_size. null: the "
        "shards' size.",
        bounds="[1, inf)",
    )
    batch_size: int = setting(
        6,
        "Global batch (split across `pretrain.gpus` processes; release: 6).",
        bounds="[1, inf)",
    )
    optimizer: Literal["sgd", "adam"] = setting(
        "sgd",
        "Optimiser (release: SGD).",
    )
    lr: float = setting(
        1.0,
        "Learning rate (release: 1.0 with SGD). A diverging run stops with an error asking to "
        "lower it.",
        bounds="(0, inf)",
    )
    momentum: float = setting(
        0.9,
        "SGD momentum (release: 0.9; unused with Adam).",
        bounds="[0, inf)",
    )
    weight_decay: float = setting(
        0.0,
        "Weight decay (release: none).",
        bounds="[0, inf)",
    )
    lr_patience: int = setting(
        10,
        "Epochs without a lower validation loss before the learning rate is multiplied by "
        "`lr_factor` (release: 10). Only this plateau rule is applied, not the release's "
        "alternative fixed 40-epoch step.",
        bounds="[1, inf)",
    )
    lr_factor: float = setting(
        0.5,
        "Learning-rate factor on a plateau, in (0, 1) (release: halve).",
        bounds="(0, 1)",
    )
    early_stop_patience: int = setting(
        50,
        "Stop after this many epochs without a strictly lower validation loss (release: 50).",
        bounds="[1, inf)",
    )
    max_epochs: int = setting(
        10000,
        "Epoch cap (release: 10,000; early stopping usually ends first).",
        bounds="[1, inf)",
    )
    steps_per_epoch: int | None = setting(
        None,
        "Batches per epoch; null: one pass over the training cubes (cubes / batch, as the "
        "release). Larger values are capped to one pass.",
        bounds="[1, inf)",
    )
    val_cubes: int | None = setting(
        None,
        "Validate on a fixed, seeded subset of this many validation cubes; null: all of them. "
        "Validation transformations are fixed per cube, so losses are comparable between epochs.",
        bounds="[1, inf)",
    )
    val_batch_size: int | None = setting(
        None,
        "Validation batch; null: `batch_size`.",
        bounds="[1, inf)",
    )
    num_workers: int | None = setting(
        None,
        "Data-loader worker processes for training (validation uses at most 2); 0 loads in the "
        "main process; null adapts to the cores: 0 on 1–2 cores, else min(4, cores − 1), shared "
        "among the processes of one machine.",
        bounds="[0, inf)",
    )
    amp: Literal["auto", "bf16", "fp32"] = setting(
        "auto",
        "Mixed precision: `auto` is bf16 autocast on a CUDA GPU that supports it and fp32 "
        "elsewhere; `bf16` forces it; `fp32` turns it off.",
    )
    channels_last: bool | None = setting(
        None,
        "channels-last-3d memory format; null: on for CUDA, off on the CPU.",
    )
    compile: bool = setting(
        False,
        "`torch.compile` the model (faster long GPU runs, slow start).",
    )
    sync_batchnorm: bool = setting(
        True,
        "Synchronise batch-norm statistics across processes when `pretrain.gpus` > 1.",
    )
    transforms: dict[str, Any] = setting(
        doc="Overrides of the transformation settings (pretrain.settings.transforms) on top of the "
        "variant's.",
        factory=dict,
    )
    transform_group: int | None = setting(
        None,
        "Cubes per seeded transformation call; null: the whole per-process batch. Must divide the "
        "per-process batch. Choose a value that divides it for every GPU count you use (1 always "
        "does) and runs with different `pretrain.gpus` see the same (input, target) pairs; larger "
        "groups are faster.",
        bounds="[1, inf)",
    )
    max_minutes: float | None = setting(
        None,
        "Wall-clock budget of one invocation: training stops before an epoch that would overrun it "
        "and exports the best weights so far; a rerun resumes. null: no budget. A budget makes "
        "results depend on machine speed, so the shipped configs use epoch counts.",
        bounds="(0, inf)",
    )
    gpus: int = setting(
        1,
        "Processes / GPUs (DDP via torchrun when > 1); the workflow fills it in from "
        "pretrain.gpus.",
        bounds="[1, inf)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> PretrainSettings:
        return from_mapping(cls, mapping, SECTION)
