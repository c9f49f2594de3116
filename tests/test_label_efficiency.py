"""Label efficiency: paired p-values by run index, Welch fallback, writers, figure, CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import special

from genesis.cli import main
from genesis.errors import InputError
from genesis.report import label_efficiency as le
from genesis.report import tables

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "config" / "published.csv"

FRACTIONS = (0.1, 0.25, 0.5, 1.0)
CASES = {0.1: 4, 0.25: 10, 0.5: 20, 1.0: 40}
# Hand-made runs (fraction 0.1, task lcs): genesis beats scratch in every pair by a varying
# margin; the run-to-run variation is shared (same subset, same seed), so pairing helps.
SCRATCH = [0.50, 0.62, 0.55, 0.70, 0.58]
GENESIS = [0.56, 0.66, 0.63, 0.73, 0.65]


def paired_by_hand(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test p from the textbook formulas (Student t tail through the
    regularised incomplete beta), independent of scipy.stats."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    df = n - 1
    return float(special.betainc(df / 2, 0.5, df / (df + t * t)))


def welch_by_hand(a: list[float], b: list[float]) -> float:
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return float(special.betainc(df / 2, 0.5, df / (df + t * t)))


def sweep(
    task: str = "lcs", metric: str = "iou", runs: int = 5, fractions=FRACTIONS, seed: int = 0
) -> pd.DataFrame:
    """A label sweep in the new summary format; the hand-made runs sit at fraction 0.1."""
    rng = np.random.default_rng(seed)
    rows = []
    for fraction in fractions:
        for run in range(1, runs + 1):
            shared = rng.normal(0, 0.03)  # the subset and seed of this run index
            for init, level in (("scratch", 0.55), ("genesis", 0.62), ("released", 0.63)):
                value = level + 0.2 * fraction + shared + rng.normal(0, 0.01)
                if fraction == 0.1 and init in ("scratch", "genesis") and runs == 5:
                    value = (SCRATCH if init == "scratch" else GENESIS)[run - 1]
                rows.append(
                    {
                        "task": task,
                        "init": init,
                        "fraction": fraction,
                        "n_labelled": CASES.get(fraction, 7),
                        "run": run,
                        "seed": 100 * run,
                        "metric": metric,
                        "value": float(np.clip(value, 0, 1)),
                        "dice": math.nan,
                    }
                )
    return pd.DataFrame(rows)


def row(table: pd.DataFrame, init: str, fraction: float, task: str = "lcs") -> pd.Series:
    match = table[
        (table["task"] == task) & (table["init"] == init) & np.isclose(table["fraction"], fraction)
    ]
    assert len(match) == 1
    return match.iloc[0]


def test_paired_p_matches_the_hand_computed_oracle() -> None:
    table = le.label_efficiency_table(sweep())
    assert list(table.columns) == list(le.LABEL_EFFICIENCY_COLUMNS)
    genesis = row(table, "genesis", 0.1)
    expected = paired_by_hand(GENESIS, SCRATCH)
    assert expected < 0.01 < welch_by_hand(GENESIS, SCRATCH)  # pairing removes shared noise
    assert genesis["test"] == "paired t-test"
    assert genesis["p_value"] == pytest.approx(expected, rel=1e-9)
    assert genesis["n_pairs"] == 5 and genesis["n_runs"] == 5
    assert genesis["mean_pct"] == pytest.approx(100 * np.mean(GENESIS))
    assert genesis["std_pct"] == pytest.approx(100 * np.std(GENESIS, ddof=1))
    assert genesis["delta_pct"] == pytest.approx(100 * (np.mean(GENESIS) - np.mean(SCRATCH)))
    # Five positive differences: the smallest two-sided Wilcoxon p there is, 2 / 2**5.
    assert genesis["p_wilcoxon"] == pytest.approx(2 / 2**5)
    scratch = row(table, "scratch", 0.1)
    assert math.isnan(scratch["p_value"]) and scratch["test"] == ""
    assert math.isnan(scratch["p_wilcoxon"]) and math.isnan(scratch["delta_pct"])
    assert len(table) == 3 * len(FRACTIONS)
    assert list(table["fraction"].drop_duplicates()) == list(FRACTIONS)


@pytest.mark.parametrize("seed", range(5))
def test_pairing_is_by_run_index_not_row_order(seed: int) -> None:
    summary = sweep()
    reference = le.label_efficiency_table(summary)
    shuffled = summary.sample(frac=1, random_state=seed).reset_index(drop=True)
    again = le.label_efficiency_table(shuffled)
    columns = ["p_value", "p_wilcoxon", "mean_pct", "std_pct"]
    pd.testing.assert_frame_equal(reference[columns], again[columns])
    # Relabelling the genesis runs breaks the pairs: the paired p changes, the means do not.
    genesis = (summary["init"] == "genesis") & np.isclose(summary["fraction"], 0.1)
    relabelled = summary.copy()
    relabelled.loc[genesis, "run"] = np.roll(summary.loc[genesis, "run"].to_numpy(), 1)
    broken = row(le.label_efficiency_table(relabelled), "genesis", 0.1)
    assert broken["mean_pct"] == pytest.approx(row(reference, "genesis", 0.1)["mean_pct"])
    assert broken["p_value"] != pytest.approx(row(reference, "genesis", 0.1)["p_value"])


def test_welch_when_the_run_sets_differ() -> None:
    summary = sweep()
    drop = (summary["init"] == "genesis") & (summary["run"] == 5) & (summary["fraction"] == 0.1)
    genesis = row(le.label_efficiency_table(summary[~drop]), "genesis", 0.1)
    assert genesis["test"] == "Welch"
    assert genesis["p_value"] == pytest.approx(welch_by_hand(GENESIS[:4], SCRATCH), rel=1e-9)
    assert genesis["n_pairs"] == 0 and math.isnan(genesis["p_wilcoxon"])
    assert genesis["n_runs"] == 4


def test_no_scratch_runs_give_no_test() -> None:
    summary = sweep()
    table = le.label_efficiency_table(summary[summary["init"] != "scratch"])
    assert set(table["test"]) == {""} and table["p_value"].isna().all()


def test_wilcoxon_needs_two_non_zero_differences() -> None:
    assert math.isnan(le.wilcoxon_p_value({1: 0.5, 2: 0.6}, {1: 0.5, 2: 0.5}))
    assert math.isnan(le.wilcoxon_p_value({1: 0.5, 2: 0.6}, {1: 0.5, 3: 0.5}))
    runs = range(6)
    assert le.wilcoxon_p_value({r: 0.6 + r / 100 for r in runs}, dict.fromkeys(runs, 0.5)) == (
        pytest.approx(2 / 2**6)
    )


def test_n_labelled_is_shared_or_a_range() -> None:
    summary = sweep()
    assert row(le.label_efficiency_table(summary), "genesis", 0.25)["n_labelled"] == "10"
    uneven = summary.copy()
    uneven.loc[(uneven["fraction"] == 0.25) & (uneven["run"] == 2), "n_labelled"] = 12
    genesis = row(le.label_efficiency_table(uneven), "genesis", 0.25)
    assert genesis["n_labelled"] == "10–12"
    assert (genesis["n_labelled_min"], genesis["n_labelled_max"]) == (10, 12)


def test_old_format_summary_loads_as_fraction_one(tmp_path: Path) -> None:
    old = sweep(fractions=(1.0,)).drop(columns=["fraction", "n_labelled"])
    path = tmp_path / "summary.csv"
    old.to_csv(path, index=False)
    summary = tables.load_summary(path)
    assert (summary["fraction"] == 1.0).all() and summary["n_labelled"].isna().all()
    table = le.label_efficiency_table(summary)
    assert set(table["fraction"]) == {1.0} and set(table["n_labelled"]) == {""}
    assert set(table.loc[table["init"] != "scratch", "test"]) == {"paired t-test"}


def test_writers_title_the_data_and_leave_no_temporary_files(tmp_path: Path) -> None:
    summary = pd.concat([sweep(), sweep(task="spleen", seed=1)])
    table = le.label_efficiency_table(summary)
    record = {"git_commit": "abc123"}
    paths = le.write_label_efficiency(table, tmp_path / "le", "synthetic phantoms", record=record)
    assert sorted(p.name for p in paths) == sorted(
        ["le.csv", "le.md", "le.tex", "le.provenance.json"]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)
    markdown = (tmp_path / "le.md").read_text(encoding="utf-8")
    latex = (tmp_path / "le.tex").read_text(encoding="utf-8")
    assert markdown.startswith("# Label efficiency on synthetic phantoms\n")
    assert "Label efficiency on synthetic phantoms" in latex and "abc123" in latex
    assert "| spleen | IoU | 10% | 4 | genesis |" in markdown  # a user task, its own name
    assert "| LCS | IoU |" in markdown
    assert "2/2^n (0.0625 with 5 runs)" in markdown
    assert r"$\Delta$" in latex and "Δ" not in latex
    csv = pd.read_csv(tmp_path / "le.csv")
    assert list(csv.columns) == list(le.LABEL_EFFICIENCY_COLUMNS)
    assert csv["mean_pct"].to_numpy() == pytest.approx(table["mean_pct"].to_numpy())
    assert (
        json.loads((tmp_path / "le.provenance.json").read_text(encoding="utf-8"))["git_commit"]
        == "abc123"
    )
    # Without a record: no footer and no provenance file.
    assert len(le.write_label_efficiency(table, tmp_path / "bare")) == 3


def means(table: pd.DataFrame, init: str) -> list[float]:
    return list(table.loc[table["init"] == init].sort_values("fraction")["mean_pct"])


def test_figure_draws_every_fraction_on_a_log_axis() -> None:
    summary = sweep()
    table = le.label_efficiency_table(summary)
    figure = le.label_efficiency_figure(summary, "lcs", "synthetic phantoms")
    (ax,) = figure.axes
    assert ax.get_xscale() == "log"  # 0.1 to 1.0 spans 10x
    lines = {
        line.get_label().split(" ")[0]: line
        for line in ax.lines
        if not line.get_label().startswith("_")
    }
    assert set(lines) == {"scratch", "genesis", "released"}
    for init, line in lines.items():
        assert list(line.get_xdata()) == pytest.approx(list(FRACTIONS))
        assert list(line.get_ydata()) == pytest.approx(means(table, init))
    assert list(ax.get_xticks()) == pytest.approx(list(FRACTIONS))
    labels = [tick.get_text() for tick in ax.get_xticklabels()]
    assert labels == ["10%\nn=4", "25%\nn=10", "50%\nn=20", "100%\nn=40"]
    assert "synthetic phantoms" in figure._suptitle.get_text()
    starred = [text.get_text() for text in ax.texts]
    significant = table[(table["test"] == "paired t-test") & (table["p_value"] < 0.05)]
    assert len(starred) == len(significant) > 0 and set(starred) <= {"*", "**", "***"}


def test_figure_with_one_fraction_draws_one_point_per_init() -> None:
    summary = sweep(fractions=(1.0,))
    figure = le.label_efficiency_figure(summary, "lcs")
    (ax,) = figure.axes
    assert ax.get_xscale() == "linear"
    lines = [line for line in ax.lines if not line.get_label().startswith("_")]
    assert len(lines) == 3 and all(len(line.get_xdata()) == 1 for line in lines)
    table = le.label_efficiency_table(summary)
    assert sorted(line.get_ydata()[0] for line in lines) == pytest.approx(sorted(table["mean_pct"]))
    assert "LCS (liver segmentation" in figure._suptitle.get_text()


def test_figure_on_a_narrow_range_is_linear_and_unknown_task_is_refused() -> None:
    summary = sweep(fractions=(0.25, 0.5, 1.0))
    assert le.label_efficiency_figure(summary, "lcs").axes[0].get_xscale() == "linear"
    with pytest.raises(InputError, match="no runs of task 'bms'"):
        le.label_efficiency_figure(summary, "bms")


def test_cli_tables_and_figure_end_to_end(tmp_path: Path) -> None:
    summary = pd.concat([sweep(), sweep(task="nodules", metric="auc", seed=2)])
    path = tmp_path / "summary.csv"
    summary.to_csv(path, index=False)
    provenance = tmp_path / "provenance.json"
    provenance.write_text(json.dumps({"git_commit": "abc123"}), encoding="utf-8")
    out = tmp_path / "tables"
    code = main(
        [
            "tables",
            "--summary",
            str(path),
            "--published",
            str(PUBLISHED),
            "--provenance",
            str(provenance),
            "--output-dir",
            str(out),
            "--data-label",
            "synthetic phantoms",
            "--label-efficiency",
            str(out / "label_eff"),
        ]
    )
    assert code == 0
    for stem in ("target_tasks", "ablation", "label_eff"):
        markdown = (out / f"{stem}.md").read_text(encoding="utf-8")
        assert "synthetic phantoms" in markdown.splitlines()[0], stem
        assert "synthetic phantoms" in (out / f"{stem}.tex").read_text(encoding="utf-8")
    table = pd.read_csv(out / "label_eff.csv")
    assert set(table["task"]) == {"lcs", "nodules"} and len(table) == 2 * 3 * 4
    assert "lcs/genesis@10%: 100, 200, 300, 400, 500" in (out / "label_eff.md").read_text(
        encoding="utf-8"
    )
    target = pd.read_csv(out / "target_tasks.csv")
    assert len(target) == 6  # 2 tasks x 3 inits, fraction 1.0 only
    stem = tmp_path / "figure"
    code = main(
        [
            "figures",
            "label-efficiency",
            "--summary",
            str(path),
            "--task",
            "nodules",
            "--data-label",
            "synthetic phantoms",
            "--output",
            str(stem),
        ]
    )
    assert code == 0
    assert stem.with_suffix(".png").stat().st_size > 1000
    assert stem.with_suffix(".pdf").read_bytes().startswith(b"%PDF")
    assert (
        main(
            [
                "figures",
                "label-efficiency",
                "--summary",
                str(path),
                "--task",
                "bms",
                "--output",
                str(stem),
            ]
        )
        == 2
    )


def test_task_bars_of_a_sweep_use_only_all_training_cases(tmp_path: Path) -> None:
    from genesis.cli import build_parser
    from genesis.commands import figures as figure_command

    summary = sweep()
    path = tmp_path / "summary.csv"
    summary.to_csv(path, index=False)
    args = build_parser().parse_args(
        ["figures", "tasks", "--summary", str(path), "--output", str(tmp_path / "x")]
    )
    (ax,) = [ax for ax in figure_command._draw(args).axes if ax.get_title()]
    full = summary[summary["fraction"] == 1.0]
    expected = [
        100 * full.loc[full["init"] == i, "value"].mean()
        for i in ("scratch", "genesis", "released")
    ]
    assert [bar.get_height() for bar in ax.patches] == pytest.approx(expected)
