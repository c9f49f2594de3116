"""Draw the paper's figures as PNG and PDF: ``--output STEM`` writes STEM.png and STEM.pdf.

One KIND per figure: the transformation gallery, pretraining loss, per-task bars,
fine-tuning curves, segmentation overlays, the ablation bars and label efficiency (the
metric against the share of labelled training cases). Every kind reads only the files it
is given (no results folder is searched): ``curves`` the runs' curves.csv, ``segmentations``
the runs' predictions/ folders and per_case.csv with the prepared task folder; a run's task,
init and number come from its folder, ``<task>/<init>/run<k>``. ``gallery`` runs the
transformations themselves. The bars use the runs on all training cases (fraction 1.0) of a
label sweep. ``--data-label`` says in every title what the data are ("synthetic phantoms");
the paper's dataset names appear only for real data.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from genesis.commands._settings import settings_argument
from genesis.errors import InputError

HELP = (
    "figures: transformation gallery, losses, task bars, curves, overlays, ablation, "
    "label efficiency"
)

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")

    def kind(name: str, help_text: str) -> argparse.ArgumentParser:
        child = kinds.add_parser(
            name,
            help=help_text,
            description=help_text,
            formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        )
        child.add_argument(
            "--output", type=Path, required=True, help="output stem: writes STEM.png and STEM.pdf"
        )
        child.add_argument(
            "--data-label",
            metavar="TEXT",
            help='what the data are, shown in the title, e.g. "synthetic phantoms"; the '
            "paper's dataset names (LiTS 2017, BraTS 2018) appear only for real data",
        )
        return child

    gallery = kind(
        "gallery",
        "an original cube and each transformation alone and combined, "
        "in axial, coronal and sagittal mid-slices",
    )
    gallery.add_argument(
        "--cubes",
        type=Path,
        required=True,
        help="cube shard results/cubes/<name>.npy, float16 (n, X, Y, Z)",
    )
    gallery.add_argument(
        "--seed", type=int, default=0, help="picks the cube and draws every transformation"
    )
    gallery.add_argument(
        "--index", type=int, default=None, help="cube to show; drawn from --seed when omitted"
    )
    gallery.add_argument(
        "--modality",
        choices=("ct", "mri", "auto"),
        default="ct",
        help="modality of the scans the cubes were cut from (labels the intensities: a "
        "Hounsfield window for CT only; auto: a mix)",
    )
    gallery.add_argument(
        "--settings",
        type=settings_argument,
        default={},
        help="transformation settings (the pretrain.transforms config section) as a JSON object",
    )

    pretraining = kind("pretraining", "pretraining loss per epoch and variant")
    pretraining.add_argument(
        "--metrics",
        type=Path,
        nargs="+",
        required=True,
        help="results/pretrain/<variant>/metrics.csv files",
    )

    for name, help_text in (
        ("tasks", "per-task bars of scratch, genesis and released"),
        ("ablation", "per-task bars of the ablation variants"),
    ):
        bars = kind(name, help_text)
        bars.add_argument(
            "--summary", type=Path, required=True, help="results/finetune/summary.csv"
        )
        bars.add_argument(
            "--published", type=Path, help="config/published.csv, drawn as diamonds beside the bars"
        )

    efficiency = kind(
        "label-efficiency",
        "the metric against the share of labelled training cases, one line per init with a "
        "±std band; stars mark paired t-test p < 0.05 against scratch",
    )
    efficiency.add_argument(
        "--summary", type=Path, required=True, help="results/finetune/summary.csv"
    )
    efficiency.add_argument("--task", required=True, help="task name, e.g. lcs or spleen")

    curves = kind("curves", "fine-tuning curves of one task")
    curves.add_argument("--task", required=True, help="task name, e.g. ncc, lcs, bms")
    curves.add_argument(
        "--curves",
        type=Path,
        nargs="+",
        required=True,
        help="the runs' curves.csv: results/finetune/<task>/<init>/run<k>/curves.csv (init "
        "and run are read from the path); only these files are read",
    )

    overlays = kind("segmentations", "test slices with ground truth and prediction contours")
    overlays.add_argument("--task", required=True, help="segmentation task, e.g. lcs or bms")
    overlays.add_argument(
        "--predictions",
        type=Path,
        nargs="+",
        required=True,
        help="runs' prediction folders results/finetune/<task>/<init>/run<k>/predictions; "
        "each init's first run given is shown",
    )
    overlays.add_argument(
        "--per-case",
        type=Path,
        nargs="+",
        default=[],
        help="the same runs' per_case.csv, whose IoU is shown (recomputed without one)",
    )
    overlays.add_argument(
        "--task-dir",
        type=Path,
        required=True,
        help="the prepared task folder results/tasks/<task> (test volumes, cases.csv)",
    )
    overlays.add_argument(
        "--inits",
        nargs="+",
        help="initialisations to show, one column each, in this order (default: every init given)",
    )
    overlays.add_argument("--cases", type=int, default=3, help="test cases shown, one per row")


def run(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")  # a plain command: no display, no inline backend
    from genesis.report import figures

    figure = _draw(args)
    paths = figures.save_figure(figure, args.output)
    log.info("wrote %s", ", ".join(map(str, paths)))
    return 0


def _draw(args: argparse.Namespace) -> Any:
    from genesis.report import figures, tables

    if args.kind == "gallery":
        from genesis.report.gallery import gallery_figure, load_cube

        cube = load_cube(args.cubes, index=args.index, seed=args.seed)
        return gallery_figure(
            cube,
            seed=args.seed,
            settings=args.settings,
            modality=args.modality,
            data_label=args.data_label,
        )
    if args.kind == "pretraining":
        return figures.pretraining_figure(
            figures.read_pretrain_metrics(args.metrics), args.data_label
        )
    if args.kind in ("tasks", "ablation"):
        summary = tables.full_fraction(tables.load_summary(args.summary))
        if summary.empty:
            raise InputError(args.summary, "has no runs on all training cases (fraction 1.0)")
        published = tables.load_published(args.published) if args.published else None
        draw = figures.tasks_figure if args.kind == "tasks" else figures.ablation_figure
        return draw(summary, published, args.data_label)
    if args.kind == "label-efficiency":
        from genesis.report.label_efficiency import label_efficiency_figure

        summary = tables.load_summary(args.summary)
        if args.task not in set(summary["task"]):
            raise InputError(
                args.summary,
                f"has no runs of task '{args.task}'; tasks: {tables.task_order(summary['task'])}",
            )
        return label_efficiency_figure(summary, args.task, args.data_label)
    if args.kind == "curves":
        return figures.curves_figure(
            figures.read_curves(args.curves, args.task),
            args.task,
            tables.TASK_METRICS.get(args.task),
            args.data_label,
        )
    rows = figures.segmentation_overlays(
        args.predictions,
        args.task_dir,
        task=args.task,
        per_case=args.per_case,
        inits=args.inits,
        n_cases=args.cases,
    )
    return figures.segmentation_figure(rows, args.task, args.data_label)
