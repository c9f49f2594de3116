"""Nested, seeded subsets of the labelled training cases, for label-efficiency sweeps.

The paper's claim is about *few labels*: how much pretraining helps when only a fraction
of the training cases is annotated. A sweep trains every initialisation at every fraction
of the training cases; for its comparisons to mean anything:

- **paired**: at one run index every initialisation sees the same cases. The order below
  depends only on the run's seed and the task, never on the initialisation;
- **nested**: the 10% cases lie inside the 25% cases, and so on. Each fraction takes a
  prefix of one seeded order, so a larger fraction only adds cases;
- **usable**: every subset holds at least one case of every class that the training
  split has (a segmentation case counts for each foreground class it contains). The
  order starts with the first case, in seeded order, that brings each class not yet
  covered; a fraction too small for that is raised to the number of covering cases.

The selected cases are returned in their original (file) order, so that the full
fraction reproduces exactly the run without a sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from genesis.errors import ConfigError
from genesis.seeding import numpy_rng


def check_fraction(fraction: float, key: str = "label_fraction") -> float:
    if not (
        isinstance(fraction, int | float) and math.isfinite(fraction) and 0.0 < fraction <= 1.0
    ):
        raise ConfigError(f"{key} must be in (0, 1], got {fraction!r}")
    return float(fraction)


def labelled_order(
    classes_per_case: Sequence[frozenset[int]], seed: int, task: str
) -> tuple[list[int], int]:
    """A seeded order of the cases and how many of its first cases cover every class.

    Args:
        classes_per_case: the classes each training case holds (its label for a
            classification cube; its foreground classes for a segmentation volume).
        seed: the run's seed (shared by every initialisation at one run index).
        task: the task name, so that two tasks get unrelated orders.
    """
    n = len(classes_per_case)
    permutation = [int(i) for i in numpy_rng(seed, "labelled-subset", task).permutation(n)]
    covered: set[int] = set()
    front: list[int] = []
    for index in permutation:
        new = classes_per_case[index] - covered
        if new:
            front.append(index)
            covered |= new
    chosen = set(front)
    return front + [i for i in permutation if i not in chosen], len(front)


def labelled_subset(
    classes_per_case: Sequence[frozenset[int]], fraction: float, seed: int, task: str
) -> np.ndarray:
    """Indices (sorted) of the training cases labelled at ``fraction``; see the module."""
    fraction = check_fraction(fraction)
    n = len(classes_per_case)
    if fraction == 1.0:
        return np.arange(n)
    order, n_cover = labelled_order(classes_per_case, seed, task)
    count = min(n, max(math.ceil(fraction * n), n_cover, 1))
    return np.sort(np.asarray(order[:count], dtype=np.int64))
