"""The README's Snakemake route for your own unlabelled scans, to pretrained weights only.

The command is parsed from the README ("Your own unlabelled scans") and run as written,
but for the folder names: `my.yaml` points at real scans that nilearn ships (the MNI152
T1 at 1 mm and at 2 mm) and asks for one short epoch of a narrow model.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
import yaml
from test_own_scans import readme_section_commands
from test_workflow import ROOT, snakemake


def _brains(folder: Path, resolutions: tuple[int, ...]) -> Path:
    import nibabel as nib
    from nilearn import datasets

    folder.mkdir(parents=True)
    for resolution in resolutions:
        image = datasets.load_mni152_template(resolution=resolution)
        nib.save(image, folder / f"mni_{resolution}mm.nii.gz")
    return folder


@pytest.mark.slow
def test_readme_pretrained_target_on_own_scans(tmp_path: Path) -> None:
    [command] = [
        c
        for c in readme_section_commands("Your own unlabelled scans", "snakemake ")
        if c.split()[1] == "pretrained"
    ]
    my = {
        "own_data": {
            "train": str(_brains(tmp_path / "scans" / "train", (1,))),
            "val": str(_brains(tmp_path / "scans" / "val", (2,))),
            "modality": "auto",
            "use_luna16": False,
        },
        "model": {"width": 4},
        "pretrain": {
            "settings": {"max_epochs": 1, "steps_per_epoch": 2, "batch_size": 2, "val_cubes": 4}
        },
    }
    (tmp_path / "my.yaml").write_text(yaml.safe_dump(my))
    words = shlex.split(command)[1:]
    words[words.index("config/config.yaml")] = str(ROOT / "config" / "config.yaml")
    result = snakemake(*words, cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    weights = tmp_path / "results" / "pretrain" / "all"
    assert (weights / "weights.pt").stat().st_size > 0
    assert (weights / "weights.json").is_file()
    assert not (tmp_path / "results" / "finetune").exists()  # pretraining only
    assert not (tmp_path / "data" / "luna16").exists()  # own scans replaced LUNA16
    assert "epoch 1: train" in result.stdout + result.stderr  # progress in the console
