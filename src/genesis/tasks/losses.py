"""Training losses of the target tasks (facts §5): soft Dice for segmentation, BCE for NCC.

Soft Dice is written here rather than taken from MONAI because importing MONAI costs
2-4 s of CPU per process, paid by each of the demo's 18 short fine-tuning jobs; the test
suite checks that it equals ``monai.losses.DiceLoss(sigmoid=False, batch=True)``.

It works on the U-Net's sigmoid output (the release's head), not on logits, and it pools
the sums over the whole batch, as the release's Keras ``dice_coef`` does by flattening
everything: a patch without foreground then does not contribute a per-sample Dice of 0
or 1 that makes the gradient jump. Both losses are computed in float32, also under bf16
autocast.
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
    """``1 - (2 Σ p t + s) / (Σ p + Σ t + s)`` over the whole batch, per channel, averaged.

    ``probabilities`` and ``target`` are (N, C, X, Y, Z); ``s`` (1e-5, MONAI's default)
    only keeps an all-empty batch from dividing by zero (it then scores a perfect 1).
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.smooth = smooth

    def forward(self, probabilities: Tensor, target: Tensor) -> Tensor:
        p = probabilities.float()
        t = target.float()
        if p.shape != t.shape:
            raise ValueError(f"prediction shape {tuple(p.shape)} differs from target shape "
                             f"{tuple(t.shape)}")
        axes = [0, *range(2, p.ndim)]  # everything but the channel axis
        intersection = (p * t).sum(dim=axes)
        total = p.sum(dim=axes) + t.sum(dim=axes)
        score = (2.0 * intersection + self.smooth) / (total + self.smooth)
        return 1.0 - score.mean()


class LogitBCELoss(nn.Module):
    """Binary cross-entropy on logits (N, 1) against labels (N,) or (N, 1)."""

    def __init__(self) -> None:
        super().__init__()
        self._bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return self._bce(logits.float().reshape(-1), target.float().reshape(-1))


def build_loss(task: str) -> Callable[[Tensor, Tensor], torch.Tensor]:
    """The paper's loss for ``task``: Dice for LCS/BMS, BCE-with-logits for NCC."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {list(TASKS)}, got {task!r}")
    return SoftDiceLoss() if is_segmentation(task) else LogitBCELoss()
