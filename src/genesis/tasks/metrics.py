"""Target-task metrics: IoU and Dice of binary masks, ROC AUC of candidate scores.

Masks may be numpy arrays or torch tensors of any shape; anything non-zero counts as
foreground, so callers threshold probabilities first (``prob >= 0.5``). Both overlap
metrics return 1.0 when prediction and target are both empty: the prediction is exactly
right, and scoring it 0 (or NaN) would punish a correct answer on a tumour-free case and
make a mean over cases undefined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from genesis.errors import InputError


def _as_bool(mask: Any) -> np.ndarray:
    """A numpy bool view of a mask given as numpy, torch or nested sequences."""
    if hasattr(mask, "detach"):  # torch.Tensor, without importing torch here
        mask = mask.detach().cpu().numpy()
    return np.asarray(mask) != 0


def _counts(pred: Any, target: Any) -> tuple[int, int, int]:
    """(intersection, |pred|, |target|) of two masks of the same shape."""
    p, t = _as_bool(pred), _as_bool(target)
    if p.shape != t.shape:
        raise ValueError(f"prediction shape {p.shape} differs from target shape {t.shape}")
    return int(np.count_nonzero(p & t)), int(np.count_nonzero(p)), int(np.count_nonzero(t))


def iou(pred: Any, target: Any) -> float:
    """Intersection over union |P ∩ T| / |P ∪ T|; 1.0 when both masks are empty."""
    inter, n_pred, n_target = _counts(pred, target)
    union = n_pred + n_target - inter
    return 1.0 if union == 0 else inter / union


def dice(pred: Any, target: Any) -> float:
    """Dice coefficient 2|P ∩ T| / (|P| + |T|); 1.0 when both masks are empty."""
    inter, n_pred, n_target = _counts(pred, target)
    total = n_pred + n_target
    return 1.0 if total == 0 else 2.0 * inter / total


def overlap_counts(pred: Any, target: Any) -> tuple[int, int, int]:
    """(intersection, |pred|, |target|), for pooling IoU over many volumes."""
    return _counts(pred, target)


def pooled_iou(counts: Sequence[tuple[int, int, int]]) -> float:
    """IoU of all volumes taken together (sums of counts), 1.0 when everything is empty."""
    inter = sum(c[0] for c in counts)
    union = sum(c[1] + c[2] - c[0] for c in counts)
    return 1.0 if union == 0 else inter / union


def class_overlaps(
    pred: np.ndarray, target: np.ndarray, n_classes: int
) -> list[tuple[int, int, int]]:
    """(intersection, |pred|, |target|) of each foreground class 1..n_classes-1.

    ``pred`` and ``target`` are label maps of class indices of one shape. One pass of
    ``np.bincount`` over the pair codes instead of a mask per class.
    """
    p = np.asarray(pred).astype(np.int64, copy=False).reshape(-1)
    t = np.asarray(target).astype(np.int64, copy=False).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(
            f"prediction shape {np.shape(pred)} differs from target shape {np.shape(target)}"
        )
    joint = np.bincount(p * n_classes + t, minlength=n_classes * n_classes)
    joint = joint.reshape(n_classes, n_classes)  # [predicted, true]
    return [
        (int(joint[k, k]), int(joint[k].sum()), int(joint[:, k].sum())) for k in range(1, n_classes)
    ]


def iou_from_counts(counts: tuple[int, int, int]) -> float:
    """IoU of one (intersection, |pred|, |target|); 1.0 when both are empty."""
    inter, n_pred, n_target = counts
    union = n_pred + n_target - inter
    return 1.0 if union == 0 else inter / union


def dice_from_counts(counts: tuple[int, int, int]) -> float:
    """Dice of one (intersection, |pred|, |target|); 1.0 when both are empty."""
    inter, n_pred, n_target = counts
    total = n_pred + n_target
    return 1.0 if total == 0 else 2.0 * inter / total


def class_ious(pred: np.ndarray, target: np.ndarray, n_classes: int) -> list[float]:
    """IoU of each foreground class (1.0 where a class is absent from both)."""
    return [iou_from_counts(c) for c in class_overlaps(pred, target, n_classes)]


def class_dices(pred: np.ndarray, target: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each foreground class (1.0 where a class is absent from both)."""
    return [dice_from_counts(c) for c in class_overlaps(pred, target, n_classes)]


def mean_class_iou(pred: np.ndarray, target: np.ndarray, n_classes: int) -> float:
    """Mean IoU over the foreground classes: the metric of a multi-class segmentation."""
    return float(np.mean(class_ious(pred, target, n_classes)))


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve (scikit-learn), with a clear error for one-class labels.

    This is the reported test metric. Raises:
        InputError: when labels and scores differ in length, scores are not finite, or the
            labels hold only one class (AUC is undefined then; a test split without
            positives is a data-preparation problem worth stopping for).
    """
    from sklearn.metrics import roc_auc_score

    y, s = _check_auc_input(labels, scores)
    return float(roc_auc_score(y, s))


def rank_auc(labels: Any, scores: Any) -> float:
    """The same AUC by the Mann-Whitney rank sum (ties count one half), in plain numpy.

    For the per-epoch validation curve: importing scikit-learn costs about 2 s of CPU, a
    noticeable share of a short demo fine-tuning job. Positives are the larger label.
    """
    y, s = _check_auc_input(labels, scores)
    positive = y == np.max(y)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    # Average 1-based rank of each distinct score: ties share the mean of their ranks.
    upper = np.cumsum(counts)
    average_rank = upper - (counts - 1) / 2.0
    ranks = average_rank[inverse]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def _check_auc_input(labels: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=float).reshape(-1)
    if y.shape != s.shape:
        raise InputError(None, f"ROC AUC: {y.size} labels but {s.size} scores")
    if not np.all(np.isfinite(s)):
        raise InputError(
            None, f"ROC AUC: {int(np.sum(~np.isfinite(s)))} scores are NaN or infinite"
        )
    classes = np.unique(y)
    if classes.size != 2:
        raise InputError(
            None,
            f"ROC AUC needs both classes among the labels, got only "
            f"{classes.tolist()} in {y.size} labels",
        )
    return y, s
