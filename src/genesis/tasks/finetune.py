"""Fine-tune a target task (a classification or segmentation kind) from scratch or from
pretrained weights.

One plain training loop for every task (facts §5): Adam, the paper's loss (Dice for
segmentation, BCE for classification; with more than two classes Dice + cross-entropy
and cross-entropy), the learning rate halved when the validation loss stops improving,
early stopping, and the weights of the best validation epoch kept. A non-finite loss
ends the run with ``DivergedError`` and writes no weights.

What the task is (kind, classes) is read from the prepared folder's ``prepare.json``
(``genesis.tasks.kinds.task_info``); the task's name only picks the paper's defaults for
NCC, LCS and BMS. ``label_fraction`` trains on a nested, seeded subset of the training
cases (``genesis.tasks.label_subsets``), the same for every initialisation of one seed.

Initialisations:

- ``scratch``: random weights, drawn from a seed derived from the run's seed, so the
  scratch and pretrained runs of one seed share the classifier head and data order.
- ``genesis`` / ``genesis-<variant>``: this workflow's pretraining (``--weights``).
- ``released``: ``Genesis_Chest_CT.pt`` or any file in that layout (``--weights``). The
  release's batch norm normalises with batch statistics in evaluation too, and its
  running statistics were never used, so ``batch_stats`` defaults to true for
  ``released`` and to false (standard batch norm) otherwise; the ``batch_stats`` setting
  overrides both.
- ``released_keras``: the Keras release ``Genesis_Chest_CT.h5`` (``--weights``), a
  different network (up-sampling decoder, ``genesis.models.keras_unet``) loaded with
  h5py; its moving statistics are Keras's usual ones, so standard batch norm is the
  default. Scratch runs keep the PyTorch release's architecture, as in the paper.

Binary segmentation fine-tunes the whole U-Net, loading every tensor strictly (the
pretrained head is the same 1-channel sigmoid as the binary segmentation output); with
more classes every layer but the 1x1x1 head is transferred (``except_head``) and the head
gets one channel per class plus background. Classification loads only the encoder into
``GenesisClassifier``; its head starts random. A file that does not fit
raises ``WeightsError`` listing every missing, unexpected and mis-shaped key: never a
silent random start.

Reproducible resume: every epoch ends with an atomic checkpoint (model, optimiser,
scheduler, best weights, curves, RNG states), and each epoch draws its batches from a
generator derived from (seed, epoch), so an interrupted run continues exactly where it
stopped and writes the same curves as an uninterrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from genesis.atomic import write_text
from genesis.errors import ConfigError, GenesisError, InputError, WeightsError
from genesis.io.tables import FINETUNE_CURVE_COLUMNS
from genesis.seeding import derive_seed, numpy_rng, set_determinism
from genesis.settings import from_mapping, to_mapping
from genesis.tasks.kinds import TaskInfo, check_name, preset_kind, task_info, two_stage_crop
from genesis.tasks.label_subsets import check_fraction, labelled_subset
from genesis.tasks.losses import build_loss

log = logging.getLogger(__name__)

#: (inputs (B, 1, X, Y, Z), targets: (B,) labels or (B, 1, X, Y, Z) masks)
Batch = tuple[Tensor, Tensor]
CHECKPOINT = "checkpoint.pt"
CURVES = "curves.csv"
WEIGHTS_STEM = "weights"
INIT_PATTERN = re.compile(r"^(scratch|released|released_keras|genesis(-[a-z_]+)?)$")


class DivergedError(GenesisError):
    """The loss became NaN or infinite: the run stops and exports nothing."""


#: Settings that may change between an interrupted run and its resume (budget, not model).
RESUMABLE_CHANGES: frozenset[str] = frozenset({"max_epochs", "max_minutes"})
#: Seed of the validation patches: the same for every run, so runs are compared on one set.
VALIDATION_SEED = 0


@dataclass(frozen=True)
class FinetuneSettings:
    """Fine-tuning settings (section ``tasks.<task>.finetune``); see ``TASK_DEFAULTS``."""

    #: Adam learning rate (paper: NCC 1e-3, LCS 1e-2, BMS 1e-3).
    lr: float = 1e-3
    #: Training batch size (paper: NCC 24; segmentation not stated, 16 here).
    batch_size: int = 24
    #: Early stopping: epochs without a lower validation loss (the facts' "patience":
    #: NCC 10, LCS 20, BMS 30).
    early_stop_patience: int = 10
    #: Epochs without improvement before the learning rate is multiplied by lr_factor
    #: (not stated in the facts; half the early-stopping patience by default).
    lr_patience: int = 5
    #: Learning-rate factor on a plateau (the paper halves it).
    lr_factor: float = 0.5
    #: Epoch cap (early stopping usually ends training first).
    max_epochs: int = 10000
    #: Batches per epoch; None: one pass over the training cubes (NCC) or over
    #: patches_per_case patches of every training case (segmentation).
    steps_per_epoch: int | None = None
    #: U-Net / encoder base width (32 = the release; must match pretrained weights).
    width: int = 32
    #: Hidden units of the NCC classification head (1024 in the release).
    hidden: int = 1024
    #: Model input (x, y, z); None: the size recorded by `prepare` (else 64x64x32). NCC
    #: cubes are cut at prepare time, so there it must equal the prepared size.
    cube_size: tuple[int, int, int] | None = None
    #: Batch norm with batch statistics in eval too; None: true for `released` only.
    batch_stats: bool | None = None
    #: Segmentation: training patches drawn per training case per epoch.
    patches_per_case: int = 16
    #: Segmentation: share of patches centred on a foreground voxel.
    foreground_ratio: float = 0.5
    #: Segmentation: fixed validation patches per validation case.
    val_patches_per_case: int = 8
    #: NCC: random shifts (within the stored margin) and flips of training cubes.
    augment: bool = True
    #: NCC: share of positives in every training batch; None samples batches from the
    #: natural class mix (the paper). Balancing speeds up learning from few positives.
    positive_fraction: float | None = None
    #: Optional wall-clock budget; training stops after the epoch that exceeds it.
    max_minutes: float | None = None
    #: channels_last_3d memory layout: same results, about 20% faster 3D convolutions on
    #: CPU (oneDNN) and usually on GPU too.
    channels_last: bool = True
    #: Segmentation from pretrained weights: re-initialise the final 1x1x1 convolution.
    #: The restoration head outputs intensities, not masks; a short run (the demo) cannot
    #: repurpose it and predicts no foreground at all. false: transfer every layer (paper).
    reset_head: bool = False

    def __post_init__(self) -> None:
        section = "tasks.<task>.finetune"
        for key in ("batch_size", "early_stop_patience", "lr_patience", "max_epochs", "width",
                    "hidden", "patches_per_case", "val_patches_per_case"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{section}.{key} must be at least 1, got {getattr(self, key)}")
        if self.steps_per_epoch is not None and self.steps_per_epoch < 1:
            raise ConfigError(f"{section}.steps_per_epoch must be at least 1 or null, got "
                              f"{self.steps_per_epoch}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"{section}.lr must be a finite positive number, got "
                              f"{self.lr}")
        if not 0 < self.lr_factor < 1:
            raise ConfigError(f"{section}.lr_factor must be in (0, 1), got {self.lr_factor}")
        if not 0 <= self.foreground_ratio <= 1:
            raise ConfigError(f"{section}.foreground_ratio must be in [0, 1], got "
                              f"{self.foreground_ratio}")
        if self.positive_fraction is not None and not 0 <= self.positive_fraction <= 1:
            raise ConfigError(f"{section}.positive_fraction must be in [0, 1] or null, got "
                              f"{self.positive_fraction}")
        if self.max_minutes is not None and not (math.isfinite(self.max_minutes)
                                                  and self.max_minutes > 0):
            raise ConfigError(f"{section}.max_minutes must be positive or null, got "
                              f"{self.max_minutes}")
        if self.cube_size is not None:
            check_cube_size(self.cube_size, f"{section}.cube_size")


#: The paper's optimiser settings per task (facts §5); config keys override them.
TASK_DEFAULTS: dict[str, FinetuneSettings] = {
    "ncc": FinetuneSettings(lr=1e-3, batch_size=24, early_stop_patience=10, lr_patience=5),
    "lcs": FinetuneSettings(lr=1e-2, batch_size=16, early_stop_patience=20, lr_patience=10),
    "bms": FinetuneSettings(lr=1e-3, batch_size=16, early_stop_patience=30, lr_patience=15),
}
#: Defaults of a user's own task, by kind: the paper's NCC and BMS settings (Adam at
#: 1e-3, which the paper uses for both kinds; LCS's 1e-2 is specific to its resized CT).
KIND_DEFAULTS: dict[str, FinetuneSettings] = {
    "classification": TASK_DEFAULTS["ncc"],
    "segmentation": TASK_DEFAULTS["bms"],
}


def check_cube_size(size: tuple[int, ...], key: str) -> None:
    """The U-Net's rule (x, y divisible by 16, z by 8) as a ConfigError naming ``key``."""
    from genesis.models import InputShapeError, check_input_shape

    try:
        check_input_shape(size)
    except InputShapeError as error:
        raise ConfigError(f"{key}: {error.problem}") from None


def resolve_settings(task: str, mapping: Mapping[str, Any] | None,
                     kind: str | None = None) -> FinetuneSettings:
    """The task's defaults with the given keys (checked like any config) on top.

    The paper's tasks start from their published settings (``TASK_DEFAULTS``), a user's
    task from its kind's (``KIND_DEFAULTS``); ``kind`` is then required.
    """
    check_name(task)
    section = f"tasks.{task}.finetune"
    if task in TASK_DEFAULTS:
        defaults = TASK_DEFAULTS[task]
    elif kind in KIND_DEFAULTS:
        defaults = KIND_DEFAULTS[kind]
    else:
        raise ConfigError(f"task {task!r} is not a built-in task: its kind must be one of "
                          f"{list(KIND_DEFAULTS)}, got {kind!r}")
    given = dict(mapping or {})
    try:
        parsed = from_mapping(FinetuneSettings, given, section)  # key and type errors
        return dataclasses.replace(defaults, **{key: getattr(parsed, key) for key in given})
    except ConfigError as error:  # __post_init__ does not know the task's section name
        raise ConfigError(str(error).replace("tasks.<task>.finetune", section)) from None


@dataclass(frozen=True)
class Init:
    """How the model starts: ``scratch``, ``genesis[-variant]`` or ``released`` + a file."""

    name: str
    weights: Path | None = None

    def __post_init__(self) -> None:
        if not INIT_PATTERN.match(self.name):
            raise ConfigError(f"init must be scratch, genesis, genesis-<variant>, released or "
                              f"released_keras, got {self.name!r}")
        if self.name == "scratch" and self.weights is not None:
            raise ConfigError("--weights is for the genesis and released inits; scratch "
                              "starts from random weights")
        if self.name != "scratch" and self.weights is None:
            raise ConfigError(f"init {self.name!r} needs --weights (a weights.pt, "
                              ".safetensors, Genesis_Chest_CT.pt, or Genesis_Chest_CT.h5 "
                              "for released_keras)")
        if self.weights is not None and self.keras != (Path(self.weights).suffix == ".h5"):
            raise ConfigError(f"--weights {self.weights}: released_keras takes the Keras "
                              ".h5 file, the other inits a .pt or .safetensors file")
        if self.weights is not None and not Path(self.weights).is_file():
            raise InputError(self.weights, "weights file not found")

    @property
    def keras(self) -> bool:
        """The Keras release's architecture (``genesis.models.keras_unet``)."""
        return self.name == "released_keras"

    def batch_stats(self, settings: FinetuneSettings) -> bool:
        """The release's always-batch-statistics norm for released weights, unless set."""
        if settings.batch_stats is not None:
            return settings.batch_stats
        return self.name == "released"


# --------------------------------------------------------------------------------------
# Data: batches of (input (B, 1, X, Y, Z), target) for each task


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
        return {"label_fraction": self.fraction, "n_labelled": self.n_labelled,
                "n_train_cases": self.n_total}


def choose_subset(classes_per_case: list[frozenset[int]], fraction: float, seed: int,
                  task: str) -> LabelledSubset:
    indices = labelled_subset(classes_per_case, fraction, seed, task)
    return LabelledSubset(fraction, indices, len(classes_per_case))


class ClassificationData:
    """Labelled cubes (NCC's candidates or a user's); training cubes carry the shift margin
    (prepared.py). Labels are class indices; binary tasks use 0/1."""

    def __init__(self, task: str, task_dir: Path, settings: FinetuneSettings,
                 label_fraction: float = 1.0, seed: int = 0) -> None:
        from genesis.tasks.prepared import load_ncc_split, prepared_cube_size

        prepared = prepared_cube_size(task_dir)
        if settings.cube_size is not None and tuple(settings.cube_size) != prepared:
            raise ConfigError(f"tasks.{task}.finetune.cube_size {list(settings.cube_size)} "
                              f"differs from the prepared cubes' {list(prepared)} in "
                              f"{task_dir}; prepare the task again with the same cube_size")
        self.cube_size = prepared
        self.augment = settings.augment
        self.positive_fraction = settings.positive_fraction
        train_cubes, train_labels = load_ncc_split(task_dir, "train")
        val_cubes, self.val_labels = load_ncc_split(task_dir, "val")
        for split, labels in (("train", train_labels), ("val", self.val_labels)):
            if len(labels) == 0:
                raise InputError(task_dir, f"{task} {split} split holds no cubes")
        self.subset = choose_subset([frozenset({int(y)}) for y in train_labels],
                                    label_fraction, seed, task)
        if self.subset.n_labelled == len(train_labels):
            self.train_cubes, self.train_labels = train_cubes, train_labels
        else:  # a view of the memory map would re-read scattered rows every epoch
            self.train_cubes = np.asarray(train_cubes[self.subset.indices])
            self.train_labels = train_labels[self.subset.indices]
        self.val_cubes = _center(np.asarray(val_cubes), prepared)

    def epoch_size(self) -> int:
        return len(self.train_labels)

    def batches(self, epoch_seed: int, steps: int, batch_size: int) -> Iterator[Batch]:
        from genesis.tasks.prepared import augment_ncc, crop_center

        order = self._order(steps, batch_size, np.random.default_rng(epoch_seed))
        generator = torch.Generator().manual_seed(derive_seed(epoch_seed, "augment"))
        for step in range(steps):
            index = np.sort(order[step * batch_size:(step + 1) * batch_size])
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
        return np.concatenate([pos.reshape(steps, n_pos),
                               neg.reshape(steps, batch_size - n_pos)], axis=1).reshape(-1)

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.val_cubes, self.val_labels.astype(np.float32)


class NccData(ClassificationData):
    """NCC's cubes: ``ClassificationData`` under the task name ``ncc``."""

    def __init__(self, task_dir: Path, settings: FinetuneSettings,
                 label_fraction: float = 1.0, seed: int = 0) -> None:
        super().__init__("ncc", task_dir, settings, label_fraction, seed)


class SegmentationData:
    """Whole prepared volumes; patches biased to the foreground (BMS: two-stage crop).

    Labels are class indices (0 background); a binary task's are 0/1 masks.
    """

    def __init__(self, task: str, task_dir: Path, settings: FinetuneSettings,
                 label_fraction: float = 1.0, seed: int = 0) -> None:
        from genesis.tasks.prepared import PatchSampler, outer_patch_size

        self.cube_size = segmentation_cube_size(task_dir, settings.cube_size)
        self.patches_per_case = settings.patches_per_case
        outer = outer_patch_size(self.cube_size) if two_stage_crop(task) else None
        images, labels = _load_volumes(task_dir, "train")
        present = [frozenset(int(v) for v in np.unique(label) if v) for label in labels]
        self.subset = choose_subset(present, label_fraction, seed, task)
        train = ([images[i] for i in self.subset.indices],
                 [labels[i] for i in self.subset.indices])
        val = _load_volumes(task_dir, "val")
        self.n_train = len(train[0])
        self.sampler = PatchSampler(*train, self.cube_size, settings.foreground_ratio, outer)
        # Fixed validation patches, the same for every run and epoch.
        n_val = settings.val_patches_per_case * len(val[0])
        val_sampler = PatchSampler(*val, self.cube_size, settings.foreground_ratio, outer)
        self.val_images, self.val_labels = val_sampler.sample(
            n_val, numpy_rng(VALIDATION_SEED, "finetune-validation", task))

    def epoch_size(self) -> int:
        return self.patches_per_case * self.n_train

    def batches(self, epoch_seed: int, steps: int, batch_size: int) -> Iterator[Batch]:
        generator = np.random.default_rng(epoch_seed)
        for _ in range(steps):
            images, labels = self.sampler.sample(batch_size, generator)
            yield (torch.from_numpy(images)[:, None],
                   torch.from_numpy(labels.astype(np.float32))[:, None])

    def validation(self) -> tuple[np.ndarray, np.ndarray]:
        return self.val_images, self.val_labels.astype(np.float32)[:, None]


def segmentation_cube_size(task_dir: Path, configured: tuple[int, ...] | None
                           ) -> tuple[int, int, int]:
    """The configured patch size, else the one recorded by `prepare`, else the paper's."""
    from genesis.tasks.prepared import PAPER_CUBE, read_prepare_json

    if configured is not None:
        return (int(configured[0]), int(configured[1]), int(configured[2]))
    recorded = read_prepare_json(task_dir).get("settings", {}).get("cube_size")
    size = tuple(int(n) for n in recorded) if recorded else PAPER_CUBE
    check_cube_size(size, f"cube_size in {task_dir}/prepare.json")
    return (size[0], size[1], size[2])


def _load_volumes(task_dir: Path, split: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Images (float16, the stored precision, to halve memory) and labels of a split."""
    from genesis.tasks.prepared import iter_cases

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
    from genesis.tasks.prepared import crop_center

    return np.ascontiguousarray(crop_center(cubes[:, None], size)[:, 0], dtype=np.float32)


def _epoch_order(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` indices: whole shuffled passes over ``range(n)``, as many as needed."""
    passes = math.ceil(count / n)
    if passes == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate([rng.permutation(n) for _ in range(passes)])[:count]


def load_task_data(task: str, info: TaskInfo, task_dir: Path, settings: FinetuneSettings,
                   label_fraction: float = 1.0, seed: int = 0
                   ) -> ClassificationData | SegmentationData:
    if info.kind == "segmentation":
        return SegmentationData(task, task_dir, settings, label_fraction, seed)
    return ClassificationData(task, task_dir, settings, label_fraction, seed)


# --------------------------------------------------------------------------------------
# Model


def build_model(info: TaskInfo, settings: FinetuneSettings, batch_stats: bool,
                keras: bool = False) -> nn.Module:
    """The U-Net (segmentation) or the encoder classifier, with one output per class.

    Binary tasks keep the release's heads: a 1-channel sigmoid U-Net and a 1-logit
    classifier. More classes: raw logits over every class (softmax in loss and inference).
    ``keras`` builds the Keras release's architecture instead.
    """
    from genesis.models import GenesisClassifier, KerasClassifier, KerasUNet3D, UNet3D

    if info.kind == "segmentation":
        activation = None if info.multiclass else "sigmoid"
        unet = KerasUNet3D if keras else UNet3D
        return unet(in_channels=1, out_channels=info.n_outputs, width=settings.width,
                    batch_stats=batch_stats, final_activation=activation)
    classifier = KerasClassifier if keras else GenesisClassifier
    return classifier(n_classes=info.n_outputs, width=settings.width, batch_stats=batch_stats,
                      hidden=settings.hidden)


def _load_keras(model: nn.Module, path: Path, encoder_only: bool, except_head: bool) -> Any:
    """The Keras release into ``model``; for a new head, through a 1-channel twin first
    (the file's head has one channel) and then every tensor but the head."""
    from genesis.models import KerasUNet3D, load_keras_weights
    from genesis.models.keras_unet import HEAD

    if not except_head:
        return load_keras_weights(model, path, encoder_only=encoder_only)
    twin = KerasUNet3D(in_channels=model.in_channels, out_channels=1, width=model.width)
    report = load_keras_weights(twin, path)
    body = {k: v for k, v in twin.state_dict().items() if not k.startswith(f"{HEAD}.")}
    missing, unexpected = model.load_state_dict(body, strict=False)
    if unexpected or any(not k.startswith(f"{HEAD}.") for k in missing):
        raise WeightsError(f"{path}: Keras weights do not fit the model ({missing}, "
                          f"{unexpected})")
    return dataclasses.replace(report, loaded=tuple(body),
                               kept=tuple(k for k in model.state_dict() if k not in body))


def memory_format(channels_last: bool) -> torch.memory_format:
    return torch.channels_last_3d if channels_last else torch.contiguous_format


def initialise(model: nn.Module, info: TaskInfo, init: Init,
               reset_head: bool = False) -> dict[str, Any]:
    """Load the init's weights strictly and describe what happened.

    Classification loads the encoder; binary segmentation the whole U-Net; segmentation
    with more classes every layer but the head (whose channels differ). ``reset_head``
    re-draws the segmentation head after loading (from the seeded global generator, so
    runs stay reproducible).
    """
    from genesis.models import load_weights
    from genesis.provenance import file_sha256

    if init.weights is None:
        log.info("init scratch: random weights")
        return {"init": init.name, "weights": None}
    segmentation = info.kind == "segmentation"
    encoder_only = not segmentation
    except_head = segmentation and info.multiclass
    if init.keras:
        report = _load_keras(model, init.weights, encoder_only, except_head)
    else:
        report = load_weights(model, init.weights, encoder_only=encoder_only,
                              except_head=except_head)
    log.info("init %s: %s", init.name, report.summary())
    head_reset = reset_head and segmentation and not except_head
    if head_reset:
        model.out_tr.final_conv.reset_parameters()
        log.info("init %s: segmentation head out_tr.final_conv re-initialised (reset_head)",
                 init.name)
    return {"init": init.name, "weights": str(init.weights), "head_reset": head_reset,
            "weights_sha256": file_sha256(init.weights), "encoder_only": encoder_only,
            "except_head": except_head,
            "loaded": len(report.loaded), "kept_random": len(report.kept),
            "skipped": len(report.skipped), "source_epoch": report.epoch}


# --------------------------------------------------------------------------------------
# Training loop


@dataclass(frozen=True)
class FinetuneResult:
    """What a finished run produced."""

    weights: list[Path]
    curves: list[dict[str, float]]
    best_epoch: int
    stop_reason: str


def finetune(
    task: str,
    data_dir: str | Path,
    output_dir: str | Path,
    init: Init,
    seed: int,
    settings: FinetuneSettings,
    *,
    run: int | None = None,
    label_fraction: float = 1.0,
    device: torch.device | str = "cpu",
    on_epoch_end: Callable[[int], None] | None = None,
) -> FinetuneResult:
    """Train (or resume) one run; write checkpoint, curves and best weights to output_dir.

    ``label_fraction`` < 1 trains on that share of the training cases (nested subsets,
    chosen from ``seed``: the same for every init). ``on_epoch_end(epoch)`` is called after
    each epoch's checkpoint (tests interrupt training there).

    Raises:
        DivergedError: a training or validation loss was NaN or infinite; the
            checkpoint of the last good epoch is kept and no weights are written.
    """
    check_name(task)
    label_fraction = check_fraction(label_fraction, "--label-fraction")
    data_dir, output_dir = Path(data_dir), Path(output_dir)
    info = task_info(data_dir)
    expected_kind = preset_kind(task)
    if expected_kind is not None and expected_kind != info.kind:
        raise InputError(data_dir, f"holds a {info.kind} task, but {task} is {expected_kind}")
    device = torch.device(device)
    output_dir.mkdir(parents=True, exist_ok=True)
    settings_map = to_mapping(settings)
    data = load_task_data(task, info, data_dir, settings, label_fraction, seed)
    subset = data.subset
    if label_fraction < 1:
        log.info("%s: labelled subset %g -> %d of %d training cases", task, label_fraction,
                 subset.n_labelled, subset.n_total)
    batch_stats = init.batch_stats(settings)
    set_determinism(derive_seed(seed, "finetune", task, "init"))
    model = build_model(info, settings, batch_stats, keras=init.keras)
    init_record = initialise(model, info, init, settings.reset_head)
    model.to(device, memory_format=memory_format(settings.channels_last))
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=settings.lr_factor, patience=settings.lr_patience)
    loss_fn = build_loss(info.kind, info.n_classes)
    state = _resume_state(output_dir / CHECKPOINT, task, init, seed, settings_map,
                          model, optimizer, scheduler, label_fraction)
    steps = settings.steps_per_epoch or max(1, math.ceil(data.epoch_size() / settings.batch_size))
    started = time.monotonic() - state["seconds"]
    _check_stop(state, settings)  # a resumed run may be done, or have a new budget
    while not state["finished"]:
        epoch = state["epoch"] + 1
        epoch_seed = derive_seed(seed, "finetune", task, "epoch", epoch)
        train_loss = _train_epoch(model, optimizer, loss_fn,
                                  data.batches(epoch_seed, steps, settings.batch_size), device)
        val_loss, val_metric = _validate(model, loss_fn, info, *data.validation(),
                                         settings.batch_size, device)
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            raise DivergedError(
                f"{task}: diverged at epoch {epoch} (training loss {train_loss:.4g}, "
                f"validation loss {val_loss:.4g}, learning rate "
                f"{optimizer.param_groups[0]['lr']:.3g}); no weights written. Lower "
                f"tasks.{task}.finetune.lr")
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        state["curves"].append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss,
                                "val_metric": val_metric, "lr": lr})
        _update_best(state, model, epoch, val_loss)
        state["epoch"] = epoch
        state["seconds"] = time.monotonic() - started
        _check_stop(state, settings)
        log.info("%s epoch %d: train %.4f, val %.4f, val %s %.4f, lr %.3g (%.1f s)%s", task,
                 epoch, train_loss, val_loss, "iou" if info.kind == "segmentation" else "auc",
                 val_metric, lr, state["seconds"],
                 f"; stopping: {state['stop_reason']}" if state["finished"] else "")
        _save_state(output_dir, state, model, optimizer, scheduler)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    # Outputs are rewritten even for a run resumed as finished: Snakemake deletes a job's
    # outputs before it runs, and the checkpoint alone must be enough to restore them.
    write_curves(output_dir / CURVES, state["curves"])
    model.load_state_dict(state["best_state"])
    record = {
        "stage": "finetune", "task": task, "kind": info.kind, "init": init.name, "seed": seed,
        "run": run, **subset.record(), "classes": list(info.classes),
        "class_names": list(info.class_names),
        "settings": settings_map, "cube_size": list(data.cube_size),
        "batch_stats": batch_stats, "init_weights": init_record,
        "best_epoch": state["best_epoch"], "best_val_loss": state["best_val_loss"],
        "epochs": state["epoch"], "stop_reason": state["stop_reason"],
        "seconds": round(state["seconds"], 2), "data": str(data_dir),
    }
    weights = _save_best(model, output_dir, record, settings_map, seed, data_dir,
                         state["best_epoch"])
    return FinetuneResult(weights, list(state["curves"]), state["best_epoch"],
                          state["stop_reason"])


def _train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: Callable[[Tensor, Tensor], Tensor],
                 batches: Iterator[tuple[Tensor, Tensor]], device: torch.device) -> float:
    """One epoch of updates; the sample-weighted mean training loss."""
    from genesis.tasks.inference import autocast_for

    model.train()
    total, count = 0.0, 0
    for inputs, targets in batches:
        inputs, targets = inputs.to(device), targets.to(device)
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device):
            outputs = model(inputs)
        loss = loss_fn(outputs, targets)
        loss.backward()
        optimizer.step()
        total += float(loss.detach()) * len(inputs)
        count += len(inputs)
    return total / count


def _validate(model: nn.Module, loss_fn: Callable[[Tensor, Tensor], Tensor], info: TaskInfo,
              inputs: np.ndarray, targets: np.ndarray, batch_size: int,
              device: torch.device) -> tuple[float, float]:
    """Loss and metric on the whole validation set (classification: AUC, the mean over
    classes one-vs-rest for more than two; segmentation: pooled IoU, the mean over the
    foreground classes for more than one).

    Outputs are gathered first and the loss computed once, so the segmentation Dice is
    pooled over all validation patches, like the training loss over a batch.
    """
    from genesis.tasks.inference import autocast_for
    from genesis.tasks.metrics import iou, mean_class_iou, rank_auc

    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch_size):
            batch = torch.from_numpy(np.asarray(inputs[start:start + batch_size],
                                                dtype=np.float32))[:, None].to(device)
            with autocast_for(device):
                outputs.append(model(batch).float().cpu())
        output = torch.cat(outputs)
        target = torch.from_numpy(np.asarray(targets, dtype=np.float32))
        loss = float(loss_fn(output, target))
    if not math.isfinite(loss) or not torch.isfinite(output).all():
        return math.inf, float("nan")
    if info.kind == "segmentation":
        if info.multiclass:
            return loss, mean_class_iou(output.argmax(dim=1).numpy(),
                                        target[:, 0].numpy().astype(np.int64),
                                        info.n_classes)
        return loss, iou(output.numpy() >= 0.5, target.numpy())
    try:
        if info.multiclass:
            labels = np.asarray(targets).astype(np.int64)
            scores = output.softmax(dim=1).numpy()
            return loss, float(np.mean([rank_auc(labels == k, scores[:, k])
                                        for k in range(info.n_classes)]))
        return loss, rank_auc(targets, output.reshape(-1).numpy())
    except InputError:  # one class in a tiny validation split: AUC undefined
        return loss, float("nan")


def _update_best(state: dict[str, Any], model: nn.Module, epoch: int, val_loss: float) -> None:
    """Keep the weights of the lowest validation loss; count epochs without improvement."""
    if val_loss < state["best_val_loss"]:
        state["best_val_loss"] = val_loss
        state["best_epoch"] = epoch
        state["best_state"] = {k: v.detach().cpu().clone()
                               for k, v in model.state_dict().items()}
        state["bad_epochs"] = 0
    else:
        state["bad_epochs"] += 1


def _check_stop(state: dict[str, Any], settings: FinetuneSettings) -> None:
    reason = ""
    if state["bad_epochs"] >= settings.early_stop_patience:
        reason = (f"early stopping: no lower validation loss for "
                  f"{settings.early_stop_patience} epochs")
    elif state["epoch"] >= settings.max_epochs:
        reason = f"max_epochs ({settings.max_epochs}) reached"
    elif settings.max_minutes is not None and state["seconds"] > 60 * settings.max_minutes:
        reason = f"time budget of {settings.max_minutes} min spent"
    state["finished"] = bool(reason)
    state["stop_reason"] = reason


# --------------------------------------------------------------------------------------
# Checkpoints, curves and weights


def _resume_state(path: Path, task: str, init: Init, seed: int, settings: dict[str, Any],
                  model: nn.Module, optimizer: torch.optim.Optimizer,
                  scheduler: Any, label_fraction: float = 1.0) -> dict[str, Any]:
    """A fresh state, or the checkpoint's (checked to belong to the same run)."""
    from genesis.provenance import file_sha256
    from genesis.train.checkpoint import load_checkpoint, restore_rng_state

    # The weights' content, not just their path: re-pretrained weights make a new run.
    identity = {"task": task, "init": init.name, "seed": seed,
                "label_fraction": label_fraction,
                "init_weights": str(init.weights) if init.weights else None,
                "init_weights_sha256": file_sha256(init.weights) if init.weights else None}
    checkpoint = load_checkpoint(path)
    stale = None if checkpoint is None else _stale_reason(checkpoint, identity, settings)
    if stale:
        # Snakemake reruns a job whose parameters changed: its old checkpoint is stale.
        log.warning("%s: %s; starting afresh", path, stale)
    if checkpoint is None or stale:
        return {**identity, "settings": settings, "epoch": 0, "curves": [], "seconds": 0.0,
                "best_val_loss": math.inf, "best_epoch": 0, "bad_epochs": 0,
                "best_state": {k: v.detach().cpu().clone()
                               for k, v in model.state_dict().items()},
                "finished": False, "stop_reason": ""}
    model.load_state_dict(checkpoint.pop("model"))
    optimizer.load_state_dict(checkpoint.pop("optimizer"))
    scheduler.load_state_dict(checkpoint.pop("scheduler"))
    restore_rng_state(checkpoint.pop("rng"))
    checkpoint["settings"] = settings
    log.info("resuming %s after epoch %d", path, checkpoint["epoch"])
    return checkpoint


def _stale_reason(checkpoint: dict[str, Any], identity: dict[str, Any],
                  settings: dict[str, Any]) -> str | None:
    """Why a checkpoint cannot be resumed (another run, or changed settings), or None."""
    for key, value in identity.items():
        # Checkpoints from before label sweeps trained on every case.
        if checkpoint.get(key, 1.0 if key == "label_fraction" else None) != value:
            return (f"checkpoint belongs to another run ({key} {checkpoint.get(key)!r}, "
                    f"now {value!r})")
    old = checkpoint.get("settings", {})
    changed = sorted(k for k in set(old) | set(settings)
                     if k not in RESUMABLE_CHANGES and _norm(old.get(k)) != _norm(settings.get(k)))
    if changed:
        return f"checkpoint was trained with other settings ({', '.join(changed)})"
    return None


def _norm(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _save_state(output_dir: Path, state: dict[str, Any], model: nn.Module,
                optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    from genesis.train.checkpoint import rng_state, save_checkpoint

    write_curves(output_dir / CURVES, state["curves"])
    save_checkpoint(output_dir / CHECKPOINT, {
        **state, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(), "rng": rng_state(),
    })


def write_curves(path: Path, rows: list[dict[str, float]]) -> None:
    """``curves.csv``: epoch, train_loss, val_loss, val_metric, lr (atomic rewrite)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=FINETUNE_CURVE_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: (row[key] if key == "epoch" else f"{row[key]:.6g}")
                         for key in FINETUNE_CURVE_COLUMNS})
    write_text(path, buffer.getvalue())


def _save_best(model: nn.Module, output_dir: Path, record: dict[str, Any],
               settings: dict[str, Any], seed: int, data_dir: Path, epoch: int) -> list[Path]:
    from genesis.models import save_weights
    from genesis.provenance import provenance_record
    from genesis.tasks.prepared import PREPARE_JSON

    provenance = provenance_record(settings=settings, seeds={"finetune": seed},
                                   data_manifest=data_dir / PREPARE_JSON)
    provenance["finetune"] = record
    model.cpu()
    return save_weights(model, output_dir / WEIGHTS_STEM, provenance=provenance, epoch=epoch)


def run_number(output_dir: str | Path) -> int | None:
    """``k`` of an output folder named ``run<k>`` (the workflow's layout), else None."""
    match = re.fullmatch(r"run(\d+)", Path(output_dir).name)
    return int(match.group(1)) if match else None
