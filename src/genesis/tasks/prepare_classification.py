"""A user's own classification task from a CSV: one labelled cube per row, NCC's layout.

Two CSV forms, told apart by the header (relative paths are relative to the CSV's folder):

* ``path,x,y,z,label[,split]``: a point in world millimetres (LPS, as LUNA16's candidates)
  per row; the cube is cut around the point's nearest voxel exactly as NCC cuts its
  candidates (``genesis.tasks.prepare_ncc.extract_cubes``: through the direction matrix,
  the point's voxel at index ``size // 2``, air or zero padding across the scan border).
* ``path,label[,split]``: one label per volume; the cube is the whole volume resampled
  linearly (``genesis.tasks.prepared.resize_volume``) to the stored size.

Intensities follow ``modality``: CT through the HU window, MRI scaled per volume by its
percentiles (or min/max), ``auto`` guessed per scan (``guess_modality``) and recorded.

Labels become class indices ``0..K-1`` in the sorted order of the label values (numeric
order when every value is an integer or a number, text order otherwise), so 0/1 labels
stay 0/1 and a binary task trains with today's BCE head.

The split unit is the scan: a pinned split file (``path,split``) wins, then a ``split``
column, then a seeded draw in ``split_proportions``. The output is NCC's layout exactly
(``genesis.tasks.prepared``: ``{split}_cubes.npy`` float16 with the ``max_shift`` margin on
training cubes, ``{split}.npz``, ``candidates.csv``, ``split.csv``, ``prepare.json``), plus
``kind``, ``classes``, ``class_names`` and ``n_classes`` in ``prepare.json``. Scans are
read one at a time and cubes go straight into memory-mapped ``.npy`` files.

Bad input is one ``InputError`` naming the file, or with ``skip_bad`` a skipped row or scan
recorded with its reason (``prepare.json`` ``skipped``, ``candidates.csv`` ``status``).
A training split with fewer than two classes is an error either way.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from genesis.atomic import atomic_path, write_json, write_text
from genesis.cubes.intensity import ct_window, guess_modality, mri_window
from genesis.errors import ConfigError, InputError
from genesis.seeding import numpy_rng
from genesis.settings import check_bounds, check_increasing, from_mapping, setting, to_mapping
from genesis.tasks.prepare_ncc import extract_cubes
from genesis.tasks.prepared import (
    CANDIDATES_CSV,
    PREPARE_JSON,
    SPLIT_CSV,
    ncc_arrays_path,
    ncc_cubes_path,
    resize_volume,
    truncate_npy,
)
from genesis.tasks.splits import (
    SPLITS,
    check_proportions,
    proportion_splits,
    read_split_csv,
    write_split_csv,
)

log = logging.getLogger(__name__)

#: Placeholder section in settings errors; ``classification_settings`` names the real one.
SECTION = "tasks.<task>.prepare"
POINT_COLUMNS = ("path", "x", "y", "z", "label")
VOLUME_COLUMNS = ("path", "label")
SPLIT_COLUMNS = ("path", "split")
CANDIDATE_COLUMNS = (
    "row", "line", "path", "x", "y", "z", "voxel_x", "voxel_y", "voxel_z", "label", "class",
    "split", "modality", "index", "status", "reason",
)  # fmt: skip
#: Labels are stored as uint8 class indices.
MAX_CLASSES = 256
_CHUNK = 64  # point cubes cut and windowed at once, as in NCC
_FORMS_HINT = (
    "expected a header path,x,y,z,label[,split] (a point per row) or path,label[,split] "
    "(one label per volume)"
)

Form = Literal["point", "volume"]


@dataclass(frozen=True)
class ClassificationSettings:
    """Preparation of a user classification task (section ``tasks.<task>.prepare``)."""

    cube_size: tuple[int, int, int] = setting(
        (64, 64, 32),
        "Model input (x, y, z) in voxels; fine-tuning reads it from prepare.json. The workflow "
        "fills it in from the top-level cube_size.",
        bounds="[1, inf)",
    )
    max_shift: tuple[int, int, int] = setting(
        (4, 4, 2),
        "Largest random training shift per axis; training cubes are stored this much larger on "
        "each side.",
        bounds="[0, inf)",
    )
    modality: Literal["ct", "mri", "auto"] = setting(
        "auto",
        "See `tasks.<name>.modality`.",
    )
    hu_window: tuple[float, float] = setting(
        (-1000.0, 1000.0),
        "CT window in HU; cubes crossing the scan border are padded with air.",
    )
    mri_window: Literal["percentile", "minmax"] = setting(
        "percentile",
        "MRI scaling per volume.",
    )
    mri_percentiles: tuple[float, float] = setting(
        (0.5, 99.5),
        "Percentiles for `mri_window: percentile`.",
        bounds="[0, 100]",
    )
    auto_ct_air_fraction: float = setting(
        0.05,
        "`auto`: a scan with at least this share of voxels at or below -500 is CT.",
        bounds="(0, 1]",
    )
    split_proportions: tuple[float, float, float] = setting(
        (0.7, 0.15, 0.15),
        "Seeded train/val/test shares of the scans (the scan is the unit) when no split column or "
        "file assigns them.",
        bounds="[0, 1]",
    )
    class_names: tuple[str, ...] | None = setting(
        None,
        "Names of the classes in the sorted order of the label values; null: the values.",
    )
    skip_bad: bool = setting(
        True,
        "Skip (and record) bad rows and unreadable scans instead of stopping.",
    )

    def __post_init__(self) -> None:
        check_bounds(self, SECTION)
        check_increasing(self, SECTION, "hu_window", "mri_percentiles")
        check_proportions(self.split_proportions, f"{SECTION}.split_proportions")
        if self.class_names is not None:
            names = [str(n).strip() for n in self.class_names]
            if not names or any(not n for n in names) or len(set(names)) != len(names):
                raise ConfigError(
                    f"{SECTION}.class_names must be null or a list of distinct, non-empty "
                    f"names, got {list(self.class_names)!r}"
                )

    def stored_size(self, split: str) -> tuple[int, int, int]:
        """Training cubes carry the shift margin; validation and test cubes do not."""
        if split != "train":
            return tuple(int(s) for s in self.cube_size)  # type: ignore[return-value]
        return tuple(  # type: ignore[return-value]
            int(c) + 2 * int(m) for c, m in zip(self.cube_size, self.max_shift, strict=True)
        )


def classification_settings(
    mapping: Mapping[str, Any] | None, section: str = SECTION
) -> ClassificationSettings:
    """``from_mapping`` for this section, with errors naming ``section`` (the task's)."""
    try:
        return from_mapping(ClassificationSettings, mapping, section)
    except ConfigError as error:  # __post_init__ does not know the task's section name
        raise ConfigError(str(error).replace(SECTION, section)) from None


# --------------------------------------------------------------------------------------
# Reading the CSV


@dataclass(slots=True)
class _Row:
    """One data row and what became of it."""

    row: int  # 0-based, header excluded (the npz ``candidate``)
    line: int  # line number as an editor shows it
    path: str  # normalised as written; the key of the scan
    label: str
    coords: tuple[str, str, str]  # x, y, z as written (empty in the whole-volume form)
    world: tuple[float, float, float] | None = None
    split_column: str | None = None
    split: str = ""
    status: str = "pending"  # pending -> ok | skipped | unused
    reason: str = ""
    voxel: tuple[int, int, int] | None = None
    modality: str = ""
    index: int = -1


@dataclass
class _Table:
    path: Path
    form: Form
    has_split: bool
    rows: list[_Row]


class _Problems:
    """Raise a row or scan problem, or with ``skip_bad`` record it as a skip."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.scans: list[dict[str, str]] = []

    def row(self, file: Path, row: _Row, reason: str) -> None:
        if not self.skip_bad:
            raise InputError(file, f"line {row.line}: {reason}")
        log.warning("%s: skipping line %d: %s", file, row.line, reason)
        row.status, row.reason = "skipped", reason

    def scan(self, path: str, rows: list[_Row], reason: str, error: InputError) -> None:
        if not self.skip_bad:
            raise error
        log.warning("skipping scan %s and its %d row(s): %s", path, len(rows), error)
        self.scans.append({"path": path, "reason": str(error)})
        for row in rows:
            row.status, row.reason = "skipped", reason


def read_table(path: Path, problems: _Problems) -> _Table:
    """The data CSV: its form and every row, bad rows raised or marked skipped."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read the CSV ({error})") from None
    try:
        reader = csv.reader(io.StringIO(text))
        header = next(reader, None)
        if header is None:
            raise InputError(path, f"is empty; {_FORMS_HINT}")
        columns = [c.strip().lower() for c in header]
        records = [(reader.line_num, values) for values in reader if any(v.strip() for v in values)]
    except csv.Error as error:
        raise InputError(path, f"cannot read the CSV ({error})") from None
    duplicated = sorted({c for c in columns if columns.count(c) > 1 and c})
    if duplicated:
        raise InputError(path, f"repeats column(s) {', '.join(duplicated)}")
    coords = [c for c in ("x", "y", "z") if c in columns]
    form: Form = "point" if coords else "volume"
    required = POINT_COLUMNS if form == "point" else VOLUME_COLUMNS
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(path, f"lacks column(s) {', '.join(missing)}; {_FORMS_HINT}")
    if not records:
        raise InputError(path, "lists no rows")
    has_split = "split" in columns
    rows = []
    for number, (line, values) in enumerate(records):
        raw = {c: v.strip() for c, v in zip(columns, values, strict=False) if c}
        label = _canonical_label(raw.get("label", ""))
        coords = (raw.get("x", ""), raw.get("y", ""), raw.get("z", ""))
        row = _Row(number, line, _normalise(raw.get("path", "")), label, coords)
        rows.append(row)
        reason = _row_problem(
            row, raw.get("split", ""), len(values) - len(columns), form, has_split
        )
        if reason:
            problems.row(path, row, reason)
    return _Table(path, form, has_split, rows)


def _row_problem(row: _Row, split_text: str, extra_fields: int, form: Form, has_split: bool) -> str:
    """Why a row cannot be used ("" if it can); fills in its coordinates and split."""
    if extra_fields > 0:
        return f"{extra_fields} field(s) more than the header has columns"
    if not row.path:
        return "empty path"
    if form == "point":
        world = []
        for axis, text in zip(("x", "y", "z"), row.coords, strict=True):
            try:
                value = float(text)
            except ValueError:
                return f"non-numeric coordinate {axis}={text!r}"
            if not math.isfinite(value):
                return f"non-finite coordinate {axis}={text!r}"
            world.append(value)
        row.world = (world[0], world[1], world[2])
    if not row.label:
        return "empty label"
    if has_split:
        split = split_text.lower()
        if split not in SPLITS:
            return f"split {split_text!r} must be one of {', '.join(SPLITS)}"
        row.split_column = split
    return ""


def _normalise(path: str) -> str:
    """The scan key: the path as written, without ``./`` or doubled separators."""
    return os.path.normpath(path) if path else ""


def _group(table: _Table, problems: _Problems) -> dict[str, list[_Row]]:
    """Usable rows by scan, in order of first appearance; one split and (whole-volume
    form) one row per scan."""
    scans: dict[str, list[_Row]] = {}
    for row in table.rows:
        if row.status == "pending":
            scans.setdefault(row.path, []).append(row)
    for path, rows in list(scans.items()):
        if table.form == "volume" and len(rows) > 1:
            for row in rows[1:]:
                problems.row(
                    table.path,
                    row,
                    f"{path} is listed again (first on line "
                    f"{rows[0].line}); the whole-volume form takes one row per scan",
                )
            scans[path] = rows = rows[:1]
        splits = sorted({r.split_column for r in rows if r.split_column}, key=SPLITS.index)
        if len(splits) > 1:
            lines = ", ".join(str(r.line) for r in rows)
            reason = (
                f"scan {path} is given splits {', '.join(splits)} (lines {lines}); a "
                "scan belongs to one split"
            )
            problems.scan(path, rows, reason, InputError(table.path, reason))
            del scans[path]
    return scans


# --------------------------------------------------------------------------------------
# Split and classes


def assign_scans(
    table: _Table,
    scans: dict[str, list[_Row]],
    settings: ClassificationSettings,
    seed: int,
    split_file: Path | None,
    section: str,
) -> tuple[dict[str, str], str]:
    """Scan path -> split, and where the split came from."""
    if split_file is not None and split_file.is_file():
        pinned = {
            _normalise(key): row["split"]
            for key, row in read_split_csv(split_file, "path", SPLIT_COLUMNS).items()
        }
        known = {row.path for row in table.rows if row.path}
        absent = [path for path in pinned if path not in known]
        if absent:
            more = f" ({len(absent)} in all)" if len(absent) > 5 else ""
            raise InputError(
                split_file, f"pinned scan(s) {', '.join(absent[:5])}{more} are not in {table.path}"
            )
        unpinned = [path for path in scans if path not in pinned]
        for path in unpinned:
            for row in scans[path]:
                row.status, row.reason = "unused", "scan not in the pinned split file"
        log.info(
            "using pinned split %s (%d scans; %d scans of the CSV not pinned, left out)",
            split_file,
            len(pinned),
            len(unpinned),
        )
        return {path: pinned[path] for path in scans if path in pinned}, "split_file"
    if split_file is not None:
        log.warning(
            "split file %s does not exist; computing the split (copy %s there to pin it)",
            split_file,
            SPLIT_CSV,
        )
    if table.has_split:
        return {path: rows[0].split_column or "" for path, rows in scans.items()}, "column"
    rng = numpy_rng(seed, "classification", "split")
    assignment = proportion_splits(
        sorted(scans), settings.split_proportions, rng, f"{section}.split_proportions"
    )
    return assignment, "proportions"


def sort_labels(values: set[str]) -> list[str]:
    """Label values in class-index order: numeric when all are numbers, else as text."""
    try:
        numbers = {value: float(value) for value in values}
    except ValueError:
        return sorted(values)
    if not all(math.isfinite(n) for n in numbers.values()):
        return sorted(values)
    return sorted(values, key=lambda value: (numbers[value], value))


def _canonical_label(label: str) -> str:
    """Integers without leading zeros or signs ("01", "+1" -> "1"); anything else as is."""
    return str(int(label)) if re.fullmatch(r"[+-]?\d+", label) else label


def _check_training_classes(
    classes: list[str],
    train_rows: list[_Row],
    other_rows: list[_Row],
    file: Path,
    skip_bad: bool,
    skipped_before: int,
) -> list[str]:
    """The classes with training examples; an empty class is an error unless skip_bad,
    and fewer than two training classes is an error in any case."""
    present = {row.label for row in train_rows}
    empty = [c for c in classes if c not in present]
    if empty and not skip_bad:
        counts = {c: sum(r.label == c for r in other_rows) for c in empty}
        listed = ", ".join(f"{c!r} ({n} row(s) in val/test)" for c, n in counts.items())
        raise InputError(
            file,
            f"empty class: label(s) {listed} have no examples in the "
            "training split; add training rows or pin another split",
        )
    kept = [c for c in classes if c in present]
    if len(kept) < 2:
        after = f" after skipping {skipped_before} row(s)" if skipped_before else ""
        raise InputError(
            file,
            f"the training split has {len(kept)} class(es) "
            f"({', '.join(map(repr, kept)) or 'none'}){after}; a classifier needs "
            "examples of at least two",
        )
    return kept


# --------------------------------------------------------------------------------------
# Cubes


class _CubeWriter:
    """Cubes of one split, written in order into a memory-mapped ``.npy`` of planned size
    (like prepare_ncc's ``_SplitArrays``, but keeping each row's record)."""

    def __init__(self, path: Path, planned: int, size: tuple[int, int, int]) -> None:
        self.path = path
        self.cubes = np.lib.format.open_memmap(
            path, mode="w+", dtype=np.float16, shape=(planned, *size)
        )
        self.rows: list[_Row] = []

    def append(self, cubes: np.ndarray, rows: list[_Row]) -> None:
        start = len(self.rows)
        self.cubes[start : start + len(rows)] = cubes
        for offset, row in enumerate(rows):
            row.index = start + offset
        self.rows += rows

    def finish(self) -> None:
        """Flush; shrink the file when rows were skipped."""
        self.cubes.flush()
        planned = len(self.cubes)
        del self.cubes
        if len(self.rows) < planned:
            truncate_npy(self.path, len(self.rows))


@dataclass
class _ScanRecord:
    path: str
    split: str
    modality: str = ""
    rows: int = 0
    cubes: int = 0
    status: str = "ok"
    reason: str = ""


def _scan_file(csv_path: Path, path: str) -> Path:
    scan = Path(path).expanduser()
    return scan if scan.is_absolute() else csv_path.parent / scan


def _cut_scan(
    table: _Table,
    path: str,
    rows: list[_Row],
    split: str,
    settings: ClassificationSettings,
    writer: _CubeWriter,
    problems: _Problems,
) -> _ScanRecord:
    """Read one scan, settle its modality, and append the cubes of its rows."""
    from genesis.io import load_volume, world_to_voxel

    record = _ScanRecord(path, split, rows=len(rows))
    try:
        volume = load_volume(_scan_file(table.path, path), ndim=3)
    except InputError as error:
        problems.scan(path, rows, f"scan unreadable: {error}", error)
        record.status, record.reason = "skipped", f"scan unreadable: {error}"
        return record
    data = volume.data if volume.data.flags.writeable else volume.data.copy()
    shape = data.shape
    modality = settings.modality
    if modality == "auto":
        modality = guess_modality(data, volume.path or Path(path), settings.auto_ct_air_fraction)
        log.info("%s: modality %s (auto)", path, modality)
    record.modality = modality
    for row in rows:
        row.modality = modality
    if table.form == "point":
        world = np.asarray([row.world for row in rows], dtype=float)
        voxels = np.rint(world_to_voxel(world, volume)).astype(np.int64)
        inside = np.all((voxels >= 0) & (voxels < shape), axis=1)
        for row, voxel, ok in zip(rows, voxels, inside, strict=True):
            row.voxel = (int(voxel[0]), int(voxel[1]), int(voxel[2]))
            if not ok:
                problems.row(
                    table.path,
                    row,
                    f"point ({', '.join(f'{c:g}' for c in row.world)})"
                    f" mm lies outside {path}: voxel {row.voxel}, scan shape "
                    f"{tuple(shape)}",
                )
        rows = [row for row, ok in zip(rows, inside, strict=True) if ok]
    else:
        centre = (shape[0] // 2, shape[1] // 2, shape[2] // 2)
        for row in rows:
            row.voxel = centre  # the whole volume, centred
    # CT keeps HU for the padding (air, -1000) and is windowed per cube; MRI is scaled
    # once per volume, then a (0, 1) window is the identity and pads with 0.
    window = settings.hu_window
    if modality == "mri":
        data = mri_window(data, settings.mri_window, settings.mri_percentiles)
        window = (0.0, 1.0)
    size = settings.stored_size(split)
    if table.form == "point":
        centres = np.asarray([row.voxel for row in rows], dtype=np.int64).reshape(-1, 3)
        for start in range(0, len(rows), _CHUNK):
            cubes = extract_cubes(data, centres[start : start + _CHUNK], size, window)
            writer.append(cubes.astype(np.float16), rows[start : start + _CHUNK])
    elif rows:
        if modality == "ct":
            data = ct_window(data, *window)
        cube = resize_volume(data, size, "linear")
        np.clip(cube, 0.0, 1.0, out=cube)
        writer.append(cube[None].astype(np.float16), rows)
    for row in rows:
        row.status = "ok"
    record.cubes = len(rows)
    return record


# --------------------------------------------------------------------------------------
# The stage


def prepare_classification(
    data: Path,
    output_dir: Path,
    settings: ClassificationSettings,
    seed: int,
    split_file: Path | None = None,
    *,
    section: str = SECTION,
) -> dict[str, Any]:
    """Cut one cube per CSV row; write NCC's arrays, the CSVs and ``prepare.json``.

    ``data`` is the CSV; ``section`` names the settings in messages
    (``tasks.<name>.prepare``). Returns the summary written to ``prepare.json``.
    """
    from genesis.provenance import provenance_record

    data = Path(data)
    problems = _Problems(settings.skip_bad)
    table = read_table(data, problems)
    scans = _group(table, problems)
    assignment, split_source = assign_scans(table, scans, settings, seed, split_file, section)
    split_owner = split_file if split_source == "split_file" and split_file else data
    by_split = {
        split: [row for path, s in assignment.items() if s == split for row in scans[path]]
        for split in SPLITS
    }
    for split, rows in by_split.items():
        for row in rows:
            row.split = split
        if not rows:
            raise InputError(
                split_owner,
                f"split {split} has no rows ({_split_note(split_source)}"
                f"; {sum(len(r) for r in by_split.values())} usable rows in all)",
            )
    planned = sort_labels({row.label for rows in by_split.values() for row in rows})
    if len(planned) > MAX_CLASSES:
        raise InputError(
            data, f"{len(planned)} label values; at most {MAX_CLASSES} classes are supported"
        )
    others = by_split["val"] + by_split["test"]
    _check_training_classes(
        planned, by_split["train"], others, data, settings.skip_bad, _n_skipped(table)
    )
    if not settings.skip_bad:  # the classes are final: fail before reading any scan
        _class_names(settings, planned, section)
    write_split_csv(
        output_dir / SPLIT_CSV,
        SPLIT_COLUMNS,
        [
            {"path": path, "split": split}
            for path, split in sorted(
                assignment.items(), key=lambda item: (SPLITS.index(item[1]), item[0])
            )
        ],
    )

    records: list[_ScanRecord] = []
    with contextlib.ExitStack() as stack:
        writers = {
            split: _CubeWriter(
                stack.enter_context(atomic_path(ncc_cubes_path(output_dir, split))),
                len(by_split[split]),
                settings.stored_size(split),
            )
            for split in SPLITS
        }
        order = sorted(assignment, key=lambda path: (SPLITS.index(assignment[path]), path))
        train = [path for path in order if assignment[path] == "train"]
        rest = [path for path in order if assignment[path] != "train"]
        for path in train:
            records.append(
                _cut_scan(table, path, scans[path], "train", settings, writers["train"], problems)
            )
            _log_progress(records[-1], len(records), len(order))
        classes = _check_training_classes(
            planned,
            [r for r in by_split["train"] if r.status == "ok"],
            others,
            data,
            settings.skip_bad,
            _n_skipped(table),
        )
        _class_names(settings, classes, section)
        for row in others:
            if row.status == "pending" and row.label not in classes:
                row.status = "skipped"
                row.reason = (
                    f"empty class: label {row.label!r} has no examples in the training split"
                )
                log.warning("%s: skipping line %d: %s", data, row.line, row.reason)
        for path in rest:
            rows = [row for row in scans[path] if row.status == "pending"]
            if rows:
                records.append(
                    _cut_scan(
                        table,
                        path,
                        rows,
                        assignment[path],
                        settings,
                        writers[assignment[path]],
                        problems,
                    )
                )
            else:
                records.append(
                    _ScanRecord(
                        path,
                        assignment[path],
                        rows=len(scans[path]),
                        status="skipped",
                        reason="no usable row",
                    )
                )
            _log_progress(records[-1], len(records), len(order))
        for split in SPLITS:
            if not writers[split].rows:
                raise InputError(
                    split_owner,
                    f"split {split} kept no cube: all "
                    f"{len(by_split[split])} of its rows were skipped (see the log)",
                )
        for writer in writers.values():
            writer.finish()

    class_index = {label: k for k, label in enumerate(classes)}
    for split in SPLITS:
        kept = writers[split].rows
        arrays = {
            "labels": np.asarray([class_index[r.label] for r in kept], dtype=np.uint8),
            "candidate": np.asarray([r.row for r in kept], dtype=np.int64),
            "voxel": np.asarray([r.voxel for r in kept], dtype=np.int64).reshape(-1, 3),
        }
        with atomic_path(ncc_arrays_path(output_dir, split)) as tmp:
            np.savez(tmp, **arrays)
    _write_candidates_csv(output_dir / CANDIDATES_CSV, table, class_index)

    names = _class_names(settings, classes, section)
    skipped = [
        {"row": r.row, "line": r.line, "path": r.path, "reason": r.reason}
        for r in table.rows
        if r.status == "skipped"
    ]
    summary = {
        "task": _task_name(section),
        "kind": "classification",
        "form": table.form,
        "data": str(data),
        "split_file": str(split_file) if split_source == "split_file" else None,
        "split_source": split_source,
        "seed": seed,
        "settings": to_mapping(settings),
        "stored_size": {split: list(settings.stored_size(split)) for split in SPLITS},
        "classes": classes,
        "class_names": names,
        "n_classes": len(classes),
        "counts": {
            split: _counts(writers[split].rows, records, split, classes) for split in SPLITS
        },
        "scans": [dataclasses.asdict(record) for record in records],
        "skipped": skipped,
        "skipped_scans": problems.scans,
        "n_skipped": len(skipped),
        "unused_rows": sum(r.status == "unused" for r in table.rows),
        "provenance": provenance_record(settings=to_mapping(settings), seeds={"prepare": seed}),
    }
    write_json(output_dir / PREPARE_JSON, summary)
    return summary


def _class_names(settings: ClassificationSettings, classes: list[str], section: str) -> list[str]:
    if settings.class_names is None:
        return list(classes)
    names = [str(name).strip() for name in settings.class_names]
    if len(names) != len(classes):
        raise ConfigError(
            f"{section}.class_names lists {len(names)} names for the "
            f"{len(classes)} classes {classes} (sorted label values)"
        )
    return names


def _split_note(source: str) -> str:
    return {
        "split_file": "the pinned split file",
        "column": "the CSV's split column",
        "proportions": "seeded draw in split_proportions",
    }[source]


def _n_skipped(table: _Table) -> int:
    return sum(row.status == "skipped" for row in table.rows)


def _task_name(section: str) -> str | None:
    match = re.fullmatch(r"tasks\.([a-z][a-z0-9_]*)\.prepare", section)
    return match.group(1) if match else None


def _log_progress(record: _ScanRecord, position: int, total: int) -> None:
    log.info(
        "classification: %s (%s, %s) %d/%d: %d cubes",
        record.path,
        record.split,
        record.modality or record.status,
        position,
        total,
        record.cubes,
    )


def _counts(
    kept: list[_Row], records: list[_ScanRecord], split: str, classes: list[str]
) -> dict[str, Any]:
    per_class = {label: 0 for label in classes}
    for row in kept:
        per_class[row.label] += 1
    return {
        "scans": sum(r.split == split and r.cubes > 0 for r in records),
        "cubes": len(kept),
        "per_class": per_class,
    }


def _write_candidates_csv(path: Path, table: _Table, class_index: dict[str, int]) -> None:
    """Every row of the data CSV: position, class, split, modality, fate, array index."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CANDIDATE_COLUMNS)
    for row in table.rows:
        coords = list(row.coords)
        voxel = ["", "", ""] if row.voxel is None else list(row.voxel)
        status = "skipped" if row.status == "pending" else row.status
        reason = "not processed" if row.status == "pending" else row.reason
        index = row.index if status == "ok" else -1
        writer.writerow(
            [
                row.row,
                row.line,
                row.path,
                *coords,
                *voxel,
                row.label,
                class_index.get(row.label, ""),
                row.split,
                row.modality,
                index,
                status,
                reason,
            ]
        )
    write_text(path, buffer.getvalue())
