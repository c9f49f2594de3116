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

On CPU (``_sources_numpy``) the block bookkeeping and the per-size passes run in NumPy, the
block parameters and sort keys come from a sub-seeded NumPy SFC64 stream, the write lists
live in reused scratch buffers (``genesis.transforms._workspace``), and each shuffled cube
is gathered from itself into one scratch row; on an accelerator (``_sources_torch``) the
same steps run as torch ops. Both give the same cubes for the same parameters.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from genesis.transforms._random import (
    below_,
    randint,
    random_words,
    selected,
    sub_generator,
    sub_seed,
)
from genesis.transforms._shape import check_boxes_fit, distinct, numpy_ready, spatial_shape
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


def sample_local_shuffle(
    n: int,
    shape: tuple[int, int, int],
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    blocks: int = 10_000,
) -> ShuffleParams:
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
        # The tensors are (S, B, 3) views of it, which the CPU shuffle reads back for free.
        # In place where possible: each temporary of this size costs more than its op.
        words = random_words(sub_seed(generator), math.prod(count)).reshape(3, -1)
        column = (3, 1)
        lowest = words >> np.uint64(32)  # the high halves place the blocks
        edges = below_(
            words, np.array(max_block(shape), dtype=np.uint64).reshape(column), low_half=True
        )
        edges += np.uint64(1)
        lowest = below_(lowest, np.array(shape, dtype=np.uint64).reshape(column) + 1 - edges)
        sizes, corners = (
            torch.from_numpy(a.view(np.int64)).T.reshape(count) for a in (edges, lowest)
        )
    else:
        dims = torch.tensor(shape, device=device).expand(count)
        sizes = randint(
            generator,
            torch.ones(count, dtype=torch.long, device=device),
            torch.tensor(max_block(shape), device=device).expand(count),
        )
        corners = randint(generator, torch.zeros_like(sizes), dims - sizes)
    return ShuffleParams(samples=samples, sizes=sizes, corners=corners, seed=sub_seed(generator))


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
    volume = math.prod(shape)
    if numpy_ready(cubes) and cubes.is_contiguous():
        # A shuffled cube reads only from itself: gather row by row, then copy back.
        flat = cubes.view(cubes.shape[0], volume).numpy()
        row = scratch("shuffled", volume, cubes.dtype).numpy()
        for sample, sources in zip(
            distinct(params.samples), _sources_numpy(params, shape), strict=True
        ):
            np.take(flat[sample], sources, out=row, mode="wrap")  # wrap: no bounds checks
            flat[sample] = row
        torch.autograd.graph.increment_version(cubes)  # a NumPy write is invisible to torch
        return cubes
    if cubes.device.type == "cpu":
        sources = torch.from_numpy(_sources_numpy(params, shape))
    else:
        sources = _sources_torch(params, shape, cubes.device)
    samples = params.samples.to(cubes.device)
    index = (sources + samples[:, None] * volume).view(-1)
    shuffled = cubes.reshape(-1).index_select(0, index)
    return cubes.index_copy_(0, samples, shuffled.view(-1, 1, *shape))


class _Layout(NamedTuple):
    """The integer encoding of one batch's writes, shared by both implementations."""

    volume: int  # voxels per cube
    rows: int  # shuffled samples
    per_row: int  # blocks per sample
    slot_bits: int  # a voxel's slot within the largest block
    voxel_bits: int  # a voxel within the cube
    tag_dtype: torch.dtype  # (block + 1) << voxel_bits | voxel: int32 where it fits
    key_dtype: torch.dtype  # sort keys: int32 while a slot needs at most 8 bits

    @classmethod
    def of(cls, params: ShuffleParams, shape: tuple[int, int, int]) -> _Layout:
        rows, per_row = params.sizes.shape[:2]
        slot_bits = (math.prod(max_block(shape)) - 1).bit_length()
        voxel_bits = (math.prod(shape) - 1).bit_length()
        narrow = (per_row + 1) << voxel_bits < 2**31
        return cls(
            volume=math.prod(shape),
            rows=rows,
            per_row=per_row,
            slot_bits=slot_bits,
            voxel_bits=voxel_bits,
            tag_dtype=torch.int32 if narrow else torch.int64,
            key_dtype=torch.int32 if slot_bits <= 8 else torch.int64,
        )


def _sources_numpy(params: ShuffleParams, shape: tuple[int, int, int]) -> np.ndarray:
    """(S, X * Y * Z) int64: for every voxel of each shuffled sample, the voxel of the same
    cube it reads (a scratch buffer, valid until the next call).

    Every write of every block gets a tag (block + 1) << voxel_bits | source voxel; a
    scatter-max of the tags over the destinations keeps the latest block's write, and its
    low bits are then the answer. Voxels no block covers keep their initial tag, block 0
    with themselves as source. 10,000 blocks and a 64x64x32 cube need 14 + 17 bits, so the
    tags fit int32; larger settings switch to int64.

    The tags are built one block size at a time: in the matrix of one size, row r holds the
    destinations of a block in raster order, and a row-wise sort of random keys that carry
    a slot in their low bits gives the slot each destination reads from. The only Python
    loop runs over the (at most (n//10)^3) sizes; the per-size passes run in NumPy, whose
    overhead per call is a third of torch's, on reused scratch buffers.
    """
    _, Y, Z = shape
    mx, my, mz = max_block(shape)
    volume, rows, per_row, slot_bits, voxel_bits, tag_dtype, key_dtype = _Layout.of(params, shape)
    tag_type = torch.empty(0, dtype=tag_dtype).numpy().dtype
    sizes, corners = _axis_major(params.sizes), _axis_major(params.corners)  # (3, M)
    local = corners[0] * (Y * Z) + corners[1] * Z + corners[2]  # lowest corner in the cube
    code = ((sizes[0] - 1) * my + sizes[1] - 1) * mz + sizes[2] - 1
    # Blocks grouped by size, in write order within a size (NumPy's radix sort for int16).
    by_size = np.argsort(code.astype(np.int16 if mx * my * mz < 2**15 else np.int32), kind="stable")
    start = local[by_size]
    first_dst = by_size // per_row * volume + start  # block m is row m // B, order m % B + 1
    first_tag = (((by_size % per_row + 1) << voxel_bits) + start).astype(tag_type)
    offsets, table_first, table_volume = (
        t.numpy() for t in _offset_table(shape, torch.device("cpu"), torch.int64)
    )
    tag_offsets = offsets.astype(tag_type)
    counts = np.bincount(code, minlength=mx * my * mz)
    total = int(counts @ table_volume)
    keys = _entry_keys(params, total, key_dtype).cpu().numpy()
    dst = scratch("dst", total, torch.int64).numpy()
    tags = scratch("tags", total, tag_dtype).numpy()
    mask = (1 << slot_bits) - 1
    keys &= ~mask
    slots = np.arange(mask + 1, dtype=keys.dtype)
    read = scratch("slots read", int(counts.max()) * (mask + 1), torch.int64).numpy()
    first_block, first_write = 0, 0
    for count, k, lo in zip(
        counts.tolist(), table_volume.tolist(), table_first.tolist(), strict=True
    ):
        if count == 0:  # one pass per block size, not per block
            continue
        end, last_block = first_write + count * k, first_block + count
        row_keys = keys[first_write:end].reshape(count, k)
        row_tags = tags[first_write:end].reshape(count, k)
        np.add(
            first_dst[first_block:last_block, None],
            offsets[lo : lo + k],
            out=dst[first_write:end].reshape(count, k),
        )  # destinations, raster order
        row_keys |= slots[:k]
        row_keys.sort(axis=1)  # in place; random order of the slots per row
        # The slot each destination reads from, widened to take's index type in the same
        # pass; flat and mode="wrap" (a no-op: slots are in range) skip bounds checks.
        slot = np.bitwise_and(row_keys.ravel(), mask, out=read[: count * k])
        np.take(tag_offsets[lo : lo + k], slot, out=row_tags.ravel(), mode="wrap")
        row_tags += first_tag[first_block:last_block, None]
        first_block, first_write = last_block, end
    latest = scratch("latest", rows * volume, tag_dtype).numpy()
    latest.reshape(rows, volume)[:] = _identity(volume, tag_type)  # block 0, own voxel
    # torch's scatter-max (int64 indices) is several times faster than np.maximum.at.
    torch.from_numpy(latest).scatter_reduce_(
        0, torch.from_numpy(dst), torch.from_numpy(tags), reduce="amax"
    )
    sources = scratch("sources", rows * volume, torch.int64).numpy().reshape(rows, volume)
    np.bitwise_and(latest.reshape(rows, volume), (1 << voxel_bits) - 1, out=sources)
    return sources


def _axis_major(values: torch.Tensor) -> np.ndarray:
    """(S, B, 3) block sizes or corners as a (3, S * B) int64 array: free for the views the
    CPU sampler makes, a copy otherwise."""
    return values.cpu().permute(2, 0, 1).reshape(3, -1).long().numpy()


@functools.lru_cache(maxsize=8)
def _identity(volume: int, dtype: type) -> np.ndarray:
    return np.arange(volume, dtype=dtype)


def _sources_torch(
    params: ShuffleParams, shape: tuple[int, int, int], device: torch.device
) -> torch.Tensor:
    """``_sources_numpy`` in torch ops, for accelerators: (S, X * Y * Z) int64."""
    _, Y, Z = shape
    mx, my, mz = max_block(shape)
    volume, rows, per_row, slot_bits, voxel_bits, tag_type, key_dtype = _Layout.of(params, shape)
    offsets, table_first, table_volume = _offset_table(shape, device, torch.int64)
    tag_offsets = offsets.to(tag_type)
    sizes = params.sizes.to(device).flatten(0, 1)  # (M, 3), blocks in write order
    corners = params.corners.to(device).flatten(0, 1)
    local = (corners * torch.tensor([Y * Z, Z, 1], device=device)).sum(dim=1)
    code = ((sizes[:, 0] - 1) * my + sizes[:, 1] - 1) * mz + sizes[:, 2] - 1
    by_size = torch.sort(code, stable=True).indices
    start = local.index_select(0, by_size)
    first_dst = by_size // per_row * volume + start
    first_tag = (((by_size % per_row + 1) << voxel_bits) + start).to(tag_type)
    counts = torch.bincount(code, minlength=mx * my * mz)
    total = int((counts * table_volume).sum())
    keys = _entry_keys(params, total, key_dtype).to(device)
    dst = torch.empty(total, dtype=torch.int64, device=device)
    tags = torch.empty(total, dtype=tag_type, device=device)
    mask = (1 << slot_bits) - 1
    keys &= ~mask
    first_block, first_write = 0, 0
    for count, k, lo in zip(
        counts.tolist(), table_volume.tolist(), table_first.tolist(), strict=True
    ):
        if count == 0:
            continue
        end, last_block = first_write + count * k, first_block + count
        row_keys = keys[first_write:end].view(count, k)
        torch.add(
            first_dst[first_block:last_block, None],
            offsets[lo : lo + k],
            out=dst[first_write:end].view(count, k),
        )
        row_keys |= torch.arange(k, dtype=row_keys.dtype, device=device)
        slot = torch.sort(row_keys, dim=1).values & mask
        tags[first_write:end] = (
            tag_offsets[lo : lo + k][slot.long()] + first_tag[first_block:last_block, None]
        ).view(-1)
        first_block, first_write = last_block, end
    latest = torch.arange(volume, dtype=tag_type, device=device).repeat(rows)
    latest.scatter_reduce_(0, dst, tags, reduce="amax")
    return latest.bitwise_and_((1 << voxel_bits) - 1).view(rows, volume).long()


def _entry_keys(params: ShuffleParams, total: int, dtype: torch.dtype) -> torch.Tensor:
    """Random integer sort keys for every write, replayable from ``params.seed``.

    Drawn where the parameters live: with a CPU generator as raw words of a NumPy SFC64 stream
    seeded by ``params.seed`` (twice as fast as float draws), so CPU and CUDA cubes get the
    same permutations; with a CUDA generator on the GPU. The low ``slot_bits`` of a key are
    replaced by the voxel's slot, so int32 keys keep 32 - slot_bits random bits (25 for
    64x64x32). Two equal random parts keep their raster order: for a block of k voxels that
    happens with probability k(k-1)/2 / 2**25, 1.6e-5 for the mean block and 1.7e-4 for the
    largest (108 voxels), a bias far below any effect on training. int64 keys (large
    blocks) make it negligible. On CPU the keys are a scratch buffer, valid until the next
    call.
    """
    device = params.sizes.device
    if device.type == "cpu":
        narrow = dtype == torch.int32
        count = (total + 1) // 2 if narrow else total
        raw = random_words(
            params.seed, count, out=scratch("keys", count, torch.int64).numpy().view(np.uint64)
        )
        return torch.from_numpy(raw.view(np.int32 if narrow else np.int64)[:total])
    info = torch.iinfo(dtype)
    return torch.randint(
        info.min,
        info.max,
        (total,),
        dtype=dtype,
        device=device,
        generator=sub_generator(params.seed, device),
    )


@functools.lru_cache(maxsize=8)
def _offset_table(
    shape: tuple[int, int, int], device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def local_pixel_shuffle(
    cubes: torch.Tensor,
    generator: torch.Generator,
    *,
    apply: torch.Tensor | None = None,
    blocks: int = 10_000,
) -> torch.Tensor:
    """Shuffle ``blocks`` random blocks in each applied sample; see ``sample_local_shuffle``."""
    params = sample_local_shuffle(
        cubes.shape[0], spatial_shape(cubes), generator, apply=apply, blocks=blocks
    )
    return apply_local_shuffle(cubes, params)
