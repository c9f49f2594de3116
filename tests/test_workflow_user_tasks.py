"""The workflow on tasks defined only in the config, on data the project did not make.

Two user tasks built from scans that nilearn ships (``tests/user_task_data.py``): a 3-class
MSD-layout segmentation with a label sweep and a classification CSV of world points. They
run from preparation to the tables, from four initialisations: scratch, this workflow's
pretraining, and the authors' two released models, downloaded (``released_weights: auto``)
from a loopback mirror with pinned checksums.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_workflow import ROOT, TINY, snakemake
from user_task_data import mni_classification, mni_segmentation

from genesis.models import KerasUNet3D, UNet3D, save_keras_weights, save_weights


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """A loopback HTTP server holding width-4 stand-ins of the two released files."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    save_weights(UNet3D(width=4), folder / "Genesis_Chest_CT", provenance={"stage": "test"})
    save_keras_weights(KerasUNet3D(width=4), folder / "Genesis_Chest_CT.h5")
    checksums = {
        name: "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()
        for name in ("Genesis_Chest_CT.pt", "Genesis_Chest_CT.h5")
    }
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", checksums
    finally:
        server.shutdown()


@pytest.mark.slow
def test_user_tasks_run_to_the_tables(tmp_path: Path, mirror: tuple[str, dict[str, str]]) -> None:
    base_url, checksums = mirror
    segmentation = mni_segmentation(tmp_path / "my data" / "Task99_MNI", cases=6)
    points = mni_classification(tmp_path / "my data" / "points", scans=5)
    tiny = {"max_epochs": 2, "steps_per_epoch": 2, "max_minutes": None, "batch_size": 4}
    override = {
        "data": {"released": {"base_url": base_url, "checksums": checksums, "progressbar": False}},
        "tasks": {
            "names": ["brain3", "tissue"],
            "inits": ["scratch", "genesis", "released", "released_keras"],
            "released_weights": "auto",
            "released_keras_weights": "auto",
            "runs": 2,
            "brain3": {
                "kind": "segmentation",
                "data": str(segmentation),
                "label_fractions": [0.5],
                "finetune": {**tiny, "patches_per_case": 2, "val_patches_per_case": 2},
                "evaluate": {"overlap": 0.25},
            },
            "tissue": {
                "kind": "classification",
                "data": str(points),
                "modality": "mri",
                "prepare": {"max_shift": [1, 1, 1]},
                "finetune": tiny,
            },
        },
        "reports": {"notebooks": False},
    }
    config = tmp_path / "user.yaml"
    config.write_text(yaml.safe_dump(override))
    configs = [str(ROOT / "config" / "config.yaml"), str(TINY), str(config)]
    result = snakemake("--cores", "2", "--configfile", *configs, cwd=tmp_path, timeout=1200)
    logs = tmp_path / "results" / "logs"
    if result.returncode != 0:
        tails = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted(logs.rglob("*.log")))
        pytest.fail(f"snakemake failed:\n{result.stderr[-4000:]}\n{tails}")
    results = tmp_path / "results"
    assert (tmp_path / "data" / "released" / "Genesis_Chest_CT.h5").is_file()
    summary = pd.read_csv(results / "finetune" / "summary.csv")
    # brain3: 4 inits x 2 runs x 2 fractions; tissue: 4 inits x 2 runs.
    assert len(summary) == 4 * 2 * 2 + 4 * 2
    assert set(summary["init"]) == {"scratch", "genesis", "released", "released_keras"}
    assert sorted(summary.loc[summary.task == "brain3", "fraction"].unique()) == [0.5, 1.0]
    table = (results / "tables" / "target_tasks.md").read_text(encoding="utf-8")
    assert "brain3" in table and "tissue" in table and "phantom" in table
    efficiency = pd.read_csv(results / "tables" / "label_efficiency.csv")
    assert {"paired t-test"} <= set(efficiency["test"].dropna())
    assert (results / "figures" / "label_efficiency_brain3.png").stat().st_size > 0
    assert (results / "figures" / "segmentation_brain3.png").stat().st_size > 0
