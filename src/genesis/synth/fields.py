"""Vectorised building blocks for phantoms: coordinate grids, smooth noise, tubes, blobs.

Everything works on whole arrays (broadcast open grids, ``scipy.ndimage``); Python loops
run over objects (branches, nodules), never over voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def mm_grid(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    centre: tuple[float, float, float] | None = None,
) -> tuple[np.ndarray, ...]:
    """Open (broadcastable) x, y, z coordinate grids in mm, relative to ``centre`` (mm).

    Shapes are (X, 1, 1), (1, Y, 1), (1, 1, Z): expressions over them broadcast to the
    full volume without materialising three full-size coordinate arrays.
    """
    if centre is None:
        centre = tuple((n - 1) * s / 2 for n, s in zip(shape, spacing, strict=True))
    axes = [
        (np.arange(n, dtype=np.float32) * s - c)
        for n, s, c in zip(shape, spacing, centre, strict=True)
    ]
    return (axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :])


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], cell: float) -> np.ndarray:
    """Zero-mean, unit-std float32 noise with correlation length of about ``cell`` voxels.

    Drawn on a coarse lattice, lightly smoothed, and interpolated up one axis at a time;
    this costs a few milliseconds where a full-size Gaussian filter (or ``ndi.zoom``) at
    these correlation lengths costs tens.
    """
    coarse = tuple(max(3, int(np.ceil(n / cell)) + 2) for n in shape)
    field = ndi.gaussian_filter(rng.standard_normal(coarse).astype(np.float32), 0.7, mode="wrap")
    for axis, n in enumerate(shape):
        field = _upsample_linear(field, axis, n)
    field -= field.mean()
    std = float(field.std())
    return field / std if std > 0 else field


def _upsample_linear(field: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of ``field`` along ``axis`` onto ``size`` evenly spaced points."""
    position = np.linspace(0.0, field.shape[axis] - 1.0, size, dtype=np.float32)
    low = np.minimum(position.astype(int), field.shape[axis] - 2)
    frac = (position - low).reshape([-1 if a == axis else 1 for a in range(field.ndim)])
    below = np.take(field, low, axis=axis)
    above = np.take(field, low + 1, axis=axis)
    return below + frac * (above - below)


def soft_inside(signed_distance_mm: np.ndarray, width_mm: float) -> np.ndarray:
    """Partial-volume weight in [0, 1] from a signed distance (negative inside)."""
    return np.clip(0.5 - signed_distance_mm / width_mm, 0.0, 1.0).astype(np.float32)


def tube_distance(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    points: np.ndarray,
    values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Distance (mm) to the nearest centreline voxel, and that voxel's values.

    ``points`` are continuous (x, y, z) indices along all centrelines and ``values`` (N, k)
    their attributes (radius first, then e.g. a tissue kind). One Euclidean distance
    transform then gives every tube at once, tapering radii included, with no loop over
    voxels. Returns the distance (X, Y, Z) and the looked-up values (k, X, Y, Z).
    """
    values = np.asarray(values, np.float32).reshape(len(points), -1)
    centre = np.zeros(shape, dtype=bool)
    lookup = np.zeros((values.shape[1], *shape), dtype=np.float32)
    index = np.rint(points).astype(int)
    keep = np.all((index >= 0) & (index < np.array(shape)), axis=1)
    index, values = index[keep], values[keep]
    if len(index) == 0:
        return np.full(shape, np.inf, np.float32), lookup
    # Where several points share a voxel the last write wins: sort so it is the thickest.
    order = np.argsort(values[:, 0], kind="stable")
    ix, iy, iz = index[order].T
    centre[ix, iy, iz] = True
    lookup[:, ix, iy, iz] = values[order].T
    distance, nearest = ndi.distance_transform_edt(~centre, sampling=spacing, return_indices=True)
    return distance.astype(np.float32), lookup[:, nearest[0], nearest[1], nearest[2]]


def box_around(
    centre: np.ndarray, radius_vox: np.ndarray, shape: tuple[int, ...]
) -> tuple[slice, slice, slice]:
    """Index slices of the box of half-size ``radius_vox`` around ``centre``, clipped."""
    low = np.maximum(np.floor(centre - radius_vox).astype(int), 0)
    high = np.minimum(np.ceil(centre + radius_vox).astype(int) + 1, shape[:3])
    return (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))


def random_unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` directions uniform on the sphere, shape (n, 3)."""
    vectors = rng.standard_normal((n, 3))
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def lobulated_ball(
    offsets_mm: tuple[np.ndarray, ...], radius: float, bumps: np.ndarray, bump_radii: np.ndarray
) -> np.ndarray:
    """Signed distance (mm, negative inside) of a sphere united with smaller spheres.

    ``offsets_mm`` are open grids relative to the main centre; ``bumps`` (k, 3) are the
    bump centres in mm relative to it. Lobulated nodules and tumours are such unions.
    """
    dx, dy, dz = offsets_mm
    signed = np.sqrt(dx * dx + dy * dy + dz * dz) - radius
    for centre, bump_radius in zip(bumps, bump_radii, strict=True):
        bump = (
            np.sqrt((dx - centre[0]) ** 2 + (dy - centre[1]) ** 2 + (dz - centre[2]) ** 2)
            - bump_radius
        )
        signed = np.minimum(signed, bump)
    return signed
