"""Evaluation: metrics.json, per_case.csv and NIfTI masks on the source geometry."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from target_task_data import make_ncc_task, make_seg_task, tiny_settings

from genesis.cli import main
from genesis.errors import ConfigError
from genesis.io import load_volume
from genesis.tasks.evaluate import EvaluateSettings, evaluate
from genesis.tasks.finetune import Init, finetune, resolve_settings
from genesis.tasks.metrics import iou, roc_auc
from genesis.tasks.prepared import list_cases, load_ncc_candidates, load_ncc_split


def _finetune(task: str, task_dir: Path, run_dir: Path, seed: int = 0) -> Path:
    finetune(
        task,
        task_dir,
        run_dir,
        Init("scratch"),
        seed=seed,
        settings=resolve_settings(task, tiny_settings(max_epochs=1)),
    )
    return run_dir


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    """(task folder, fine-tuned run folder) per task; BMS is resized, LCS is not."""
    root = tmp_path_factory.mktemp("evaluate")
    tasks = {
        "ncc": make_ncc_task(root),
        "lcs": make_seg_task(root, "lcs"),
        "bms": make_seg_task(root, "bms", seed=2, inplane_size=20),
    }
    return {
        task: (path, _finetune(task, path, root / "finetune" / task / "scratch" / "run1"))
        for task, path in tasks.items()
    }


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.parametrize("task", ["lcs", "bms"])
def test_segmentation_outputs(task: str, runs: dict[str, tuple[Path, Path]]) -> None:
    task_dir, run_dir = runs[task]
    metrics = evaluate(task, task_dir, run_dir, EvaluateSettings(overlap=0.5))
    on_disk = json.loads((run_dir / "metrics.json").read_text())
    assert on_disk["metric"] == "iou" and on_disk["task"] == task
    assert (on_disk["init"], on_disk["run"], on_disk["seed"]) == ("scratch", 1, 0)
    assert on_disk["weights"] == str(run_dir / "weights.pt")
    rows = _rows(run_dir / "per_case.csv")
    test_cases = [record["case"] for record in list_cases(task_dir, "test")]
    assert [row["case"] for row in rows] == test_cases and metrics["n_cases"] == len(rows)
    assert metrics["value"] == pytest.approx(np.mean([float(r["iou"]) for r in rows]), abs=1e-5)
    assert metrics["dice"] == pytest.approx(np.mean([float(r["dice"]) for r in rows]), abs=1e-5)
    assert 0.0 <= metrics["iou_pooled"] <= 1.0
    for record in list_cases(task_dir, "test"):
        prediction = nib.load(run_dir / "predictions" / f"{record['case']}.nii.gz")
        source = nib.load(record["image_path"])
        # Same grid and placement as the source scan: it overlays in ITK-SNAP / Slicer.
        assert prediction.shape == source.shape
        np.testing.assert_allclose(prediction.affine, source.affine, atol=1e-5)
        assert prediction.get_data_dtype() == np.uint8
        assert set(np.unique(np.asarray(prediction.dataobj))) <= {0, 1}


def test_masks_on_the_source_grid_score_like_the_table(
    runs: dict[str, tuple[Path, Path]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without resizing, the saved mask against the source label gives the reported IoU.

    The model is replaced by a known, imperfect segmenter (the image, shifted one voxel
    along x, thresholded), so a flipped or misplaced mask would change the IoU.
    """
    import genesis.tasks.inference

    def shifted_image(model: object, image: np.ndarray, **kwargs: object) -> np.ndarray:
        return np.roll(image, 1, axis=0)

    monkeypatch.setattr(genesis.tasks.inference, "predict_volume", shifted_image)
    task_dir, run_dir = runs["lcs"]
    evaluate("lcs", task_dir, run_dir, EvaluateSettings())
    rows = _rows(run_dir / "per_case.csv")
    assert all(0.3 < float(row["iou"]) < 0.95 for row in rows)
    for row in rows:
        record = next(r for r in list_cases(task_dir, "test") if r["case"] == row["case"])
        mask = load_volume(run_dir / "predictions" / f"{row['case']}.nii.gz").data
        label = load_volume(record["label_path"]).data
        assert iou(mask, label) == pytest.approx(float(row["iou"]), abs=1e-5)


def test_ncc_auc_and_per_candidate_rows(runs: dict[str, tuple[Path, Path]]) -> None:
    task_dir, run_dir = runs["ncc"]
    metrics = evaluate("ncc", task_dir, run_dir, EvaluateSettings(batch_size=3))
    rows = _rows(run_dir / "per_case.csv")
    assert list(rows[0]) == ["candidate", "label", "score"]
    _, labels = load_ncc_split(task_dir, "test")
    assert [int(r["candidate"]) for r in rows] == load_ncc_candidates(task_dir, "test").tolist()
    assert [int(r["label"]) for r in rows] == labels.tolist()
    auc = roc_auc([int(r["label"]) for r in rows], [float(r["score"]) for r in rows])
    assert metrics["metric"] == "auc" and metrics["value"] == pytest.approx(auc, abs=1e-4)
    assert metrics["n_cases"] == len(labels) and "dice" not in metrics


def test_evaluation_refuses_inconsistent_settings(runs: dict[str, tuple[Path, Path]]) -> None:
    task_dir, run_dir = runs["lcs"]
    with pytest.raises(ConfigError, match="fine-tuned for lcs"):
        evaluate("bms", task_dir, run_dir, EvaluateSettings())
    with pytest.raises(ConfigError, match="width 4 differs"):
        evaluate("lcs", task_dir, run_dir, EvaluateSettings(width=4))
    with pytest.raises(ConfigError, match="overlap"):
        EvaluateSettings(overlap=1.0)


def test_cli_evaluate_and_aggregate(
    runs: dict[str, tuple[Path, Path]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for task, (task_dir, run_dir) in runs.items():
        settings = {"overlap": 0.25, "width": 2, "cube_size": [16, 16, 8]}
        code = main(
            [
                "evaluate",
                "--task",
                task,
                "--data",
                str(task_dir),
                "--run-dir",
                str(run_dir),
                "--settings",
                json.dumps(settings),
            ]
        )
        assert code == 0, capsys.readouterr().err
    summary = tmp_path / "summary.csv"
    metrics = [str(run_dir / "metrics.json") for _, run_dir in runs.values()]
    assert main(["aggregate", "--metrics", *metrics, "--output", str(summary)]) == 0
    rows = _rows(summary)
    assert [r["task"] for r in rows] == ["bms", "lcs", "ncc"]
    assert [r["metric"] for r in rows] == ["iou", "iou", "auc"]
    assert rows[2]["dice"] == "" and float(rows[0]["dice"]) >= 0
    code = main(
        [
            "evaluate",
            "--task",
            "lcs",
            "--data",
            str(runs["lcs"][0]),
            "--run-dir",
            str(tmp_path / "nowhere"),
        ]
    )
    assert code == 2 and "run `genesis finetune` first" in capsys.readouterr().err
