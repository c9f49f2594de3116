"""Torso structures shared by the chest and abdomen phantoms: body outline, spine, ribs.

Coordinates are mm on open grids (see ``fields.mm_grid``): u towards the patient's left,
v towards the back, w towards the head. Painters write into ``hu`` in place.
"""

from __future__ import annotations

import numpy as np


def body_depth(
    u: np.ndarray, v: np.ndarray, axes: tuple[float, float], centre_v: float
) -> np.ndarray:
    """Approximate depth (mm) below the skin of a rounded-rectangle body section."""
    a, b = axes
    radial = ((np.abs(u) / a) ** 2.2 + (np.abs(v - centre_v) / b) ** 2.2) ** (1 / 2.2)
    return (1.0 - radial) * 0.5 * (a + b)


def paint_spine(
    hu: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    centre_v: float,
    radius: float,
    scale: float,
    period: float,
    phase: float,
) -> None:
    """Vertebral bodies (cortex and marrow) with discs, the neural arch and the canal."""
    r = np.sqrt(u * u + (v - centre_v) ** 2)
    disc = ((w + phase) % period) < 6.0 * scale  # (1, 1, Z): one disc per vertebra
    vertebra = np.where(r < radius - 2.0, 220.0, 650.0)
    hu[...] = np.where(r < radius, np.where(disc, 90.0, vertebra), hu)
    canal_v = centre_v + radius + 8.0 * scale
    rc = np.sqrt(u * u + (v - canal_v) ** 2)
    arch = ((rc > 7.0 * scale) & (rc < 12.0 * scale)) | (
        (np.abs(u) < 4.0 * scale) & (v > canal_v) & (v < canal_v + 35.0 * scale)
    )
    hu[...] = np.where(arch & ~disc, 500.0, hu)
    hu[...] = np.where(np.broadcast_to(rc <= 7.0 * scale, hu.shape), 20.0, hu)


def paint_ribs(
    hu: np.ndarray,
    w: np.ndarray,
    depth: np.ndarray,
    wall: np.ndarray,
    position: np.ndarray,
    scale: float,
    period: float,
    slope: float,
    phase: float,
    lowest: float,
) -> None:
    """Ribs in the chest wall, sloping down towards the front, cartilage at the front.

    ``position`` runs from -1 (front) to +1 (back); ribs sit just outside ``wall`` depth
    and only above height ``lowest``.
    """
    shift = slope * (1.0 - position) / 2.0
    ring = (depth > wall - 9.0 * scale) & (depth < wall - 1.0)
    rib = ring & (((w + shift + phase) % period) < 9.0 * scale) & (w > lowest)
    hu[...] = np.where(rib, np.where(position > -0.7, 450.0, 120.0), hu)
