"""Index <-> world mapping that honours the direction matrix.

ITK/LPS convention, as in LUNA16's CSVs: ``world = origin + direction @ (spacing * index)``,
with ``direction`` holding one column per voxel axis. Readers that drop the direction put
annotations of flipped scans (direction ``diag(-1, -1, 1)``) on the wrong side of the scan,
so every conversion in the engine goes through these two functions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np


class HasGeometry(Protocol):
    """Anything with ITK-style geometry: a ``Volume`` or a ``Geometry``."""

    @property
    def spacing(self) -> tuple[float, float, float]: ...

    @property
    def origin(self) -> tuple[float, float, float]: ...

    @property
    def direction(self) -> np.ndarray: ...


@dataclass(frozen=True)
class Geometry:
    """Voxel grid placement in LPS millimetres, without the voxel data."""

    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    @property
    def affine(self) -> np.ndarray:
        """4x4 LPS matrix mapping a homogeneous (x, y, z) index to world mm."""
        return lps_affine(self)


def lps_affine(geometry: HasGeometry) -> np.ndarray:
    """4x4 index -> LPS world matrix: ``direction @ diag(spacing)`` plus the origin."""
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(geometry.direction, float) @ np.diag(geometry.spacing)
    affine[:3, 3] = geometry.origin
    return affine


def voxel_to_world(index: np.ndarray, geometry: HasGeometry) -> np.ndarray:
    """Continuous (x, y, z) indices, shape (N, 3) or (3,), to LPS world mm."""
    index = np.asarray(index, dtype=float)
    matrix = np.asarray(geometry.direction, float) @ np.diag(geometry.spacing)
    return index @ matrix.T + np.asarray(geometry.origin, float)


def world_to_voxel(points: np.ndarray, geometry: HasGeometry) -> np.ndarray:
    """LPS world mm, shape (N, 3) or (3,), to continuous (x, y, z) indices.

    ``index = inv(direction) @ (world - origin) / spacing``; round to get the voxel.
    """
    points = np.asarray(points, dtype=float)
    inverse = np.linalg.inv(np.asarray(geometry.direction, float))
    offset = points - np.asarray(geometry.origin, float)
    return (offset @ inverse.T) / np.asarray(geometry.spacing, float)
