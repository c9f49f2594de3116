"""User target tasks built from real scans shipped with nilearn (no phantoms, no network).

- ``mni_segmentation(root)``: a 3-class MSD-layout dataset (``dataset.json``,
  ``imagesTr/``, ``labelsTr/``): the MNI152 T1 template with its grey-matter (label 1) and
  white-matter (label 2) masks, several cases made by cropping, flipping and resampling.
- ``mni_classification(root)``: a ``path,x,y,z,label`` CSV of world points (LPS mm) in
  grey or white matter of the same images, as a user's lesion/nodule list would be.

Images are downsampled to 4 mm (about 50x58x48 voxels) so that tests stay fast.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np

CLASS_NAMES = {"0": "background", "1": "grey matter", "2": "white matter"}


def _mni() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Template, label map (0/1/2) and the 2 mm affine, downsampled by 2 (4 mm)."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    grey = datasets.load_mni152_gm_mask(resolution=2).get_fdata() > 0
    white = datasets.load_mni152_wm_mask(resolution=2).get_fdata() > 0
    labels = np.zeros(grey.shape, dtype=np.uint8)
    labels[grey] = 1
    labels[white] = 2  # the masks overlap at the border: white matter wins
    affine = template.affine.copy()
    affine[:3, :3] *= 2
    return (template.get_fdata()[::2, ::2, ::2].astype(np.float32), labels[::2, ::2, ::2], affine)


def _variants(image: np.ndarray, labels: np.ndarray, affine: np.ndarray, count: int):
    """(name, image, labels, affine): original, flipped, crops and a resampled copy."""
    from scipy import ndimage

    yield "mni_000", image, labels, affine
    flipped = affine.copy()
    flipped[:3, 0] *= -1
    flipped[:3, 3] += affine[:3, 0] * (image.shape[0] - 1)
    yield "mni_001", image[::-1].copy(), labels[::-1].copy(), flipped
    k = 2
    for dx, dy, dz in [(4, 2, 0), (0, 6, 4), (6, 0, 2), (2, 4, 6), (3, 3, 3), (5, 1, 5)]:
        if k >= count - 1:
            break
        box = (
            slice(dx, image.shape[0] - (6 - dx)),
            slice(dy, image.shape[1] - (6 - dy)),
            slice(dz, image.shape[2] - (6 - dz)),
        )
        shifted = affine.copy()
        shifted[:3, 3] += affine[:3, :3] @ np.array([dx, dy, dz])
        yield f"mni_{k:03d}", image[box].copy(), labels[box].copy(), shifted
        k += 1
    zoom = 0.85
    resampled = ndimage.zoom(image, zoom, order=1)
    resampled_labels = ndimage.zoom(labels, zoom, order=0)
    scaled = affine.copy()
    scaled[:3, :3] /= zoom
    yield f"mni_{k:03d}", resampled.astype(np.float32), resampled_labels, scaled


def mni_segmentation(root: Path, cases: int = 8) -> Path:
    """Write the 3-class MSD-layout dataset under ``root``; return the folder."""
    image, labels, affine = _mni()
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(parents=True, exist_ok=True)
    training = []
    for name, volume, label, matrix in _variants(image, labels, affine, cases):
        nib.save(nib.Nifti1Image(volume, matrix), root / "imagesTr" / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, matrix), root / "labelsTr" / f"{name}.nii.gz")
        training.append(
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
        )
    manifest = {
        "name": "MNI152 tissues",
        "modality": {"0": "T1"},
        "labels": CLASS_NAMES,
        "numTraining": len(training),
        "training": training,
        "test": [],
    }
    (root / "dataset.json").write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return root


def mni_classification(
    root: Path, scans: int = 6, points_per_class: int = 6, seed: int = 0
) -> Path:
    """Write ``points.csv`` (path,x,y,z,label: 1 grey, 0 white matter) and its scans."""
    image, labels, affine = _mni()
    rng = np.random.default_rng(seed)
    (root / "scans").mkdir(parents=True, exist_ok=True)
    rows = []
    for name, volume, label, matrix in _variants(image, labels, affine, scans):
        path = root / "scans" / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(volume, matrix), path)
        for value, tissue in ((1, 1), (0, 2)):
            voxels = np.argwhere(label == tissue)
            for voxel in voxels[rng.choice(len(voxels), points_per_class, replace=False)]:
                ras = matrix[:3, :3] @ voxel + matrix[:3, 3]
                lps = ras * np.array([-1.0, -1.0, 1.0])  # NIfTI world is RAS, LUNA16's LPS
                rows.append(
                    {
                        "path": f"scans/{path.name}",
                        "x": f"{lps[0]:.3f}",
                        "y": f"{lps[1]:.3f}",
                        "z": f"{lps[2]:.3f}",
                        "label": value,
                    }
                )
    csv_path = root / "points.csv"
    with csv_path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["path", "x", "y", "z", "label"], lineterminator="\n"
        )
        writer.writeheader()
        writer.writerows(rows)
    return csv_path
