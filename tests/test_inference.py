"""Sliding-window inference reproduces a whole-volume prediction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from genesis.models import GenesisClassifier, UNet3D
from genesis.tasks.inference import predict_scores, predict_volume
from genesis.tasks.losses import SoftDiceLoss


def _pointwise_model() -> nn.Module:
    """A 1x1x1 conv + sigmoid: translation-equivariant, so any tiling gives the same map."""
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 1, kernel_size=1)
    with torch.no_grad():
        conv.weight.fill_(3.0)
        conv.bias.fill_(-1.5)
    return nn.Sequential(conv, nn.Sigmoid())


def _direct(model: nn.Module, volume: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(volume)[None, None])[0, 0].numpy()


def test_roi_sized_volume_equals_direct_forward() -> None:
    torch.manual_seed(1)
    model = UNet3D(width=2).eval()
    volume = np.random.default_rng(0).random((16, 16, 8), dtype=np.float32)
    windowed = predict_volume(model, volume, roi=(16, 16, 8), overlap=0.5, mode="gaussian")
    assert windowed.shape == volume.shape
    np.testing.assert_allclose(windowed, _direct(model, volume), atol=1e-5)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
def test_blending_of_a_bigger_volume_matches_direct_forward(mode: str) -> None:
    model = _pointwise_model().eval()
    volume = np.random.default_rng(1).random((37, 29, 21), dtype=np.float32)
    windowed = predict_volume(
        model, volume, roi=(16, 16, 8), overlap=0.5, mode=mode, sw_batch_size=3
    )
    assert windowed.shape == volume.shape
    np.testing.assert_allclose(windowed, _direct(model, volume), atol=1e-5)


def test_volume_smaller_than_roi_is_padded_and_cropped_back() -> None:
    model = _pointwise_model().eval()
    volume = np.random.default_rng(2).random((10, 40, 5), dtype=np.float32)
    windowed = predict_volume(model, volume, roi=(16, 16, 8), overlap=0.25)
    assert windowed.shape == (10, 40, 5)
    np.testing.assert_allclose(windowed, _direct(model, volume), atol=1e-5)


def test_stitching_puts_every_window_in_place() -> None:
    """A model that sees context: the U-Net on a tiled volume agrees with windows in place."""
    torch.manual_seed(3)
    model = UNet3D(width=2).eval()
    rng = np.random.default_rng(3)
    volume = rng.random((32, 16, 8), dtype=np.float32)
    # Without overlap the two windows are exactly the two halves, each predicted alone.
    windowed = predict_volume(model, volume, roi=(16, 16, 8), overlap=0.0, mode="constant")
    halves = np.concatenate([_direct(model, volume[:16]), _direct(model, volume[16:])])
    np.testing.assert_allclose(windowed, halves, atol=1e-5)


def test_predict_scores_in_batches() -> None:
    torch.manual_seed(4)
    model = GenesisClassifier(width=2, hidden=8).eval()
    cubes = np.random.default_rng(4).random((5, 16, 16, 8)).astype(np.float16)
    scores = predict_scores(model, cubes, batch_size=2)
    with torch.no_grad():
        logits = model(torch.from_numpy(cubes.astype(np.float32))[:, None])[:, 0]
    assert scores.shape == (5,)
    np.testing.assert_allclose(scores, torch.sigmoid(logits).numpy(), atol=1e-6)
    assert predict_scores(model, cubes[:0]).shape == (0,)


def test_soft_dice_equals_monai_batch_dice() -> None:
    """Lives here because this file imports MONAI anyway (sliding windows)."""
    from monai.losses import DiceLoss

    generator = torch.Generator().manual_seed(0)
    probabilities = torch.rand((3, 1, 6, 5, 4), generator=generator)
    target = (torch.rand((3, 1, 6, 5, 4), generator=generator) > 0.7).float()
    target[1] = 0  # a patch without foreground
    expected = DiceLoss(sigmoid=False, batch=True)(probabilities, target)
    assert float(SoftDiceLoss()(probabilities, target)) == pytest.approx(float(expected), abs=1e-6)
