"""MSD-layout phantoms (Task03 liver CT, Task01 brain MRI): files, dtypes, labels, geometry,
determinism, and the analytic-head fallback."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from genesis.errors import ConfigError
from genesis.io import load_volume
from genesis.synth import BrainSettings, LiverSettings, synthesize_brain, synthesize_liver
from genesis.synth import template as template_module

LIVER = {"cases": 2, "shape": [64, 64, 32]}
BRAIN = {"cases": 2, "shape": [64, 64, 40]}


def tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def liver(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("Task03_Liver")
    assert synthesize_liver(folder, LIVER, seed=5)["cases"] == 2
    return folder


@pytest.fixture(scope="module")
def brain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("Task01_BrainTumour")
    assert synthesize_brain(folder, BRAIN, seed=5)["template"] == "mni152"
    return folder


def test_liver_dataset_json(liver: Path) -> None:
    meta = json.loads((liver / "dataset.json").read_text())
    assert meta["modality"] == {"0": "CT"}
    assert meta["labels"] == {"0": "background", "1": "liver", "2": "cancer"}
    assert meta["numTraining"] == 2 and meta["numTest"] == 0 and meta["test"] == []
    assert meta["training"][1] == {
        "image": "./imagesTr/liver_1.nii.gz",
        "label": "./labelsTr/liver_1.nii.gz",
    }
    for entry in meta["training"]:
        assert (liver / entry["image"]).is_file() and (liver / entry["label"]).is_file()


def test_liver_volumes(liver: Path) -> None:
    for case in range(2):
        image = nib.load(str(liver / "imagesTr" / f"liver_{case}.nii.gz"))
        label = nib.load(str(liver / "labelsTr" / f"liver_{case}.nii.gz"))
        assert image.get_data_dtype() == np.int16 and label.get_data_dtype() == np.uint8
        assert image.shape == label.shape == (64, 64, 32)
        np.testing.assert_allclose(image.affine, label.affine)
        zooms = image.header.get_zooms()
        assert zooms[0] == zooms[1] and zooms[2] != zooms[0]  # anisotropic, as LiTS
        assert image.affine[0, 0] < 0 and image.affine[1, 1] < 0  # LPS-identity in RAS
        hu = np.asarray(image.dataobj)
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels).tolist()) == {0, 1, 2}
        liver_hu = np.median(hu[labels == 1])
        tumour_hu = np.median(hu[labels == 2])
        assert 45 < liver_hu < 85 and tumour_hu < liver_hu - 10  # hypodense tumours
        assert np.mean(hu < -900) > 0.1 and np.mean(hu > 300) > 0.001
        # The engine's reader sees the same geometry.
        volume = load_volume(liver / "imagesTr" / f"liver_{case}.nii.gz", ndim=3)
        np.testing.assert_allclose(volume.spacing, zooms, rtol=1e-5)


def test_brain_volumes(brain: Path) -> None:
    meta = json.loads((brain / "dataset.json").read_text())
    assert meta["modality"] == {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"}
    assert meta["labels"] == {
        "0": "background",
        "1": "edema",
        "2": "non-enhancing tumor",
        "3": "enhancing tumour",
    }
    assert meta["tensorImageSize"] == "4D"
    for entry in meta["training"]:
        image = nib.load(str(brain / entry["image"]))
        label = nib.load(str(brain / entry["label"]))
        assert entry["image"].startswith("./imagesTr/BRATS_")
        assert image.get_data_dtype() == np.float32 and label.get_data_dtype() == np.uint8
        assert image.shape == (64, 64, 40, 4) and label.shape == (64, 64, 40)
        np.testing.assert_allclose(image.header.get_zooms()[:3], (1.0, 1.0, 1.0))
        data = np.asarray(image.dataobj)
        labels = np.asarray(label.dataobj)
        assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}
        brain_mask = data[..., 1] > 0
        assert np.all(brain_mask[labels > 0])  # tumour lies inside the skull-stripped brain
        assert np.mean(brain_mask) > 0.1
        # Contrasts: oedema bright on FLAIR, the rim enhances on T1gd.
        flair, t1gd = data[..., 0], data[..., 2]
        assert np.median(flair[labels == 1]) > 1.3 * np.median(flair[brain_mask & (labels == 0)])
        assert np.median(t1gd[labels == 3]) > 1.3 * np.median(t1gd[brain_mask & (labels == 0)])
        assert load_volume(brain / entry["image"], ndim=4).data.shape[-1] == 4


def test_msd_determinism(liver: Path, brain: Path, tmp_path: Path) -> None:
    synthesize_liver(tmp_path / "liver", LIVER, seed=5)
    assert tree_digest(tmp_path / "liver") == tree_digest(liver)
    synthesize_brain(tmp_path / "brain", BRAIN, seed=5)
    assert tree_digest(tmp_path / "brain") == tree_digest(brain)
    synthesize_liver(tmp_path / "liver6", LIVER, seed=6)
    images = sorted((tmp_path / "liver6" / "imagesTr").iterdir())
    assert all(p.read_bytes() != (liver / "imagesTr" / p.name).read_bytes() for p in images)


def test_brain_falls_back_to_an_analytic_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def missing(name: str) -> np.ndarray:
        raise OSError(f"template {name} not found")

    monkeypatch.setattr(template_module, "_read_mni", missing)
    with caplog.at_level(logging.WARNING):
        summary = synthesize_brain(tmp_path, {"cases": 1, "shape": [48, 48, 32]}, seed=1)
    assert summary["template"] == "analytic"
    assert "analytic head" in caplog.text
    labels = np.asarray(nib.load(str(tmp_path / "labelsTr" / "BRATS_001.nii.gz")).dataobj)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3}


def test_msd_settings_errors() -> None:
    with pytest.raises(ConfigError, match=r"data\.synthetic\.liver\.tumours_per_case"):
        LiverSettings(tumours_per_case=(3, 1))
    with pytest.raises(ConfigError, match=r"data\.synthetic\.brain\.template must be one of"):
        synthesize_brain("unused", {"template": "colin27"}, seed=0)
    with pytest.raises(ConfigError, match=r"data\.synthetic\.brain\.cases"):
        BrainSettings(cases=0)
