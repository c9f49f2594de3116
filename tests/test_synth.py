"""LUNA16-layout phantoms: format, geometry of annotations (flipped scans too), candidates,
determinism, settings errors and the CLI."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage as ndi

from genesis.cli import main
from genesis.errors import ConfigError
from genesis.io import load_volume, world_to_voxel
from genesis.synth import Luna16Settings, synthesize_luna16
from genesis.synth.chest import build_anatomy
from genesis.synth.luna16 import sample_candidates
from genesis.synth.nodules import place_nodules

TINY = {
    "subsets": [0, 3],
    "scans_per_subset": 1,
    "shape": [64, 64, 40],
    "inplane_spacing_mm": [4.4, 5.0],
    "slice_spacing_mm": [5.0, 6.0],
    "flipped_fraction": 0.5,
    "nodules_per_scan": [2, 3],
    "nodule_diameter_mm": [5.0, 25.0],
    "negatives_per_scan": 30,
}


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def luna(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("luna16")
    summary = synthesize_luna16(folder, TINY, seed=11)
    assert summary["scans"] == 2 and summary["flipped"] == 1
    return folder


def scans(folder: Path) -> dict[str, Path]:
    return {path.stem: path for path in sorted(folder.glob("subset*/*.mhd"))}


def xyz(rows: list[dict[str, str]]) -> np.ndarray:
    return np.array([[float(r["coordX"]), float(r["coordY"]), float(r["coordZ"])] for r in rows])


def test_layout_and_formats(luna: Path) -> None:
    assert sorted(p.name for p in luna.iterdir()) == [
        "annotations.csv",
        "candidates_V2.csv",
        "subset0",
        "subset3",
    ]
    assert (luna / "annotations.csv").read_text().splitlines()[
        0
    ] == "seriesuid,coordX,coordY,coordZ,diameter_mm"
    assert (luna / "candidates_V2.csv").read_text().splitlines()[
        0
    ] == "seriesuid,coordX,coordY,coordZ,class"
    for uid, path in scans(luna).items():
        assert re.fullmatch(r"1\.3\.6\.1\.4\.1\.14519\.5\.2\.1\.6279\.6001\.[1-9]\d{29}", uid)
        assert "ElementType = MET_SHORT" in path.read_text()
        assert path.with_suffix(".raw").is_file()
        image = sitk.ReadImage(str(path))
        assert image.GetPixelID() == sitk.sitkInt16
        assert image.GetSize() == (64, 64, 40)
        spacing = image.GetSpacing()
        assert spacing[0] == spacing[1] and 4.4 <= spacing[0] <= 5.0 and 5.0 <= spacing[2] <= 6.0
        assert all(abs(o) > 1.0 for o in image.GetOrigin())


def test_chest_intensities_are_plausible(luna: Path) -> None:
    for path in scans(luna).values():
        hu = load_volume(path).data
        assert hu.min() >= -1024 and hu.max() <= 3071
        assert np.mean(hu < -950) > 0.2  # air around the body
        assert np.mean((hu > -920) & (hu < -750)) > 0.04  # lung parenchyma
        assert np.mean((hu > -150) & (hu < -50)) > 0.01  # fat
        assert np.mean(hu > 300) > 0.002  # bone


def test_annotations_land_on_nodules_through_the_direction(luna: Path) -> None:
    annotations = read_rows(luna / "annotations.csv")
    flipped_seen = ignored_misses = 0
    for uid, path in scans(luna).items():
        rows = [r for r in annotations if r["seriesuid"] == uid]
        assert rows, f"scan {uid} has no annotated nodule"
        volume = load_volume(path)
        flipped = bool(np.allclose(volume.direction, np.diag([-1.0, -1.0, 1.0])))
        flipped_seen += flipped
        index = np.rint(world_to_voxel(xyz(rows), volume)).astype(int)
        assert np.all((index >= 0) & (index < volume.data.shape)), index
        assert np.all(volume.data[tuple(index.T)] > -300)
        # A reader that drops the direction misses the nodules of the flipped scan.
        naive = np.rint((xyz(rows) - volume.origin) / volume.spacing).astype(int)
        inside = np.all((naive >= 0) & (naive < volume.data.shape), axis=1)
        hits = np.zeros(len(rows), dtype=bool)
        hits[inside] = volume.data[tuple(naive[inside].T)] > -300
        if flipped:
            ignored_misses += int(np.sum(~hits))
        else:
            assert hits.all()
    assert flipped_seen == 1
    assert ignored_misses >= 1


def test_every_nodule_has_a_positive_candidate(luna: Path) -> None:
    annotations = read_rows(luna / "annotations.csv")
    candidates = read_rows(luna / "candidates_V2.csv")
    classes = np.array([int(r["class"]) for r in candidates])
    assert set(classes.tolist()) == {0, 1}
    assert 0.03 < classes.mean() < 0.4  # positives are a minority, but not rare
    for nodule in annotations:
        same = [r for r in candidates if r["seriesuid"] == nodule["seriesuid"]]
        distance = np.linalg.norm(xyz(same) - xyz([nodule]), axis=1)
        labels = np.array([int(r["class"]) for r in same])
        radius = float(nodule["diameter_mm"]) / 2
        assert np.any((labels == 1) & (distance < 1e-3)), "no candidate at the nodule centre"
        assert np.all(distance[labels == 1].min() <= radius)
        # Negatives keep clear of nodules: 5 mm beyond the radius.
        assert np.all(distance[labels == 0] > radius + 5.0 - 1e-3)


def test_hard_negatives_sit_on_structures_easy_ones_do_not() -> None:
    rng = np.random.default_rng(0)
    shape, spacing = (64, 64, 40), (4.7, 4.7, 5.5)
    anatomy = build_anatomy(rng, shape, spacing)
    nodules = place_nodules(rng, anatomy.lung, spacing, 2, (5.0, 20.0))
    pleura = anatomy.lung & ~ndi.binary_erosion(anatomy.lung)
    for fraction in (1.0, 0.0):
        settings = Luna16Settings(hard_negative_fraction=fraction, negatives_per_scan=60)
        points, classes = sample_candidates(rng, anatomy, nodules, settings, spacing)
        assert classes.sum() >= len(nodules) and np.sum(classes == 0) > 40
        index = tuple(np.rint(points[classes == 0]).astype(int).T)
        on_tube = anatomy.tube_distance[index] <= max(spacing)
        if fraction == 1.0:  # vessel forks and trunks, airways, pleura
            assert np.all(on_tube | pleura[index])
            assert np.mean(on_tube) > 0.5
        else:  # open parenchyma far from any tube, or body tissue outside the lungs
            open_lung = anatomy.lung[index] & (anatomy.tube_distance[index] > 5.0)
            body = anatomy.body[index] & ~anatomy.lung[index]
            assert np.all(open_lung | body) and open_lung.any() and body.any()


def test_same_seed_same_bytes_other_seed_differs(luna: Path, tmp_path: Path) -> None:
    synthesize_luna16(tmp_path / "again", TINY, seed=11)
    assert tree_digest(tmp_path / "again") == tree_digest(luna)
    synthesize_luna16(tmp_path / "other", TINY, seed=12)
    other = tree_digest(tmp_path / "other")
    assert set(other.values()).isdisjoint(tree_digest(luna).values())


def test_settings_errors_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"data\.synthetic\.luna16: unknown key"):
        synthesize_luna16("unused", {"scans": 3}, seed=0)
    with pytest.raises(ConfigError, match=r"data\.synthetic\.luna16\.nodule_diameter_mm"):
        Luna16Settings(nodule_diameter_mm=(30.0, 3.0))
    with pytest.raises(ConfigError, match=r"data\.synthetic\.luna16\.shape"):
        Luna16Settings(shape=(8, 64, 40))
    with pytest.raises(ConfigError, match=r"data\.synthetic\.luna16\.subsets"):
        Luna16Settings(subsets=(1, 1))


def test_cli_writes_and_reports_bad_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = dict(TINY, subsets=[2], negatives_per_scan=5)
    assert (
        main(
            [
                "synth",
                "luna16",
                "--output",
                str(tmp_path / "l"),
                "--seed",
                "3",
                "--settings",
                json.dumps(settings),
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["scans"] == 1 and summary["flipped"] == 1
    assert (
        main(
            [
                "synth",
                "luna16",
                "--output",
                str(tmp_path / "bad"),
                "--settings",
                '{"flipped_fraction": 2}',
            ]
        )
        == 2
    )
    assert "data.synthetic.luna16.flipped_fraction" in capsys.readouterr().err
