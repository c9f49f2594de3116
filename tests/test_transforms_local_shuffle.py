"""Local pixel shuffling: block contents, last write wins, ranges, uniform permutations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
import transforms_oracle as oracle

from genesis.errors import ConfigError
from genesis.transforms import (
    ShuffleParams,
    apply_local_shuffle,
    local_pixel_shuffle,
    sample_local_shuffle,
)

SHAPE = (20, 30, 14)


def unique_cubes(n: int, shape: tuple[int, int, int] = SHAPE, seed: int = 0) -> torch.Tensor:
    """Every voxel a different value, so an output value names the voxel it came from."""
    count = n * math.prod(shape)
    values = torch.randperm(count, generator=torch.Generator().manual_seed(seed))
    return (values.float() / count).view(n, 1, *shape)


def box(params: ShuffleParams, row: int, block: int) -> tuple[slice, ...]:
    (sx, sy, sz), (cx, cy, cz) = (
        params.sizes[row, block].tolist(),
        params.corners[row, block].tolist(),
    )
    return slice(cx, cx + sx), slice(cy, cy + sy), slice(cz, cz + sz)


def test_single_block_is_a_permutation_of_its_own_values() -> None:
    x = unique_cubes(3)
    generator = torch.Generator().manual_seed(1)
    params = sample_local_shuffle(3, SHAPE, generator, blocks=1)
    out = apply_local_shuffle(x, params)
    for row in range(3):
        region = box(params, row, 0)
        inside = torch.zeros(SHAPE, dtype=torch.bool)
        inside[region] = True
        assert torch.equal(out[row, 0][inside].sort().values, x[row, 0][inside].sort().values)
        assert torch.equal(out[row, 0][~inside], x[row, 0][~inside])


def test_many_blocks_read_the_original_and_the_last_block_wins() -> None:
    """Reference: a plain loop over blocks recording which block wrote each voxel last."""
    x = unique_cubes(3, seed=2)
    apply = torch.tensor([True, False, True])
    params = sample_local_shuffle(
        3, SHAPE, torch.Generator().manual_seed(3), apply=apply, blocks=400
    )
    out = apply_local_shuffle(x, params)
    assert torch.equal(out[1], x[1])
    for row, sample in enumerate(params.samples.tolist()):
        last = torch.full(SHAPE, -1)
        for block in range(400):
            last[box(params, row, block)] = block
        assert torch.equal(out[sample, 0][last < 0], x[sample, 0][last < 0])
        for block in range(400):
            region = box(params, row, block)
            written = out[sample, 0][region][last[region] == block]
            source = set(x[sample, 0][region].flatten().tolist())
            assert set(written.tolist()) <= source  # taken from the unshuffled block
            assert written.unique().numel() == written.numel()  # no value used twice


def test_permutations_are_uniform() -> None:
    """One 2x2x1 block in 2,400 samples: all 24 orders, each about 100 times (chi-square)."""
    n = 2400
    x = torch.arange(4.0).view(1, 1, 2, 2, 1).expand(n, 1, 2, 2, 1).contiguous()
    x = torch.nn.functional.pad(x, (0, 9, 0, 18, 0, 18))  # a 20x20x10 cube, block at 0
    params = ShuffleParams(
        samples=torch.arange(n),
        sizes=torch.tensor([2, 2, 1]).expand(n, 1, 3),
        corners=torch.zeros((n, 1, 3), dtype=torch.long),
        seed=11,
    )
    out = apply_local_shuffle(x, params)[:, 0, :2, :2, 0].reshape(n, 4)
    index = {p: i for i, p in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([index[tuple(int(v) for v in row)] for row in out.tolist()], minlength=24)
    expected = n / 24
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert counts.min() > 0 and chi2 < 60, counts  # 23 degrees of freedom: p ~ 4e-5


def test_global_histogram_is_kept() -> None:
    """Overlaps can repeat or drop a value, but the intensity distribution stays put."""
    generator = torch.Generator().manual_seed(4)
    x = torch.rand((2, 1, *SHAPE), generator=generator) ** 2
    out = local_pixel_shuffle(x, generator, blocks=3000)
    assert (out != x).float().mean() > 0.3
    for row in range(2):
        hist_in = torch.histc(x[row], bins=10, min=0, max=1) / x[row].numel()
        hist_out = torch.histc(out[row], bins=10, min=0, max=1) / x[row].numel()
        assert (hist_in - hist_out).abs().max() < 0.01
        assert set(out[row].flatten().tolist()) <= set(x[row].flatten().tolist())


def test_block_sizes_and_corners_cover_the_stated_ranges_like_the_oracle() -> None:
    shape = (64, 64, 32)
    params = sample_local_shuffle(1, shape, torch.Generator().manual_seed(5), blocks=20_000)
    sizes, corners = params.sizes[0], params.corners[0]
    rng = np.random.default_rng(6)
    theirs = np.array([oracle.shuffle_block(rng, shape)[0] for _ in range(20_000)])
    for axis, n in enumerate(shape):
        assert sizes[:, axis].min() == 1 and sizes[:, axis].max() == n // 10
        assert theirs[:, axis].min() == 1 and theirs[:, axis].max() == n // 10
        assert (corners[:, axis] >= 0).all()
        assert (corners[:, axis] + sizes[:, axis] <= n).all()
        assert (corners[:, axis] + sizes[:, axis] == n).any() and (corners[:, axis] == 0).any()
        spread = np.sqrt(((n // 10) ** 2 - 1) / 12 / 20_000)  # standard error of a mean
        assert abs(sizes[:, axis].float().mean() - theirs[:, axis].mean()) < 6 * spread


def test_replay_and_input_untouched() -> None:
    x = torch.rand((2, 1, *SHAPE), generator=torch.Generator().manual_seed(7))
    before = x.clone()
    a = local_pixel_shuffle(x, torch.Generator().manual_seed(8), blocks=500)
    b = local_pixel_shuffle(x, torch.Generator().manual_seed(8), blocks=500)
    c = local_pixel_shuffle(x, torch.Generator().manual_seed(9), blocks=500)
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(x, before)


def test_too_small_cube_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cube axis z has 8 voxels, too few for local_shuffle"):
        local_pixel_shuffle(torch.zeros((1, 1, 20, 20, 8)), torch.Generator())


def test_torch_path_builds_the_same_sources_as_the_numpy_path() -> None:
    """The GPU code path (torch ops per block size), run on CPU, gives the same cubes."""
    from genesis.transforms.local_shuffle import _sources_numpy, _sources_torch

    apply = torch.tensor([True, False, True, True])
    params = sample_local_shuffle(
        4, SHAPE, torch.Generator().manual_seed(9), apply=apply, blocks=500
    )
    with_numpy = torch.from_numpy(_sources_numpy(params, SHAPE).copy())
    with_torch = _sources_torch(params, SHAPE, torch.device("cpu"))
    assert torch.equal(with_numpy, with_torch)
    # Parameters not laid out by the CPU sampler (made elsewhere, copied) give the same.
    copied = ShuffleParams(
        samples=params.samples,
        sizes=params.sizes.contiguous(),
        corners=params.corners.contiguous(),
        seed=params.seed,
    )
    assert torch.equal(torch.from_numpy(_sources_numpy(copied, SHAPE)), with_torch)
