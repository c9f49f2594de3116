"""LCS (liver segmentation): MSD Task03_Liver or the original LiTS 2017 layout.

Both layouts hold the same 131 LiTS training volumes; LiTS ``volume-N.nii`` is MSD
``liver_N.nii.gz``. Cases are named ``liver_N`` in either layout, so a split pinned on one
layout applies to the other. Preprocessing (facts §5): CT window [-1000, 1000] HU -> [0, 1],
in-plane resize to ``inplane_size`` (256 in the paper) with linear interpolation for the
image and nearest neighbour for the label, z kept (``z_scale`` 1). Target: liver (labels
1 liver and 2 tumour) against background. Split by volume index (0-99 / 100-114 / 115-129;
see ``genesis.tasks.splits.index_splits`` for smaller data sets).
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesis.errors import ConfigError, InputError
from genesis.settings import check_bounds, check_increasing, setting, to_mapping
from genesis.tasks.prepare_seg import Preprocessing, SourceCase, prepare_cases, resolve_split
from genesis.tasks.splits import index_splits

log = logging.getLogger(__name__)

SECTION = "tasks.lcs.prepare"
LIVER_LABELS = (0, 1, 2)  # background, liver, tumour


@dataclass(frozen=True)
class LcsSettings:
    """LCS preparation settings (section ``tasks.lcs.prepare``); defaults are the paper's."""

    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Model input (x, y, z); not used to prepare, recorded for the patch sampling of "
        "fine-tuning. The workflow fills it in from the top-level cube_size.",
        bounds="[1, inf)",
    )
    hu_window: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "CT window in HU, mapped linearly to [0, 1].",
    )
    inplane_size: int | None = setting(
        256,
        "In-plane size (x = y) after resizing (paper: 256×256×Z); null keeps the source size.",
        bounds="[1, inf)",
    )
    z_scale: float = setting(
        1.0,
        "Factor on the number of slices (1 keeps z, as the paper).",
        bounds="(0, inf)",
    )
    split_counts: tuple[int, int, int] = setting(
        (100, 15, 15),
        "Train / validation / test volumes in index order (paper: volumes 0-99, 100-114, 115-129; "
        "further volumes are left out). With fewer volumes the same proportions are used, with at "
        "least one validation and one test volume.",
        bounds="[0, inf)",
    )
    skip_bad: bool = setting(
        True,
        "Skip (and record) a bad case instead of stopping.",
    )
    geometry_tolerance_mm: float = setting(
        0.01,
        "Largest allowed difference (mm) between the image's and the label's index-to-world "
        "matrices.",
        bounds="[0, inf)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        check_increasing(self, SECTION, "hu_window")
        if self.split_counts[0] < 1:
            raise ConfigError(
                f"{SECTION}.split_counts must be [train >= 1, val >= 0, "
                f"test >= 0], got {list(self.split_counts)}"
            )


def find_liver_cases(data_dir: Path) -> tuple[str, list[SourceCase]]:
    """Detect the layout under ``data_dir``; return it and the cases in index order."""
    for root in (data_dir, data_dir / "Task03_Liver"):
        if (root / "dataset.json").is_file():
            return "msd_task03", _msd_cases(root)
    volumes = _numbered(data_dir.rglob("volume-*.nii*"), "volume-")
    if volumes:
        labels = _numbered(data_dir.rglob("segmentation-*.nii*"), "segmentation-")
        missing = sorted(set(volumes) - set(labels))
        if missing:
            raise InputError(
                volumes[missing[0]],
                f"no segmentation-{missing[0]}.nii[.gz] under {data_dir} for this volume",
            )
        return "lits", [SourceCase(f"liver_{n}", volumes[n], labels[n]) for n in sorted(volumes)]
    raise InputError(
        data_dir,
        "no liver data found: expected MSD Task03_Liver "
        "(dataset.json, imagesTr/, labelsTr/) or LiTS volume-N.nii / "
        "segmentation-N.nii files",
    )


def _msd_cases(root: Path) -> list[SourceCase]:
    """Training cases listed in ``dataset.json`` (relative ``./imagesTr/...`` paths)."""
    path = root / "dataset.json"
    try:
        training = json.loads(path.read_text(encoding="utf-8"))["training"]
        pairs = [(root / item["image"], root / item["label"]) for item in training]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            path,
            f"not an MSD dataset.json with a 'training' list of "
            f"{{image, label}} entries ({type(error).__name__}: {error})",
        ) from None
    if not pairs:
        raise InputError(path, "lists no training cases")
    cases = []
    for image, label in pairs:
        name = _stem(image)
        cases.append((case_index(name, path), SourceCase(name, image, label)))
    return [case for _, case in sorted(cases, key=lambda item: item[0])]


def case_index(name: str, where: Path) -> int:
    """The volume number at the end of a case name (``liver_12`` -> 12)."""
    match = re.search(r"(\d+)$", name)
    if match is None:
        raise InputError(where, f"case {name} has no volume number; cannot split by index")
    return int(match.group(1))


def _numbered(paths: Any, prefix: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    for path in sorted(paths):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.nii(\.gz)?", path.name)
        if match is None:
            continue
        number = int(match.group(1))
        if number in found:
            raise InputError(path, f"{prefix}{number} also exists as {found[number]}")
        found[number] = path
    return found


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def ct_normaliser(window: tuple[float, float]) -> Any:
    """``(hu, path) -> [0, 1]`` for the given HU window."""
    from genesis.cubes.intensity import ct_window

    def normalise(hu: np.ndarray, path: Path) -> np.ndarray:
        return ct_window(hu, *window)

    return normalise


def prepare_lcs(
    data_dir: Path,
    output_dir: Path,
    settings: LcsSettings,
    seed: int,
    split_file: Path | None = None,
) -> dict[str, Any]:
    """Prepare every liver volume of the split; see the module docstring."""
    from genesis.provenance import provenance_record

    layout, cases = find_liver_cases(data_dir)
    computed = index_splits([case.name for case in cases], settings.split_counts)
    left_out = len(cases) - len(computed)
    if left_out:
        log.info(
            "lcs: %d volume(s) beyond the %s split counts are not used",
            left_out,
            list(settings.split_counts),
        )
    assignment = resolve_split(cases, computed, split_file, output_dir)
    prep = Preprocessing(
        normalise=ct_normaliser(settings.hu_window),
        allowed_labels=LIVER_LABELS,
        inplane_size=settings.inplane_size,
        z_scale=settings.z_scale,
        geometry_tolerance_mm=settings.geometry_tolerance_mm,
    )
    summary = {
        "task": "lcs",
        "layout": layout,
        "data": str(data_dir),
        "split_file": str(split_file) if split_file and split_file.is_file() else None,
        "seed": seed,
        "settings": to_mapping(settings),
        "target": "liver: labels 1 (liver) and 2 (tumour) vs 0",
        "provenance": provenance_record(settings=to_mapping(settings), seeds={"prepare": seed}),
    }
    return prepare_cases("lcs", cases, assignment, output_dir, prep, settings.skip_bad, summary)
