"""cubes.recipe: paper keeps the LUNA16 numbers, auto scales border and slices to each scan.

Ordinary scans of realistic size run through ``genesis cubes`` with its defaults: a
0.7 mm abdominal CT (512 x 512 x 60, 2.5 mm slices) and a 40-slice chest CT series
(DICOM, 5 mm slices). The paper recipe skips both, naming the setting to change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from genesis.cli import main
from genesis.cubes.extract import CubeSettings, extract_scan, scan_recipe, size_check
from genesis.cubes.shards import open_shard, read_manifest
from genesis.io import save_nifti

ABDOMEN_SPACING = (0.7, 0.7, 2.5)
CHEST_SPACING = (0.7, 0.7, 5.0)


def _plane(shape: tuple[int, int], spacing: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """In-plane coordinates in mm from the centre, (x: patient left +, y: posterior +)."""
    u = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing[0]
    v = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1]
    return np.meshgrid(u.astype(np.float32), v.astype(np.float32), indexing="ij")


def _inside(
    u: np.ndarray, v: np.ndarray, centre: tuple[float, float], axes: tuple[float, float]
) -> np.ndarray:
    return ((u - centre[0]) / axes[0]) ** 2 + ((v - centre[1]) / axes[1]) ** 2 < 1.0


def _trunk(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Air, table, skin-fat-muscle wall and spine of a trunk section, in HU."""
    hu = np.full(u.shape, -1000.0, np.float32)
    hu[(v > 128) & (v < 140)] = 100.0  # the table
    hu[_inside(u, v, (0, 0), (165, 120))] = -100.0  # subcutaneous fat
    hu[_inside(u, v, (0, 0), (150, 105))] = 50.0  # muscle
    hu[_inside(u, v, (0, 0), (138, 94))] = -90.0  # visceral / mediastinal fat
    hu[_inside(u, v, (0, 62), (18, 16))] = 600.0  # vertebra
    return hu


def abdomen_ct(shape: tuple[int, int, int] = (512, 512, 60), seed: int = 0) -> np.ndarray:
    """An upper abdomen at 0.7 mm, int16 HU: liver, spleen, kidneys, aorta, bowel gas."""
    rng = np.random.default_rng(seed)
    u, v = _plane(shape[:2], ABDOMEN_SPACING[:2])
    plane = _trunk(u, v)
    for centre, axes, value in [
        ((-55, -5), (75, 70), 60.0),
        ((85, 25), (35, 35), 45.0),
        ((-55, 45), (22, 28), 30.0),
        ((55, 45), (22, 28), 30.0),
        ((0, 35), (11, 11), 160.0),
        ((20, -55), (45, 25), 20.0),
    ]:
        plane[_inside(u, v, centre, axes)] = value
    hu = np.repeat(plane[:, :, None], shape[2], axis=2)
    for _ in range(6):  # gas in the bowel loops
        x, y = rng.uniform(-60, 80), rng.uniform(-80, -30)
        z = rng.uniform(0, shape[2])
        blob = _inside(u, v, (x, y), (9, 7))
        hu[:, :, max(0, int(z) - 3) : int(z) + 3][blob] = -950.0
    hu += 12.0 * rng.standard_normal(shape, dtype=np.float32)
    return np.rint(hu).astype(np.int16)


def chest_ct(shape: tuple[int, int, int] = (512, 512, 40), seed: int = 1) -> np.ndarray:
    """A mid-chest series at 0.7 x 0.7 x 5 mm, int16 HU: the lungs span every slice."""
    rng = np.random.default_rng(seed)
    u, v = _plane(shape[:2], CHEST_SPACING[:2])
    plane = _trunk(u, v)
    for side in (-1, 1):
        plane[_inside(u, v, (side * 72, 0), (58, 82))] = -850.0
    plane[_inside(u, v, (12, -20), (40, 45))] = 40.0  # heart
    hu = np.repeat(plane[:, :, None], shape[2], axis=2)
    hu += 15.0 * rng.standard_normal(shape, dtype=np.float32)
    return np.rint(hu).astype(np.int16)


def write_series(folder: Path, hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """One DICOM file per slice, as a scanner exports a series."""
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    uid = "1.2.826.0.1.3680043.2.1125.40"
    for z in range(hu.shape[2]):
        image = sitk.GetImageFromArray(np.ascontiguousarray(hu[:, :, z].T)[None])
        position = (0.0, 0.0, z * spacing[2])
        image.SetSpacing(spacing)
        image.SetOrigin(position)
        tags = {
            "0008|0060": "CT",
            "0020|000d": f"{uid}.0",
            "0020|000e": uid,
            "0008|0018": f"{uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{p:.4f}" for p in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing[1]}\\{spacing[0]}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{z:04d}.dcm"))
        writer.Execute(image)


def cubes(inputs: Path, output: Path, settings: dict[str, object] | None = None) -> int:
    """The README's command as written (plus --settings when given)."""
    args = [
        "cubes",
        "--inputs",
        str(inputs),
        "--output",
        str(output),
        "--split",
        "train",
        "--modality",
        "auto",
    ]
    return main([*args, "--settings", json.dumps(settings)] if settings else args)


@pytest.mark.parametrize(
    ("shape", "border", "min_slices"),
    [
        ((197, 233, 189), (19, 23, 18), 71),  # MNI152 T1 at 1 mm
        ((512, 512, 60), (51, 51, 6), 47),  # 0.7 mm abdomen, 2.5 mm slices
        ((512, 512, 40), (51, 51, 2), 39),  # a 40-slice series: the border gives way
        ((512, 512, 300), (51, 51, 30), 95),  # LUNA16-like: the paper's z border
        ((64, 64, 35), (0, 0, 0), 35),  # exactly one window
    ],
)
def test_auto_scales_border_and_min_slices(
    shape: tuple[int, int, int], border: tuple[int, int, int], min_slices: int
) -> None:
    auto = scan_recipe(shape, CubeSettings())
    assert (auto.border, auto.min_slices) == (border, min_slices)
    assert size_check(shape, auto) == ("", "")
    paper = CubeSettings(recipe="paper")
    assert scan_recipe(shape, paper) is paper


def test_auto_skips_only_what_cannot_hold_one_window() -> None:
    settings = scan_recipe((128, 96, 24), CubeSettings())
    kind, reason = size_check((128, 96, 24), settings)
    assert kind == "window"
    assert reason == (
        "scan 128x96x24 is smaller than one window 64x64x35 (cubes of 64x64x32 "
        "are cut as 64x64x35 windows: cube z + 3 extra slices "
        "(cubes.extra_slices), of which the tissue filter reads up to 2 past "
        "the cube); set a smaller cube_size"
    )


def test_the_recipe_is_recorded_and_the_paper_one_is_unchanged() -> None:
    hu = chest_ct((160, 160, 40)).astype(np.float32)
    settings = CubeSettings(cube_size=(32, 32, 16), border=(100, 100, 30), cubes_per_scan=4)
    auto = extract_scan(hu.copy(), "ct", settings, np.random.default_rng(0))
    assert (auto.border, auto.min_slices, len(auto.cubes)) == ((16, 16, 4), 27, 4)
    assert (auto.corners[:, 2] >= 4).all() and (auto.corners[:, 2] <= 40 - 4 - 19).all()
    paper = extract_scan(
        hu,
        "ct",
        CubeSettings(
            recipe="paper",
            cube_size=(32, 32, 16),
            min_slices=20,
            border=(20, 20, 4),
            cubes_per_scan=4,
        ),
        np.random.default_rng(0),
    )
    assert (paper.border, paper.min_slices, len(paper.cubes)) == ((20, 20, 4), 20, 4)


def test_an_abdominal_ct_at_0_7_mm(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scans = tmp_path / "abdomen"
    scans.mkdir()
    save_nifti(scans / "abdomen.nii", abdomen_ct(), spacing=ABDOMEN_SPACING, origin=(0.0, 0.0, 0.0))
    output = tmp_path / "cubes" / "train.npy"
    assert cubes(scans, output) == 0
    rows = read_manifest(output.with_suffix(".csv"))
    assert open_shard(output).shape == (32, 64, 64, 32)
    assert {(r["status"], r["modality"], r["border"], r["min_slices"]) for r in rows} == {
        ("ok", "ct", "51/51/6", "47")
    }
    # The tissue filter keeps air/lung windows: here that is air outside the body, and
    # every row says so, naming the setting.
    assert all(
        "air outside the body" in r["reason"] and "cubes.ct_filter: none" in r["reason"]
        for r in rows
    )
    assert cubes(scans, output, {"ct_filter": "none"}) == 0
    shard = open_shard(output).astype(np.float32)
    assert shard.shape[0] == 32 and (shard >= 0.4).mean() > 0.5  # mostly body tissue
    assert all(r["reason"] == "" for r in read_manifest(output.with_suffix(".csv")))
    capsys.readouterr()
    assert cubes(scans, output, {"recipe": "paper"}) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "0 cubes from 1 scans: 1 with fewer slices than cubes.min_slices" in line
    assert open_shard(output).shape[0] == 32  # the previous shard is kept


def test_a_40_slice_chest_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_series(tmp_path / "mine" / "series1", chest_ct(), CHEST_SPACING)
    output = tmp_path / "cubes" / "train.npy"
    assert cubes(tmp_path / "mine", output) == 0
    rows = read_manifest(output.with_suffix(".csv"))
    assert {(r["source"], r["status"], r["border"], r["min_slices"]) for r in rows} == {
        ("mine/series1", "ok", "51/51/2", "39")
    }
    shard = open_shard(output).astype(np.float32) * 2000 - 1000
    lung = (shard > -950) & (shard < -500)
    assert shard.shape[0] == 32 and lung.mean() > 0.5  # lung cubes, as in the paper
    capsys.readouterr()
    paper = tmp_path / "cubes" / "paper.npy"
    assert cubes(tmp_path / "mine", paper, {"recipe": "paper"}) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert "0 cubes from 1 scans: 1 with fewer slices than cubes.min_slices" in line
    [row] = read_manifest(paper.with_suffix(".failed.csv"))
    assert row["reason"].startswith(
        "40 slices, fewer than min_slices = 96 (set cubes.min_slices, or cubes.recipe: auto"
    )
    assert not paper.exists()
