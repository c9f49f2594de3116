"""Paths from the config reach the shell quoted: spaces work, `$(...)` never runs."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml
from test_workflow import ROOT, snakemake
from user_task_data import mni_segmentation


def _scans(folder: Path, count: int) -> Path:
    """MNI152 at 2 mm (99x117x95), flipped copies: big enough for the demo's cubes."""
    from nilearn import datasets

    template = datasets.load_mni152_template(resolution=2)
    data = template.get_fdata().astype(np.float32)
    folder.mkdir(parents=True)
    for k in range(count):
        volume = data[::-1] if k % 2 else data
        nib.save(nib.Nifti1Image(volume.copy(), template.affine), folder / f"brain{k}.nii.gz")
    return folder


@pytest.mark.slow
def test_paths_with_spaces_and_substitutions_are_quoted(tmp_path: Path) -> None:
    hostile = tmp_path / "my scans $(touch INJECTED)"
    own_train = _scans(hostile / "train", 2)
    own_val = _scans(hostile / "val", 1)
    task_data = mni_segmentation(hostile / "task data", cases=5)
    override = {
        "own_data": {"train": str(own_train), "val": str(own_val), "modality": "mri"},
        "tasks": {
            "names": ["ncc", "mine"],
            "mine": {"kind": "segmentation", "data": str(task_data)},
        },
    }
    config = tmp_path / "hostile.yaml"
    config.write_text(yaml.safe_dump(override))
    targets = [f"results/cubes/own_{split}.npy" for split in ("train", "val")]
    # Targets go before --configfile, which takes every word after it as a config file.
    result = snakemake(
        *targets,
        "results/tasks/mine",
        "--cores",
        "2",
        "--configfile",
        str(ROOT / "config" / "config.yaml"),
        str(config),
        cwd=tmp_path,
        timeout=600,
    )
    logs = "\n".join(p.read_text()[-1500:] for p in (tmp_path / "results").rglob("*.log"))
    assert result.returncode == 0, result.stderr[-3000:] + logs
    for target in targets:
        assert (tmp_path / target).stat().st_size > 0
    assert (tmp_path / "results" / "tasks" / "mine" / "prepare.json").is_file()
    assert not list(tmp_path.rglob("INJECTED")), "a $(...) in a config path was executed"
