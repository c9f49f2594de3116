"""Find the scans to cut cubes from: folders, CSV lists or single volumes.

A folder is searched recursively, in sorted order so that the result never depends on
the file system: every ``.mhd``, ``.mha``, ``.nii`` and ``.nii.gz`` file is a scan, and
every sub-folder holding DICOM files (``.dcm``/``.ima`` or the ``DICM`` preamble) is one
DICOM series. Formats can be mixed. Hidden files, macOS ``._*`` files and MSD label
folders (``labelsTr``, ``labelsTs``) are ignored, so pointing at an MSD task folder does
not turn segmentations into pretraining scans.

A CSV list has a ``path`` column (relative paths are relative to the CSV's folder) and
optional ``modality`` (ct, mri or auto) and ``split`` columns. When a ``split`` column is
present, only the rows whose split equals the requested one are used.

Each scan gets a ``source`` label, independent of where the data lives on this machine:
``<folder name>/<path inside it>`` for folders, the path as written in a CSV. It names
the scan in the manifest and seeds its random stream.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from genesis.errors import InputError

log = logging.getLogger(__name__)

VOLUME_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".ima")
#: Files that are certainly not DICOM slices (checked by name, not by reading them).
NOT_DICOM_SUFFIXES = (
    ".raw",
    ".zraw",
    ".json",
    ".csv",
    ".txt",
    ".md",
    ".gz",
    ".zip",
    ".tar",
    ".npy",
    ".png",
    ".jpg",
)
IGNORED_FOLDERS = frozenset({"labelsTr", "labelsTs", "__MACOSX"})
MODALITIES = ("ct", "mri", "auto")


@dataclass(frozen=True)
class ScanInput:
    """One scan to read: a volume file or a DICOM series folder."""

    path: Path
    source: str
    modality: str | None = None  # from a CSV list; None: use the command's --modality
    split: str | None = None


def discover_scans(paths: Sequence[Path], split: str | None = None) -> list[ScanInput]:
    """All scans under ``paths`` (folders, CSV lists, volumes), in a deterministic order."""
    if not paths:
        raise InputError(None, "no inputs given")
    scans: list[ScanInput] = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(path, "does not exist")
        if path.is_dir():
            found = _scan_folder(path)
            if not found:
                raise InputError(
                    path, "holds no scans (.mhd, .mha, .nii, .nii.gz files or DICOM series folders)"
                )
            scans += found
        elif path.name.lower().endswith(".csv"):
            scans += _read_list(path, split)
        elif _is_volume(path):
            scans.append(ScanInput(path, path.name))
        else:
            raise InputError(
                path, "is neither a folder, a CSV list nor a .mhd/.mha/.nii/.nii.gz volume"
            )
    return _unique(scans)


def _is_volume(path: Path) -> bool:
    name = path.name
    return not name.startswith(".") and name.lower().endswith(VOLUME_SUFFIXES)


def _is_dicom(path: Path) -> bool:
    name = path.name.lower()
    if name.startswith("."):
        return False
    if name.endswith(DICOM_SUFFIXES):
        return True
    if name.endswith(VOLUME_SUFFIXES + NOT_DICOM_SUFFIXES):
        return False
    try:
        with path.open("rb") as handle:
            return handle.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _scan_folder(root: Path) -> list[ScanInput]:
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        entries = sorted(folder.iterdir(), key=lambda p: p.name)
        files = [p for p in entries if p.is_file()]
        if any(_is_dicom(p) for p in files):
            found.append(folder)  # the folder is one series
        found += [p for p in files if _is_volume(p)]
        subfolders = [p for p in entries if p.is_dir() and not p.name.startswith(".")]
        for ignored in (p for p in subfolders if p.name in IGNORED_FOLDERS):
            log.info("ignoring %s (labels or macOS metadata)", ignored)
        stack += reversed([p for p in subfolders if p.name not in IGNORED_FOLDERS])
    found.sort(key=lambda p: p.relative_to(root).parts)
    return [ScanInput(p, "/".join((root.name, *p.relative_to(root).parts))) for p in found]


def _read_list(path: Path, split: str | None) -> list[ScanInput]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise InputError(path, f"cannot read the CSV list ({error})") from None
    reader = csv.DictReader(io.StringIO(text))
    rows = list(reader)
    columns = [c.strip() for c in reader.fieldnames or []]
    if not rows:
        raise InputError(
            path, "is empty: expected a header with a 'path' column and one row per scan"
        )
    if "path" not in columns:
        raise InputError(path, f"has no 'path' column (columns: {', '.join(columns)})")
    scans = []
    for number, row in enumerate(rows, start=2):  # line numbers as an editor shows them
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        if not row["path"]:
            raise InputError(path, f"line {number}: empty path")
        modality = row.get("modality", "").lower() or None
        if modality is not None and modality not in MODALITIES:
            raise InputError(
                path,
                f"line {number}: modality must be one of "
                f"{', '.join(MODALITIES)}, got {row['modality']!r}",
            )
        row_split = row.get("split") or None
        if split is not None and "split" in columns and row_split != split:
            continue
        scan = Path(row["path"]).expanduser()
        scan = scan if scan.is_absolute() else path.parent / scan
        scans.append(ScanInput(scan, row["path"], modality, row_split))
    if not scans:
        present = sorted({(r.get("split") or "").strip() for r in rows})
        raise InputError(path, f"no rows with split {split!r} (splits present: {present})")
    return scans


def _unique(scans: list[ScanInput]) -> list[ScanInput]:
    """Drop a scan listed twice (it would give duplicate cubes from the same seed)."""
    seen: set[Path] = set()
    unique = []
    for scan in scans:
        key = scan.path.resolve()
        if key in seen:
            log.warning("%s is listed twice; using it once", scan.path)
            continue
        seen.add(key)
        unique.append(scan)
    return unique
