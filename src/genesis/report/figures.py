"""The paper's figures, drawn from data frames and arrays.

Reading the workflow's files is ``genesis.report.gather``'s job (its readers are
re-exported here); this module only draws. Every figure is a ``matplotlib.figure.Figure``
built without pyplot, so no global backend or figure registry is touched, and is saved as
PNG (for the report and notebooks) and PDF (for the paper). Titles, axis labels with units
and legends make each one readable without the code; a ``data_label`` says in every title
what the data are ("synthetic phantoms"), and the paper's dataset names (LUNA16, LiTS 2017,
BraTS 2018) appear only when it names real data. Colours are fixed per initialisation so
all figures agree.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from genesis.atomic import atomic_path
from genesis.errors import InputError
from genesis.report.gather import (
    Overlay,
    RunKey,
    read_curves,
    read_pretrain_metrics,
    run_key,
    segmentation_overlays,
)
from genesis.report.tables import (
    METRIC_LABELS,
    PUBLISHED_INIT,
    TASK_NAMES,
    init_order,
    task_label,
    task_order,
)

__all__ = [
    "FIXED_COLOURS",
    "MAIN_INITS",
    "OTHER_COLOURS",
    "Overlay",
    "RunKey",
    "ablation_figure",
    "bars_figure",
    "colour",
    "curves_figure",
    "notice_figure",
    "pretraining_figure",
    "read_curves",
    "read_pretrain_metrics",
    "real_data",
    "run_key",
    "save_figure",
    "segmentation_figure",
    "segmentation_overlays",
    "task_title",
    "tasks_figure",
    "titled",
]

log = logging.getLogger(__name__)

FIXED_COLOURS = {"scratch": "#7f7f7f", "genesis": "#1f77b4", "released": "#ff7f0e"}
OTHER_COLOURS = ("#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22")
MAIN_INITS = ("scratch", "genesis", "released")
#: The public dataset in each paper task's name (genesis.report.tables.TASK_NAMES), shown
#: only when the data label says the figure was made from real data.
TASK_DATASETS = {"ncc": "LUNA16", "ncs": "LIDC-IDRI", "lcs": "LiTS 2017", "bms": "BraTS 2018"}
SYNTHETIC_WORDS = re.compile(r"phantom|synthetic", re.IGNORECASE)


def real_data(data_label: str | None) -> bool:
    """Whether the label says real data: given, and no phantom or synthetic data in it."""
    return bool(data_label) and SYNTHETIC_WORDS.search(data_label or "") is None


def task_title(task: str, data_label: str | None = None) -> str:
    """The task's name for a title: the paper's dataset named only for real data."""
    name = TASK_NAMES.get(task)
    if name is None:
        return task_label(task)
    dataset = TASK_DATASETS.get(task)
    if dataset and not real_data(data_label):
        name = name.replace(f", {dataset}", "")
    return name


def titled(head: str, data_label: str | None, rest: str = "") -> str:
    """``head on <data label>: rest``, so that every title says what the data are."""
    title = f"{head} on {data_label}" if data_label else head
    return f"{title}: {rest}" if rest else title


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


def pretraining_figure(
    metrics: Mapping[str, pd.DataFrame], data_label: str | None = None
) -> Figure:
    """Train and validation restoration loss per epoch, identity baseline dashed."""
    variants = sorted(metrics, key=lambda v: (v != "all", v))
    figure = Figure(figsize=(11, 4.4), layout="constrained")
    axes = figure.subplots(1, 2, sharey=True)
    positive = all(
        (frame[["train_loss", "val_loss", "identity_loss"]] > 0).all().all()
        for frame in metrics.values()
    )
    for ax, column, title in (
        (axes[0], "train_loss", "Training loss"),
        (axes[1], "val_loss", "Validation loss"),
    ):
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
    handles = [
        Line2D(
            [],
            [],
            color=colour("genesis" if v == "all" else v, variants[1:]),
            lw=1.8,
            label=f"variant: {v}",
        )
        for v in variants
    ]
    handles.append(
        Line2D(
            [],
            [],
            color="black",
            lw=1.2,
            ls="--",
            label="identity baseline (output = distorted input)",
        )
    )
    figure.legend(
        handles=handles, fontsize=8, loc="outside lower center", ncol=min(len(handles), 4)
    )
    figure.suptitle(
        titled("Pretraining by image restoration", data_label, "loss per epoch"), fontweight="bold"
    )
    return figure


# --- target-task bars ----------------------------------------------------------------------


def bars_figure(
    summary: pd.DataFrame,
    inits: Sequence[str],
    published: pd.DataFrame | None,
    title: str,
    data_label: str | None = None,
) -> Figure:
    """One panel per task: mean ± std bars, runs as dots, published numbers as diamonds."""
    tasks = task_order(summary["task"])
    figure = Figure(figsize=(max(4.2 * len(tasks), 5.5), 4.6), layout="constrained")
    axes = np.atleast_1d(figure.subplots(1, len(tasks), squeeze=False)[0])
    lookup = (
        {}
        if published is None
        else {
            (row.task, row.init): (float(row.mean), float(row.std))
            for row in published.itertuples()
        }
    )
    extra = [init for init in inits if init not in FIXED_COLOURS]
    for ax, task in zip(axes, tasks, strict=True):
        runs = summary[summary["task"] == task]
        shown = [init for init in inits if init in set(runs["init"])]
        for x, init in enumerate(shown):
            values = 100 * runs.loc[runs["init"] == init, "value"].to_numpy(float)
            std = float(np.std(values, ddof=1)) if values.size > 1 else 0.0
            ax.bar(
                x,
                values.mean(),
                width=0.6,
                color=colour(init, extra),
                alpha=0.8,
                yerr=std,
                capsize=4,
                edgecolor="black",
                linewidth=0.6,
            )
            # Evenly spread, not jittered at random, so the figure is reproducible.
            offsets = np.linspace(-0.18, 0.18, values.size) if values.size > 1 else [0.0]
            ax.scatter(x + np.asarray(offsets), values, s=14, color="black", zorder=3)
            reference = lookup.get((task, PUBLISHED_INIT.get(init, "")))
            if reference is not None:
                ax.errorbar(
                    x + 0.38,
                    reference[0],
                    yerr=reference[1],
                    fmt="D",
                    ms=6,
                    color="#d62728",
                    capsize=3,
                    zorder=4,
                )
        metric = str(runs["metric"].iloc[0])
        ax.set_xticks(range(len(shown)), shown, rotation=20 if len(shown) > 3 else 0)
        ax.set_xlim(-0.6, len(shown) - 0.2)
        ax.set_ylim(0, 105)
        ax.set_ylabel(f"{METRIC_LABELS.get(metric, metric)} (%)")
        ax.set_title(task_title(task, data_label), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            color="black",
            marker="|",
            ls="",
            ms=10,
            label="bar: mean ± std (ddof=1) over runs",
        ),
        Line2D([], [], color="black", marker="o", ls="", ms=4, label="one fine-tuning run"),
    ]
    if lookup:
        handles.append(
            Line2D([], [], color="#d62728", marker="D", ls="", ms=6, label="published mean ± std")
        )
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=len(handles))
    figure.suptitle(title, fontweight="bold")
    return figure


def tasks_figure(
    summary: pd.DataFrame, published: pd.DataFrame | None = None, data_label: str | None = None
) -> Figure:
    inits = [init for init in init_order(summary["init"]) if init in MAIN_INITS]
    if not inits:
        raise InputError(None, "summary has none of the initialisations scratch, genesis, released")
    title = titled("Target tasks", data_label, "fine-tuning from scratch vs pretrained weights")
    return bars_figure(summary, inits, published, title, data_label)


def ablation_figure(
    summary: pd.DataFrame, published: pd.DataFrame | None = None, data_label: str | None = None
) -> Figure:
    """Bars for scratch, genesis (all) and each variant; a notice when none ran."""
    inits = init_order(summary["init"])
    variants = [init for init in inits if init.startswith("genesis-")]
    if not variants:
        return notice_figure(
            titled("Ablation", data_label, "no ablation variants ran"),
            "config pretrain.variants listed only 'all', so no model was pretrained with a "
            "single transformation.\nAdd e.g. nonlinear, local_shuffle, inpainting or "
            "outpainting to run the ablation.",
        )
    chosen = [init for init in inits if init in ("scratch", "genesis")] + variants
    title = titled("Ablation", data_label, "pretraining with one transformation at a time")
    return bars_figure(summary, chosen, published, title, data_label)


def notice_figure(title: str, message: str) -> Figure:
    """A figure that says why there is nothing to plot, so the workflow stays simple."""
    figure = Figure(figsize=(8, 3))
    figure.text(0.5, 0.62, title, ha="center", va="center", fontsize=14, fontweight="bold")
    figure.text(0.5, 0.35, message, ha="center", va="center", fontsize=10, wrap=True)
    return figure


# --- learning curves -----------------------------------------------------------------------


def curves_figure(
    curves: Mapping[str, Sequence[pd.DataFrame]],
    task: str,
    metric: str | None = None,
    data_label: str | None = None,
) -> Figure:
    """Validation metric, validation loss and training loss per epoch for every init."""
    figure = Figure(figsize=(14, 4.3), layout="constrained")
    axes = figure.subplots(1, 3)
    metric_label = METRIC_LABELS.get(metric or "", "metric")
    panels = (
        ("val_metric", f"validation {metric_label}", f"{metric_label} (fraction)"),
        ("val_loss", "validation loss", "loss"),
        ("train_loss", "training loss", "loss"),
    )
    extra = [init for init in curves if init not in FIXED_COLOURS]
    for ax, (column, title, unit) in zip(axes, panels, strict=True):
        for init, frames in curves.items():
            tint = colour(init, extra)
            for frame in frames:
                ax.plot(frame["epoch"], frame[column], color=tint, lw=0.7, alpha=0.45)
            mean = pd.concat(frames).groupby("epoch")[column].mean()
            ax.plot(
                mean.index, mean.to_numpy(), color=tint, lw=2.4, label=f"{init} (n={len(frames)})"
            )
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(unit)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, title="initialisation", title_fontsize=8)
    figure.suptitle(
        titled(
            f"Fine-tuning curves, {task_title(task, data_label)}",
            data_label,
            "thin lines = runs, thick = mean over the runs still training",
        ),
        fontweight="bold",
    )
    return figure


# --- segmentations -------------------------------------------------------------------------


def segmentation_figure(
    rows: Sequence[Sequence[Overlay]], task: str, data_label: str | None = None
) -> Figure:
    """Grid of axial slices: ground truth (green) and prediction (magenta) contours."""
    n_rows, n_cols = len(rows), max(len(row) for row in rows)
    figure = Figure(figsize=(3.6 * n_cols + 0.4, 3.6 * n_rows + 0.8), layout="constrained")
    axes = np.atleast_2d(figure.subplots(n_rows, n_cols, squeeze=False))
    for r, row in enumerate(rows):
        for c, panel in enumerate(row):
            ax = axes[r, c]
            # (x, y) slice: transpose so x runs left-right and y top-bottom, as in a viewer.
            ax.imshow(panel.image.T, cmap="gray", origin="upper", interpolation="nearest")
            for mask, tint, style in (
                (panel.truth, "#2ca02c", "solid"),
                (panel.prediction, "#e377c2", "dashed"),
            ):
                if mask.any():
                    ax.contour(
                        mask.T.astype(float),
                        levels=[0.5],
                        colors=tint,
                        linewidths=1.6,
                        linestyles=style,
                    )
            ax.set_title(f"{panel.init} ({panel.run}): IoU {panel.iou:.2f}", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{panel.case}\naxial slice z={panel.z}", fontsize=9)
        for c in range(len(row), n_cols):
            axes[r, c].set_axis_off()
    handles = [
        Line2D([], [], color="#2ca02c", lw=1.6, label="ground truth"),
        Line2D([], [], color="#e377c2", lw=1.6, ls="--", label="prediction"),
    ]
    figure.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=9)
    head = titled(f"Example test segmentations, {task_title(task, data_label)}", data_label)
    figure.suptitle(
        f"{head}\nslice with the most ground-truth foreground per case",
        fontsize=11,
        fontweight="bold",
    )
    return figure
