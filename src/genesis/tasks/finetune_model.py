"""The fine-tuned model: how it starts (``Init``), its architecture with one output per
class (``build_model``), and loading the initial weights (``initialise``).

Initialisations:

- ``scratch``: random weights, drawn from a seed derived from the run's seed, so the
  scratch and pretrained runs of one seed share the classifier head and data order.
- ``genesis`` / ``genesis-<variant>``: this workflow's pretraining (``--weights``).
- ``released``: ``Genesis_Chest_CT.pt`` or any file in that layout (``--weights``). The
  release's batch norm normalises with batch statistics in evaluation too, and its
  running statistics were never used, so ``batch_stats`` defaults to true for
  ``released`` and to false (standard batch norm) otherwise; the ``batch_stats`` setting
  overrides both.
- ``released_keras``: the Keras release ``Genesis_Chest_CT.h5`` (``--weights``), a
  different network (up-sampling decoder, ``genesis.models.keras_unet``) loaded with
  h5py; its moving statistics are Keras's usual ones, so standard batch norm is the
  default. Scratch runs keep the PyTorch release's architecture, as in the paper.

Binary segmentation fine-tunes the whole U-Net, loading every tensor strictly (the
pretrained head is the same 1-channel sigmoid as the binary segmentation output); with
more classes every layer but the 1x1x1 head is transferred (``except_head``) and the head
gets one channel per class plus background. Classification loads only the encoder into
``GenesisClassifier``; its head starts random. A file that does not fit
raises ``WeightsError`` listing every missing, unexpected and mis-shaped key: never a
silent random start.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genesis.errors import ConfigError, InputError, WeightsError
from genesis.tasks.finetune_settings import FinetuneSettings
from genesis.tasks.kinds import TaskInfo

log = logging.getLogger(__name__)

INIT_PATTERN = re.compile(r"^(scratch|released|released_keras|genesis(-[a-z_]+)?)$")


@dataclass(frozen=True)
class Init:
    """How the model starts: ``scratch``, ``genesis[-variant]`` or ``released`` + a file."""

    name: str
    weights: Path | None = None

    def __post_init__(self) -> None:
        if not INIT_PATTERN.match(self.name):
            raise ConfigError(
                f"init must be scratch, genesis, genesis-<variant>, released or "
                f"released_keras, got {self.name!r}"
            )
        if self.name == "scratch" and self.weights is not None:
            raise ConfigError(
                "--weights is for the genesis and released inits; scratch "
                "starts from random weights"
            )
        if self.name != "scratch" and self.weights is None:
            raise ConfigError(
                f"init {self.name!r} needs --weights (a weights.pt, "
                ".safetensors, Genesis_Chest_CT.pt, or Genesis_Chest_CT.h5 "
                "for released_keras)"
            )
        if self.weights is not None and self.keras != (Path(self.weights).suffix == ".h5"):
            raise ConfigError(
                f"--weights {self.weights}: released_keras takes the Keras "
                ".h5 file, the other inits a .pt or .safetensors file"
            )
        if self.weights is not None and not Path(self.weights).is_file():
            raise InputError(self.weights, "weights file not found")

    @property
    def keras(self) -> bool:
        """The Keras release's architecture (``genesis.models.keras_unet``)."""
        return self.name == "released_keras"

    def batch_stats(self, settings: FinetuneSettings) -> bool:
        """The release's always-batch-statistics norm for released weights, unless set."""
        if settings.batch_stats is not None:
            return settings.batch_stats
        return self.name == "released"


def build_model(
    info: TaskInfo, settings: FinetuneSettings, batch_stats: bool, keras: bool = False
) -> nn.Module:
    """The U-Net (segmentation) or the encoder classifier, with one output per class.

    Binary tasks keep the release's heads: a 1-channel sigmoid U-Net and a 1-logit
    classifier. More classes: raw logits over every class (softmax in loss and inference).
    ``keras`` builds the Keras release's architecture instead.
    """
    from genesis.models import GenesisClassifier, KerasClassifier, KerasUNet3D, UNet3D

    if info.kind == "segmentation":
        activation = None if info.multiclass else "sigmoid"
        unet = KerasUNet3D if keras else UNet3D
        return unet(
            in_channels=1,
            out_channels=info.n_outputs,
            width=settings.width,
            batch_stats=batch_stats,
            final_activation=activation,
        )
    classifier = KerasClassifier if keras else GenesisClassifier
    return classifier(
        n_classes=info.n_outputs,
        width=settings.width,
        batch_stats=batch_stats,
        hidden=settings.hidden,
    )


def _load_keras(model: nn.Module, path: Path, encoder_only: bool, except_head: bool) -> Any:
    """The Keras release into ``model``; for a new head, through a 1-channel twin first
    (the file's head has one channel) and then every tensor but the head."""
    from genesis.models import KerasUNet3D, load_keras_weights
    from genesis.models.keras_unet import HEAD

    if not except_head:
        return load_keras_weights(model, path, encoder_only=encoder_only)
    twin = KerasUNet3D(in_channels=model.in_channels, out_channels=1, width=model.width)
    report = load_keras_weights(twin, path)
    body = {k: v for k, v in twin.state_dict().items() if not k.startswith(f"{HEAD}.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not k.startswith(f"{HEAD}.") for k in missing):
        raise WeightsError(f"{path}: Keras weights do not fit the model ({missing}, {unexpected})")
    return dataclasses.replace(
        report, loaded=tuple(body), kept=tuple(k for k in model.state_dict() if k not in body)
    )


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def initialise(
    model: nn.Module, info: TaskInfo, init: Init, reset_head: bool = False
) -> dict[str, Any]:
    """Load the init's weights strictly and describe what happened.

    Classification loads the encoder; binary segmentation the whole U-Net; segmentation
    with more classes every layer but the head (whose channels differ). ``reset_head``
    re-draws the segmentation head after loading (from the seeded global generator, so
    runs stay reproducible).
    """
    from genesis.models import load_weights
    from genesis.provenance import file_sha256

    if init.weights is None:
        log.info("init scratch: random weights")
        return {"init": init.name, "weights": None}
    segmentation = info.kind == "segmentation"
    encoder_only = not segmentation
    except_head = segmentation and info.multiclass
    if init.keras:
        report = _load_keras(model, init.weights, encoder_only, except_head)
    else:
        report = load_weights(
            model, init.weights, encoder_only=encoder_only, except_head=except_head
        )
    log.info("init %s: %s", init.name, report.summary())
    head_reset = reset_head and segmentation and not except_head
    if head_reset:
        head = model.head if init.keras else model.out_tr.final_conv
        head.reset_parameters()
        log.info("init %s: segmentation head re-initialised (reset_head)", init.name)
    return {
        "init": init.name,
        "weights": str(init.weights),
        "head_reset": head_reset,
        "weights_sha256": file_sha256(init.weights),
        "encoder_only": encoder_only,
        "except_head": except_head,
        "loaded": len(report.loaded),
        "kept_random": len(report.kept),
        "skipped": len(report.skipped),
        "source_epoch": report.epoch,
    }
