"""In-painting and out-painting: box ranges, margins, noise, untouched voxels, box counts."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import torch
import transforms_oracle as oracle

from genesis.errors import ConfigError
from genesis.transforms import (
    PaintParams,
    apply_inpaint,
    apply_inpaint_,
    apply_outpaint,
    apply_outpaint_,
    box_mask,
    inpaint,
    outpaint,
    sample_inpaint,
    sample_outpaint,
)

SHAPE = (64, 64, 32)


def explicit_mask(
    corners: torch.Tensor, sizes: torch.Tensor, active: torch.Tensor, shape: tuple[int, int, int]
) -> torch.Tensor:
    """The union of boxes, painted box by box."""
    mask = torch.zeros(shape, dtype=torch.bool)
    for (cx, cy, cz), (sx, sy, sz), on in zip(
        corners.tolist(), sizes.tolist(), active.tolist(), strict=True
    ):
        if on:
            mask[cx : cx + sx, cy : cy + sy, cz : cz + sz] = True
    return mask


@pytest.mark.parametrize(
    ("sample", "low", "high", "sampler"),
    [
        (sample_inpaint, [10, 10, 5], [21, 21, 10], oracle.inpaint_hole),
        (sample_outpaint, [28, 28, 14], [37, 37, 19], oracle.outpaint_window),
    ],
)
def test_box_sizes_and_positions_cover_the_stated_ranges_like_the_oracle(
    sample: Callable[..., PaintParams],
    low: list[int],
    high: list[int],
    sampler: Callable[..., oracle.Box],
) -> None:
    params = sample(4000, SHAPE, torch.Generator().manual_seed(0))
    sizes, corners = params.sizes.reshape(-1, 3), params.corners.reshape(-1, 3)
    rng = np.random.default_rng(1)
    theirs = np.array([sampler(rng, SHAPE)[0] for _ in range(4000)])
    for axis, n in enumerate(SHAPE):
        assert sizes[:, axis].min() == low[axis] and sizes[:, axis].max() == high[axis]
        assert theirs[:, axis].min() == low[axis] and theirs[:, axis].max() == high[axis]
        assert corners[:, axis].min() == 3  # 3-voxel margin, reached
        assert (corners[:, axis] + sizes[:, axis]).max() == n - 3
        error = np.sqrt(((high[axis] - low[axis] + 1) ** 2 - 1) / 12 / 4000)
        assert abs(sizes[:, axis].float().mean() - theirs[:, axis].mean()) < 6 * error


def test_box_counts() -> None:
    """In-painting: hole k exists after k + 1 draws below 0.95 (none with p = 0.05).
    Out-painting: the first window always, then up to 4 more while rand < 0.95."""
    n = 10_000
    holes = sample_inpaint(n, SHAPE, torch.Generator().manual_seed(2)).active.sum(dim=1)
    windows = sample_outpaint(n, SHAPE, torch.Generator().manual_seed(3)).active.sum(dim=1)
    p = 0.95
    expected_holes = [(1 - p) * p**k for k in range(5)] + [p**5]
    expected_windows = [0] + [(1 - p) * p ** (k - 1) for k in range(1, 5)] + [p**4]
    for counts, expected in ((holes, expected_holes), (windows, expected_windows)):
        share = np.bincount(counts.numpy(), minlength=6) / n
        sigma = np.sqrt(np.array(expected) * (1 - np.array(expected)) / n)
        assert np.all(np.abs(share - expected) <= 4 * sigma + 1e-12), share


def test_box_mask_is_the_union_of_the_active_boxes() -> None:
    shape = (20, 20, 14)
    params = sample_inpaint(6, shape, torch.Generator().manual_seed(4))
    mask = box_mask(params, shape, torch.device("cpu"))
    for row in range(6):
        expected = explicit_mask(params.corners[row], params.sizes[row], params.active[row], shape)
        assert torch.equal(mask[row, 0], expected)


def test_inpainting_fills_holes_with_noise_and_keeps_the_rest() -> None:
    shape = (20, 20, 14)
    x = torch.full((5, 1, *shape), 2.0)  # outside [0, 1): noise is easy to tell apart
    params = sample_inpaint(5, shape, torch.Generator().manual_seed(5))
    out = apply_inpaint(x, params)
    mask = box_mask(params, shape, torch.device("cpu"))
    assert torch.equal(out[~mask], x[~mask])
    noise = out[mask]
    assert noise.numel() > 0 and (noise >= 0).all() and (noise < 1).all()
    assert noise.unique().numel() > 0.9 * noise.numel()


def test_outpainting_keeps_the_windows_and_fills_the_rest_with_noise() -> None:
    shape = (20, 20, 14)
    x = torch.full((5, 1, *shape), 2.0)
    params = sample_outpaint(5, shape, torch.Generator().manual_seed(6))
    out = apply_outpaint(x, params)
    mask = box_mask(params, shape, torch.device("cpu"))
    assert mask.view(5, -1).any(dim=1).all()  # every sample keeps a window
    assert torch.equal(out[mask], x[mask])
    noise = out[~mask]
    assert (noise >= 0).all() and (noise < 1).all()
    assert abs(noise.mean().item() - 0.5) < 0.02


def test_covered_share_matches_the_oracle() -> None:
    """Mean share of voxels the noise covers, batched sampler vs the oracle's loops."""
    shape, n = (20, 20, 14), 1500
    ours_in = (
        box_mask(
            sample_inpaint(n, shape, torch.Generator().manual_seed(7)), shape, torch.device("cpu")
        )
        .float()
        .mean()
        .item()
    )
    ours_out = (
        1
        - box_mask(
            sample_outpaint(n, shape, torch.Generator().manual_seed(8)), shape, torch.device("cpu")
        )
        .float()
        .mean()
        .item()
    )
    rng = np.random.default_rng(9)
    marker = np.full(shape, 2.0)
    theirs_in = np.mean([(oracle.in_painting(marker, rng) < 1).mean() for _ in range(n)])
    theirs_out = np.mean([(oracle.out_painting(marker, rng) < 1).mean() for _ in range(n)])
    assert abs(ours_in - theirs_in) < 0.01 and abs(ours_out - theirs_out) < 0.01


def test_apply_mask_replay_input_untouched() -> None:
    shape = (20, 20, 14)
    x = torch.rand((4, 1, *shape), generator=torch.Generator().manual_seed(10))
    before = x.clone()
    apply = torch.tensor([False, True, True, False])
    for op in (inpaint, outpaint):
        a = op(x, torch.Generator().manual_seed(11), apply=apply)
        b = op(x, torch.Generator().manual_seed(11), apply=apply)
        assert torch.equal(a, b) and torch.equal(a[~apply], x[~apply])
    assert torch.equal(x, before)


def test_too_small_cube_is_a_config_error() -> None:
    """A 10-slice cube fits in-painting holes but not out-painting windows with margins."""
    x = torch.rand((1, 1, 20, 20, 10))
    inpaint(x, torch.Generator())
    with pytest.raises(ConfigError, match="cube axis z has 10 voxels, too few for outpainting"):
        outpaint(x, torch.Generator())


def test_in_place_painting_of_a_strided_batch_takes_the_torch_path_alike() -> None:
    """A non-contiguous batch is painted with torch indexing (the GPU path), a contiguous
    one with NumPy: same selected samples, same boxes, same noise."""
    shape = (20, 20, 14)
    x = torch.rand((4, 1, *shape), generator=torch.Generator().manual_seed(7))
    apply = torch.tensor([True, False, True, True])
    for sample, apply_ in ((sample_inpaint, apply_inpaint_), (sample_outpaint, apply_outpaint_)):
        params = sample(4, shape, torch.Generator().manual_seed(8), apply=apply)
        strided = x.transpose(2, 3).contiguous().transpose(2, 3)  # same values, other strides
        assert not strided.is_contiguous()
        assert torch.equal(apply_(x.clone(), params), apply_(strided, params))
        assert torch.equal(strided[1], x[1])  # unselected sample untouched


def test_cpu_pattern_table_paints_what_the_voxel_passes_paint() -> None:
    """The CPU mask (a per-sample table of plane bit patterns) equals the two broadcast
    ANDs over every voxel that accelerators run, for holes and for windows, with samples
    left out of the batch."""
    from genesis.transforms.painting import _box_bits, _painted

    shape, n = (24, 20, 16), 7
    apply = torch.tensor([True, False, True, True, False, True, True])
    for sampler, keep_inside in ((sample_inpaint, False), (sample_outpaint, True)):
        params = sampler(n, shape, torch.Generator().manual_seed(21), apply=apply)
        bits = _box_bits(
            params, n, params.samples, shape, torch.device("cpu"), others=int(keep_inside)
        )
        expected = bits == 0 if keep_inside else bits != 0
        ours = _painted(params, n, shape, torch.device("cpu"), keep_inside)
        assert torch.equal(ours, expected)
        assert not ours[~apply].any() and ours[apply].any()


def test_more_boxes_than_mask_bits_is_a_config_error() -> None:
    """63 boxes fit the 64-bit masks and paint their union; 64 are refused by name."""
    shape = (24, 20, 16)
    params = sample_inpaint(
        2, shape, torch.Generator().manual_seed(22), max_holes=63, continue_rate=1.0
    )
    assert params.active.all() and params.corners.shape == (2, 63, 3)
    assert box_mask(params, shape, torch.device("cpu")).any()
    with pytest.raises(ConfigError, match="inpainting: 64 boxes per sample; 1 to 63"):
        sample_inpaint(2, shape, torch.Generator(), max_holes=64)
