"""LCS and BMS preparation: layouts, binarisation, splits, bad input, restore to source."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from genesis.errors import ConfigError, InputError
from genesis.io import load_volume, save_nifti
from genesis.settings import from_mapping
from genesis.tasks.prepare_bms import BmsSettings, prepare_bms
from genesis.tasks.prepare_lcs import LcsSettings, prepare_lcs
from genesis.tasks.prepared import iter_cases, list_cases, restore_to_source

SHAPE = (24, 20, 10)
SPACING = (0.8, 0.9, 2.5)
ORIGIN = (100.0, -50.0, -200.0)
FLIPPED = np.diag([-1.0, -1.0, 1.0])


def _liver(seed: int, shape: tuple[int, ...] = SHAPE) -> tuple[np.ndarray, np.ndarray]:
    """CT-like volume (HU) with an ellipsoid liver (label 1) holding a tumour (label 2)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    centre = np.array(shape) / 2 + rng.uniform(-2, 2, 3)
    radii = np.array(shape) / np.array([3.0, 3.5, 2.5])
    liver = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    label = liver.astype(np.int16)
    label[tuple(np.round(centre).astype(int))] = 2
    image = np.where(liver, 60.0, -900.0) + rng.normal(0, 20, shape)
    image[0] = -1200.0  # outside the window: clipped
    return image.astype(np.int16), label


def _write(path: Path, data: np.ndarray, **geometry: object) -> None:
    save_nifti(
        path,
        data,
        spacing=geometry.get("spacing", SPACING),
        origin=geometry.get("origin", ORIGIN),
        direction=geometry.get("direction", FLIPPED),
    )


def _msd_liver(root: Path, n: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    cases = {}
    training = []
    for i in range(n):
        image, label = _liver(i)
        _write(root / "imagesTr" / f"liver_{i}.nii.gz", image)
        _write(root / "labelsTr" / f"liver_{i}.nii.gz", label.astype(np.uint8))
        training.append(
            {"image": f"./imagesTr/liver_{i}.nii.gz", "label": f"./labelsTr/liver_{i}.nii.gz"}
        )
        cases[f"liver_{i}"] = (image, label)
    (root / "dataset.json").write_text(json.dumps({"modality": {"0": "CT"}, "training": training}))
    return cases


def _lcs(**overrides: object) -> LcsSettings:
    return from_mapping(LcsSettings, {"inplane_size": 12, **overrides}, "tasks.lcs.prepare")


def _bms(**overrides: object) -> BmsSettings:
    return from_mapping(BmsSettings, overrides, "tasks.bms.prepare")


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def test_lcs_msd_split_binarisation_and_outputs(tmp_path: Path) -> None:
    truth = _msd_liver(tmp_path / "Task03_Liver", 12)
    out = tmp_path / "out"
    summary = prepare_lcs(tmp_path, out, _lcs(), seed=0)
    assert summary["layout"] == "msd_task03"
    # 12 volumes in the 100:15:15 proportions, in numeric index order (liver_10 after 9).
    split = _read_csv(out / "split.csv")
    assert [(r["case"], r["split"]) for r in split] == (
        [(f"liver_{i}", "train") for i in range(10)] + [("liver_10", "val"), ("liver_11", "test")]
    )
    assert split[0]["image"].endswith("imagesTr/liver_0.nii.gz")
    assert summary["counts"] == {"train": 10, "val": 1, "test": 1}
    cases = list(iter_cases(out, "train"))
    assert [c.name for c in cases] == [f"liver_{i}" for i in range(10)]
    for case in cases:
        label = truth[case.name][1]
        assert case.image.shape == case.label.shape == (12, 12, 10)
        assert case.image.dtype == np.float32 and case.label.dtype == np.uint8
        assert case.image.min() >= 0.0 and case.image.max() <= 1.0
        assert set(np.unique(case.label)) == {0, 1}  # labels 1 and 2 -> 1
        # Nearest neighbour by voxel centres: output j takes input floor((j + 0.5) * in/out).
        x, y = (np.floor((np.arange(12) + 0.5) * n / 12).astype(int) for n in SHAPE[:2])
        np.testing.assert_array_equal(case.label, (label > 0)[np.ix_(x, y, np.arange(10))])
        assert case.geometry["source_shape"] == list(SHAPE)
    row = list_cases(out, "val")[0]
    assert row["orig_shape"] == "24x20x10" and row["prepared_shape"] == "12x12x10"


def test_lcs_window_maps_hu_to_unit_interval(tmp_path: Path) -> None:
    _msd_liver(tmp_path, 3)
    out = tmp_path / "out"
    prepare_lcs(tmp_path, out, _lcs(inplane_size=None), seed=0)
    case = next(iter_cases(out, "train"))
    image = load_volume(case.source_image).data
    expected = (np.clip(image, -1000, 1000) + 1000) / 2000
    np.testing.assert_allclose(case.image, expected, atol=3e-4)  # float16 storage


def test_restore_to_source_round_trip(tmp_path: Path) -> None:
    truth = _msd_liver(tmp_path, 3)
    out = tmp_path / "out"
    prepare_lcs(tmp_path, out, _lcs(inplane_size=16, z_scale=1.5), seed=0)
    for case in iter_cases(out, None):
        assert case.label.shape == (16, 16, 15)
        restored, geometry = restore_to_source(case.label, case)
        source = load_volume(case.source_label)
        assert restored.shape == source.data.shape and restored.dtype == np.uint8
        np.testing.assert_allclose(geometry.spacing, source.spacing, rtol=1e-6)
        np.testing.assert_allclose(geometry.origin, source.origin, atol=1e-4)
        np.testing.assert_allclose(geometry.direction, source.direction, atol=1e-6)
        agreement = np.mean(restored == (truth[case.name][1] > 0))
        assert agreement > 0.9
        # Probability maps are resized linearly; thresholded they agree as well.
        probabilities, _ = restore_to_source(case.label.astype(np.float32), case)
        assert probabilities.dtype == np.float32 and probabilities.shape == restored.shape
        assert np.mean((probabilities >= 0.5) == (truth[case.name][1] > 0)) > 0.9
        # Saved with the returned geometry, the mask overlays the source image exactly.
        save_nifti(tmp_path / f"{case.name}_mask.nii.gz", restored, like=geometry)
        mask = load_volume(tmp_path / f"{case.name}_mask.nii.gz")
        np.testing.assert_allclose(mask.affine, source.affine, atol=1e-4)
    with pytest.raises(ValueError, match="prepared grid"):
        restore_to_source(np.zeros((3, 3, 3), np.uint8), case)


def test_lits_layout_is_detected(tmp_path: Path) -> None:
    for i in (0, 1, 2, 10):
        image, label = _liver(i)
        batch = tmp_path / f"Training Batch {1 + i // 10}"
        _write(batch / f"volume-{i}.nii", image)
        _write(batch / f"segmentation-{i}.nii", label.astype(np.uint8))
    summary = prepare_lcs(tmp_path, tmp_path / "out", _lcs(split_counts=[2, 1, 1]), seed=0)
    assert summary["layout"] == "lits"
    split = {r["case"]: r["split"] for r in _read_csv(tmp_path / "out" / "split.csv")}
    assert split == {"liver_0": "train", "liver_1": "train", "liver_2": "val", "liver_10": "test"}
    (tmp_path / "Training Batch 2" / "segmentation-10.nii").unlink()
    with pytest.raises(InputError, match="no segmentation-10"):
        prepare_lcs(tmp_path, tmp_path / "out2", _lcs(), seed=0)


def test_unknown_layout_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no liver data found"):
        prepare_lcs(tmp_path, tmp_path / "out", _lcs(), seed=0)
    with pytest.raises(InputError, match="no brain tumour data found"):
        prepare_bms(tmp_path, tmp_path / "out", _bms(), seed=0)


@pytest.mark.parametrize(
    "problem, message",
    [
        ("shape", r"liver_1: label shape \(24, 20, 9\) does not match image shape"),
        ("geometry", r"liver_1: label geometry differs from the image .* by up to 1 mm"),
        ("empty", r"liver_1: label volume is empty .* a train case needs foreground"),
        ("values", r"value\(s\) 7 outside the expected \[0, 1, 2\]"),
    ],
)
def test_bad_case_is_an_error_or_a_recorded_skip(
    tmp_path: Path, problem: str, message: str
) -> None:
    _msd_liver(tmp_path, 6)
    label_path = tmp_path / "labelsTr" / "liver_1.nii.gz"
    _, label = _liver(1)
    if problem == "shape":
        _write(label_path, label[:, :, :9].astype(np.uint8))
    elif problem == "geometry":
        _write(label_path, label.astype(np.uint8), origin=(101.0, -50.0, -200.0))
    elif problem == "empty":
        _write(label_path, np.zeros(SHAPE, np.uint8))
    else:
        label[0, 0, 0] = 7
        _write(label_path, label.astype(np.uint8))
    with pytest.raises(InputError, match=message) as error:
        prepare_lcs(tmp_path, tmp_path / "strict", _lcs(skip_bad=False), seed=0)
    assert error.value.path == label_path
    summary = prepare_lcs(tmp_path, tmp_path / "lenient", _lcs(), seed=0)
    assert summary["n_skipped"] == 1 and summary["skipped"][0]["case"] == "liver_1"
    assert summary["counts"]["train"] == 3
    report = json.loads((tmp_path / "lenient" / "prepare.json").read_text())
    assert report["skipped"][0]["split"] == "train"
    assert [c["case"] for c in list_cases(tmp_path / "lenient", "train")] == [
        "liver_0",
        "liver_2",
        "liver_3",
    ]


def test_nan_image_is_a_bad_case(tmp_path: Path) -> None:
    _msd_liver(tmp_path, 4)
    image, _ = _liver(0)
    broken = image.astype(np.float32)
    broken[3, 3, 3] = np.nan
    _write(tmp_path / "imagesTr" / "liver_0.nii.gz", broken)
    with pytest.raises(InputError, match="NaN"):
        prepare_lcs(tmp_path, tmp_path / "out", _lcs(skip_bad=False), seed=0)


def test_every_case_of_a_split_bad_is_an_error(tmp_path: Path) -> None:
    _msd_liver(tmp_path, 3)
    _write(tmp_path / "labelsTr" / "liver_1.nii.gz", np.zeros(SHAPE, np.uint8))
    with pytest.raises(InputError, match=r"no usable case in split\(s\) val"):
        prepare_lcs(tmp_path, tmp_path / "out", _lcs(), seed=0)


def test_pinned_split_is_used_and_checked(tmp_path: Path) -> None:
    _msd_liver(tmp_path, 5)
    pinned = tmp_path / "pinned.csv"
    pinned.write_text(
        "case,split,image,label\nliver_4,train,x,y\nliver_3,train,x,y\n"
        "liver_0,val,x,y\nliver_1,test,x,y\n"
    )
    summary = prepare_lcs(tmp_path, tmp_path / "out", _lcs(), seed=0, split_file=pinned)
    assert summary["counts"] == {"train": 2, "val": 1, "test": 1}
    assert [c["case"] for c in list_cases(tmp_path / "out", "train")] == ["liver_3", "liver_4"]
    pinned.write_text("case,split\nliver_9,train\n")
    with pytest.raises(InputError, match="liver_9 are not in the data"):
        prepare_lcs(tmp_path, tmp_path / "out", _lcs(), seed=0, split_file=pinned)
    pinned.write_text("case,split\nliver_0,training\n")
    with pytest.raises(InputError, match="split 'training'"):
        prepare_lcs(tmp_path, tmp_path / "out", _lcs(), seed=0, split_file=pinned)


# --------------------------------------------------------------------------------------
# BMS


def _brain(seed: int, shape: tuple[int, ...] = (20, 22, 12)) -> tuple[np.ndarray, np.ndarray]:
    """Four MRI channels (brain ellipsoid on a zero background) and a tumour label."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    centre = np.array(shape) / 2
    brain = (((grid - centre) / (np.array(shape) / 2.8)) ** 2).sum(-1) <= 1
    tumour_centre = centre + rng.uniform(-1.5, 1.5, 3)
    tumour = np.linalg.norm(grid - tumour_centre, axis=-1) <= 2.5
    label = np.zeros(shape, np.int16)
    label[tumour] = 2
    label[np.linalg.norm(grid - tumour_centre, axis=-1) <= 1.2] = 1
    channels = [
        np.where(brain, 300.0 * (c + 1), 0.0)
        + np.where(tumour, 500.0, 0.0)
        + brain * rng.uniform(0, 50, shape)
        for c in range(4)
    ]
    return np.stack(channels, axis=-1).astype(np.float32), label


def test_bms_msd_channel_folds_and_minmax(tmp_path: Path) -> None:
    root = tmp_path / "Task01_BrainTumour"
    training, truth = [], {}
    for i in range(9):
        image, label = _brain(i)
        label[label == 1] = 3
        _write(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz", image)
        _write(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz", label.astype(np.uint8))
        training.append(
            {
                "image": f"./imagesTr/BRATS_{i:03d}.nii.gz",
                "label": f"./labelsTr/BRATS_{i:03d}.nii.gz",
            }
        )
        truth[f"BRATS_{i:03d}"] = (image, label)
    (root / "dataset.json").write_text(
        json.dumps(
            {"modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}, "training": training}
        )
    )
    out = tmp_path / "out"
    summary = prepare_bms(tmp_path, out, _bms(modality="t2"), seed=4)
    assert summary["layout"] == "msd_task01" and summary["modality"] == "T2w"
    assert summary["shuffled"] is True
    assert summary["counts"] == {"train": 5, "val": 1, "test": 3}  # folds of 3; 6 at 7:1
    for case in iter_cases(out, None):
        image, label = truth[case.name]
        channel = image[..., 3]
        expected = (channel - channel.min()) / (channel.max() - channel.min())
        np.testing.assert_allclose(case.image, expected, atol=3e-4)
        np.testing.assert_array_equal(case.label, label > 0)  # whole tumour
    again = tmp_path / "again"
    prepare_bms(tmp_path, again, _bms(modality="t2"), seed=4)
    assert (again / "split.csv").read_text() == (out / "split.csv").read_text()
    prepare_bms(tmp_path, tmp_path / "other", _bms(modality="t2"), seed=5)
    assert (tmp_path / "other" / "split.csv").read_text() != (out / "split.csv").read_text()


def _brats(root: Path, names: list[tuple[str, str]]) -> dict[str, np.ndarray]:
    labels = {}
    for grade, name in names:
        image, label = _brain(len(labels))
        label[label == 2] = 4
        folder = root / grade / name
        for c, suffix in enumerate(("flair", "t1", "t1ce", "t2")):
            _write(folder / f"{name}_{suffix}.nii.gz", image[..., c])
        _write(folder / f"{name}_seg.nii.gz", label.astype(np.uint8))
        labels[name] = label
    return labels


def test_brats2018_layout_crop_and_restore(tmp_path: Path) -> None:
    names = [
        ("HGG", "Brats18_2013_2_1"),
        ("HGG", "Brats18_CBICA_AAB_1"),
        ("LGG", "Brats18_2013_0_1"),
        ("LGG", "Brats18_TCIA09_141_1"),
        ("HGG", "Brats18_TCIA01_150_1"),
        ("LGG", "Brats18_2013_9_1"),
    ]
    labels = _brats(tmp_path / "MICCAI_BraTS_2018_Data_Training", names)
    out = tmp_path / "out"
    summary = prepare_bms(tmp_path, out, _bms(crop_to_brain=True, crop_margin=1), seed=0)
    assert summary["layout"] == "brats2018" and summary["shuffled"] is False
    # Not shuffled: sorted names cut into 3 folds of 2; the last fold is the test set.
    split = {r["case"]: r["split"] for r in _read_csv(out / "split.csv")}
    assert split == {
        "Brats18_2013_0_1": "train",
        "Brats18_2013_2_1": "train",
        "Brats18_2013_9_1": "train",
        "Brats18_CBICA_AAB_1": "val",
        "Brats18_TCIA01_150_1": "test",
        "Brats18_TCIA09_141_1": "test",
    }
    for case in iter_cases(out, None):
        assert case.source_image.name.endswith("_flair.nii.gz")
        assert all(
            a < b for a, b in zip(case.image.shape, labels[case.name].shape, strict=True)
        )  # cropped to the brain
        restored, _ = restore_to_source(case.label, case)
        np.testing.assert_array_equal(restored, labels[case.name] > 0)  # no resize: exact


def test_brats_labels_outside_1_2_4_are_rejected(tmp_path: Path) -> None:
    labels = _brats(tmp_path, [("HGG", f"Brats18_X_{i}") for i in range(3)])
    label = labels["Brats18_X_0"].copy()
    label[label == 4] = 3
    _write(tmp_path / "HGG" / "Brats18_X_0" / "Brats18_X_0_seg.nii.gz", label.astype(np.uint8))
    with pytest.raises(InputError, match=r"value\(s\) 3 outside the expected \[0, 1, 2, 4\]"):
        prepare_bms(tmp_path, tmp_path / "out", _bms(skip_bad=False), seed=0)


def test_bms_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="modality must be one of"):
        _bms(modality="PD")
    with pytest.raises(ConfigError, match=r"tasks\.bms\.prepare\.folds must be an integer"):
        _bms(folds="3")
