"""Reader-side helpers: split rules, resizing, patch sampling, and the prepare CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from target_task_data import make_ncc_task, tiny_settings

from genesis.cli import main
from genesis.errors import ConfigError, InputError
from genesis.tasks.prepared import (
    PatchSampler,
    load_ncc_split,
    outer_patch_size,
    resize_volume,
    sample_patches,
)
from genesis.tasks.splits import count_splits, fold_splits, index_splits


def test_index_splits_reproduce_the_paper_ranges() -> None:
    names = [f"liver_{i}" for i in range(131)]
    split = index_splits(names, (100, 15, 15))
    assert [n for n in names if split.get(n) == "train"] == names[:100]
    assert [n for n in names if split.get(n) == "val"] == names[100:115]
    assert [n for n in names if split.get(n) == "test"] == names[115:130]
    assert "liver_130" not in split
    assert count_splits(index_splits(names[:20], (100, 15, 15))) == {
        "train": 16,
        "val": 2,
        "test": 2,
    }


def test_fold_splits_follow_the_paper_scheme() -> None:
    names = [f"case_{i:03d}" for i in range(285)]
    split = fold_splits(names, 3, 3, 1 / 8, None, "bms")
    assert count_splits(split) == {"train": 166, "val": 24, "test": 95}
    assert all(split[n] == "test" for n in names[190:])
    shuffled = fold_splits(names, 3, 3, 1 / 8, np.random.default_rng(0), "bms")
    assert count_splits(shuffled) == count_splits(split) and shuffled != split
    with pytest.raises(ConfigError, match=r"bms\.test_fold must be in 1\.\.3"):
        fold_splits(names, 3, 4, 0.125, None, "bms")


def test_resize_nearest_matches_voxel_centre_rule_and_linear_keeps_constants() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 3, size=(9, 7, 5)).astype(np.uint8)
    resized = resize_volume(label, (4, 12, 3), "nearest")
    assert resized.dtype == np.uint8
    index = [
        np.floor((np.arange(m) + 0.5) * n / m).astype(int)
        for n, m in zip(label.shape, (4, 12, 3), strict=True)
    ]
    np.testing.assert_array_equal(resized, label[np.ix_(*index)])
    constant = np.full((40, 40, 6), 0.25, np.float32)
    np.testing.assert_allclose(resize_volume(constant, (16, 16, 9), "linear"), 0.25, atol=1e-6)
    ramp = np.broadcast_to(np.arange(8, dtype=np.float32)[:, None, None], (8, 4, 4))
    # Centre-aligned sampling: output voxel j of a halved ramp sits at input 2j + 0.5 (the
    # antialiasing filter is symmetric, so the interior of a ramp stays exact).
    halved = resize_volume(np.ascontiguousarray(ramp), (4, 4, 4), "linear")
    np.testing.assert_allclose(halved[1:3, 0, 0], [2.5, 4.5], atol=1e-5)
    doubled = resize_volume(np.ascontiguousarray(ramp), (16, 4, 4), "linear")
    np.testing.assert_allclose(doubled[1:15, 0, 0], (np.arange(1, 15) + 0.5) / 2 - 0.5, atol=1e-5)


def test_outer_patch_size_scales_the_paper_crop() -> None:
    assert outer_patch_size((64, 64, 32)) == (100, 100, 50)
    assert outer_patch_size((32, 32, 16)) == (50, 50, 25)


def _volume_with_blob() -> tuple[np.ndarray, np.ndarray]:
    image = np.random.default_rng(1).random((40, 36, 20)).astype(np.float32)
    label = np.zeros((40, 36, 20), np.uint8)
    label[30:33, 4:7, 15:17] = 1
    return image, label


def test_foreground_patches_contain_foreground_and_are_real_crops() -> None:
    image, label = _volume_with_blob()
    images, labels = sample_patches(
        [image], [label], 20, (8, 8, 4), np.random.default_rng(0), foreground_ratio=1.0
    )
    assert images.shape == (20, 8, 8, 4) and labels.dtype == np.uint8
    assert all(patch.any() for patch in labels)
    for patch in images:  # each patch is a crop of the image (values are unique)
        x, y, z = (int(v[0]) for v in np.nonzero(image == patch[0, 0, 0]))
        np.testing.assert_array_equal(patch, image[x : x + 8, y : y + 8, z : z + 4])
    _, background = sample_patches(
        [image], [label], 20, (8, 8, 4), np.random.default_rng(0), foreground_ratio=0.0
    )
    assert sum(patch.any() for patch in background) < 10


def test_sampling_is_seeded_and_two_stage_crops_stay_in_the_outer_window() -> None:
    image, label = _volume_with_blob()
    sampler = PatchSampler([image, image], [label, label], (8, 8, 4), 0.7, outer_size=(12, 12, 6))
    first = sampler.sample(6, np.random.default_rng(5))
    second = sampler.sample(6, np.random.default_rng(5))
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    with pytest.raises(ValueError, match="smaller than patch_size"):
        PatchSampler([image], [label], (8, 8, 4), outer_size=(6, 12, 6))


def test_small_volumes_are_zero_padded() -> None:
    image = np.ones((5, 5, 3), np.float32)
    label = np.ones((5, 5, 3), np.uint8)
    images, labels = sample_patches([image], [label], 3, (8, 8, 4), np.random.default_rng(0))
    assert images.shape == (3, 8, 8, 4)
    assert images.sum(axis=(1, 2, 3)).tolist() == [75.0] * 3
    assert labels.sum() == 3 * 75


def test_cli_prepare_reports_bad_settings_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        [
            "prepare",
            "lcs",
            "--data",
            str(tmp_path),
            "--output-dir",
            str(tmp_path / "o"),
            "--settings",
            json.dumps({"inplane": 64}),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "tasks.lcs.prepare: unknown key(s) inplane" in err and "Traceback" not in err
    code = main(["prepare", "lcs", "--data", str(tmp_path), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and "no liver data found" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train_cubes.npy", "train.npz", "val_cubes.npy"])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_prepared_arrays_name_the_file(tmp_path: Path, name: str, damage: str) -> None:
    task_dir = make_ncc_task(tmp_path)
    path = task_dir / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not an array" * 9)
    split = name.split("_")[0].removesuffix(".npz")
    for mmap in (True, False):
        with pytest.raises(InputError, match="truncated or corrupt") as error:
            load_ncc_split(task_dir, split, mmap=mmap)
        assert error.value.path == path and "\n" not in str(error.value)


def test_cli_finetune_reports_a_truncated_npy_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_dir = make_ncc_task(tmp_path)
    cubes = task_dir / "train_cubes.npy"
    cubes.write_bytes(cubes.read_bytes()[:-100])  # cut short, as by a full disk
    code = main(
        [
            "finetune",
            "--task",
            "ncc",
            "--data",
            str(task_dir),
            "--init",
            "scratch",
            "--output-dir",
            str(tmp_path / "run1"),
            "--seed",
            "0",
            "--settings",
            json.dumps(tiny_settings()),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    (line,) = err.strip().splitlines()
    assert str(cubes) in line and "truncated or corrupt" in line


def test_sampling_names_stay_importable_from_prepared() -> None:
    from genesis.tasks import prepared, sampling

    for name in sampling.__all__:
        assert getattr(prepared, name) is getattr(sampling, name)
