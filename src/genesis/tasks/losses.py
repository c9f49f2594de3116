"""Training losses of the target tasks (facts §5): soft Dice for segmentation, BCE for NCC.

Segmentation uses MONAI's ``DiceLoss`` on the U-Net's sigmoid output (``sigmoid=False``:
the model already ends in the release's sigmoid head, so applying another sigmoid would
squash the probabilities). ``batch=True`` pools the Dice sums over the whole batch, as the
release's Keras ``dice_coef`` does by flattening everything: a patch without foreground
then does not contribute a 0-or-1 per-sample Dice that makes the gradient jump. Both
losses are computed in float32, also under bf16 autocast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

Task = Literal["ncc", "lcs", "bms"]
SEGMENTATION_TASKS: tuple[str, ...] = ("lcs", "bms")
TASKS: tuple[str, ...] = ("ncc", "lcs", "bms")


def is_segmentation(task: str) -> bool:
    """LCS and BMS segment volumes; NCC classifies candidate cubes."""
    return task in SEGMENTATION_TASKS


class SoftDiceLoss(nn.Module):
    """``1 - Dice`` of probabilities (N, 1, X, Y, Z) against a binary target, batch-pooled."""

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        self._dice = DiceLoss(sigmoid=False, batch=True, smooth_nr=smooth, smooth_dr=smooth)

    def forward(self, probabilities: Tensor, target: Tensor) -> Tensor:
        return self._dice(probabilities.float(), target.float())


class LogitBCELoss(nn.Module):
    """Binary cross-entropy on logits (N, 1) against labels (N,) or (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float().reshape(-1)
        return self._bce(logits, target.float().reshape(-1))


def build_loss(task: str) -> Callable[[Tensor, Tensor], torch.Tensor]:
    """The paper's loss for ``task``: Dice for LCS/BMS, BCE-with-logits for NCC."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return SoftDiceLoss() if is_segmentation(task) else LogitBCELoss()
