"""Figures: every file is written, non-empty and not blank; overlays land on the right grid."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.image
import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from fixtures.make_results import make_results
from matplotlib.collections import PathCollection

from genesis.cli import main
from genesis.errors import InputError
from genesis.report import figures, gallery, tables

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_results(tmp_path_factory.mktemp("figures") / "results")


def assert_figure_files(stem: Path) -> None:
    for suffix in (".png", ".pdf"):
        path = stem.with_name(stem.name + suffix)
        assert path.is_file() and path.stat().st_size > 1000, path
    pixels = matplotlib.image.imread(stem.with_name(stem.name + ".png"))
    assert pixels.ndim == 3 and float(pixels.std()) > 0.01
    assert stem.with_name(stem.name + ".pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.parametrize("kind", ["pretraining", "tasks", "ablation", "curves",
                                  "segmentations"])
def test_figure_commands_write_png_and_pdf(results: Path, tmp_path: Path, kind: str) -> None:
    stem = tmp_path / kind
    summary = str(results / "finetune" / "summary.csv")
    arguments = {
        "pretraining": ["--metrics", *map(str, sorted(results.glob("pretrain/*/metrics.csv")))],
        "tasks": ["--summary", summary, "--published", str(REPO / "config" / "published.csv")],
        "ablation": ["--summary", summary],
        "curves": ["--task", "lcs", "--runs-root", str(results / "finetune")],
        "segmentations": ["--task", "lcs", "--runs-root", str(results / "finetune"),
                          "--tasks-root", str(results / "tasks")],
    }[kind]
    assert main(["figures", kind, *arguments, "--output", str(stem)]) == 0
    assert_figure_files(stem)


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
        means = [100 * runs.loc[runs["init"] == i, "value"].mean()
                 for i in ("scratch", "genesis", "released")]
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
    for init in ("scratch", "genesis"):
        folder = runs_root / "lcs" / init / "run0" / "predictions"
        folder.mkdir(parents=True)
        nib.save(nib.Nifti1Image(source, np.eye(4)), folder / "c1.nii.gz")
    volumes = tasks_root / "lcs" / "volumes"
    volumes.mkdir(parents=True)
    np.savez(volumes / "c1.npz", image=prepared.astype(np.float32), label=prepared)
    geometry = {"crop": crop, "source_shape": [40, 40, 10], "prepared_shape": [10, 10, 10]}
    pd.DataFrame({"case": ["c1"], "geometry": [json.dumps(geometry)]}).to_csv(
        tasks_root / "lcs" / "cases.csv", index=False)
    rows = figures.segmentation_overlays("lcs", runs_root, tasks_root)
    assert [panel.init for panel in rows[0]] == ["scratch", "genesis"]
    panel = rows[0][0]
    assert panel.z in range(2, 8)
    np.testing.assert_array_equal(panel.prediction, panel.truth)
    assert panel.iou == pytest.approx(1.0)


def test_missing_curves_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    code = main(["figures", "curves", "--task", "bms", "--runs-root", str(tmp_path),
                 "--output", str(tmp_path / "x")])
    assert code == 2
    assert "curves.csv" in capsys.readouterr().err


GALLERY_SETTINGS = {"local_shuffle_blocks": 300}  # fewer blocks keep the test quick


def test_gallery_command_writes_png_and_pdf(results: Path, tmp_path: Path) -> None:
    stem = tmp_path / "transform_gallery"
    assert main(["figures", "gallery", "--cubes", str(results / "cubes" / "own_val.npy"),
                 "--seed", "3", "--settings", json.dumps(GALLERY_SETTINGS),
                 "--output", str(stem)]) == 0
    assert_figure_files(stem)


def test_gallery_panels_show_each_transformation(results: Path) -> None:
    cube = gallery.load_cube(results / "cubes" / "own_val.npy", index=0)
    panels = gallery.transformed_panels(cube, seed=5, settings=GALLERY_SETTINGS)
    assert list(panels) == [title for title, _ in gallery.PANELS]
    flipped = panels["flip"]
    mirrors = [np.flip(cube, axis=axes) for k in range(1, 8)
               for axes in [tuple(a for a in range(3) if k >> a & 1)]]
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
