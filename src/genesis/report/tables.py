"""Target-task and ablation tables: mean ± std over runs, Welch's p against scratch, and the
published numbers beside them.

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
PUBLISHED_COLUMNS = ("task", "init", "metric", "mean", "std", "source")
METRICS = ("auc", "iou")

#: Our initialisation -> the published row it reproduces. The released checkpoint is the
#: authors' Models Genesis model, so it is compared with the same published row.
PUBLISHED_INIT = {"scratch": "scratch", "genesis": "genesis", "released": "genesis"}

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
    "task", "metric", "init", "n", "mean_pct", "std_pct", "dice_mean_pct", "dice_std_pct",
    "p_value", "published_init", "published_mean_pct", "published_std_pct", "published_source",
)


# --- reading -------------------------------------------------------------------------------

def load_summary(path: str | Path) -> pd.DataFrame:
    """Read ``finetune/summary.csv`` and check what the tables rely on."""
    path = Path(path)
    frame = read_csv(path, SUMMARY_COLUMNS)
    if frame.empty:
        raise InputError(path, "has no runs")
    frame["task"] = frame["task"].astype(str)
    frame["init"] = frame["init"].astype(str)
    frame["metric"] = frame["metric"].astype(str)
    for column in ("seed", "value", "dice"):
        frame[column] = pd.to_numeric(frame[column], errors="coerce")
    for column in ("seed", "value"):
        if frame[column].isna().any():
            rows = list(frame.index[frame[column].isna()][:5] + 2)
            raise InputError(path, f"column '{column}' is empty or not a number on line(s) "
                             f"{rows}")
    _check_fraction(path, frame, "value")
    _check_fraction(path, frame, "dice")
    unknown = sorted(set(frame["metric"]) - set(METRICS))
    if unknown:
        raise InputError(path, f"unknown metric(s) {unknown}; expected one of {list(METRICS)}")
    mixed = frame.groupby("task")["metric"].nunique()
    if (mixed > 1).any():
        raise InputError(path, f"task(s) {sorted(mixed.index[mixed > 1])} mix several metrics")
    duplicated = frame.duplicated(["task", "init", "run"], keep=False)
    if duplicated.any():
        first = frame[duplicated].iloc[0]
        raise InputError(path, f"run {first['run']} of {first['task']}/{first['init']} "
                         "appears more than once")
    return frame


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


def init_order(inits: Iterable[str]) -> list[str]:
    """scratch, genesis, released, other inits, then the ablation variants by name."""
    fixed = ["scratch", "genesis", "released"]
    inits = set(inits)
    variants = sorted(init for init in inits if init.startswith("genesis-"))
    others = sorted(inits - set(fixed) - set(variants))
    return [init for init in fixed if init in inits] + others + variants


def task_order(tasks: Iterable[str]) -> list[str]:
    tasks = set(tasks)
    return [task for task in TASK_ORDER if task in tasks] + sorted(tasks - set(TASK_ORDER))


def summarise(summary: pd.DataFrame, inits: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per (task, init): n, mean and std (ddof=1) in %, p-value against scratch."""
    rows = []
    for task in task_order(summary["task"]):
        runs = summary[summary["task"] == task]
        scratch = runs.loc[runs["init"] == "scratch", "value"].to_numpy(float)
        present = init_order(runs["init"])
        for init in present if inits is None else [i for i in inits if i in present]:
            group = runs[runs["init"] == init]
            values = group["value"].to_numpy(float)
            dice = group["dice"].dropna().to_numpy(float)
            rows.append({
                "task": task,
                "metric": str(group["metric"].iloc[0]),
                "init": init,
                "n": int(values.size),
                "mean_pct": 100 * values.mean(),
                "std_pct": 100 * _std(values),
                "dice_mean_pct": 100 * dice.mean() if dice.size else math.nan,
                "dice_std_pct": 100 * _std(dice),
                "p_value": math.nan if init == "scratch" else welch_p_value(values, scratch),
            })
    return pd.DataFrame(rows, columns=list(TABLE_COLUMNS[:9]))


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
    """The main table: every initialisation except the ablation variants."""
    inits = [init for init in init_order(summary["init"]) if not init.startswith("genesis-")]
    return attach_published(summarise(summary, inits), published)


def ablation_table(summary: pd.DataFrame, published: pd.DataFrame) -> pd.DataFrame:
    """scratch, genesis (all transformations) and each single-transformation variant.

    Empty (header only) when no ``genesis-<variant>`` runs exist.
    """
    inits = init_order(summary["init"])
    if not any(init.startswith("genesis-") for init in inits):
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    chosen = [init for init in inits if init in ("scratch", "genesis") or
              init.startswith("genesis-")]
    return attach_published(summarise(summary, chosen), published)


def other_published(published: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Published baselines for our tasks that this workflow does not re-run."""
    shown = {(row.task, row.published_init) for row in table.itertuples() if row.published_init}
    tasks = set(table["task"])
    keep = [
        row.task in tasks and (row.task, row.init) not in shown
        for row in published.itertuples()
    ]
    return published[keep].reset_index(drop=True)


# --- formatting ----------------------------------------------------------------------------

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
            row.task.upper(), METRIC_LABELS.get(row.metric, row.metric), row.init, str(row.n),
            format_mean_std(row.mean_pct, row.std_pct, plus_minus),
            format_mean_std(row.dice_mean_pct, row.dice_std_pct, plus_minus),
            format_p(row.p_value),
            format_mean_std(row.published_mean_pct, row.published_std_pct, plus_minus),
        ]
        for row in table.itertuples()
    ]


HEADERS = ["Task", "Metric", "Initialisation", "n", "Ours (%)", "Dice (%)", "p vs scratch",
           "Published (%)"]


def to_markdown(
    table: pd.DataFrame,
    title: str,
    record: Mapping[str, Any],
    others: pd.DataFrame | None = None,
    empty_note: str = "No runs.",
) -> str:
    """A GitHub-flavoured Markdown table with notes and the reproducibility record."""
    parts = [f"# {title}\n"]
    if table.empty:
        parts.append(f"{empty_note}\n")
    else:
        parts.append(_markdown_grid(HEADERS, _display_rows(table, " ± ")))
        parts.append(_notes(table, others))
        if others is not None and not others.empty:
            parts.append("## Published baselines not re-run here\n")
            parts.append(_markdown_grid(
                ["Task", "Metric", "Initialisation", "Published (%)"],
                [[r.task.upper(), METRIC_LABELS.get(r.metric, r.metric), r.init,
                  format_mean_std(r.mean, r.std)] for r in others.itertuples()],
            ))
    parts.append(records.markdown_footer(record))
    return "\n".join(parts)


def _markdown_grid(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _notes(table: pd.DataFrame, others: pd.DataFrame | None) -> str:
    sources = sorted({s for s in table["published_source"] if s} |
                     (set(others["source"]) if others is not None else set()))
    notes = [
        "Mean ± sample standard deviation (ddof=1) over n independent fine-tuning runs, in %. "
        "AUC: ROC area under the curve; IoU and Dice: overlap of the binary masks.",
        "p vs scratch: two-sided Welch's t-test of the runs against the scratch runs of the "
        "same task (– for scratch itself or when either side has fewer than two runs).",
        "Published: the same initialisation as reported by the authors' group; `released` is "
        "compared with the published Models Genesis row. BMS is BraTS 2018.",
    ]
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
        return head + f"% {empty_note}\n"
    rows = [[_tex(cell) for cell in row] for row in _display_rows(table, r" $\pm$ ")]
    headers = [_tex(h) for h in HEADERS]
    body = "\n".join(" & ".join(row) + r" \\" for row in rows)
    return (
        head
        + "\\begin{table}[t]\n\\centering\n"
        + f"\\caption{{{_tex(caption)}}}\n\\label{{{label}}}\n"
        + "\\begin{tabular}{lllrrrrr}\n\\toprule\n"
        + " & ".join(headers) + " \\\\\n\\midrule\n"
        + body + "\n\\bottomrule\n\\end{tabular}\n\\end{table}\n"
    )


def _tex(text: str) -> str:
    if "$" in text:  # already formatted maths (mean $\pm$ std)
        return text.replace("–", "--")
    for char, escaped in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"),
                          ("_", r"\_"), ("#", r"\#")):
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
) -> list[Path]:
    """Write ``stem.{csv,md,tex}`` and ``stem.provenance.json``; return the paths."""
    stem = Path(stem)
    csv_path, md_path, tex_path = (stem.with_name(f"{stem.name}.{ext}")
                                   for ext in ("csv", "md", "tex"))
    json_path = stem.with_name(f"{stem.name}.provenance.json")
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    write_text(md_path, to_markdown(table, title, record, others, empty_note))
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
) -> list[Path]:
    """The ``genesis tables`` stage: target-task and ablation tables with their records."""
    summary = load_summary(summary_path)
    published = load_published(published_path)
    record = records.complete_record(records.load_record(provenance_path), config_path,
                                     summary, seeds)
    output_dir = Path(output_dir)
    target = target_table(summary, published)
    paths = write_table(
        target, output_dir / "target_tasks",
        title="Target tasks: fine-tuning from scratch vs pretrained initialisations",
        label="tab:target_tasks", record=record, others=other_published(published, target),
    )
    paths += write_table(
        ablation_table(summary, published), output_dir / "ablation",
        title="Ablation: pretraining with one transformation at a time",
        label="tab:ablation", record=record,
        empty_note="No ablation variants ran: config `pretrain.variants` lists only `all`.",
    )
    return paths
