"""NCC preparation: candidate cubes on hand-made LUNA16-layout scans, split, bad input."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from genesis.errors import ConfigError, InputError
from genesis.io import save_metaimage
from genesis.settings import from_mapping
from genesis.tasks.prepare_ncc import NccSettings, prepare_ncc
from genesis.tasks.prepared import (
    augment_ncc,
    crop_center,
    load_ncc_candidates,
    load_ncc_split,
    ncc_batch,
    prepared_cube_size,
)

SHAPE = (40, 36, 20)
SPACING = (0.8, 0.7, 2.0)
FLIPPED = np.diag([-1.0, -1.0, 1.0])
SETTINGS = {
    "cube_size": [16, 16, 8],
    "max_shift": [2, 2, 1],
    "train_subsets": [0],
    "val_subsets": [1],
    "test_subsets": [2],
    "negative_ratio": 1.0,
}
NODULE_HU = 400.0


def _world(index: tuple[int, int, int], origin: tuple[float, ...], flipped: bool) -> list[float]:
    """world = origin + direction @ (spacing * index), written out by hand (not genesis.io)."""
    sign = (-1.0, -1.0, 1.0) if flipped else (1.0, 1.0, 1.0)
    return [o + s * d * i for o, s, d, i in zip(origin, sign, SPACING, index, strict=True)]


def _scan(
    tmp: Path,
    subset: int,
    uid: str,
    flipped: bool,
    nodules: list[tuple[int, int, int]],
    origin: tuple[float, float, float],
) -> np.ndarray:
    """Lung-like ramp (every voxel distinct) with 3x3x3 bright nodules at the given voxels."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in SHAPE), indexing="ij")
    data = (-900 + 4 * i + 3 * j + 5 * k).astype(np.int16)
    for x, y, z in nodules:
        data[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2] = NODULE_HU
    save_metaimage(
        tmp / f"subset{subset}" / f"{uid}.mhd",
        data,
        spacing=SPACING,
        origin=origin,
        direction=FLIPPED if flipped else np.eye(3),
    )
    return data


def _luna(tmp: Path, extra_rows: list[list[object]] | None = None) -> dict[str, object]:
    """Four scans in subsets 0 (two, one flipped), 1 and 2 (flipped); CSV rows by hand."""
    rows: list[list[object]] = []
    scans = {}
    layout = [(0, "1.2.0a", True), (0, "1.2.0b", False), (1, "1.2.1", False), (2, "1.2.2", True)]
    for subset, uid, flipped in layout:
        origin = (150.0, 120.0, -300.0) if flipped else (-150.0, -120.0, -300.0)
        nodules = [(10, 12, 6), (28, 20, 13)]
        data = _scan(tmp, subset, uid, flipped, nodules, origin)
        scans[uid] = {"data": data, "origin": origin, "flipped": flipped, "nodules": nodules}
        for index in nodules:
            # 0.2 mm off the voxel centre: rounding must still find the nodule voxel.
            rows.append([uid, *(c + 0.2 for c in _world(index, origin, flipped)), 1])
        for index in [(5, 5, 3), (20, 8, 10), (33, 30, 4), (15, 25, 16)]:
            rows.append([uid, *_world(index, origin, flipped), 0])
        # A candidate one voxel from the corner: its cube crosses the border (air padding).
        rows.append([uid, *_world((1, 1, 10), origin, flipped), 0])
    rows += extra_rows or []
    with (tmp / "candidates_V2.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["seriesuid", "coordX", "coordY", "coordZ", "class"])
        writer.writerows(rows)
    return {"rows": rows, "scans": scans}


def _expected_cube(
    data: np.ndarray, centre: tuple[int, int, int], size: tuple[int, int, int]
) -> np.ndarray:
    """Independent cube: pad with air, slice, window to [0, 1]."""
    pad = max(size)
    padded = np.pad(data.astype(np.float32), pad, constant_values=-1000.0)
    start = [c - s // 2 + pad for c, s in zip(centre, size, strict=True)]
    cube = padded[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))]
    return (np.clip(cube, -1000, 1000) + 1000) / 2000


def _settings(**overrides: object) -> NccSettings:
    return from_mapping(NccSettings, {**SETTINGS, **overrides}, "tasks.ncc.prepare")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_positive_cubes_are_centred_on_their_nodules(tmp_path: Path) -> None:
    data = tmp_path / "luna16"
    truth = _luna(data)
    out = tmp_path / "out"
    summary = prepare_ncc(tmp_path, out, _settings(), seed=1)  # finds luna16/ itself
    assert prepared_cube_size(out) == (16, 16, 8)
    rows = truth["rows"]
    for split, size in (("train", (20, 20, 10)), ("val", (16, 16, 8)), ("test", (16, 16, 8))):
        cubes, labels = load_ncc_split(out, split)
        candidate = load_ncc_candidates(out, split)
        assert cubes.dtype == np.float16 and cubes.shape[1:] == size
        assert labels.tolist() == [rows[r][4] for r in candidate]
        for cube, row in zip(cubes, candidate, strict=True):
            uid = rows[row][0]
            scan = truth["scans"][uid]
            centre = cube[size[0] // 2, size[1] // 2, size[2] // 2]
            if rows[row][4] == 1:
                assert centre == pytest.approx((NODULE_HU + 1000) / 2000, abs=1e-3)
                nodule = scan["nodules"][
                    [r for r in range(len(rows)) if rows[r][0] == uid].index(row)
                ]
                expected = _expected_cube(scan["data"], nodule, size)
                np.testing.assert_allclose(cube.astype(np.float32), expected, atol=3e-4)
            else:
                assert centre < 0.3  # lung ramp, not a nodule
    # The flipped train scan really is flipped: its positives would be off-scan otherwise.
    assert summary["counts"]["train"] == {"scans": 2, "cubes": 8, "positives": 4, "negatives": 4}
    assert summary["counts"]["test"]["negatives"] == 5  # test keeps every candidate
    assert summary["n_skipped"] == 0


def test_border_cube_is_air_padded(tmp_path: Path) -> None:
    truth = _luna(tmp_path)
    out = tmp_path / "out"
    prepare_ncc(tmp_path, out, _settings(), seed=1)
    cubes, _ = load_ncc_split(out, "test")
    candidate = load_ncc_candidates(out, "test")
    border = [
        i
        for i, r in enumerate(candidate)
        if truth["rows"][r][1:4] == _world((1, 1, 10), (150.0, 120.0, -300.0), True)
    ]
    assert len(border) == 1
    cube = cubes[border[0]].astype(np.float32)
    assert np.all(cube[:7] == 0.0) and np.all(cube[:, :7] == 0.0)  # 8 - 1 voxels of air
    assert np.all(cube[7:, 7:] > 0.0)
    np.testing.assert_allclose(
        cube, _expected_cube(truth["scans"]["1.2.2"]["data"], (1, 1, 10), (16, 16, 8)), atol=3e-4
    )


def test_outputs_split_and_candidate_tables(tmp_path: Path) -> None:
    _luna(tmp_path)
    out = tmp_path / "out"
    prepare_ncc(tmp_path, out, _settings(), seed=1)
    split = _read_csv(out / "split.csv")
    assert [(r["seriesuid"], r["subset"], r["split"]) for r in split] == [
        ("1.2.0a", "0", "train"),
        ("1.2.0b", "0", "train"),
        ("1.2.1", "1", "val"),
        ("1.2.2", "2", "test"),
    ]
    table = _read_csv(out / "candidates.csv")
    assert {r["status"] for r in table} == {"ok"}
    for split_name in ("train", "val", "test"):
        candidate = load_ncc_candidates(out, split_name)
        listed = {int(r["row"]): int(r["index"]) for r in table if r["split"] == split_name}
        assert listed == {int(row): i for i, row in enumerate(candidate)}
    first = next(r for r in table if r["row"] == "0")
    assert (first["voxel_x"], first["voxel_y"], first["voxel_z"]) == ("10", "12", "6")
    report = json.loads((out / "prepare.json").read_text())
    assert report["settings"]["cube_size"] == [16, 16, 8]
    assert report["stored_size"]["train"] == [20, 20, 10]


def test_negative_sampling_is_seeded_and_ratio_bounded(tmp_path: Path) -> None:
    _luna(tmp_path)
    chosen = {}
    for seed, name in ((1, "a"), (1, "b"), (2, "c")):
        prepare_ncc(tmp_path, tmp_path / name, _settings(test_negative_ratio=2.0), seed=seed)
        chosen[name] = load_ncc_candidates(tmp_path / name, "train").tolist()
    assert chosen["a"] == chosen["b"]
    assert chosen["a"] != chosen["c"]  # 4 of 10 negatives: another seed picks others
    _, labels = load_ncc_split(tmp_path / "a", "test")
    assert int(labels.sum()) == 2 and int((labels == 0).sum()) == 4


def test_candidate_outside_its_scan_is_skipped_and_recorded(tmp_path: Path) -> None:
    outside = ["1.2.2", *_world((-6, 10, 10), (150.0, 120.0, -300.0), True), 0]
    truth = _luna(tmp_path, extra_rows=[outside])
    out = tmp_path / "out"
    summary = prepare_ncc(tmp_path, out, _settings(), seed=1)
    row = len(truth["rows"]) - 1
    assert summary["n_skipped"] == 1
    assert summary["skipped_candidates"][0]["row"] == row
    assert "outside the scan" in summary["skipped_candidates"][0]["reason"]
    assert row not in load_ncc_candidates(out, "test")
    cubes, labels = load_ncc_split(out, "test")
    assert len(cubes) == len(labels) == 7  # the file was shrunk to the kept cubes
    table = {r["row"]: r for r in _read_csv(out / "candidates.csv")}
    assert table[str(row)]["status"] == "skipped" and table[str(row)]["voxel_x"] == "-6"


def test_unknown_series_is_an_error_when_every_subset_is_present(tmp_path: Path) -> None:
    _luna(tmp_path, extra_rows=[["9.9.9", 0.0, 0.0, 0.0, 1]])
    for k in range(3, 10):
        (tmp_path / f"subset{k}").mkdir()
    with pytest.raises(InputError, match=r"9\.9\.9.*matches no scan") as error:
        prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1)
    assert error.value.path == tmp_path / "candidates_V2.csv"


def test_unknown_series_of_a_partial_download_is_ignored_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _luna(tmp_path, extra_rows=[["9.9.9", 0.0, 0.0, 0.0, 1], ["9.9.9", 1.0, 0.0, 0.0, 0]])
    with caplog.at_level(logging.WARNING):
        summary = prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1)
    lines = [r.getMessage() for r in caplog.records if "have no scan" in r.getMessage()]
    assert len(lines) == 1 and "2 candidates of 1 series" in lines[0] and "3-9" in lines[0]
    assert summary["ignored_candidates"] == 2


def test_empty_candidates_csv_is_an_error(tmp_path: Path) -> None:
    _luna(tmp_path)
    (tmp_path / "candidates_V2.csv").write_text("")
    with pytest.raises(InputError, match="is empty"):
        prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1)
    (tmp_path / "candidates_V2.csv").write_text("seriesuid,coordX,coordY,coordZ,class\n")
    with pytest.raises(InputError, match="lists no candidates"):
        prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1)


def test_pinned_split_is_used_and_checked(tmp_path: Path) -> None:
    _luna(tmp_path)
    pinned = tmp_path / "pinned.csv"
    pinned.write_text(
        "seriesuid,subset,split\n1.2.0a,0,train\n1.2.0b,0,val\n1.2.1,1,val\n1.2.2,2,test\n"
    )
    summary = prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1, split_file=pinned)
    assert summary["counts"]["val"]["scans"] == 2
    assert (tmp_path / "out" / "split.csv").read_text() == pinned.read_text()
    pinned.write_text("seriesuid,subset,split\n1.2.0a,0,train\n7.7.7,1,val\n")
    with pytest.raises(InputError, match=r"series 7\.7\.7"):
        prepare_ncc(tmp_path, tmp_path / "out2", _settings(), seed=1, split_file=pinned)


def test_overlapping_subsets_are_a_config_error(tmp_path: Path) -> None:
    _luna(tmp_path)
    with pytest.raises(ConfigError, match="subset 1 is in both"):
        prepare_ncc(
            tmp_path, tmp_path / "out", _settings(val_subsets=[1], test_subsets=[1]), seed=1
        )


def test_augment_ncc_crops_real_context_and_flips() -> None:
    n = 16
    stored = torch.arange(n * 10 * 10 * 6, dtype=torch.float32).reshape(n, 1, 10, 10, 6)
    out = augment_ncc(stored, torch.Generator().manual_seed(3), (6, 6, 4))
    assert out.shape == (n, 1, 6, 6, 4)
    assert torch.equal(out, augment_ncc(stored, torch.Generator().manual_seed(3), (6, 6, 4)))
    shifts, flips = set(), 0
    for b in range(n):
        # Undo the flips (the ramp decreases along a flipped axis), then find the offset.
        sample = out[b, 0]
        for axis in range(3):
            if bool((sample.diff(dim=axis) < 0).all()):
                sample = sample.flip(axis)
                flips += 1
        offset = np.unravel_index(int(sample[0, 0, 0]) - b * 600, (10, 10, 6))
        x0, y0, z0 = (int(v) for v in offset)
        assert x0 <= 4 and y0 <= 4 and z0 <= 2
        assert torch.equal(sample, stored[b, 0, x0 : x0 + 6, y0 : y0 + 6, z0 : z0 + 4])
        shifts.add((x0, y0, z0))
    assert len(shifts) > 4 and 0 < flips < 3 * n
    assert augment_ncc(stored, torch.Generator().manual_seed(0)).shape == stored.shape


def test_crop_center_is_the_central_window() -> None:
    stored = torch.rand(2, 1, 10, 10, 6)
    assert torch.equal(crop_center(stored, (6, 6, 4)), stored[:, :, 2:8, 2:8, 1:5])
    assert torch.equal(crop_center(stored, (10, 10, 6)), stored)
    with pytest.raises(ValueError, match="cannot crop"):
        crop_center(stored, (12, 6, 4))


def test_phantom_positives_sit_on_nodules_in_flipped_scans(tmp_path: Path) -> None:
    """LUNA16-layout phantoms (two of three scans flipped), checked against SimpleITK."""
    import SimpleITK as sitk

    from genesis.synth import synthesize_luna16

    synth = {
        "subsets": [0, 1, 2],
        "scans_per_subset": 1,
        "shape": [48, 48, 24],
        "flipped_fraction": 0.67,
        "nodule_diameter_mm": [7.0, 12.0],
        "negatives_per_scan": 8,
    }
    assert synthesize_luna16(tmp_path / "luna16", synth, 5)["flipped"] == 2
    out = tmp_path / "out"
    summary = prepare_ncc(tmp_path, out, _settings(negative_ratio=2.0), seed=1)
    assert summary["n_skipped"] == 0
    table = {int(r["row"]): r for r in _read_csv(out / "candidates.csv")}
    images = {p.stem: sitk.ReadImage(str(p)) for p in (tmp_path / "luna16").rglob("*.mhd")}
    flipped = 0
    for split in ("train", "val", "test"):
        cubes, labels = load_ncc_split(out, split)
        cubes = crop_center(torch.from_numpy(cubes.astype(np.float32))[:, None], (16, 16, 8))
        for cube, label, row in zip(
            cubes[:, 0], labels, load_ncc_candidates(out, split), strict=True
        ):
            entry = table[int(row)]
            image = images[entry["seriesuid"]]
            flipped += label and image.GetDirection()[0] < 0
            world = [float(entry[k]) for k in ("coordX", "coordY", "coordZ")]
            index = np.rint(image.TransformPhysicalPointToContinuousIndex(world)).astype(int)
            assert [int(entry[f"voxel_{a}"]) for a in "xyz"] == index.tolist()
            hu = sitk.GetArrayViewFromImage(image)[index[2], index[1], index[0]]  # (z, y, x)
            expected = (np.clip(hu, -1000, 1000) + 1000) / 2000
            assert float(cube[8, 8, 4]) == pytest.approx(expected, abs=3e-4)
            if label:
                assert hu > -400  # solid nodule tissue, not lung (about -850 HU)
    assert flipped > 0


def test_ncc_batch_keeps_row_order_and_crops(tmp_path: Path) -> None:
    _luna(tmp_path)
    out = tmp_path / "out"
    prepare_ncc(tmp_path, out, _settings(), seed=1)
    cubes, _ = load_ncc_split(out, "train")
    index = np.array([5, 0, 3])
    batch = ncc_batch(cubes, index, (16, 16, 8))
    assert batch.shape == (3, 1, 16, 16, 8) and batch.dtype == torch.float32
    for k, row in enumerate(index):
        expected = torch.from_numpy(cubes[row].astype(np.float32))[2:18, 2:18, 1:9]
        assert torch.equal(batch[k, 0], expected)
    augmented = ncc_batch(cubes, index, (16, 16, 8), torch.Generator().manual_seed(0))
    assert augmented.shape == (3, 1, 16, 16, 8)


def test_unreadable_scan_is_skipped_or_an_error(tmp_path: Path) -> None:
    _luna(tmp_path)
    raw = tmp_path / "subset0" / "1.2.0b.raw"
    raw.write_bytes(raw.read_bytes()[:1000])  # a truncated download
    with pytest.raises(InputError, match="truncated") as error:
        prepare_ncc(tmp_path, tmp_path / "strict", _settings(skip_bad=False), seed=1)
    assert error.value.path == tmp_path / "subset0" / "1.2.0b.mhd"
    summary = prepare_ncc(tmp_path, tmp_path / "out", _settings(), seed=1)
    assert [s["seriesuid"] for s in summary["skipped_scans"]] == ["1.2.0b"]
    assert summary["counts"]["train"]["positives"] == 2
    table = _read_csv(tmp_path / "out" / "candidates.csv")
    assert {r["status"] for r in table if r["seriesuid"] == "1.2.0b"} == {"skipped"}
    cubes, labels = load_ncc_split(tmp_path / "out", "train")
    assert len(cubes) == len(labels) == summary["counts"]["train"]["cubes"]
