"""Train/validation/test assignment of target-task cases, and the split CSVs that pin it.

Every task writes its split to ``results/tasks/<task>/split.csv``; a copy versioned in
``config/splits/<task>.csv`` (passed as ``--split-file``) then pins the cases, so every
reported number traces back to the exact scans or volumes it was computed on.

Rules (facts §5):

* NCC: by LUNA16 subset (paper 0-4 train, 5-6 validation, 7-9 test).
* LCS: by volume index (paper 0-99 train, 100-114 validation, 115-129 test), i.e. the
  first 100 / next 15 / next 15 volumes in index order. A data set with fewer volumes than
  that is split in the same 100 : 15 : 15 proportions, in index order.
* BMS: the case list cut into 3 folds; folds 1+2 are train/validation at 7 : 1, fold 3 is
  the test set.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from genesis.atomic import write_text
from genesis.errors import ConfigError, InputError

SPLITS: tuple[str, ...] = ("train", "val", "test")


def subset_splits(
    train: Sequence[int], val: Sequence[int], test: Sequence[int], section: str
) -> dict[int, str]:
    """Map each configured LUNA16 subset to its split; a subset in two splits is an error."""
    mapping: dict[int, str] = {}
    for split, subsets in zip(SPLITS, (train, val, test), strict=True):
        if not subsets:
            raise ConfigError(f"{section}.{split}_subsets must list at least one subset")
        for subset in subsets:
            if subset < 0:
                raise ConfigError(f"{section}.{split}_subsets: negative subset {subset}")
            if subset in mapping:
                raise ConfigError(
                    f"{section}: subset {subset} is in both "
                    f"{mapping[subset]}_subsets and {split}_subsets"
                )
            mapping[subset] = split
    return mapping


def index_splits(names: Sequence[str], counts: tuple[int, int, int]) -> dict[str, str]:
    """Split ``names`` (already in index order) into consecutive train/val/test runs.

    With at least ``sum(counts)`` names, the first ``counts[0]`` are train, the next
    ``counts[1]`` validation and the next ``counts[2]`` test; any further names are left
    out (LiTS volume 130 under the paper's 100/15/15). With fewer names, the runs keep the
    same proportions (rounded), with at least one validation and one test case when there
    are three or more names.
    """
    total = sum(counts)
    n = len(names)
    if n >= total:
        n_train, n_val, n_test = counts
    else:
        n_val = round(n * counts[1] / total)
        n_test = round(n * counts[2] / total)
        if n >= 3:
            n_val, n_test = max(n_val, 1), max(n_test, 1)
        n_train = n - n_val - n_test
    bounds = np.cumsum([n_train, n_val, n_test])
    assignment: dict[str, str] = {}
    for position, name in enumerate(names):
        split_index = int(np.searchsorted(bounds, position, side="right"))
        if split_index < len(SPLITS):
            assignment[name] = SPLITS[split_index]
    return assignment


def fold_splits(
    names: Sequence[str],
    folds: int,
    test_fold: int,
    val_fraction: float,
    rng: np.random.Generator | None,
    section: str,
) -> dict[str, str]:
    """Cut ``names`` into ``folds`` folds; fold ``test_fold`` (1-based) is test.

    The remaining folds are train and validation: the last ``round(val_fraction * n)`` of
    them (in fold order) are validation, at least one when two or more remain. With
    ``rng``, the case list is shuffled first (seeded); otherwise its order is kept.
    """
    if folds < 2:
        raise ConfigError(f"{section}.folds must be at least 2, got {folds}")
    if not 1 <= test_fold <= folds:
        raise ConfigError(f"{section}.test_fold must be in 1..{folds}, got {test_fold}")
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"{section}.val_fraction must be in [0, 1), got {val_fraction}")
    order = list(names)
    if rng is not None:
        order = [order[i] for i in rng.permutation(len(order))]
    parts = np.array_split(np.arange(len(order)), folds)
    test = {order[i] for i in parts[test_fold - 1]}
    rest = [order[i] for k, part in enumerate(parts) if k != test_fold - 1 for i in part]
    n_val = round(val_fraction * len(rest))
    if val_fraction > 0 and len(rest) >= 2:
        n_val = max(n_val, 1)
    val = set(rest[len(rest) - n_val :]) if n_val else set()
    return {name: "test" if name in test else "val" if name in val else "train" for name in names}


def check_proportions(proportions: Sequence[float], section: str) -> list[float]:
    """Train/val/test shares: three in [0, 1], train > 0, summing to 1 (else a ConfigError)."""
    values = [float(p) for p in proportions]
    if len(values) != 3 or any(not 0.0 <= p <= 1.0 for p in values) or not values[0] > 0:
        raise ConfigError(
            f"{section} must be three proportions in [0, 1] (train > 0), got {list(proportions)}"
        )
    if not abs(sum(values) - 1.0) < 1e-6:
        raise ConfigError(f"{section} must sum to 1, got {list(proportions)} (sum {sum(values):g})")
    return values


def proportion_splits(
    names: Sequence[str], proportions: Sequence[float], rng: np.random.Generator, section: str
) -> dict[str, str]:
    """A seeded train/val/test assignment of ``names`` in the given proportions.

    For a user's own task without a ``split`` column or split file. The names are shuffled
    with ``rng`` and cut into consecutive runs of ``round(p * n)`` cases; with three or
    more names, validation and test get at least one case each where their proportion is
    positive, and train keeps the rest (at least one). Names are the unit of the split:
    pass patient or scan identifiers so that no scan lands in two splits.
    """
    values = check_proportions(proportions, section)
    order = [names[i] for i in rng.permutation(len(names))]
    n = len(order)
    n_val, n_test = round(n * values[1]), round(n * values[2])
    if n >= 3:
        n_val = max(n_val, 1) if values[1] > 0 else 0
        n_test = max(n_test, 1) if values[2] > 0 else 0
    n_val = min(n_val, max(n - 1, 0))
    n_test = min(n_test, max(n - 1 - n_val, 0))
    n_train = n - n_val - n_test
    labels = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    return dict(zip(order, labels, strict=True))


def write_split_csv(
    path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, object]]
) -> None:
    """Write the split table atomically, one row per case, columns in the given order."""
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())


def read_split_csv(path: Path, key: str, columns: Sequence[str]) -> dict[str, dict[str, str]]:
    """Read a pinned split: ``{key value: row}``, with columns, splits and keys checked."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(path, f"cannot read split file ({error})") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise InputError(
            path, f"split file lacks column(s) {', '.join(missing)}; expected {', '.join(columns)}"
        )
    if not rows:
        raise InputError(path, "split file lists no cases")
    pinned: dict[str, dict[str, str]] = {}
    for line, row in enumerate(rows, start=2):
        name, split = row[key], row["split"]
        if split not in SPLITS:
            raise InputError(
                path, f"line {line}: split {split!r} for {name} must be one of {', '.join(SPLITS)}"
            )
        if name in pinned:
            raise InputError(path, f"line {line}: {key} {name} is listed twice")
        pinned[name] = row
    return pinned


def count_splits(assignment: Mapping[str, str]) -> dict[str, int]:
    """Cases per split, every split present (zero when empty)."""
    values = list(assignment.values())
    return {split: values.count(split) for split in SPLITS}
