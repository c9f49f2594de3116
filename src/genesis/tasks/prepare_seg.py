"""Shared preparation of the segmentation tasks (LCS, BMS, a user's own): one case at a time.

For every case: read image and label, check that they belong together (shape, geometry,
label values), binarise the label (LCS, BMS) or map its values to class indices 0..K-1
(a multi-class task), normalise the image to [0, 1], optionally crop to the foreground
and resize, and write ``volumes/<case>.npz`` plus a ``cases.csv`` row that records the
source grid so ``genesis.tasks.prepared.restore_to_source`` can undo it.
A case that fails a check is an error, or with ``skip_bad`` a logged skip recorded in
``prepare.json``; one bad volume among a hundred should not stop the run.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesis.atomic import atomic_path, write_json, write_text
from genesis.errors import InputError
from genesis.io import Volume, load_volume
from genesis.tasks.prepared import (
    CASES_COLUMNS,
    CASES_CSV,
    PREPARE_JSON,
    SPLIT_CSV,
    VOLUMES_DIR,
    resize_volume,
)
from genesis.tasks.splits import SPLITS, read_split_csv, write_split_csv

log = logging.getLogger(__name__)

#: Image intensities (x, y, z) -> float32 in [0, 1]; the path is for error messages.
Normaliser = Callable[[np.ndarray, Path], np.ndarray]


@dataclass(frozen=True)
class SourceCase:
    """A case as found on disk; ``channel`` picks the modality of a 4D (x, y, z, c) image."""

    name: str
    image: Path
    label: Path
    channel: int | None = None


@dataclass(frozen=True)
class Preprocessing:
    """What happens to every case of a task (built from the task's settings)."""

    normalise: Normaliser
    allowed_labels: tuple[int, ...]
    inplane_size: int | None = None
    z_scale: float = 1.0
    crop_to_foreground: bool = False
    crop_margin: int = 0
    geometry_tolerance_mm: float = 0.01
    #: Source label values of the classes, background (0) first; the label map is stored
    #: as their indices. None: binary, every non-zero allowed value is foreground.
    class_values: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None
    #: The source values recorded in prepare.json (and written back into predictions):
    #: ``class_values``, or for a binary task its background and foreground values.
    recorded_values: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PreparedCase:
    image: np.ndarray  # float32 (X, Y, Z) in [0, 1]
    label: np.ndarray  # uint8 (X, Y, Z) 0/1
    geometry: dict[str, Any]


SPLIT_COLUMNS = ("case", "split", "image", "label")


def resolve_split(
    cases: Sequence[SourceCase],
    computed: Mapping[str, str],
    split_file: Path | None,
    output_dir: Path,
) -> dict[str, str]:
    """The case assignment: a pinned ``split_file`` when it exists, else ``computed``.

    A pinned case that is not in the data is an error (the pin promises those cases); data
    cases that the pin leaves out are not used. The result is written to ``split.csv``.
    """
    by_name = {case.name: case for case in cases}
    assignment = dict(computed)
    if split_file is not None and split_file.is_file():
        pinned = read_split_csv(split_file, "case", ("case", "split"))
        absent = [name for name in pinned if name not in by_name]
        if absent:
            raise InputError(
                split_file,
                f"pinned case(s) {', '.join(absent[:5])} are not in "
                "the data" + (f" ({len(absent)} in all)" if len(absent) > 5 else ""),
            )
        left_out = len(by_name) - len(pinned)
        log.info(
            "using pinned split %s (%d cases; %d cases in the data not pinned, left out)",
            split_file,
            len(pinned),
            left_out,
        )
        assignment = {name: row["split"] for name, row in pinned.items()}
    elif split_file is not None:
        log.warning(
            "split file %s does not exist; using the computed split (copy %s there to pin it)",
            split_file,
            SPLIT_CSV,
        )
    rows = [
        {
            "case": name,
            "split": assignment[name],
            "image": str(case.image),
            "label": str(case.label),
        }
        for name, case in by_name.items()
        if name in assignment
    ]
    rows.sort(key=lambda row: SPLITS.index(row["split"]))
    write_split_csv(output_dir / SPLIT_CSV, SPLIT_COLUMNS, rows)
    return assignment


def prepare_cases(
    task: str,
    cases: Sequence[SourceCase],
    assignment: Mapping[str, str],
    output_dir: Path,
    prep: Preprocessing,
    skip_bad: bool,
    summary: dict[str, Any],
) -> dict[str, Any]:
    """Prepare every assigned case; write volumes, ``cases.csv`` and ``prepare.json``.

    ``summary`` (settings, layout, provenance, ...) is extended with counts and skipped
    cases and written as ``prepare.json``; the extended summary is returned.
    """
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    ordered = sorted(
        (c for c in cases if c.name in assignment), key=lambda c: SPLITS.index(assignment[c.name])
    )
    for position, case in enumerate(ordered, start=1):
        split = assignment[case.name]
        try:
            prepared = prepare_case(case, split, prep)
        except InputError as error:
            if not skip_bad:
                raise
            log.warning("%s: skipping case %s: %s", task, case.name, error)
            skipped.append({"case": case.name, "split": split, "reason": str(error)})
            continue
        file = f"{VOLUMES_DIR}/{case.name}.npz"
        with atomic_path(output_dir / file) as tmp:
            np.savez(tmp, image=prepared.image.astype(np.float16), label=prepared.label)
        rows.append(_case_row(case, split, file, prepared))
        log.info(
            "%s: prepared %s (%s) %d/%d -> %s",
            task,
            case.name,
            split,
            position,
            len(ordered),
            "x".join(map(str, prepared.image.shape)),
        )
    counts = {split: sum(r["split"] == split for r in rows) for split in SPLITS}
    empty = [split for split in SPLITS if counts[split] == 0]
    if empty:
        raise InputError(
            output_dir,
            f"{task}: no usable case in split(s) {', '.join(empty)} "
            f"({len(skipped)} skipped; see the log); cannot train or evaluate",
        )
    values = prep.class_values or prep.recorded_values or (0, 1)
    names = prep.class_names or ("background", "foreground")
    train_voxels = [
        sum(r["class_voxels"][k] for r in rows if r["split"] == "train") for k in range(len(values))
    ]
    absent = [f"{names[k]} ({values[k]})" for k in range(1, len(values)) if not train_voxels[k]]
    if absent:
        raise InputError(
            output_dir,
            f"{task}: class(es) {', '.join(absent)} have no voxel in "
            "any training case (an empty class cannot be learnt); drop them "
            "from the classes or add cases",
        )
    _write_cases_csv(output_dir / CASES_CSV, rows)
    summary = {
        **summary,
        "kind": "segmentation",
        "classes": [str(v) for v in values],
        "class_names": list(names),
        "class_voxels_train": train_voxels,
        "counts": counts,
        "skipped": skipped,
        "n_skipped": len(skipped),
    }
    write_json(output_dir / PREPARE_JSON, summary)
    return summary


def prepare_case(case: SourceCase, split: str, prep: Preprocessing) -> PreparedCase:
    """Read, check, binarise, normalise, crop and resize one case."""
    image, label = _read_pair(case, prep.geometry_tolerance_mm)
    if prep.class_values is None:
        binary = binarise(label.data, prep.allowed_labels, case.label)
    else:
        binary = encode_classes(label.data, prep.class_values, case.label)
    foreground = int(np.count_nonzero(binary))
    if foreground == 0:
        if split != "test":
            raise InputError(
                case.label,
                f"case {case.name}: label volume is empty (no "
                f"foreground voxels); a {split} case needs foreground",
            )
        log.warning("%s: test case %s has an empty label", case.label, case.name)
    box = full_box(image.data.shape)
    if prep.crop_to_foreground:
        box = foreground_box(image.data, binary, prep.crop_margin)
    intensities = prep.normalise(image.data, case.image)  # may work in place
    cropped = tuple(slice(lo, hi) for lo, hi in box)
    crop_shape = tuple(hi - lo for lo, hi in box)
    shape = prepared_shape(crop_shape, prep.inplane_size, prep.z_scale)
    geometry = {
        "source_shape": list(image.data.shape),
        "spacing": list(image.spacing),
        "origin": list(image.origin),
        "direction": np.asarray(image.direction, float).tolist(),
        "crop": [list(b) for b in box],
        "prepared_shape": list(shape),
    }
    return PreparedCase(
        image=np.clip(resize_volume(intensities[cropped], shape, "linear"), 0.0, 1.0),
        label=resize_volume(binary[cropped], shape, "nearest"),
        geometry=geometry,
    )


def _read_pair(case: SourceCase, tolerance_mm: float) -> tuple[Volume, Volume]:
    """Image (one channel) and label on the same grid, or an ``InputError`` naming the case."""
    image = load_volume(case.image, ndim=3 if case.channel is None else 4)
    if case.channel is not None:
        channels = image.data.shape[3]
        if case.channel >= channels:
            raise InputError(
                case.image,
                f"case {case.name}: has {channels} channels, channel {case.channel} requested",
            )
        image = Volume(
            np.ascontiguousarray(image.data[..., case.channel]),
            image.spacing,
            image.origin,
            image.direction,
            image.path,
        )
    label = load_volume(case.label, ndim=3)
    if image.data.shape != label.data.shape:
        raise InputError(
            case.label,
            f"case {case.name}: label shape {label.data.shape} does "
            f"not match image shape {image.data.shape} ({case.image.name})",
        )
    mismatch = float(np.max(np.abs(image.affine - label.affine)))
    if mismatch > tolerance_mm:
        raise InputError(
            case.label,
            f"case {case.name}: label geometry differs from the image "
            f"({case.image.name}) by up to {mismatch:.4g} mm (spacing "
            f"{label.spacing} vs {image.spacing}, origin {label.origin} vs "
            f"{image.origin}); tolerance {tolerance_mm} mm",
        )
    return image, label


def binarise(label: np.ndarray, allowed: Sequence[int], path: Path) -> np.ndarray:
    """Foreground (every non-zero label) as uint8 0/1; values outside ``allowed`` are errors."""
    unexpected = ~np.isin(label, np.asarray(allowed, dtype=label.dtype))
    if unexpected.any():
        values = np.unique(label[unexpected])
        shown = ", ".join(f"{v:g}" for v in values[:5]) + (" ..." if values.size > 5 else "")
        raise InputError(
            path,
            f"label volume holds value(s) {shown} outside the expected "
            f"{list(allowed)} (is this an image rather than a label?)",
        )
    return (label != 0).astype(np.uint8)


def encode_classes(label: np.ndarray, values: Sequence[int], path: Path) -> np.ndarray:
    """Class indices (uint8): ``values[k]`` -> k; a value not in ``values`` is an error."""
    lookup = np.asarray(values, dtype=np.float64)
    data = np.asarray(label)
    index = np.searchsorted(np.sort(lookup), data)
    order = np.argsort(lookup)
    index = np.clip(index, 0, len(lookup) - 1)
    known = np.sort(lookup)[index] == data
    if not known.all():
        unknown = np.unique(data[~known])
        shown = ", ".join(f"{v:g}" for v in unknown[:5]) + (" ..." if unknown.size > 5 else "")
        raise InputError(
            path,
            f"label volume holds value(s) {shown} that are not among the "
            f"task's classes {list(values)} (unknown class value)",
        )
    return order[index].astype(np.uint8)


def full_box(shape: Sequence[int]) -> list[tuple[int, int]]:
    return [(0, int(n)) for n in shape]


def foreground_box(image: np.ndarray, label: np.ndarray, margin: int) -> list[tuple[int, int]]:
    """Bounding box of the body (voxels above the image minimum) and the label, plus margin.

    Skull-stripped MRI has a background at its minimum (0), so this is the brain's box.
    """
    body = (image > image.min()) | (label != 0)
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(np.any(body, axis=others))
        if present.size == 0:
            box.append((0, image.shape[axis]))
            continue
        lo = max(int(present[0]) - margin, 0)
        hi = min(int(present[-1]) + 1 + margin, image.shape[axis])
        box.append((lo, hi))
    return box


def prepared_shape(
    shape: Sequence[int], inplane_size: int | None, z_scale: float
) -> tuple[int, int, int]:
    """(X, Y, Z) after resizing: ``inplane_size`` in x and y (None keeps them), z scaled."""
    x, y, z = (int(s) for s in shape)
    if inplane_size is not None:
        x = y = inplane_size
    return (x, y, max(round(z * z_scale), 1))


def _case_row(case: SourceCase, split: str, file: str, prepared: PreparedCase) -> dict[str, Any]:
    geometry = prepared.geometry
    return {
        "case": case.name,
        "split": split,
        "file": file,
        "image_path": str(case.image),
        "label_path": str(case.label),
        "orig_shape": "x".join(map(str, geometry["source_shape"])),
        "prepared_shape": "x".join(map(str, geometry["prepared_shape"])),
        "foreground_voxels": int(np.count_nonzero(prepared.label)),
        "class_voxels": np.bincount(prepared.label.reshape(-1), minlength=256).tolist(),
        "geometry": json.dumps(geometry, separators=(",", ":")),
    }


def _write_cases_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(CASES_COLUMNS), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
