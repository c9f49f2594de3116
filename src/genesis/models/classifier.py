"""The classification network of the target tasks: U-Net encoder plus a small MLP head.

As in the release's classification example: global average pool of the bottleneck,
Linear(16*width -> hidden) -> ReLU -> Linear(hidden -> n_classes). The encoder's
parameter names are the U-Net's (``down_tr*``), so pretrained U-Net weights load into it
with ``load_weights(..., encoder_only=True)``. There is no decoder at all, so none runs.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from genesis.models.unet import GenesisEncoder, require_positive


class GenesisClassifier(GenesisEncoder):
    """Encoder + pool + MLP; returns logits (N, n_classes), to pair with a logits loss.

    Args:
        n_classes: output logits (1 for the binary NCC task).
        in_channels: input channels.
        width: channels of the first encoder block (32 in the release).
        batch_stats: normalise with batch statistics in eval too (see ``genesis.models.unet``).
        hidden: units of the hidden layer (1024 in the release).
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
