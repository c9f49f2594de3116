"""Multi-modal brain MRI phantoms in the MSD Task01_BrainTumour layout (BraTS-like).

Each case warps the template tissue maps (small random affine plus smooth elastic field),
grows a glioma (enhancing rim around a necrotic core inside an oedema region that spreads
along white matter, pushing the tissue aside) and renders four skull-stripped contrasts
from tissue fractions: FLAIR, T1w, T1gd, T2w, with a smooth bias field and Rician noise.
Labels: 0 background, 1 oedema, 2 non-enhancing/necrotic core, 3 enhancing tumour.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage as ndi

from genesis.io.volume import save_nifti
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, from_mapping, setting
from genesis.synth.fields import smooth_noise
from genesis.synth.msd import write_dataset_json
from genesis.synth.template import TissueMaps, load_tissue_maps
from genesis.synth.validate import check_shape

log = logging.getLogger(__name__)

#: Where these settings live in config/config.yaml; errors name keys under it.
SECTION = "data.synthetic.brain"

#: Mean signal per tissue and channel (FLAIR, T1w, T1gd, T2w), relative units.
CONTRAST = {
    "gm": (0.60, 0.60, 0.62, 0.55),
    "wm": (0.45, 0.85, 0.85, 0.35),
    "csf": (0.10, 0.20, 0.22, 1.00),
    "oedema": (0.95, 0.50, 0.52, 0.85),
    "necrosis": (0.55, 0.30, 0.35, 0.95),
    "enhancing": (0.75, 0.55, 1.40, 0.70),
}
CHANNEL_SCALE = (450.0, 600.0, 700.0, 800.0)
RAS_IDENTITY_IN_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class BrainSettings:
    """Size and content of the brain phantom set; tumour sizes in voxels of the grid."""

    cases: int = setting(
        14,
        "Number of cases; BMS cuts them into `tasks.bms.prepare.folds` folds.",
        bounds="[1, inf)",
    )
    shape: tuple[int, int, int] = setting(
        (96, 96, 64),
        "Voxels per case (x, y, z), at least 32×32×24.",
    )
    spacing_mm: float = setting(
        1.0,
        "Isotropic voxel spacing (BraTS volumes are 1 mm).",
        bounds="[0.1, inf)",
    )
    tumour_core_radius_vox: tuple[float, float] = setting(
        (4.0, 9.0),
        "Range of the tumour core radius (minimum 3).",
        bounds="[3, inf)",
    )
    oedema_margin_vox: tuple[float, float] = setting(
        (3.0, 9.0),
        "Range of the oedema margin around the core.",
        bounds="[1, inf)",
    )
    noise_fraction: tuple[float, float] = setting(
        (0.02, 0.05),
        "Range of the Rician noise level, as a fraction of each channel's signal scale.",
        bounds="[0, 0.5]",
    )
    template: Literal["mni152", "analytic"] = setting(
        "mni152",
        "Tissue maps to warp: nilearn's MNI152 template (falls back to the analytic head, with a "
        "warning, when nilearn's files are unavailable) or the built-in analytic head.",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        check_shape(f"{SECTION}.shape", self.shape, minimum=(32, 32, 24))
        check_increasing(
            self,
            SECTION,
            "tumour_core_radius_vox",
            "oedema_margin_vox",
            "noise_fraction",
            strict=False,
        )


def synthesize_brain(
    output_dir: str | Path, settings: BrainSettings | Mapping[str, Any] | None, seed: int
) -> dict[str, Any]:
    """Write ``dataset.json``, ``imagesTr/BRATS_NNN.nii.gz`` (4D) and ``labelsTr/``."""
    if not isinstance(settings, BrainSettings):
        settings = from_mapping(BrainSettings, settings, SECTION)
    output_dir = Path(output_dir)
    maps = load_tissue_maps(settings.shape, settings.template)
    spacing = (settings.spacing_mm,) * 3
    # RAS-identity affine centred on the grid, as BraTS volumes are stored.
    centre = (np.array(settings.shape) - 1) / 2 * settings.spacing_mm
    origin = (float(centre[0]), float(centre[1]), float(-centre[2]))
    names = []
    for case in range(settings.cases):
        rng = numpy_rng(seed, "brain", case)
        image, label = build_case(rng, maps, settings)
        name = f"BRATS_{case + 1:03d}.nii.gz"
        save_nifti(
            output_dir / "imagesTr" / name,
            image,
            spacing=spacing,
            origin=origin,
            direction=RAS_IDENTITY_IN_LPS,
        )
        save_nifti(
            output_dir / "labelsTr" / name,
            label,
            spacing=spacing,
            origin=origin,
            direction=RAS_IDENTITY_IN_LPS,
        )
        names.append(name)
        log.info(
            "wrote %s: voxels per label %s", name, np.bincount(label.ravel(), minlength=4).tolist()
        )
    write_dataset_json(
        output_dir,
        name="BRATS",
        description="Gliomas segmentation tumour and "
        "oedema in brain images (synthetic phantom in the Task01 layout)",
        tensor_size="4D",
        modality={"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        labels={
            "0": "background",
            "1": "edema",
            "2": "non-enhancing tumor",
            "3": "enhancing tumour",
        },
        cases=names,
    )
    summary = {
        "dataset": "brain",
        "output": str(output_dir),
        "cases": len(names),
        "template": maps.source,
    }
    log.info("brain phantoms: %s", summary)
    return summary


def build_case(
    rng: np.random.Generator, maps: TissueMaps, settings: BrainSettings
) -> tuple[np.ndarray, np.ndarray]:
    """One case: float32 (X, Y, Z, 4) image with integer-valued intensities, uint8 labels."""
    shape = settings.shape
    coords = _random_warp(rng, shape)
    gm, wm, csf = (
        ndi.map_coordinates(m, coords, order=1, mode="constant")
        for m in (maps.gm, maps.wm, maps.csf)
    )
    brain = (gm + wm + csf) > 0.5
    core_radius = rng.uniform(*settings.tumour_core_radius_vox)
    margin = rng.uniform(*settings.oedema_margin_vox)
    centre = _tumour_centre(rng, brain, wm, core_radius)
    gm, wm, csf = _mass_effect(rng, (gm, wm, csf), centre, core_radius + margin)
    brain = (gm + wm + csf) > 0.5
    label = _tumour_labels(rng, brain, wm, centre, core_radius, margin)
    return _render(rng, (gm, wm, csf), brain, label, settings), label


def _random_warp(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    """Sampling coordinates (3, X, Y, Z): rotation, scaling, shift and a smooth elastic field."""
    angles = np.deg2rad(rng.uniform(-1, 1, 3) * np.array([5.0, 5.0, 10.0]))
    rotation = _rotation(angles) * rng.uniform(0.92, 1.08)
    centre = (np.array(shape) - 1) / 2
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1) - centre[:, None]
    coords = (rotation @ grid).reshape(3, *shape) + (centre + rng.uniform(-3, 3, 3))[
        :, None, None, None
    ]
    for axis in range(3):
        coords[axis] += 1.5 * smooth_noise(rng, shape, 12.0)
    return coords.astype(np.float32)


def _rotation(angles: np.ndarray) -> np.ndarray:
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _tumour_centre(
    rng: np.random.Generator, brain: np.ndarray, wm: np.ndarray, radius: float
) -> np.ndarray:
    """A white-matter voxel deep enough in the brain for the whole core.

    Depth is measured on a half-resolution grid: eight times fewer voxels, and a voxel of
    error does not matter for choosing a position.
    """
    depth = 2.0 * ndi.distance_transform_edt(brain[::2, ::2, ::2])
    for need_wm in (0.5, 0.0):
        options = np.argwhere((depth >= radius + 3.0) & (wm[::2, ::2, ::2] >= need_wm))
        if len(options):
            return 2.0 * options[rng.integers(len(options))]
    return 2.0 * np.argwhere(depth == depth.max())[0]


def _mass_effect(
    rng: np.random.Generator, maps: tuple[np.ndarray, ...], centre: np.ndarray, reach: float
) -> tuple[np.ndarray, ...]:
    """Push tissue away from the tumour centre: resample a box with coordinates pulled in."""
    shape = maps[0].shape
    low = np.maximum(np.floor(centre - 2.5 * reach).astype(int), 0)
    high = np.minimum(np.ceil(centre + 2.5 * reach).astype(int) + 1, shape)
    box = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    grid = np.indices(tuple(high - low), dtype=np.float32) + low[:, None, None, None]
    offset = grid - centre[:, None, None, None].astype(np.float32)
    falloff = np.exp(-np.sum(offset**2, axis=0) / (2.0 * reach**2))
    coords = grid - rng.uniform(0.2, 0.4) * offset * falloff
    out = []
    for tissue in maps:
        moved = tissue.copy()
        moved[box] = ndi.map_coordinates(tissue, coords, order=1, mode="nearest")
        out.append(moved)
    return tuple(out)


def _tumour_labels(
    rng: np.random.Generator,
    brain: np.ndarray,
    wm: np.ndarray,
    centre: np.ndarray,
    core_radius: float,
    margin: float,
) -> np.ndarray:
    """Necrotic core (2) inside an enhancing rim (3) inside oedema (1) that favours WM."""
    shape = brain.shape
    offset = np.indices(shape, dtype=np.float32) - centre[:, None, None, None].astype(np.float32)
    distance = np.sqrt(np.sum(offset**2, axis=0))
    lumpy = distance / (1.0 + 0.15 * smooth_noise(rng, shape, 6.0))
    spread = distance / (1.0 + 0.3 * smooth_noise(rng, shape, 5.0))
    rim = rng.uniform(1.5, min(3.5, 0.5 * core_radius))
    label = np.zeros(shape, np.uint8)
    label[brain & (spread < core_radius + margin * (0.5 + wm))] = 1
    label[brain & (lumpy < core_radius)] = 3
    label[brain & (lumpy < core_radius - rim)] = 2
    return label


def _render(
    rng: np.random.Generator,
    tissues: tuple[np.ndarray, ...],
    brain: np.ndarray,
    label: np.ndarray,
    settings: BrainSettings,
) -> np.ndarray:
    """Four contrasts from tissue fractions and smoothed tumour-label weights.

    Computed on brain voxels only: the volumes are skull-stripped, so the rest stays 0.
    """
    total = np.maximum(sum(tissues), 1.0)[brain]
    weights = {
        name: tissue[brain] / total
        for name, tissue in zip(("gm", "wm", "csf"), tissues, strict=True)
    }
    lesion = {
        name: ndi.gaussian_filter((label == value).astype(np.float32), 0.7)[brain]
        for name, value in (("oedema", 1), ("necrosis", 2), ("enhancing", 3))
    }
    healthy = 1.0 - np.clip(sum(lesion.values()), 0.0, 1.0)
    image = np.zeros((*settings.shape, 4), np.float32)
    noise = rng.uniform(*settings.noise_fraction)
    count = int(np.count_nonzero(brain))
    for channel in range(4):
        signal = healthy * sum(weights[k] * CONTRAST[k][channel] for k in weights)
        signal = signal + sum(lesion[k] * CONTRAST[k][channel] for k in lesion)
        scale = CHANNEL_SCALE[channel] * rng.uniform(0.7, 1.3)
        bias = np.exp(0.1 * smooth_noise(rng, settings.shape, 20.0)[brain])
        signal = signal * bias * scale
        sigma = np.float32(noise * scale)
        real = signal + sigma * rng.standard_normal(count, dtype=np.float32)
        imaginary = sigma * rng.standard_normal(count, dtype=np.float32)
        # Magnitude of complex Gaussian noise: Rician, as in MR magnitude images.
        image[..., channel][brain] = np.rint(np.sqrt(real**2 + imaginary**2))
    return image
