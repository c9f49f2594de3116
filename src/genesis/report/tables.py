"""Target-task and ablation tables: mean ± std over runs, Welch's and the paired t-test's p
against scratch, and the published numbers beside them.

``summary.csv`` may hold a label sweep (``fraction`` < 1: fine-tuning on a share of the
training cases); these tables use only the runs on all training cases (fraction 1.0), and
``genesis.report.label_efficiency`` reports the sweep. Runs with the same (task, fraction,
run) index share the labelled subset and the seed across initialisations, so they pair.

Our metrics are fractions in [0, 1]; the papers report percentages, so every number in the
tables is a percentage (columns end in ``_pct``). The CSV holds the numbers (NaN where a
value does not exist) and stays plain for pandas; the Markdown and LaTeX versions format
them and carry the reproducibility record, which the CSV gets as a sibling JSON file.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from genesis.atomic import atomic_path, write_json, write_text
from genesis.errors import InputError
from genesis.io.tables import read_csv
from genesis.report import records

SUMMARY_COLUMNS = ("task", "init", "run", "seed", "metric", "value", "dice")
#: Columns of the label-sweep summary; a summary without them is all fraction 1.0.
DESIGN_COLUMNS = ("fraction", "n_labelled")
FULL_FRACTION = 1.0
PUBLISHED_COLUMNS = ("task", "init", "metric", "mean", "std", "source")
METRICS = ("auc", "iou")

#: Our initialisation -> the published row it reproduces. The released checkpoint is the
#: authors' Models Genesis model, so it is compared with the same published row.
PUBLISHED_INIT = {
    "scratch": "scratch",
    "genesis": "genesis",
    "released": "genesis",
    "released_keras": "genesis",
}

TASK_NAMES = {
    "ncc": "NCC (lung nodule false-positive reduction, LUNA16)",
    "ncs": "NCS (lung nodule segmentation, LIDC-IDRI)",
    "ecc": "ECC (pulmonary embolism false-positive reduction)",
    "lcs": "LCS (liver segmentation, LiTS 2017)",
    "bms": "BMS (brain tumour segmentation, BraTS 2018)",
}
TASK_ORDER = ("ncc", "ncs", "ecc", "lcs", "bms")
METRIC_LABELS = {"auc": "AUC", "iou": "IoU"}
TASK_METRICS = {"ncc": "auc", "ncs": "iou", "ecc": "auc", "lcs": "iou", "bms": "iou"}

TABLE_COLUMNS = (
    "task",
    "metric",
    "init",
    "n",
    "mean_pct",
    "std_pct",
    "dice_mean_pct",
    "dice_std_pct",
    "p_value",
    "p_paired",
    "published_init",
    "published_mean_pct",
    "published_std_pct",
    "published_source",
)


# --- reading -------------------------------------------------------------------------------


def load_summary(path: str | Path) -> pd.DataFrame:
    """Read ``finetune/summary.csv`` and check what the tables rely on.

    A summary without the ``fraction`` and ``n_labelled`` columns (written before label
    sweeps existed) loads as fraction 1.0 with unknown (NaN) ``n_labelled``.
    """
    path = Path(path)
    frame = read_csv(path, SUMMARY_COLUMNS)
    if frame.empty:
        raise InputError(path, "has no runs")
    frame = with_design_columns(frame)
    frame["task"] = frame["task"].astype(str)
    frame["init"] = frame["init"].astype(str)
    frame["metric"] = frame["metric"].astype(str)
    for column in ("seed", "value", "dice", "fraction", "n_labelled"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("seed", "value", "fraction"):
        if frame[column].isna().any():
            rows = list(frame.index[frame[column].isna()][:5] + 2)
            raise InputError(path, f"column '{column}' is empty or not a number on line(s) {rows}")
    fraction = frame["fraction"]
    if not np.isfinite(fraction).all() or ((fraction <= 0) | (fraction > 1)).any():
        raise InputError(path, "column 'fraction' must hold shares of the training cases in (0, 1]")
    # Written as decimals ("0.1"): rounding keeps 0.1 and 0.1000000001 one group.
    frame["fraction"] = fraction.round(9)
    labelled = frame["n_labelled"].dropna()
    if not np.isfinite(labelled).all() or (labelled < 0).any() or (labelled % 1 != 0).any():
        raise InputError(
            path, "column 'n_labelled' must hold whole numbers of cases (>= 0) or be empty"
        )
    _check_fraction(path, frame, "value")
    _check_fraction(path, frame, "dice")
    unknown = sorted(set(frame["metric"]) - set(METRICS))
    if unknown:
        raise InputError(path, f"unknown metric(s) {unknown}; expected one of {list(METRICS)}")
    mixed = frame.groupby("task")["metric"].nunique()
    if (mixed > 1).any():
        raise InputError(path, f"task(s) {sorted(mixed.index[mixed > 1])} mix several metrics")
    duplicated = frame.duplicated(["task", "init", "fraction", "run"], keep=False)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise InputError(
            path,
            f"run {first['run']} of {first['task']}/{first['init']} at "
            f"fraction {first['fraction']:g} appears more than once",
        )
    return frame


def with_design_columns(summary: pd.DataFrame) -> pd.DataFrame:
    """``summary`` with ``fraction`` (1.0) and ``n_labelled`` (NaN) added where missing."""
    missing = [column for column in DESIGN_COLUMNS if column not in summary.columns]
    if not missing:
        return summary
    summary = summary.copy()
    if "fraction" in missing:
        summary["fraction"] = FULL_FRACTION
    if "n_labelled" in missing:
        summary["n_labelled"] = math.nan
    return summary


def full_fraction(summary: pd.DataFrame) -> pd.DataFrame:
    """The runs fine-tuned on all training cases (fraction 1.0): the target-task runs."""
    summary = with_design_columns(summary)
    keep = np.isclose(summary["fraction"].to_numpy(float), FULL_FRACTION)
    return summary[keep].reset_index(drop=True)


def load_published(path: str | Path) -> pd.DataFrame:
    """Read the published reference numbers (percentages) from ``config/published.csv``."""
    path = Path(path)
    frame = read_csv(path, PUBLISHED_COLUMNS)
    for column in ("mean", "std"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
        if frame[column].isna().any() or ((frame[column] < 0) | (frame[column] > 100)).any():
            raise InputError(path, f"column '{column}' must hold percentages in [0, 100]")
    if frame.duplicated(["task", "init", "metric"]).any():
        raise InputError(path, "a (task, init, metric) row appears more than once")
    return frame


def _check_fraction(path: Path, frame: pd.DataFrame, column: str) -> None:
    values = frame[column].dropna()
    if not np.isfinite(values).all() or ((values < 0) | (values > 1)).any():
        raise InputError(path, f"column '{column}' must hold fractions in [0, 1]")


# --- statistics ----------------------------------------------------------------------------


def welch_p_value(values: Sequence[float], reference: Sequence[float]) -> float:
    """Two-sided Welch's t-test p-value; NaN when either group has fewer than two runs.

    Welch rather than Student because pretrained and scratch runs need not share a
    variance (pretraining usually narrows it). Two groups without any spread give NaN.
    """
    from scipy import stats

    a = np.asarray(values, float)
    b = np.asarray(reference, float)
    if a.size < 2 or b.size < 2:
        return math.nan
    with warnings.catch_warnings():
        # Zero variance in both groups: scipy warns and returns NaN, which we keep.
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    return p_value if math.isfinite(p_value) else math.nan


def paired_p_value(values: Mapping[Any, float], reference: Mapping[Any, float]) -> float:
    """Two-sided paired t-test p-value (``scipy.stats.ttest_rel``) of runs matched by run index.

    ``values`` and ``reference`` map run index -> metric. Runs with the same index share the
    labelled subset and the seed, so their difference removes that shared variation. NaN
    unless both sides hold the same runs (each run has its partner) and at least two, or
    when the differences have no spread (the t statistic is then undefined).
    """
    from scipy import stats

    if set(values) != set(reference) or len(values) < 2:
        return math.nan
    runs = sorted(values, key=run_sort_key)
    a = np.array([values[run] for run in runs], float)
    b = np.array([reference[run] for run in runs], float)
    if np.ptp(a - b) <= 1e-12:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.ttest_rel(a, b).pvalue)
    return p_value if math.isfinite(p_value) else math.nan


def run_sort_key(run: Any) -> tuple[int, float, str]:
    """Numeric run indices in numeric order (2 before 10), anything else after them."""
    try:
        return 0, float(run), ""
    except (TypeError, ValueError):
        return 1, 0.0, str(run)


def by_run(group: pd.DataFrame, column: str = "value") -> dict[Any, float]:
    """Run index -> ``column`` of one (task, init, fraction) group of runs."""
    return {run: float(value) for run, value in zip(group["run"], group[column], strict=True)}


def init_order(inits: Iterable[str]) -> list[str]:
    """scratch, genesis, released, other inits, then the ablation variants by name."""
    fixed = ["scratch", "genesis", "released", "released_keras"]
    inits = set(inits)
    variants = sorted(init for init in inits if init.startswith("genesis-"))
    others = sorted(inits - set(fixed) - set(variants))
    return [init for init in fixed if init in inits] + others + variants


def task_order(tasks: Iterable[str]) -> list[str]:
    tasks = set(tasks)
    return [task for task in TASK_ORDER if task in tasks] + sorted(tasks - set(TASK_ORDER))


def summarise(summary: pd.DataFrame, inits: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (task, init): n, mean and std (ddof=1) in %, p-values against scratch.

    ``summary`` holds one fraction (run indices unique per task and init); ``p_value`` is
    Welch's t-test and ``p_paired`` the paired t-test over the same run indices.
    """
    rows = []
    for task in task_order(summary["task"]):
        runs = summary[summary["task"] == task]
        scratch_runs = runs[runs["init"] == "scratch"]
        scratch = scratch_runs["value"].to_numpy(float)
        present = init_order(runs["init"])
        for init in present if inits is None else [i for i in inits if i in present]:
            group = runs[runs["init"] == init]
            values = group["value"].to_numpy(float)
            dice = group["dice"].dropna().to_numpy(float)
            rows.append(
                {
                    "task": task,
                    "metric": str(group["metric"].iloc[0]),
                    "init": init,
                    "n": int(values.size),
                    "mean_pct": 100 * values.mean(),
                    "std_pct": 100 * _std(values),
                    "dice_mean_pct": 100 * dice.mean() if dice.size else math.nan,
                    "dice_std_pct": 100 * _std(dice),
                    "p_value": math.nan if init == "scratch" else welch_p_value(values, scratch),
                    "p_paired": (
                        math.nan
                        if init == "scratch" or scratch_runs.empty
                        else paired_p_value(by_run(group), by_run(scratch_runs))
                    ),
                }
            )
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS[:10]))


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1), as papers report over runs; NaN for n < 2."""
    return float(np.std(values, ddof=1)) if values.size >= 2 else math.nan


def attach_published(table: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """Add the matching published mean ± std (in %) and its source to each row."""
    lookup = {(row.task, row.init, row.metric): row for row in published.itertuples()}
    table = table.copy()
    matched = [
        lookup.get((row.task, PUBLISHED_INIT.get(row.init, ""), row.metric))
        for row in table.itertuples()
    ]
    table["published_init"] = [m.init if m is not None else "" for m in matched]
    table["published_mean_pct"] = [float(m.mean) if m is not None else math.nan for m in matched]
    table["published_std_pct"] = [float(m.std) if m is not None else math.nan for m in matched]
    table["published_source"] = [m.source if m is not None else "" for m in matched]
    return table[list(TABLE_COLUMNS)]


def target_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """The main table: every initialisation except the ablation variants, fraction 1.0."""
    summary = full_fraction(summary)
    inits = [init for init in init_order(summary["init"]) if not init.startswith("genesis-")]
    return attach_published(summarise(summary, inits), published)


def ablation_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """scratch, genesis (all transformations) and each single-transformation variant.

    Runs on all training cases (fraction 1.0) only; empty (header only) when no
    ``genesis-<variant>`` runs exist.
    """
    summary = full_fraction(summary)
    inits = init_order(summary["init"])
    if not any(init.startswith("genesis-") for init in inits):
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    chosen = [
        init for init in inits if init in ("scratch", "genesis") or init.startswith("genesis-")
    ]
    return attach_published(summarise(summary, chosen), published)


def other_published(published: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Published baselines for our tasks that this workflow does not re-run."""
    shown = {(row.task, row.published_init) for row in table.itertuples() if row.published_init}
    tasks = set(table["task"])
    keep = [
        row.task in tasks and (row.task, row.init) not in shown for row in published.itertuples()
    ]
    return published[keep].reset_index(drop=True)


# --- formatting ----------------------------------------------------------------------------


def task_label(task: str) -> str:
    """Short display name: the paper's acronym (NCC, LCS, ...) or a user task's own name."""
    return task.upper() if task in TASK_NAMES else task


def titled(head: str, data_label: str | None, rest: str = "") -> str:
    """``head (data label): rest``, so that every title says what the data are."""
    title = f"{head} ({data_label})" if data_label else head
    return f"{title}: {rest}" if rest else title


def data_note(data_label: str | None) -> list[str]:
    return [f"Data: {data_label}."] if data_label else []


def format_mean_std(mean: float, std: float, plus_minus: str = " ± ") -> str:
    if not math.isfinite(mean):
        return "–"
    if not math.isfinite(std):
        return f"{mean:.2f}"
    return f"{mean:.2f}{plus_minus}{std:.2f}"


def format_p(p_value: float) -> str:
    if not math.isfinite(p_value):
        return "–"
    return f"{p_value:.1e}" if p_value < 0.001 else f"{p_value:.3f}"


def _display_rows(table: pd.DataFrame, plus_minus: str) -> list[list[str]]:
    return [
        [
            task_label(row.task),
            METRIC_LABELS.get(row.metric, row.metric),
            row.init,
            str(row.n),
            format_mean_std(row.mean_pct, row.std_pct, plus_minus),
            format_mean_std(row.dice_mean_pct, row.dice_std_pct, plus_minus),
            format_p(row.p_value),
            format_p(row.p_paired),
            format_mean_std(row.published_mean_pct, row.published_std_pct, plus_minus),
        ]
        for row in table.itertuples()
    ]


HEADERS = [
    "Task",
    "Metric",
    "Initialisation",
    "n",
    "Ours (%)",
    "Dice (%)",
    "p Welch",
    "p paired",
    "Published (%)",
]


def to_markdown(
    table: pd.DataFrame,
    title: str,
    record: Mapping[str, Any],
    others: pd.DataFrame | None = None,
    empty_note: str = "No runs.",
    data_label: str | None = None,
) -> str:
    """A GitHub-flavoured Markdown table with notes and the reproducibility record."""
    parts = [f"# {title}\n"]
    if table.empty:
        parts.append(" ".join([empty_note, *data_note(data_label)]) + "\n")
    else:
        parts.append(markdown_grid(HEADERS, _display_rows(table, " ± ")))
        parts.append(_notes(table, others, data_label))
        if others is not None and not others.empty:
            parts.append("## Published baselines not re-run here\n")
            parts.append(
                markdown_grid(
                    ["Task", "Metric", "Initialisation", "Published (%)"],
                    [
                        [
                            task_label(r.task),
                            METRIC_LABELS.get(r.metric, r.metric),
                            r.init,
                            format_mean_std(r.mean, r.std),
                        ]
                        for r in others.itertuples()
                    ],
                )
            )
    parts.append(records.markdown_footer(record))
    return "\n".join(parts)


def markdown_grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _notes(table: pd.DataFrame, others: pd.DataFrame | None, data_label: str | None) -> str:
    sources = sorted(
        {s for s in table["published_source"] if s}
        | (set(others["source"]) if others is not None else set())
    )
    notes = [
        *data_note(data_label),
        "Mean ± sample standard deviation (ddof=1) over n independent fine-tuning runs on all "
        "training cases, in %. AUC: ROC area under the curve; IoU and Dice: overlap of the "
        "binary masks (mean over the foreground classes).",
        "p Welch: two-sided Welch's t-test of the runs against the scratch runs of the same "
        "task (– for scratch itself or when either side has fewer than two runs).",
        "p paired: two-sided paired t-test (scipy.stats.ttest_rel) against scratch, pairing "
        "the runs with the same run index, which share the training cases and the seed (– "
        "unless both initialisations have the same runs, at least two, with some spread in "
        "the differences). No correction for multiple comparisons.",
    ]
    if sources:
        notes.append(
            "Published: the same initialisation as reported by the authors' group, on their "
            "datasets; `released` is compared with the published Models Genesis row. BMS is "
            "BraTS 2018."
        )
    else:
        notes.append("Published: – (no published numbers exist for these tasks).")
    notes += [f"Published source: {source}." for source in sources]
    return "\n".join(f"- {note}" for note in notes) + "\n"


def to_latex(
    table: pd.DataFrame,
    caption: str,
    label: str,
    record: Mapping[str, Any],
    empty_note: str = "No runs.",
) -> str:
    """A booktabs table; the reproducibility record rides along as comments."""
    head = records.latex_comment(record)
    if table.empty:
        return head + f"% {' '.join(caption.split())}\n% {empty_note}\n"
    rows = _display_rows(table, r" $\pm$ ")
    return head + latex_table(HEADERS, rows, caption, label, "lll" + "r" * 6)


def latex_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], caption: str, label: str, columns: str
) -> str:
    """A booktabs ``table`` environment; cells are escaped for LaTeX."""
    body = "\n".join(" & ".join(tex(cell) for cell in row) + r" \\" for row in rows)
    return (
        "\\begin{table}[t]\n\\centering\n"
        + f"\\caption{{{tex(caption)}}}\n\\label{{{label}}}\n"
        + f"\\begin{{tabular}}{{{columns}}}\n\\toprule\n"
        + " & ".join(tex(h) for h in headers)
        + " \\\\\n\\midrule\n"
        + body
        + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    )


def tex(text: str) -> str:
    if "$" in text:  # already formatted maths (mean $\pm$ std)
        return text.replace("–", "--")
    for char, escaped in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("_", r"\_"),
        ("#", r"\#"),
    ):
        text = text.replace(char, escaped)
    return text.replace("–", "--")


# --- writing -------------------------------------------------------------------------------


def write_table(
    table: pd.DataFrame,
    stem: Path,
    *,
    title: str,
    label: str,
    record: Mapping[str, Any],
    others: pd.DataFrame | None = None,
    empty_note: str = "No runs.",
    data_label: str | None = None,
) -> list[Path]:
    """Write ``stem.{csv,md,tex}`` and ``stem.provenance.json``; return the paths."""
    stem = Path(stem)
    csv_path, md_path, tex_path = (
        stem.with_name(f"{stem.name}.{ext}") for ext in ("csv", "md", "tex")
    )
    json_path = stem.with_name(f"{stem.name}.provenance.json")
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    write_text(md_path, to_markdown(table, title, record, others, empty_note, data_label))
    write_text(tex_path, to_latex(table, title, label, record, empty_note))
    write_json(json_path, dict(record))
    return [csv_path, md_path, tex_path, json_path]


def write_tables(
    summary_path: str | Path,
    published_path: str | Path,
    provenance_path: str | Path,
    output_dir: str | Path,
    config_path: str | Path | None = None,
    seeds: Mapping[str, Any] | None = None,
    *,
    data_label: str | None = None,
) -> list[Path]:
    """The ``genesis tables`` stage: target-task and ablation tables with their records.

    ``data_label`` (e.g. "synthetic phantoms") goes into every title and the notes. The
    label-efficiency table is ``genesis.report.label_efficiency.write_stage``'s.
    """
    summary = load_summary(summary_path)
    published = load_published(published_path)
    provenance = records.load_record(provenance_path)
    # The target and ablation tables hold the runs on all training cases: their seeds.
    record = records.complete_record(provenance, config_path, full_fraction(summary), seeds)
    output_dir = Path(output_dir)
    target = target_table(summary, published)
    paths = write_table(
        target,
        output_dir / "target_tasks",
        title=titled(
            "Target tasks", data_label, "fine-tuning from scratch vs pretrained initialisations"
        ),
        label="tab:target_tasks",
        record=record,
        others=other_published(published, target),
        empty_note="No runs on all training cases (fraction 1.0).",
        data_label=data_label,
    )
    paths += write_table(
        ablation_table(summary, published),
        output_dir / "ablation",
        title=titled("Ablation", data_label, "pretraining with one transformation at a time"),
        label="tab:ablation",
        record=record,
        empty_note="No ablation variants ran: config `pretrain.variants` lists only `all`.",
        data_label=data_label,
    )
    return paths
