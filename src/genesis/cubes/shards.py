"""Cube shards (``.npy``, float16 ``(n, X, Y, Z)``) written as a stream, and their manifest.

The shard is appended to with plain file writes, one scan's cubes at a time, so memory
never holds more than one scan's cubes. (Writing through ``open_memmap`` would keep every
touched page of the shard resident in the process, which grows with the number of
scans.) The ``.npy`` header is written first with a fixed size and rewritten with the
final cube count at the end. Shard and manifest are written to temporary names and
renamed as a pair only when both are complete (``genesis.atomic.atomic_set``: the old
manifest is removed first and the new one renamed last), so a shard never has a manifest
beside it that describes another shard. Readers open it with
``numpy.load(path, mmap_mode="r")``.

float16 on [0, 1]: 11 significant bits, so the rounding error is at most 2^-12 ≈ 2.4e-4
on [0.5, 1] (and smaller below), i.e. at most 0.49 HU in the [-1000, 1000] CT window —
below CT noise (about 10 HU). It halves the size of float32 and quarters float64.
"""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

from genesis.atomic import atomic_set, write_text

DTYPE = np.dtype("<f2")
#: Manifest columns: one row per cube (status ``ok``) or skipped scan (``skipped``, with the
#: reason). ``modality``, ``border`` and ``min_slices`` record what was used for the scan
#: (``cubes.recipe: auto`` chooses the last two per scan).
MANIFEST_COLUMNS = (
    "index",
    "source",
    "split",
    "x",
    "y",
    "z",
    "scale",
    "status",
    "reason",
    "modality",
    "border",
    "min_slices",
)
#: Fixed .npy header size (a multiple of 64, so the data stays aligned for mmap).
HEADER_BYTES = 128
_MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(count: int, cube_shape: Sequence[int]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``HEADER_BYTES`` bytes."""
    meta = {
        "descr": np.lib.format.dtype_to_descr(DTYPE),
        "fortran_order": False,
        "shape": (int(count), *map(int, cube_shape)),
    }
    text = repr(meta)
    room = HEADER_BYTES - len(_MAGIC) - 2 - 1  # magic + version, length field, newline
    if len(text) > room:
        raise ValueError(f"shape {meta['shape']} does not fit a {HEADER_BYTES}-byte header")
    body = (text.ljust(room) + "\n").encode("latin1")
    return _MAGIC + struct.pack("<H", len(body)) + body


class ShardAppender:
    """Appends float16 cubes of one fixed shape to an open ``.npy`` file."""

    def __init__(self, handle: IO[bytes], cube_shape: tuple[int, int, int]) -> None:
        self.handle = handle
        self.cube_shape = cube_shape
        self.count = 0
        handle.write(npy_header(0, cube_shape))

    def append(self, cubes: np.ndarray) -> range:
        """Write ``cubes`` (n, X, Y, Z); return their indices in the shard."""
        if cubes.ndim != 4 or cubes.shape[1:] != self.cube_shape:
            raise ValueError(f"expected cubes of shape (n, {self.cube_shape}), got {cubes.shape}")
        data = np.ascontiguousarray(cubes, dtype=DTYPE)
        self.handle.write(memoryview(data).cast("B"))
        first = self.count
        self.count += len(cubes)
        return range(first, self.count)

    def finish(self) -> None:
        self.handle.seek(0)
        self.handle.write(npy_header(self.count, self.cube_shape))


@contextmanager
def shard_writer(
    path: Path, cube_shape: tuple[int, int, int]
) -> Iterator[tuple[ShardAppender, list[dict[str, Any]]]]:
    """Stream cubes into ``path`` and collect manifest rows; both appear only together.

    Yields the appender and the list of manifest rows to fill. When the block succeeds,
    the shard and its manifest (``manifest_path(path)``) replace the old pair; when it
    raises, the old pair (if any) is left as it was.
    """
    rows: list[dict[str, Any]] = []
    with atomic_set([path, manifest_path(path)]) as (shard_tmp, manifest_tmp):
        with shard_tmp.open("wb") as handle:
            appender = ShardAppender(handle, cube_shape)
            yield appender, rows
            appender.finish()
        manifest_tmp.write_text(manifest_text(rows), encoding="utf-8")


def manifest_text(rows: Sequence[dict[str, Any]]) -> str:
    """The manifest CSV of ``rows``, ``MANIFEST_COLUMNS`` in order, missing values empty."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    for row in rows:
        writer.writerow({key: "" if row.get(key) is None else row[key] for key in MANIFEST_COLUMNS})
    return buffer.getvalue()


def write_manifest(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Write a manifest CSV atomically: one row per cube or skipped scan."""
    write_text(path, manifest_text(rows))


def read_manifest(path: Path) -> list[dict[str, str]]:
    with Path(path).open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def open_shard(path: Path) -> np.ndarray:
    """The shard as a read-only memory map ``(n, X, Y, Z)``."""
    return np.load(path, mmap_mode="r")


def manifest_path(shard: Path) -> Path:
    """``cubes/subset0.npy`` -> ``cubes/subset0.csv``."""
    return Path(shard).with_suffix(".csv")


def failed_manifest_path(shard: Path) -> Path:
    """Where a failed run leaves its manifest: ``cubes/subset0.failed.csv``."""
    return Path(shard).with_suffix(".failed.csv")
