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
(``cube_size + 2 * max_shift``), so that ``augment_ncc`` can shift them by cropping real
image context instead of wrapping or padding. Validation and test cubes are stored at
``cube_size`` exactly; ``crop_center`` is then the identity. ``ncc_batch`` does both.

Segmentation training draws patches with ``PatchSampler`` (foreground-biased; BMS crops
``outer_patch_size(cube_size)`` first, the paper's 100x100x50, then ``cube_size``).
Predictions go back to the source grid with ``restore_to_source`` and are saved with
``genesis.io.save_nifti(path, mask, like=geometry)``.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis.errors import InputError
from genesis.io.geometry import Geometry

SPLIT_CSV = "split.csv"
PREPARE_JSON = "prepare.json"
CANDIDATES_CSV = "candidates.csv"
CASES_CSV = "cases.csv"
VOLUMES_DIR = "volumes"

#: Paper sizes of the BMS two-stage crop: 100x100x50 random crops, then 64x64x32 inputs.
PAPER_CUBE = (64, 64, 32)
PAPER_BMS_OUTER = (100, 100, 50)

#: Columns of cases.csv, in order.
CASES_COLUMNS = ("case", "split", "file", "image_path", "label_path", "orig_shape",
                 "prepared_shape", "foreground_voxels", "geometry")


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
    cubes = np.load(cubes_path, mmap_mode="r" if mmap else None)
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


def ncc_batch(
    cubes: np.ndarray,
    index: np.ndarray,
    cube_size: Sequence[int],
    generator: Any | None = None,
    device: Any = "cpu",
) -> Any:
    """Model inputs ``(B, 1, X, Y, Z)`` float32 for rows ``index`` of ``load_ncc_split`` cubes.

    With a ``torch.Generator`` the batch is augmented (``augment_ncc``: random shift within
    the stored margin, random flips); without one it is centre-cropped (evaluation).
    """
    import torch

    index = np.asarray(index)
    order = np.argsort(index, kind="stable")  # sorted reads are sequential on a memmap
    rows = np.empty((len(index), *cubes.shape[1:]), dtype=np.float32)
    rows[order] = cubes[index[order]]
    batch = torch.from_numpy(rows)[:, None].to(device)
    if generator is None:
        return crop_center(batch, cube_size)
    return augment_ncc(batch, generator, cube_size)


def crop_center(batch: Any, cube_size: Sequence[int]) -> Any:
    """Central ``cube_size`` crop of a ``(B, C, X, Y, Z)`` tensor (identity if equal)."""
    starts = _margins(tuple(batch.shape[2:]), cube_size)
    (x0, y0, z0), (sx, sy, sz) = starts, cube_size
    return batch[:, :, x0:x0 + sx, y0:y0 + sy, z0:z0 + sz]


def augment_ncc(batch: Any, generator: Any, cube_size: Sequence[int] | None = None) -> Any:
    """Random shift and flips for NCC training, per sample, vectorised over the batch.

    Args:
        batch: ``(B, C, X', Y', Z')`` tensor with ``X' >= X`` etc. (training cubes carry a
            margin of ``max_shift`` voxels per side).
        generator: ``torch.Generator`` that draws every random choice.
        cube_size: output ``(X, Y, Z)``; default: the input size (flips only).

    Each sample gets an independent crop offset, uniform in ``[0, X' - X]`` per axis (a
    shift of at most the margin around the centred crop, filled with real image context),
    and is then flipped along each spatial axis independently with probability 0.5.
    """
    import torch

    size = tuple(batch.shape[2:]) if cube_size is None else tuple(int(s) for s in cube_size)
    _margins(tuple(batch.shape[2:]), size)  # validates the sizes
    n = batch.shape[0]
    device = generator.device
    out = batch
    for axis, (have, want) in enumerate(zip(batch.shape[2:], size, strict=True)):
        if have == want:
            continue
        dim = 2 + axis
        offsets = torch.randint(0, have - want + 1, (n,), generator=generator, device=device)
        index = offsets.to(batch.device)[:, None] + torch.arange(want, device=batch.device)
        view = [n, 1, 1, 1, 1]
        view[dim] = want
        shape = list(out.shape)
        shape[dim] = want
        out = out.gather(dim, index.view(view).expand(shape))
    flips = torch.rand((3, n), generator=generator, device=device).to(batch.device) < 0.5
    for axis in range(3):
        mask = flips[axis].view(n, 1, 1, 1, 1)
        out = torch.where(mask, out.flip(2 + axis), out)
    return out


def _margins(have: tuple[int, ...], want: Sequence[int]) -> tuple[int, int, int]:
    if len(have) != 3 or len(want) != 3 or any(h < w for h, w in zip(have, want, strict=True)):
        raise ValueError(f"cannot crop {tuple(want)} out of spatial size {have}")
    diffs = [h - w for h, w in zip(have, want, strict=True)]
    return (diffs[0] // 2, diffs[1] // 2, diffs[2] // 2)


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
        raise ValueError(f"prediction has shape {prediction.shape}, the prepared grid is "
                         f"{prepared_shape}")
    box = [(int(lo), int(hi)) for lo, hi in geometry["crop"]]
    crop_shape = tuple(hi - lo for lo, hi in box)
    mode: Literal["linear", "nearest"] = (
        "linear" if np.issubdtype(prediction.dtype, np.floating) else "nearest")
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
            chunk = torch.from_numpy(np.ascontiguousarray(
                array[:, :, z0:z0 + slab].transpose(2, 0, 1), dtype=np.float32))[:, None]
            if (X2, Y2) != (X, Y):
                chunk = _interpolate(F, chunk, (X2, Y2), mode, shrink=X2 < X or Y2 < Y)
            inplane[:, :, z0:z0 + slab] = chunk[:, 0].permute(1, 2, 0).numpy()
        if Z2 == Z:
            return inplane.astype(out_dtype, copy=False)
        out = np.empty(shape, dtype=out_dtype)
        for x0 in range(0, X2, slab):
            # (x, Y2, Z) rows -> (x * Y2, 1, Z): resize each z profile.
            rows = torch.from_numpy(inplane[x0:x0 + slab].reshape(-1, 1, Z))
            rows = _interpolate(F, rows, (Z2,), mode, shrink=False)
            out[x0:x0 + slab] = rows.reshape(-1, Y2, Z2).numpy().astype(out_dtype, copy=False)
    return out


def _interpolate(F: Any, tensor: Any, size: tuple[int, ...], mode: str, shrink: bool) -> Any:
    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest-exact")
    torch_mode = "bilinear" if len(size) == 2 else "linear"
    antialias = shrink and torch_mode == "bilinear"
    return F.interpolate(tensor, size=size, mode=torch_mode, align_corners=False,
                         antialias=antialias)


# --------------------------------------------------------------------------------------
# Patch sampling for segmentation training


def outer_patch_size(cube_size: Sequence[int]) -> tuple[int, int, int]:
    """The BMS first-stage crop for ``cube_size``: 100x100x50 scaled by cube_size/64x64x32.

    The paper crops 100x100x50 sub-volumes and then 64x64x32 model inputs from them; a
    smaller demo cube (32x32x16) gets the same ratio (50x50x25).
    """
    return tuple(  # type: ignore[return-value]
        round(outer * size / paper)
        for outer, size, paper in zip(PAPER_BMS_OUTER, cube_size, PAPER_CUBE, strict=True))


class PatchSampler:
    """Random training patches from whole volumes, biased towards the foreground.

    For each patch: pick a case uniformly; with probability ``foreground_ratio`` centre the
    window on a uniformly drawn foreground voxel, otherwise on a uniformly drawn voxel; the
    window is then shifted to lie inside the volume (volumes smaller than the window are
    zero-padded). With ``outer_size`` (BMS), the window is the outer crop and the patch is a
    uniformly placed ``patch_size`` crop inside it, as in the paper's 100x100x50 ->
    64x64x32 scheme; so a foreground-centred outer crop does not always put the
    foreground in the patch.

    Foreground voxels are found by rejection sampling inside each case's foreground
    bounding box (computed once), which avoids holding an index of every foreground voxel.
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        labels: Sequence[np.ndarray],
        patch_size: Sequence[int],
        foreground_ratio: float = 0.5,
        outer_size: Sequence[int] | None = None,
    ) -> None:
        if len(images) != len(labels) or not images:
            raise ValueError(f"need as many labels as images (>= 1), got {len(images)} "
                             f"images and {len(labels)} labels")
        if not 0.0 <= foreground_ratio <= 1.0:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.window = self.patch_size if outer_size is None else tuple(int(s) for s in outer_size)
        if any(w < p for w, p in zip(self.window, self.patch_size, strict=True)):
            raise ValueError(f"outer_size {self.window} is smaller than patch_size "
                             f"{self.patch_size}")
        for image, label in zip(images, labels, strict=True):
            if image.shape != label.shape or image.ndim != 3:
                raise ValueError(f"image {image.shape} and label {label.shape} must be equal 3D")
        self.images, self.labels = images, labels
        self.foreground_ratio = foreground_ratio
        self.boxes = [_foreground_box(label) for label in labels]

    def sample(self, n: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` patches: images float32 ``(n, X, Y, Z)`` and labels uint8 ``(n, X, Y, Z)``."""
        images = np.empty((n, *self.patch_size), dtype=np.float32)
        labels = np.empty((n, *self.patch_size), dtype=np.uint8)
        for k in range(n):
            case = int(generator.integers(len(self.images)))
            image, label = self.images[case], self.labels[case]
            centre = None
            if generator.random() < self.foreground_ratio:
                centre = _draw_foreground(label, self.boxes[case], generator)
            if centre is None:
                centre = generator.integers(0, image.shape)
            start = np.clip(np.asarray(centre) - np.asarray(self.window) // 2, 0,
                            np.maximum(np.asarray(image.shape) - self.window, 0))
            start = start + generator.integers(
                0, np.asarray(self.window) - self.patch_size + 1)
            images[k] = _crop(image, start, self.patch_size)
            labels[k] = _crop(label, start, self.patch_size)
        return images, labels


def sample_patches(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    n: int,
    patch_size: Sequence[int],
    generator: np.random.Generator,
    foreground_ratio: float = 0.5,
    outer_size: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One-off ``PatchSampler(...).sample(n, generator)``; keep a sampler to reuse its boxes."""
    sampler = PatchSampler(images, labels, patch_size, foreground_ratio, outer_size)
    return sampler.sample(n, generator)


def _foreground_box(label: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Inclusive-exclusive bounds of the non-zero voxels, or None when there are none."""
    lows, highs = [], []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(label, axis=others))
        if present.size == 0:
            return None
        lows.append(present[0])
        highs.append(present[-1] + 1)
    return np.asarray(lows), np.asarray(highs)


def _draw_foreground(
    label: np.ndarray, box: tuple[np.ndarray, np.ndarray] | None, generator: np.random.Generator
) -> np.ndarray | None:
    """A uniformly drawn foreground voxel (rejection sampling in its box), None if empty."""
    if box is None:
        return None
    low, high = box
    for _ in range(16):
        points = generator.integers(low, high, size=(256, 3))
        hits = np.flatnonzero(label[points[:, 0], points[:, 1], points[:, 2]])
        if hits.size:
            return points[hits[0]]
    # A very sparse foreground in a large box: fall back to the exact index.
    voxels = np.argwhere(label[low[0]:high[0], low[1]:high[1], low[2]:high[2]])
    return voxels[generator.integers(len(voxels))] + low


def _crop(volume: np.ndarray, start: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``volume[start : start + size]`` with zeros wherever the box leaves the volume."""
    out = np.zeros(size, dtype=np.float32 if volume.dtype != np.uint8 else np.uint8)
    src = tuple(slice(max(s, 0), min(s + n, dim))
                for s, n, dim in zip(start, size, volume.shape, strict=True))
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    out[dst] = volume[src]
    return out


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare` first") from None
    except (OSError, ValueError) as error:
        raise InputError(path, f"cannot read ({error}); truncated or corrupt file?") from None
