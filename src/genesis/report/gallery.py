"""The transformation gallery, like the paper's patch-generator figure.

One extracted cube, then each transformation alone and all combined, each in three
orthogonal mid-slices. Every panel uses the pretraining code itself (``genesis.transforms``)
with the shown transformation's rate forced to 1, so the figure shows what the model
really sees, and a seed makes it reproducible. The colour bar says what an intensity of 0
and 1 means for the cubes' modality: a Hounsfield window for CT, a per-scan range for MRI.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from genesis.errors import InputError
from genesis.seeding import derive_seed, numpy_rng
from genesis.settings import from_mapping

#: Panel title -> overrides of the base TransformSettings. ``None``: the original cube.
#: In "all combined" every distortion is forced on; flip keeps its configured rate.
PANELS: tuple[tuple[str, dict[str, Any] | None], ...] = (
    ("original", None),
    ("flip", {"enabled": ("flip",), "flip_rate": 1.0}),
    ("local pixel shuffling", {"enabled": ("local_shuffle",), "local_shuffle_rate": 1.0}),
    (
        "non-linear, increasing",
        {"enabled": ("nonlinear",), "nonlinear_rate": 1.0, "invert_rate": 0.0},
    ),
    (
        "non-linear, inverted",
        {"enabled": ("nonlinear",), "nonlinear_rate": 1.0, "invert_rate": 1.0},
    ),
    ("in-painting", {"enabled": ("inpainting",), "paint_rate": 1.0}),
    ("out-painting", {"enabled": ("outpainting",), "paint_rate": 1.0}),
    (
        "all combined",
        {
            "local_shuffle_rate": 1.0,
            "nonlinear_rate": 1.0,
            "paint_rate": 1.0,
            "enabled": ("flip", "local_shuffle", "nonlinear", "inpainting", "outpainting"),
        },
    ),
)
VIEWS = ("axial", "coronal", "sagittal")
#: What the [0, 1] intensities of a cube mean, by the modality of its scans (genesis cubes
#: --modality; ``auto``: each scan's own, CT or MRI).
INTENSITY_LABELS = {
    "ct": "intensity (0 = -1000 HU, 1 = +1000 HU)",
    "mri": "MRI intensity scaled per scan to [0, 1] (no absolute unit)",
    "auto": "intensity scaled to [0, 1]: CT from -1000 to +1000 HU, MRI per scan",
}


def load_cube(path: str | Path, *, index: int | None = None, seed: int = 0) -> np.ndarray:
    """One (X, Y, Z) float32 cube from a float16 shard (n, X, Y, Z); drawn by seed if no index."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "cube shard does not exist")
    try:
        shard = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise InputError(path, f"not a readable .npy shard: {error}") from None
    if shard.ndim != 4 or shard.shape[0] == 0:
        raise InputError(path, f"expected cubes (n, X, Y, Z) with n >= 1, got {shard.shape}")
    if index is None:
        index = int(numpy_rng(seed, "gallery", "cube").integers(shard.shape[0]))
    if not 0 <= index < shard.shape[0]:
        raise InputError(path, f"cube index {index} outside 0..{shard.shape[0] - 1}")
    cube = np.asarray(shard[index], dtype=np.float32)
    if not np.isfinite(cube).all():
        raise InputError(path, f"cube {index} holds NaN or infinite values")
    return cube


def transformed_panels(
    cube: np.ndarray, seed: int, settings: Mapping[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """Title -> transformed (X, Y, Z) cube for every panel of the gallery.

    ``settings`` is the pretraining transforms section; each panel overrides it so that
    only its transformation runs, with probability 1. Each panel has its own seeded
    generator, so adding a panel does not change the others.
    """
    import torch

    from genesis.transforms import GenesisTransform, TransformSettings

    base = from_mapping(TransformSettings, settings, "transforms")
    batch = torch.from_numpy(np.ascontiguousarray(cube))[None, None]  # (1, 1, X, Y, Z)
    panels = {}
    for title, overrides in PANELS:
        if overrides is None:
            panels[title] = cube
            continue
        transform = GenesisTransform(dataclasses.replace(base, **overrides))
        generator = torch.Generator().manual_seed(derive_seed(seed, "gallery", title))
        inputs, _ = transform(batch, generator)
        panels[title] = inputs[0, 0].numpy()
    return panels


def mid_slices(cube: np.ndarray) -> dict[str, np.ndarray]:
    """Axial (x, y), coronal (x, z) and sagittal (y, z) slices through the cube's centre."""
    x, y, z = (n // 2 for n in cube.shape)
    return {"axial": cube[:, :, z], "coronal": cube[:, y, :], "sagittal": cube[x, :, :]}


def gallery_figure(
    cube: np.ndarray,
    *,
    seed: int = 0,
    settings: Mapping[str, Any] | None = None,
    modality: str = "ct",
    data_label: str | None = None,
) -> Figure:
    """Columns: original, each transformation alone, all combined; rows: three views.

    ``modality`` (ct, mri or auto) labels the intensities; ``data_label`` says in the
    title what the cube was cut from.
    """
    if modality not in INTENSITY_LABELS:
        raise ValueError(f"modality must be one of {sorted(INTENSITY_LABELS)}, got {modality!r}")
    panels = transformed_panels(cube, seed, settings)
    X, Y, Z = cube.shape
    heights = (Y, Z, Z)  # rows keep one voxel = one unit on screen
    figure = Figure(
        figsize=(2.0 * len(panels) + 0.8, 2.0 * sum(heights) / X + 1.2), layout="constrained"
    )
    axes = figure.subplots(3, len(panels), gridspec_kw={"height_ratios": heights})
    image = None
    for c, (title, volume) in enumerate(panels.items()):
        for r, (view, plane) in enumerate(mid_slices(volume).items()):
            ax = axes[r, c]
            # Transposed so the first axis runs left-right; z (slices) points up.
            image = ax.imshow(
                plane.T,
                cmap="gray",
                vmin=0,
                vmax=1,
                interpolation="nearest",
                origin="upper" if view == "axial" else "lower",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(title, fontsize=9)
            if c == 0:
                ax.set_ylabel(view, fontsize=9)
    figure.colorbar(image, ax=axes[:, -1], shrink=0.8, label=INTENSITY_LABELS[modality])
    source = f" of {data_label}" if data_label else ""
    figure.suptitle(
        f"Models Genesis transformations of one {X}x{Y}x{Z} cube{source} (voxel "
        "units), each alone and combined; mid-slices",
        fontweight="bold",
    )
    return figure
