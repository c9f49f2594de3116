"""Flip: input and target together, self-inverse, distribution as the oracle's."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transforms_oracle as oracle

from genesis.transforms import FlipParams, apply_flip, flip, sample_flip


def cubes(n: int = 4, shape: tuple[int, int, int] = (6, 5, 4), seed: int = 0) -> torch.Tensor:
    return torch.rand((n, 1, *shape), generator=torch.Generator().manual_seed(seed))


def test_flip_matches_explicit_per_sample_flips() -> None:
    x = cubes()
    axes = torch.tensor(
        [[False, False, False], [True, False, False], [False, True, True], [True, True, True]]
    )
    out = apply_flip(x, FlipParams(axes=axes))
    for i, row in enumerate(axes.tolist()):
        dims = [2 + a for a in range(3) if row[a]]
        expected = x[i : i + 1].flip(dims) if dims else x[i : i + 1]
        assert torch.equal(out[i : i + 1], expected)


def test_flip_is_its_own_inverse_and_moves_input_and_target_together() -> None:
    x, y = cubes(seed=1), cubes(seed=2)
    params = sample_flip(4, torch.Generator().manual_seed(3))
    assert torch.equal(apply_flip(apply_flip(x, params), params), x)
    fx, fy = flip(x, y, torch.Generator().manual_seed(3))
    assert torch.equal(fx, apply_flip(x, params)) and torch.equal(fy, apply_flip(y, params))
    same_x, same_y = flip(x, x.clone(), torch.Generator().manual_seed(4))
    assert torch.equal(same_x, same_y)


def test_apply_mask_false_leaves_samples_alone_and_input_unchanged() -> None:
    x = cubes()
    before = x.clone()
    apply = torch.tensor([False, True, False, True])
    params = sample_flip(4, torch.Generator().manual_seed(5), apply=apply)
    assert not params.axes[~apply].any()
    out, _ = flip(x, x, torch.Generator().manual_seed(5), apply=apply)
    assert torch.equal(out[~apply], x[~apply]) and torch.equal(x, before)


def test_bad_apply_mask() -> None:
    with pytest.raises(ValueError, match=r"apply must be a bool tensor of shape \(4,\)"):
        sample_flip(4, torch.Generator(), apply=torch.ones(3, dtype=torch.bool))


def _oracle_codes(n: int, rng: np.random.Generator) -> np.ndarray:
    """Net flip per axis of the oracle's loop, encoded x + 2y + 4z, on a tiny marker cube."""
    marker = np.arange(8.0).reshape(2, 2, 2)
    lookup = {}
    for code in range(8):
        dims = [a for a in range(3) if code >> a & 1]
        lookup[np.flip(marker, dims).tobytes() if dims else marker.tobytes()] = code
    return np.array([lookup[oracle.flip_pair(marker, marker, rng)[0].tobytes()] for _ in range(n)])


def test_flip_distribution_matches_the_oracle() -> None:
    """Apply mask drawn at rate 0.4 like the composition does; 8 outcome frequencies agree."""
    n = 10_000
    generator = torch.Generator().manual_seed(6)
    apply = torch.rand(n, generator=generator) < 0.4
    axes = sample_flip(n, generator, apply=apply).axes.long()
    ours = np.bincount((axes[:, 0] + 2 * axes[:, 1] + 4 * axes[:, 2]).numpy(), minlength=8)
    theirs = np.bincount(_oracle_codes(n, np.random.default_rng(7)), minlength=8)
    p = (ours + theirs) / (2 * n)
    sigma = np.sqrt(2 * p * (1 - p) / n)  # standard error of a difference of two shares
    assert np.all(np.abs(ours - theirs) / n <= 4 * sigma + 1e-9), (ours, theirs)
    # Unflipped: no flip (0.6), or two flips along one axis (0.4 * 0.4 / 3, third not drawn).
    assert abs(ours[0] / n - (0.6 + 0.4 * 0.4 * 0.6 / 3)) < 4 * np.sqrt(0.25 / n)


def test_cpu_and_accelerator_flip_paths_agree() -> None:
    """The CPU path (a strided NumPy copy per sample) and the batched torch path used on
    accelerators, both run on CPU, on every combination of axes and a strided input."""
    from genesis.transforms.flip import _flip_grouped

    axes = torch.tensor(
        [[(code >> axis) & 1 for axis in range(3)] for code in range(8)], dtype=torch.bool
    )
    x = torch.rand((8, 1, 6, 5, 4), generator=torch.Generator().manual_seed(3))
    for cubes in (x, x.transpose(2, 3)):
        assert torch.equal(apply_flip(cubes, FlipParams(axes=axes)), _flip_grouped(cubes, axes))
