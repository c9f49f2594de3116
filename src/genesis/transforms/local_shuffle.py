"""Local pixel shuffling: permute the voxels inside many small blocks (facts §2).

Keeps the global intensity distribution (each block's values are a permutation of its own)
and destroys local texture, so the model must learn local boundaries and texture to restore
it. The release loops over 10,000 blocks per cube in
Python. Here the blocks of the whole batch are grouped by size: all blocks of one size form
a dense (blocks, voxels) matrix, whose rows are permuted by one row-wise argsort of random
keys. At most (n//10)^3 sizes exist (108 for 64x64x32), so the only Python loop runs over
sizes, never over blocks or voxels. One scatter-max then resolves overlaps (the latest
block wins) and one gather writes the result.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from genesis.transforms._random import randint, selected, sub_generator, sub_seed
from genesis.transforms._shape import check_boxes_fit, spatial_shape


@dataclass(frozen=True)
class ShuffleParams:
    """Blocks of a batch, in the order they are written.

    samples: (S,) indices of the shuffled samples. sizes, corners: (S, B, 3) block size and
    lowest corner along x, y, z. seed: seeds the random permutation inside every block.
    """

    samples: torch.Tensor
    sizes: torch.Tensor
    corners: torch.Tensor
    seed: int


def max_block(shape: tuple[int, int, int]) -> list[int]:
    """Largest block edge per axis: n // 10, as in the release."""
    return [length // 10 for length in shape]


def sample_local_shuffle(n: int, shape: tuple[int, int, int], generator: torch.Generator, *,
                         apply: torch.Tensor | None = None,
                         blocks: int = 10_000) -> ShuffleParams:
    """Draw ``blocks`` blocks for each sample where ``apply`` is True (all when None).

    Distribution: edge along each axis uniform in [1, n // 10] (bounds inclusive), lowest
    corner uniform in [0, n - edge], so every block lies inside the cube.
    """
    check_boxes_fit(shape, [1, 1, 1], max_block(shape), 0, "local_shuffle")
    device = generator.device
    samples = selected(apply, n, device)
    count = (samples.numel(), blocks, 3)
    dims = torch.tensor(shape, device=device).expand(count)
    sizes = randint(generator, torch.ones(count, dtype=torch.long, device=device),
                    torch.tensor(max_block(shape), device=device).expand(count))
    corners = randint(generator, torch.zeros_like(sizes), dims - sizes)
    return ShuffleParams(samples=samples, sizes=sizes, corners=corners,
                         seed=sub_seed(generator))


def apply_local_shuffle(cubes: torch.Tensor, params: ShuffleParams) -> torch.Tensor:
    """Shuffle the blocks of ``params`` into a copy of ``cubes`` (N, 1, X, Y, Z).

    Every block is read from the unshuffled cube and written in block order, so where
    blocks overlap the later one wins, as in the release's sequential loop.
    """
    shape = spatial_shape(cubes)
    if params.samples.numel() == 0:
        return cubes.clone()
    if cubes.numel() > _SOURCE_MASK:
        raise ValueError(f"batch of {cubes.numel()} voxels is too large to shuffle at once; "
                         f"split it below {_SOURCE_MASK}")
    dst, write = _block_writes(params, shape, cubes.device)
    # Last write wins: each voxel keeps the write with the largest (block + 1) << 32 | source.
    # Starting from (0 << 32 | own index), voxels no block covers read themselves.
    latest = torch.arange(cubes.numel(), device=cubes.device)
    latest.scatter_reduce_(0, dst, write, reduce="amax")
    source = torch.bitwise_and(latest, _SOURCE_MASK)
    return cubes.reshape(-1).index_select(0, source).view(cubes.shape)


# A write packs (block number + 1) above bit 32 and the flat source index below.
_SOURCE_BITS = 32
_SOURCE_MASK = (1 << _SOURCE_BITS) - 1


def _block_writes(params: ShuffleParams, shape: tuple[int, int, int],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Every voxel write of every block: (L,) flat destinations and packed writes.

    Blocks are grouped by size (class layout): all blocks of one size form a dense
    (blocks, voxels) matrix of destinations in raster order, and one row-wise argsort of
    random keys gives each row its random permutation, i.e. where each voxel reads from.
    """
    X, Y, Z = shape
    mx, my, mz = max_block(shape)
    sizes = params.sizes.to(device).flatten(0, 1)  # (M, 3), blocks in write order
    corners = params.corners.to(device).flatten(0, 1)
    samples = params.samples.to(device).repeat_interleave(params.sizes.shape[1])
    strides = torch.tensor([Y * Z, Z, 1], device=device)
    base = samples * (X * Y * Z) + (corners * strides).sum(dim=1)  # (M,) first voxel
    code = ((sizes[:, 0] - 1) * my + sizes[:, 1] - 1) * mz + sizes[:, 2] - 1
    offsets, table_first, table_volume = _offset_table(shape, device)
    by_size = torch.sort(code, stable=True).indices  # blocks grouped by size, in order
    total = int(table_volume.index_select(0, code).sum())
    keys = _entry_keys(params, total).to(device)  # (L,) one random key per write
    dst = torch.empty(total, dtype=torch.long, device=device)
    write = torch.empty_like(dst)
    counts = torch.bincount(code, minlength=mx * my * mz).tolist()
    first_block, first_write = 0, 0
    for count, k, lo in zip(counts, table_volume.tolist(), table_first.tolist(), strict=True):
        if count == 0:  # one pass per block size, not per block
            continue
        rows = by_size[first_block:first_block + count]  # (B_c,) block numbers
        end = first_write + count * k
        grid = dst[first_write:end].view(count, k)  # destinations, raster order per block
        torch.add(base.index_select(0, rows)[:, None], offsets[lo:lo + k], out=grid)
        order = _argsort_rows(keys[first_write:end].view(count, k))  # random per row
        packed = write[first_write:end].view(count, k)
        torch.gather(grid, 1, order, out=packed)  # sources: a permutation of the block
        packed += ((rows + 1) << _SOURCE_BITS)[:, None]
        first_block, first_write = first_block + count, end
    return dst, write


def _entry_keys(params: ShuffleParams, total: int) -> torch.Tensor:
    """Random float64 sort keys for every entry, replayable from ``params.seed``.

    Drawn where the parameters live: with a CPU generator from a NumPy PCG64 stream seeded
    by ``params.seed`` (three times faster than torch's CPU generator for float64), so CPU
    and CUDA cubes get the same permutations; with a CUDA generator on the GPU. Ties among
    53-bit keys are too rare to matter (about 1e-13 per block).
    """
    device = params.sizes.device
    if device.type == "cpu":
        return torch.from_numpy(np.random.default_rng(params.seed).random(total))
    return torch.rand(total, dtype=torch.float64, device=device,
                      generator=sub_generator(params.seed, device))


def _argsort_rows(keys: torch.Tensor) -> torch.Tensor:
    """Row-wise argsort. On CPU NumPy's vectorised sort is several times faster than
    torch's for rows of a few dozen elements; both give the same order for distinct keys."""
    if keys.device.type == "cpu":
        return torch.from_numpy(np.argsort(keys.numpy(), axis=1))
    return torch.argsort(keys, dim=1, stable=True)


@functools.lru_cache(maxsize=8)
def _offset_table(shape: tuple[int, int, int],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raster offsets of the voxels of every possible block size, one size after another.

    Size code ((sx-1)*my + sy-1)*mz + sz-1 has its sx*sy*sz offsets at ``first[code]``
    onwards; ``volume[code]`` is sx*sy*sz. 2,646 offsets in all for 64x64x32.
    """
    _, Y, Z = shape
    mx, my, mz = max_block(shape)
    code = torch.arange(mx * my * mz, device=device)
    sx, sy, sz = code // (my * mz) + 1, code // mz % my + 1, code % mz + 1
    volume = sx * sy * sz
    first = volume.cumsum(0) - volume
    owner = torch.repeat_interleave(code, volume)
    slot = torch.arange(owner.numel(), device=device) - first[owner]
    plane = sy[owner] * sz[owner]
    i, j, k = slot // plane, slot % plane // sz[owner], slot % sz[owner]
    return i * (Y * Z) + j * Z + k, first, volume


def local_pixel_shuffle(cubes: torch.Tensor, generator: torch.Generator, *,
                        apply: torch.Tensor | None = None,
                        blocks: int = 10_000) -> torch.Tensor:
    """Shuffle ``blocks`` random blocks in each applied sample; see ``sample_local_shuffle``."""
    params = sample_local_shuffle(cubes.shape[0], spatial_shape(cubes), generator,
                                  apply=apply, blocks=blocks)
    return apply_local_shuffle(cubes, params)
