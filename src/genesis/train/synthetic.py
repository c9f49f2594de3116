"""Smooth random cube shards: training data for tests and benchmarks without any scans.

Each cube is white noise on a coarse grid (every ``smoothness`` voxels), upsampled
trilinearly and stretched to [0, 1]: blobs with edges and gradients, which a restoration
model can learn to recover and a transformation visibly destroys. Written like
``genesis cubes`` writes shards: float16 ``(n, X, Y, Z)`` via ``open_memmap``, plus a
manifest with the same columns.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch.nn import functional as F

from genesis.atomic import atomic_path
from genesis.seeding import derive_seed

MANIFEST_COLUMNS = ("index", "source", "split", "x", "y", "z", "scale", "status", "reason")


def smooth_cubes(n: int, shape: tuple[int, int, int], seed: int, smoothness: int = 4) -> np.ndarray:
    """(n, X, Y, Z) float32 in [0, 1]: upsampled coarse noise, one stream per seed."""
    generator = torch.Generator().manual_seed(derive_seed(seed, "synthetic-cubes"))
    coarse = [max(2, s // smoothness + 1) for s in shape]
    noise = torch.rand((n, 1, *coarse), generator=generator)
    cubes = F.interpolate(noise, size=shape, mode="trilinear", align_corners=True)[:, 0]
    low = cubes.flatten(1).min(1).values.view(-1, 1, 1, 1)
    high = cubes.flatten(1).max(1).values.view(-1, 1, 1, 1)
    return ((cubes - low) / (high - low).clamp(min=1e-6)).numpy()


def write_synthetic_shard(
    path: str | Path,
    n: int,
    shape: tuple[int, int, int],
    seed: int,
    split: str = "train",
    chunk: int = 256,
) -> Path:
    """Write ``n`` smooth cubes to ``path`` (.npy) and a manifest beside it (.csv)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        array = open_memmap(tmp, mode="w+", dtype=np.float16, shape=(n, *shape))
        for start in range(0, n, chunk):
            count = min(chunk, n - start)
            array[start : start + count] = smooth_cubes(
                count, shape, derive_seed(seed, split, start)
            )
        array.flush()
        del array
    with (
        atomic_path(path.with_suffix(".csv")) as tmp,
        open(tmp, "w", encoding="utf-8", newline="") as handle,
    ):
        writer = csv.writer(handle)
        writer.writerow(MANIFEST_COLUMNS)
        for index in range(n):
            writer.writerow([index, f"synthetic-{seed}", split, 0, 0, 0, 1, "ok", ""])
    return path
