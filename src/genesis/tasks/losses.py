"""Training losses of the target tasks (facts §5): soft Dice for segmentation, BCE for NCC;
Dice + cross-entropy and cross-entropy for tasks with more than two classes.

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

import torch
from torch import Tensor, nn


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
            raise ValueError(
                f"prediction shape {tuple(p.shape)} differs from target shape {tuple(t.shape)}"
            )
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


class SoftmaxDiceCELoss(nn.Module):
    """Multi-class segmentation: soft Dice over the foreground classes plus cross-entropy.

    ``logits`` are (N, K, X, Y, Z) over background and K - 1 classes; ``target`` holds
    class indices, (N, X, Y, Z) or (N, 1, X, Y, Z). Dice alone lets a rare class vanish
    early (its gradient is tiny while it is absent), cross-entropy alone under-weights
    small structures; their sum (nnU-Net's choice) trains both. Background is left out
    of the Dice term, as its overlap is large and uninformative.
    """

    def __init__(self, smooth: float = 1e-5) -> None:
        super().__init__()
        self.dice = SoftDiceLoss(smooth)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        logits = logits.float()
        index = target.reshape(logits.shape[0], *logits.shape[2:]).long()
        probabilities = logits.softmax(dim=1)
        one_hot = nn.functional.one_hot(index, logits.shape[1]).movedim(-1, 1)
        dice = self.dice(probabilities[:, 1:], one_hot[:, 1:])
        return dice + nn.functional.cross_entropy(logits, index)


class CrossEntropyLoss(nn.Module):
    """Multi-class classification: cross-entropy on logits (N, K) against indices (N,)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return nn.functional.cross_entropy(logits.float(), target.reshape(-1).long())


def build_loss(kind: str, n_classes: int = 2) -> Callable[[Tensor, Tensor], torch.Tensor]:
    """The loss of a task kind: the paper's Dice (segmentation) or BCE (classification)
    for two classes; Dice + cross-entropy or cross-entropy for more."""
    if kind == "segmentation":
        return SoftDiceLoss() if n_classes <= 2 else SoftmaxDiceCELoss()
    if kind == "classification":
        return LogitBCELoss() if n_classes <= 2 else CrossEntropyLoss()
    raise ValueError(f"kind must be classification or segmentation, got {kind!r}")
