"""The tissue filter of facts §1, exact and vectorised with a 3D integral image.

Definition (per candidate window of X x Y x (Z + 3) voxels, values in [0, 1]): for each
column position (i, j, d) with d < Z, find the first k in {0, 1, 2} with
``v(i, j, d + k) >= t``; the score is ``1 - k/2``, or 0 if there is none. The window is
rejected when the summed score exceeds ``fraction * X * Y * Z``. It keeps cubes that
are mostly air/lung and drops cubes full of body tissue.

The per-voxel score depends only on the scan, not on the window, so it is computed once
per scan (three shifted slab comparisons) and stored doubled as small integers (2, 1, 0),
which makes the 3D integral image exact. Any window's sum is then 8 look-ups, for a whole
batch of candidate positions at once. ``reference_tissue_score`` is the straightforward
per-voxel loop, kept as the yardstick for tests and the benchmark only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

#: k runs over {0, 1, 2}: each score looks this many slices ahead (itself included).
LOOKAHEAD = 3


class WindowFilter(Protocol):
    """Accepts or rejects candidate windows given their corners, vectorised over a batch."""

    def accepts(self, corners: np.ndarray) -> np.ndarray:
        """``corners`` (n, 3) int voxel indices -> (n,) bool."""
        ...


def doubled_column_scores(scaled: np.ndarray, threshold: float) -> np.ndarray:
    """``2 * s(i, j, d)`` as uint8 for every d < Z - 2 of a (X, Y, Z) volume.

    The weight of "first hit at k" is ``2 * (1 - k/2) = 2 - k``: 2, 1, 0. The comparison
    with t is done once for the whole volume; the k shifts are views of it.
    """
    depth = scaled.shape[2] - (LOOKAHEAD - 1)
    if depth < 1:
        raise ValueError(f"need at least {LOOKAHEAD} slices, got shape {scaled.shape}")
    above = (scaled >= threshold).view(np.uint8)
    doubled = np.zeros((*scaled.shape[:2], depth), dtype=np.uint8)
    pending = np.ones(doubled.shape, dtype=np.uint8)  # 1 while no hit at a smaller k
    for k in range(LOOKAHEAD):  # three shifted slabs, not a loop over voxels
        weight = 2 - k
        if weight == 0:
            break  # a first hit at k = 2 scores 0: nothing left to add
        hit = above[:, :, k : k + depth] & pending
        doubled += hit * np.uint8(weight)
        pending -= hit
    return doubled


def integral_image(values: np.ndarray) -> np.ndarray:
    """Zero-padded 3D cumulative sum: ``S[a, b, c] = values[:a, :b, :c].sum()``."""
    bound = int(values.max(initial=0)) * values.size
    dtype = np.int32 if bound < np.iinfo(np.int32).max else np.int64
    table = np.zeros(tuple(n + 1 for n in values.shape), dtype=dtype)
    table[1:, 1:, 1:] = values
    np.cumsum(table, axis=2, out=table)
    # Along the outer axes, adding whole slices in turn is several times faster than
    # np.cumsum (which walks each strided line); the loop is over slices, not voxels.
    for x in range(1, table.shape[0]):
        table[x] += table[x - 1]
    for y in range(1, table.shape[1]):
        table[:, y] += table[:, y - 1]
    return table


def window_sums(table: np.ndarray, corners: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Sum of the box ``[corner, corner + size)`` for each row of ``corners`` (n, 3)."""
    x0, y0, z0 = np.asarray(corners, dtype=np.intp).T
    x1, y1, z1 = x0 + size[0], y0 + size[1], z0 + size[2]

    def at(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return table[x, y, z].astype(np.int64)

    return (
        at(x1, y1, z1)
        - at(x0, y1, z1)
        - at(x1, y0, z1)
        - at(x1, y1, z0)
        + at(x0, y0, z1)
        + at(x0, y1, z0)
        + at(x1, y0, z0)
        - at(x0, y0, z0)
    )


@dataclass(frozen=True)
class TissueFilter:
    """The tissue filter over one scan: precomputed once, then O(1) per window."""

    table: np.ndarray  # integral image of the doubled scores
    cube_size: tuple[int, int, int]
    fraction: float

    @classmethod
    def for_scan(
        cls, scaled: np.ndarray, cube_size: tuple[int, int, int], threshold: float, fraction: float
    ) -> TissueFilter:
        return cls(integral_image(doubled_column_scores(scaled, threshold)), cube_size, fraction)

    def scores(self, corners: np.ndarray) -> np.ndarray:
        """The summed score of each window (multiples of 0.5, exact)."""
        return window_sums(self.table, corners, self.cube_size) / 2.0

    def accepts(self, corners: np.ndarray) -> np.ndarray:
        return self.scores(corners) <= self.fraction * float(np.prod(self.cube_size))


@dataclass(frozen=True)
class ForegroundFilter:
    """For MRI: keep windows where at least ``min_fraction`` of the cube is above the
    background level (the CT tissue filter makes no sense without Hounsfield units)."""

    table: np.ndarray
    cube_size: tuple[int, int, int]
    min_fraction: float

    @classmethod
    def for_scan(
        cls,
        scaled: np.ndarray,
        cube_size: tuple[int, int, int],
        background: float,
        min_fraction: float,
    ) -> ForegroundFilter:
        return cls(integral_image((scaled > background).view(np.uint8)), cube_size, min_fraction)

    def accepts(self, corners: np.ndarray) -> np.ndarray:
        counts = window_sums(self.table, corners, self.cube_size)
        return counts >= self.min_fraction * float(np.prod(self.cube_size))


class AcceptAll:
    """No filter: every candidate window is kept."""

    def accepts(self, corners: np.ndarray) -> np.ndarray:
        return np.ones(len(corners), dtype=bool)


def direct_tissue_score(window: np.ndarray, threshold: float, cube_depth: int) -> float:
    """The score of one (X, Y, >= Z + 2) window straight from the definition, vectorised."""
    return float(doubled_column_scores(window, threshold)[:, :, :cube_depth].sum()) / 2.0


def reference_tissue_score(window: np.ndarray, threshold: float, cube_depth: int) -> float:
    """Per-voxel Python loops over one window, the definition written out literally, as the
    original tool did. Slow on purpose: only for tests and the benchmark."""
    total = 0.0
    for i in range(window.shape[0]):
        for j in range(window.shape[1]):
            for d in range(cube_depth):
                for k in range(LOOKAHEAD):
                    if window[i, j, d + k] >= threshold:
                        total += 1.0 - k / 2.0
                        break
    return total
