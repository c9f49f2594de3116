"""Brain tissue maps for the MRI phantoms: nilearn's MNI152 template, or an analytic head.

nilearn ships the ICBM152 2009a grey- and white-matter probability maps inside its wheel,
so they load offline. If they cannot be found or read, an analytic brain (ellipsoid with a
folded cortex, white matter and ventricles) stands in, and a log line says so.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from genesis.synth.fields import mm_grid, smooth_noise

log = logging.getLogger(__name__)

MNI_FILES = {
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass(frozen=True)
class TissueMaps:
    """Partial-volume fractions (float32, summing to <= 1) on the phantom grid."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    source: str  # "mni152" or "analytic"

    @property
    def brain(self) -> np.ndarray:
        return (self.gm + self.wm + self.csf) > 0.5


def load_tissue_maps(shape: tuple[int, int, int], prefer: str = "mni152") -> TissueMaps:
    """Tissue maps scaled (one factor for all axes) to fill about 90% of ``shape``."""
    if prefer == "mni152":
        try:
            gm, wm = (_read_mni(name) for name in ("gm", "wm"))
            return _fit_template(gm, wm, shape)
        except (OSError, ValueError, ImportError) as error:
            log.warning("nilearn MNI152 template unavailable (%s); using an analytic head", error)
    return analytic_head(shape)


def _read_mni(name: str) -> np.ndarray:
    import nibabel as nib

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nilearn is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / MNI_FILES[name]
    if not path.is_file():
        raise OSError(f"{path} not found")
    image = nib.load(str(path))
    data = np.asarray(image.dataobj, dtype=np.float32)
    return data / max(float(data.max()), 1e-6)  # stored as uint8 0..255 in some versions


def _fit_template(gm: np.ndarray, wm: np.ndarray, shape: tuple[int, int, int]) -> TissueMaps:
    """Crop to the brain, zoom by one factor to fit 90% of ``shape``, centre it, add CSF."""
    tissue = (gm + wm) > 0.1
    low, high = [], []
    for axis in range(3):
        present = np.flatnonzero(tissue.any(axis=tuple(a for a in range(3) if a != axis)))
        low.append(int(present[0]))
        high.append(int(present[-1]) + 1)
    crop = tuple(slice(lo, hi) for lo, hi in zip(low, high, strict=True))
    factor = min(0.9 * n / (hi - lo) for n, lo, hi in zip(shape, low, high, strict=True))
    maps = []
    for data in (gm[crop], wm[crop]):
        zoomed = np.clip(ndi.zoom(data, factor, order=1), 0.0, 1.0)
        canvas = np.zeros(shape, np.float32)
        start = [(n - z) // 2 for n, z in zip(shape, zoomed.shape, strict=True)]
        canvas[tuple(slice(s, s + z) for s, z in zip(start, zoomed.shape, strict=True))] = zoomed
        maps.append(canvas)
    gm, wm = maps
    # Ventricles and sulci: inside the closed brain outline but neither grey nor white matter.
    outline = ndi.binary_fill_holes(ndi.binary_closing(gm + wm > 0.3, iterations=2))
    outline = ndi.binary_dilation(outline)
    csf = np.where(outline, np.clip(1.0 - gm - wm, 0.0, 1.0), 0.0).astype(np.float32)
    return TissueMaps(gm, wm, csf, "mni152")


def analytic_head(shape: tuple[int, int, int]) -> TissueMaps:
    """A smooth stand-in brain: folded cortical ribbon, white matter, two ventricles."""
    rng = np.random.default_rng(0)  # fixed: the fallback template is part of the code
    u, v, w = mm_grid(shape, (1.0, 1.0, 1.0))
    axes = (0.4 * shape[0], 0.45 * shape[1], 0.42 * shape[2])
    radial = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2 + (w / axes[2]) ** 2)
    folds = 0.05 * smooth_noise(rng, shape, 3.0)
    brain = radial < 1.0
    ribbon = brain & (radial > 0.8 + folds)
    ventricles = np.zeros(shape, dtype=bool)
    for sign in (-1.0, 1.0):
        ventricles |= ((u - sign * 0.12 * axes[0]) / (0.1 * axes[0])) ** 2 + (
            v / (0.35 * axes[1])
        ) ** 2 + ((w - 0.1 * axes[2]) / (0.2 * axes[2])) ** 2 < 1.0
    gm = ndi.gaussian_filter(ribbon.astype(np.float32), 0.6)
    csf = ndi.gaussian_filter(ventricles.astype(np.float32), 0.6)
    wm = np.clip(ndi.gaussian_filter(brain.astype(np.float32), 0.6) - gm - csf, 0.0, 1.0)
    return TissueMaps(
        gm.astype(np.float32), wm.astype(np.float32), csf.astype(np.float32), "analytic"
    )
