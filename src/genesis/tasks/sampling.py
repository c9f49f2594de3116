"""Training-time sampling from prepared target-task data: NCC batches (shift-and-flip
augmentation within the stored margin, or the central crop for evaluation) and
foreground-biased segmentation patches (BMS: the paper's two-stage crop).

``genesis.tasks.prepared`` owns the files these arrays come from and re-exports every
name defined here.

NCC training cubes are stored with a margin of ``max_shift`` voxels on every side
(``cube_size + 2 * max_shift``), so that ``augment_ncc`` can shift them by cropping real
image context instead of wrapping or padding. Validation and test cubes are stored at
``cube_size`` exactly; ``crop_center`` is then the identity. ``ncc_batch`` does both.

Segmentation training draws patches with ``PatchSampler`` (foreground-biased; BMS crops
``outer_patch_size(cube_size)`` first, the paper's 100x100x50, then ``cube_size``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "PAPER_BMS_OUTER",
    "PAPER_CUBE",
    "PatchSampler",
    "augment_ncc",
    "crop_center",
    "ncc_batch",
    "outer_patch_size",
    "sample_patches",
]

#: Paper sizes of the BMS two-stage crop: 100x100x50 random crops, then 64x64x32 inputs.
PAPER_CUBE = (64, 64, 32)
PAPER_BMS_OUTER = (100, 100, 50)


# --------------------------------------------------------------------------------------
# NCC: candidate cubes


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
    return batch[:, :, x0 : x0 + sx, y0 : y0 + sy, z0 : z0 + sz]


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
# Patch sampling for segmentation training


def outer_patch_size(cube_size: Sequence[int]) -> tuple[int, int, int]:
    """The BMS first-stage crop for ``cube_size``: 100x100x50 scaled by cube_size/64x64x32.

    The paper crops 100x100x50 sub-volumes and then 64x64x32 model inputs from them; a
    smaller demo cube (32x32x16) gets the same ratio (50x50x25).
    """
    return tuple(  # type: ignore[return-value]
        round(outer * size / paper)
        for outer, size, paper in zip(PAPER_BMS_OUTER, cube_size, PAPER_CUBE, strict=True)
    )


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
            raise ValueError(
                f"need as many labels as images (>= 1), got {len(images)} "
                f"images and {len(labels)} labels"
            )
        if not 0.0 <= foreground_ratio <= 1.0:
            raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
        self.patch_size = tuple(int(s) for s in patch_size)
        self.window = self.patch_size if outer_size is None else tuple(int(s) for s in outer_size)
        if any(w < p for w, p in zip(self.window, self.patch_size, strict=True)):
            raise ValueError(
                f"outer_size {self.window} is smaller than patch_size {self.patch_size}"
            )
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
            start = np.clip(
                np.asarray(centre) - np.asarray(self.window) // 2,
                0,
                np.maximum(np.asarray(image.shape) - self.window, 0),
            )
            start = start + generator.integers(0, np.asarray(self.window) - self.patch_size + 1)
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
    voxels = np.argwhere(label[low[0] : high[0], low[1] : high[1], low[2] : high[2]])
    return voxels[generator.integers(len(voxels))] + low


def _crop(volume: np.ndarray, start: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """``volume[start : start + size]`` with zeros wherever the box leaves the volume."""
    out = np.zeros(size, dtype=np.float32 if volume.dtype != np.uint8 else np.uint8)
    src = tuple(
        slice(max(s, 0), min(s + n, dim))
        for s, n, dim in zip(start, size, volume.shape, strict=True)
    )
    dst = tuple(slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start, strict=True))
    out[dst] = volume[src]
    return out
