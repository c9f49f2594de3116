"""genesis cubes end to end on tiny volumes: shards, manifests, inputs, bad input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from genesis.cli import main
from genesis.cubes.extract import CubeSettings, EmptyShardError, extract_to_shard
from genesis.cubes.inputs import discover_scans
from genesis.cubes.intensity import ct_window, mri_window
from genesis.cubes.shards import open_shard, read_manifest
from genesis.cubes.tissue_filter import reference_tissue_score
from genesis.errors import InputError
from genesis.io import save_metaimage, save_nifti

TINY = {"cube_size": [8, 8, 4], "border": [2, 2, 1], "min_slices": 9, "cubes_per_scan": 4}
SETTINGS = CubeSettings(
    recipe="paper", cube_size=(8, 8, 4), border=(2, 2, 1), min_slices=9, cubes_per_scan=4
)
SPACING = (0.8, 0.8, 2.0)


def chest(seed: int, shape: tuple[int, int, int] = (28, 24, 16)) -> np.ndarray:
    """Lung (about -850 HU) with a block of soft tissue, as float32 HU."""
    rng = np.random.default_rng(seed)
    hu = np.full(shape, -850.0, np.float32)
    hu[shape[0] // 2 :, :, :] = 40.0
    return np.round(hu + rng.normal(0, 60, shape)).astype(np.float32)


def write_dicom(folder: Path, hu: np.ndarray) -> None:
    folder.mkdir(parents=True)
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    writer.SetImageIO("GDCMImageIO")
    uid = "1.2.826.0.1.3680043.2.1125.7"
    for z in range(hu.shape[2]):
        image = sitk.GetImageFromArray(hu[:, :, z].T.astype(np.int16)[None])
        position = (0.0, 0.0, z * SPACING[2])
        image.SetSpacing(SPACING)
        image.SetOrigin(position)
        tags = {
            "0008|0060": "CT",
            "0020|000d": f"{uid}.0",
            "0020|000e": uid,
            "0008|0018": f"{uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"IM{z:04d}"))  # no suffix: found by the DICM preamble
        writer.Execute(image)


@pytest.fixture
def subset(tmp_path: Path) -> Path:
    folder = tmp_path / "subset0"
    folder.mkdir()
    for k in range(3):
        save_metaimage(
            folder / f"1.2.{k}.mhd",
            chest(k).astype(np.int16),
            spacing=SPACING,
            origin=(0.0, 0.0, 0.0),
        )
    return folder


def run(inputs: list[Path], output: Path, **kw: object) -> None:
    options = {"split": "train", "modality": "ct", "seed": 3, "settings": SETTINGS} | kw
    extract_to_shard(discover_scans(inputs, split=str(options["split"])), output, **options)


def test_shard_and_manifest_round_trip(subset: Path, tmp_path: Path) -> None:
    output = tmp_path / "cubes" / "subset0.npy"
    run([subset], output)
    shard = open_shard(output)
    rows = read_manifest(output.with_suffix(".csv"))
    assert shard.dtype == np.float16 and shard.shape == (12, 8, 8, 4)
    assert list(rows[0]) == [
        "index",
        "source",
        "split",
        "x",
        "y",
        "z",
        "scale",
        "status",
        "reason",
        "modality",
        "border",
        "min_slices",
    ]
    assert {(r["modality"], r["border"], r["min_slices"]) for r in rows} == {("ct", "2/2/1", "9")}
    assert [int(r["index"]) for r in rows] == list(range(12))
    assert {r["source"] for r in rows} == {f"subset0/1.2.{k}.mhd" for k in range(3)}
    assert {(r["split"], r["scale"], r["status"]) for r in rows} == {("train", "4", "ok")}
    limit = 0.15 * 8 * 8 * 4
    for row in rows:
        scan = ct_window(chest(int(row["source"][-5])))
        x, y, z = int(row["x"]), int(row["y"]), int(row["z"])
        np.testing.assert_array_equal(
            shard[int(row["index"])], scan[x : x + 8, y : y + 8, z : z + 4].astype(np.float16)
        )
        window = scan[x : x + 8, y : y + 8, z : z + 7]
        assert reference_tissue_score(window, SETTINGS.tissue_threshold, 4) <= limit
    assert not [p for p in output.parent.iterdir() if p.name.startswith(".")]


def test_same_seed_same_bytes_and_scans_are_independent(subset: Path, tmp_path: Path) -> None:
    run([subset], tmp_path / "a.npy")
    run([subset], tmp_path / "b.npy")
    run([subset], tmp_path / "c.npy", seed=4)
    assert (tmp_path / "a.npy").read_bytes() == (tmp_path / "b.npy").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert (tmp_path / "a.npy").read_bytes() != (tmp_path / "c.npy").read_bytes()
    # A scan's cubes do not depend on the other scans in the shard.
    (subset / "1.2.0.mhd").unlink()
    run([subset], tmp_path / "d.npy")
    np.testing.assert_array_equal(
        open_shard(tmp_path / "d.npy"), open_shard(tmp_path / "a.npy")[4:]
    )


def test_mixed_folder(tmp_path: Path) -> None:
    mixed = tmp_path / "mine"
    mixed.mkdir()
    save_metaimage(mixed / "a_scan.mhd", chest(10), spacing=SPACING, origin=(0.0, 0.0, 0.0))
    save_nifti(mixed / "b_scan.nii.gz", chest(11), spacing=SPACING, origin=(0.0, 0.0, 0.0))
    write_dicom(mixed / "c_series", chest(12))
    save_nifti(
        mixed / "d_small.nii", chest(13, (28, 24, 6)), spacing=SPACING, origin=(0.0, 0.0, 0.0)
    )
    (mixed / "notes.txt").write_text("not a scan")
    (mixed / "labelsTr").mkdir()
    save_nifti(
        mixed / "labelsTr" / "a_label.nii.gz",
        np.zeros((28, 24, 16), np.uint8),
        spacing=SPACING,
        origin=(0.0, 0.0, 0.0),
    )
    output = tmp_path / "own_train.npy"
    assert (
        main(
            [
                "cubes",
                "--inputs",
                str(mixed),
                "--output",
                str(output),
                "--modality",
                "auto",
                "--settings",
                json.dumps(TINY),
            ]
        )
        == 0
    )
    rows = read_manifest(output.with_suffix(".csv"))
    by_source: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert list(by_source) == [
        "mine/a_scan.mhd",
        "mine/b_scan.nii.gz",
        "mine/c_series",
        "mine/d_small.nii",
    ]
    assert all(len(by_source[s]) == 4 for s in list(by_source)[:3])
    [small] = by_source["mine/d_small.nii"]  # recipe auto: only a window that does not fit
    assert small["status"] == "skipped"
    assert "28x24x6 is smaller than one window 8x8x7" in small["reason"]
    assert "set a smaller cube_size" in small["reason"]
    assert open_shard(output).shape == (12, 8, 8, 4)


def test_too_small_in_plane_is_skipped_with_reason(tmp_path: Path) -> None:
    save_nifti(
        tmp_path / "narrow.nii.gz", chest(1, (10, 24, 16)), spacing=SPACING, origin=(0.0, 0.0, 0.0)
    )
    run([tmp_path / "narrow.nii.gz"], tmp_path / "out.npy", allow_empty=True)
    [row] = read_manifest(tmp_path / "out.csv")
    assert row["status"] == "skipped"
    assert "10x24x16 is too small" in row["reason"] and "12x12x9" in row["reason"]
    assert "8x8x7 windows: cube z + 3 extra slices" in row["reason"]
    assert "cubes.recipe: auto" in row["reason"]
    assert open_shard(tmp_path / "out.npy").shape == (0, 8, 8, 4)


def test_all_tissue_scan_gives_up_after_the_budget(tmp_path: Path) -> None:
    save_nifti(
        tmp_path / "solid.nii.gz",
        np.full((28, 24, 16), 40.0, np.float32),
        spacing=SPACING,
        origin=(0.0, 0.0, 0.0),
    )
    with pytest.raises(EmptyShardError, match=r"cubes\.ct_filter: none"):
        run([tmp_path / "solid.nii.gz"], tmp_path / "out.npy")
    assert not (tmp_path / "out.npy").exists() and not (tmp_path / "out.csv").exists()
    [row] = read_manifest(tmp_path / "out.failed.csv")
    assert row["reason"].startswith("no window passed the ct filter in 200 attempts (")
    assert "cubes.ct_filter: none" in row["reason"]


def test_nan_scan_errors_or_is_skipped(
    subset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = chest(5)
    bad[3, 4, 5] = np.nan
    save_nifti(subset / "1.2.9.nii.gz", bad, spacing=SPACING, origin=(0.0, 0.0, 0.0))
    output = tmp_path / "out.npy"
    args = [
        "cubes",
        "--inputs",
        str(subset),
        "--output",
        str(output),
        "--settings",
        json.dumps(TINY),
    ]
    assert main([*args, "--no-skip-bad"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "1.2.9.nii.gz" in err[0] and "NaN" in err[0]
    assert not output.exists() and not output.with_suffix(".csv").exists()
    rows = read_manifest(output.with_suffix(".failed.csv"))  # records where it stopped
    assert rows[-1]["source"] == "subset0/1.2.9.nii.gz" and rows[-1]["status"] == "skipped"
    assert main(args) == 0  # skip_bad is the default
    assert not output.with_suffix(".failed.csv").exists()
    rows = read_manifest(output.with_suffix(".csv"))
    [skipped] = [r for r in rows if r["status"] == "skipped"]
    assert skipped["source"] == "subset0/1.2.9.nii.gz" and "NaN" in skipped["reason"]
    assert open_shard(output).shape == (12, 8, 8, 4)


def test_unreadable_file_with_skip_bad(subset: Path, tmp_path: Path) -> None:
    (subset / "1.2.5.mhd").write_text("garbage\n")
    run([subset], tmp_path / "out.npy", skip_bad=True)
    rows = read_manifest(tmp_path / "out.csv")
    assert [r["status"] for r in rows if r["source"].endswith("1.2.5.mhd")] == ["skipped"]


def test_empty_inputs_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: holds no scans"):
        discover_scans([tmp_path / "empty"])
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match=r"empty\.csv: is empty"):
        discover_scans([tmp_path / "empty.csv"])
    (tmp_path / "header.csv").write_text("path,split\n")
    with pytest.raises(InputError, match=r"header\.csv: is empty"):
        discover_scans([tmp_path / "header.csv"])
    (tmp_path / "nopath.csv").write_text("file\na.nii\n")
    with pytest.raises(InputError, match="has no 'path' column"):
        discover_scans([tmp_path / "nopath.csv"])
    with pytest.raises(InputError, match="does not exist"):
        discover_scans([tmp_path / "missing"])


def test_csv_list_with_split_and_modality(tmp_path: Path) -> None:
    save_nifti(tmp_path / "ct.nii.gz", chest(1), spacing=SPACING, origin=(0.0, 0.0, 0.0))
    mri = np.abs(np.random.default_rng(2).normal(300, 80, (28, 24, 16, 2))).astype(np.float32)
    save_nifti(tmp_path / "mr.nii.gz", mri, spacing=SPACING, origin=(0.0, 0.0, 0.0))
    (tmp_path / "list.csv").write_text(
        "path,modality,split\nct.nii.gz,ct,train\nmr.nii.gz,,train\nct.nii.gz,ct,val\n"
    )
    scans = discover_scans([tmp_path / "list.csv"], split="train")
    assert [(s.source, s.modality) for s in scans] == [("ct.nii.gz", "ct"), ("mr.nii.gz", None)]
    output = tmp_path / "own_train.npy"
    extract_to_shard(scans, output, split="train", modality="auto", seed=0, settings=SETTINGS)
    shard = open_shard(output)
    rows = read_manifest(output.with_suffix(".csv"))
    mr_rows = [r for r in rows if r["source"] == "mr.nii.gz"]
    assert len(mr_rows) == 4
    scaled = mri_window(mri[..., 0].copy())
    for row in mr_rows:
        x, y, z = int(row["x"]), int(row["y"]), int(row["z"])
        np.testing.assert_array_equal(
            shard[int(row["index"])], scaled[x : x + 8, y : y + 8, z : z + 4].astype(np.float16)
        )
    with pytest.raises(InputError, match=r"no rows with split 'test'"):
        discover_scans([tmp_path / "list.csv"], split="test")
    (tmp_path / "bad.csv").write_text("path,modality\nct.nii.gz,pet\n")
    with pytest.raises(InputError, match="line 2: modality must be one of"):
        discover_scans([tmp_path / "bad.csv"])


def test_auto_modality_reads_dataset_json(tmp_path: Path) -> None:
    from genesis.cubes.intensity import guess_modality

    task = tmp_path / "Task01" / "imagesTr"
    task.mkdir(parents=True)
    ct_like = chest(0)
    assert guess_modality(ct_like, task / "x.nii.gz", 0.05) == "ct"
    assert guess_modality(np.abs(ct_like), task / "x.nii.gz", 0.05) == "mri"
    (task.parent / "dataset.json").write_text(json.dumps({"modality": {"0": "FLAIR"}}))
    assert guess_modality(ct_like, task / "x.nii.gz", 0.05) == "mri"


def test_bad_settings_name_the_key() -> None:
    from genesis.errors import ConfigError
    from genesis.settings import from_mapping

    with pytest.raises(ConfigError, match=r"cubes\.extra_slices must be an integer >= 2, got 1"):
        from_mapping(CubeSettings, {"extra_slices": 1}, "cubes")
    with pytest.raises(ConfigError, match=r"cubes\.cube_size must have 3 items"):
        from_mapping(CubeSettings, {"cube_size": [64, 64]}, "cubes")


# --- no silent failures: empty shards, failed runs, the pair ------------------------------


def test_no_cubes_at_all_fails_with_the_reasons_counted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scans = tmp_path / "scans"
    scans.mkdir()
    for k in range(2):
        save_nifti(
            scans / f"thin{k}.nii.gz",
            chest(k, (28, 24, 8)),
            spacing=SPACING,
            origin=(0.0, 0.0, 0.0),
        )
    save_nifti(
        scans / "solid.nii.gz",
        np.full((28, 24, 16), 40.0, np.float32),
        spacing=SPACING,
        origin=(0.0, 0.0, 0.0),
    )
    (scans / "broken.nii.gz").write_bytes(b"not a volume")
    output = tmp_path / "cubes" / "train.npy"
    args = [
        "cubes",
        "--inputs",
        str(scans),
        "--output",
        str(output),
        "--modality",
        "ct",
        "--settings",
        json.dumps({**TINY, "recipe": "paper"}),
    ]
    assert main(args) == 2
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"genesis cubes: error: {output}: 0 cubes from 4 scans: ")
    assert (
        "2 with fewer slices than cubes.min_slices (set cubes.min_slices, or cubes.recipe: auto)"
    ) in line
    assert "1 where no window passed the CT tissue filter" in line
    assert "cubes.ct_filter: none" in line and "1 unreadable or with NaNs" in line
    assert "train.failed.csv" in line and "--allow-empty" in line
    assert sorted(p.name for p in output.parent.iterdir()) == ["train.failed.csv"]
    assert len(read_manifest(output.with_suffix(".failed.csv"))) == 4
    assert main([*args, "--allow-empty"]) == 0
    assert open_shard(output).shape == (0, 8, 8, 4)
    assert sorted(p.name for p in output.parent.iterdir()) == ["train.csv", "train.npy"]


def test_a_failed_run_leaves_the_old_pair_untouched(subset: Path, tmp_path: Path) -> None:
    output = tmp_path / "out.npy"
    run([subset], output)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    bad = chest(5)
    bad[3, 4, 5] = np.nan
    save_nifti(subset / "1.2.9.nii.gz", bad, spacing=SPACING, origin=(0.0, 0.0, 0.0))
    with pytest.raises(InputError, match="NaN"):
        run([subset], output, seed=8)
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after.pop("out.failed.csv") and after == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    run([subset], output, seed=8, skip_bad=True)
    assert not (tmp_path / "out.failed.csv").exists()
    assert open_shard(output).shape == (12, 8, 8, 4)


def test_a_kill_between_the_renames_leaves_no_stale_manifest(
    subset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from genesis import atomic
    from genesis.train.shards import check_shard

    output = tmp_path / "out.npy"
    settings = replace(SETTINGS, cube_size=(16, 16, 8), ct_filter="none")  # U-Net sized
    run([subset], output, settings=replace(settings, cubes_per_scan=2))
    real_replace = atomic.os.replace
    renamed: list[Path] = []

    def killed_after_the_shard(src: str | Path, dst: str | Path) -> None:
        if renamed:
            raise KeyboardInterrupt
        real_replace(src, dst)
        renamed.append(Path(dst))

    monkeypatch.setattr(atomic.os, "replace", killed_after_the_shard)
    with pytest.raises(KeyboardInterrupt):
        run([subset], output, settings=settings)
    monkeypatch.undo()
    assert renamed == [output] and not output.with_suffix(".csv").exists()
    assert check_shard(output).n_cubes == 12  # the new shard, without a manifest
    rows = "index,source,split,x,y,z,scale,status,reason\n" + "0,a,train,0,0,0,4,ok,\n" * 3
    output.with_suffix(".csv").write_text(rows, encoding="utf-8")  # another run's
    with pytest.raises(InputError, match=r"holds 12 cubes but its manifest out\.csv lists 3"):
        check_shard(output)
