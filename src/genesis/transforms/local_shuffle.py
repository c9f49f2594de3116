"""Local pixel shuffling: permute the voxels inside many small blocks (facts §2).

Keeps the global intensity distribution (each block's values are a permutation of its own)
and destroys local texture, so the model must learn local boundaries and texture to restore
it. The release loops over 10,000 blocks per cube in Python. Here the blocks of the whole
batch are grouped by size: all blocks of one size form a dense (blocks, voxels) matrix, whose
rows are permuted by one row-wise sort of random keys that carry the voxel's slot in their
low bits. At most (n//10)^3 sizes exist (108 for 64x64x32), so the only Python loop runs over
sizes, never over blocks or voxels. Every write is tagged (block, source voxel); one
scatter-max of the tags resolves overlaps (the latest block wins), and one gather writes the
result.

On CPU the small per-size passes run in NumPy, the block parameters and sort keys come from
a sub-seeded NumPy SFC64 stream, and the write lists live in reused scratch buffers
(``genesis.transforms._workspace``); on a GPU the same steps run as torch ops.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from genesis.transforms._random import (
    below,
    randint,
    random_words,
    selected,
    sub_generator,
    sub_seed,
)
from genesis.transforms._shape import check_boxes_fit, numpy_ready, spatial_shape
from genesis.transforms._workspace import scratch


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
    if device.type == "cpu":  # NumPy draws: a third of the time of torch's CPU generator
        # Axis-major (3, S * B) layout: NumPy's broadcasting is slow along a length-3 axis.
        words = random_words(sub_seed(generator), math.prod(count)).reshape(3, -1)
        column = (3, 1)
        lengths = np.array(shape, dtype=np.uint64).reshape(column)
        edges = 1 + below(words & np.uint64(2**32 - 1),
                          np.array(max_block(shape), dtype=np.uint64).reshape(column))
        lowest = below(words >> np.uint64(32), lengths + 1 - edges)
        sizes, corners = (torch.from_numpy(a.T.astype(np.int64, order="C")).view(count)
                          for a in (edges, lowest))
    else:
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
    return apply_local_shuffle_(cubes.clone(memory_format=torch.contiguous_format), params)


def apply_local_shuffle_(cubes: torch.Tensor, params: ShuffleParams) -> torch.Tensor:
    """``apply_local_shuffle`` in place: modifies and returns ``cubes``."""
    shape = spatial_shape(cubes)
    if params.samples.numel() == 0:
        return cubes
    samples = params.samples.to(cubes.device)
    source = _sources(params, shape, cubes.device, numpy=cubes.device.type == "cpu")
    flat = cubes.reshape(-1)
    if numpy_ready(cubes):  # NumPy's take is the faster gather; wrap skips bounds checks
        shuffled = scratch("shuffled", source.numel(), cubes.dtype)
        flat.numpy().take(source.numpy(), out=shuffled.numpy(), mode="wrap")
    else:
        shuffled = flat.index_select(0, source)
    return cubes.index_copy_(0, samples, shuffled.view(-1, 1, *shape))


def _sources(params: ShuffleParams, shape: tuple[int, int, int], device: torch.device, *,
             numpy: bool) -> torch.Tensor:
    """(S * X * Y * Z,) flat index into the batch of the voxel each voxel of the shuffled
    samples reads (on CPU a scratch buffer, valid until the next call).

    Every write of every block gets a tag (block + 1) << voxel_bits | source voxel, the
    source counted within its cube; a scatter-max of the tags over the destinations keeps
    the latest block's write, and its low bits are then the answer. Voxels no block covers
    keep their initial tag, block 0 with themselves as source. 10,000 blocks and a
    64x64x32 cube need 14 + 17 bits, so the tags fit int32, whose CPU scatter-max is
    several times faster than int64's; larger settings switch to int64.

    The tags are built one block size at a time: in the matrix of one size, row r holds the
    destinations of a block in raster order, and a row-wise sort of random keys that carry
    a slot in their low bits gives the slot each destination reads from. ``numpy`` runs
    these small per-size passes in NumPy, whose overhead per call is a third of torch's;
    both give the same tags for the same keys, since the keys of a row differ.
    """
    X, Y, Z = shape
    volume = X * Y * Z
    mx, my, mz = max_block(shape)
    rows, per_row = params.sizes.shape[:2]
    slot_bits = (mx * my * mz - 1).bit_length()
    voxel_bits = (volume - 1).bit_length()
    batch = (int(params.samples.max()) + 1) * volume  # voxels up to the last shuffled sample
    narrow = (per_row + 1) << voxel_bits < 2**31 and batch < 2**31
    tag_type = torch.int32 if narrow else torch.int64
    index_type = torch.int64
    offsets, table_first, table_volume = _offset_table(shape, device, index_type)
    sizes = params.sizes.to(device).flatten(0, 1)  # (M, 3), blocks in write order
    corners = params.corners.to(device).flatten(0, 1)
    strides = torch.tensor([Y * Z, Z, 1], device=device)
    local = (corners * strides).sum(dim=1)  # lowest corner within the cube
    row = torch.arange(rows, device=device).repeat_interleave(per_row)
    order = torch.arange(1, per_row + 1, device=device).repeat(rows)
    code = ((sizes[:, 0] - 1) * my + sizes[:, 1] - 1) * mz + sizes[:, 2] - 1
    by_size = _group_by_size(code)  # blocks grouped by size, in write order within a size
    first_dst = (row * volume + local).index_select(0, by_size).to(index_type)
    first_tag = ((order << voxel_bits) + local).index_select(0, by_size).to(tag_type)
    total = int(table_volume.index_select(0, code).sum())
    key_type = torch.int32 if slot_bits <= 8 else torch.int64
    keys = _entry_keys(params, total, key_type).to(device)  # sort keys, then slots
    if numpy:  # the write lists never leave this function: reuse their memory
        dst, tags = scratch("dst", total, index_type), scratch("tags", total, tag_type)
    else:
        dst = torch.empty(total, dtype=index_type, device=device)
        tags = torch.empty(total, dtype=tag_type, device=device)
    arrays = [keys, dst, tags, first_dst, first_tag, offsets, offsets.to(tag_type)]
    if numpy:
        arrays = [array.cpu().numpy() for array in arrays]
    keys_a, dst_a, tags_a, first_dst_a, first_tag_a, offsets_a, tag_offsets_a = arrays
    mask = (1 << slot_bits) - 1
    keys_a &= ~mask
    counts = torch.bincount(code, minlength=mx * my * mz).tolist()
    first_block, first_write = 0, 0
    for count, k, lo in zip(counts, table_volume.tolist(), table_first.tolist(), strict=True):
        if count == 0:  # one pass per block size, not per block
            continue
        end, last_block = first_write + count * k, first_block + count
        row_keys = keys_a[first_write:end].reshape(count, k)
        row_dst = dst_a[first_write:end].reshape(count, k)  # destinations, raster order
        row_tags = tags_a[first_write:end].reshape(count, k)
        if numpy:
            np.add(first_dst_a[first_block:last_block, None], offsets_a[lo:lo + k], out=row_dst)
            row_keys |= np.arange(k, dtype=row_keys.dtype)
            row_keys.sort(axis=1)  # in place; random order of the slots per row
            row_keys &= mask  # the slot each destination reads from
            # Flat and mode="wrap" (a no-op: slots are in range) skip the slow bounds checks.
            np.take(tag_offsets_a[lo:lo + k], row_keys.ravel(), out=row_tags.ravel(),
                    mode="wrap")
        else:
            torch.add(first_dst_a[first_block:last_block, None], offsets_a[lo:lo + k],
                      out=row_dst)
            row_keys |= torch.arange(k, dtype=row_keys.dtype, device=device)
            slot = torch.sort(row_keys, dim=1).values & mask
            row_tags.copy_(tag_offsets_a[lo:lo + k][slot.long()])
        row_tags += first_tag_a[first_block:last_block, None]
        first_block, first_write = last_block, end
    # Initial tags: block 0, every voxel its own source.
    identity = torch.arange(volume, dtype=tag_type, device=device)
    if numpy:
        latest = scratch("latest", rows * volume, tag_type).view(rows, volume)
        latest.copy_(identity)
        latest = latest.view(-1)
    else:
        latest = identity.repeat(rows)
    latest.scatter_reduce_(0, dst, tags, reduce="amax")
    source = latest.bitwise_and_((1 << voxel_bits) - 1).view(rows, volume)
    source += (params.samples.to(device, tag_type) * volume)[:, None]
    return source.view(-1).to(index_type)


def _group_by_size(code: torch.Tensor) -> torch.Tensor:
    """Stable order of the blocks by size code. NumPy's radix sort of int16 codes is five
    times faster on CPU than torch's stable sort."""
    if code.device.type == "cpu":
        return torch.from_numpy(np.argsort(code.to(torch.int16).numpy(), kind="stable"))
    return torch.sort(code, stable=True).indices


def _entry_keys(params: ShuffleParams, total: int, dtype: torch.dtype) -> torch.Tensor:
    """Random integer sort keys for every write, replayable from ``params.seed``.

    Drawn where the parameters live: with a CPU generator as raw words of a NumPy SFC64 stream
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
        raw = random_words(params.seed, (total + 1) // 2 if narrow else total)
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
