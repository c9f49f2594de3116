"""Evaluate a fine-tuned run on its task's test split.

- Classification (NCC, a user's cubes): ROC AUC (scikit-learn) over every test cube, the
  macro mean over classes one-vs-rest for more than two; ``per_case.csv`` lists
  ``candidate`` (row of the source CSV), ``label`` and ``score`` (one score column per
  class for more than two).
- Segmentation (LCS, BMS, a user's volumes): every test volume is segmented whole, by
  Gaussian-blended sliding windows of the training cube size, and thresholded (binary)
  or arg-maxed over the classes. IoU and Dice are computed per volume on the prepared
  grid (the paper's resized volumes, e.g. 256x256xZ for LiTS), per foreground class and
  as their mean; the reported ``value`` is the mean IoU over test volumes, and
  ``iou_pooled`` (all volumes' voxels together) is recorded as well. Each label map is
  mapped back onto its source scan (``restore_to_source``), carries the source label
  values (those of ``dataset.json``), and is saved as ``predictions/<case>.nii.gz`` with
  the source geometry, so it overlays the original image in ITK-SNAP or 3D Slicer.

The model (class, width, batch norm mode) and the run's task, init, seed and cube size
come from the ``weights.json`` sidecar that fine-tuning wrote, so evaluation cannot drift
from training; settings passed here that contradict it are an error.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from genesis.atomic import write_json, write_text
from genesis.errors import ConfigError, InputError
from genesis.settings import check_bounds, setting
from genesis.tasks.finetune import WEIGHTS_STEM, memory_format, run_number
from genesis.tasks.kinds import TaskInfo, task_info

log = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
PER_CASE_CSV = "per_case.csv"
PREDICTIONS_DIR = "predictions"


@dataclass(frozen=True)
class EvaluateSettings:
    """Evaluation settings (section ``tasks.<task>.evaluate``)."""

    overlap: float = setting(
        0.5,
        "Fraction of a window shared with its neighbours, in [0, 1).",
        bounds="[0, 1)",
    )
    mode: Literal["gaussian", "constant"] = setting(
        "gaussian",
        "Blending of overlapping windows: `gaussian` (a window's centre counts most) or `constant` "
        "(plain mean).",
    )
    threshold: float = setting(
        0.5,
        "Probability at or above which a voxel is foreground, in (0, 1).",
        bounds="(0, 1)",
    )
    sw_batch_size: int = setting(
        4,
        "Windows per forward pass. With `batch_stats` models a window's prediction depends on the "
        "others in its batch, so it is recorded with the metrics.",
        bounds="[1, inf)",
    )
    batch_size: int = setting(
        24,
        "NCC: cubes per forward pass.",
        bounds="[1, inf)",
    )
    save_predictions: bool = setting(
        True,
        "Segmentation: write `predictions/<case>.nii.gz` on the source grid.",
    )
    width: int | None = setting(
        None,
        "Base width of the model; when given it must match the fine-tuned run's. The workflow "
        "fills it in from model.width.",
        bounds="[1, inf)",
    )
    cube_size: tuple[int, int, int] | None = setting(
        None,
        "Sliding-window size (x, y, z); when given it must match the fine-tuned run's. The "
        "workflow fills it in from the top-level cube_size.",
        bounds="[1, inf)",
    )

    def __post_init__(self) -> None:
        check_bounds(self, "tasks.<task>.evaluate")


@dataclass(frozen=True)
class RunRecord:
    """What fine-tuning recorded about a run (``weights.json`` -> ``finetune``)."""

    weights: Path
    task: str
    init: str
    seed: int
    run: int | None
    settings: dict[str, Any]
    cube_size: tuple[int, int, int]
    model_class: str
    model_config: dict[str, Any]
    #: label_fraction, n_labelled, n_train_cases (absent before label sweeps: all cases)
    labels: dict[str, Any]


def read_run(run_dir: str | Path) -> RunRecord:
    """The fine-tuned run in ``run_dir``, from its weights sidecar."""
    run_dir = Path(run_dir)
    sidecar = run_dir / f"{WEIGHTS_STEM}.json"
    weights = run_dir / f"{WEIGHTS_STEM}.pt"
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        finetune, model = record["finetune"], record["weights"]
        return RunRecord(
            weights,
            finetune["task"],
            finetune["init"],
            int(finetune["seed"]),
            finetune.get("run"),
            finetune["settings"],
            tuple(int(n) for n in finetune["cube_size"]),
            model["model"],
            model["model_config"],
            {key: finetune.get(key) for key in ("label_fraction", "n_labelled", "n_train_cases")},
        )
    except FileNotFoundError:
        raise InputError(sidecar, "missing; run `genesis finetune` first") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise InputError(sidecar, f"not a fine-tuning weights record ({error!r})") from None


def build_run_model(run: RunRecord) -> nn.Module:
    """The run's model, rebuilt from its recorded class and arguments, weights loaded."""
    from genesis.models import (
        GenesisClassifier,
        KerasClassifier,
        KerasUNet3D,
        UNet3D,
        load_weights,
    )

    classes: dict[str, type[nn.Module]] = {
        "UNet3D": UNet3D,
        "GenesisClassifier": GenesisClassifier,
        "KerasUNet3D": KerasUNet3D,
        "KerasClassifier": KerasClassifier,
    }
    if run.model_class not in classes:
        raise InputError(run.weights, f"unknown model class {run.model_class!r}")
    model = classes[run.model_class](**run.model_config)
    load_weights(model, run.weights)
    return model


def check_consistent(run: RunRecord, task: str, settings: EvaluateSettings) -> None:
    if run.task != task:
        raise ConfigError(f"--task {task} but {run.weights} was fine-tuned for {run.task}")
    if settings.width is not None and settings.width != run.model_config.get("width"):
        raise ConfigError(
            f"tasks.{task}.evaluate.width {settings.width} differs from the run's "
            f"width {run.model_config.get('width')} ({run.weights})"
        )
    if settings.cube_size is not None and tuple(settings.cube_size) != run.cube_size:
        raise ConfigError(
            f"tasks.{task}.evaluate.cube_size {list(settings.cube_size)} differs "
            f"from the run's {list(run.cube_size)} ({run.weights})"
        )


def evaluate(
    task: str,
    data_dir: str | Path,
    run_dir: str | Path,
    settings: EvaluateSettings,
    device: torch.device | str = "cpu",
) -> dict[str, Any]:
    """Score the run on the test split; write metrics.json, per_case.csv (, predictions/)."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    run = read_run(run_dir)
    check_consistent(run, task, settings)
    (run_dir / PREDICTIONS_DIR).mkdir(exist_ok=True)  # a declared output, even if empty
    info = task_info(data_dir)
    model = build_run_model(run).to(
        device, memory_format=memory_format(bool(run.settings.get("channels_last", True)))
    )
    if info.kind == "segmentation":
        results = _evaluate_segmentation(model, run, info, data_dir, run_dir, settings, device)
    else:
        results = _evaluate_classification(model, run, info, data_dir, run_dir, settings, device)
    number = run.run if run.run is not None else run_number(run_dir)
    fraction = run.labels.get("label_fraction")
    metrics = {
        "task": task,
        "kind": info.kind,
        "init": run.init,
        "run": number,
        "seed": run.seed,
        "fraction": 1.0 if fraction is None else fraction,
        "n_labelled": run.labels.get("n_labelled"),
        "weights": str(run.weights),
        "evaluation": _settings_record(settings),
        **results,
    }
    write_json(run_dir / METRICS_JSON, metrics)
    log.info(
        "%s %s run %s: %s = %.4f over %d test cases",
        task,
        run.init,
        number,
        metrics["metric"],
        metrics["value"],
        metrics["n_cases"],
    )
    return metrics


def _settings_record(settings: EvaluateSettings) -> dict[str, Any]:
    from genesis.settings import to_mapping

    return to_mapping(settings)


def _evaluate_classification(
    model: nn.Module,
    run: RunRecord,
    info: TaskInfo,
    data_dir: Path,
    run_dir: Path,
    settings: EvaluateSettings,
    device: torch.device | str,
) -> dict[str, Any]:
    from genesis.tasks.inference import predict_scores
    from genesis.tasks.metrics import roc_auc
    from genesis.tasks.prepared import crop_center, load_ncc_candidates, load_ncc_split

    cubes, labels = load_ncc_split(data_dir, "test")
    candidates = load_ncc_candidates(data_dir, "test")
    cubes = crop_center(cubes[:, None], run.cube_size)[:, 0]  # stored test cubes: identity
    scores = predict_scores(
        model, cubes, batch_size=settings.batch_size, device=device, softmax=info.multiclass
    )
    if info.multiclass:
        from sklearn.metrics import roc_auc_score

        present = np.unique(labels)
        if present.size != info.n_classes:
            raise InputError(
                data_dir,
                f"the test split holds classes {present.tolist()} of "
                f"{info.n_classes}; the macro AUC needs every class",
            )
        auc = float(roc_auc_score(labels, scores, multi_class="ovr", average="macro"))
        score_columns = [f"score_{name}" for name in info.class_names]
        rows = [
            {
                "candidate": int(c),
                "label": int(y),
                **{col: f"{v:.6g}" for col, v in zip(score_columns, s, strict=True)},
            }
            for c, y, s in zip(candidates, labels, scores, strict=True)
        ]
        columns = ("candidate", "label", *score_columns)
    else:
        auc = roc_auc(labels, scores)
        rows = [
            {"candidate": int(c), "label": int(y), "score": f"{s:.6g}"}
            for c, y, s in zip(candidates, labels, scores, strict=True)
        ]
        columns = ("candidate", "label", "score")
    _write_csv(run_dir / PER_CASE_CSV, columns, rows)
    counts = {name: int(np.count_nonzero(labels == k)) for k, name in enumerate(info.class_names)}
    return {
        "metric": "auc",
        "value": auc,
        "n_cases": len(rows),
        "n_positive": int(np.count_nonzero(labels)) if not info.multiclass else None,
        "cases_per_class": counts,
    }


def _evaluate_segmentation(
    model: nn.Module,
    run: RunRecord,
    info: TaskInfo,
    data_dir: Path,
    run_dir: Path,
    settings: EvaluateSettings,
    device: torch.device | str,
) -> dict[str, Any]:
    from genesis.tasks.inference import predict_volume
    from genesis.tasks.metrics import (
        class_overlaps,
        dice_from_counts,
        iou_from_counts,
        pooled_iou,
    )
    from genesis.tasks.prepared import iter_cases

    roi = run.cube_size
    names = info.class_names[1:]
    rows, counts = [], []
    for case in iter_cases(data_dir, "test"):
        probability = predict_volume(
            model,
            case.image,
            roi=roi,
            overlap=settings.overlap,
            mode=settings.mode,
            sw_batch_size=settings.sw_batch_size,
            device=device,
            softmax=info.multiclass,
        )
        if info.multiclass:
            labels = probability.argmax(axis=0).astype(np.uint8)
        else:
            labels = (probability >= settings.threshold).astype(np.uint8)
        overlaps = class_overlaps(labels, case.label, info.n_classes)
        ious = [iou_from_counts(c) for c in overlaps]
        dices = [dice_from_counts(c) for c in overlaps]
        row: dict[str, Any] = {
            "case": case.name,
            "iou": float(np.mean(ious)),
            "dice": float(np.mean(dices)),
        }
        if info.multiclass:
            row.update({f"iou_{n}": v for n, v in zip(names, ious, strict=True)})
            row.update({f"dice_{n}": v for n, v in zip(names, dices, strict=True)})
        rows.append(row)
        counts.append(overlaps)
        if settings.save_predictions:
            save_prediction(
                run_dir / PREDICTIONS_DIR / f"{case.name}.nii.gz", labels, case, info.classes
            )
        log.info("%s: IoU %.4f, Dice %.4f", case.name, row["iou"], row["dice"])
    if not rows:
        raise InputError(data_dir, "no prepared test case; run `genesis prepare` first")
    columns = [key for key in rows[0]]
    _write_csv(
        run_dir / PER_CASE_CSV,
        tuple(columns),
        [{k: (v if k == "case" else f"{v:.6g}") for k, v in r.items()} for r in rows],
    )
    per_class = {
        name: {
            "iou": float(np.mean([iou_from_counts(c[k]) for c in counts])),
            "dice": float(np.mean([dice_from_counts(c[k]) for c in counts])),
            "iou_pooled": pooled_iou([c[k] for c in counts]),
        }
        for k, name in enumerate(names)
    }
    return {
        "metric": "iou",
        "value": float(np.mean([r["iou"] for r in rows])),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "iou_pooled": float(np.mean([v["iou_pooled"] for v in per_class.values()])),
        "per_class": per_class,
        "n_cases": len(rows),
    }


def save_prediction(
    path: Path, labels: np.ndarray, case: Any, values: tuple[str, ...] = ("0", "1")
) -> None:
    """The label map on the source scan's grid and geometry, as uint8 NIfTI, with the
    source label values (class index k is written as ``values[k]``)."""
    from genesis.io import save_nifti
    from genesis.tasks.prepared import restore_to_source

    restored, geometry = restore_to_source(labels.astype(np.uint8), case)
    lookup = np.asarray([int(float(v)) for v in values], dtype=np.int64)
    if not np.array_equal(lookup, np.arange(len(lookup))):
        restored = lookup[restored]
    save_nifti(path, restored.astype(np.uint8), like=geometry)


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
