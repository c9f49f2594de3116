"""The paper's figures, drawn from files under ``results/`` only.

Every figure is a ``matplotlib.figure.Figure`` built without pyplot, so no global backend
or figure registry is touched, and is saved as PNG (for the report and notebooks) and PDF
(for the paper). Titles, axis labels with units and legends make each one readable without
the code. Colours are fixed per initialisation so all figures agree.
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
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from genesis.atomic import atomic_path
from genesis.errors import InputError
from genesis.io.tables import FINETUNE_CURVE_COLUMNS, PRETRAIN_METRICS_COLUMNS, read_csv
from genesis.report.tables import (
    METRIC_LABELS,
    PUBLISHED_INIT,
    TASK_NAMES,
    init_order,
    task_order,
)

log = logging.getLogger(__name__)

FIXED_COLOURS = {"scratch": "#7f7f7f", "genesis": "#1f77b4", "released": "#ff7f0e"}
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAIN_INITS = ("scratch", "genesis", "released")


def colour(name: str, others: Sequence[str] = ()) -> str:
    """A stable colour: fixed for the main inits, by position in ``others`` otherwise."""
    if name in FIXED_COLOURS:
        return FIXED_COLOURS[name]
    index = list(others).index(name) if name in others else 0
    return OTHER_COLOURS[index % len(OTHER_COLOURS)]


def save_figure(figure: Figure, stem: str | Path) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically; return both paths."""
    stem = Path(stem)
    paths = []
    for suffix, options in ((".png", {"dpi": 150}), (".pdf", {"metadata": {"CreationDate": None}})):
        path = stem.with_name(stem.name + suffix)
        with atomic_path(path) as tmp:
            figure.savefig(tmp, bbox_inches="tight", **options)
        paths.append(path)
    return paths


# --- pretraining ---------------------------------------------------------------------------

def read_pretrain_metrics(paths: Sequence[str | Path]) -> dict[str, pd.DataFrame]:
    """``pretrain/<variant>/metrics.csv`` files, keyed by variant (the folder name)."""
    metrics = {}
    for path in sorted(map(Path, paths)):
        frame = read_csv(path, PRETRAIN_METRICS_COLUMNS, allow_empty=False)
        metrics[path.parent.name] = frame.sort_values("epoch")
    if not metrics:
        raise InputError(None, "no pretraining metrics.csv given")
    return metrics


def pretraining_figure(metrics: Mapping[str, pd.DataFrame]) -> Figure:
    """Train and validation restoration loss per epoch, identity baseline dashed."""
    variants = sorted(metrics, key=lambda v: (v != "all", v))
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    positive = all((frame[["train_loss", "val_loss", "identity_loss"]] > 0).all().all()
                   for frame in metrics.values())
    for ax, column, title in ((axes[0], "train_loss", "Training loss"),
                              (axes[1], "val_loss", "Validation loss")):
        for variant in variants:
            frame = metrics[variant]
            tint = colour("genesis" if variant == "all" else variant, variants[1:])
            ax.plot(frame["epoch"], frame[column], color=tint, lw=1.8, label=variant)
            ax.plot(frame["epoch"], frame["identity_loss"], color=tint, lw=1.2, ls="--")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if positive:
            ax.set_yscale("log")
    axes[0].set_ylabel("MSE (intensities scaled to [0, 1])")
    handles = [Line2D([], [], color=colour("genesis" if v == "all" else v, variants[1:]),
                      lw=1.8, label=f"variant: {v}") for v in variants]
    handles.append(Line2D([], [], color="black", lw=1.2, ls="--",
                          label="identity baseline (output = distorted input)"))
    figure.legend(handles=handles, fontsize=8, loc="outside lower center",
                  ncol=min(len(handles), 4))
    figure.suptitle("Pretraining by image restoration: loss per epoch", fontweight="bold")
    return figure


# --- target-task bars ----------------------------------------------------------------------

def bars_figure(
    summary: pd.DataFrame,
    inits: Sequence[str],
    published: pd.DataFrame | None,
    title: str,
) -> Figure:
    """One panel per task: mean ± std bars, runs as dots, published numbers as diamonds."""
    tasks = task_order(summary["task"])
    figure = Figure(figsize=(max(4.2 * len(tasks), 5.5), 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(tasks), squeeze=False)[0])
    lookup = {} if published is None else {
        (row.task, row.init): (float(row.mean), float(row.std)) for row in published.itertuples()
    }
    extra = [init for init in inits if init not in FIXED_COLOURS]
    for ax, task in zip(axes, tasks, strict=True):
        runs = summary[summary["task"] == task]
        shown = [init for init in inits if init in set(runs["init"])]
        for x, init in enumerate(shown):
            values = 100 * runs.loc[runs["init"] == init, "value"].to_numpy(float)
            std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
            ax.bar(x, values.mean(), width=0.6, color=colour(init, extra), alpha=0.8,
                   yerr=std, capsize=4, edgecolor="black", linewidth=0.6)
            # Evenly spread, not jittered at random, so the figure is reproducible.
            offsets = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), values, s=14, color="black", zorder=3)
            reference = lookup.get((task, PUBLISHED_INIT.get(init, "")))
            if reference is not None:
                ax.errorbar(x + 0.38, reference[0], yerr=reference[1], fmt="D", ms=6,
                            color="#d62728", capsize=3, zorder=4)
        metric = str(runs["metric"].iloc[0])
        ax.set_xticks(range(len(shown)), shown, rotation=20 if len(shown) > 3 else 0)
        ax.set_xlim(-0.6, len(shown) - 0.2)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
        ax.set_title(TASK_NAMES.get(task, task.upper()), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D([], [], color="black", marker="|", ls="", ms=10,
               label="bar: mean ± std (ddof=1) over runs"),
        Line2D([], [], color="black", marker="o", ls="", ms=4, label="one fine-tuning run"),
    ]
    if lookup:
        handles.append(Line2D([], [], color="#d62728", marker="D", ls="", ms=6,
                              label="published mean ± std"))
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles))
    figure.suptitle(title, fontweight="bold")
    return figure


def tasks_figure(summary: pd.DataFrame, published: pd.DataFrame | None = None) -> Figure:
    inits = [init for init in init_order(summary["init"]) if init in MAIN_INITS]
    if not inits:
        raise InputError(None, "summary has none of the initialisations scratch, genesis, "
                         "released")
    return bars_figure(summary, inits, published,
                       "Target tasks: fine-tuning from scratch vs pretrained weights")


def ablation_figure(summary: pd.DataFrame, published: pd.DataFrame | None = None) -> Figure:
    """Bars for scratch, genesis (all) and each variant; a notice when none ran."""
    inits = init_order(summary["init"])
    variants = [init for init in inits if init.startswith("genesis-")]
    if not variants:
        return notice_figure(
            "Ablation: no ablation variants ran",
            "config pretrain.variants listed only 'all', so no model was pretrained with a "
            "single transformation.\nAdd e.g. nonlinear, local_shuffle, inpainting or "
            "outpainting to run the ablation.",
        )
    chosen = [init for init in inits if init in ("scratch", "genesis")] + variants
    return bars_figure(summary, chosen, published,
                       "Ablation: pretraining with one transformation at a time")


def notice_figure(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to plot, so the workflow stays simple."""
    figure = Figure(figsize=(8, 3))
    figure.text(0.5, 0.62, title, ha="center", va="center", fontsize=14, fontweight="bold")
    figure.text(0.5, 0.35, message, ha="center", va="center", fontsize=10, wrap=True)
    return figure


# --- learning curves -----------------------------------------------------------------------

def read_curves(runs_root: str | Path, task: str) -> dict[str, list[pd.DataFrame]]:
    """``<runs_root>/<task>/<init>/run<k>/curves.csv``, grouped by init in run order."""
    folder = Path(runs_root) / task
    paths = sorted(folder.glob("*/run*/curves.csv"), key=_run_key)
    if not paths:
        raise InputError(folder, "holds no <init>/run<k>/curves.csv")
    curves: dict[str, list[pd.DataFrame]] = {}
    for path in paths:
        frame = read_csv(path, FINETUNE_CURVE_COLUMNS, allow_empty=False).sort_values("epoch")
        curves.setdefault(path.parents[1].name, []).append(frame)
    return {init: curves[init] for init in init_order(curves)}


def _run_key(path: Path) -> tuple[str, int]:
    """Sort run folders numerically (run2 before run10), within each init."""
    match = re.fullmatch(r"run(\d+)", path.parent.name)
    return path.parents[1].name, int(match.group(1)) if match else -1


def curves_figure(curves: Mapping[str, Sequence[pd.DataFrame]], task: str,
                  metric: str | None = None) -> Figure:
    """Validation metric, validation loss and training loss per epoch for every init."""
    figure = Figure(figsize=(14, 4.3), layout="constrained")
    axes = figure.subplots(1, 3)
    metric_label = METRIC_LABELS.get(metric or "", "metric")
    panels = (("val_metric", f"validation {metric_label}", f"{metric_label} (fraction)"),
              ("val_loss", "validation loss", "loss"),
              ("train_loss", "training loss", "loss"))
    extra = [init for init in curves if init not in FIXED_COLOURS]
    for ax, (column, title, unit) in zip(axes, panels, strict=True):
        for init, frames in curves.items():
            tint = colour(init, extra)
            for frame in frames:
                ax.plot(frame["epoch"], frame[column], color=tint, lw=0.7, alpha=0.45)
            mean = pd.concat(frames).groupby("epoch")[column].mean()
            ax.plot(mean.index, mean.to_numpy(), color=tint, lw=2.4,
                    label=f"{init} (n={len(frames)})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="initialisation", title_fontsize=8)
    figure.suptitle(f"Fine-tuning curves, {TASK_NAMES.get(task, task.upper())}: thin lines "
                    "= runs, thick = mean over the runs still training", fontweight="bold")
    return figure


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


def first_run_with_predictions(runs_root: Path, task: str, init: str) -> Path | None:
    runs = sorted((runs_root / task / init).glob("run*/predictions"), key=_run_key)
    return runs[0].parent if runs else None


def segmentation_overlays(
    task: str,
    runs_root: str | Path,
    tasks_root: str | Path,
    inits: Sequence[str] = ("scratch", "genesis"),
    n_cases: int = 3,
) -> list[list[Overlay]]:
    """Rows of overlays (one row per case, one panel per init) for the first runs.

    The slice shown is the axial slice with the most ground-truth foreground.
    """
    runs_root, tasks_root = Path(runs_root), Path(tasks_root)
    volumes = tasks_root / task / "volumes"
    runs = {init: first_run_with_predictions(runs_root, task, init) for init in inits}
    runs = {init: run for init, run in runs.items() if run is not None}
    if not runs:
        raise InputError(runs_root / task, f"no run of {list(inits)} has predictions/")
    cases = sorted(
        set.intersection(*({_case_name(p) for p in (run / "predictions").glob("*.nii*")}
                           for run in runs.values()))
        & {path.stem for path in volumes.glob("*.npz")}
    )
    if not cases:
        raise InputError(volumes, "no test case has both a prepared volume and predictions")
    geometry = _case_geometry(tasks_root / task)
    rows = []
    for case in cases[:n_cases]:
        image, truth = _prepared_case(volumes / f"{case}.npz")
        z = int(np.argmax(truth.sum(axis=(0, 1))))
        row = []
        for init, run in runs.items():
            prediction = _prediction(run / "predictions", case, truth.shape,
                                     geometry.get(case))
            row.append(Overlay(case, init, run.name, z, image[:, :, z], truth[:, :, z],
                               prediction[:, :, z], _case_iou(run, case, truth, prediction)))
        rows.append(row)
    return rows


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


def _prediction(folder: Path, case: str, shape: tuple[int, ...],
                geometry: Mapping[str, object] | None) -> np.ndarray:
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
    index = [np.minimum(((np.arange(n) + 0.5) * m / n).astype(int), m - 1)
             for n, m in zip(shape, mask.shape, strict=True)]
    return mask[np.ix_(*index)]


def _case_geometry(task_dir: Path) -> dict[str, dict[str, object]]:
    """Per-case geometry (crop box, shapes) from ``cases.csv``, when prepare wrote one."""
    path = task_dir / "cases.csv"
    if not path.is_file():
        return {}
    frame = pd.read_csv(path, dtype=str)
    if not {"case", "geometry"} <= set(frame.columns):
        return {}
    try:
        return {row.case: json.loads(row.geometry) for row in frame.itertuples()}
    except json.JSONDecodeError as error:
        raise InputError(path, f"column 'geometry' is not JSON: {error}") from None


def _case_iou(run: Path, case: str, truth: np.ndarray, prediction: np.ndarray) -> float:
    """The evaluated IoU from per_case.csv, else recomputed on the prepared grid."""
    per_case = run / "per_case.csv"
    if per_case.is_file():
        frame = pd.read_csv(per_case)
        if {"case", "iou"} <= set(frame.columns):
            match = frame.loc[frame["case"].astype(str) == case, "iou"]
            if not match.empty:
                return float(match.iloc[0])
    union = np.logical_or(truth, prediction).sum()
    return float(np.logical_and(truth, prediction).sum() / union) if union else math.nan


def segmentation_figure(rows: Sequence[Sequence[Overlay]], task: str) -> Figure:
    """Grid of axial slices: ground truth (green) and prediction (magenta) contours."""
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    figure = Figure(figsize=(3.6 * n_cols + 0.4, 3.6 * n_rows + 0.8), layout="constrained")
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            # (x, y) slice: transpose so x runs left-right and y top-bottom, as in a viewer.
            ax.imshow(panel.image.T, cmap="gray", origin="upper", interpolation="nearest")
            for mask, tint, style in ((panel.truth, "#2ca02c", "solid"),
                                      (panel.prediction, "#e377c2", "dashed")):
                if mask.any():
                    ax.contour(mask.T.astype(float), levels=[0.5], colors=tint,
                               linewidths=1.6, linestyles=style)
            ax.set_title(f"{panel.init} ({panel.run}): IoU {panel.iou:.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{panel.case}\naxial slice z={panel.z}", fontsize=9)
        for c in range(len(row), n_cols):
            axes[r, c].set_axis_off()
    handles = [Line2D([], [], color="#2ca02c", lw=1.6, label="ground truth"),
               Line2D([], [], color="#e377c2", lw=1.6, ls="--", label="prediction")]
    figure.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9)
    figure.suptitle(f"Example test segmentations, {TASK_NAMES.get(task, task.upper())}\n"
                    "slice with the most ground-truth foreground per case", fontsize=11,
                    fontweight="bold")
    return figure
