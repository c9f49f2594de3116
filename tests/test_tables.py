"""Tables: known means, stds, Welch and paired p-values from hand-made runs; records; the
label-sweep summary format (fraction 1.0 only in the target table); bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from scipy import special

from genesis.cli import main
from genesis.errors import ConfigError, InputError
from genesis.report import records, tables

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "config" / "published.csv"

SCRATCH = [0.70, 0.74, 0.72]
GENESIS = [0.80, 0.86, 0.83, 0.85]


def welch_by_hand(a: list[float], b: list[float]) -> float:
    """Welch's two-sided p from its textbook formulas (t, Welch-Satterthwaite df, Student t
    tail through the regularised incomplete beta), independent of scipy.stats."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    va = sum((x - ma) ** 2 for x in a) / (na - 1)
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1)
    se2 = va / na + vb / nb
    t = (ma - mb) / math.sqrt(se2)
    df = se2**2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    return float(special.betainc(df / 2, 0.5, df / (df + t * t)))


def summary_frame(extra: list[tuple[str, str, int, float]] | None = None) -> pd.DataFrame:
    rows = [("lcs", "scratch", i + 1, v) for i, v in enumerate(SCRATCH)]
    rows += [("lcs", "genesis", i + 1, v) for i, v in enumerate(GENESIS)]
    rows += [("lcs", "released", 1, 0.9)]
    rows += extra or []
    return pd.DataFrame(
        [
            {
                "task": t,
                "init": i,
                "run": r,
                "seed": 100 + r,
                "metric": "iou",
                "value": v,
                "dice": 2 * v / (1 + v),
            }
            for t, i, r, v in rows
        ]
    )


def write_inputs(tmp_path: Path, frame: pd.DataFrame, record: dict | None = None) -> tuple:
    summary = tmp_path / "summary.csv"
    frame.to_csv(summary, index=False)
    provenance = tmp_path / "provenance.json"
    provenance.write_text(
        json.dumps(
            record
            or {
                "git_commit": "abc123",
                "packages": {"torch": "2.13.0"},
                "hardware": {"system": "Linux", "cpus": 2, "gpus": ["H100"]},
            }
        ),
        encoding="utf-8",
    )
    return summary, provenance


def test_means_stds_and_p_values_match_hand_computation() -> None:
    table = tables.summarise(summary_frame()).set_index("init")
    assert table.loc["scratch", "n"] == 3
    assert table.loc["genesis", "n"] == 4
    assert table.loc["scratch", "mean_pct"] == pytest.approx(72.0)
    assert table.loc["scratch", "std_pct"] == pytest.approx(2.0)  # sqrt(0.0008 / 2)
    assert table.loc["genesis", "mean_pct"] == pytest.approx(83.5)
    assert table.loc["genesis", "std_pct"] == pytest.approx(100 * math.sqrt(0.0021 / 3))
    expected_p = welch_by_hand(GENESIS, SCRATCH)
    assert 0.001 < expected_p < 0.05
    assert table.loc["genesis", "p_value"] == pytest.approx(expected_p, rel=1e-9)
    dice = [2 * v / (1 + v) for v in GENESIS]
    assert table.loc["genesis", "dice_mean_pct"] == pytest.approx(100 * sum(dice) / 4)


def test_scratch_and_single_runs_have_no_p_value_or_std() -> None:
    table = tables.summarise(summary_frame()).set_index("init")
    assert math.isnan(table.loc["scratch", "p_value"])
    assert table.loc["released", "n"] == 1
    assert math.isnan(table.loc["released", "std_pct"])
    assert math.isnan(table.loc["released", "p_value"])
    assert tables.format_mean_std(90.0, math.nan) == "90.00"
    assert tables.format_p(math.nan) == "–"


def test_p_value_without_spread_is_nan() -> None:
    assert math.isnan(tables.welch_p_value([0.5, 0.5], [0.5, 0.5]))
    assert math.isnan(tables.welch_p_value([0.5], [0.4, 0.6]))


def test_published_numbers_sit_beside_ours() -> None:
    published = tables.load_published(PUBLISHED)
    frame = summary_frame(
        [("lcs", "genesis-nonlinear", 1, 0.8), ("lcs", "genesis-nonlinear", 2, 0.82)]
    )
    target = tables.target_table(frame, published).set_index("init")
    assert list(target.index) == ["scratch", "genesis", "released"]
    assert target.loc["scratch", "published_mean_pct"] == pytest.approx(79.76)
    assert target.loc["genesis", "published_std_pct"] == pytest.approx(2.15)
    assert target.loc["released", "published_mean_pct"] == pytest.approx(85.10)
    ablation = tables.ablation_table(frame, published).set_index("init")
    assert list(ablation.index) == ["scratch", "genesis", "genesis-nonlinear"]
    assert math.isnan(ablation.loc["genesis-nonlinear", "published_mean_pct"])
    assert ablation.loc["genesis-nonlinear", "p_value"] == pytest.approx(
        welch_by_hand([0.8, 0.82], SCRATCH), rel=1e-9
    )


def test_published_reference_holds_the_facts_table() -> None:
    published = tables.load_published(PUBLISHED)
    assert len(published) == 30  # 6 initialisations x 5 tasks
    indexed = published.set_index(["task", "init"])
    assert tuple(indexed.loc[("ncc", "scratch"), ["mean", "std"]]) == (94.25, 5.07)
    assert tuple(indexed.loc[("bms", "genesis"), ["mean", "std"]]) == (67.96, 1.29)
    assert tuple(indexed.loc[("lcs", "transvw"), ["mean", "std"]]) == (86.53, 1.30)
    assert set(published["metric"]) == {"auc", "iou"}
    assert published["source"].str.len().min() > 10


def test_write_tables_states_the_record(tmp_path: Path) -> None:
    summary, provenance = write_inputs(tmp_path, summary_frame())
    config = tmp_path / "config.yaml"
    config.write_text(
        "seed: 7\npretrain:\n  seed: 11\n  lr: 1.0\nfinetune:\n  seed: 3\n", encoding="utf-8"
    )
    paths = tables.write_tables(summary, PUBLISHED, provenance, tmp_path / "out", config)
    names = sorted(path.name for path in paths)
    assert "target_tasks.csv" in names and "ablation.tex" in names
    digest = records.file_sha256(config)
    markdown = (tmp_path / "out" / "target_tasks.md").read_text(encoding="utf-8")
    latex = (tmp_path / "out" / "target_tasks.tex").read_text(encoding="utf-8")
    for text in (markdown, latex):
        assert digest in text and "abc123" in text and "torch 2.13.0" in text
        assert "H100" in text and "pretrain.seed=11" in text and "lcs/genesis: 101, 102" in text
    assert "83.50 ± 2.65" in markdown
    assert r"83.50 $\pm$ 2.65" in latex
    sidecar = json.loads(
        (tmp_path / "out" / "target_tasks.provenance.json").read_text(encoding="utf-8")
    )
    assert sidecar["seeds"]["finetune.seed"] == 3
    assert sidecar["seeds"]["finetune_runs"]["lcs/scratch"] == [101, 102, 103]
    csv = pd.read_csv(tmp_path / "out" / "target_tasks.csv")
    assert list(csv.columns) == list(tables.TABLE_COLUMNS)
    assert csv.loc[csv["init"] == "genesis", "mean_pct"].item() == pytest.approx(83.5)
    ablation = pd.read_csv(tmp_path / "out" / "ablation.csv")
    assert ablation.empty
    assert "No ablation variants ran" in (tmp_path / "out" / "ablation.md").read_text(
        encoding="utf-8"
    )


def test_every_published_source_is_named_once(tmp_path: Path) -> None:
    """All target tasks, so every published row is shown: one footnote per source."""
    extra = [(task, "scratch", run, 0.5 + run / 100) for task in ("ncc", "bms") for run in (1, 2)]
    summary, provenance = write_inputs(tmp_path, summary_frame(extra))
    tables.write_tables(summary, PUBLISHED, provenance, tmp_path / "out", None)
    notes = [
        line
        for line in (tmp_path / "out" / "target_tasks.md").read_text(encoding="utf-8").splitlines()
        if line.startswith("- Published source:")
    ]
    sources = set(tables.load_published(PUBLISHED)["source"])
    assert len(notes) == len(sources) == len(set(notes))
    # The same citation twice, once with a suffix, would read as two sources.
    assert not [(a, b) for a in sources for b in sources if a != b and b.startswith(a)]


def test_seeds_of_an_embedded_resolved_config_are_recorded() -> None:
    record = {
        "config_hash": "abcd",
        "config": {"seed": 7, "tasks": {"seed": 100, "runs": 3}, "pretrain": {"variants": ["all"]}},
    }
    complete = records.complete_record(record, summary=summary_frame(), seeds={"extra": 1})
    assert complete["seeds"]["seed"] == 7 and complete["seeds"]["tasks.seed"] == 100
    assert complete["seeds"]["extra"] == 1
    lines = records.record_lines(complete)
    assert lines[0] == "config hash: abcd"
    assert any(
        line.startswith("fine-tuning run seeds: lcs/genesis: 101, 102, 103, 104") for line in lines
    )


def test_config_that_differs_from_the_record_is_refused(tmp_path: Path) -> None:
    summary, provenance = write_inputs(tmp_path, summary_frame(), {"config_sha256": "0" * 64})
    config = tmp_path / "config.yaml"
    config.write_text("seed: 1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="rerun `genesis provenance`"):
        tables.write_tables(summary, PUBLISHED, provenance, tmp_path / "out", config)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="seed"), "missing column"),
        (lambda f: f.assign(fraction=0.0, n_labelled=3), "shares of the training cases"),
        (lambda f: f.assign(fraction="", n_labelled=3), "'fraction' is empty"),
        (lambda f: f.assign(fraction=1.0, n_labelled=2.5), "whole numbers"),
        (lambda f: f.assign(value=f["value"] * 100), "fractions in"),
        (lambda f: pd.concat([f, f.iloc[:1]]), "more than once"),
        (lambda f: f.assign(metric="accuracy"), "unknown metric"),
    ],
)
def test_bad_summary_is_an_input_error_naming_the_file(tmp_path: Path, change, message) -> None:
    path = tmp_path / "summary.csv"
    change(summary_frame()).to_csv(path, index=False)
    with pytest.raises(InputError, match=message) as info:
        tables.load_summary(path)
    assert info.value.path == path


def test_cli_writes_tables_and_reports_bad_input(tmp_path: Path, capsys) -> None:
    summary, provenance = write_inputs(tmp_path, summary_frame())
    args = [
        "tables",
        "--summary",
        str(summary),
        "--published",
        str(PUBLISHED),
        "--provenance",
        str(provenance),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main([*args, "--seeds", '{"data": 7, "runs": [8, 9]}']) == 0
    assert (tmp_path / "out" / "target_tasks.tex").stat().st_size > 0
    assert "seeds: data=7, runs=[8, 9]" in (tmp_path / "out" / "target_tasks.md").read_text(
        encoding="utf-8"
    )
    provenance.unlink()
    assert main(args) == 2
    assert "provenance.json" in capsys.readouterr().err


def paired_by_hand(a: list[float], b: list[float]) -> float:
    """Two-sided paired t-test p from its textbook formulas, independent of scipy.stats."""
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    mean = sum(d) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    t = mean / (sd / math.sqrt(n))
    return float(special.betainc((n - 1) / 2, 0.5, (n - 1) / (n - 1 + t * t)))


def test_paired_p_pairs_runs_by_index_whatever_the_row_order() -> None:
    # genesis has runs 1-4 and scratch 1-3: they do not all pair, so no paired p.
    table = tables.summarise(summary_frame()).set_index("init")
    assert math.isnan(table.loc["genesis", "p_paired"])
    assert math.isnan(table.loc["scratch", "p_paired"])
    paired = summary_frame()
    paired = paired[~((paired["init"] == "genesis") & (paired["run"] == 4))]
    expected = paired_by_hand(GENESIS[:3], SCRATCH)
    for seed in range(4):
        shuffled = paired.sample(frac=1, random_state=seed)
        table = tables.summarise(shuffled).set_index("init")
        assert table.loc["genesis", "p_paired"] == pytest.approx(expected, rel=1e-9)
        assert table.loc["genesis", "p_value"] == pytest.approx(
            welch_by_hand(GENESIS[:3], SCRATCH), rel=1e-9
        )
    assert math.isnan(tables.paired_p_value({1: 0.6, 2: 0.7}, {1: 0.5, 2: 0.6}))  # no spread
    assert math.isnan(tables.paired_p_value({1: 0.6}, {1: 0.5}))


def test_target_and_ablation_tables_use_only_all_training_cases() -> None:
    full = summary_frame(
        [("lcs", "genesis-nonlinear", 1, 0.8), ("lcs", "genesis-nonlinear", 2, 0.82)]
    )
    full = full.assign(fraction=1.0, n_labelled=40)
    sweep = full.assign(fraction=0.25, n_labelled=10, value=full["value"] / 2)
    published = tables.load_published(PUBLISHED)
    both = pd.concat([sweep, full], ignore_index=True)
    for make in (tables.target_table, tables.ablation_table):
        expected = make(full.drop(columns=["fraction", "n_labelled"]), published)
        pd.testing.assert_frame_equal(make(both, published), expected)
    target = tables.target_table(both, published).set_index("init")
    assert target.loc["genesis", "mean_pct"] == pytest.approx(83.5)
    assert target.loc["genesis", "n"] == 4


def test_old_and_new_summary_formats_load(tmp_path: Path) -> None:
    old = tmp_path / "old.csv"
    summary_frame().to_csv(old, index=False)
    loaded = tables.load_summary(old)
    assert (loaded["fraction"] == 1.0).all() and loaded["n_labelled"].isna().all()
    new = tmp_path / "new.csv"
    frame = summary_frame()
    sweep = pd.concat([frame.assign(fraction=0.5, n_labelled=5), frame.assign(fraction=1.0)])
    sweep[
        ["task", "init", "fraction", "n_labelled", "run", "seed", "metric", "value", "dice"]
    ].to_csv(new, index=False)
    loaded = tables.load_summary(new)
    assert sorted(set(loaded["fraction"])) == [0.5, 1.0]  # the same run at two fractions
    assert tables.full_fraction(loaded)["n_labelled"].isna().all()


def test_data_label_titles_every_table_and_user_tasks_keep_their_name(tmp_path: Path) -> None:
    extra = [
        ("spleen", init, run, 0.6 + run / 50 + (init == "genesis") * 0.05)
        for init in ("scratch", "genesis")
        for run in (1, 2, 3)
    ]
    summary, provenance = write_inputs(tmp_path, summary_frame(extra))
    out = tmp_path / "out"
    tables.write_tables(summary, PUBLISHED, provenance, out, data_label="synthetic phantoms")
    for stem in ("target_tasks", "ablation"):
        markdown = (out / f"{stem}.md").read_text(encoding="utf-8")
        assert "(synthetic phantoms)" in markdown.splitlines()[0], stem
        assert "phantoms" in (out / f"{stem}.tex").read_text(encoding="utf-8"), stem
    markdown = (out / "target_tasks.md").read_text(encoding="utf-8")
    assert "- Data: synthetic phantoms." in markdown
    spleen = [line for line in markdown.splitlines() if line.startswith("| spleen |")]
    assert len(spleen) == 2 and all(line.endswith("| – |") for line in spleen)
    assert "| LCS | IoU | scratch |" in markdown
    target = pd.read_csv(out / "target_tasks.csv")
    assert target.loc[target["task"] == "spleen", "published_source"].isna().all()
    assert not (out / "label_efficiency.csv").exists()  # only when asked
    # No label: titles as before.
    tables.write_tables(summary, PUBLISHED, provenance, tmp_path / "plain")
    first = (tmp_path / "plain" / "target_tasks.md").read_text(encoding="utf-8").splitlines()[0]
    assert first == "# Target tasks: fine-tuning from scratch vs pretrained initialisations"
