"""Whole-volume and whole-split inference with the fine-tuned models.

Segmentation models are trained on small cubes but scored on whole test volumes, so a
volume is covered by overlapping roi-sized windows (MONAI's ``sliding_window_inference``)
whose probabilities are blended with a Gaussian weight: voxels near a window's border,
where the network saw little context, count less than those near its centre. Volumes
smaller than the roi along an axis are zero-padded by MONAI and cropped back.

With the release's batch-statistics norm (``batch_stats=True``) a window's prediction
depends on the other windows in its batch; ``sw_batch_size`` is therefore a setting and is
recorded with the metrics.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext

import numpy as np
import torch
from torch import Tensor, nn


def autocast_for(device: torch.device) -> torch.autocast | nullcontext[None]:
    """bf16 autocast on CUDA; plain float32 on CPU, where bf16 is slower and less exact."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


def predict_volume(
    model: nn.Module,
    image: np.ndarray,
    *,
    roi: Sequence[int],
    overlap: float = 0.5,
    mode: str = "gaussian",
    sw_batch_size: int = 4,
    device: torch.device | str = "cpu",
    softmax: bool = False,
) -> np.ndarray:
    """Foreground probability (X, Y, Z) float32 of a whole (X, Y, Z) volume.

    ``model`` maps (N, 1, *roi) to probabilities (N, 1, *roi) (the U-Net's sigmoid head).
    With ``softmax`` it maps to logits (N, K, *roi) over K classes, and the result is the
    class probabilities (K, X, Y, Z): windows are blended as probabilities, not logits.
    """
    from monai.inferers import sliding_window_inference

    if image.ndim != 3:
        raise ValueError(f"expected an (X, Y, Z) volume, got shape {image.shape}")
    device = torch.device(device)
    volume = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
    volume = volume[None, None].to(device)  # (1, 1, X, Y, Z)

    def predictor(window: Tensor) -> Tensor:
        with autocast_for(device):
            output = model(window).float()
        return output.softmax(dim=1) if softmax else output

    model.eval()
    with torch.inference_mode():
        output = sliding_window_inference(
            volume,
            roi_size=tuple(int(n) for n in roi),
            sw_batch_size=sw_batch_size,
            predictor=predictor,
            overlap=overlap,
            mode=mode,
            padding_mode="constant",
            cval=0.0,
        )
    return (output[0] if softmax else output[0, 0]).float().cpu().numpy()


def predict_scores(
    model: nn.Module,
    cubes: np.ndarray,
    *,
    batch_size: int = 24,
    device: torch.device | str = "cpu",
    softmax: bool = False,
) -> np.ndarray:
    """Positive-class probability (n,) for cubes (n, X, Y, Z) through a logit classifier;
    with ``softmax``, the class probabilities (n, K) of a K-logit classifier."""
    device = torch.device(device)
    model.eval()
    scores: list[np.ndarray] = []
    with torch.inference_mode():
        for start in range(0, len(cubes), batch_size):
            chunk = np.asarray(cubes[start : start + batch_size], dtype=np.float32)
            batch = torch.from_numpy(chunk)[:, None].to(device)  # (B, 1, X, Y, Z)
            with autocast_for(device):
                logits = model(batch).float().reshape(len(chunk), -1)
            probabilities = logits.softmax(dim=1) if softmax else torch.sigmoid(logits[:, 0])
            scores.append(probabilities.cpu().numpy())
    return np.concatenate(scores) if scores else np.zeros(0, dtype=np.float32)
