"""Intensity windows that map a scan to [0, 1], and the CT/MRI guess for ``auto``.

CT (facts §1): clip Hounsfield units to [-1000, 1000], then ``(x + 1000) / 2000``.
MRI has no absolute scale, so each volume is scaled on its own: between two percentiles
(default 0.5 and 99.5, robust to a few hot voxels) or between its minimum and maximum.
The percentiles are taken over the whole volume, background included.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

import numpy as np

log = logging.getLogger(__name__)

Modality = Literal["ct", "mri"]

#: HU at or below this count as air/outside the body when guessing the modality.
AIR_HU = -500.0


def scale_to_unit(data: np.ndarray, low: float, high: float) -> np.ndarray:
    """Clip to [low, high] and map linearly to [0, 1]; in place when ``data`` is float32
    (pass a copy to keep the original)."""
    data = np.asarray(data, dtype=np.float32)
    if high <= low:  # a constant volume: map everything to 0 rather than divide by zero
        data.fill(0.0)
        return data
    np.clip(data, low, high, out=data)
    data -= np.float32(low)
    data *= np.float32(1.0 / (high - low))
    return data


def ct_window(data: np.ndarray, low: float = -1000.0, high: float = 1000.0) -> np.ndarray:
    """The CT window: HU clipped to [low, high], scaled to [0, 1] (in place for float32)."""
    return scale_to_unit(data, low, high)


def mri_bounds(
    data: np.ndarray,
    mode: Literal["percentile", "minmax"] = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> tuple[float, float]:
    """The intensity range of one MRI volume that maps to [0, 1]."""
    if mode == "minmax":
        return float(data.min()), float(data.max())
    low, high = np.percentile(data, percentiles)
    return float(low), float(high)


def mri_window(
    data: np.ndarray,
    mode: Literal["percentile", "minmax"] = "percentile",
    percentiles: tuple[float, float] = (0.5, 99.5),
) -> np.ndarray:
    """Scale one MRI volume to [0, 1] by its own percentiles or min/max, in place."""
    return scale_to_unit(data, *mri_bounds(data, mode, percentiles))


def guess_modality(data: np.ndarray, path: Path, ct_air_fraction: float) -> Modality:
    """CT or MRI for ``--modality auto``.

    An MSD ``dataset.json`` next to the image folder decides when present (its
    ``modality`` map lists "CT" or MR sequence names). Otherwise the values decide: a CT
    scan has air and padding at or below -500 HU in a good part of its voxels, while MRI
    intensities are arbitrary but essentially never that negative.
    """
    declared = _dataset_json_modality(path)
    if declared is not None:
        return declared
    air = float(np.count_nonzero(data <= AIR_HU)) / max(data.size, 1)
    return "ct" if air >= ct_air_fraction else "mri"


def _dataset_json_modality(path: Path) -> Modality | None:
    for folder in list(path.parents)[:2]:
        manifest = folder / "dataset.json"
        if manifest.is_file():
            try:
                names = json.loads(manifest.read_text(encoding="utf-8")).get("modality", {})
            except (OSError, ValueError, AttributeError):
                return None
            if not isinstance(names, dict) or not names:
                return None
            is_ct = all(str(v).upper() == "CT" for v in names.values())
            log.debug("%s: modality %s from %s", path, names, manifest)
            return "ct" if is_ct else "mri"
    return None
