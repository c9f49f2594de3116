"""The Keras release's 3D U-Net (``Genesis_Chest_CT.h5``), re-built in torch.

The Keras release is a different network from the torch release in ``genesis.models.unet``:
its weights only fit this model. Architecture (``width`` w = 32 in the release, built as
``unet_model_3d((1, 64, 64, 32), batch_normalization=True)``, 16,320,257 parameters):

- 14 blocks Conv3d(3x3x3, 'same') -> BatchNorm -> ReLU, numbered k = 0..13 in the order
  Keras builds them; block k is the Keras layers ``depth_{k}_conv``, ``depth_{k}_bn`` (and
  the weightless ``depth_{k}_relu``), here ``blocks.{k}.conv`` and ``blocks.{k}.bn``.
- encoder, blocks 0..7: level d = 0..3 has two blocks of w*2^d then 2w*2^d channels, then
  MaxPool3d(2) except at the last level. The bottleneck has 16w channels at 1/8 of the
  input size: (N, 512, 8, 8, 4) for a 64x64x32 cube at w = 32.
- decoder, blocks 8..13: for levels 2, 1, 0, nearest up-sampling by 2 (no transposed
  convolution, so no weights), concatenation [upsampled, skip] with the encoder's second
  block of that level, two blocks with the skip's channel count (8w, 4w, 2w).
- head (``head``): Conv3d(2w -> out_channels, 1x1x1), then a sigmoid (or nothing). Keras
  names it automatically (``conv3d_1`` in Keras 2.2, ``conv3d`` in tf-keras).

Batch norm uses Keras's defaults, epsilon 1e-3 and momentum 0.99, i.e. torch momentum
0.01 (torch weighs the new batch by ``momentum``, Keras the old average), so fine-tuning
here updates the moving statistics as Keras would. Keras inference uses the moving
statistics, so the default ``batch_stats=False`` reproduces it; ``batch_stats=True``
normalises with batch statistics in eval too, as ``genesis.models.unet`` documents for
the torch release, for experiments that must treat both releases alike.

Weights are read and written by ``genesis.models.keras_h5``; the state_dict is the same
in both batch-norm modes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from genesis.errors import ConfigError
from genesis.models.layers import BatchStatsNorm3d
from genesis.models.shapes import check_input_tensor_shape
from genesis.models.unet import FINAL_ACTIVATIONS, require_positive

#: Encoder levels (three max-poolings between them); the decoder has one fewer.
DEPTH: int = 4
#: Blocks of the encoder (two per level), numbered 0..7.
ENCODER_BLOCKS: int = 2 * DEPTH
#: Blocks in all, encoder and decoder, numbered 0..13 like the Keras layers.
N_BLOCKS: int = 2 * DEPTH + 2 * (DEPTH - 1)
#: Parameter-name prefixes of the encoder, the part shared with ``KerasClassifier``.
ENCODER_PREFIXES: tuple[str, ...] = tuple(f"blocks.{k}." for k in range(ENCODER_BLOCKS))
#: The 1x1x1 output convolution (an unnamed Conv3D in Keras).
HEAD: str = "head"
#: Keras's batch-norm epsilon and momentum, the latter converted to torch's convention.
BN_EPS: float = 1e-3
BN_MOMENTUM: float = 1.0 - 0.99


class KerasBlock(nn.Module):
    """Conv3d(k=3, padding=1) -> batch norm -> ReLU: the Keras ``depth_{k}_*`` layers."""

    def __init__(self, in_channels: int, out_channels: int, batch_stats: bool) -> None:
        super().__init__()
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, padding=1)
        norm = BatchStatsNorm3d if batch_stats else nn.BatchNorm3d
        self.bn = norm(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM)

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.bn(self.conv(x)))


class KerasEncoder(nn.Module):
    """Blocks 0..7 and their poolings; the U-Net and the classifier extend it."""

    def __init__(self, in_channels: int = 1, width: int = 32, batch_stats: bool = False) -> None:
        super().__init__()
        require_positive("in_channels", in_channels)
        require_positive("width", width)
        self.in_channels = in_channels
        self.width = width
        self.batch_stats = bool(batch_stats)
        # One flat list numbered like the Keras layers, so ``blocks.{k}`` is ``depth_{k}``.
        self.blocks = nn.ModuleList()
        channels_in = in_channels
        for depth in range(DEPTH):
            channels = width * 2**depth
            self.blocks.append(KerasBlock(channels_in, channels, self.batch_stats))
            self.blocks.append(KerasBlock(channels, 2 * channels, self.batch_stats))
            channels_in = 2 * channels

    @property
    def bottleneck_channels(self) -> int:
        return 16 * self.width

    def encoder_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The skips of levels 0..2 and the bottleneck, for a checked (N, C, X, Y, Z) x."""
        check_input_tensor_shape(x.shape, self.in_channels)
        skips = []
        for depth in range(DEPTH):
            if depth:
                x = F.max_pool3d(x, 2)
            x = self.blocks[2 * depth + 1](self.blocks[2 * depth](x))
            skips.append(x)
        return skips[:-1], skips[-1]

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck features (N, 16*width, X/8, Y/8, Z/8); the decoder is not run."""
        return self.encoder_features(x)[1]


class KerasUNet3D(KerasEncoder):
    """The Keras release's 3D U-Net: (N, C, X, Y, Z) -> (N, out_channels, X, Y, Z).

    Args:
        in_channels: input channels (1 for CT).
        out_channels: output channels of the 1x1x1 head (1 for restoration).
        width: filters of the first block; 32 is the release.
        batch_stats: normalise with batch statistics in eval too (see the module docs).
        final_activation: ``"sigmoid"`` (the release) or ``None`` for raw logits.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        width: int = 32,
        batch_stats: bool = False,
        final_activation: str | None = "sigmoid",
    ) -> None:
        super().__init__(in_channels, width, batch_stats)
        require_positive("out_channels", out_channels)
        if final_activation not in FINAL_ACTIVATIONS:
            raise ConfigError(
                f"final_activation must be one of {list(FINAL_ACTIVATIONS)}, "
                f"got {final_activation!r}"
            )
        self.out_channels = out_channels
        self.final_activation = final_activation
        channels_in = self.bottleneck_channels
        for depth in range(DEPTH - 2, -1, -1):
            skip = 2 * width * 2**depth
            self.blocks.append(KerasBlock(channels_in + skip, skip, self.batch_stats))
            self.blocks.append(KerasBlock(skip, skip, self.batch_stats))
            channels_in = skip
        self.head = nn.Conv3d(channels_in, out_channels, kernel_size=1)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, recorded next to saved weights."""
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "width": self.width,
            "batch_stats": self.batch_stats,
            "final_activation": self.final_activation,
        }

    def forward(self, x: Tensor) -> Tensor:
        skips, x = self.encoder_features(x)
        k = ENCODER_BLOCKS
        for skip in reversed(skips):
            # Keras's UpSampling3D repeats each voxel, which is nearest interpolation at an
            # integer factor. The order [upsampled, skip] fixes how the first decoder
            # kernel of the level reads its input channels; swapping it scrambles loads.
            x = torch.cat((F.interpolate(x, scale_factor=2, mode="nearest"), skip), dim=1)
            x = self.blocks[k + 1](self.blocks[k](x))
            k += 2
        out = self.head(x)
        return torch.sigmoid(out) if self.final_activation == "sigmoid" else out


class KerasClassifier(KerasEncoder):
    """Keras encoder + global average pool + MLP; returns logits (N, n_classes).

    The encoder's names are the U-Net's (``blocks.0`` .. ``blocks.7``), so the Keras
    release loads into it with ``load_keras_weights(..., encoder_only=True)``; the head
    (``fc1``, ``fc2``) starts from torch's initialisation.

    Args:
        n_classes: output logits (1 for the binary NCC task).
        in_channels: input channels.
        width: filters of the first encoder block (32 in the release).
        batch_stats: normalise with batch statistics in eval too (see the module docs).
        hidden: units of the hidden layer.
    """

    def __init__(
        self,
        n_classes: int = 1,
        in_channels: int = 1,
        width: int = 32,
        batch_stats: bool = False,
        hidden: int = 1024,
    ) -> None:
        super().__init__(in_channels, width, batch_stats)
        require_positive("n_classes", n_classes)
        require_positive("hidden", hidden)
        self.n_classes = n_classes
        self.hidden = hidden
        self.fc1 = nn.Linear(self.bottleneck_channels, hidden)
        self.fc2 = nn.Linear(hidden, n_classes)

    @property
    def config(self) -> dict[str, Any]:
        """Constructor arguments, recorded next to saved weights."""
        return {
            "n_classes": self.n_classes,
            "in_channels": self.in_channels,
            "width": self.width,
            "batch_stats": self.batch_stats,
            "hidden": self.hidden,
        }

    def forward(self, x: Tensor) -> Tensor:
        pooled = self.encode(x).mean(dim=(2, 3, 4))  # (N, 16*width)
        return self.fc2(self.fc1(pooled).relu())
