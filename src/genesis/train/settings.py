"""Pretraining settings: the release's defaults, validated, without importing torch.

Kept apart from the training code so that ``genesis pretrain --gpus N`` can read its
settings and re-execute itself under torchrun before paying for ``import torch``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from genesis.errors import ConfigError
from genesis.settings import from_mapping

#: The config section of these settings; error messages name ``pretrain.settings.<key>``.
SECTION = "pretrain.settings"


@dataclass(frozen=True)
class PretrainSettings:
    """Pretraining settings; defaults are the release's (facts §4), demos override them.

    Keys and meaning are listed in config/README.md; ``transforms`` holds overrides of
    ``genesis.transforms.TransformSettings`` on top of the variant's settings.
    """

    width: int = 32
    cube_size: tuple[int, int, int] | None = None
    batch_size: int = 6
    optimizer: Literal["sgd", "adam"] = "sgd"
    lr: float = 1.0
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_patience: int = 10
    lr_factor: float = 0.5
    early_stop_patience: int = 50
    max_epochs: int = 10000
    steps_per_epoch: int | None = None
    val_cubes: int | None = None
    val_batch_size: int | None = None
    #: Data-loader worker processes; null adapts to the cores (genesis.train.loaders).
    num_workers: int | None = None
    amp: Literal["auto", "bf16", "fp32"] = "auto"
    channels_last: bool | None = None
    compile: bool = False
    sync_batchnorm: bool = True
    transforms: dict[str, Any] = field(default_factory=dict)
    transform_group: int | None = None
    max_minutes: float | None = None
    gpus: int = 1

    def __post_init__(self) -> None:
        for key in (
            "width",
            "batch_size",
            "lr_patience",
            "early_stop_patience",
            "max_epochs",
            "gpus",
        ):
            if getattr(self, key) < 1:
                raise ConfigError(f"{SECTION}.{key} must be at least 1, got {getattr(self, key)}")
        for key in ("steps_per_epoch", "val_cubes", "val_batch_size", "transform_group"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"{SECTION}.{key} must be at least 1 or null, got {value}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ConfigError(f"{SECTION}.num_workers must be >= 0, got {self.num_workers}")
        if self.cube_size is not None and min(self.cube_size) < 1:
            raise ConfigError(
                f"{SECTION}.cube_size must be positive sizes, got {list(self.cube_size)}"
            )
        _check_number("lr", self.lr, "(0, inf)")
        _check_number("momentum", self.momentum, "[0, inf)")
        _check_number("weight_decay", self.weight_decay, "[0, inf)")
        _check_number("lr_factor", self.lr_factor, "(0, 1)")
        if self.max_minutes is not None:
            _check_number("max_minutes", self.max_minutes, "(0, inf)", null=True)

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, Any] | None) -> PretrainSettings:
        return from_mapping(cls, mapping, SECTION)


def _check_number(key: str, value: float, interval: str, null: bool = False) -> None:
    """``value`` finite and in ``interval`` ("(0, 1)", "[0, inf)", ...), else a ConfigError
    naming the key."""
    low, high = (float(bound) for bound in interval[1:-1].split(","))
    above = value > low if interval[0] == "(" else value >= low
    below = value < high if interval[-1] == ")" else value <= high
    if not (math.isfinite(value) and above and below):
        kind = "a finite number" + (" or null" if null else "")
        raise ConfigError(f"{SECTION}.{key} must be {kind} in {interval}, got {value!r}")
