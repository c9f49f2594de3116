"""A user's own segmentation task: an MSD-layout folder or a CSV of image/label pairs.

Inputs:

- an MSD-layout folder (Medical Segmentation Decathlon): ``dataset.json`` with a
  ``training`` list of ``{image, label}`` paths and a ``labels`` map of class values to
  names (``{"0": "background", "1": "spleen"}``); images 3D, or 4D with ``channel``;
- a CSV with ``image,label[,split]`` columns; paths relative to the CSV's folder; each
  image anything ``genesis.io.load_volume`` reads (NIfTI, MetaImage, a DICOM folder).

Classes: ``dataset.json``'s ``labels``, else the ``classes`` setting, else every value
found in the label volumes of the listed cases (one quick pass over the labels). With
two classes the task is binary (the release's sigmoid head); with more, the label maps
are stored as class indices and fine-tuning uses one softmax channel per class.

Splits, by precedence: a pinned ``split_file`` (``case,split``), the CSV's ``split``
column, or a seeded split in ``split_proportions``. Intensities: CT through the HU window,
MRI by its own percentiles (``modality: auto`` decides per scan, from ``dataset.json``'s
``modality`` when present). Everything after discovery is ``prepare_seg.prepare_cases``,
the same code as LCS and BMS, so every check and the on-disk layout are shared.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis.errors import ConfigError, InputError
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, setting, to_mapping
from genesis.tasks.prepare_seg import Preprocessing, SourceCase, prepare_cases, resolve_split
from genesis.tasks.splits import SPLITS, check_proportions, proportion_splits

log = logging.getLogger(__name__)

CSV_COLUMNS = ("image", "label")


@dataclass(frozen=True)
class SegmentationSettings:
    """Preparation of a user's segmentation task (section ``tasks.<name>.prepare``)."""

    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Model input (x, y, z); recorded for the patch sampling of fine-tuning. The workflow fills "
        "it in from the top-level cube_size.",
        bounds="[1, inf)",
    )
    modality: Literal["ct", "mri", "auto"] = setting(
        "auto",
        "See `tasks.<name>.modality`.",
    )
    hu_window: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "CT window in HU, mapped linearly to [0, 1].",
    )
    mri_percentiles: tuple[float, float] = setting(
        (0.5, 99.5),
        "MRI intensities at these percentiles of each volume map to 0 and 1.",
        bounds="[0, 100]",
    )
    auto_ct_air_fraction: float = setting(
        0.05,
        "`auto`: a scan with at least this share of voxels at or below -500 is CT.",
        bounds="(0, 1)",
    )
    channel: int | None = setting(
        None,
        "Channel of 4D images (e.g. the MRI sequence); null for 3D images.",
        bounds="[0, inf)",
    )
    classes: tuple[int, ...] | None = setting(
        None,
        "Label values of the classes, background 0 first; null: `dataset.json`'s `labels`, else "
        "every value found in the label volumes.",
        bounds="[0, 255]",
    )
    class_names: tuple[str, ...] | None = setting(
        None,
        "Their names; null: `dataset.json`'s, else `class_<value>`.",
    )
    inplane_size: int | None = setting(
        None,
        "In-plane size after resizing; null keeps the source size.",
        bounds="[1, inf)",
    )
    z_scale: float = setting(
        1.0,
        "Factor on the number of slices.",
        bounds="(0, inf)",
    )
    crop_to_foreground: bool = setting(
        False,
        "Crop each volume to the body's bounding box plus `crop_margin` voxels (recorded, undone "
        "for the predictions).",
    )
    crop_margin: int = setting(
        0,
        "See `crop_to_foreground`.",
        bounds="[0, inf)",
    )
    split_proportions: tuple[float, float, float] = setting(
        (0.7, 0.15, 0.15),
        "Seeded train/val/test shares of the cases when no split column or file assigns them.",
        bounds="[0, 1]",
    )
    skip_bad: bool = setting(
        True,
        "Skip (and record) a bad case instead of stopping.",
    )
    geometry_tolerance_mm: float = setting(
        0.01,
        "Largest allowed difference between the image and label index-to-world matrices.",
        bounds="[0, inf)",
    )

    def __post_init__(self) -> None:
        section = "tasks.<task>.prepare"
        check_bounds(self, section)
        check_increasing(self, section, "hu_window", "mri_percentiles")
        check_proportions(self.split_proportions, f"{section}.split_proportions")
        if self.classes is not None and (
            len(self.classes) < 2
            or self.classes[0] != 0
            or len(set(self.classes)) != len(self.classes)
        ):
            raise ConfigError(
                f"{section}.classes must list distinct label values, background 0 first and "
                f"at least one more, got {list(self.classes)}"
            )
        if self.class_names is not None and (
            self.classes is None or len(self.class_names) != len(self.classes)
        ):
            raise ConfigError(f"{section}.class_names needs classes, one name each")


@dataclass(frozen=True)
class Discovered:
    """What the input lists: cases, their split column (if any) and dataset.json classes."""

    layout: str
    cases: list[SourceCase]
    splits: dict[str, str]
    classes: dict[int, str] | None
    modality: str | None


def discover(data: Path, channel: int | None) -> Discovered:
    """The cases of an MSD folder or an ``image,label[,split]`` CSV; one-line errors."""
    if data.is_dir():
        return _msd(data, channel)
    if data.is_file():
        return _csv(data, channel)
    raise InputError(
        data,
        "does not exist; expected an MSD-layout folder (dataset.json, "
        "imagesTr/, labelsTr/) or a CSV with image,label[,split] columns",
    )


def _msd(root: Path, channel: int | None) -> Discovered:
    path = root / "dataset.json"
    if not path.is_file():
        raise InputError(
            root,
            "not an MSD-layout folder: no dataset.json (or pass a CSV "
            "with image,label[,split] columns)",
        )
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
        training = manifest["training"]
        pairs = [(root / item["image"], root / item["label"]) for item in training]
        labels = manifest.get("labels")
        classes = (
            {int(float(k)): str(v) for k, v in labels.items()}
            if isinstance(labels, dict) and labels
            else None
        )
    except (
        OSError,
        UnicodeDecodeError,
        json.JSONDecodeError,
        KeyError,
        TypeError,
        ValueError,
    ) as error:
        raise InputError(
            path,
            f"not an MSD dataset.json with a 'training' list of "
            f"{{image, label}} entries and a 'labels' map ({type(error).__name__}: "
            f"{error})",
        ) from None
    if not pairs:
        raise InputError(path, "lists no training cases")
    modality = manifest.get("modality")
    declared = None
    if isinstance(modality, dict) and modality:
        declared = "ct" if all(str(v).upper() == "CT" for v in modality.values()) else "mri"
    return Discovered("msd", _named(pairs, channel), {}, classes, declared)


def _csv(path: Path, channel: int | None) -> Discovered:
    try:
        # utf-8-sig: a CSV saved by Excel starts with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read the CSV ({error})") from None
    missing = [c for c in CSV_COLUMNS if c not in header]
    if missing:
        raise InputError(
            path,
            f"lacks column(s) {', '.join(missing)}; a segmentation CSV "
            "has image,label[,split] columns",
        )
    if not rows:
        raise InputError(path, "lists no cases")
    pairs, split_of = [], {}
    for line, row in enumerate(rows, start=2):
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k}
        if not row["image"] or not row["label"]:
            raise InputError(path, f"line {line}: empty image or label path")
        pairs.append((_resolve(path, row["image"]), _resolve(path, row["label"])))
        split = row.get("split", "")
        if split:
            if split not in SPLITS:
                raise InputError(
                    path, f"line {line}: split {split!r} must be one of {', '.join(SPLITS)}"
                )
            split_of[len(pairs) - 1] = split
    if split_of and len(split_of) != len(pairs):
        raise InputError(
            path, "the split column is filled on some rows only; fill it on every row or on none"
        )
    cases = _named(pairs, channel)
    splits = {cases[i].name: split for i, split in split_of.items()}
    return Discovered("csv", cases, splits, None, None)


def _resolve(csv_path: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return path if path.is_absolute() else csv_path.parent / path


def _named(pairs: list[tuple[Path, Path]], channel: int | None) -> list[SourceCase]:
    """Cases named after their image files; repeated names get a numeric suffix."""
    cases, seen = [], {}
    for image, label in pairs:
        name = _stem(image)
        count = seen.get(name, 0)
        seen[name] = count + 1
        cases.append(SourceCase(name if count == 0 else f"{name}_{count}", image, label, channel))
    return cases


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".mhd", ".mha"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "case"


def label_values(cases: list[SourceCase]) -> list[int]:
    """Every value in the label volumes of ``cases`` (a pass over the labels only)."""
    from genesis.io import load_volume

    found: set[int] = set()
    for case in cases:
        try:
            data = load_volume(case.label, ndim=3).data
        except InputError:
            continue  # reported with its case during preparation
        values = np.unique(data)
        if not np.all(values == np.round(values)) or values.min() < 0 or values.max() > 255:
            raise InputError(
                case.label,
                f"label volume holds values {values[:5].tolist()}...; "
                "expected integer class values 0..255 (is this an image?)",
            )
        found.update(int(v) for v in values)
    return sorted(found | {0})


def resolve_classes(
    settings: SegmentationSettings, found: Discovered
) -> tuple[tuple[int, ...], tuple[str, ...]]:
    if settings.classes is not None:
        values = tuple(settings.classes)
        names = settings.class_names or tuple(
            (found.classes or {}).get(v, "background" if v == 0 else f"class_{v}") for v in values
        )
        return values, tuple(names)
    if found.classes is not None:
        values = tuple(sorted(found.classes))
        if values[0] < 0 or values[-1] > 255 or len(values) < 2:
            raise InputError(
                None,
                f"dataset.json's labels {found.classes}: expected background 0 and at "
                "least one class, with values in 0..255",
            )
        if values[0] != 0:
            raise InputError(
                None, f"dataset.json's labels {found.classes} lack the background value 0"
            )
        return values, tuple(found.classes[v] for v in values)
    values = tuple(label_values(found.cases))
    if len(values) < 2:
        raise InputError(found.cases[0].label, "every label volume is empty (only value 0)")
    return values, tuple("background" if v == 0 else f"class_{v}" for v in values)


def normaliser(settings: SegmentationSettings, declared: str | None) -> Any:
    """``(data, path) -> [0, 1]`` by the task's modality (``auto``: per scan)."""
    from genesis.cubes.intensity import ct_window, guess_modality, mri_window

    def normalise(data: np.ndarray, path: Path) -> np.ndarray:
        modality = settings.modality
        if modality == "auto":
            modality = declared or guess_modality(data, path, settings.auto_ct_air_fraction)
        if modality == "ct":
            return ct_window(data, *settings.hu_window)
        return mri_window(data, "percentile", settings.mri_percentiles)

    return normalise


def prepare_segmentation(
    task: str,
    data: Path,
    output_dir: Path,
    settings: SegmentationSettings,
    seed: int,
    split_file: Path | None = None,
) -> dict[str, Any]:
    """Prepare a user's segmentation task; see the module docstring."""
    from genesis.provenance import provenance_record

    section = f"tasks.{task}.prepare"
    found = discover(Path(data), settings.channel)
    values, names = resolve_classes(settings, found)
    names_list = [case.name for case in found.cases]
    if found.splits:
        computed = dict(found.splits)
    else:
        computed = proportion_splits(
            names_list,
            settings.split_proportions,
            numpy_rng(seed, "split", task),
            f"{section}.split_proportions",
        )
    assignment = resolve_split(found.cases, computed, split_file, output_dir)
    prep = Preprocessing(
        normalise=normaliser(settings, found.modality),
        allowed_labels=values,
        inplane_size=settings.inplane_size,
        z_scale=settings.z_scale,
        crop_to_foreground=settings.crop_to_foreground,
        crop_margin=settings.crop_margin,
        geometry_tolerance_mm=settings.geometry_tolerance_mm,
        class_values=values if len(values) > 2 else None,
        recorded_values=values,
        class_names=names,
    )
    target = ", ".join(f"{v} {n}" for v, n in zip(values, names, strict=True))
    summary = {
        "task": task,
        "layout": found.layout,
        "data": str(data),
        "split_file": str(split_file) if split_file and split_file.is_file() else None,
        "split_source": (
            "split_file"
            if split_file and split_file.is_file()
            else "split column"
            if found.splits
            else "split_proportions"
        ),
        "seed": seed,
        "settings": to_mapping(settings),
        "modality": settings.modality
        if settings.modality != "auto"
        else (found.modality or "auto (per scan)"),
        "target": target,
        "provenance": provenance_record(settings=to_mapping(settings), seeds={"prepare": seed}),
    }
    log.info("%s: %d cases (%s), classes %s", task, len(found.cases), found.layout, target)
    return prepare_cases(
        task, found.cases, assignment, output_dir, prep, settings.skip_bad, summary
    )
