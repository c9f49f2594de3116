"""NIfTI (``.nii``, ``.nii.gz``) via nibabel, converting between RAS affines and LPS geometry.

NIfTI stores an index -> RAS matrix; the engine works in ITK/LPS (LUNA16's convention).
The two differ by ``diag(-1, -1, 1)`` applied to world coordinates.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genesis.atomic import atomic_path
from genesis.errors import InputError
from genesis.io.geometry import Geometry, lps_affine

#: World-coordinate flip between RAS (NIfTI) and LPS (ITK).
RAS_FROM_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def geometry_from_ras(affine: np.ndarray) -> Geometry:
    """Spacing, origin and direction (LPS) of a NIfTI index -> RAS affine."""
    lps = RAS_FROM_LPS @ np.asarray(affine, float)
    matrix = lps[:3, :3]
    spacing = np.linalg.norm(matrix, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"affine has a zero-length axis: {affine.tolist()}")
    direction = matrix / spacing
    return Geometry(tuple(map(float, spacing)), tuple(map(float, lps[:3, 3])), direction)


def read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    """Voxel data as float32 (x, y, z[, c]) and the LPS geometry."""
    import nibabel as nib

    try:
        image = nib.load(str(path))
        data = np.asarray(image.dataobj, dtype=np.float32)
        geometry = geometry_from_ras(image.affine)
    except Exception as error:  # nibabel/gzip/zlib raise many types for one bad file
        detail = " ".join(str(error).split())  # one line, as the CLI prints it
        raise InputError(
            path,
            f"cannot read NIfTI ({type(error).__name__}: {detail}); truncated or corrupt file?",
        ) from None
    if data.ndim > 4:
        # NIfTI puts time in axis 3 and vector components in axis 4; fold a length-1 time axis.
        data = data.reshape(*data.shape[:3], -1)
    return data, geometry


def save_nifti_file(path: Path, data: np.ndarray, geometry: Geometry) -> None:
    """Write ``data`` (dtype kept) with the RAS affine of ``geometry``, atomically."""
    import nibabel as nib

    affine = RAS_FROM_LPS @ lps_affine(geometry)
    image = nib.Nifti1Image(np.asarray(data), affine)
    image.header.set_data_dtype(data.dtype)
    image.header.set_xyzt_units(xyz="mm")
    image.set_qform(affine, code=1)  # 1 = scanner coordinates
    image.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
