"""Lung nodules: placement inside the lungs, and painting as lobulated partial-volume blobs.

Centres sit on voxel centres, so even a 3 mm nodule in a 2.5 mm grid covers the voxel its
annotation points to. Sizes are log-uniform, so small nodules dominate as in LUNA16.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genesis.synth.fields import box_around, lobulated_ball, random_unit_vectors, soft_inside

JUXTAPLEURAL_RATE = 0.25  # share of nodules touching the chest wall
PLACEMENT_TRIES = 60


@dataclass(frozen=True)
class Nodule:
    """One nodule: centre (integer (x, y, z) index), diameter, and look."""

    centre: np.ndarray
    diameter_mm: float
    hu: float
    bumps: np.ndarray  # (k, 3) mm offsets of the lobules
    bump_radii: np.ndarray  # (k,) mm
    halo_mm: float  # ground-glass rim thickness, 0 for none


def place_nodules(
    rng: np.random.Generator,
    lung: np.ndarray,
    spacing: tuple[float, float, float],
    count: int,
    diameter_range: tuple[float, float],
) -> list[Nodule]:
    """Draw ``count`` non-overlapping nodules whose bodies lie in the lung.

    A draw is kept when the lung fills its ball (interior nodule) or 55-90% of it
    (juxtapleural); otherwise it is retried at another position, then at a smaller size.
    """
    spacing_arr = np.asarray(spacing, float)
    candidates = np.argwhere(lung)
    nodules: list[Nodule] = []
    if len(candidates) == 0:
        return nodules
    low, high = np.log(diameter_range[0]), np.log(diameter_range[1])
    for _ in range(count):
        diameter = float(np.exp(rng.uniform(low, high)))
        juxtapleural = bool(rng.random() < JUXTAPLEURAL_RATE)
        centre = None
        while centre is None and diameter >= diameter_range[0] - 1e-9:
            centre = _find_position(
                rng, lung, candidates, spacing_arr, diameter / 2, juxtapleural, nodules
            )
            if centre is None:
                diameter *= 0.8
        if centre is not None:
            nodules.append(_nodule_look(rng, centre, diameter))
    return nodules


def _find_position(
    rng: np.random.Generator,
    lung: np.ndarray,
    candidates: np.ndarray,
    spacing: np.ndarray,
    radius: float,
    juxtapleural: bool,
    placed: list[Nodule],
) -> np.ndarray | None:
    for centre in candidates[rng.integers(0, len(candidates), PLACEMENT_TRIES)]:
        if any(
            np.linalg.norm((centre - other.centre) * spacing) < radius + other.diameter_mm / 2 + 3.0
            for other in placed
        ):
            continue
        box = box_around(centre, radius / spacing, lung.shape)
        offsets = [
            (np.arange(sl.start, sl.stop) - c) * s
            for sl, c, s in zip(box, centre, spacing, strict=True)
        ]
        ball = (
            offsets[0][:, None, None] ** 2
            + offsets[1][None, :, None] ** 2
            + offsets[2][None, None, :] ** 2
        ) <= radius**2
        fraction = float(lung[box][ball].mean())
        if (0.55 <= fraction <= 0.9) if juxtapleural else fraction >= 0.97:
            return centre
    return None


def _nodule_look(rng: np.random.Generator, centre: np.ndarray, diameter: float) -> Nodule:
    radius = diameter / 2
    kind = rng.random()
    if kind < 0.1:
        hu, halo = rng.uniform(150, 400), 0.0  # calcified
    elif kind < 0.3:
        hu, halo = rng.uniform(-20, 40), 0.35 * radius  # part-solid, ground-glass rim
    else:
        hu, halo = rng.uniform(-10, 60), 0.0  # solid
    count = int(rng.integers(0, 4)) if radius > 3.0 else 0
    bumps = random_unit_vectors(rng, count) * radius * rng.uniform(0.6, 0.9, (count, 1))
    return Nodule(
        np.asarray(centre, int),
        diameter,
        float(hu),
        bumps,
        radius * rng.uniform(0.3, 0.55, count),
        float(halo),
    )


def paint_nodules(
    hu: np.ndarray, nodules: list[Nodule], spacing: tuple[float, float, float]
) -> None:
    """Blend each nodule into ``hu`` (in place) with a one-voxel partial-volume edge."""
    spacing_arr = np.asarray(spacing, float)
    voxel = float(spacing_arr.min())
    for nodule in nodules:
        radius = nodule.diameter_mm / 2
        reach = radius * 1.6 + nodule.halo_mm + 2 * voxel
        box = box_around(nodule.centre, reach / spacing_arr, hu.shape)
        offsets = tuple(
            ((np.arange(sl.start, sl.stop) - c) * s)
            .astype(np.float32)
            .reshape([-1 if axis == i else 1 for axis in range(3)])
            for i, (sl, c, s) in enumerate(zip(box, nodule.centre, spacing_arr, strict=True))
        )
        signed = lobulated_ball(offsets, radius, nodule.bumps, nodule.bump_radii)
        region = hu[box]
        if nodule.halo_mm > 0:
            halo = soft_inside(signed - nodule.halo_mm, voxel)
            region += halo * (np.maximum(region, -550.0) - region)
        core = soft_inside(signed, voxel)
        region += core * (nodule.hu - region)
