"""Tiny prepared target-task folders for the fine-tuning and evaluation tests.

Segmentation tasks go through the real preparation code (``prepare_cases``) from NIfTI
files with a flipped, anisotropic source geometry; NCC arrays are written in the layout
that ``genesis.tasks.prepared`` reads. Everything is small enough for a width-2 U-Net on
16x16x8 cubes to train for an epoch in well under a second.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genesis.atomic import write_json
from genesis.io import save_nifti
from genesis.tasks.prepare_seg import Preprocessing, SourceCase, prepare_cases
from genesis.tasks.prepared import PREPARE_JSON, ncc_arrays_path, ncc_cubes_path

CUBE = (16, 16, 8)
SHIFT = (2, 2, 1)
SOURCE_SPACING = (0.8, 0.9, 2.5)
SOURCE_ORIGIN = (12.0, -30.0, 4.0)
SOURCE_DIRECTION = np.diag([-1.0, -1.0, 1.0])  # the flipped LUNA16-style direction


def _blob(shape: tuple[int, ...], centre: np.ndarray, radius: float) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.sum(((grid - centre) / radius) ** 2, axis=-1) <= 1.0


def make_ncc_task(root: Path, seed: int = 0, counts: tuple[int, int, int] = (16, 8, 10)) -> Path:
    """NCC cubes: positives hold a bright central nodule, negatives only noise."""
    rng = np.random.default_rng(seed)
    task_dir = root / "ncc"
    task_dir.mkdir(parents=True)
    row = 0
    for split, n in zip(("train", "val", "test"), counts, strict=True):
        size = (
            tuple(c + 2 * s for c, s in zip(CUBE, SHIFT, strict=True)) if split == "train" else CUBE
        )
        labels = (np.arange(n) % 2).astype(np.uint8)
        cubes = 0.3 * rng.random((n, *size))
        centre = np.asarray(size) / 2 - 0.5
        cubes[labels == 1] += 0.6 * _blob(size, centre, 3.0)
        np.save(ncc_cubes_path(task_dir, split), cubes.astype(np.float16))
        candidates = np.arange(row, row + n, dtype=np.int64) * 7  # arbitrary CSV rows
        row += n
        np.savez(
            ncc_arrays_path(task_dir, split),
            labels=labels,
            candidate=candidates,
            voxel=np.zeros((n, 3), np.int64),
        )
    write_json(
        task_dir / PREPARE_JSON,
        {"task": "ncc", "settings": {"cube_size": list(CUBE), "max_shift": list(SHIFT)}},
    )
    return task_dir


def make_seg_task(
    root: Path,
    task: str = "lcs",
    seed: int = 0,
    n_cases: int = 7,
    shape: tuple[int, int, int] = (24, 22, 12),
    inplane_size: int | None = None,
) -> Path:
    """Source NIfTI volumes with one bright ellipsoid each, prepared like LCS/BMS.

    Cases 0-3 train, 4-5 validation, the rest test.
    """
    rng = np.random.default_rng(seed)
    source = root / f"{task}_source"
    source.mkdir(parents=True)
    cases, assignment = [], {}
    for k in range(n_cases):
        centre = rng.uniform(np.asarray(shape) * 0.3, np.asarray(shape) * 0.7)
        label = _blob(shape, centre, 4.0).astype(np.uint8)
        image = 0.2 * rng.random(shape) + 0.6 * label
        name = f"case_{k:02d}"
        paths = source / f"{name}.nii.gz", source / f"{name}_label.nii.gz"
        for path, data in zip(paths, (image.astype(np.float32), label), strict=True):
            save_nifti(
                path, data, spacing=SOURCE_SPACING, origin=SOURCE_ORIGIN, direction=SOURCE_DIRECTION
            )
        cases.append(SourceCase(name, *paths))
        assignment[name] = "train" if k < 4 else "val" if k < 6 else "test"
    prep = Preprocessing(
        normalise=lambda data, path: np.clip(data, 0.0, 1.0),
        allowed_labels=(0, 1),
        inplane_size=inplane_size,
    )
    task_dir = root / task
    task_dir.mkdir()
    prepare_cases(task, cases, assignment, task_dir, prep, skip_bad=False, summary={"task": task})
    return task_dir


def tiny_settings(**overrides: object) -> dict[str, object]:
    """Fine-tuning settings for a width-2 model on 16x16x8 cubes, two short epochs."""
    settings: dict[str, object] = {
        "width": 2,
        "hidden": 8,
        "cube_size": list(CUBE),
        "batch_size": 4,
        "steps_per_epoch": 2,
        "max_epochs": 2,
        "patches_per_case": 2,
        "val_patches_per_case": 2,
    }
    settings.update(overrides)
    return settings
