"""A chest CT phantom in Hounsfield units, built from analytic shapes on coordinate grids.

The volume is drawn in a canonical frame (identity direction, LPS: x towards the patient's
left, y towards the back, z towards the head; index 0 is the most inferior slice).
Tissue is painted back to front: air, body wall and fat, mediastinum and abdomen, bones,
lungs, then the tubular trees (vessels, airways, great vessels), then the nodules.
Values are typical non-contrast CT numbers: air -1000, lung about -850, fat -100, soft
tissue +40, bone +200..+700.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from genesis.synth.fields import mm_grid, smooth_noise, soft_inside, tube_distance
from genesis.synth.tree import Tree, TreeShape, grow_tree, polyline
from genesis.synth.trunk import body_depth, paint_ribs, paint_spine

VESSEL, AIRWAY, GREAT_VESSEL = 0, 1, 2

VESSEL_TREE = TreeShape(generations=8, length_per_radius=(4.0, 7.0), min_radius=0.5)
#: Directions (towards the lateral side, +y back, +z head) of the vessel trees at each hilum.
ROOT_HEADINGS = (
    [0.3, 0.2, 1.0],
    [0.6, -0.4, 0.8],
    [1.0, 0.3, 0.1],
    [0.8, -0.6, -0.1],
    [0.5, 0.5, -1.0],
    [0.6, -0.6, -0.5],
    [0.3, 0.9, 0.2],
)
AIRWAY_TREE = TreeShape(
    generations=4,
    length_per_radius=(4.0, 7.0),
    min_radius=1.2,
    angle_major=(15.0, 30.0),
    angle_minor=(35.0, 60.0),
    wiggle=0.04,
)


@dataclass(frozen=True)
class Layout:
    """Per-scan anatomy, drawn once from the generator (all lengths in mm)."""

    scale: float
    body_axes: tuple[float, float]  # semi-axes in x and y
    body_y: float  # body centre, y
    fat: float  # subcutaneous fat thickness
    muscle: float  # chest-wall muscle thickness (more at the back)
    base: tuple[float, float]  # lowest lung height (right, left) above slice 0
    dome: float  # diaphragm dome height
    apex: float  # lung apex height
    heart: tuple[float, ...]  # centre u, v, z and semi-axes
    rib_period: float
    rib_slope: float
    rib_phase: float
    table_gap: float
    gas_bubble: bool


@dataclass(frozen=True)
class ChestAnatomy:
    """The HU volume before nodules and noise, and what candidate sampling needs."""

    hu: np.ndarray  # float32 (X, Y, Z)
    lung: np.ndarray  # bool
    body: np.ndarray  # bool
    tube_distance: np.ndarray  # mm to the nearest tube centreline
    vessels: Tree
    airways: Tree


def sample_layout(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> Layout:
    """Draw body size, organ positions and rib pattern, scaled to the field of view."""
    fov = [n * s for n, s in zip(shape, spacing, strict=True)]
    scale = min(fov[0] / 330.0, fov[1] / 270.0) * rng.uniform(0.9, 1.0)
    height = fov[2]
    base_right = height * rng.uniform(0.08, 0.16)
    base_left = base_right - height * rng.uniform(0.0, 0.05)
    apex = height * rng.uniform(0.92, 1.02)
    span = apex - base_right
    heart = (
        scale * rng.uniform(10, 25),
        scale * rng.uniform(-50, -35),
        base_right + span * rng.uniform(0.18, 0.28),
        scale * rng.uniform(50, 60),
        scale * rng.uniform(40, 48),
        span * rng.uniform(0.22, 0.3),
    )
    return Layout(
        scale=scale,
        body_axes=(scale * rng.uniform(150, 165), scale * rng.uniform(108, 122)),
        body_y=scale * rng.uniform(-12, 0),
        fat=scale * rng.uniform(6, 22),
        muscle=scale * rng.uniform(10, 16),
        base=(base_right, base_left),
        dome=span * rng.uniform(0.12, 0.2),
        apex=apex,
        heart=heart,
        rib_period=scale * rng.uniform(24, 30),
        rib_slope=scale * rng.uniform(30, 55),
        rib_phase=rng.uniform(0, 30),
        table_gap=scale * rng.uniform(4, 20),
        gas_bubble=bool(rng.random() < 0.4),
    )


def build_anatomy(
    rng: np.random.Generator, shape: tuple[int, int, int], spacing: tuple[float, float, float]
) -> ChestAnatomy:
    """Paint the chest without nodules; see the module docstring for the order."""
    layout = sample_layout(rng, shape, spacing)
    centre = ((shape[0] - 1) * spacing[0] / 2, (shape[1] - 1) * spacing[1] / 2, 0.0)
    u, v, w = mm_grid(shape, spacing, centre)
    texture = smooth_noise(rng, shape, 4.0)
    a, b = layout.body_axes
    depth = body_depth(u, v, layout.body_axes, layout.body_y)  # (X, Y, 1)
    back = np.clip((v - layout.body_y) / b, 0.0, 1.0)
    wall = layout.fat + layout.muscle + 22.0 * layout.scale * back**2
    body = np.broadcast_to(depth > 0, shape)
    cavity = np.broadcast_to(depth > wall, shape)
    zb = _diaphragm(u, v, layout)
    thorax = cavity & (w >= zb)

    hu = np.full(shape, -1000.0, np.float32)
    hu[np.broadcast_to(_table(u, v, layout), shape)] = 80.0
    hu = np.where(body, 40.0 + 6.0 * texture, hu)
    hu = np.where(body & (depth < layout.fat), -100.0 + 8.0 * texture, hu)
    hu = np.where(thorax, -90.0 + 8.0 * texture, hu)  # mediastinal fat
    hu = np.where(cavity & (w < zb), np.where(u < 0.1 * a, 60.0, 35.0) + 6.0 * texture, hu)
    heart = _ellipsoid(u, v, w, layout.heart)
    hu = np.where(thorax & (heart <= 1.0), 40.0 + 6.0 * texture, hu)
    if layout.gas_bubble:
        bubble = _ellipsoid(
            u,
            v,
            w,
            (
                0.45 * a,
                layout.body_y - 0.25 * b,
                layout.base[1] - 12.0,
                28 * layout.scale,
                22 * layout.scale,
                10 * layout.scale,
            ),
        )
        hu = np.where(cavity & (w < zb) & (bubble <= 1.0), -1000.0, hu)
    _paint_bones(hu, u, v, w, depth, wall, layout)

    lung = _lungs(rng, u, v, w, zb, thorax, heart, layout, shape)
    gravity = 45.0 * np.clip((v - layout.body_y) / b + 0.5, 0.0, 1.0)
    hu = np.where(lung, -865.0 + 22.0 * texture + gravity, hu)

    vessels, airways, fixed_points, fixed_values = _trees(
        rng, lung, u, v, w, layout, shape, spacing
    )
    points = np.concatenate([vessels.points, airways.points, fixed_points])
    values = np.concatenate(
        [
            np.stack([vessels.radii, np.full(len(vessels.radii), VESSEL)], axis=1),
            np.stack([airways.radii, np.full(len(airways.radii), AIRWAY)], axis=1),
            fixed_values,
        ]
    )
    distance, (radius, kind) = tube_distance(shape, spacing, points, values)
    hu = _paint_tubes(hu, distance, radius, np.rint(kind), cavity, min(spacing), texture)
    return ChestAnatomy(hu, lung, np.ascontiguousarray(body), distance, vessels, airways)


def _diaphragm(u: np.ndarray, v: np.ndarray, layout: Layout) -> np.ndarray:
    """Height of the lung base: two domes, highest under the centre of each lung."""
    a, b = layout.body_axes
    side_base = np.where(u < 0, layout.base[0], layout.base[1])
    centre_u = np.where(u < 0, -0.45 * a, 0.45 * a)
    q = ((u - centre_u) / (0.45 * a)) ** 2 + ((v - layout.body_y) / (0.8 * b)) ** 2
    return side_base + layout.dome * (1.0 - np.clip(q, 0.0, 1.0))


def _ellipsoid(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, params: tuple[float, ...]
) -> np.ndarray:
    """Normalised ellipsoid equation: <= 1 inside. ``params`` = centre, then semi-axes."""
    cu, cv, cw, ru, rv, rw = params
    return ((u - cu) / ru) ** 2 + ((v - cv) / rv) ** 2 + ((w - cw) / rw) ** 2


def _table(u: np.ndarray, v: np.ndarray, layout: Layout) -> np.ndarray:
    top = layout.body_y + layout.body_axes[1] + layout.table_gap
    return (v >= top) & (v < top + 5.0 * layout.scale) & (np.abs(u) < 0.85 * layout.body_axes[0])


def _spine_centre(layout: Layout) -> tuple[float, float]:
    """Vertebral body centre (its v; u is 0) and radius: at the back of the chest cavity."""
    radius = 16.0 * layout.scale
    b = layout.body_axes[1]
    wall_back = layout.fat + layout.muscle + 22.0 * layout.scale
    return layout.body_y + b - wall_back - 0.6 * radius, radius


def _paint_bones(
    hu: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    depth: np.ndarray,
    wall: np.ndarray,
    layout: Layout,
) -> None:
    """Vertebrae, ribs and sternum (in place)."""
    s = layout.scale
    spine_v, radius = _spine_centre(layout)
    paint_spine(hu, u, v, w, spine_v, radius, s, layout.rib_period, layout.rib_phase)
    position = np.clip((v - layout.body_y) / layout.body_axes[1], -1.0, 1.0)
    paint_ribs(
        hu,
        w,
        depth,
        wall,
        position,
        s,
        layout.rib_period,
        layout.rib_slope,
        layout.rib_phase,
        layout.base[0] - 25.0 * s,
    )
    sternum = (
        (np.abs(u) < 14.0 * s)
        & (depth > layout.fat + 1.0)
        & (depth < layout.fat + 10.0 * s)
        & (position < -0.8)
    )
    hu[...] = np.where(
        sternum & (w > layout.base[0] + 0.2 * (layout.apex - layout.base[0])), 320.0, hu
    )


def _lungs(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    zb: np.ndarray,
    thorax: np.ndarray,
    heart: np.ndarray,
    layout: Layout,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Two tapered superellipsoids with a wobbly surface, carved by heart, spine, mediastinum."""
    a, b = layout.body_axes
    s = layout.scale
    wobble = 0.08 * smooth_noise(rng, shape, 12.0)
    t = (w - zb) / (layout.apex - zb)
    taper = np.clip((1.0 - t) / 0.45, 1e-3, 1.0) ** 0.5  # full width up to t = 0.55
    lung = np.zeros(shape, dtype=bool)
    # Wider than the cavity at the base: the chest wall, not the ellipse, bounds them there.
    for sign, half_width in ((-1.0, 0.52 * a), (1.0, 0.48 * a)):
        cu = sign * 0.5 * a
        q = (np.abs(u - cu) / (half_width * taper)) ** 2.4 + (
            np.abs(v - layout.body_y) / (0.95 * b * taper)
        ) ** 2.4
        lung |= q <= 1.0 + wobble
    spine_v, radius = _spine_centre(layout)
    near_spine = (u * u + (v - spine_v) ** 2 < (radius + 10.0 * s) ** 2) | (
        (np.abs(u) < radius + 4.0 * s) & (v > spine_v)
    )
    margin = (1.0 + 6.0 * s / min(layout.heart[3:])) ** 2
    lung &= thorax & (t >= 0) & (t <= 1) & (heart > margin) & (np.abs(u) > 12.0 * s)
    lung &= ~np.broadcast_to(near_spine, shape)
    # Keep a pleural gap to the chest wall, and drop specks the carving left behind.
    lung = ndi.binary_erosion(lung, iterations=1)
    labels, count = ndi.label(lung)
    if count > 2:
        sizes = np.bincount(labels.ravel())[1:]
        keep = np.argsort(sizes)[-2:] + 1
        lung = np.isin(labels, keep)
    return lung


def _trees(
    rng: np.random.Generator,
    lung: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    layout: Layout,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
) -> tuple[Tree, Tree, np.ndarray, np.ndarray]:
    """Vessel and bronchial trees from each hilum, plus the fixed mediastinal tubes.

    Returns the two trees and the tubes' centreline points (index) with (radius, kind).
    """
    s = layout.scale
    spacing_arr = np.asarray(spacing)
    origin = np.array([u.ravel()[0], v.ravel()[0], w.ravel()[0]])
    a, b = layout.body_axes
    hilum_z = layout.base[0] + 0.55 * (layout.apex - layout.base[0])
    vessel_trees, airway_trees, hila = [], [], []
    for sign in (-1.0, 1.0):
        side = lung & ((u < 0) if sign < 0 else (u > 0))
        target = np.array([sign * 0.22 * a, layout.body_y + 0.05 * b, hilum_z]) - origin
        hilum = _nearest_voxel(side, target / spacing_arr, spacing_arr)
        if hilum is None:
            continue
        hila.append(hilum * spacing_arr + origin)
        mirror = np.array([sign, 1.0, 1.0])
        for heading in ROOT_HEADINGS:
            direction = np.array(heading) * mirror + np.array([0.2 * sign, 0.0, 0.0])
            vessel_trees.append(
                grow_tree(
                    rng, side, spacing, hilum, direction, rng.uniform(3.0, 4.5) * s, VESSEL_TREE
                )
            )
        for heading in ([0.4, 0.1, 1.0], [0.8, 0.2, -0.6]):
            airway_trees.append(
                grow_tree(
                    rng,
                    side,
                    spacing,
                    hilum,
                    np.array(heading) * mirror,
                    rng.uniform(3.5, 4.5) * s,
                    AIRWAY_TREE,
                )
            )
    points, values = [], []
    for vertices_mm, radii, kind in _mediastinal_tubes(layout, hila, float(w.ravel()[-1])):
        vertices = (np.asarray(vertices_mm, float) - origin) / spacing_arr
        line, line_radii = polyline(vertices, np.asarray(radii, float) * s, spacing)
        points.append(line)
        values.append(np.stack([line_radii, np.full(len(line), kind)], axis=1))
    return (
        _merge(vessel_trees),
        _merge(airway_trees),
        np.concatenate(points),
        np.concatenate(values),
    )


def _mediastinal_tubes(
    layout: Layout, hila: list[np.ndarray], top: float
) -> list[tuple[list, list[float], int]]:
    """Polylines in mm (u, v, w) with radii in units of ``layout.scale`` and a tube kind:
    trachea and main bronchi, pulmonary arteries, aorta, oesophagus, superior vena cava."""
    s = layout.scale
    span = layout.apex - layout.base[0]
    spine_v, radius = _spine_centre(layout)
    heart_u, heart_v, heart_z, _, heart_rv, heart_rz = layout.heart
    carina = [0.0, spine_v - radius - 22.0 * s, layout.base[0] + 0.68 * span]
    arch_z = layout.base[0] + 0.82 * span
    descending = [radius + 10.0 * s, spine_v - 0.5 * radius]
    ascending = [heart_u - 10.0 * s, heart_v + 0.5 * heart_rv]
    oesophagus = [8.0 * s, spine_v - radius - 6.0 * s]
    vena_cava = [-0.12 * layout.body_axes[0], heart_v + 0.2 * heart_rv]
    tubes = [
        ([[carina[0], carina[1], top + 10.0], carina], [8.0, 7.0], AIRWAY),
        (
            [
                [*descending, -20.0],
                [*descending, arch_z],
                [*ascending, arch_z],
                [*ascending, heart_z],
            ],
            [11.0, 12.0, 14.0, 15.0],
            GREAT_VESSEL,
        ),
        ([[*oesophagus, -20.0], [*oesophagus, top + 10.0]], [6.0, 6.0], GREAT_VESSEL),
        ([[*vena_cava, heart_z], [*vena_cava, top + 10.0]], [9.0, 9.0], GREAT_VESSEL),
    ]
    for hilum in hila:
        tubes.append(([carina, hilum], [6.0, 4.5], AIRWAY))
        tubes.append(([[heart_u, heart_v, heart_z + 0.6 * heart_rz], hilum], [7.0, 4.5], VESSEL))
    return tubes


def _nearest_voxel(mask: np.ndarray, target: np.ndarray, spacing: np.ndarray) -> np.ndarray | None:
    voxels = np.argwhere(mask)
    if len(voxels) == 0:
        return None
    distance = np.sum(((voxels - target) * spacing) ** 2, axis=1)
    return voxels[int(np.argmin(distance))].astype(float)


def _merge(trees: list[Tree]) -> Tree:
    if not trees:
        empty = np.zeros((0, 3))
        return Tree(empty, np.zeros(0), empty, np.zeros(0))
    return Tree(
        *(
            np.concatenate([getattr(t, name) for t in trees])
            for name in ("points", "radii", "forks", "fork_radii")
        )
    )


def _paint_tubes(
    hu: np.ndarray,
    distance: np.ndarray,
    radius: np.ndarray,
    kind: np.ndarray,
    cavity: np.ndarray,
    voxel: float,
    texture: np.ndarray,
) -> np.ndarray:
    """Vessels and great vessels as soft tissue, airways as air with a soft-tissue wall.

    Tubes thinner than a voxel only partly fill it, so their contrast fades with radius.
    """
    fade = np.clip((2.0 * radius / voxel) ** 2, 0.0, 1.0)
    solid = soft_inside(distance - radius, voxel) * fade * cavity
    tissue = 40.0 + 6.0 * texture
    is_airway = kind == AIRWAY
    hu = np.where(is_airway, hu, hu + solid * (tissue - hu))
    wall = soft_inside(distance - radius - (0.2 * radius + 0.8), voxel) * fade * cavity
    hu = np.where(is_airway, hu + wall * (tissue - 20.0 - hu), hu)
    lumen = soft_inside(distance - radius, voxel) * fade * cavity
    return np.where(is_airway, hu + lumen * (-990.0 - hu), hu).astype(np.float32)
