"""Gather the figures' data from the files the workflow declares, and nothing else.

Every reader here takes the paths it reads (a rule's inputs) and never globs a results
folder, so a leftover run folder (``run9`` after ``tasks.runs`` shrank) cannot leak into a
figure. A run's task, initialisation and number come from its folder's spelling,
``finetune/<task>/<init>/run<k>`` (a label sweep's: ``.../<init>/labels<pct>/run<k>``).
The drawing lives in ``genesis.report.figures``.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from genesis.errors import InputError
from genesis.io.tables import FINETUNE_CURVE_COLUMNS, PRETRAIN_METRICS_COLUMNS, read_csv
from genesis.report.tables import init_order

log = logging.getLogger(__name__)

RUN_FOLDER = re.compile(r"run(\d+)")
LABELS_FOLDER = re.compile(r"labels(\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class RunKey:
    """Which fine-tuning run a folder holds, read from its path."""

    task: str
    init: str
    run: int
    labels: str | None = None  # a label sweep's percentage; None: all training labels

    @property
    def name(self) -> str:
        """``run<k>``, or ``labels<pct>/run<k>`` for a label sweep's run."""
        return f"run{self.run}" if self.labels is None else f"labels{self.labels}/run{self.run}"

    @property
    def group(self) -> str:
        """The init, with the labelled share for a sweep's run: what a legend shows."""
        return self.init if self.labels is None else f"{self.init} ({self.labels}% labels)"


def run_key(folder: str | Path) -> RunKey:
    """Task, init and run number of ``finetune/<task>/<init>/[labels<pct>/]run<k>``."""
    folder = Path(folder)
    match = RUN_FOLDER.fullmatch(folder.name)
    init_dir, labels = folder.parent, None
    sweep = LABELS_FOLDER.fullmatch(init_dir.name)
    if sweep:
        init_dir, labels = init_dir.parent, sweep.group(1)
    if match is None or not init_dir.name or not init_dir.parent.name:
        raise InputError(
            folder, "is not a run folder <task>/<init>/run<k> (or <task>/<init>/labels<pct>/run<k>)"
        )
    return RunKey(init_dir.parent.name, init_dir.name, int(match.group(1)), labels)


def _keyed(paths: Sequence[str | Path], task: str | None, what: str) -> list[tuple[RunKey, Path]]:
    """(run, path) of files (or folders) directly in run folders: each given once and,
    with ``task``, of that task."""
    keyed = [(run_key(Path(path).parent), Path(path)) for path in paths]
    seen: set[RunKey] = set()
    for key, path in keyed:
        if task is not None and key.task != task:
            raise InputError(path, f"is a run of task '{key.task}', not '{task}'")
        if key in seen:
            raise InputError(path, f"a second {what} of {key.task}/{key.init}/{key.name}")
        seen.add(key)
    return keyed


def _sorted_runs(keyed: list[tuple[RunKey, Path]]) -> list[tuple[RunKey, Path]]:
    """Init order (scratch, genesis, released, ...), full labels first, then run number."""
    order = {init: k for k, init in enumerate(init_order({key.init for key, _ in keyed}))}
    return sorted(
        keyed,
        key=lambda item: (
            order[item[0].init],
            item[0].labels is not None,
            float(item[0].labels or 0),
            item[0].run,
        ),
    )


# --- pretraining ---------------------------------------------------------------------------


def read_pretrain_metrics(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """``pretrain/<variant>/metrics.csv`` files, keyed by variant (the folder name)."""
    metrics = {}
    for path in sorted(map(Path, paths)):
        if path.parent.name in metrics:
            raise InputError(path, f"a second metrics.csv of variant '{path.parent.name}'")
        frame = read_csv(path, PRETRAIN_METRICS_COLUMNS, allow_empty=False)
        metrics[path.parent.name] = frame.sort_values("epoch")
    if not metrics:
        raise InputError(None, "no pretraining metrics.csv given")
    return metrics


# --- learning curves -----------------------------------------------------------------------


def read_curves(
    paths: Sequence[str | Path], task: str | None = None
) -> dict[str, list[pd.DataFrame]]:
    """The given ``<task>/<init>/run<k>/curves.csv`` files, grouped by init in run order.

    Only these files are read; a label sweep's run forms its own group ("genesis (25%
    labels)"). With ``task``, every file must belong to a run of that task.
    """
    if not paths:
        raise InputError(None, "no curves.csv given")
    curves: dict[str, list[pd.DataFrame]] = {}
    for key, path in _sorted_runs(_keyed(paths, task, "curves.csv")):
        frame = read_csv(path, FINETUNE_CURVE_COLUMNS, allow_empty=False).sort_values("epoch")
        curves.setdefault(key.group, []).append(frame)
    return curves


# --- segmentations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Overlay:
    """One panel: an axial slice with its ground truth and one run's prediction."""

    case: str
    init: str
    run: str
    z: int
    image: np.ndarray  # (X, Y) slice
    truth: np.ndarray  # (X, Y) bool
    prediction: np.ndarray  # (X, Y) bool
    iou: float


def segmentation_overlays(
    predictions: Sequence[str | Path],
    task_dir: str | Path,
    *,
    task: str | None = None,
    per_case: Sequence[str | Path] = (),
    inits: Sequence[str] | None = None,
    n_cases: int = 3,
) -> list[list[Overlay]]:
    """Rows of overlays (one row per case, one panel per init) from the given runs.

    ``predictions`` are run folders' ``predictions/`` folders; of each init the first run
    given (lowest number, all labels first) is shown. ``task_dir`` is the prepared task
    folder (``volumes/<case>.npz``, ``cases.csv``); ``per_case`` the runs' per_case.csv
    files, whose IoU is shown (recomputed on the prepared grid for a run without one).
    ``inits`` keeps only those inits, in that order. The slice shown is the axial slice
    with the most ground-truth foreground.
    """
    task_dir = Path(task_dir)
    volumes = task_dir / "volumes"
    first: dict[str, tuple[RunKey, Path]] = {}
    for key, folder in _sorted_runs(_keyed(predictions, task, "predictions/")):
        first.setdefault(key.init, (key, folder))
    if inits is not None:
        first = {init: first[init] for init in inits if init in first}
    if not first:
        wanted = "" if inits is None else f" of {list(inits)}"
        raise InputError(None, f"no predictions/ folder{wanted} given")
    scores = _per_case_iou(per_case, task)
    cases = sorted(
        set.intersection(
            *({_case_name(p) for p in folder.glob("*.nii*")} for _, folder in first.values())
        )
        & {path.stem for path in volumes.glob("*.npz")}
    )
    if not cases:
        raise InputError(volumes, "no test case has both a prepared volume and predictions")
    geometry = _case_geometry(task_dir / "cases.csv")
    rows = []
    for case in cases[:n_cases]:
        image, truth = _prepared_case(volumes / f"{case}.npz")
        z = int(np.argmax(truth.sum(axis=(0, 1))))
        row = []
        for init, (key, folder) in first.items():
            prediction = _prediction(folder, case, truth.shape, geometry.get(case))
            iou = scores.get((key, case))
            if iou is None:
                union = np.logical_or(truth, prediction).sum()
                iou = float(np.logical_and(truth, prediction).sum() / union) if union else math.nan
            row.append(
                Overlay(
                    case,
                    init,
                    key.name,
                    z,
                    image[:, :, z],
                    truth[:, :, z],
                    prediction[:, :, z],
                    iou,
                )
            )
        rows.append(row)
    return rows


def _per_case_iou(paths: Sequence[str | Path], task: str | None) -> dict[tuple[RunKey, str], float]:
    """(run, case) -> the evaluated IoU from the given per_case.csv files."""
    scores = {}
    for key, path in _keyed(paths, task, "per_case.csv"):
        if not path.is_file():
            raise InputError(path, "does not exist")
        frame = pd.read_csv(path, dtype={"case": str})  # case names such as 001 stay text
        if not {"case", "iou"} <= set(frame.columns):
            raise InputError(path, "needs the columns case and iou")
        for case, iou in zip(frame["case"].astype(str), frame["iou"], strict=True):
            scores[key, case] = float(iou)
    return scores


def _case_name(path: Path) -> str:
    return path.name.removesuffix(".gz").removesuffix(".nii")


def _prepared_case(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(image, label) of a prepared test case; a multi-channel image shows channel 0."""
    try:
        with np.load(path) as archive:
            image, label = archive["image"], archive["label"]
    except (OSError, ValueError, KeyError) as error:
        raise InputError(path, f"cannot read image and label: {error}") from None
    if image.ndim == 4:  # (x, y, z, c): channel 0 (FLAIR for BraTS) shows the tumour best
        image = image[..., 0]
    if image.ndim != 3 or image.shape != label.shape:
        raise InputError(path, f"image {image.shape} and label {label.shape} do not match")
    return image.astype(np.float32), label > 0


def _prediction(
    folder: Path, case: str, shape: tuple[int, ...], geometry: Mapping[str, object] | None
) -> np.ndarray:
    """The saved binary prediction, brought onto the prepared grid for display.

    Predictions are saved in the source geometry; the prepared volume may be cropped to
    the foreground and resized (LCS: 256 x 256 in-plane), as ``cases.csv`` records. The
    crop is applied, then nearest-neighbour index mapping (nearest-exact: the source voxel
    whose centre is closest) aligns the mask with the prepared image.
    """
    from genesis.io.volume import load_volume

    path = sorted(folder.glob(f"{case}.nii*"))[0]
    data = load_volume(path).data
    if data.ndim == 4:
        data = data[..., 0]
    mask = data > 0.5
    if mask.shape == shape:
        return mask
    crop = (geometry or {}).get("crop")
    source_shape = tuple((geometry or {}).get("source_shape") or ())
    if crop is not None and source_shape == mask.shape:
        mask = mask[tuple(slice(int(lo), int(hi)) for lo, hi in crop)]
    log.info("%s: prediction %s shown on the prepared grid %s", path, mask.shape, shape)
    index = [
        np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
        for n, m in zip(shape, mask.shape, strict=True)
    ]
    return mask[np.ix_(*index)]


def _case_geometry(path: Path) -> dict[str, dict[str, object]]:
    """Per-case geometry (crop box, shapes) from ``cases.csv``, when prepare wrote one."""
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str)
    if not {"case", "geometry"} <= set(frame.columns):
        return {}
    try:
        return {row.case: json.loads(row.geometry) for row in frame.itertuples()}
    except json.JSONDecodeError as error:
        raise InputError(path, f"column 'geometry' is not JSON: {error}") from None
