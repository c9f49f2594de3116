"""Abdominal CT phantoms in the MSD Task03_Liver layout (LiTS-like), with liver and tumours.

Each case is an upper abdomen: body wall and fat, lung bases above the diaphragm, a liver
(two deformed, merged ellipsoids on the patient's right, with portal and hepatic vessel
trees), hypodense lobulated tumours inside it, spleen, kidneys, stomach, aorta, vena cava,
spine, ribs and bowel loops in visceral fat. Labels: 0 background, 1 liver, 2 tumour.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from genesis.io.volume import save_nifti
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, from_mapping, setting
from genesis.synth.fields import (
    box_around,
    lobulated_ball,
    mm_grid,
    random_unit_vectors,
    smooth_noise,
    soft_inside,
    tube_distance,
)
from genesis.synth.msd import write_dataset_json
from genesis.synth.tree import TreeShape, grow_tree
from genesis.synth.trunk import body_depth, paint_ribs, paint_spine
from genesis.synth.validate import check_shape

log = logging.getLogger(__name__)

#: Where these settings live in config/config.yaml; errors name keys under it.
SECTION = "data.synthetic.liver"

LIVER_VESSELS = TreeShape(generations=5, length_per_radius=(5.0, 9.0), min_radius=0.8, wiggle=0.06)


@dataclass(frozen=True)
class LiverSettings:
    """Size and content of the liver phantom set (lengths in mm)."""

    cases: int = setting(
        14,
        "Number of cases; LCS splits them 100 : 15 : 15 in index order "
        "(`tasks.lcs.prepare.split_counts`).",
        bounds="[1, inf)",
    )
    shape: tuple[int, int, int] = setting(
        (96, 96, 48),
        "Voxels per case (x, y, z), at least 32×32×16.",
    )
    inplane_spacing_mm: tuple[float, float] = setting(
        (3.7, 4.5),
        "Range of the in-plane spacing, drawn per case.",
        bounds="[0.1, inf)",
    )
    slice_spacing_mm: tuple[float, float] = setting(
        (4.0, 6.0),
        "Range of the slice spacing, drawn per case.",
        bounds="[0.1, inf)",
    )
    tumours_per_case: tuple[int, int] = setting(
        (1, 3),
        "Range of tumours per case.",
        bounds="[0, inf)",
    )
    tumour_diameter_mm: tuple[float, float] = setting(
        (12.0, 60.0),
        "Range of tumour diameters (drawn log-uniformly).",
        bounds="[1, inf)",
    )
    noise_hu: tuple[float, float] = setting(
        (8.0, 20.0),
        "Range of the Gaussian noise standard deviation (HU), drawn per case.",
        bounds="[0, inf)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        check_shape(f"{SECTION}.shape", self.shape, minimum=(32, 32, 16))
        check_increasing(
            self,
            SECTION,
            "inplane_spacing_mm",
            "slice_spacing_mm",
            "tumours_per_case",
            "tumour_diameter_mm",
            "noise_hu",
            strict=False,
        )


def synthesize_liver(
    output_dir: str | Path, settings: LiverSettings | Mapping[str, Any] | None, seed: int
) -> dict[str, Any]:
    """Write ``dataset.json``, ``imagesTr/liver_N.nii.gz`` and ``labelsTr/liver_N.nii.gz``."""
    if not isinstance(settings, LiverSettings):
        settings = from_mapping(LiverSettings, settings, SECTION)
    output_dir = Path(output_dir)
    names, tumour_voxels = [], 0
    for case in range(settings.cases):
        rng = numpy_rng(seed, "liver", case)
        spacing = (round(float(rng.uniform(*settings.inplane_spacing_mm)), 6),) * 2 + (
            round(float(rng.uniform(*settings.slice_spacing_mm)), 2),
        )
        fov = np.array(settings.shape) * np.array(spacing)
        origin = (
            round(float(-fov[0] / 2 + rng.uniform(-20, 20)), 3),
            round(float(-fov[1] / 2 + rng.uniform(-20, 20)), 3),
            round(float(rng.uniform(-650, -350)), 2),
        )
        hu, label = build_abdomen(rng, settings, spacing)
        name = f"liver_{case}.nii.gz"
        save_nifti(output_dir / "imagesTr" / name, hu, spacing=spacing, origin=origin)
        save_nifti(output_dir / "labelsTr" / name, label, spacing=spacing, origin=origin)
        names.append(name)
        tumour_voxels += int(np.count_nonzero(label == 2))
        log.info(
            "wrote %s: spacing %s, liver %d voxels, tumour %d voxels",
            name,
            spacing,
            np.count_nonzero(label == 1),
            np.count_nonzero(label == 2),
        )
    write_dataset_json(
        output_dir,
        name="Liver",
        description="Liver and tumour segmentation (synthetic phantom in the Task03_Liver layout)",
        tensor_size="3D",
        modality={"0": "CT"},
        labels={"0": "background", "1": "liver", "2": "cancer"},
        cases=names,
    )
    summary = {
        "dataset": "liver",
        "output": str(output_dir),
        "cases": len(names),
        "tumour_voxels": tumour_voxels,
    }
    log.info("liver phantoms: %s", summary)
    return summary


def build_abdomen(
    rng: np.random.Generator, settings: LiverSettings, spacing: tuple[float, float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """One case: int16 HU image and uint8 label volume, both (X, Y, Z)."""
    shape = settings.shape
    fov = np.array(shape) * np.array(spacing)
    s = min(fov[0] / 380.0, fov[1] / 310.0) * rng.uniform(0.88, 1.0)
    height = float(fov[2])
    u, v, w = mm_grid(shape, spacing, (float(fov[0] / 2), float(fov[1] / 2), 0.0))
    texture = smooth_noise(rng, shape, 3.0)
    a, b, body_y = s * rng.uniform(150, 170), s * rng.uniform(112, 132), s * rng.uniform(-10, 5)
    depth = body_depth(u, v, (a, b), body_y)
    fat, muscle = s * rng.uniform(10, 35), s * rng.uniform(8, 14)
    wall = fat + muscle + 20.0 * s * np.clip((v - body_y) / b, 0, 1) ** 2
    cavity = np.broadcast_to(depth > wall, shape)
    dome = height * rng.uniform(0.72, 0.86) + 0.12 * height * (
        1.0 - np.clip(((np.abs(u) - 0.45 * a) / (0.45 * a)) ** 2 + ((v - body_y) / b) ** 2, 0, 1)
    )

    hu = np.full(shape, -1000.0, np.float32)
    hu = np.where(np.broadcast_to(depth > 0, shape), 45.0 + 6.0 * texture, hu)
    hu = np.where(np.broadcast_to((depth > 0) & (depth < fat), shape), -100.0 + 8.0 * texture, hu)
    hu = np.where(cavity, -95.0 + 8.0 * texture, hu)  # visceral fat
    _paint_bowel(rng, hu, cavity & (w < dome - 25.0 * s), texture, shape)
    hu = np.where(cavity & (w >= dome), -860.0 + 20.0 * texture, hu)  # lung bases
    below = cavity & (w < dome - 3.0)
    radius = 16.0 * s
    spine_v = body_y + b - (fat + muscle + 20.0 * s) - 0.6 * radius
    _paint_organs(rng, hu, u, v, w, below, texture, (a, b, body_y, height, s), spine_v, radius)
    paint_spine(hu, u, v, w, spine_v, radius, s, 28.0 * s, rng.uniform(0, 28))
    position = np.clip((v - body_y) / b, -1.0, 1.0)
    paint_ribs(
        hu, w, depth, wall, position, s, 26.0 * s, 45.0 * s, rng.uniform(0, 26), 0.45 * height
    )

    liver = _liver_mask(rng, u, v, w, below, (a, b, body_y, s), dome, shape)
    liver_hu = rng.uniform(55.0, 70.0)
    hu = np.where(liver, liver_hu + 6.0 * texture, hu)
    hu = _liver_vessels(rng, hu, liver, spacing, liver_hu)
    tumour = _tumours(rng, hu, liver, spacing, settings)
    hu = ndi.gaussian_filter(hu, (0.6, 0.6, 0.3))  # scanner blur
    hu += np.float32(rng.uniform(*settings.noise_hu)) * rng.standard_normal(shape, np.float32)
    label = np.where(tumour, 2, np.where(liver, 1, 0)).astype(np.uint8)
    return np.rint(np.clip(hu, -1024, 3071)).astype(np.int16), label


def _paint_bowel(
    rng: np.random.Generator,
    hu: np.ndarray,
    region: np.ndarray,
    texture: np.ndarray,
    shape: tuple[int, int, int],
) -> None:
    """Bowel loops: the high values of a smooth random field, some holding gas."""
    loops = smooth_noise(rng, shape, 5.0)
    gas = smooth_noise(rng, shape, 3.0)
    bowel = region & (loops > 0.3)
    hu[...] = np.where(bowel, 30.0 + 8.0 * texture, hu)
    hu[...] = np.where(bowel & (gas > 1.7), -900.0, hu)


def _ellipsoid(
    u: np.ndarray, v: np.ndarray, w: np.ndarray, centre: tuple[float, ...], axes: tuple[float, ...]
) -> np.ndarray:
    """Normalised ellipsoid equation: <= 1 inside."""
    return (
        ((u - centre[0]) / axes[0]) ** 2
        + ((v - centre[1]) / axes[1]) ** 2
        + ((w - centre[2]) / axes[2]) ** 2
    )


def _paint_organs(
    rng: np.random.Generator,
    hu: np.ndarray,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    region: np.ndarray,
    texture: np.ndarray,
    body: tuple[float, ...],
    spine_v: float,
    radius: float,
) -> None:
    """Spleen, kidneys, stomach, aorta, vena cava and psoas muscles (in place)."""
    a, b, body_y, height, s = body

    def jitter() -> float:
        return float(rng.uniform(0.85, 1.15))

    spleen = _ellipsoid(
        u,
        v,
        w,
        (0.55 * a, body_y + 0.3 * b, 0.62 * height),
        (0.14 * a * jitter(), 0.3 * b * jitter(), 0.14 * height * jitter()),
    )
    hu[...] = np.where(region & (spleen <= 1), 50.0 + 5.0 * texture, hu)
    for sign in (-1.0, 1.0):
        kidney_c = (sign * 0.33 * a, spine_v - 0.1 * b, height * rng.uniform(0.3, 0.42))
        kidney_r = (0.1 * a * jitter(), 0.15 * b * jitter(), 0.15 * height * jitter())
        kidney = _ellipsoid(u, v, w, kidney_c, kidney_r)
        hu[...] = np.where(
            region & (kidney <= 1), np.where(kidney < 0.3, -40.0, 140.0) + 6.0 * texture, hu
        )
        psoas = ((u - sign * 0.14 * a) / (0.07 * a)) ** 2 + (
            (v - spine_v + 0.3 * radius) / (0.07 * b)
        ) ** 2
        hu[...] = np.where(region & (psoas <= 1) & (w < 0.45 * height), 50.0 + 6.0 * texture, hu)
    stomach = _ellipsoid(
        u,
        v,
        w,
        (0.3 * a, body_y - 0.25 * b, 0.6 * height),
        (0.22 * a * jitter(), 0.2 * b * jitter(), 0.13 * height * jitter()),
    )
    gas_level = 0.6 * height + (0.04 if rng.random() < 0.5 else 1.0) * height
    hu[...] = np.where(region & (stomach <= 1), np.where(w > gas_level, -900.0, 20.0), hu)
    for centre, tube_r, value in (
        ((0.2 * a, spine_v - radius - 12.0 * s), 11.0 * s, 120.0),
        ((-0.15 * a, spine_v - radius - 18.0 * s), 12.0 * s, 100.0),
    ):
        tube = (u - centre[0]) ** 2 + (v - centre[1]) ** 2 < tube_r**2
        hu[...] = np.where(region & tube, value + 6.0 * texture, hu)


def _liver_mask(
    rng: np.random.Generator,
    u: np.ndarray,
    v: np.ndarray,
    w: np.ndarray,
    region: np.ndarray,
    body: tuple[float, ...],
    dome: np.ndarray,
    shape: tuple[int, int, int],
) -> np.ndarray:
    """Right lobe and left lobe as merged ellipsoids, deformed by smooth noise, under the dome.

    Size, position and lobe proportions vary per case (the left lobe may be small).
    """
    a, b, body_y, s = body
    top = float(np.median(dome[u.ravel() < -0.2 * a])) if np.ndim(dome) else float(dome)
    length = s * rng.uniform(140, 200)
    right = _ellipsoid(
        u,
        v,
        w,
        (-0.42 * a * rng.uniform(0.9, 1.1), body_y - 0.05 * b, top - 0.45 * length),
        (0.42 * a * rng.uniform(0.85, 1.1), 0.6 * b * rng.uniform(0.85, 1.1), 0.5 * length),
    )
    left = _ellipsoid(
        u,
        v,
        w,
        (0.05 * a, body_y - 0.4 * b, top - 0.25 * length),
        (0.4 * a * rng.uniform(0.6, 1.1), 0.3 * b * rng.uniform(0.8, 1.1), 0.22 * length),
    )
    implicit = np.minimum(right, left) + 0.25 * smooth_noise(rng, shape, 8.0)
    liver = region & (implicit <= 1.0)
    labels, count = ndi.label(liver)
    if count > 1:  # keep the main body; the noise can detach small islands
        liver = labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))
    return liver


def _liver_vessels(
    rng: np.random.Generator,
    hu: np.ndarray,
    liver: np.ndarray,
    spacing: tuple[float, float, float],
    liver_hu: float,
) -> np.ndarray:
    """Portal and hepatic vein trees inside the liver, brighter than parenchyma."""
    voxels = np.argwhere(liver)
    if len(voxels) == 0:
        return hu
    lowest = voxels[np.argsort(voxels[:, 2])[: max(1, len(voxels) // 20)]]
    starts = [lowest[rng.integers(len(lowest))], voxels[rng.integers(len(voxels))]]
    headings = random_unit_vectors(rng, 2) + np.array([0.0, 0.0, 0.8])  # mostly upwards
    trees = [
        grow_tree(
            rng, liver, spacing, start.astype(float), heading, rng.uniform(3.0, 5.0), LIVER_VESSELS
        )
        for start, heading in zip(starts, headings, strict=True)
    ]
    points = np.concatenate([t.points for t in trees])
    if len(points) == 0:
        return hu
    distance, (radius,) = tube_distance(
        hu.shape, spacing, points, np.concatenate([t.radii for t in trees])
    )
    weight = soft_inside(distance - radius, min(spacing)) * liver
    return hu + weight * (liver_hu + 45.0 - hu)


def _tumours(
    rng: np.random.Generator,
    hu: np.ndarray,
    liver: np.ndarray,
    spacing: tuple[float, float, float],
    settings: LiverSettings,
) -> np.ndarray:
    """Paint hypodense lobulated tumours into the liver; return their mask (inside the liver)."""
    mask = np.zeros(liver.shape, dtype=bool)
    voxels = np.argwhere(liver)
    if len(voxels) == 0:
        return mask
    spacing_arr = np.asarray(spacing, float)
    low, high = settings.tumours_per_case
    low_d, high_d = np.log(settings.tumour_diameter_mm[0]), np.log(settings.tumour_diameter_mm[1])
    for _ in range(int(rng.integers(low, high + 1))):
        radius = float(np.exp(rng.uniform(low_d, high_d))) / 2
        best, best_fraction = voxels[0], -1.0
        for centre in voxels[rng.integers(0, len(voxels), 30)]:
            box = box_around(centre, radius / spacing_arr, liver.shape)
            fraction = float(liver[box].mean())
            if fraction > best_fraction:
                best, best_fraction = centre, fraction
            if fraction > 0.8:
                break
        box = box_around(best, 1.5 * radius / spacing_arr + 1, liver.shape)
        offsets = tuple(
            ((np.arange(sl.start, sl.stop) - c) * sp)
            .astype(np.float32)
            .reshape([-1 if axis == i else 1 for axis in range(3)])
            for i, (sl, c, sp) in enumerate(zip(box, best, spacing_arr, strict=True))
        )
        count = int(rng.integers(0, 4))
        bumps = random_unit_vectors(rng, count) * radius * 0.7
        signed = lobulated_ball(offsets, radius, bumps, radius * rng.uniform(0.3, 0.6, count))
        inside = liver[box]
        weight = soft_inside(signed, float(spacing_arr.min())) * inside
        hu[box] += weight * (rng.uniform(20.0, 40.0) - hu[box])
        mask[box] |= (signed < 0) & inside
    return mask
