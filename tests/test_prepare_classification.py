"""A user's classification task from a CSV: point and whole-volume forms, classes, splits,
bad input, and that fine-tuning reads the result as it reads NCC."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from genesis.errors import ConfigError, InputError
from genesis.tasks.prepare_classification import (
    ClassificationSettings,
    classification_settings,
    prepare_classification,
    sort_labels,
)
from genesis.tasks.prepared import (
    load_ncc_candidates,
    load_ncc_split,
    prepared_cube_size,
    resize_volume,
)

SHAPE = (24, 22, 12)
SPACING = (0.8, 0.7, 2.0)
SIZE = (16, 16, 8)
TRAIN_SIZE = (20, 20, 10)  # SIZE + 2 * max_shift
BASE = {"cube_size": list(SIZE), "max_shift": [2, 2, 1]}
BLOB_HU = 400.0
SECTION = "tasks.mine.prepare"


def _settings(**overrides: object) -> ClassificationSettings:
    return classification_settings({**BASE, **overrides}, SECTION)


def _ramp(shape: tuple[int, int, int] = SHAPE, blobs: tuple[tuple[int, int, int], ...] = ()):
    """CT-like ramp (every voxel distinct) with 3x3x3 bright blobs at the given voxels."""
    i, j, k = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    data = (-900 + 4 * i + 3 * j + 5 * k).astype(np.int16)
    for x, y, z in blobs:
        data[x - 1 : x + 2, y - 1 : y + 2, z - 1 : z + 2] = BLOB_HU
    return data


class Scan:
    """A volume written to disk, and its index -> LPS world mapping written out by hand."""

    def __init__(
        self,
        path: Path,
        data: np.ndarray,
        origin: tuple[float, float, float],
        sign: tuple[float, float, float],
    ) -> None:
        self.path, self.data, self.origin, self.sign = path, data, origin, sign

    def world(self, index: tuple[int, int, int], offset: float = 0.0) -> list[float]:
        return [
            o + s * d * i + offset
            for o, s, d, i in zip(self.origin, self.sign, SPACING, index, strict=True)
        ]


def _nifti(path: Path, data: np.ndarray, origin_ras=(10.0, -20.0, -50.0)) -> Scan:
    """NIfTI with a plain RAS affine: in LPS its x and y axes point the other way."""
    affine = np.diag([*SPACING, 1.0])
    affine[:3, 3] = origin_ras
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    origin = (-origin_ras[0], -origin_ras[1], origin_ras[2])
    return Scan(path, data, origin, (-1.0, -1.0, 1.0))


def _metaimage(
    path: Path, data: np.ndarray, flipped: bool, origin=(-150.0, -120.0, -300.0)
) -> Scan:
    """MetaImage through SimpleITK, optionally with LUNA16's flipped direction."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(data.transpose(2, 1, 0)))
    sign = (-1.0, -1.0, 1.0) if flipped else (1.0, 1.0, 1.0)
    image.SetSpacing(SPACING)
    image.SetOrigin(origin)
    image.SetDirection(tuple(np.diag(sign).ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return Scan(path, data, origin, sign)


BLOB = (8, 9, 5)
PLAIN = (16, 12, 7)
BORDER = (1, 1, 6)


def _point_task(
    tmp: Path,
    extra: list[list[object]] | None = None,
    split_column: bool = True,
    header: str = "path,x,y,z,label,split",
) -> dict[str, Scan]:
    """Four scans (NIfTI, flipped and plain MetaImage): a blob (label 1), a ramp voxel and
    a border voxel (label 0) each; the CSV uses paths relative to its folder."""
    scans = {
        "scans/a.nii.gz": (_nifti, {}, "train"),
        "scans/b.mhd": (_metaimage, {"flipped": True}, "train"),
        "scans/c.nii": (_nifti, {"origin_ras": (0.0, 0.0, 0.0)}, "val"),
        "scans/d.mha": (_metaimage, {"flipped": False}, "test"),
    }
    written, rows = {}, []
    for name, (writer, kwargs, split) in scans.items():
        scan = writer(tmp / name, _ramp(blobs=(BLOB,)), **kwargs)
        written[name] = scan
        # 0.2 mm off the voxel centre: rounding must still find the voxel.
        rows.append([name, *scan.world(BLOB, 0.2), 1, split])
        rows.append([name, *scan.world(PLAIN), 0, split])
        rows.append([name, *scan.world(BORDER), 0, split])
    rows += extra or []
    _write_csv(tmp / "task.csv", header.split(","), [r if split_column else r[:5] for r in rows])
    return written


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _expected_cube(
    data: np.ndarray,
    centre: tuple[int, int, int],
    size: tuple[int, int, int],
    fill: float = -1000.0,
) -> np.ndarray:
    """Independent cut: pad, slice with the centre voxel at size // 2."""
    pad = max(size)
    padded = np.pad(data.astype(np.float32), pad, constant_values=fill)
    start = [c - s // 2 + pad for c, s in zip(centre, size, strict=True)]
    return padded[tuple(slice(a, a + s) for a, s in zip(start, size, strict=True))]


def _hu(cube: np.ndarray) -> np.ndarray:
    return (np.clip(cube, -1000, 1000) + 1000) / 2000


# --------------------------------------------------------------------------------------
# The two forms


def test_point_cubes_match_an_independent_cut(tmp_path: Path) -> None:
    scans = _point_task(tmp_path)
    out = tmp_path / "out"
    summary = prepare_classification(
        tmp_path / "task.csv", out, _settings(), seed=0, split_file=None, section=SECTION
    )
    assert prepared_cube_size(out) == SIZE
    rows = _read_csv(tmp_path / "task.csv")
    for split, size in (("train", TRAIN_SIZE), ("val", SIZE), ("test", SIZE)):
        cubes, labels = load_ncc_split(out, split)
        candidate = load_ncc_candidates(out, split)
        assert cubes.dtype == np.float16 and cubes.shape == (len(candidate), *size)
        assert labels.dtype == np.uint8
        assert labels.tolist() == [int(rows[r]["label"]) for r in candidate]  # 0/1 kept
        for cube, r in zip(cubes, candidate, strict=True):
            voxel = (BLOB, PLAIN, BORDER)[r % 3]
            expected = _hu(_expected_cube(scans[rows[r]["path"]].data, voxel, size))
            np.testing.assert_allclose(cube.astype(np.float32), expected, atol=3e-4)
        assert len(cubes) == 6 if split == "train" else len(cubes) == 3
    border = load_ncc_split(out, "val")[0][2].astype(np.float32)
    assert np.all(border[:7] == 0.0) and np.all(border[:, :7] == 0.0)  # air padding
    report = json.loads((out / "prepare.json").read_text())
    assert report == json.loads(json.dumps(summary))
    assert report["kind"] == "classification" and report["task"] == "mine"
    assert report["classes"] == ["0", "1"] and report["class_names"] == ["0", "1"]
    assert report["n_classes"] == 2 and report["form"] == "point"
    assert report["settings"]["cube_size"] == list(SIZE)
    assert report["stored_size"]["train"] == list(TRAIN_SIZE)
    assert report["counts"]["train"] == {"scans": 2, "cubes": 6, "per_class": {"0": 4, "1": 2}}
    assert report["split_source"] == "column" and report["n_skipped"] == 0
    assert {s["modality"] for s in report["scans"]} == {"ct"}
    table = _read_csv(out / "candidates.csv")
    assert [r["row"] for r in table] == [str(i) for i in range(12)]
    assert (table[0]["voxel_x"], table[0]["voxel_y"], table[0]["voxel_z"]) == ("8", "9", "5")
    assert {r["status"] for r in table} == {"ok"} and {r["modality"] for r in table} == {"ct"}
    assert [(r["path"], r["split"]) for r in _read_csv(out / "split.csv")] == [
        ("scans/a.nii.gz", "train"),
        ("scans/b.mhd", "train"),
        ("scans/c.nii", "val"),
        ("scans/d.mha", "test"),
    ]


def test_volume_form_resamples_each_whole_volume(tmp_path: Path) -> None:
    rows = []
    volumes = {}
    for k, split in enumerate(["train"] * 4 + ["val", "test"]):
        name = f"v{k}.nii.gz"
        volumes[name] = _ramp((18 + k, 20, 9 + k), blobs=((6, 6, 4),)).astype(np.float32)
        _nifti(tmp_path / name, volumes[name])
        rows.append([name, k % 2, split])
    _write_csv(tmp_path / "task.csv", ["path", "label", "split"], rows)
    out = tmp_path / "out"
    summary = prepare_classification(
        tmp_path / "task.csv", out, _settings(), seed=0, split_file=None
    )
    assert summary["form"] == "volume" and summary["task"] is None
    for split, size in (("train", TRAIN_SIZE), ("val", SIZE), ("test", SIZE)):
        cubes, labels = load_ncc_split(out, split)
        for cube, r, label in zip(cubes, load_ncc_candidates(out, split), labels, strict=True):
            expected = resize_volume(_hu(volumes[f"v{r}.nii.gz"]), size, "linear")
            assert cube.shape == size and label == r % 2
            np.testing.assert_allclose(cube.astype(np.float32), expected, atol=1e-3)
    voxels = np.load(out / "val.npz")["voxel"]
    assert voxels.tolist() == [[11, 10, 6]]  # the centre of the 22x20x13 volume


def test_three_classes_are_indexed_in_numeric_order_with_names(tmp_path: Path) -> None:
    rows = []
    for k in range(9):
        name = f"s{k}.nii.gz"
        _nifti(tmp_path / name, _ramp((10, 10, 6)))
        rows.append([name, ("10", "2", "0")[k % 3], ("train", "train", "val")[k // 3]])
    rows[8][2] = "test"
    _write_csv(tmp_path / "task.csv", ["path", "label", "split"], rows)
    out = tmp_path / "out"
    names = ["healthy", "benign", "malignant"]
    summary = prepare_classification(
        tmp_path / "task.csv", out, _settings(class_names=names), seed=0, split_file=None
    )
    assert summary["classes"] == ["0", "2", "10"]  # text order would put "10" before "2"
    assert summary["class_names"] == names and summary["n_classes"] == 3
    _, labels = load_ncc_split(out, "train")
    assert labels.tolist() == [2, 1, 0, 2, 1, 0]
    assert summary["counts"]["val"]["per_class"] == {"0": 0, "2": 1, "10": 1}
    with pytest.raises(ConfigError, match=r"tasks\.mine\.prepare\.class_names lists 2 names"):
        prepare_classification(
            tmp_path / "task.csv",
            tmp_path / "o2",
            _settings(class_names=["a", "b"]),
            0,
            None,
            section=SECTION,
        )


@pytest.mark.parametrize(
    ("values", "order"),
    [
        ({"1", "0"}, ["0", "1"]),
        ({"10", "2", "-1"}, ["-1", "2", "10"]),
        ({"0.5", "0.25"}, ["0.25", "0.5"]),
        ({"normal", "benign", "Malignant"}, ["Malignant", "benign", "normal"]),
        ({"2", "b"}, ["2", "b"]),
    ],
)
def test_sort_labels(values: set[str], order: list[str]) -> None:
    assert sort_labels(values) == order


def test_modality_mri_and_auto_are_recorded_per_scan(tmp_path: Path) -> None:
    ct = _metaimage(tmp_path / "ct.mhd", _ramp(blobs=(BLOB,)), flipped=False)
    mri_data = (_ramp() + 1000).astype(np.float32)  # positive, nothing at air level
    mri = _nifti(tmp_path / "mri.nii.gz", mri_data)
    _nifti(tmp_path / "mri2.nii.gz", mri_data)
    rows = [
        ["ct.mhd", *ct.world(BLOB), 1, "train"],
        ["ct.mhd", *ct.world(BORDER), 0, "train"],
        ["mri.nii.gz", *mri.world(BORDER), 0, "val"],
        ["mri2.nii.gz", *mri.world(PLAIN), 1, "test"],
    ]
    _write_csv(tmp_path / "task.csv", ["path", "x", "y", "z", "label", "split"], rows)
    out = tmp_path / "out"
    summary = prepare_classification(
        tmp_path / "task.csv", out, _settings(modality="auto"), seed=0, split_file=None
    )
    assert {s["path"]: s["modality"] for s in summary["scans"]} == {
        "ct.mhd": "ct",
        "mri.nii.gz": "mri",
        "mri2.nii.gz": "mri",
    }
    assert [r["modality"] for r in _read_csv(out / "candidates.csv")] == ["ct", "ct", "mri", "mri"]
    low, high = np.percentile(mri_data, (0.5, 99.5))
    scaled = (np.clip(mri_data, low, high) - low) / (high - low)
    cube = load_ncc_split(out, "val")[0][0].astype(np.float32)
    np.testing.assert_allclose(cube, _expected_cube(scaled, BORDER, SIZE, fill=0.0), atol=1e-3)
    assert np.all(cube[:7] == 0.0)  # zero padding after the MRI scaling
    forced = prepare_classification(
        tmp_path / "task.csv", tmp_path / "o2", _settings(modality="mri"), seed=0, split_file=None
    )
    assert {s["modality"] for s in forced["scans"]} == {"mri"}


# --------------------------------------------------------------------------------------
# Splits


def test_split_file_wins_over_the_split_column(tmp_path: Path) -> None:
    _point_task(tmp_path)
    pinned = tmp_path / "pinned.csv"
    pinned.write_text(
        "path,split\n./scans/b.mhd,train\nscans/d.mha,train\n"
        "scans/c.nii,val\nscans/a.nii.gz,test\n",
        encoding="utf-8",
    )
    out = tmp_path / "out"
    summary = prepare_classification(tmp_path / "task.csv", out, _settings(), 0, pinned)
    assert summary["split_source"] == "split_file" and summary["split_file"] == str(pinned)
    assert {(r["path"], r["split"]) for r in _read_csv(out / "split.csv")} == {
        ("scans/b.mhd", "train"),
        ("scans/d.mha", "train"),
        ("scans/c.nii", "val"),
        ("scans/a.nii.gz", "test"),
    }
    table = _read_csv(out / "candidates.csv")
    assert {r["split"] for r in table if r["path"] == "scans/a.nii.gz"} == {"test"}
    # A pin that leaves a scan out: its rows are unused; a pin naming no data scan: error.
    pinned.write_text(
        "path,split\nscans/b.mhd,train\nscans/c.nii,val\nscans/d.mha,test\n", encoding="utf-8"
    )
    summary = prepare_classification(tmp_path / "task.csv", out, _settings(), 0, pinned)
    assert summary["unused_rows"] == 3 and summary["n_skipped"] == 0
    pinned.write_text("path,split\nscans/zz.mhd,train\n", encoding="utf-8")
    with pytest.raises(InputError, match=r"scans/zz\.mhd.*not in") as error:
        prepare_classification(tmp_path / "task.csv", out, _settings(), 0, pinned)
    assert error.value.path == pinned
    # A split file that does not exist yet: the CSV's own split is used.
    summary = prepare_classification(
        tmp_path / "task.csv", out, _settings(), 0, tmp_path / "absent.csv"
    )
    assert summary["split_source"] == "column" and summary["split_file"] is None


def _many_scans(tmp: Path, n: int = 10) -> None:
    """``n`` scans with three points each (labels 0, 1, 0) and no split column."""
    rows = []
    for k in range(n):
        name = f"p{k:02d}.nii.gz"
        scan = _nifti(tmp / name, _ramp((10, 10, 6)))
        rows += [
            [name, *scan.world(v), label]
            for v, label in (((2, 2, 2), 0), ((5, 5, 3), 1), ((7, 3, 1), 0))
        ]
    _write_csv(tmp / "task.csv", ["path", "x", "y", "z", "label"], rows)


def test_seeded_proportions_keep_each_scan_in_one_split(tmp_path: Path) -> None:
    _many_scans(tmp_path)
    splits = {}
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        summary = prepare_classification(
            tmp_path / "task.csv", tmp_path / name, _settings(), seed, None, section=SECTION
        )
        assert summary["split_source"] == "proportions"
        splits[name] = {r["path"]: r["split"] for r in _read_csv(tmp_path / name / "split.csv")}
        by_path: dict[str, set[str]] = {}
        for row in _read_csv(tmp_path / name / "candidates.csv"):
            by_path.setdefault(row["path"], set()).add(row["split"])
        assert all(len(s) == 1 for s in by_path.values())  # a scan never in two splits
        assert {p: s.pop() for p, s in by_path.items()} == splits[name]
        assert sorted(splits[name].values()).count("train") >= 6
        assert {"val", "test"} <= set(splits[name].values())
    assert splits["a"] == splits["b"]
    assert splits["a"] != splits["c"]
    with pytest.raises(ConfigError, match=r"tasks\.mine\.prepare\.split_proportions"):
        _settings(split_proportions=[0.5, 0.3, 0.3])


# --------------------------------------------------------------------------------------
# Bad input: one error naming the file, or with skip_bad a recorded skip


def _run(tmp: Path, skip_bad: bool = False, **overrides: object) -> dict:
    return prepare_classification(
        tmp / "task.csv", tmp / "out", _settings(skip_bad=skip_bad, **overrides), 0, None
    )


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"path,label\n\xff\xfe,1\n", "cannot read the CSV"),
        (b"", "is empty"),
        (b"path,x,y,label\na.nii,1,2,0\n", r"lacks column\(s\) z"),
        (b"path,x,y,z\na.nii,1,2,3\n", r"lacks column\(s\) label"),
        (b"name,label\na.nii,1\n", r"lacks column\(s\) path"),
        (b"path,x,y,z,label\n", "lists no rows"),
    ],
)
def test_unusable_csv_is_one_error(tmp_path: Path, content: bytes, match: str) -> None:
    (tmp_path / "task.csv").write_bytes(content)
    for skip_bad in (False, True):  # a CSV cannot be skipped
        with pytest.raises(InputError, match=match) as error:
            _run(tmp_path, skip_bad)
        assert error.value.path == tmp_path / "task.csv"
    with pytest.raises(InputError, match="cannot read the CSV"):
        prepare_classification(tmp_path, tmp_path / "out", _settings(), 0, None)  # a folder


@pytest.mark.parametrize(
    ("row", "match"),
    [
        (
            ["scans/a.nii.gz", "abc", 1.0, 1.0, 0, "train"],
            r"line 14: non-numeric coordinate x='abc'",
        ),
        (["scans/a.nii.gz", 1.0, "nan", 1.0, 0, "train"], r"line 14: non-finite coordinate y"),
        (["scans/a.nii.gz", 1.0, 1.0, 1.0, "", "train"], r"line 14: empty label"),
        (["", 1.0, 1.0, 1.0, 0, "train"], r"line 14: empty path"),
        (["scans/a.nii.gz", 1.0, 1.0, 1.0, 0, "training"], r"line 14: split 'training' must be"),
        (["scans/a.nii.gz", 1.0, 1.0, 1.0, 0, "train", "extra"], r"line 14: 1 field\(s\) more"),
    ],
)
def test_bad_row_is_an_error_or_a_recorded_skip(tmp_path: Path, row: list, match: str) -> None:
    _point_task(tmp_path, extra=[row])
    with pytest.raises(InputError, match=match) as error:
        _run(tmp_path)
    assert error.value.path == tmp_path / "task.csv"
    summary = _run(tmp_path, skip_bad=True)
    assert summary["n_skipped"] == 1
    assert summary["skipped"][0]["row"] == 12 and summary["skipped"][0]["line"] == 14
    table = _read_csv(tmp_path / "out" / "candidates.csv")
    assert table[12]["status"] == "skipped" and table[12]["index"] == "-1"
    assert (
        sum(len(load_ncc_candidates(tmp_path / "out", s)) for s in ("train", "val", "test")) == 12
    )


@pytest.mark.parametrize("broken", ["missing", "corrupt"])
def test_unreadable_scan_is_an_error_or_a_recorded_skip(tmp_path: Path, broken: str) -> None:
    _point_task(tmp_path)
    scan = tmp_path / "scans" / "a.nii.gz"
    if broken == "missing":
        scan.unlink()
    else:
        scan.write_bytes(scan.read_bytes()[:60])
    with pytest.raises(InputError) as error:
        _run(tmp_path)
    assert error.value.path == scan
    summary = _run(tmp_path, skip_bad=True)
    assert [s["path"] for s in summary["skipped_scans"]] == ["scans/a.nii.gz"]
    assert [s["row"] for s in summary["skipped"]] == [0, 1, 2]
    assert all("scan unreadable" in s["reason"] for s in summary["skipped"])
    assert summary["counts"]["train"]["cubes"] == 3
    assert load_ncc_split(tmp_path / "out", "train")[0].shape == (3, *TRAIN_SIZE)  # shrunk


def test_point_outside_its_scan_is_an_error_or_a_recorded_skip(tmp_path: Path) -> None:
    scans = _point_task(tmp_path)
    outside = ["scans/d.mha", *scans["scans/d.mha"].world((-5, 3, 3)), 0, "test"]
    _point_task(tmp_path, extra=[outside])
    with pytest.raises(InputError, match=r"line 14: point .* outside scans/d\.mha") as error:
        _run(tmp_path)
    assert error.value.path == tmp_path / "task.csv"
    summary = _run(tmp_path, skip_bad=True)
    assert summary["n_skipped"] == 1 and "outside" in summary["skipped"][0]["reason"]
    row = _read_csv(tmp_path / "out" / "candidates.csv")[12]
    assert (row["status"], row["voxel_x"], row["modality"]) == ("skipped", "-5", "ct")
    assert len(load_ncc_split(tmp_path / "out", "test")[0]) == 3


def test_empty_class_is_an_error_or_its_rows_are_skipped(tmp_path: Path) -> None:
    scans = _point_task(tmp_path)
    extra = [["scans/c.nii", *scans["scans/c.nii"].world(PLAIN), 7, "val"]]
    _point_task(tmp_path, extra=extra)
    with pytest.raises(InputError, match=r"empty class: label\(s\) '7' \(1 row\(s\)") as error:
        _run(tmp_path)
    assert error.value.path == tmp_path / "task.csv"
    summary = _run(tmp_path, skip_bad=True)
    assert summary["classes"] == ["0", "1"] and summary["n_classes"] == 2
    assert summary["skipped"][0]["row"] == 12
    assert "empty class" in summary["skipped"][0]["reason"]
    assert load_ncc_split(tmp_path / "out", "val")[1].tolist() == [1, 0, 0]


def test_training_split_needs_two_classes_even_with_skip_bad(tmp_path: Path) -> None:
    scans = _point_task(tmp_path)
    far = ["scans/a.nii.gz", *scans["scans/a.nii.gz"].world((99, 99, 99)), 1, "train"]
    _point_task(tmp_path, extra=[far])
    (tmp_path / "scans" / "b.mhd").unlink()  # with it go b's three rows, one positive
    rows = _read_csv(tmp_path / "task.csv")
    kept = rows[1:]  # without a's positive; its far one is outside the scan
    _write_csv(tmp_path / "task.csv", list(rows[0]), [list(r.values()) for r in kept])
    with pytest.raises(InputError, match=r"has 1 class\(es\) \('0'\) after skipping 4 row"):
        _run(tmp_path, skip_bad=True)
    two = tmp_path / "two"
    two.mkdir()
    _write_csv(
        two / "task.csv",
        ["path", "x", "y", "z", "label", "split"],
        [[str(tmp_path / r["path"]), r["x"], r["y"], r["z"], 0, r["split"]] for r in kept],
    )
    with pytest.raises(InputError, match=r"training split has 1 class\(es\) \('0'\);"):
        _run(two, skip_bad=True)


def test_split_without_rows_is_an_error(tmp_path: Path) -> None:
    _point_task(tmp_path)
    rows = [r for r in _read_csv(tmp_path / "task.csv") if r["split"] != "test"]
    _write_csv(tmp_path / "task.csv", list(rows[0]), [list(r.values()) for r in rows])
    for skip_bad in (False, True):
        with pytest.raises(InputError, match="split test has no rows") as error:
            _run(tmp_path, skip_bad)
        assert error.value.path == tmp_path / "task.csv"


def test_scan_in_two_splits_or_listed_twice(tmp_path: Path) -> None:
    scans = _point_task(tmp_path)
    _point_task(
        tmp_path, extra=[["scans/a.nii.gz", *scans["scans/a.nii.gz"].world(PLAIN), 0, "val"]]
    )
    with pytest.raises(InputError, match=r"scans/a\.nii\.gz is given splits train, val"):
        _run(tmp_path)
    summary = _run(tmp_path, skip_bad=True)
    assert [s["path"] for s in summary["skipped_scans"]] == ["scans/a.nii.gz"]
    assert summary["n_skipped"] == 4
    # Whole-volume form: one row per scan.
    rows = [
        [n, k % 2, s]
        for k, (n, s) in enumerate(
            [
                ("scans/a.nii.gz", "train"),
                ("scans/b.mhd", "train"),
                ("scans/c.nii", "val"),
                ("scans/d.mha", "test"),
                ("scans/a.nii.gz", "train"),
            ]
        )
    ]
    _write_csv(tmp_path / "task.csv", ["path", "label", "split"], rows)
    with pytest.raises(InputError, match=r"line 6: scans/a\.nii\.gz is listed again"):
        _run(tmp_path)
    assert _run(tmp_path, skip_bad=True)["skipped"][0]["row"] == 4


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"cube_size": [16, 0, 8]}, "cube_size"),
        ({"max_shift": [1, -1, 0]}, "max_shift"),
        ({"hu_window": [math.nan, 1000.0]}, "hu_window"),
        ({"hu_window": [100.0, -100.0]}, "hu_window"),
        ({"mri_percentiles": [5.0, math.inf]}, "mri_percentiles"),
        ({"auto_ct_air_fraction": 0.0}, "auto_ct_air_fraction"),
        ({"split_proportions": [0.0, 0.5, 0.5]}, "split_proportions"),
        ({"split_proportions": [math.nan, 0.5, 0.5]}, "split_proportions"),
        ({"class_names": ["a", "a"]}, "class_names"),
        ({"modality": "pet"}, "modality"),
        ({"skip_bad": "yes"}, "skip_bad"),
    ],
)
def test_settings_errors_name_the_key(overrides: dict, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^tasks\.mine\.prepare\.{key}"):
        _settings(**overrides)


def test_defaults() -> None:
    settings = ClassificationSettings()
    assert settings.cube_size == (64, 64, 32) and settings.max_shift == (4, 4, 2)
    assert settings.split_proportions == (0.7, 0.15, 0.15)
    assert settings.modality == "auto" and settings.skip_bad is True
    assert settings.stored_size("train") == (72, 72, 36)
    assert settings.stored_size("test") == (64, 64, 32)


# --------------------------------------------------------------------------------------
# Fine-tuning reads it unchanged


def test_finetuning_loads_the_prepared_folder(tmp_path: Path) -> None:
    from genesis.tasks.finetune import FinetuneSettings, NccData

    _point_task(tmp_path)
    out = tmp_path / "out"
    prepare_classification(tmp_path / "task.csv", out, _settings(), 0, None)
    data = NccData(out, FinetuneSettings(cube_size=None, batch_size=2))
    assert data.epoch_size() == 6
    batches = list(data.batches(epoch_seed=1, steps=3, batch_size=2))
    assert len(batches) == 3
    for cubes, labels in batches:
        assert tuple(cubes.shape) == (2, 1, *SIZE) and tuple(labels.shape) == (2,)
        assert set(labels.tolist()) <= {0.0, 1.0}
    val_cubes, val_labels = data.validation()
    assert val_cubes.shape[0] == 3 and tuple(val_cubes.shape[-3:]) == SIZE
    assert val_labels.tolist() == [1.0, 0.0, 0.0]
