"""Task kinds and the paper's built-in presets: the one place that names NCC, LCS and BMS.

A target task is one of two kinds:

- ``classification``: one label per cube (NCC's candidate cubes, or the cubes a user's CSV
  describes), an encoder plus a small head, binary cross-entropy for two classes and
  cross-entropy for more, AUC as the metric;
- ``segmentation``: a label map per volume, the whole U-Net with one output channel per
  foreground class (a sigmoid for one class, as the release; a softmax over background
  and the classes for more), soft Dice (plus cross-entropy for several classes), IoU.

The paper's three tasks are presets of those kinds with their published protocols; any
other name is a user task whose kind comes from its config section (and is recorded in
the prepared folder's ``prepare.json``, so fine-tuning and evaluation never need the name
to know what to do).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from genesis.errors import ConfigError, InputError

Kind = Literal["classification", "segmentation"]
KINDS: tuple[str, ...] = ("classification", "segmentation")
#: Task names are folder and wildcard names: lower case, digits, underscores.
NAME_PATTERN = r"[a-z][a-z0-9_]*"


@dataclass(frozen=True)
class Preset:
    """A built-in task: its kind and what its protocol needs beyond the kind's defaults."""

    kind: Kind
    #: ``module:SettingsClass:function`` of its preparation (its own dataset layouts).
    prepare: str
    #: The paper's fine-tuning optimiser settings (facts §5); config keys override them.
    finetune: tuple[tuple[str, float | int], ...]
    #: Segmentation patches cut from a larger random crop first (BMS: 100x100x50 -> 64x64x32).
    two_stage_crop: bool = False


PRESETS: dict[str, Preset] = {
    "ncc": Preset(
        "classification",
        "genesis.tasks.prepare_ncc:NccSettings:prepare_ncc",
        (("lr", 1e-3), ("batch_size", 24), ("early_stop_patience", 10), ("lr_patience", 5)),
    ),
    "lcs": Preset(
        "segmentation",
        "genesis.tasks.prepare_lcs:LcsSettings:prepare_lcs",
        (("lr", 1e-2), ("batch_size", 16), ("early_stop_patience", 20), ("lr_patience", 10)),
    ),
    "bms": Preset(
        "segmentation",
        "genesis.tasks.prepare_bms:BmsSettings:prepare_bms",
        (("lr", 1e-3), ("batch_size", 16), ("early_stop_patience", 30), ("lr_patience", 15)),
        two_stage_crop=True,
    ),
}
#: The preset whose fine-tuning settings a user's task of each kind starts from: the
#: paper's NCC and BMS (Adam at 1e-3 for both; LCS's 1e-2 is specific to its resized CT).
KIND_PRESETS: dict[str, str] = {"classification": "ncc", "segmentation": "bms"}


def check_name(task: str) -> None:
    import re

    if not re.fullmatch(NAME_PATTERN, task):
        raise ConfigError(
            f"task name {task!r} must be lower case letters, digits and "
            f"underscores, starting with a letter"
        )


def check_kind(kind: str, key: str = "kind") -> Kind:
    if kind not in KINDS:
        raise ConfigError(f"{key} must be one of {list(KINDS)}, got {kind!r}")
    return kind  # type: ignore[return-value]


def preset_preparation(task: str) -> tuple[type, object]:
    """(settings class, prepare function) of a built-in task."""
    import importlib

    module, settings, function = PRESETS[task].prepare.split(":")
    loaded = importlib.import_module(module)
    return getattr(loaded, settings), getattr(loaded, function)


def preset_kind(task: str) -> Kind | None:
    """The kind of a built-in task, None for a user task."""
    preset = PRESETS.get(task)
    return preset.kind if preset else None


def two_stage_crop(task: str) -> bool:
    preset = PRESETS.get(task)
    return bool(preset and preset.two_stage_crop)


@dataclass(frozen=True)
class TaskInfo:
    """What a prepared task folder says about itself (``prepare.json``)."""

    kind: Kind
    #: Source label values, background first for segmentation ("0"); as strings.
    classes: tuple[str, ...]
    class_names: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        """Classes including background (segmentation) or all labels (classification)."""
        return len(self.classes)

    @property
    def n_outputs(self) -> int:
        """Model outputs: one for a binary task (sigmoid/logit), else one per class."""
        return 1 if self.n_classes <= 2 else self.n_classes

    @property
    def multiclass(self) -> bool:
        return self.n_classes > 2


def task_info(task_dir: str | Path) -> TaskInfo:
    """Kind and classes of a prepared folder; folders from before task kinds are binary.

    Older folders carry no ``kind``: a ``cases.csv`` means segmentation (LCS/BMS), else
    classification (NCC), both with two classes.
    """
    from genesis.tasks.prepared import CASES_CSV, PREPARE_JSON

    path = Path(task_dir) / PREPARE_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(path, "missing; run `genesis prepare` first") from None
    except (OSError, json.JSONDecodeError) as error:
        raise InputError(path, f"not valid JSON ({error})") from None
    kind = record.get("kind") or (
        "segmentation" if (Path(task_dir) / CASES_CSV).is_file() else "classification"
    )
    if kind not in KINDS:
        raise InputError(path, f"unknown task kind {kind!r}; expected one of {list(KINDS)}")
    classes = tuple(str(c) for c in record.get("classes", ("0", "1")))
    names = tuple(str(n) for n in record.get("class_names", classes))
    if len(classes) < 2 or len(names) != len(classes):
        raise InputError(
            path,
            f"'classes' must list at least two classes (with as many "
            f"'class_names'), got {list(classes)} / {list(names)}",
        )
    return TaskInfo(kind, classes, names)
