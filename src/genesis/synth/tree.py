"""Branching tubular trees (pulmonary vessels, bronchi) as tapering random walks.

A branch is a persistent random walk drawn in one vectorised step; it ends where it leaves
the allowed region or reaches its length, and then splits in two thinner, diverging
children (radii shrinking roughly by Murray's law). Only the loop over branches is Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TreeShape:
    """How a tree grows; lengths and radii in mm, angles in degrees."""

    generations: int = 6
    length_per_radius: tuple[float, float] = (5.0, 9.0)
    child_ratio_major: tuple[float, float] = (0.75, 0.9)
    child_ratio_minor: tuple[float, float] = (0.55, 0.75)
    angle_major: tuple[float, float] = (10.0, 30.0)
    angle_minor: tuple[float, float] = (35.0, 70.0)
    min_radius: float = 0.6
    wiggle: float = 0.08


@dataclass(frozen=True)
class Tree:
    """Centreline samples (continuous (x, y, z) indices) with radii, plus the bifurcations."""

    points: np.ndarray  # (N, 3) index
    radii: np.ndarray  # (N,) mm
    forks: np.ndarray  # (B, 3) index of every bifurcation
    fork_radii: np.ndarray  # (B,) mm of the parent branch there


def grow_tree(
    rng: np.random.Generator,
    allowed: np.ndarray,
    spacing: tuple[float, float, float],
    start: np.ndarray,
    direction: np.ndarray,
    radius: float,
    shape: TreeShape,
) -> Tree:
    """Grow one tree from ``start`` (index) along ``direction`` (mm space) inside ``allowed``."""
    spacing_arr = np.asarray(spacing, float)
    step = 0.7 * float(spacing_arr.min())
    stack = [(np.asarray(start, float) * spacing_arr, _unit(direction), radius, 0)]
    points, radii, forks, fork_radii = [], [], [], []
    while stack:
        origin_mm, heading, r, generation = stack.pop()
        length = r * rng.uniform(*shape.length_per_radius) + 2 * step
        walk = _walk(rng, origin_mm, heading, length, step, shape.wiggle)
        inside = _inside(allowed, walk / spacing_arr)
        stop = int(np.argmin(inside)) if not inside.all() else len(walk)
        if stop < 2:
            continue
        walk = walk[:stop]
        points.append(walk / spacing_arr)
        radii.append(np.linspace(r, 0.92 * r, len(walk)))
        if generation + 1 >= shape.generations or stop < len(inside):
            continue
        end, end_heading = walk[-1], _unit(walk[-1] - walk[-2])
        forks.append(end / spacing_arr)
        fork_radii.append(0.92 * r)
        # Both children turn away from the parent in one plane, on opposite sides.
        perpendicular = _unit(np.cross(end_heading, rng.standard_normal(3)))
        for ratio, angle, side in (
            (shape.child_ratio_major, shape.angle_major, 1.0),
            (shape.child_ratio_minor, shape.angle_minor, -1.0),
        ):
            child_r = r * rng.uniform(*ratio)
            if child_r < shape.min_radius:
                continue
            turn = np.deg2rad(rng.uniform(*angle))
            child_heading = np.cos(turn) * end_heading + side * np.sin(turn) * perpendicular
            stack.append((end, child_heading, child_r, generation + 1))
    if not points:
        empty = np.zeros((0, 3))
        return Tree(empty, np.zeros(0), empty, np.zeros(0))
    return Tree(
        np.concatenate(points),
        np.concatenate(radii),
        np.asarray(forks).reshape(-1, 3),
        np.asarray(fork_radii),
    )


def polyline(
    points_index: np.ndarray, radii_mm: np.ndarray, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Densely sample a polyline through ``points_index`` with linearly varying radius."""
    spacing_arr = np.asarray(spacing, float)
    step = 0.5 * float(spacing_arr.min())
    samples, values = [], []
    for a, b, ra, rb in zip(
        points_index[:-1], points_index[1:], radii_mm[:-1], radii_mm[1:], strict=True
    ):
        length = float(np.linalg.norm((b - a) * spacing_arr))
        t = np.linspace(0.0, 1.0, max(2, int(np.ceil(length / step)) + 1))[:, None]
        samples.append(a + t * (b - a))
        values.append(ra + t[:, 0] * (rb - ra))
    return np.concatenate(samples), np.concatenate(values)


def _walk(
    rng: np.random.Generator,
    origin_mm: np.ndarray,
    heading: np.ndarray,
    length: float,
    step: float,
    wiggle: float,
) -> np.ndarray:
    """A persistent random walk: the heading drifts by accumulated small random turns."""
    n = max(2, int(length / step))
    drift = np.cumsum(rng.normal(0.0, wiggle, size=(n, 3)), axis=0)
    headings = heading[None, :] + drift
    headings /= np.linalg.norm(headings, axis=1, keepdims=True)
    return origin_mm + np.cumsum(headings * step, axis=0)


def _inside(allowed: np.ndarray, index: np.ndarray) -> np.ndarray:
    voxel = np.rint(index).astype(int)
    ok = np.all((voxel >= 0) & (voxel < np.array(allowed.shape)), axis=1)
    result = np.zeros(len(voxel), dtype=bool)
    result[ok] = allowed[voxel[ok, 0], voxel[ok, 1], voxel[ok, 2]]
    return result


def _unit(vector: np.ndarray) -> np.ndarray:
    vector = np.asarray(vector, float)
    return vector / max(float(np.linalg.norm(vector)), 1e-12)
