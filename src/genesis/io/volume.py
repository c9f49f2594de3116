"""``load_volume``: one entry point for every image format the engine reads.

Every reader returns a ``Volume`` in the engine's conventions (float32, axis order
(x, y, z) or (x, y, z, c), ITK/LPS geometry), and every failure is an ``InputError``
naming the file, so a corrupt download never surfaces as a library traceback.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from genesis.errors import InputError
from genesis.io.geometry import Geometry, lps_affine
from genesis.io.metaimage import check_metaimage
from genesis.io.nifti import RAS_FROM_LPS, read_nifti, save_nifti_file

log = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
METAIMAGE_SUFFIXES = (".mhd", ".mha")


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D (x, y, z) or 4D (x, y, z, c) float32 image with its LPS geometry."""

    data: np.ndarray
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    path: Path | None = None

    @property
    def geometry(self) -> Geometry:
        return Geometry(self.spacing, self.origin, self.direction)

    @property
    def affine(self) -> np.ndarray:
        """4x4 (x, y, z) index -> LPS world mm."""
        return lps_affine(self)

    @property
    def ras_affine(self) -> np.ndarray:
        """4x4 index -> RAS world mm, as stored in NIfTI."""
        return RAS_FROM_LPS @ self.affine


def load_volume(path: str | Path, *, ndim: int | None = None) -> Volume:
    """Read ``.mhd/.mha``, ``.nii/.nii.gz`` or a DICOM series folder.

    ``ndim`` (3 or 4) refuses the other kind, e.g. a 4D multi-modal MRI where a CT scan
    is expected.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "does not exist")
    name = path.name.lower()
    if path.is_dir():
        data, geometry = _read_dicom_series(path)
    elif name.endswith(METAIMAGE_SUFFIXES):
        check_metaimage(path)
        data, geometry = _read_with_sitk(path)
    elif name.endswith(NIFTI_SUFFIXES):
        data, geometry = read_nifti(path)
    else:
        raise InputError(
            path, "unknown image format; expected .mhd, .mha, .nii, .nii.gz or a DICOM folder"
        )
    if ndim is not None and data.ndim != ndim:
        raise InputError(path, f"expected a {ndim}D volume, got shape {data.shape}")
    if data.ndim not in (3, 4):
        raise InputError(path, f"expected a 3D or 4D volume, got shape {data.shape}")
    bad = data.size - int(np.count_nonzero(np.isfinite(data)))
    if bad:
        raise InputError(path, f"{bad} voxels are NaN or infinite")
    return Volume(data, geometry.spacing, geometry.origin, geometry.direction, path)


def save_nifti(
    path: str | Path,
    data: np.ndarray,
    *,
    spacing: tuple[float, float, float] | None = None,
    origin: tuple[float, float, float] | None = None,
    direction: np.ndarray | None = None,
    like: Volume | Geometry | None = None,
) -> None:
    """Write (x, y, z[, c]) ``data`` as NIfTI atomically, keeping its dtype.

    Geometry comes from ``like`` or from ``spacing``/``origin``/``direction`` (LPS).
    """
    path = Path(path)
    if like is not None:
        geometry = Geometry(like.spacing, like.origin, np.asarray(like.direction, float))
    elif spacing is not None and origin is not None:
        geometry = Geometry(
            tuple(map(float, spacing)),
            tuple(map(float, origin)),
            np.eye(3) if direction is None else np.asarray(direction, float),
        )
    else:
        raise ValueError("save_nifti needs like= or both spacing= and origin=")
    data = np.asarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    save_nifti_file(path, data, geometry)


def _read_with_sitk(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(
            path, f"SimpleITK cannot read it ({_itk_reason(error)}); corrupt or truncated data?"
        ) from None
    return _from_sitk(image, path)


def _itk_reason(error: Exception) -> str:
    """ITK's message on one line, without the C++ source location and object address."""
    lines = [line.strip() for line in str(error).splitlines()[1:] if line.strip()]
    text = " ".join(lines) or str(error).strip()
    return re.sub(r"(ITK ERROR|sitk::ERROR): (\w+\(0x[0-9a-f]+\): )?", "", text)


def _read_dicom_series(folder: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = sorted(reader.GetGDCMSeriesIDs(str(folder)))
    if not series:
        raise InputError(folder, "folder holds no DICOM series")
    files = {uid: reader.GetGDCMSeriesFileNames(str(folder), uid) for uid in series}
    chosen = max(series, key=lambda uid: len(files[uid]))
    if len(series) > 1:
        log.warning(
            "%s: %d DICOM series; reading %s (%d slices)",
            folder,
            len(series),
            chosen,
            len(files[chosen]),
        )
    reader.SetFileNames(files[chosen])
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(
            folder, f"cannot read DICOM series {chosen} ({_itk_reason(error)})"
        ) from None
    return _from_sitk(image, folder)


def _from_sitk(image: object, path: Path) -> tuple[np.ndarray, Geometry]:
    """SimpleITK's (z, y, x[, c]) array and geometry to the engine's (x, y, z[, c])."""
    import SimpleITK as sitk

    dims = image.GetDimension()
    if dims < 3:
        raise InputError(path, f"expected a 3D or 4D image, got a {dims}D image")
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    # Reverse the spatial axes; a vector (multi-channel) axis stays last.
    spatial = list(range(dims))[::-1]
    order = spatial + list(range(dims, array.ndim))
    # C order for the consumers' loops. The strided copy costs up to ~1 s for a 512x512x300
    # scan; a Fortran-ordered view would save it (see the notes in docs/benchmarks.md).
    data = np.ascontiguousarray(array.transpose(order))
    direction = np.asarray(image.GetDirection(), float).reshape(dims, dims)[:3, :3]
    spacing = tuple(map(float, image.GetSpacing()[:3]))
    origin = tuple(map(float, image.GetOrigin()[:3]))
    return data, Geometry(spacing, origin, direction)
