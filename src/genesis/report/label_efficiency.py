"""Label efficiency: the target-task metric against the share of labelled training cases.

A label sweep fine-tunes every initialisation on fractions of the training cases. At the
same (task, fraction, run) index every initialisation gets the same labelled subset and the
same seed, so runs compare in pairs: the p-value against ``scratch`` is a paired t-test
over the run indices (Welch's t-test where the run sets differ and cannot be paired), with
the Wilcoxon signed-rank p beside it. The table is written as CSV (plain numbers for pandas),
Markdown and LaTeX; the figure draws one line per initialisation.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from genesis.atomic import atomic_path, write_json, write_text
from genesis.errors import InputError
from genesis.report import records
from genesis.report.tables import (
    METRIC_LABELS,
    TASK_NAMES,
    by_run,
    data_note,
    format_mean_std,
    format_p,
    init_order,
    latex_table,
    markdown_grid,
    paired_p_value,
    run_sort_key,
    task_label,
    task_order,
    welch_p_value,
    with_design_columns,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PAIRED = "paired t-test"
WELCH = "Welch"

LABEL_EFFICIENCY_COLUMNS = (
    "task",
    "metric",
    "init",
    "fraction",
    "n_labelled",
    "n_labelled_min",
    "n_labelled_max",
    "n_runs",
    "mean_pct",
    "std_pct",
    "min_pct",
    "max_pct",
    "delta_pct",
    "p_value",
    "test",
    "n_pairs",
    "p_wilcoxon",
)


# --- statistics ----------------------------------------------------------------------------


def wilcoxon_p_value(values: Mapping[Any, float], reference: Mapping[Any, float]) -> float:
    """Two-sided Wilcoxon signed-rank p of the differences of runs paired by run index.

    Zero differences are dropped (they carry no sign); NaN when the run sets differ or
    fewer than two non-zero differences remain. With n pairs and no ties scipy computes the
    exact distribution, whose smallest two-sided p is 2 / 2**n.
    """
    from scipy import stats

    if set(values) != set(reference):
        return math.nan
    runs = sorted(values, key=run_sort_key)
    differences = np.array([values[run] - reference[run] for run in runs], float)
    differences = differences[differences != 0]
    if differences.size < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p_value = float(stats.wilcoxon(differences).pvalue)
    return p_value if math.isfinite(p_value) else math.nan


def compare_with_scratch(
    values: Mapping[Any, float], scratch: Mapping[Any, float]
) -> tuple[float, str, int, float]:
    """(p, test, n_pairs, p_wilcoxon) of one group of runs against the scratch runs.

    The same run indices on both sides pair (paired t-test); different run sets do not
    (Welch's t-test, n_pairs 0, no Wilcoxon p). No scratch runs: (NaN, "", 0, NaN).
    """
    if not scratch or not values:
        return math.nan, "", 0, math.nan
    if set(values) == set(scratch):
        return (
            paired_p_value(values, scratch),
            PAIRED,
            len(values),
            wilcoxon_p_value(values, scratch),
        )
    ordered = [values[run] for run in sorted(values, key=run_sort_key)]
    reference = [scratch[run] for run in sorted(scratch, key=run_sort_key)]
    return welch_p_value(ordered, reference), WELCH, 0, math.nan


def label_efficiency_table(summary: pd.DataFrame) -> pd.DataFrame:
    """One row per (task, init, fraction): runs, mean ± std in %, p against scratch.

    ``summary`` is ``finetune/summary.csv`` as ``tables.load_summary`` reads it (a summary
    without ``fraction`` counts as fraction 1.0). Rows are ordered by task, fraction and
    initialisation; ``n_labelled`` is the number of labelled training cases as text ("12",
    or "10–12" if the runs differ, "" if not recorded) with its numeric range beside it.
    """
    summary = with_design_columns(summary)
    rows = []
    for task in task_order(summary["task"]):
        of_task = summary[summary["task"] == task]
        inits = init_order(of_task["init"])
        for fraction in sorted(set(of_task["fraction"])):
            at_fraction = of_task[of_task["fraction"] == fraction]
            scratch_runs = at_fraction[at_fraction["init"] == "scratch"]
            scratch = by_run(scratch_runs)
            scratch_mean = 100 * float(np.mean(list(scratch.values()))) if scratch else math.nan
            for init in inits:
                group = at_fraction[at_fraction["init"] == init]
                if group.empty:
                    continue
                runs = by_run(group)
                values = 100 * np.array([runs[r] for r in sorted(runs, key=run_sort_key)])
                if init == "scratch":
                    p_value, test, n_pairs, p_wilcoxon = math.nan, "", 0, math.nan
                else:
                    p_value, test, n_pairs, p_wilcoxon = compare_with_scratch(runs, scratch)
                text, low, high = _labelled(group["n_labelled"])
                rows.append(
                    {
                        "task": task,
                        "metric": str(group["metric"].iloc[0]),
                        "init": init,
                        "fraction": float(fraction),
                        "n_labelled": text,
                        "n_labelled_min": low,
                        "n_labelled_max": high,
                        "n_runs": int(values.size),
                        "mean_pct": float(values.mean()),
                        "std_pct": float(np.std(values, ddof=1)) if values.size > 1 else math.nan,
                        "min_pct": float(values.min()),
                        "max_pct": float(values.max()),
                        "delta_pct": (
                            math.nan if init == "scratch" else float(values.mean()) - scratch_mean
                        ),
                        "p_value": p_value,
                        "test": test,
                        "n_pairs": n_pairs,
                        "p_wilcoxon": p_wilcoxon,
                    }
                )
    return pd.DataFrame(rows, columns=list(LABEL_EFFICIENCY_COLUMNS))


def _labelled(counts: pd.Series) -> tuple[str, float, float]:
    known = pd.to_numeric(counts, errors="coerce").dropna()
    if known.empty:
        return "", math.nan, math.nan
    low, high = int(known.min()), int(known.max())
    return (str(low) if low == high else f"{low}–{high}"), float(low), float(high)


def run_seeds(summary: pd.DataFrame) -> dict[str, list[int]]:
    """Fine-tuning seeds per ``task/init@fraction``, in run order, for the record."""
    summary = with_design_columns(summary)
    seeds: dict[str, list[int]] = {}
    for task in task_order(summary["task"]):
        of_task = summary[summary["task"] == task]
        for init in init_order(of_task["init"]):
            of_init = of_task[of_task["init"] == init]
            for fraction in sorted(set(of_init["fraction"])):
                group = of_init[of_init["fraction"] == fraction]
                ordered = sorted(
                    zip(group["run"], group["seed"], strict=True),
                    key=lambda pair: run_sort_key(pair[0]),
                )
                key = f"{task}/{init}@{format_fraction(fraction)}"
                seeds[key] = [int(seed) for _, seed in ordered]
    return seeds


# --- writing -------------------------------------------------------------------------------

HEADERS = [
    "Task",
    "Metric",
    "Fraction",
    "Labelled cases",
    "Initialisation",
    "Runs",
    "Ours (%)",
    "Δ vs scratch (pp)",
    "p vs scratch",
    "Test",
    "p Wilcoxon",
]


def format_fraction(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _display_rows(table: pd.DataFrame, plus_minus: str) -> list[list[str]]:
    return [
        [
            task_label(row.task),
            METRIC_LABELS.get(row.metric, row.metric),
            format_fraction(row.fraction),
            row.n_labelled or "–",
            row.init,
            str(row.n_runs),
            format_mean_std(row.mean_pct, row.std_pct, plus_minus),
            f"{row.delta_pct:+.2f}" if math.isfinite(row.delta_pct) else "–",
            format_p(row.p_value),
            row.test or "–",
            format_p(row.p_wilcoxon),
        ]
        for row in table.itertuples()
    ]


def title(data_label: str | None) -> str:
    return f"Label efficiency on {data_label}" if data_label else "Label efficiency"


def notes(table: pd.DataFrame, data_label: str | None = None) -> list[str]:
    """The notes under the Markdown table: what each column means and its limits."""
    pairs = sorted({int(n) for n in table["n_pairs"] if n >= 1})
    smallest = ", ".join(f"{2 / 2**n:.3g} with {n} runs" for n in pairs)
    return [
        *data_note(data_label),
        "Fraction: share of the training cases used for fine-tuning; labelled cases: their "
        "number (a–b when the runs differ). Mean ± sample standard deviation (ddof=1) over "
        "the runs, in %; the CSV also holds the min and max. AUC: ROC area under the curve; "
        "IoU: overlap of the masks, mean over the foreground classes.",
        "Δ vs scratch: mean minus the scratch mean at the same task and fraction, in "
        "percentage points.",
        "p vs scratch: two-sided paired t-test (scipy.stats.ttest_rel) over the runs with the "
        "same run index, which share the labelled subset and the seed across "
        "initialisations; where the two initialisations have different runs they cannot be "
        "paired and Welch's t-test is used (column Test). – for scratch itself, with fewer "
        "than two runs, or when the paired differences have no spread.",
        "p Wilcoxon: two-sided Wilcoxon signed-rank test of the paired differences (zero "
        "differences dropped; – with fewer than two non-zero differences or unpaired runs). "
        "With n runs its smallest possible two-sided p is 2/2^n"
        + (f" ({smallest})" if smallest else "")
        + ", so it cannot fall below 0.05 with fewer than 6 runs.",
        "No correction for multiple comparisons across fractions and initialisations.",
    ]


def to_markdown(
    table: pd.DataFrame, data_label: str | None = None, record: Mapping[str, Any] | None = None
) -> str:
    parts = [f"# {title(data_label)}\n"]
    if table.empty:
        parts.append(" ".join(["No runs.", *data_note(data_label)]) + "\n")
    else:
        parts.append(markdown_grid(HEADERS, _display_rows(table, " ± ")))
        parts.append("\n".join(f"- {note}" for note in notes(table, data_label)) + "\n")
    if record is not None:
        parts.append(records.markdown_footer(record))
    return "\n".join(parts)


def to_latex(
    table: pd.DataFrame, data_label: str | None = None, record: Mapping[str, Any] | None = None
) -> str:
    head = records.latex_comment(record) if record is not None else ""
    caption = (
        f"{title(data_label)}. p: two-sided paired t-test against scratch over runs "
        "sharing the labelled subset and seed (Welch's t-test where the runs differ)."
    )
    if table.empty:
        return head + f"% {title(data_label)}\n% No runs.\n"
    rows = _display_rows(table, r" $\pm$ ")
    headers = [r"$\Delta$ vs scratch (pp)" if h.startswith("Δ") else h for h in HEADERS]
    return head + latex_table(headers, rows, caption, "tab:label_efficiency", "llrrlrrrrlr")


def write_label_efficiency(
    table: pd.DataFrame,
    stem: str | Path,
    data_label: str | None = None,
    *,
    record: Mapping[str, Any] | None = None,
) -> list[Path]:
    """Write ``stem.{csv,md,tex}`` (and ``stem.provenance.json`` with a record); return them.

    ``data_label`` says what the data are ("synthetic phantoms", "LUNA16 / MSD", ...) and
    titles the Markdown and LaTeX versions; the CSV holds plain numbers for pandas.
    """
    stem = Path(stem)
    csv_path, md_path, tex_path = (
        stem.with_name(f"{stem.name}.{ext}") for ext in ("csv", "md", "tex")
    )
    with atomic_path(csv_path) as tmp:
        table.to_csv(tmp, index=False)
    write_text(md_path, to_markdown(table, data_label, record))
    write_text(tex_path, to_latex(table, data_label, record))
    paths = [csv_path, md_path, tex_path]
    if record is not None:
        json_path = stem.with_name(f"{stem.name}.provenance.json")
        write_json(json_path, dict(record))
        paths.append(json_path)
    return paths


# --- figure --------------------------------------------------------------------------------


def stars(p_value: float) -> str:
    """* p < 0.05, ** p < 0.01, *** p < 0.001; "" otherwise (NaN included)."""
    if not math.isfinite(p_value):
        return ""
    return "***" if p_value < 0.001 else "**" if p_value < 0.01 else "*" if p_value < 0.05 else ""


def label_efficiency_figure(
    summary: pd.DataFrame, task: str, data_label: str | None = None
) -> Figure:
    """The metric (%) against the labelled fraction: one line per initialisation.

    Each line joins the means over the runs, with a ±std band (min–max with a single run);
    stars above the bands mark a paired t-test p < 0.05 against scratch, in the colour of
    the initialisation. The x axis is logarithmic when the fractions span 10x or more, with
    a tick at each fraction labelled with the share and the number of labelled cases. One
    fraction draws one point per initialisation with an error bar, side by side.
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    from matplotlib.ticker import NullFormatter, NullLocator

    from genesis.report.figures import FIXED_COLOURS, colour

    summary = with_design_columns(summary)
    runs = summary[summary["task"].astype(str) == task]
    if runs.empty:
        tasks = task_order(summary["task"].astype(str))
        raise InputError(None, f"no runs of task '{task}' in the summary; it holds {tasks}")
    table = label_efficiency_table(runs)
    fractions = sorted(set(table["fraction"]))
    inits = init_order(table["init"])
    extra = [init for init in inits if init not in FIXED_COLOURS]
    metric = str(table["metric"].iloc[0])
    single = len(fractions) == 1
    logarithmic = fractions[-1] / fractions[0] >= 10

    figure = Figure(figsize=(7.8, 5.6), layout="constrained")
    ax = figure.subplots()
    if logarithmic:
        ax.set_xscale("log")
    marks = []  # (fraction, x, stars, colour)
    for index, init in enumerate(inits):
        rows = table[table["init"] == init].sort_values("fraction")
        tint = colour(init, extra)
        x = rows["fraction"].to_numpy(float)
        if single:  # side by side, so the error bars do not hide each other
            x = x * (1 + 0.06 * (index - (len(inits) - 1) / 2))
        mean = rows["mean_pct"].to_numpy(float)
        spread = rows["std_pct"].to_numpy(float)
        low = np.where(np.isfinite(spread), mean - spread, rows["min_pct"].to_numpy(float))
        high = np.where(np.isfinite(spread), mean + spread, rows["max_pct"].to_numpy(float))
        n_runs = sorted(set(rows["n_runs"]))
        runs_text = str(n_runs[0]) if len(n_runs) == 1 else f"{n_runs[0]}–{n_runs[-1]}"
        label = f"{init} (n={runs_text} runs)"
        ax.plot(x, mean, color=tint, lw=2, marker="o", ms=6, zorder=3, label=label)
        if single:
            bars = [mean - low, high - mean]
            ax.errorbar(x, mean, yerr=bars, fmt="none", ecolor=tint, capsize=5, lw=1.5)
        else:
            ax.fill_between(x, low, high, color=tint, alpha=0.18, lw=0)
        for row, position in zip(rows.itertuples(), x, strict=True):
            mark = stars(row.p_value) if row.test == PAIRED else ""
            if mark:
                marks.append((row.fraction, position, mark, tint))
    _draw_stars(ax, table, marks)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(fractions, [_tick(fraction, table) for fraction in fractions])
    if single:
        half = 0.06 * len(inits) / 2 + 0.1
        ax.set_xlim(fractions[0] * (1 - half), fractions[0] * (1 + half))
    unit = METRIC_LABELS.get(metric, metric)
    if metric == "iou":
        unit += ", mean over foreground classes"
    ax.set_ylabel(f"test {unit} (%)")
    scale = ", log scale" if logarithmic else ""
    ax.set_xlabel(f"labelled training cases: share of the training set (number){scale}")
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    spread_text = "bar" if single else "band"
    handles += [
        Patch(color="grey", alpha=0.3, label=f"{spread_text}: mean ± std (ddof=1) over runs"),
        Line2D(
            [],
            [],
            ls="",
            marker="$*$",
            color="black",
            ms=8,
            label="paired t-test vs scratch: * p<0.05, ** p<0.01, *** p<0.001",
        ),
    ]
    figure.legend(handles=handles, fontsize=8, loc="outside lower center", ncol=2)
    title = (
        f"Label efficiency, {task_label(task)} on {data_label}"
        if data_label
        else f"Label efficiency, {TASK_NAMES.get(task, task)}"
    )
    figure.suptitle(title, fontweight="bold")
    return figure


def _draw_stars(ax: Any, table: pd.DataFrame, marks: list[tuple]) -> None:
    """Stars stacked above the highest band at each fraction, one row per starred init."""
    if not marks:
        return
    band = table["mean_pct"] + table["std_pct"]
    band = band.where(table["std_pct"].notna(), table["max_pct"])
    highest = band.groupby(table["fraction"]).max()
    low = table["mean_pct"] - table["std_pct"]
    span = max(float(band.max() - low.where(low.notna(), table["min_pct"]).min()), 1.0)
    stacked: dict[float, int] = {}  # by x position
    ceiling = float(band.max())
    for fraction, x, mark, tint in marks:
        level = stacked.get(x, 0)  # side by side (one fraction): no stacking
        stacked[x] = level + 1
        y = float(highest[fraction]) + span * (0.03 + 0.07 * level)
        ceiling = max(ceiling, y + span * 0.09)
        ax.text(x, y, mark, ha="center", va="bottom", color=tint, fontsize=11, fontweight="bold")
    ax.set_ylim(top=ceiling)


def _tick(fraction: float, table: pd.DataFrame) -> str:
    """ "10%" over "n=12" (or "n=10–12"), from every init's runs at this fraction."""
    rows = table[table["fraction"] == fraction]
    low, high = rows["n_labelled_min"].min(), rows["n_labelled_max"].max()
    if not (math.isfinite(low) and math.isfinite(high)):
        return format_fraction(fraction)
    count = f"{int(low)}" if low == high else f"{int(low)}–{int(high)}"
    return f"{format_fraction(fraction)}\nn={count}"


def write_stage(
    summary_path: str | Path,
    provenance_path: str | Path,
    stem: str | Path,
    config_path: str | Path | None = None,
    seeds: Mapping[str, Any] | None = None,
    data_label: str | None = None,
) -> list[Path]:
    """``genesis tables --label-efficiency STEM``: the sweep's table with its record (every
    run's seed, at every fraction)."""
    from genesis.report.tables import load_summary

    summary = load_summary(summary_path)
    provenance = records.load_record(provenance_path)
    sweep_seeds = {**(seeds or {}), "finetune_runs": run_seeds(summary)}
    record = records.complete_record(provenance, config_path, None, sweep_seeds)
    return write_label_efficiency(label_efficiency_table(summary), stem, data_label, record=record)
