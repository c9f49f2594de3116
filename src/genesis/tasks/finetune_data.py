"""Fine-tuning data: batches of (input (B, 1, X, Y, Z), target) for each task kind.

``ClassificationData`` serves labelled cubes (NCC's candidates or a user's), optionally
class-balanced, with shift-and-flip augmentation; ``SegmentationData`` draws
foreground-biased patches from whole prepared volumes (BMS: the paper's two-stage crop).
Both train on ``label_fraction`` of the training cases (``LabelledSubset``: nested and
seeded, the same for every initialisation of one seed), and validate on fixed inputs:
the same for every run and epoch. Each epoch's batches come from a generator seeded by
(seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from genesis.errors import ConfigError, InputError
from genesis.seeding import derive_seed, numpy_rng
from genesis.tasks.finetune_settings import FinetuneSettings, check_cube_size
from genesis.tasks.kinds import TaskInfo, two_stage_crop
from genesis.tasks.label_subsets import labelled_subset
from genesis.tasks.prepared import iter_cases, load_ncc_split, prepared_cube_size, read_prepare_json
from genesis.tasks.sampling import (
    PAPER_CUBE,
    PatchSampler,
    augment_ncc,
    crop_center,
    outer_patch_size,
)

#: (inputs (B, 1, X, Y, Z), targets: (B,) labels or (B, 1, X, Y, Z) masks)
Batch = tuple[Tensor, Tensor]
#: Seed of the validation patches: the same for every run, so runs are compared on one set.
VALIDATION_SEED = 0


@dataclass(frozen=True)
class LabelledSubset:
    """Which training cases a run learns from (``label_fraction`` of them, nested)."""

    fraction: float
    indices: np.ndarray  # into the training split, sorted
    n_total: int

    @property
    def n_labelled(self) -> int:
        return len(self.indices)

    def record(self) -> dict[str, Any]:
        return {
            "label_fraction": self.fraction,
            "n_labelled": self.n_labelled,
            "n_train_cases": self.n_total,
        }


def choose_subset(
    classes_per_case: list[frozenset[int]], fraction: float, seed: int, task: str
) -> LabelledSubset:
    indices = labelled_subset(classes_per_case, fraction, seed, task)
    return LabelledSubset(fraction, indices, len(classes_per_case))


class ClassificationData:
    """Labelled cubes (NCC's candidates or a user's); training cubes carry the shift margin
    (``genesis.tasks.prepared``). Labels are class indices; binary tasks use 0/1."""

    def __init__(
        self,
        task: str,
        task_dir: Path,
        settings: FinetuneSettings,
        label_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        prepared = prepared_cube_size(task_dir)
        if settings.cube_size is not None and tuple(settings.cube_size) != prepared:
            raise ConfigError(
                f"tasks.{task}.finetune.cube_size {list(settings.cube_size)} "
                f"differs from the prepared cubes' {list(prepared)} in "
                f"{task_dir}; prepare the task again with the same cube_size"
            )
        self.cube_size = prepared
        self.augment = settings.augment
        self.positive_fraction = settings.positive_fraction
        train_cubes, train_labels = load_ncc_split(task_dir, "train")
        val_cubes, self.val_labels = load_ncc_split(task_dir, "val")
        if self.positive_fraction is not None and int(np.max(train_labels, initial=0)) > 1:
            raise ConfigError(
                f"tasks.{task}.finetune.positive_fraction balances positives against "
                "negatives; this task has more than two classes: set it to null"
            )
        for split, labels in (("train", train_labels), ("val", self.val_labels)):
            if len(labels) == 0:
                raise InputError(task_dir, f"{task} {split} split holds no cubes")
        self.subset = choose_subset(
            [frozenset({int(y)}) for y in train_labels], label_fraction, seed, task
        )
        if self.subset.n_labelled == len(train_labels):
            self.train_cubes, self.train_labels = train_cubes, train_labels
        else:  # a view of the memory map would re-read scattered rows every epoch
            self.train_cubes = np.asarray(train_cubes[self.subset.indices])
            self.train_labels = train_labels[self.subset.indices]
        self.val_cubes = _center(np.asarray(val_cubes), prepared)

    def epoch_size(self) -> int:
        return len(self.train_labels)

    def batches(self, epoch_seed: int, steps: int, batch_size: int) -> Iterator[Batch]:
        order = self._order(steps, batch_size, np.random.default_rng(epoch_seed))
        generator = torch.Generator().manual_seed(derive_seed(epoch_seed, "augment"))
        for step in range(steps):
            index = np.sort(order[step * batch_size : (step + 1) * batch_size])
            cubes = torch.from_numpy(np.asarray(self.train_cubes[index], dtype=np.float32))
            cubes = cubes[:, None]  # (B, 1, X', Y', Z')
            if self.augment:
                cubes = augment_ncc(cubes, generator, self.cube_size)
            else:
                cubes = crop_center(cubes, self.cube_size)
            labels = torch.from_numpy(self.train_labels[index].astype(np.float32))
            yield cubes.contiguous(), labels

    def classes_seen(self) -> int:
        return len(np.unique(self.train_labels))

    def _order(self, steps: int, batch_size: int, rng: np.random.Generator) -> np.ndarray:
        """Training indices, batch after batch: shuffled passes, or class-balanced ones."""
        labels = self.train_labels
        positives, negatives = np.flatnonzero(labels == 1), np.flatnonzero(labels != 1)
        if self.positive_fraction is None or not len(positives) or not len(negatives):
            return _epoch_order(len(labels), steps * batch_size, rng)
        n_pos = round(self.positive_fraction * batch_size)
        pos = positives[_epoch_order(len(positives), steps * n_pos, rng)]
        neg = negatives[_epoch_order(len(negatives), steps * (batch_size - n_pos), rng)]
        # (steps, n_pos) next to (steps, batch_size - n_pos): each row is one batch.
        return np.concatenate(
            [pos.reshape(steps, n_pos), neg.reshape(steps, batch_size - n_pos)], axis=1
        ).reshape(-1)

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.val_cubes, self.val_labels.astype(np.float32)


class NccData(ClassificationData):
    """NCC's cubes: ``ClassificationData`` under the task name ``ncc``."""

    def __init__(
        self, task_dir: Path, settings: FinetuneSettings, label_fraction: float = 1.0, seed: int = 0
    ) -> None:
        super().__init__("ncc", task_dir, settings, label_fraction, seed)


class SegmentationData:
    """Whole prepared volumes; patches biased to the foreground (BMS: two-stage crop).

    Labels are class indices (0 background); a binary task's are 0/1 masks.
    """

    def __init__(
        self,
        task: str,
        task_dir: Path,
        settings: FinetuneSettings,
        label_fraction: float = 1.0,
        seed: int = 0,
    ) -> None:
        self.cube_size = segmentation_cube_size(task_dir, settings.cube_size)
        self.patches_per_case = settings.patches_per_case
        outer = outer_patch_size(self.cube_size) if two_stage_crop(task) else None
        images, labels = _load_volumes(task_dir, "train")
        present = [frozenset(int(v) for v in np.unique(label) if v) for label in labels]
        self.subset = choose_subset(present, label_fraction, seed, task)
        train = ([images[i] for i in self.subset.indices], [labels[i] for i in self.subset.indices])
        val = _load_volumes(task_dir, "val")
        self.n_train = len(train[0])
        self.sampler = PatchSampler(*train, self.cube_size, settings.foreground_ratio, outer)
        # Fixed validation patches, the same for every run and epoch.
        n_val = settings.val_patches_per_case * len(val[0])
        val_sampler = PatchSampler(*val, self.cube_size, settings.foreground_ratio, outer)
        self.val_images, self.val_labels = val_sampler.sample(
            n_val, numpy_rng(VALIDATION_SEED, "finetune-validation", task)
        )

    def epoch_size(self) -> int:
        return self.patches_per_case * self.n_train

    def batches(self, epoch_seed: int, steps: int, batch_size: int) -> Iterator[Batch]:
        generator = np.random.default_rng(epoch_seed)
        for _ in range(steps):
            images, labels = self.sampler.sample(batch_size, generator)
            yield (
                torch.from_numpy(images)[:, None],
                torch.from_numpy(labels.astype(np.float32))[:, None],
            )

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.val_images, self.val_labels.astype(np.float32)[:, None]


def segmentation_cube_size(
    task_dir: Path, configured: tuple[int, ...] | None
) -> tuple[int, int, int]:
    """The configured patch size, else the one recorded by `prepare`, else the paper's."""
    if configured is not None:
        return (int(configured[0]), int(configured[1]), int(configured[2]))
    recorded = read_prepare_json(task_dir).get("settings", {}).get("cube_size")
    size = tuple(int(n) for n in recorded) if recorded else PAPER_CUBE
    check_cube_size(size, f"cube_size in {task_dir}/prepare.json")
    return (size[0], size[1], size[2])


def _load_volumes(task_dir: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (float16, the stored precision, to halve memory) and labels of a split."""
    images, labels = [], []
    for case in iter_cases(task_dir, split):
        images.append(case.image.astype(np.float16))
        labels.append(case.label)
    if not images:
        raise InputError(task_dir, f"no prepared {split} case; run `genesis prepare` first")
    if split == "train" and not any(label.any() for label in labels):
        raise InputError(task_dir, "every training label volume is empty")
    return images, labels


def _center(cubes: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
    """Central crop of (n, X', Y', Z') cubes as float32."""
    return np.ascontiguousarray(crop_center(cubes[:, None], size)[:, 0], dtype=np.float32)


def _epoch_order(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices: whole shuffled passes over ``range(n)``, as many as needed."""
    passes = math.ceil(count / n)
    if passes == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def load_task_data(
    task: str,
    info: TaskInfo,
    task_dir: Path,
    settings: FinetuneSettings,
    label_fraction: float = 1.0,
    seed: int = 0,
) -> ClassificationData | SegmentationData:
    if info.kind == "segmentation":
        return SegmentationData(task, task_dir, settings, label_fraction, seed)
    return ClassificationData(task, task_dir, settings, label_fraction, seed)
