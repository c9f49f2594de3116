"""BMS (brain tumour segmentation): MSD Task01_BrainTumour or the BraTS 2018 layout.

MSD stores one 4D image per case (channels FLAIR, T1w, T1gd, T2w, named in
``dataset.json``); BraTS 2018 one file per modality,
``{HGG,LGG}/Brats18_*/Brats18_*_{flair,t1,t1ce,t2,seg}.nii.gz``. One modality is used
(FLAIR by default), normalised per patient to [0, 1] by min-max (or clipped to
``clip_range``, e.g. [0, 4000], and scaled). Target: whole tumour, every non-zero label
(MSD 1-3, BraTS 1, 2, 4), against background.

Folds (facts §5): the case list is cut into 3 folds; folds 1+2 are train/validation at
7 : 1 and fold 3 is the test set. The case list is sorted by name; MSD cases are shuffled
with the seed first (``shuffle`` null = shuffle MSD only, true/false forces it). Sorted
BraTS names interleave HGG and LGG (Brats18_2013_*, Brats18_CBICA_*, Brats18_TCIA*), so
every fold holds both grades.

Volumes keep their size unless ``crop_to_brain`` cuts them to the brain's bounding box;
the crop is recorded so predictions map back to the source grid.
"""

from __future__ import annotations

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
from genesis.tasks.prepared import outer_patch_size
from genesis.tasks.splits import fold_splits

log = logging.getLogger(__name__)

SECTION = "tasks.bms.prepare"
#: Canonical modality names (MSD's) and the spellings accepted for each.
MODALITIES: dict[str, tuple[str, ...]] = {
    "FLAIR": ("flair",),
    "T1w": ("t1w", "t1"),
    "T1gd": ("t1gd", "t1ce", "t1c"),
    "T2w": ("t2w", "t2"),
}
#: BraTS 2018 file suffix of each modality.
BRATS_SUFFIX = {"FLAIR": "flair", "T1w": "t1", "T1gd": "t1ce", "T2w": "t2"}
#: MSD Task01 channel order when dataset.json does not name the channels (facts §7).
MSD_CHANNELS = ("FLAIR", "T1w", "T1gd", "T2w")
MSD_LABELS = (0, 1, 2, 3)
BRATS_LABELS = (0, 1, 2, 4)


@dataclass(frozen=True)
class BmsSettings:
    """BMS preparation settings (section ``tasks.bms.prepare``); defaults are the paper's."""

    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Model input (x, y, z); not used to prepare, recorded for the patch sampling of "
        "fine-tuning. The workflow fills it in from the top-level cube_size.",
        bounds="[1, inf)",
    )
    modality: str = setting(
        "FLAIR",
        "Sequence used as the input channel: `FLAIR`, `T1w`, `T1gd` or `T2w` (BraTS spellings "
        "`flair`, `t1`, `t1ce`, `t2` accepted).",
    )
    normalisation: Literal["minmax", "clip"] = setting(
        "minmax",
        "`minmax`: per patient to [0, 1]; `clip`: clip to `clip_range`, then scale to [0, 1] (the "
        "paper's two options).",
    )
    clip_range: tuple[float, float] = setting(
        (0.0, 4000.0),
        "Range for `normalisation: clip` (paper: [0, 4000]).",
    )
    folds: int = setting(
        3,
        "Folds the case list is cut into (paper: 3 folds).",
        bounds="[2, inf)",
    )
    test_fold: int = setting(
        3,
        "1-based fold used as the test set (paper: fold 3); the others are train and validation.",
        bounds="[1, inf)",
    )
    val_fraction: float = setting(
        0.125,
        "Share of the non-test cases used for validation (paper: 7 : 1, i.e. 1/8).",
        bounds="[0, 1)",
    )
    shuffle: bool | None = setting(
        None,
        "Shuffle the case list (seeded by `seed`) before folding; null: yes for MSD, no for BraTS "
        "2018.",
    )
    crop_to_brain: bool = setting(
        False,
        "Crop each volume to the brain's bounding box.",
    )
    crop_margin: int = setting(
        0,
        "Voxels kept around the brain when cropping.",
        bounds="[0, inf)",
    )
    inplane_size: int | None = setting(
        None,
        "In-plane size (x = y) after resizing; null keeps the source size.",
        bounds="[1, inf)",
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
        canonical_modality(self.modality)
        check_increasing(self, SECTION, "clip_range")
        if self.test_fold > self.folds:
            raise ConfigError(
                f"{SECTION}.test_fold must be in 1..{self.folds} (folds), got {self.test_fold}"
            )


def canonical_modality(name: str) -> str:
    for canonical, spellings in MODALITIES.items():
        if name.lower() in spellings:
            return canonical
    raise ConfigError(
        f"{SECTION}.modality must be one of {list(MODALITIES)} (or flair, t1, "
        f"t1ce, t2), got {name!r}"
    )


def find_brain_cases(data_dir: Path, modality: str) -> tuple[str, list[SourceCase]]:
    """Detect the layout under ``data_dir``; return it and the cases sorted by name."""
    for root in (data_dir, data_dir / "Task01_BrainTumour"):
        if (root / "dataset.json").is_file():
            return "msd_task01", _msd_cases(root, modality)
    segs = sorted(
        p
        for p in [*data_dir.rglob("*_seg.nii.gz"), *data_dir.rglob("*_seg.nii")]
        if not p.name.startswith("._")
    )
    if segs:
        return "brats2018", _brats_cases(segs, modality)
    raise InputError(
        data_dir,
        "no brain tumour data found: expected MSD Task01_BrainTumour "
        "(dataset.json, imagesTr/, labelsTr/) or BraTS 2018 "
        "{HGG,LGG}/Brats18_*/Brats18_*_{flair,t1,t1ce,t2,seg}.nii.gz",
    )


def _msd_cases(root: Path, modality: str) -> list[SourceCase]:
    path = root / "dataset.json"
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
        pairs = [(root / item["image"], root / item["label"]) for item in meta["training"]]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise InputError(
            path,
            f"not an MSD dataset.json with a 'training' list of "
            f"{{image, label}} entries ({type(error).__name__}: {error})",
        ) from None
    channel = _msd_channel(meta.get("modality"), modality, path)
    cases = [
        SourceCase(image.name.split(".nii")[0], image, label, channel) for image, label in pairs
    ]
    if not cases:
        raise InputError(path, "lists no training cases")
    return sorted(cases, key=lambda case: case.name)


def _msd_channel(named: Any, modality: str, path: Path) -> int:
    """Channel of ``modality`` from dataset.json's ``modality`` map (facts' order if absent)."""
    if not isinstance(named, dict) or not named:
        return MSD_CHANNELS.index(modality)
    for key, value in named.items():
        try:
            if canonical_modality(str(value)) == modality:
                return int(key)
        except (ConfigError, ValueError):
            continue
    raise InputError(path, f"dataset.json names modalities {named}; none is {modality}")


def _brats_cases(segs: list[Path], modality: str) -> list[SourceCase]:
    cases: dict[str, SourceCase] = {}
    for seg in segs:
        name = seg.name.split("_seg.nii")[0]
        suffix = ".nii.gz" if seg.name.endswith(".gz") else ".nii"
        image = seg.with_name(f"{name}_{BRATS_SUFFIX[modality]}{suffix}")
        if name in cases:
            raise InputError(seg, f"case {name} also exists as {cases[name].label}")
        cases[name] = SourceCase(name, image, seg)
    return [cases[name] for name in sorted(cases)]


def mri_normaliser(settings: BmsSettings) -> Any:
    """``(intensities, path) -> [0, 1]``: per-patient min-max, or clip and scale."""

    def normalise(data: np.ndarray, path: Path) -> np.ndarray:
        if settings.normalisation == "clip":
            low, high = settings.clip_range
        else:
            low, high = float(data.min()), float(data.max())
            if high <= low:
                raise InputError(path, f"image is constant ({low:g}); cannot min-max normalise")
        scaled = np.clip(data, low, high, dtype=np.float32) - np.float32(low)
        return scaled / np.float32(high - low)

    return normalise


def prepare_bms(
    data_dir: Path,
    output_dir: Path,
    settings: BmsSettings,
    seed: int,
    split_file: Path | None = None,
) -> dict[str, Any]:
    """Prepare every brain case of the folds; see the module docstring."""
    from genesis.provenance import provenance_record

    modality = canonical_modality(settings.modality)
    layout, cases = find_brain_cases(data_dir, modality)
    shuffle = layout == "msd_task01" if settings.shuffle is None else settings.shuffle
    rng = numpy_rng(seed, "bms", "folds") if shuffle else None
    computed = fold_splits(
        [case.name for case in cases],
        settings.folds,
        settings.test_fold,
        settings.val_fraction,
        rng,
        SECTION,
    )
    assignment = resolve_split(cases, computed, split_file, output_dir)
    prep = Preprocessing(
        normalise=mri_normaliser(settings),
        allowed_labels=MSD_LABELS if layout == "msd_task01" else BRATS_LABELS,
        inplane_size=settings.inplane_size,
        crop_to_foreground=settings.crop_to_brain,
        crop_margin=settings.crop_margin,
        geometry_tolerance_mm=settings.geometry_tolerance_mm,
    )
    summary = {
        "task": "bms",
        "layout": layout,
        "data": str(data_dir),
        "modality": modality,
        "shuffled": shuffle,
        "split_file": str(split_file) if split_file and split_file.is_file() else None,
        "seed": seed,
        "settings": to_mapping(settings),
        "target": "whole tumour: every non-zero label vs 0",
        # The paper's two-stage training crop, scaled to cube_size (see PatchSampler).
        "patch_sizes": {
            "outer": list(outer_patch_size(settings.cube_size)),
            "inner": list(settings.cube_size),
        },
        "provenance": provenance_record(settings=to_mapping(settings), seeds={"prepare": seed}),
    }
    return prepare_cases("bms", cases, assignment, output_dir, prep, settings.skip_bad, summary)
