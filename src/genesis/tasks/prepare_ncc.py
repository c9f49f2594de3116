"""NCC (LUNA16 nodule false-positive reduction): candidate cubes, split by subset.

Each ``candidates_V2.csv`` row gives a world position (LPS mm) and a class (1 nodule,
0 false positive). The cube is centred on the candidate's nearest voxel, found through
the scan's direction matrix (``genesis.io.world_to_voxel``): 14 LUNA16 scans have a
flipped direction, and ignoring it puts their candidates outside the image. For an even
size ``S`` the candidate voxel sits at index ``S // 2`` of the cube. Where a cube crosses
the scan border it is padded with air (-1000 HU, 0.0 after the CT window).

All positives are kept; negatives are subsampled to ``negative_ratio`` per positive with a
seeded generator (train and validation). The test split keeps every candidate by
default, as the paper's AUC is computed over all test candidates
(``test_negative_ratio`` subsamples it too, e.g. to save disk: the full test split is
about 225,000 cubes, 59 GB at 64x64x32 float16).

Scans are streamed one at a time, and cubes go straight into memory-mapped ``.npy``
files, so memory holds one scan and a few cubes whatever the data size.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genesis.atomic import atomic_path, write_json, write_text
from genesis.cubes.intensity import ct_window
from genesis.errors import InputError
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, setting, to_mapping
from genesis.tasks.prepared import (
    CANDIDATES_CSV,
    PREPARE_JSON,
    SPLIT_CSV,
    ncc_arrays_path,
    ncc_cubes_path,
    truncate_npy,
)
from genesis.tasks.splits import SPLITS, read_split_csv, subset_splits, write_split_csv

log = logging.getLogger(__name__)

SECTION = "tasks.ncc.prepare"
CANDIDATE_COLUMNS = ("seriesuid", "coordX", "coordY", "coordZ", "class")
SPLIT_COLUMNS = ("seriesuid", "subset", "split")
#: LUNA16 ships ten subsets; with all of them on disk an unknown series is an error.
LUNA16_SUBSETS = frozenset(range(10))
AIR_HU = -1000.0
_CHUNK = 64  # cubes cut and windowed at once (64 x 72x72x40 float32 = 53 MB)


@dataclass(frozen=True)
class NccSettings:
    """NCC preparation settings (section ``tasks.ncc.prepare``); defaults are the paper's."""

    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Model input (x, y, z); x and y divisible by 16, z by 8. The workflow fills it in from the "
        "top-level cube_size.",
        bounds="[1, inf)",
    )
    max_shift: tuple[int, int, int] = setting(
        (4, 4, 2),
        "Largest random training shift per axis (`tasks.ncc.finetune.augment`); training cubes are "
        "stored this much larger on each side.",
        bounds="[0, inf)",
    )
    train_subsets: tuple[int, ...] = setting(
        (0, 1, 2, 3, 4),
        "LUNA16 subsets of the training scans (paper: 0-4); the workflow fills it in from "
        "luna16.train.",
        bounds="[0, 9]",
    )
    val_subsets: tuple[int, ...] = setting(
        (5, 6),
        "LUNA16 subsets of the validation scans (paper: 5-6); the workflow fills it in from "
        "luna16.val.",
        bounds="[0, 9]",
    )
    test_subsets: tuple[int, ...] = setting(
        (7, 8, 9),
        "LUNA16 subsets of the test scans (paper: 7-9); the workflow fills it in from luna16.test.",
        bounds="[0, 9]",
    )
    negative_ratio: float = setting(
        10.0,
        "Negatives kept per positive in train and validation (seeded sample); all positives are "
        "kept.",
        bounds="[0, inf)",
    )
    test_negative_ratio: float | None = setting(
        None,
        "Same for test; null keeps every test candidate (the paper's AUC protocol); a number saves "
        "disk.",
        bounds="[0, inf)",
    )
    hu_window: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "CT window in HU, mapped linearly to [0, 1] (as in pretraining).",
    )
    skip_bad: bool = setting(
        True,
        "Skip (and record) unreadable scans instead of stopping.",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        check_increasing(self, SECTION, "hu_window")
        subset_splits(self.train_subsets, self.val_subsets, self.test_subsets, SECTION)

    def stored_size(self, split: str) -> tuple[int, int, int]:
        """Training cubes carry the shift margin; validation and test cubes do not."""
        if split != "train":
            return self.cube_size
        return tuple(c + 2 * m for c, m in zip(self.cube_size, self.max_shift, strict=True))  # type: ignore[return-value]


@dataclass(frozen=True)
class Scan:
    uid: str
    subset: int
    path: Path


# --------------------------------------------------------------------------------------
# Finding the data


def find_luna16(data_dir: Path) -> tuple[Path, Path]:
    """The LUNA16 folder (``data_dir`` or its ``luna16/`` child) and its candidates CSV."""
    for root in (data_dir, data_dir / "luna16"):
        csv_path = _candidates_csv(root)
        if csv_path is not None:
            return root, csv_path
    raise InputError(
        data_dir,
        "no candidates_V2.csv (or candidates_V2/candidates_V2.csv) "
        "here or in luna16/; expected the LUNA16 layout",
    )


def _candidates_csv(root: Path) -> Path | None:
    for path in (root / "candidates_V2.csv", root / "candidates_V2" / "candidates_V2.csv"):
        if path.is_file():
            return path
    return None


def discover_scans(root: Path) -> dict[str, Scan]:
    """Every ``subset{k}/**/{uid}.mhd`` under ``root``, by series UID."""
    scans: dict[str, Scan] = {}
    for folder in sorted(root.glob("subset*")):
        match = re.fullmatch(r"subset(\d+)", folder.name)
        if not match or not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.mhd")):
            if path.name.startswith("._"):  # macOS metadata files inside archives
                continue
            uid = path.stem
            if uid in scans:
                raise InputError(path, f"series {uid} also exists as {scans[uid].path}")
            scans[uid] = Scan(uid, int(match.group(1)), path)
    return scans


def present_subsets(root: Path) -> set[int]:
    return {
        int(m.group(1))
        for folder in root.glob("subset*")
        if folder.is_dir() and (m := re.fullmatch(r"subset(\d+)", folder.name))
    }


def read_candidates(path: Path) -> Any:
    """``candidates_V2.csv`` as a DataFrame indexed by row (0-based, header excluded)."""
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype={"seriesuid": str})
    except (OSError, ValueError, pd.errors.ParserError) as error:
        if isinstance(error, pd.errors.EmptyDataError):
            raise InputError(
                path,
                "is empty; expected a header "
                f"{','.join(CANDIDATE_COLUMNS)} and one row per candidate",
            ) from None
        raise InputError(path, f"cannot read candidates CSV ({error})") from None
    missing = [c for c in CANDIDATE_COLUMNS if c not in table.columns]
    if missing:
        raise InputError(
            path, f"lacks column(s) {', '.join(missing)}; expected {', '.join(CANDIDATE_COLUMNS)}"
        )
    if table.empty:
        raise InputError(path, "lists no candidates")
    table = table.reset_index(drop=True)
    coords = table[["coordX", "coordY", "coordZ"]].apply(pd.to_numeric, errors="coerce")
    bad = coords.isna().any(axis=1) | table["seriesuid"].isna()
    classes = pd.to_numeric(table["class"], errors="coerce")
    bad |= ~classes.isin([0, 1])
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(
            path,
            f"row {row} (line {row + 2}) has a missing or non-numeric "
            f"coordinate, or a class other than 0/1: {table.iloc[row].to_dict()}",
        )
    table[["coordX", "coordY", "coordZ"]] = coords
    table["class"] = classes.astype(np.uint8)
    return table


# --------------------------------------------------------------------------------------
# Split and candidate selection


def assign_scans(
    scans: dict[str, Scan], settings: NccSettings, split_file: Path | None, root: Path
) -> dict[str, str]:
    """Series UID -> split, from the configured subsets or from a pinned split file."""
    by_subset = subset_splits(
        settings.train_subsets, settings.val_subsets, settings.test_subsets, SECTION
    )
    missing = sorted(set(by_subset) - present_subsets(root))
    if missing:
        log.warning(
            "%s: configured subset folder(s) %s missing (partial download?)",
            root,
            ", ".join(f"subset{k}" for k in missing),
        )
    if split_file is None or not split_file.is_file():
        if split_file is not None:
            log.warning(
                "split file %s does not exist; using the configured subsets (copy "
                "%s there to pin this split)",
                split_file,
                SPLIT_CSV,
            )
        return {
            uid: by_subset[scan.subset] for uid, scan in scans.items() if scan.subset in by_subset
        }
    pinned = read_split_csv(split_file, "seriesuid", SPLIT_COLUMNS)
    for uid, row in pinned.items():
        scan = scans.get(uid)
        if scan is None:
            raise InputError(
                split_file, f"series {uid} (subset {row['subset']}) has no scan under {root}"
            )
        if str(scan.subset) != row["subset"].strip():
            raise InputError(
                split_file,
                f"series {uid} is pinned to subset {row['subset']} "
                f"but lies in subset{scan.subset} ({scan.path})",
            )
    log.info("using pinned split %s (%d series)", split_file, len(pinned))
    return {uid: row["split"] for uid, row in pinned.items()}


def check_series_known(
    candidates: Any, scans: dict[str, Scan], root: Path, csv_path: Path
) -> np.ndarray:
    """Mask of candidates that have a scan on disk; unknown series are an error or ignored.

    With all ten LUNA16 subsets on disk a series without a scan is an error (the CSV does
    not belong to this data); with a partial download it is expected, and the candidates
    of missing scans are ignored with one summary line.
    """
    known = candidates["seriesuid"].isin(scans.keys()).to_numpy()
    if known.all():
        return known
    unknown = candidates.loc[~known, "seriesuid"]
    present = present_subsets(root)
    absent = sorted(LUNA16_SUBSETS - present)
    if not absent:
        row = int(unknown.index[0])
        raise InputError(
            csv_path,
            f"series {unknown.iloc[0]} (row {row}) matches no scan in "
            f"any subset folder under {root}, and all of subset0-9 are present",
        )
    log.warning(
        "%s: %d candidates of %d series have no scan under %s (subset folders "
        "present: %s; absent: %s); ignored",
        csv_path,
        len(unknown),
        unknown.nunique(),
        root,
        _ranges(present) or "none",
        _ranges(absent),
    )
    return known


def select_candidates(
    candidates: Any, assignment: dict[str, str], settings: NccSettings, seed: int
) -> dict[str, np.ndarray]:
    """Rows kept per split: every positive plus a seeded sample of the negatives."""
    splits = candidates["seriesuid"].map(assignment)
    labels = candidates["class"].to_numpy()
    row_numbers = candidates.index.to_numpy()
    selected: dict[str, np.ndarray] = {}
    for split in SPLITS:
        in_split = (splits == split).to_numpy()
        positives = row_numbers[in_split & (labels == 1)]
        negatives = row_numbers[in_split & (labels == 0)]
        ratio = settings.test_negative_ratio if split == "test" else settings.negative_ratio
        if ratio is not None and len(negatives) > ratio * len(positives):
            keep = round(ratio * len(positives))
            rng = numpy_rng(seed, "ncc", "negatives", split)
            negatives = np.sort(rng.choice(negatives, size=keep, replace=False))
        if len(positives) == 0:
            raise InputError(
                None,
                f"NCC split {split} has no positive candidate "
                f"({int(in_split.sum())} candidates in its scans); check the "
                f"{split}_subsets setting and the data on disk",
            )
        selected[split] = np.union1d(positives, negatives)
    return selected


# --------------------------------------------------------------------------------------
# Cube extraction


def extract_cubes(
    volume: np.ndarray,
    centres: np.ndarray,
    size: tuple[int, int, int],
    window: tuple[float, float],
) -> np.ndarray:
    """Cubes ``(k, *size)`` in [0, 1] centred on integer voxels ``centres`` ``(k, 3)``.

    Voxel ``centre`` lands at index ``size // 2``; the part outside the scan is air.
    """
    cubes = np.full((len(centres), *size), AIR_HU, dtype=np.float32)
    half = np.asarray(size) // 2
    shape = np.asarray(volume.shape)
    for k, centre in enumerate(np.asarray(centres, dtype=np.int64)):
        start = centre - half
        low = np.maximum(start, 0)
        high = np.minimum(start + size, shape)
        if np.any(high <= low):
            continue
        src = tuple(slice(a, b) for a, b in zip(low, high, strict=True))
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(low, high, start, strict=True))
        cubes[k][dst] = volume[src]
    return ct_window(cubes, *window)


class _SplitArrays:
    """Cubes of one split, written in order into a memory-mapped ``.npy`` of planned size."""

    def __init__(self, path: Path, planned: int, size: tuple[int, int, int]) -> None:
        self.path = path
        self.cubes = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float16, shape=(planned, *size)
        )
        self.rows: list[np.ndarray] = []
        self.voxels: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.count = 0

    def append(
        self, cubes: np.ndarray, rows: np.ndarray, voxels: np.ndarray, labels: np.ndarray
    ) -> None:
        self.cubes[self.count : self.count + len(cubes)] = cubes
        self.count += len(cubes)
        self.rows.append(rows)
        self.voxels.append(voxels)
        self.labels.append(labels)

    def finish(self) -> dict[str, np.ndarray]:
        """Flush; shrink the file when candidates were skipped; return the small arrays."""
        self.cubes.flush()
        planned = len(self.cubes)
        del self.cubes
        if self.count < planned:
            truncate_npy(self.path, self.count)
        return {
            "labels": np.concatenate([*self.labels, np.zeros(0, np.uint8)]).astype(np.uint8),
            "candidate": np.concatenate([*self.rows, np.zeros(0, np.int64)]).astype(np.int64),
            "voxel": np.concatenate([*self.voxels, np.zeros((0, 3), np.int64)]).astype(np.int64),
        }


# --------------------------------------------------------------------------------------
# The stage


def prepare_ncc(
    data_dir: Path,
    output_dir: Path,
    settings: NccSettings,
    seed: int,
    split_file: Path | None = None,
) -> dict[str, Any]:
    """Cut the candidate cubes of every split; write arrays, CSVs and ``prepare.json``."""
    from genesis.provenance import provenance_record

    root, csv_path = find_luna16(data_dir)
    candidates = read_candidates(csv_path)
    scans = discover_scans(root)
    if not scans:
        raise InputError(root, "holds no subset*/ folder with .mhd scans")
    known = check_series_known(candidates, scans, root, csv_path)
    assignment = assign_scans(scans, settings, split_file, root)
    candidates = candidates[known]
    selected = select_candidates(candidates, assignment, settings, seed)
    write_split_csv(
        output_dir / SPLIT_CSV,
        SPLIT_COLUMNS,
        [
            {"seriesuid": uid, "subset": scans[uid].subset, "split": split}
            for uid, split in sorted(
                assignment.items(),
                key=lambda item: (SPLITS.index(item[1]), scans[item[0]].subset, item[0]),
            )
        ],
    )
    extraction = _extract(candidates, selected, assignment, scans, settings, output_dir)
    arrays = extraction.arrays
    for split in SPLITS:
        if not (arrays[split]["labels"] == 1).any():
            raise InputError(
                output_dir, f"NCC split {split} kept no positive cube (all skipped; see the log)"
            )
        with atomic_path(ncc_arrays_path(output_dir, split)) as tmp:
            np.savez(tmp, **arrays[split])
    _write_candidates_csv(output_dir / CANDIDATES_CSV, candidates, selected, assignment, extraction)
    skipped = [
        {"row": r, "seriesuid": candidates.at[r, "seriesuid"], "reason": s[1]}
        for r, s in sorted(extraction.status.items())
        if s[0] == "skipped"
    ]
    summary = {
        "task": "ncc",
        "layout": "luna16",
        "data": str(root),
        "candidates_csv": str(csv_path),
        "split_file": str(split_file) if split_file and split_file.is_file() else None,
        "seed": seed,
        "settings": to_mapping(settings),
        "stored_size": {split: list(settings.stored_size(split)) for split in SPLITS},
        "counts": {split: _counts(arrays[split], assignment, split) for split in SPLITS},
        "ignored_candidates": int((~known).sum()),
        "skipped_candidates": skipped,
        "skipped_scans": extraction.skipped_scans,
        "n_skipped": len(skipped),
        "provenance": provenance_record(settings=to_mapping(settings), seeds={"prepare": seed}),
    }
    write_json(output_dir / PREPARE_JSON, summary)
    return summary


@dataclass
class _Extraction:
    """What the scan loop produced: per-split small arrays and the fate of each candidate."""

    arrays: dict[str, dict[str, np.ndarray]]
    #: row -> (ok | skipped, reason, centre voxel or None)
    status: dict[int, tuple[str, str, np.ndarray | None]]
    skipped_scans: list[dict[str, str]]


def _extract(
    candidates: Any,
    selected: dict[str, np.ndarray],
    assignment: dict[str, str],
    scans: dict[str, Scan],
    settings: NccSettings,
    output_dir: Path,
) -> _Extraction:
    """Read each scan once and append its candidates' cubes to its split's ``.npy``."""
    from genesis.io import load_volume

    all_rows = np.sort(np.concatenate([selected[split] for split in SPLITS]))
    rows_by_scan = {
        uid: np.asarray(group, dtype=np.int64)
        for uid, group in candidates.loc[all_rows].groupby("seriesuid").groups.items()
    }
    order = sorted(
        rows_by_scan, key=lambda uid: (SPLITS.index(assignment[uid]), scans[uid].subset, uid)
    )
    result = _Extraction({}, {}, [])
    with contextlib.ExitStack() as stack:
        writers = {
            split: _SplitArrays(
                stack.enter_context(atomic_path(ncc_cubes_path(output_dir, split))),
                len(selected[split]),
                settings.stored_size(split),
            )
            for split in SPLITS
        }
        for position, uid in enumerate(order, start=1):
            split, rows = assignment[uid], rows_by_scan[uid]
            try:
                volume = load_volume(scans[uid].path, ndim=3)
            except InputError as error:
                if not settings.skip_bad:
                    raise
                log.warning("skipping scan %s and its %d candidates: %s", uid, len(rows), error)
                result.skipped_scans.append({"seriesuid": uid, "reason": str(error)})
                result.status.update(
                    {int(r): ("skipped", f"scan unreadable: {error}", None) for r in rows}
                )
                continue
            kept = _cut_scan(
                volume,
                uid,
                rows,
                candidates,
                settings.stored_size(split),
                settings.hu_window,
                writers[split],
                result.status,
            )
            log.info(
                "ncc: %s (%s, subset%d) %d/%d: %d cubes",
                uid,
                split,
                scans[uid].subset,
                position,
                len(order),
                kept,
            )
        result.arrays = {split: writers[split].finish() for split in SPLITS}
    return result


def _cut_scan(
    volume: Any,
    uid: str,
    rows: np.ndarray,
    candidates: Any,
    size: tuple[int, int, int],
    window: tuple[float, float],
    writer: _SplitArrays,
    status: dict[int, tuple[str, str, np.ndarray | None]],
) -> int:
    """Cubes of one scan's candidates; a centre outside the scan is a logged skip."""
    from genesis.io import world_to_voxel

    world = candidates.loc[rows, ["coordX", "coordY", "coordZ"]].to_numpy(float)
    voxels = np.rint(world_to_voxel(world, volume)).astype(np.int64)
    inside = np.all((voxels >= 0) & (voxels < volume.data.shape), axis=1)
    for row, voxel in zip(rows[~inside], voxels[~inside], strict=True):
        reason = (
            f"centre voxel {tuple(int(v) for v in voxel)} outside the scan "
            f"(shape {volume.data.shape})"
        )
        log.warning("skipping candidate row %d of %s: %s", row, uid, reason)
        status[int(row)] = ("skipped", reason, voxel)
    rows, voxels = rows[inside], voxels[inside]
    labels = candidates.loc[rows, "class"].to_numpy(np.uint8)
    for start in range(0, len(rows), _CHUNK):
        chunk = slice(start, start + _CHUNK)
        cubes = extract_cubes(volume.data, voxels[chunk], size, window)
        writer.append(cubes.astype(np.float16), rows[chunk], voxels[chunk], labels[chunk])
    status.update({int(r): ("ok", "", v) for r, v in zip(rows, voxels, strict=True)})
    return len(rows)


def _counts(
    arrays: dict[str, np.ndarray], assignment: dict[str, str], split: str
) -> dict[str, int]:
    labels = arrays["labels"]
    return {
        "scans": sum(s == split for s in assignment.values()),
        "cubes": len(labels),
        "positives": int((labels == 1).sum()),
        "negatives": int((labels == 0).sum()),
    }


def _write_candidates_csv(
    path: Path,
    candidates: Any,
    selected: dict[str, np.ndarray],
    assignment: dict[str, str],
    extraction: _Extraction,
) -> None:
    """One row per selected candidate: position, fate, and index into its split arrays."""
    index = {
        int(r): i for split in SPLITS for i, r in enumerate(extraction.arrays[split]["candidate"])
    }
    columns = [
        "row",
        "seriesuid",
        "coordX",
        "coordY",
        "coordZ",
        "voxel_x",
        "voxel_y",
        "voxel_z",
        "class",
        "split",
        "index",
        "status",
        "reason",
    ]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    rows = np.sort(np.concatenate([selected[split] for split in SPLITS]))
    table = candidates.loc[rows]
    for row, uid, x, y, z, label in zip(
        rows,
        table["seriesuid"],
        table["coordX"],
        table["coordY"],
        table["coordZ"],
        table["class"],
        strict=True,
    ):
        state, reason, voxel = extraction.status.get(int(row), ("skipped", "not processed", None))
        voxel_text = ["", "", ""] if voxel is None else [int(v) for v in voxel]
        writer.writerow(
            [
                int(row),
                uid,
                x,
                y,
                z,
                *voxel_text,
                int(label),
                assignment[uid],
                index.get(int(row), -1),
                state,
                reason,
            ]
        )
    write_text(path, buffer.getvalue())


def _ranges(values: Any) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    values = sorted(values)
    parts: list[str] = []
    for value in values:
        if parts and value == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{value}"
        else:
            parts.append(str(value))
    return ", ".join(parts)
