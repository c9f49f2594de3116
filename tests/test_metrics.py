"""IoU, Dice and ROC AUC against hand-computed cases, and the summary CSV."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from genesis.errors import InputError
from genesis.tasks.aggregate import write_summary
from genesis.tasks.metrics import dice, iou, overlap_counts, pooled_iou, rank_auc, roc_auc


def test_iou_and_dice_hand_computed() -> None:
    # pred has 4 voxels, target 3, 2 shared: IoU = 2 / 5, Dice = 2*2 / 7.
    pred = np.zeros((3, 3, 2), bool)
    target = np.zeros((3, 3, 2), bool)
    pred[0, 0, 0] = pred[0, 1, 0] = pred[1, 1, 0] = pred[2, 2, 1] = True
    target[0, 0, 0] = target[1, 1, 0] = target[2, 0, 1] = True
    assert iou(pred, target) == pytest.approx(2 / 5)
    assert dice(pred, target) == pytest.approx(4 / 7)
    # Dice = 2 IoU / (1 + IoU) holds for any pair.
    assert dice(pred, target) == pytest.approx(2 * 0.4 / 1.4)


def test_metrics_accept_torch_and_nonzero_values() -> None:
    pred = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    target = torch.tensor([[0, 1], [0, 1]], dtype=torch.uint8)
    assert iou(pred, target) == pytest.approx(2 / 3)
    assert dice(pred, target) == pytest.approx(4 / 5)
    assert iou(np.array([0, 2, 3]), np.array([0, 1, 0])) == pytest.approx(1 / 2)


def test_empty_masks() -> None:
    empty = np.zeros((2, 2, 2), np.uint8)
    full = np.ones((2, 2, 2), np.uint8)
    assert iou(empty, empty) == 1.0
    assert dice(empty, empty) == 1.0
    assert iou(full, empty) == 0.0
    assert dice(empty, full) == 0.0
    assert iou(full, full) == 1.0


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="shape"):
        iou(np.zeros((2, 2)), np.zeros((2, 3)))


def test_pooled_iou_sums_counts() -> None:
    a = overlap_counts(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]))  # 1 / 2
    b = overlap_counts(np.array([1, 1, 1, 1]), np.array([1, 1, 1, 0]))  # 3 / 4
    assert a == (1, 2, 1)
    assert pooled_iou([a, b]) == pytest.approx(4 / 6)
    assert pooled_iou([]) == 1.0


def test_roc_auc_hand_computed() -> None:
    # Positive-negative pairs: (0.8 > 0.1), (0.8 > 0.4), (0.35 > 0.1), (0.35 < 0.4) -> 3/4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    # A tie between a positive and a negative counts one half.
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc(np.array([1, 0, 1]), np.array([0.9, 0.2, 0.7])) == 1.0


def test_rank_auc_equals_scikit_learn() -> None:
    assert rank_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert rank_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    rng = np.random.default_rng(0)
    for _ in range(5):
        labels = rng.integers(0, 2, 60)
        scores = np.round(rng.random(60) + 0.3 * labels, 1)  # many ties
        assert rank_auc(labels, scores) == pytest.approx(roc_auc(labels, scores), abs=1e-12)
    with pytest.raises(InputError, match="both classes"):
        rank_auc([0, 0], [0.1, 0.2])


def test_roc_auc_one_class_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="both classes"):
        roc_auc([1, 1, 1], [0.2, 0.3, 0.4])
    with pytest.raises(InputError, match="labels but"):
        roc_auc([0, 1], [0.2])
    with pytest.raises(InputError, match="NaN"):
        roc_auc([0, 1], [0.2, float("nan")])


def _metrics(path, task, init, run, value, dice=None):
    record = {
        "task": task,
        "init": init,
        "run": run,
        "seed": 100 + run,
        "metric": "iou",
        "value": value,
        "n_cases": 2,
    }
    if dice is not None:
        record["dice"] = dice
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))
    return path


def test_summary_is_sorted_and_complete(tmp_path) -> None:
    paths = [
        _metrics(tmp_path / "lcs/scratch/run10/metrics.json", "lcs", "scratch", 10, 0.5, 0.6),
        _metrics(tmp_path / "lcs/scratch/run2/metrics.json", "lcs", "scratch", 2, 0.4, 0.5),
        _metrics(tmp_path / "bms/genesis/run1/metrics.json", "bms", "genesis", 1, 0.3, 0.4),
        _metrics(tmp_path / "ncc/genesis/run1/metrics.json", "ncc", "genesis", 1, 0.9),
    ]
    out = tmp_path / "summary.csv"
    write_summary(paths, out)
    lines = out.read_text().splitlines()
    assert lines[0] == "task,init,fraction,n_labelled,run,seed,metric,value,dice"
    assert lines[1:] == [  # metrics without a fraction (before label sweeps): all labels
        "bms,genesis,1.0,,1,101,iou,0.3,0.4",
        "lcs,scratch,1.0,,2,102,iou,0.4,0.5",
        "lcs,scratch,1.0,,10,110,iou,0.5,0.6",
        "ncc,genesis,1.0,,1,101,iou,0.9,",
    ]
    write_summary(list(reversed(paths)), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_text() == out.read_text()


def test_summary_rejects_bad_files(tmp_path) -> None:
    bad = tmp_path / "metrics.json"
    bad.write_text(json.dumps({"task": "ncc"}))
    with pytest.raises(InputError, match="missing key"):
        write_summary([bad], tmp_path / "s.csv")
    one = _metrics(tmp_path / "a/metrics.json", "ncc", "scratch", 1, 0.9)
    two = _metrics(tmp_path / "b/metrics.json", "ncc", "scratch", 1, 0.8)
    with pytest.raises(InputError, match="same"):
        write_summary([one, two], tmp_path / "s.csv")
