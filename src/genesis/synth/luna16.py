"""Chest CT phantoms in the LUNA16 layout: ``subset{k}/{uid}.mhd/.raw`` plus the CSVs.

Anatomy is fixed in world (LPS) coordinates; a flipped scan stores the same patient with
direction ``diag(-1, -1, 1)``, its voxel array reversed in x and y and its origin moved to
the other corner, exactly as the 14 flipped LUNA16 scans. Annotations and candidates are
world millimetres, so a reader that ignores the direction misses the nodules.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage as ndi

from genesis.atomic import write_text
from genesis.errors import ConfigError
from genesis.io.geometry import Geometry, voxel_to_world
from genesis.io.metaimage import save_metaimage
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, from_mapping, setting
from genesis.synth.chest import ChestAnatomy, build_anatomy
from genesis.synth.nodules import Nodule, paint_nodules, place_nodules
from genesis.synth.validate import check_shape

log = logging.getLogger(__name__)

#: Where these settings live in config/config.yaml; errors name keys under it.
SECTION = "data.synthetic.luna16"

UID_ROOT = "1.3.6.1.4.1.14519.5.2.1.6279.6001."
FLIPPED = np.diag([-1.0, -1.0, 1.0])
HARD_MIX = {"forks": 0.4, "vessels": 0.3, "airways": 0.1, "pleura": 0.2}
EASY_MIX = {"lung": 0.6, "body": 0.4}


@dataclass(frozen=True)
class Luna16Settings:
    """Size and content of the LUNA16-style phantom set (lengths in mm)."""

    subsets: tuple[int, ...] = setting(
        (0, 1, 2, 3, 4),
        "Subset folders to write (subset<k>/); the workflow fills it in from luna16.train, val and "
        "test.",
        bounds="[0, inf)",
    )
    scans_per_subset: int = setting(
        2,
        "Scans written per LUNA16 subset; more scans give more pretraining cubes and NCC "
        "candidates.",
        bounds="[1, inf)",
    )
    shape: tuple[int, int, int] = setting(
        (128, 128, 80),
        "Voxels per scan (x, y, z), at least 32×32×16. Must hold a cube plus `cubes.border` on "
        "each side and at least `cubes.min_slices` slices.",
    )
    inplane_spacing_mm: tuple[float, float] = setting(
        (2.2, 2.8),
        "Range of the in-plane voxel spacing, drawn per scan.",
        bounds="[0.1, inf)",
    )
    slice_spacing_mm: tuple[float, float] = setting(
        (2.5, 3.5),
        "Range of the slice spacing, drawn per scan.",
        bounds="[0.1, inf)",
    )
    flipped_fraction: float = setting(
        0.2,
        "Share of scans stored with the flipped direction `diag(-1, -1, 1)` (at least one when > "
        "0), as 14 real LUNA16 scans are; exercises direction handling.",
        bounds="[0, 1]",
    )
    nodules_per_scan: tuple[int, int] = setting(
        (2, 5),
        "Range (inclusive) of nodules painted per scan.",
        bounds="[0, inf)",
    )
    nodule_diameter_mm: tuple[float, float] = setting(
        (3.0, 30.0),
        "Range of nodule diameters.",
        bounds="[1, inf)",
    )
    max_duplicates: int = setting(
        2,
        "Up to this many jittered extra positive candidates per nodule, as `candidates_V2.csv` "
        "lists several candidates on one nodule.",
        bounds="[0, inf)",
    )
    negatives_per_scan: int = setting(
        60,
        "Negative candidates per scan.",
        bounds="[0, inf)",
    )
    hard_negative_fraction: float = setting(
        0.5,
        "Share of negatives on nodule look-alikes (vessel forks, vessels seen end-on, airway "
        "walls, pleura); the rest are random lung and body points. Raise it for a harder NCC task.",
        bounds="[0, 1]",
    )
    noise_hu: tuple[float, float] = setting(
        (10.0, 25.0),
        "Range of the Gaussian noise standard deviation (HU), drawn per scan.",
        bounds="[0, inf)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        if not self.subsets or len(set(self.subsets)) != len(self.subsets):
            raise ConfigError(
                f"{SECTION}.subsets must be distinct integers, got {list(self.subsets)}"
            )
        check_shape(f"{SECTION}.shape", self.shape, minimum=(32, 32, 16))
        check_increasing(
            self,
            SECTION,
            "inplane_spacing_mm",
            "slice_spacing_mm",
            "nodules_per_scan",
            "nodule_diameter_mm",
            "noise_hu",
            strict=False,
        )


@dataclass(frozen=True)
class Scan:
    """One written scan: where, how it is oriented, what is in it (world mm)."""

    uid: str
    subset: int
    flipped: bool
    nodules: list[tuple[np.ndarray, float]]  # (world centre, diameter)
    candidates: list[tuple[np.ndarray, int]]  # (world point, class)


def synthesize_luna16(
    output_dir: str | Path, settings: Luna16Settings | Mapping[str, Any] | None, seed: int
) -> dict[str, Any]:
    """Write the LUNA16-layout phantom set into ``output_dir``; return a summary."""
    if not isinstance(settings, Luna16Settings):
        settings = from_mapping(Luna16Settings, settings, SECTION)
    output_dir = Path(output_dir)
    jobs = [(subset, k) for subset in settings.subsets for k in range(settings.scans_per_subset)]
    flipped = _choose_flipped(len(jobs), settings.flipped_fraction, seed)
    scans = []
    for number, (subset, k) in enumerate(jobs):
        scans.append(_make_scan(output_dir, settings, seed, subset, k, number in flipped))
    write_text(output_dir / "annotations.csv", _annotations_csv(scans))
    write_text(output_dir / "candidates_V2.csv", _candidates_csv(scans))
    summary = {
        "dataset": "luna16",
        "output": str(output_dir),
        "scans": len(scans),
        "flipped": sum(scan.flipped for scan in scans),
        "nodules": sum(len(scan.nodules) for scan in scans),
        "candidates": sum(len(scan.candidates) for scan in scans),
        "positive_candidates": sum(c[1] for scan in scans for c in scan.candidates),
    }
    log.info("luna16 phantoms: %s", summary)
    return summary


def _choose_flipped(count: int, fraction: float, seed: int) -> set[int]:
    """Which scans get the flipped direction: at least one whenever the fraction is > 0."""
    if fraction <= 0 or count == 0:
        return set()
    n = min(count, max(1, round(fraction * count)))
    return set(numpy_rng(seed, "luna16", "flipped").choice(count, n, replace=False).tolist())


def _make_scan(
    output_dir: Path, settings: Luna16Settings, seed: int, subset: int, k: int, flipped: bool
) -> Scan:
    rng = numpy_rng(seed, "luna16", "scan", subset, k)
    uid = UID_ROOT + str(rng.integers(1, 10)) + "".join(map(str, rng.integers(0, 10, 29)))
    inplane = round(float(rng.uniform(*settings.inplane_spacing_mm)), 6)
    spacing = (inplane, inplane, round(float(rng.uniform(*settings.slice_spacing_mm)), 2))
    shape = settings.shape
    fov = np.array(shape) * np.array(spacing)
    origin = (
        round(float(-fov[0] / 2 + rng.uniform(-25, 5)), 3),
        round(float(-fov[1] / 2 + rng.uniform(-25, 5)), 3),
        round(float(rng.uniform(-400, -300)), 2),
    )
    canonical = Geometry(spacing, origin, np.eye(3))

    anatomy = build_anatomy(rng, shape, spacing)
    count = int(rng.integers(settings.nodules_per_scan[0], settings.nodules_per_scan[1] + 1))
    nodules = place_nodules(rng, anatomy.lung, spacing, count, settings.nodule_diameter_mm)
    if len(nodules) < count:
        log.warning(
            "scan %s: placed %d of %d nodules (lungs too small for the sizes asked)",
            uid,
            len(nodules),
            count,
        )
    hu = anatomy.hu
    paint_nodules(hu, nodules, spacing)
    hu += np.float32(rng.uniform(*settings.noise_hu)) * rng.standard_normal(shape, np.float32)
    volume = np.rint(np.clip(hu, -1024, 3071)).astype(np.int16)
    points, classes = sample_candidates(rng, anatomy, nodules, settings, spacing)

    geometry = canonical
    if flipped:
        # Same patient in world space: reverse x and y, start from the opposite corner.
        volume = volume[::-1, ::-1, :]
        corner = voxel_to_world(np.array([shape[0] - 1, shape[1] - 1, 0.0]), canonical)
        geometry = Geometry(spacing, (float(corner[0]), float(corner[1]), origin[2]), FLIPPED)
    path = output_dir / f"subset{subset}" / f"{uid}.mhd"
    save_metaimage(
        path,
        np.ascontiguousarray(volume),
        spacing=geometry.spacing,
        origin=geometry.origin,
        direction=geometry.direction,
    )
    world_nodules = [
        (voxel_to_world(n.centre.astype(float), canonical), n.diameter_mm) for n in nodules
    ]
    world_points = voxel_to_world(points, canonical)
    log.info(
        "wrote %s: spacing %s, %d nodules, %d candidates, flipped=%s",
        path,
        spacing,
        len(nodules),
        len(points),
        flipped,
    )
    return Scan(
        uid, subset, flipped, world_nodules, list(zip(world_points, classes.tolist(), strict=True))
    )


def sample_candidates(
    rng: np.random.Generator,
    anatomy: ChestAnatomy,
    nodules: list[Nodule],
    settings: Luna16Settings,
    spacing: tuple[float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """Positives on every nodule (plus jittered duplicates), hard and easy negatives.

    Hard negatives sit on nodule look-alikes: vessel forks, thick vessels seen end-on,
    airway walls and the pleura. Easy ones are random parenchyma and body tissue.
    """
    spacing_arr = np.asarray(spacing, float)
    positives = []
    for nodule in nodules:
        positives.append(nodule.centre.astype(float))
        radius = nodule.diameter_mm / 2
        for _ in range(int(rng.integers(0, settings.max_duplicates + 1))):
            jitter = rng.standard_normal(3)
            jitter *= 0.4 * radius * rng.random() ** (1 / 3) / np.linalg.norm(jitter)
            positives.append(nodule.centre + jitter / spacing_arr)
    hard = round(settings.negatives_per_scan * settings.hard_negative_fraction)
    easy = settings.negatives_per_scan - hard
    pools = _pools(anatomy)
    negatives = [
        _draw(rng, pools[name], round(hard * share), nodules, spacing_arr, anatomy)
        for name, share in HARD_MIX.items()
    ]
    negatives += [
        _draw(rng, pools[name], round(easy * share), nodules, spacing_arr, anatomy)
        for name, share in EASY_MIX.items()
    ]
    points = np.concatenate([np.reshape(positives, (-1, 3)), *negatives])
    classes = np.concatenate(
        [np.ones(len(positives), int), np.zeros(len(points) - len(positives), int)]
    )
    order = rng.permutation(len(points))
    return points[order], classes[order]


def _pools(anatomy: ChestAnatomy) -> dict[str, np.ndarray]:
    """Index positions (N, 3) from which each kind of negative is drawn."""
    vessels, airways = anatomy.vessels, anatomy.airways
    pleura = anatomy.lung & ~ndi.binary_erosion(anatomy.lung)
    body = anatomy.body & ~anatomy.lung & (anatomy.hu > -500)
    return {
        "forks": vessels.forks[vessels.fork_radii >= 1.0],
        "vessels": vessels.points[vessels.radii >= 1.5],
        "airways": airways.points,
        "pleura": np.argwhere(pleura).astype(float),
        "lung": np.argwhere(anatomy.lung & (anatomy.tube_distance > 5.0)).astype(float),
        "body": np.argwhere(body).astype(float),
    }


def _draw(
    rng: np.random.Generator,
    pool: np.ndarray,
    count: int,
    nodules: list[Nodule],
    spacing: np.ndarray,
    anatomy: ChestAnatomy,
) -> np.ndarray:
    """Up to ``count`` pool points, jittered by half a voxel, inside the scan and clear of
    every nodule (5 mm beyond its radius)."""
    if count <= 0 or len(pool) == 0:
        return np.zeros((0, 3))
    picks = pool[rng.integers(0, len(pool), 4 * count)]
    picks = picks + rng.uniform(-0.5, 0.5, picks.shape)
    keep = np.all((picks >= 0) & (picks <= np.array(anatomy.hu.shape) - 1), axis=1)
    for nodule in nodules:
        distance = np.linalg.norm((picks - nodule.centre) * spacing, axis=1)
        keep &= distance > nodule.diameter_mm / 2 + 5.0
    return picks[keep][:count]


def _annotations_csv(scans: list[Scan]) -> str:
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm"]
    for scan in scans:
        lines += [f"{scan.uid},{_xyz(centre)},{diameter:.6f}" for centre, diameter in scan.nodules]
    return "\n".join(lines) + "\n"


def _candidates_csv(scans: list[Scan]) -> str:
    lines = ["seriesuid,coordX,coordY,coordZ,class"]
    for scan in scans:
        lines += [f"{scan.uid},{_xyz(point)},{label}" for point, label in scan.candidates]
    return "\n".join(lines) + "\n"


def _xyz(point: np.ndarray) -> str:
    return ",".join(f"{float(v):.6f}" for v in point)
