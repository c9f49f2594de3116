"""The Models Genesis 3D U-Net, with the released checkpoint's parameter names.

Architecture (``width`` w = 32 in the release, 19,073,665 parameters):

- encoder level d = 0..3 (``down_tr64``, ``down_tr128``, ``down_tr256``, ``down_tr512``):
  two conv-norm-ReLU blocks of w*2^d then 2w*2^d channels, then MaxPool3d(2) except at the
  last level. The bottleneck has 16w channels at 1/8 of the input size: (N, 512, 8, 8, 4)
  for a 64x64x32 cube at w = 32.
- decoder (``up_tr256``, ``up_tr128``, ``up_tr64``): ConvTranspose3d(k=2, s=2) keeping
  the channels, concatenation [upsampled, skip] along channels, two blocks.
- head (``out_tr``): Conv3d(2w -> out_channels, k=1), then a sigmoid (or nothing).

The level names are the release's and stay the same at every width; only the channel
counts scale with ``width / 32``, so a narrow demo model still reads release-style files.

Batch norm, two behaviours:

- ``batch_stats=False`` (default): standard batch norm, batch statistics in ``train()``
  and running statistics in ``eval()``. Use it for weights trained here: evaluation is
  then deterministic per sample and does not depend on what else is in the batch.
- ``batch_stats=True``: batch statistics in ``train()`` and ``eval()`` alike, as the
  released model does (its norm layer never switches to running statistics). Use it
  with the released weights (``Genesis_Chest_CT.pt``), whose running statistics were never
  used and do not match their features, and to reproduce the release's numbers. Outputs
  then depend on the batch's composition; evaluate with batches of several cubes.

The state_dict layout is identical in both modes, so any file loads into either.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from genesis.errors import ConfigError
from genesis.models.layers import double_block
from genesis.models.shapes import check_input_tensor_shape

#: Encoder level names, from the input to the bottleneck (the release's names).
ENCODER_LEVELS: tuple[str, ...] = ("down_tr64", "down_tr128", "down_tr256", "down_tr512")
#: Decoder level names, from the bottleneck up (the release's names).
DECODER_LEVELS: tuple[str, ...] = ("up_tr256", "up_tr128", "up_tr64")
#: The 1x1x1 output convolution.
HEAD: str = "out_tr"

FINAL_ACTIVATIONS: tuple[str | None, ...] = ("sigmoid", None)


def require_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


class EncoderLevel(nn.Module):
    """Two blocks, then (optionally) a 2x max-pool; returns the skip and the pooled map."""

    def __init__(self, in_channels: int, channels: int, batch_stats: bool, pool: bool) -> None:
        super().__init__()
        self.ops = double_block(in_channels, channels, 2 * channels, batch_stats)
        self.pool = nn.MaxPool3d(2) if pool else nn.Identity()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.ops(x)
        return features, self.pool(features)


class DecoderLevel(nn.Module):
    """Upsample 2x (channels kept), concatenate the skip after it, two blocks."""

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, batch_stats: bool
    ) -> None:
        super().__init__()
        self.up_conv = nn.ConvTranspose3d(in_channels, in_channels, kernel_size=2, stride=2)
        self.ops = double_block(
            in_channels + skip_channels, out_channels, out_channels, batch_stats
        )

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        # The order [upsampled, skip] fixes how the released first-block kernels read
        # their input channels; swapping it would silently scramble loaded weights.
        return self.ops(torch.cat((self.up_conv(x), skip), dim=1))


class OutputHead(nn.Module):
    """1x1x1 convolution to the output channels, then the final activation."""

    def __init__(self, in_channels: int, out_channels: int, final_activation: str | None) -> None:
        super().__init__()
        self.final_conv = nn.Conv3d(in_channels, out_channels, kernel_size=1)
        self.final_activation = final_activation

    def forward(self, x: Tensor) -> Tensor:
        out = self.final_conv(x)
        return torch.sigmoid(out) if self.final_activation == "sigmoid" else out


class GenesisEncoder(nn.Module):
    """The U-Net's encoder; the U-Net and the classifier extend it, sharing its names."""

    def __init__(self, in_channels: int = 1, width: int = 32, batch_stats: bool = False) -> None:
        super().__init__()
        require_positive("in_channels", in_channels)
        require_positive("width", width)
        self.in_channels = in_channels
        self.width = width
        self.batch_stats = bool(batch_stats)
        channels_in = in_channels
        for depth, name in enumerate(ENCODER_LEVELS):
            channels = width * 2**depth
            is_last = depth == len(ENCODER_LEVELS) - 1
            self.add_module(
                name, EncoderLevel(channels_in, channels, self.batch_stats, pool=not is_last)
            )
            channels_in = 2 * channels

    @property
    def bottleneck_channels(self) -> int:
        return 16 * self.width

    def encoder_features(self, x: Tensor) -> tuple[list[Tensor], Tensor]:
        """The skips of levels 0..2 and the bottleneck, for a checked (N, C, X, Y, Z) x."""
        check_input_tensor_shape(x.shape, self.in_channels)
        skips = []
        for name in ENCODER_LEVELS:
            features, x = self.get_submodule(name)(x)
            skips.append(features)
        return skips[:-1], skips[-1]

    def encode(self, x: Tensor) -> Tensor:
        """Bottleneck features (N, 16*width, X/8, Y/8, Z/8); the decoder is not run."""
        return self.encoder_features(x)[1]


class UNet3D(GenesisEncoder):
    """The Models Genesis 3D U-Net: (N, C, X, Y, Z) -> (N, out_channels, X, Y, Z).

    Args:
        in_channels: input channels (1 for CT; 4 for the four BraTS sequences).
        out_channels: output channels of the 1x1x1 head (1 for restoration).
        width: channels of the first block; 32 is the release, 8 the CPU demo.
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
        for depth, name in zip((2, 1, 0), DECODER_LEVELS, strict=True):
            skip = 2 * width * 2**depth
            self.add_module(name, DecoderLevel(channels_in, skip, skip, self.batch_stats))
            channels_in = skip
        self.add_module(HEAD, OutputHead(channels_in, out_channels, final_activation))

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
        for name, skip in zip(DECODER_LEVELS, reversed(skips), strict=True):
            x = self.get_submodule(name)(x, skip)
        return self.get_submodule(HEAD)(x)
