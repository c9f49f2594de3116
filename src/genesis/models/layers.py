"""The building blocks of the 3D U-Net: conv-norm-ReLU and a batch-statistics norm.

Attribute names (``conv1``, ``bn1``) are those of the released checkpoint's blocks, so a
block's ``state_dict`` has the release's keys without any renaming on load.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class BatchStatsNorm3d(nn.BatchNorm3d):
    """Batch norm that normalises with the current batch's statistics in eval mode too.

    This reproduces the released model, whose batch norm never uses running statistics.
    In train mode it behaves exactly like ``nn.BatchNorm3d`` (running statistics are
    updated, so the state_dict stays meaningful and identical in layout); in eval mode it
    normalises with batch statistics and leaves the buffers untouched, so evaluating
    never changes the weights (the release did update them during evaluation).
    """

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return super().forward(x)
        return F.batch_norm(
            x, None, None, self.weight, self.bias, training=True, momentum=0.0, eps=self.eps
        )


def make_norm(channels: int, batch_stats: bool) -> nn.BatchNorm3d:
    """The release's norm (``batch_stats=True``) or the standard one."""
    return BatchStatsNorm3d(channels) if batch_stats else nn.BatchNorm3d(channels)


class ConvBlock(nn.Module):
    """Conv3d(k=3, padding=1, bias) -> BatchNorm3d -> ReLU, keeping the spatial size."""

    def __init__(self, in_channels: int, out_channels: int, batch_stats: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        self.bn1 = make_norm(out_channels, batch_stats)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn1(self.conv1(x)))


def double_block(
    in_channels: int, mid_channels: int, out_channels: int, batch_stats: bool
) -> nn.Sequential:
    """Two blocks in a row; as a Sequential their keys read ``ops.0.*`` and ``ops.1.*``."""
    return nn.Sequential(
        ConvBlock(in_channels, mid_channels, batch_stats),
        ConvBlock(mid_channels, out_channels, batch_stats),
    )
