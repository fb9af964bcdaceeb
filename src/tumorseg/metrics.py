"""Segmentation metrics, every one computed from confusion counts.

Empty-mask rule: when truth and prediction are both empty, Dice, IoU, precision and
recall are 1 (a perfect answer). Per-slice means leave such slices out, and a slice
with empty truth but a non-empty prediction is counted as a false-positive slice.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Counts(NamedTuple):
    tp: int
    fp: int
    fn: int
    tn: int

    def __add__(self, other: Counts) -> Counts:  # type: ignore[override]
        return Counts(*(a + b for a, b in zip(self, other)))


def confusion_counts(pred: np.ndarray, target: np.ndarray) -> Counts:
    """Pixel counts over all of `pred` and `target` (boolean arrays of one shape)."""
    pred = np.asarray(pred, bool)
    target = np.asarray(target, bool)
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from target shape {target.shape}")
    tp = int(np.count_nonzero(pred & target))
    fp = int(np.count_nonzero(pred)) - tp
    fn = int(np.count_nonzero(target)) - tp
    return Counts(tp, fp, fn, pred.size - tp - fp - fn)


def _ratio(num: float, den: float) -> float:
    return 1.0 if den == 0 else num / den


def dice(c: Counts) -> float:
    """2TP / (2TP + FP + FN); 1 when both masks are empty."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def iou(c: Counts) -> float:
    """TP / (TP + FP + FN); 1 when both masks are empty."""
    return _ratio(c.tp, c.tp + c.fp + c.fn)


def precision(c: Counts) -> float:
    """TP / (TP + FP); 1 when nothing is predicted and nothing is there, else 0 if nothing predicted."""
    if c.tp + c.fp == 0:
        return 1.0 if c.fn == 0 else 0.0
    return c.tp / (c.tp + c.fp)


def recall(c: Counts) -> float:
    """TP / (TP + FN); 1 when the truth is empty."""
    return _ratio(c.tp, c.tp + c.fn)


def accuracy(c: Counts) -> float:
    """(TP + TN) / all pixels."""
    return _ratio(c.tp + c.tn, sum(c))


def scores(c: Counts) -> dict[str, float]:
    return {
        "dice": dice(c),
        "iou": iou(c),
        "precision": precision(c),
        "recall": recall(c),
        "accuracy": accuracy(c),
    }
