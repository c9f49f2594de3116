"""Figures: every file is written, non-empty and not blank; overlays land on the right grid;
only the files given are read; titles say what the data are."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fixtures.make_results import add_stale_run, make_results, run_files
from matplotlib.collections import PathCollection

from genesis.cli import main
from genesis.errors import InputError
from genesis.report import figures, gallery, tables

REPO = Path(__file__).resolve().parents[1]


PHANTOMS = "synthetic phantoms"
REAL = "LUNA16 and MSD data"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fake tree, with leftover runs no rule declares: run0 (before the declared runs
    1-3, so "the first run" would pick it) and run9 (after them), both unreadable."""
    root = make_results(tmp_path_factory.mktemp("figures") / "results")
    for task in ("ncc", "lcs"):
        for init in ("scratch", "genesis"):
            for run in (0, 9):
                add_stale_run(root, task, init, run)
    return root


def texts(figure) -> str:
    """Every title, label and text of a figure, joined."""
    found = [t.get_text() for t in figure.texts] + [figure.get_suptitle()]
    for ax in figure.axes:
        found += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
    return "\n".join(found)


def assert_figure_files(stem: Path) -> None:
    for suffix in (".png", ".pdf"):
        path = stem.with_name(stem.name + suffix)
        assert path.is_file() and path.stat().st_size > 1000, path
    pixels = matplotlib.image.imread(stem.with_name(stem.name + ".png"))
    assert pixels.ndim == 3 and float(pixels.std()) > 0.01
    assert stem.with_name(stem.name + ".pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("kind", ["pretraining", "tasks", "ablation", "curves", "segmentations"])
def test_figure_commands_write_png_and_pdf(results: Path, tmp_path: Path, kind: str) -> None:
    stem = tmp_path / kind
    summary = str(results / "finetune" / "summary.csv")
    arguments = {
        "pretraining": [
            "--metrics",
            *(str(results / "pretrain" / v / "metrics.csv") for v in ("all", "nonlinear")),
        ],
        "tasks": ["--summary", summary, "--published", str(REPO / "config" / "published.csv")],
        "ablation": ["--summary", summary],
        "curves": ["--task", "lcs", "--curves", *run_files(results, "lcs", "curves.csv")],
        "segmentations": [
            "--task",
            "lcs",
            "--predictions",
            *run_files(results, "lcs", "predictions"),
            "--per-case",
            *run_files(results, "lcs", "per_case.csv"),
            "--task-dir",
            str(results / "tasks" / "lcs"),
        ],
    }[kind]
    assert main(["figures", kind, *arguments, "--data-label", PHANTOMS, "--output", str(stem)]) == 0
    assert_figure_files(stem)


def test_curves_read_only_the_declared_runs(results: Path) -> None:
    """run0 and run9 lie beside the declared runs and cannot be read: none is."""
    assert (results / "finetune" / "lcs" / "scratch" / "run9" / "curves.csv").is_dir()
    curves = figures.read_curves(run_files(results, "lcs", "curves.csv"), "lcs")
    assert list(curves) == ["scratch", "genesis", "released", "genesis-nonlinear"]
    assert all(len(frames) == 3 for frames in curves.values())
    figure = figures.curves_figure(curves, "lcs", "iou", PHANTOMS)
    legend = [t.get_text() for t in figure.axes[0].get_legend().get_texts()]
    assert "scratch (n=3)" in legend


def test_segmentations_read_only_the_declared_runs(results: Path) -> None:
    """The first declared run of each init is shown, never the undeclared run0."""
    shown = {"inits": ("scratch", "genesis"), "variants": ()}
    rows = figures.segmentation_overlays(
        run_files(results, "lcs", "predictions", **shown),
        results / "tasks" / "lcs",
        task="lcs",
        per_case=run_files(results, "lcs", "per_case.csv", **shown),
    )
    assert [(p.init, p.run) for p in rows[0]] == [("scratch", "run1"), ("genesis", "run1")]
    assert len(rows) == 3 and all(0 <= p.iou <= 1 for row in rows for p in row)
    only = figures.segmentation_overlays(
        run_files(results, "lcs", "predictions"),
        results / "tasks" / "lcs",
        inits=["genesis"],
        n_cases=1,
    )
    assert [(p.init, p.run) for p in only[0]] == [("genesis", "run1")]


def test_runs_are_named_by_their_folders(tmp_path: Path) -> None:
    key = figures.run_key(tmp_path / "finetune" / "lcs" / "genesis" / "labels25" / "run2")
    assert (key.task, key.init, key.run, key.labels) == ("lcs", "genesis", 2, "25")
    assert key.name == "labels25/run2" and key.group == "genesis (25% labels)"
    with pytest.raises(InputError, match="is not a run folder"):
        figures.run_key(tmp_path / "lcs" / "genesis" / "latest")
    with pytest.raises(InputError, match="run of task 'lcs', not 'bms'"):
        figures.read_curves([tmp_path / "lcs" / "genesis" / "run0" / "curves.csv"], "bms")
    twice = [tmp_path / "lcs" / "genesis" / "run0" / "curves.csv"] * 2
    with pytest.raises(InputError, match=r"a second curves\.csv"):
        figures.read_curves(twice, "lcs")


def test_titles_say_phantoms_and_name_datasets_only_for_real_data(results: Path) -> None:
    summary = tables.full_fraction(tables.load_summary(results / "finetune" / "summary.csv"))
    curves = figures.read_curves(run_files(results, "lcs", "curves.csv"), "lcs")
    rows = figures.segmentation_overlays(
        run_files(results, "lcs", "predictions"), results / "tasks" / "lcs", n_cases=1
    )
    metrics = figures.read_pretrain_metrics([results / "pretrain" / "all" / "metrics.csv"])

    def drawn(label: str | None) -> list[str]:
        return [
            texts(figure)
            for figure in (
                figures.tasks_figure(summary, None, label),
                figures.ablation_figure(summary, None, label),
                figures.curves_figure(curves, "lcs", "iou", label),
                figures.segmentation_figure(rows, "lcs", label),
                figures.pretraining_figure(metrics, label),
            )
        ]

    for text in drawn(PHANTOMS):
        assert "synthetic phantoms" in text
        assert not any(name in text for name in ("LiTS", "BraTS", "LUNA16"))
    assert "LCS (liver segmentation)" in drawn(PHANTOMS)[2]
    for text in drawn(None):
        assert "LiTS" not in text  # no label: nothing says the data are real
    real = drawn(REAL)
    assert all(REAL in text for text in real)
    assert "LiTS 2017" in real[0] and "LiTS 2017" in real[2] and "LiTS 2017" in real[3]
    assert not figures.real_data("synthetic phantoms; own tasks: spleen (data/spleen)")
    assert figures.task_title("spleen", REAL) == "spleen"


def test_ablation_without_variants_draws_a_notice(tmp_path: Path) -> None:
    results = make_results(tmp_path / "results", tasks=("ncc",), variants=(), runs=2)
    summary = tables.load_summary(results / "finetune" / "summary.csv")
    figure = figures.ablation_figure(summary)
    assert "no ablation variants ran" in " ".join(t.get_text() for t in figure.texts)
    figures.save_figure(figure, tmp_path / "ablation")
    assert_figure_files(tmp_path / "ablation")


def test_task_bars_show_every_run_and_the_published_numbers(results: Path) -> None:
    summary = tables.load_summary(results / "finetune" / "summary.csv")
    published = tables.load_published(REPO / "config" / "published.csv")
    figure = figures.tasks_figure(summary, published)
    panels = [ax for ax in figure.axes if ax.get_title()]
    assert len(panels) == 2  # ncc and lcs
    for task, ax in zip(["ncc", "lcs"], panels, strict=True):
        dots = [c for c in ax.collections if isinstance(c, PathCollection)]
        assert sum(len(c.get_offsets()) for c in dots) == 9  # 3 runs x 3 inits, no variants
        runs = summary[summary["task"] == task]
        means = [
            100 * runs.loc[runs["init"] == i, "value"].mean()
            for i in ("scratch", "genesis", "released")
        ]
        assert [bar.get_height() for bar in ax.patches] == pytest.approx(means)
        diamonds = [line for line in ax.lines if line.get_marker() == "D"]
        assert len(diamonds) == 3  # scratch, genesis and released (as genesis) published


def test_prediction_in_source_geometry_is_cropped_and_resampled(tmp_path: Path) -> None:
    """A source-grid prediction maps onto the prepared (cropped, resized) grid exactly."""
    source = np.zeros((40, 40, 10), dtype=np.uint8)
    source[10:30, 10:30, 2:8] = 1  # 20 x 20 x 6 block
    crop = [[10, 30], [10, 30], [0, 10]]
    prepared = np.zeros((10, 10, 10), dtype=bool)
    prepared[:, :, 2:8] = True  # the crop halved in-plane: the block fills the plane
    runs_root, tasks_root = tmp_path / "finetune", tmp_path / "tasks"
    predictions = []
    for init in ("genesis", "scratch"):
        folder = runs_root / "lcs" / init / "run0" / "predictions"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(source, np.eye(4)), folder / "c1.nii.gz")
        predictions.append(folder)
    volumes = tasks_root / "lcs" / "volumes"
    volumes.mkdir(parents=True)
    np.savez(volumes / "c1.npz", image=prepared.astype(np.float32), label=prepared)
    geometry = {"crop": crop, "source_shape": [40, 40, 10], "prepared_shape": [10, 10, 10]}
    pd.DataFrame({"case": ["c1"], "geometry": [json.dumps(geometry)]}).to_csv(
        tasks_root / "lcs" / "cases.csv", index=False
    )
    rows = figures.segmentation_overlays(predictions, tasks_root / "lcs", task="lcs")
    assert [panel.init for panel in rows[0]] == ["scratch", "genesis"]  # init order
    panel = rows[0][0]
    assert panel.z in range(2, 8)
    np.testing.assert_array_equal(panel.prediction, panel.truth)
    assert panel.iou == pytest.approx(1.0)


def test_missing_curves_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    missing = tmp_path / "bms" / "scratch" / "run0" / "curves.csv"
    code = main(
        [
            "figures",
            "curves",
            "--task",
            "bms",
            "--curves",
            str(missing),
            "--output",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    error = capsys.readouterr().err
    assert "curves.csv" in error and "does not exist" in error


GALLERY_SETTINGS = {"local_shuffle_blocks": 300}  # fewer blocks keep the test quick


def test_gallery_command_writes_png_and_pdf(results: Path, tmp_path: Path) -> None:
    stem = tmp_path / "transform_gallery"
    assert (
        main(
            [
                "figures",
                "gallery",
                "--cubes",
                str(results / "cubes" / "own_val.npy"),
                "--seed",
                "3",
                "--settings",
                json.dumps(GALLERY_SETTINGS),
                "--modality",
                "mri",
                "--data-label",
                "own scans",
                "--output",
                str(stem),
            ]
        )
        == 0
    )
    assert_figure_files(stem)


@pytest.mark.parametrize(("modality", "hu"), [("ct", True), ("mri", False), ("auto", True)])
def test_gallery_labels_intensities_by_modality(modality: str, hu: bool) -> None:
    """Only CT cubes get a Hounsfield colour bar; MRI intensities have no absolute unit."""
    cube = np.random.default_rng(0).random((32, 32, 16)).astype(np.float32)
    figure = gallery.gallery_figure(
        cube, seed=1, settings=GALLERY_SETTINGS, modality=modality, data_label=PHANTOMS
    )
    colour_bar = figure.axes[-1].get_ylabel()
    assert ("HU" in colour_bar) is hu
    if modality == "mri":
        assert "per scan" in colour_bar
    assert PHANTOMS in figure.get_suptitle()


def test_gallery_panels_show_each_transformation(results: Path) -> None:
    cube = gallery.load_cube(results / "cubes" / "own_val.npy", index=0)
    panels = gallery.transformed_panels(cube, seed=5, settings=GALLERY_SETTINGS)
    assert list(panels) == [title for title, _ in gallery.PANELS]
    flipped = panels["flip"]
    mirrors = [
        np.flip(cube, axis=axes)
        for k in range(1, 8)
        for axes in [tuple(a for a in range(3) if k >> a & 1)]
    ]
    assert any(np.array_equal(flipped, mirror) for mirror in mirrors)

    def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
        ranks = [np.argsort(np.argsort(v.ravel())) for v in (a, b)]
        return float(np.corrcoef(*ranks)[0, 1])

    assert rank_correlation(panels["non-linear, increasing"], cube) > 0.95
    assert rank_correlation(panels["non-linear, inverted"], cube) < -0.95
    shuffled = panels["local pixel shuffling"]
    assert not np.array_equal(shuffled, cube)
    assert abs(float(shuffled.mean() - cube.mean())) < 0.01  # texture moved, not made
    kept_in = float(np.mean(panels["in-painting"] == cube))
    kept_out = float(np.mean(panels["out-painting"] == cube))
    assert 0.5 < kept_in < 1.0  # holes of noise inside an intact cube
    assert 0.05 < kept_out < 0.9  # windows of image inside noise
    assert not np.array_equal(panels["all combined"], cube)
    again = gallery.transformed_panels(cube, seed=5, settings=GALLERY_SETTINGS)
    assert all(np.array_equal(again[title], panels[title]) for title in panels)


def test_gallery_rejects_a_bad_shard(tmp_path: Path) -> None:
    path = tmp_path / "flat.npy"
    np.save(path, np.zeros((4, 4), dtype=np.float16))
    with pytest.raises(InputError, match=r"expected cubes \(n, X, Y, Z\)"):
        gallery.load_cube(path)
