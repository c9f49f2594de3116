"""Reader API of the prepared target-task data (``results/tasks/<task>/``).

This module owns the on-disk layout: ``genesis prepare`` writes through the names defined
here and fine-tuning/evaluation read through the functions below, so no file name is spelt
twice.

Layout of a task folder::

    split.csv          the case assignment (see genesis.tasks.splits); pin it in config/splits/
    prepare.json       settings, counts, skipped cases/candidates with reasons, provenance
    NCC:  {split}_cubes.npy   float16 (n, X, Y, Z) cubes in [0, 1] (memory-mappable)
          {split}.npz         labels uint8 (n,), candidate int64 (n,) = row of
                              candidates_V2.csv (0-based, header excluded), voxel int64 (n, 3)
          candidates.csv      every selected candidate: world and voxel position, split,
                              status ok/skipped, reason, index into its split arrays
    LCS/BMS: volumes/{case}.npz   image float16 (X, Y, Z) in [0, 1], label uint8 (X, Y, Z) 0/1
             cases.csv            one row per prepared case with the source paths and the
                                  geometry needed to map a prediction back onto the source grid

NCC training cubes are stored with a margin of ``max_shift`` voxels on every side
(``cube_size + 2 * max_shift``) for the shift augmentation; validation and test cubes at
``cube_size`` exactly. Turning the stored arrays into training batches and patches
(``ncc_batch``, ``augment_ncc``, ``crop_center``, ``PatchSampler``, ``sample_patches``,
``outer_patch_size``) is ``genesis.tasks.sampling``'s job; the names are re-exported here.

Predictions go back to the source grid with ``restore_to_source`` and are saved with
``genesis.io.save_nifti(path, mask, like=geometry)``. A missing, truncated or corrupt
file is an ``InputError`` naming it.
"""

from __future__ import annotations

import csv
import json
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis.atomic import atomic_path
from genesis.errors import InputError
from genesis.io.geometry import Geometry
from genesis.tasks.sampling import (
    PAPER_BMS_OUTER,
    PAPER_CUBE,
    PatchSampler,
    augment_ncc,
    crop_center,
    ncc_batch,
    outer_patch_size,
    sample_patches,
)

__all__ = [
    "CANDIDATES_CSV",
    "CASES_COLUMNS",
    "CASES_CSV",
    "PAPER_BMS_OUTER",
    "PAPER_CUBE",
    "PREPARE_JSON",
    "SPLIT_CSV",
    "VOLUMES_DIR",
    "Case",
    "PatchSampler",
    "augment_ncc",
    "crop_center",
    "iter_cases",
    "list_cases",
    "load_case",
    "load_ncc_candidates",
    "load_ncc_split",
    "ncc_arrays_path",
    "ncc_batch",
    "ncc_cubes_path",
    "outer_patch_size",
    "prepared_cube_size",
    "read_prepare_json",
    "resize_volume",
    "restore_to_source",
    "sample_patches",
]

SPLIT_CSV = "split.csv"
PREPARE_JSON = "prepare.json"
CANDIDATES_CSV = "candidates.csv"
CASES_CSV = "cases.csv"
VOLUMES_DIR = "volumes"

#: Columns of cases.csv, in order.
CASES_COLUMNS = (
    "case",
    "split",
    "file",
    "image_path",
    "label_path",
    "orig_shape",
    "prepared_shape",
    "foreground_voxels",
    "geometry",
)


# --------------------------------------------------------------------------------------
# NCC: candidate cubes


def ncc_cubes_path(task_dir: str | Path, split: str) -> Path:
    return Path(task_dir) / f"{split}_cubes.npy"


def ncc_arrays_path(task_dir: str | Path, split: str) -> Path:
    return Path(task_dir) / f"{split}.npz"


def load_ncc_split(
    task_dir: str | Path, split: str, mmap: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Cubes ``(n, X, Y, Z)`` float16 as stored (memory-mapped by default) and labels ``(n,)``.

    Training cubes carry the shift margin; pass batches through ``augment_ncc`` (training)
    or ``crop_center`` (evaluation) to get ``cube_size``.
    """
    cubes_path = ncc_cubes_path(task_dir, split)
    arrays = _load_npz(ncc_arrays_path(task_dir, split))
    if not cubes_path.is_file():
        raise InputError(cubes_path, "missing; run `genesis prepare ncc` first")
    cubes = _load_npy(cubes_path, mmap)
    labels = arrays["labels"]
    if cubes.ndim != 4 or len(cubes) != len(labels):
        raise InputError(cubes_path, f"holds shape {cubes.shape} but {len(labels)} labels")
    return cubes, labels


def load_ncc_candidates(task_dir: str | Path, split: str) -> np.ndarray:
    """Row of ``candidates_V2.csv`` (0-based, header excluded) for every cube of ``split``."""
    return _load_npz(ncc_arrays_path(task_dir, split))["candidate"]


def prepared_cube_size(task_dir: str | Path) -> tuple[int, int, int]:
    """The model input size the task was prepared for (its ``cube_size`` setting)."""
    size = read_prepare_json(task_dir)["settings"]["cube_size"]
    return (int(size[0]), int(size[1]), int(size[2]))


# --------------------------------------------------------------------------------------
# LCS / BMS: whole volumes


@dataclass(frozen=True, eq=False)
class Case:
    """One prepared segmentation case.

    ``image`` is float32 in [0, 1] and ``label`` uint8 0/1, both (X, Y, Z) on the prepared
    grid. ``geometry`` records the source grid (``source_shape``, LPS ``spacing``,
    ``origin``, ``direction``), the ``crop`` box ``[[lo, hi]] * 3`` taken from it and the
    ``prepared_shape`` the crop was resized to; ``restore_to_source`` undoes both.
    """

    name: str
    split: str
    image: np.ndarray
    label: np.ndarray
    source_image: Path
    source_label: Path
    geometry: dict[str, Any]


def read_prepare_json(task_dir: str | Path) -> dict[str, Any]:
    path = Path(task_dir) / PREPARE_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare` first") from None
    except json.JSONDecodeError as error:
        raise InputError(path, f"not valid JSON ({error})") from None


def list_cases(task_dir: str | Path, split: str | None = None) -> list[dict[str, Any]]:
    """Rows of ``cases.csv`` (geometry decoded), optionally of one split, in file order."""
    path = Path(task_dir) / CASES_CSV
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare lcs|bms` first") from None
    records = []
    for row in rows:
        if split is None or row["split"] == split:
            records.append({**row, "geometry": json.loads(row["geometry"])})
    return records


def load_case(task_dir: str | Path, record: dict[str, Any]) -> Case:
    """Load the arrays of one ``list_cases`` row."""
    arrays = _load_npz(Path(task_dir) / record["file"])
    return Case(
        name=record["case"],
        split=record["split"],
        image=arrays["image"].astype(np.float32),
        label=arrays["label"],
        source_image=Path(record["image_path"]),
        source_label=Path(record["label_path"]),
        geometry=record["geometry"],
    )


def iter_cases(task_dir: str | Path, split: str | None) -> Iterator[Case]:
    """Stream the prepared cases of ``split`` (all splits for None), one in memory at a time."""
    for record in list_cases(task_dir, split):
        yield load_case(task_dir, record)


def restore_to_source(
    prediction: np.ndarray, case: Case | dict[str, Any]
) -> tuple[np.ndarray, Geometry]:
    """Map a prediction on the prepared grid back onto the source image grid.

    Integer/boolean masks are resized with nearest neighbour, floating maps (probabilities)
    linearly, then placed into the crop box of a zero volume of the source shape. The
    returned ``Geometry`` is the source image's, so
    ``genesis.io.save_nifti(path, mask, like=geometry)`` overlays on the source scan.
    """
    geometry = case.geometry if isinstance(case, Case) else case
    prepared_shape = tuple(geometry["prepared_shape"])
    if tuple(prediction.shape) != prepared_shape:
        raise ValueError(
            f"prediction has shape {prediction.shape}, the prepared grid is {prepared_shape}"
        )
    box = [(int(lo), int(hi)) for lo, hi in geometry["crop"]]
    crop_shape = tuple(hi - lo for lo, hi in box)
    mode: Literal["linear", "nearest"] = (
        "linear" if np.issubdtype(prediction.dtype, np.floating) else "nearest"
    )
    resized = resize_volume(prediction, crop_shape, mode)
    restored = np.zeros(tuple(geometry["source_shape"]), dtype=resized.dtype)
    restored[tuple(slice(lo, hi) for lo, hi in box)] = resized
    source = Geometry(
        tuple(map(float, geometry["spacing"])),
        tuple(map(float, geometry["origin"])),
        np.asarray(geometry["direction"], dtype=float),
    )
    return restored, source


def resize_volume(
    array: np.ndarray, shape: Sequence[int], mode: Literal["linear", "nearest"]
) -> np.ndarray:
    """Resize an (X, Y, Z) array: in-plane first, then along z, a slab at a time.

    ``linear`` (images, probability maps) is separable bilinear-then-linear interpolation
    with half-voxel-centred sampling (``align_corners=False``) and antialiasing when
    shrinking in-plane; it returns float32. ``nearest`` (labels) uses torch's
    ``nearest-exact``, which picks the source voxel whose centre is closest (plain
    ``nearest`` is shifted by half a voxel), and keeps the dtype.
    """
    import torch
    import torch.nn.functional as F

    shape = tuple(int(s) for s in shape)
    if array.ndim != 3 or len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"cannot resize array of shape {array.shape} to {shape}")
    if tuple(array.shape) == shape:
        return array.astype(np.float32) if mode == "linear" else array.copy()
    out_dtype = np.float32 if mode == "linear" else array.dtype
    X, Y, Z = array.shape
    X2, Y2, Z2 = shape
    inplane = np.empty((X2, Y2, Z), dtype=np.float32)
    slab = 32
    with torch.no_grad():
        for z0 in range(0, Z, slab):
            # (X, Y, z) slab -> (z, 1, X, Y): slices become the batch.
            chunk = torch.from_numpy(
                np.ascontiguousarray(
                    array[:, :, z0 : z0 + slab].transpose(2, 0, 1), dtype=np.float32
                )
            )[:, None]
            if (X2, Y2) != (X, Y):
                chunk = _interpolate(F, chunk, (X2, Y2), mode, shrink=X2 < X or Y2 < Y)
            inplane[:, :, z0 : z0 + slab] = chunk[:, 0].permute(1, 2, 0).numpy()
        if Z2 == Z:
            return inplane.astype(out_dtype, copy=False)
        out = np.empty(shape, dtype=out_dtype)
        for x0 in range(0, X2, slab):
            # (x, Y2, Z) rows -> (x * Y2, 1, Z): resize each z profile.
            rows = torch.from_numpy(inplane[x0 : x0 + slab].reshape(-1, 1, Z))
            rows = _interpolate(F, rows, (Z2,), mode, shrink=False)
            out[x0 : x0 + slab] = rows.reshape(-1, Y2, Z2).numpy().astype(out_dtype, copy=False)
    return out


def _interpolate(F: Any, tensor: Any, size: tuple[int, ...], mode: str, shrink: bool) -> Any:
    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest-exact")
    torch_mode = "bilinear" if len(size) == 2 else "linear"
    antialias = shrink and torch_mode == "bilinear"
    return F.interpolate(
        tensor, size=size, mode=torch_mode, align_corners=False, antialias=antialias
    )


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare` first") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise _unreadable(path, error) from None


def _load_npy(path: Path, mmap: bool) -> np.ndarray:
    """One stored array (memory-mapped if asked); a truncated or corrupt file is named."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare` first") from None
    except (OSError, ValueError, EOFError) as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> InputError:
    reason = " ".join(str(error).split()) or type(error).__name__
    return InputError(
        path, f"cannot read ({reason}); truncated or corrupt file? Run `genesis prepare` again"
    )


def truncate_npy(path: Path, count: int) -> None:
    """Rewrite the ``.npy`` at ``path`` keeping its first ``count`` rows, streaming in
    chunks: a preparation that planned more cubes than it cut (skipped rows) shrinks its
    memory-mapped file this way."""
    source = np.load(path, mmap_mode="r")
    with atomic_path(path) as tmp:
        target = np.lib.format.open_memmap(
            tmp, mode="w+", dtype=source.dtype, shape=(count, *source.shape[1:])
        )
        for start in range(0, count, 1024):
            stop = min(start + 1024, count)
            target[start:stop] = source[start:stop]
        target.flush()
        del target
    del source
