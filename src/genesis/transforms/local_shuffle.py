"""Local pixel shuffling: permute the voxels inside many small blocks (facts §2).

Keeps the global intensity distribution (each block's values are a permutation of its own)
and destroys local texture, so the model must learn local boundaries and texture to restore
it. The release loops over 10,000 blocks per cube in Python. Here the blocks of the whole
batch are grouped by size: all blocks of one size form a dense (blocks, voxels) matrix, whose
rows are permuted by one row-wise sort of random keys that carry the voxel's slot in their
low bits. At most (n//10)^3 sizes exist (108 for 64x64x32), so the only Python loop runs over
sizes, never over blocks or voxels. One scatter-max of (block, slot) pairs then resolves
overlaps (the latest block wins), and one gather writes the result.
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
    writes = _block_writes(params, shape, cubes.numel(), cubes.device)
    # Last write wins: each voxel keeps the largest (block + 1) << bits | slot written to it;
    # 0 means no block covers the voxel, which then keeps its own value.
    latest = torch.zeros(cubes.numel(), dtype=writes.tag.dtype, device=cubes.device)
    latest.scatter_reduce_(0, writes.dst, writes.tag, reduce="amax")
    block = latest >> writes.bits
    slot = latest & ((1 << writes.bits) - 1)
    offsets = writes.offsets.index_select(0, writes.first.index_select(0, block) + slot)
    source = writes.base.index_select(0, block) + offsets
    flat = cubes.reshape(-1)
    return torch.where(block > 0, flat.index_select(0, source), flat).view(cubes.shape)


@dataclass(frozen=True)
class _Writes:
    """Every voxel write of a batch, and the tables that turn a winning write into a source.

    dst, tag: (L,) flat destination and (block + 1) << bits | source slot of every write.
    base, first: (M + 1,) first voxel of block m and first offset of its size at m + 1
    (entry 0 is unused: no block). offsets: raster offsets of all block sizes.
    """

    dst: torch.Tensor
    tag: torch.Tensor
    bits: int
    base: torch.Tensor
    first: torch.Tensor
    offsets: torch.Tensor


def _block_writes(params: ShuffleParams, shape: tuple[int, int, int], numel: int,
                  device: torch.device) -> _Writes:
    """Destinations and tags of every write, built one block size at a time.

    In the matrix of one size, row r holds the destinations of a block in raster order, and
    the sorted keys of the row give the slot each destination reads from. On CPU the per-size
    passes run in NumPy, whose overhead per call on such small matrices is a third of
    torch's; both paths give the same tags for the same keys, since a row's keys differ.
    """
    X, Y, Z = shape
    mx, my, mz = max_block(shape)
    bits = (mx * my * mz - 1).bit_length()  # bits of a slot inside the largest block
    blocks = params.sizes.shape[0] * params.sizes.shape[1]
    cpu = device.type == "cpu"
    # int32 where it fits: it halves the memory traffic and the CPU scatter-max is 3x faster.
    narrow = bits <= 8 and (blocks + 1) << bits < 2**31
    dtype = torch.int32 if narrow else torch.int64
    index = torch.int32 if cpu and numel < 2**31 else torch.int64
    offsets, table_first, table_volume = _offset_table(shape, device, index)
    sizes = params.sizes.to(device).flatten(0, 1)  # (M, 3), blocks in write order
    corners = params.corners.to(device).flatten(0, 1)
    samples = params.samples.to(device).repeat_interleave(params.sizes.shape[1])
    strides = torch.tensor([Y * Z, Z, 1], device=device)
    base = (samples * (X * Y * Z) + (corners * strides).sum(dim=1)).to(index)
    code = ((sizes[:, 0] - 1) * my + sizes[:, 1] - 1) * mz + sizes[:, 2] - 1
    by_size = _group_by_size(code)  # blocks grouped by size, in write order within a size
    total = int(table_volume.index_select(0, code).sum())
    keys = _entry_keys(params, total, dtype).to(device)  # (L,) becomes the tags in place
    dst = torch.empty(total, dtype=index, device=device)
    tags = ((by_size + 1) << bits).to(dtype)
    ordered_base = base.index_select(0, by_size)
    arrays = [keys, dst, tags, ordered_base, offsets]
    if cpu:
        arrays = [array.numpy() for array in arrays]
    keys_a, dst_a, tags_a, base_a, offsets_a = arrays
    mask = (1 << bits) - 1
    keys_a &= ~mask
    counts = torch.bincount(code, minlength=mx * my * mz).tolist()
    first_block, first_write = 0, 0
    for count, k, lo in zip(counts, table_volume.tolist(), table_first.tolist(), strict=True):
        if count == 0:  # one pass per block size, not per block
            continue
        end, last_block = first_write + count * k, first_block + count
        grid = dst_a[first_write:end].reshape(count, k)  # destinations, raster order
        row_keys = keys_a[first_write:end].reshape(count, k)
        row_base = base_a[first_block:last_block, None]
        if cpu:
            np.add(row_base, offsets_a[lo:lo + k], out=grid)
            row_keys |= np.arange(k, dtype=row_keys.dtype)
            row_keys.sort(axis=1)  # in place; random order of the slots per row
        else:
            torch.add(row_base, offsets_a[lo:lo + k], out=grid)
            row_keys |= torch.arange(k, dtype=row_keys.dtype, device=device)
            row_keys.copy_(torch.sort(row_keys, dim=1).values)
        row_keys &= mask  # the slot each destination reads from
        row_keys |= tags_a[first_block:last_block, None]
        first_block, first_write = last_block, end
    padded_base = torch.zeros(blocks + 1, dtype=index, device=device)
    padded_base[1:] = base
    padded_first = torch.zeros(blocks + 1, dtype=index, device=device)
    padded_first[1:] = table_first.index_select(0, code)
    return _Writes(dst=dst, tag=keys, bits=bits, base=padded_base, first=padded_first,
                   offsets=offsets)


def _group_by_size(code: torch.Tensor) -> torch.Tensor:
    """Stable order of the blocks by size code. NumPy's radix sort of int16 codes is five
    times faster on CPU than torch's stable sort."""
    if code.device.type == "cpu":
        return torch.from_numpy(np.argsort(code.to(torch.int16).numpy(), kind="stable"))
    return torch.sort(code, stable=True).indices


def _entry_keys(params: ShuffleParams, total: int, dtype: torch.dtype) -> torch.Tensor:
    """Random integer sort keys for every write, replayable from ``params.seed``.

    Drawn where the parameters live: with a CPU generator as raw words of a NumPy PCG64 stream
    seeded by ``params.seed`` (twice as fast as float draws), so CPU and CUDA cubes get the
    same permutations; with a CUDA generator on the GPU. The low ``bits`` of a key are replaced
    by the voxel's slot, so int32 keys keep 32 - bits random bits (25 for 64x64x32). Two equal
    random parts keep their raster order: for a block of k voxels that happens with
    probability k(k-1)/2 / 2**25, 1.6e-5 for the mean block and 1.7e-4 for the largest (108
    voxels), a bias far below any effect on training. int64 keys (large blocks or batches)
    make it negligible.
    """
    device = params.sizes.device
    if device.type == "cpu":
        narrow = dtype == torch.int32
        raw = np.random.default_rng(params.seed).bit_generator.random_raw(
            (total + 1) // 2 if narrow else total)
        return torch.from_numpy(raw.view(np.int32 if narrow else np.int64)[:total])
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, (total,), dtype=dtype, device=device,
                         generator=sub_generator(params.seed, device))


@functools.lru_cache(maxsize=8)
def _offset_table(shape: tuple[int, int, int], device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Raster offsets of the voxels of every possible block size, one size after another.

    Size code ((sx-1)*my + sy-1)*mz + sz-1 has its sx*sy*sz offsets at ``first[code]``
    onwards; ``volume[code]`` (int64) is sx*sy*sz. 2,646 offsets in all for 64x64x32.
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
    return (i * (Y * Z) + j * Z + k).to(dtype), first.to(dtype), volume


def local_pixel_shuffle(cubes: torch.Tensor, generator: torch.Generator, *,
                        apply: torch.Tensor | None = None,
                        blocks: int = 10_000) -> torch.Tensor:
    """Shuffle ``blocks`` random blocks in each applied sample; see ``sample_local_shuffle``."""
    params = sample_local_shuffle(cubes.shape[0], spatial_shape(cubes), generator,
                                  apply=apply, blocks=blocks)
    return apply_local_shuffle(cubes, params)
