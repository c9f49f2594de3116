"""Cube shards as a torch Dataset that streams from memory-mapped ``.npy`` files.

A shard is a float16 array ``(n, X, Y, Z)`` in [0, 1] written by ``genesis cubes``, with a
manifest ``<name>.csv`` beside it. Shards are opened with ``mmap_mode="r"``: only the cubes
a batch needs are read, so a paper-scale training set (tens of GB as float32) never has
to fit in memory. Each cube is copied out and converted to float32 one at a time.

Every shard is checked when it is opened, chunk by chunk so memory stays flat: a 4D
floating array, a non-empty one, a cube size the U-Net accepts, the same size in all
shards, finite values in [0, 1], and a manifest (when there is one) that lists as many
cubes as the shard holds. Each problem raises ``InputError`` naming the shard.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from genesis.errors import InputError
from genesis.models import InputShapeError, check_input_shape

log = logging.getLogger(__name__)

#: Cubes read at a time by the open-time check (16 MB of float16 at 64x64x32).
CHECK_CHUNK = 64


@dataclass(frozen=True)
class ShardInfo:
    """A checked shard: where it is, how many cubes, their size, and its manifest."""

    path: Path
    n_cubes: int
    cube_shape: tuple[int, int, int]
    manifest: Path | None


def open_shard(path: str | Path) -> np.ndarray:
    """Memory-map a shard, turning numpy's errors into an ``InputError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "cube shard does not exist")
    try:
        array = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise InputError(path, f"not a readable .npy cube shard ({error})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(path, "not a .npy array")
    return array


def check_shard(path: str | Path) -> ShardInfo:
    """Open ``path`` and check everything training relies on; see the module docs."""
    path = Path(path)
    array = open_shard(path)
    if array.ndim != 4:
        raise InputError(
            path, f"expected a 4D array (n, X, Y, Z) of cubes, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise InputError(path, f"expected float16 or float32 cubes, got {array.dtype}")
    if array.shape[0] == 0:
        raise InputError(path, "the shard holds no cubes; rerun `genesis cubes` or drop it")
    cube_shape = tuple(int(n) for n in array.shape[1:])
    try:
        check_input_shape(cube_shape)
    except InputShapeError as error:
        raise InputError(path, error.problem) from None
    for start in range(0, array.shape[0], CHECK_CHUNK):
        chunk = torch.from_numpy(np.array(array[start : start + CHECK_CHUNK]))
        if not bool(torch.isfinite(chunk).all()):
            bad = int((~torch.isfinite(chunk)).flatten(1).any(1).nonzero()[0, 0]) + start
            raise InputError(path, f"cube {bad} holds NaN or infinite values")
        low, high = float(chunk.min()), float(chunk.max())
        if low < 0.0 or high > 1.0:
            raise InputError(
                path,
                f"values must lie in [0, 1], found [{low:g}, {high:g}] "
                f"in cubes {start}..{start + len(chunk) - 1}",
            )
    manifest = path.with_suffix(".csv")
    if not manifest.is_file():
        log.warning("%s has no manifest %s; provenance will lack its hash", path, manifest.name)
    else:
        listed = manifest_cubes(manifest)
        if listed is not None and listed != array.shape[0]:
            raise InputError(
                path,
                f"holds {array.shape[0]} cubes but its manifest "
                f"{manifest.name} lists {listed}: they are not from the same "
                "run; rerun `genesis cubes`",
            )
    return ShardInfo(
        path,
        int(array.shape[0]),
        cube_shape,  # type: ignore[arg-type]
        manifest if manifest.is_file() else None,
    )


def manifest_cubes(manifest: Path) -> int | None:
    """Cube rows (status ``ok``) in a shard manifest; None if it has no status column."""
    with manifest.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if "status" not in (reader.fieldnames or []):
            return None
        return sum(row["status"] == "ok" for row in reader)


def check_shards(paths: Sequence[str | Path], role: str) -> list[ShardInfo]:
    """Check a list of shards for one role ("train", "val"); all must share a cube size."""
    if not paths:
        raise InputError(None, f"no {role} cube shards given")
    infos = [check_shard(path) for path in paths]
    first = infos[0]
    for info in infos[1:]:
        if info.cube_shape != first.cube_shape:
            raise InputError(
                info.path,
                f"cube size {info.cube_shape} differs from {first.cube_shape} in {first.path}",
            )
    return infos


class CubeDataset(Dataset):
    """All cubes of some shards, indexed 0..n-1 in shard order; items are (1, X, Y, Z).

    The memory maps are opened lazily in each process: a pickled dataset (sent to a
    DataLoader worker) carries only paths, never the mapped data.
    """

    def __init__(self, shards: Sequence[ShardInfo]) -> None:
        if not shards:
            raise InputError(None, "no cube shards given")
        self.shards = list(shards)
        self.cube_shape = self.shards[0].cube_shape
        self._ends = np.cumsum([info.n_cubes for info in self.shards])
        self._arrays: list[np.ndarray] | None = None

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < len(self):
            raise IndexError(f"cube {index} out of range 0..{len(self) - 1}")
        if self._arrays is None:
            self._arrays = [open_shard(info.path) for info in self.shards]
        shard = int(np.searchsorted(self._ends, index, side="right"))
        local = index - (int(self._ends[shard - 1]) if shard else 0)
        cube = np.array(self._arrays[shard][local], dtype=np.float32)  # copy out of the map
        return torch.from_numpy(cube).unsqueeze(0)  # (1, X, Y, Z)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_arrays"] = None
        return state
