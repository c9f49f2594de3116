"""Round trips through every reader, and the bad-input cases that must give InputError."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from genesis.errors import InputError
from genesis.io import Volume, load_volume, save_metaimage, save_nifti

SPACING = (0.7, 0.8, 2.5)
ORIGIN = (-170.0, -190.0, -350.0)
FLIPPED = np.diag([-1.0, -1.0, 1.0])


@pytest.fixture
def ct() -> np.ndarray:
    """A small asymmetric int16 volume, so any axis swap or flip changes it."""
    rng = np.random.default_rng(3)
    return rng.integers(-1000, 1000, size=(6, 5, 4)).astype(np.int16)


def _assert_geometry(volume: Volume, direction: np.ndarray) -> None:
    np.testing.assert_allclose(volume.spacing, SPACING, rtol=1e-6)
    np.testing.assert_allclose(volume.origin, ORIGIN, atol=1e-4)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-6)


@pytest.mark.parametrize("direction", [np.eye(3), FLIPPED])
def test_metaimage_round_trip(tmp_path: Path, ct: np.ndarray, direction: np.ndarray) -> None:
    path = tmp_path / "scan.mhd"
    save_metaimage(path, ct, spacing=SPACING, origin=ORIGIN, direction=direction)
    assert "ElementType = MET_SHORT" in path.read_text()
    assert (tmp_path / "scan.raw").stat().st_size == ct.size * 2
    volume = load_volume(path)
    assert volume.data.dtype == np.float32
    np.testing.assert_array_equal(volume.data, ct)
    _assert_geometry(volume, direction)
    # SimpleITK agrees on the voxel order: its array is (z, y, x).
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), ct.T)


def test_metaimage_matches_simpleitk_direction_order(tmp_path: Path, ct: np.ndarray) -> None:
    """A non-symmetric direction catches a transposed TransformMatrix."""
    angle = np.deg2rad(30)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    path = tmp_path / "rotated.mhd"
    save_metaimage(path, ct, spacing=SPACING, origin=ORIGIN, direction=rotation)
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), rotation, atol=1e-9)
    np.testing.assert_allclose(load_volume(path).direction, rotation, atol=1e-9)


def test_mha_round_trip(tmp_path: Path, ct: np.ndarray) -> None:
    image = sitk.GetImageFromArray(ct.T.copy())
    image.SetSpacing(SPACING)
    image.SetOrigin(ORIGIN)
    image.SetDirection(FLIPPED.ravel().tolist())
    path = tmp_path / "scan.mha"
    sitk.WriteImage(image, str(path))
    volume = load_volume(path, ndim=3)
    np.testing.assert_array_equal(volume.data, ct)
    _assert_geometry(volume, FLIPPED)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.int16, np.uint8, np.float32])
def test_nifti_3d_round_trip(tmp_path: Path, ct: np.ndarray, suffix: str, dtype: type) -> None:
    data = np.abs(ct).astype(dtype) if dtype is np.uint8 else ct.astype(dtype)
    path = tmp_path / f"scan{suffix}"
    save_nifti(path, data, spacing=SPACING, origin=ORIGIN, direction=FLIPPED)
    assert nib.load(str(path)).get_data_dtype() == np.dtype(dtype)
    volume = load_volume(path)
    np.testing.assert_array_equal(volume.data, data.astype(np.float32))
    _assert_geometry(volume, FLIPPED)
    # The stored affine is RAS: LPS diag(-1, -1, 1) is RAS identity.
    np.testing.assert_allclose(nib.load(str(path)).affine[:3, :3], np.diag(SPACING), rtol=1e-6)
    # SimpleITK reads the same LPS geometry from our file.
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetOrigin(), ORIGIN, atol=1e-4)
    np.testing.assert_allclose(np.reshape(image.GetDirection(), (3, 3)), FLIPPED, atol=1e-6)


def test_nifti_4d_round_trip_and_ndim_check(tmp_path: Path) -> None:
    data = np.random.default_rng(0).random((5, 4, 3, 4), dtype=np.float32)
    reference = Volume(data, SPACING, ORIGIN, np.eye(3))
    path = tmp_path / "mri.nii.gz"
    save_nifti(path, data, like=reference)
    volume = load_volume(path, ndim=4)
    np.testing.assert_array_equal(volume.data, data)
    np.testing.assert_allclose(volume.ras_affine, reference.ras_affine, atol=1e-4)
    with pytest.raises(InputError, match=r"mri\.nii\.gz.*expected a 3D volume"):
        load_volume(path, ndim=3)
    save_nifti(tmp_path / "ct.nii", data[..., 0], like=reference)
    with pytest.raises(InputError, match=r"ct\.nii.*expected a 4D volume"):
        load_volume(tmp_path / "ct.nii", ndim=4)


def _write_dicom_series(folder: Path, ct: np.ndarray) -> None:
    """One file per slice with the position tags a scanner writes."""
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series_uid = "1.2.826.0.1.3680043.2.1125.1"
    for z in range(ct.shape[2]):
        image = sitk.GetImageFromArray(ct[:, :, z].T.copy()[None])  # (1, y, x)
        position = (ORIGIN[0], ORIGIN[1], ORIGIN[2] + z * SPACING[2])
        image.SetSpacing(SPACING)
        image.SetOrigin(position)
        tags = {
            "0008|0060": "CT",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.0",
            "0020|000e": series_uid,
            "0008|0018": f"{series_uid}.{z + 1}",
            "0020|0013": str(z + 1),
            "0020|0032": "\\".join(f"{v:.4f}" for v in position),
            "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{SPACING[1]}\\{SPACING[0]}",
            "0018|0050": str(SPACING[2]),
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{z:03d}.dcm"))
        writer.Execute(image)


def test_dicom_series_round_trip(tmp_path: Path, ct: np.ndarray) -> None:
    folder = tmp_path / "series"
    _write_dicom_series(folder, ct)
    volume = load_volume(folder, ndim=3)
    np.testing.assert_array_equal(volume.data, ct)
    _assert_geometry(volume, np.eye(3))


# --- bad input -------------------------------------------------------------------------


def test_unknown_suffix_and_missing_file(tmp_path: Path) -> None:
    odd = tmp_path / "scan.png"
    odd.write_bytes(b"\x89PNG")
    with pytest.raises(InputError, match=r"scan\.png.*unknown image format"):
        load_volume(odd)
    with pytest.raises(InputError, match=r"absent\.mhd.*does not exist"):
        load_volume(tmp_path / "absent.mhd")


def test_mhd_with_missing_raw(tmp_path: Path, ct: np.ndarray) -> None:
    save_metaimage(tmp_path / "scan.mhd", ct, spacing=SPACING, origin=ORIGIN)
    (tmp_path / "scan.raw").unlink()
    with pytest.raises(InputError, match=r"scan\.mhd.*scan\.raw does not exist"):
        load_volume(tmp_path / "scan.mhd")


def test_mhd_with_truncated_raw(tmp_path: Path, ct: np.ndarray) -> None:
    save_metaimage(tmp_path / "scan.mhd", ct, spacing=SPACING, origin=ORIGIN)
    raw = tmp_path / "scan.raw"
    raw.write_bytes(raw.read_bytes()[:-10])
    with pytest.raises(InputError, match=r"scan\.mhd.*truncated"):
        load_volume(tmp_path / "scan.mhd")


def test_mhd_with_garbage_header(tmp_path: Path) -> None:
    path = tmp_path / "scan.mhd"
    path.write_bytes(b"\x00\x01\x02 binary junk")
    with pytest.raises(InputError, match=r"scan\.mhd.*not a MetaImage header"):
        load_volume(path)


def test_truncated_mha(tmp_path: Path, ct: np.ndarray) -> None:
    image = sitk.GetImageFromArray(ct.T.copy())
    path = tmp_path / "scan.mha"
    sitk.WriteImage(image, str(path))
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(InputError, match=r"scan\.mha.*truncated"):
        load_volume(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_truncated_nifti(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"scan{suffix}"
    save_nifti(path, np.ones((20, 20, 20), np.float32), spacing=SPACING, origin=ORIGIN)
    blob = gzip.decompress(path.read_bytes()) if suffix == ".nii.gz" else path.read_bytes()
    truncated = blob[: len(blob) // 2]
    path.write_bytes(gzip.compress(truncated)[:-20] if suffix == ".nii.gz" else truncated)
    with pytest.raises(InputError, match=rf"scan\{suffix}.*cannot read NIfTI"):
        load_volume(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"this is not gzip at all" * 20)
    with pytest.raises(InputError, match=r"scan\.nii\.gz"):
        load_volume(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values(tmp_path: Path, bad: float) -> None:
    data = np.zeros((4, 4, 4), np.float32)
    data[1, 2, 3] = bad
    save_nifti(tmp_path / "scan.nii.gz", data, spacing=SPACING, origin=ORIGIN)
    with pytest.raises(InputError, match=r"scan\.nii\.gz.*1 voxels are NaN or infinite"):
        load_volume(tmp_path / "scan.nii.gz")


def test_empty_dicom_folder(tmp_path: Path) -> None:
    folder = tmp_path / "empty_series"
    folder.mkdir()
    (folder / "notes.txt").write_text("not DICOM")
    with pytest.raises(InputError, match=r"empty_series.*no DICOM series"):
        load_volume(folder)


def test_save_metaimage_leaves_no_temporaries(tmp_path: Path, ct: np.ndarray) -> None:
    save_metaimage(tmp_path / "scan.mhd", ct, spacing=SPACING, origin=ORIGIN)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scan.mhd", "scan.raw"]


def test_save_metaimage_like_a_volume(tmp_path: Path, ct: np.ndarray) -> None:
    reference = Volume(ct.astype(np.float32), SPACING, ORIGIN, FLIPPED)
    save_metaimage(tmp_path / "copy.mhd", ct, like=reference)
    copy = load_volume(tmp_path / "copy.mhd")
    np.testing.assert_array_equal(copy.data, ct)
    _assert_geometry(copy, FLIPPED)


def test_compressed_metaimage_and_its_truncation(tmp_path: Path, ct: np.ndarray) -> None:
    """LUNA16's lung masks are .mhd + .zraw (zlib); ITK checks the stream itself."""
    image = sitk.GetImageFromArray(ct.T.copy())
    path = tmp_path / "mask.mhd"
    sitk.WriteImage(image, str(path), True)
    data_file = next(p for p in tmp_path.iterdir() if p.suffix == ".zraw")
    np.testing.assert_array_equal(load_volume(path).data, ct)
    data_file.write_bytes(data_file.read_bytes()[:20])
    with pytest.raises(InputError, match=r"mask\.mhd"):
        load_volume(path)
