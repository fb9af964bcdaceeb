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


def as_mask(a: np.ndarray, what: str = "mask") -> np.ndarray:
    """A boolean mask: any non-zero integer is tumor (0/1, 0/255); floats only as 0 and 1, since a
    probability map taken as a mask counts every pixel above 0 as tumor. Integers are not checked:
    a probability map stored as 0..255 (`X_prob.png`) is read as a mask of every non-zero pixel."""
    a = np.asarray(a)
    if a.dtype.kind == "f" and not ((a == 0) | (a == 1)).all():
        raise ValueError(f"{what} holds values other than 0 and 1 (a probability map?): threshold it first")
    return a.astype(bool, copy=False)


def confusion_counts(pred: np.ndarray, target: np.ndarray) -> Counts:
    """Pixel counts over all of `pred` and `target` (masks of one shape; see `as_mask`)."""
    pred = as_mask(pred, "prediction")
    target = as_mask(target, "target")
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


def hd95(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...] | None = None) -> float:
    """95th-percentile Hausdorff distance between two masks, via MONAI: the larger of the two
    directed 95th percentiles of surface distances (prediction to truth, truth to prediction),
    not one percentile of both pooled.

    In pixels (voxels) when `spacing` is None, else in the spacing's unit (mm). Rule for
    empty masks: both empty -> 0.0; exactly one empty -> NaN (undefined; callers count
    these and leave them out of means).
    """
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance

    pred = np.ascontiguousarray(as_mask(pred, "prediction"))  # a flipped view (negative strides) is refused by torch
    target = np.ascontiguousarray(as_mask(target, "target"))
    if not pred.any() and not target.any():
        return 0.0
    if not pred.any() or not target.any():
        return float("nan")
    # only the masks' bounding box, with a margin of background, matters: MONAI then measures a
    # few thousand pixels, not a whole 256x256 slice or volume (about 10x faster, the same result)
    box = tuple(slice(max(int(lo) - 1, 0), int(hi) + 2) for lo, hi in zip(*_bounds(pred | target)))
    pred, target = pred[box], target[box]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        d = compute_hausdorff_distance(
            torch.from_numpy(pred)[None, None].float(),
            torch.from_numpy(target)[None, None].float(),
            include_background=True,
            percentile=95,
            spacing=[float(s) for s in spacing] if spacing is not None else None,  # MONAI: one type
        )
    return float(d.item())


def _bounds(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The first and last index of `mask`'s True values along each axis."""
    where = np.argwhere(mask)
    return where.min(0), where.max(0)


def score_volume(pred: np.ndarray, target: np.ndarray, spacing: tuple[float, ...] | None = None) -> dict:
    """Score one patient: (S, H, W) boolean prediction and truth.

    Returns the volume-level metrics (the slices stacked and scored as one, the headline),
    HD95 over the stacked volume (voxel units unless `spacing` is given; without a known
    slice spacing, one slice counts as one pixel, so a miss in one slice is measured to the
    next slice's edge and the stacked HD95 runs low), and the per-slice view: the mean Dice
    over slices whose truth has tumor (`slice_dice`), the mean in-plane HD95 over slices where
    both masks have tumor (`slice_hd95`, 2D, in the in-plane spacing's unit), the number of
    false-positive slices (empty truth, non-empty prediction) and of slices with empty truth
    (`empty_slices`: the false-positive slices and those where both are empty).
    """
    pred = as_mask(pred, "prediction")
    target = as_mask(target, "target")
    out = scores(confusion_counts(pred, target))
    out["hd95"] = hd95(pred, target, spacing)
    plane = tuple(spacing[1:]) if spacing is not None else None
    slice_dice, slice_hd = [], []
    fp_slices = both_empty = 0
    for p, t in zip(pred, target):
        if t.any():
            slice_dice.append(dice(confusion_counts(p, t)))
            if p.any():
                slice_hd.append(hd95(p, t, plane))
        elif p.any():
            fp_slices += 1
        else:
            both_empty += 1
    out["slice_dice"] = float(np.mean(slice_dice)) if slice_dice else float("nan")
    out["slice_hd95"] = float(np.mean(slice_hd)) if slice_hd else float("nan")
    out["tumor_slices"] = len(slice_dice)
    out["fp_slices"] = fp_slices
    out["empty_slices"] = both_empty + fp_slices
    out["slices"] = len(pred)
    return out


def summarize(values: list[float]) -> dict:
    """Mean (with its 95 % bootstrap interval), median, sample standard deviation (n - 1; n/a for
    one value), min and max of the finite values, and how many were not finite."""
    arr = np.asarray(values, float)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        nan = float("nan")
        return {"mean": nan, "mean_ci95": [nan, nan], "median": nan, "std": nan, "min": nan,
                "max": nan, "n": 0, "undefined": int(arr.size)}  # fmt: skip
    lo, hi = bootstrap_ci(finite)
    return {
        "mean": float(finite.mean()),
        "mean_ci95": [lo, hi],
        "median": float(np.median(finite)),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else float("nan"),  # the sample std
        "min": float(finite.min()),
        "max": float(finite.max()),
        "n": int(finite.size),
        "undefined": int(arr.size - finite.size),
    }


def bootstrap_ci(
    values: np.ndarray, level: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean: how far the mean of this many patients
    could move with another draw of patients like them. Seeded, so reports are reproducible."""
    values = np.asarray(values, float)
    if values.size < 2:  # one patient: nothing to resample
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, values.size, (resamples, values.size))].mean(1)
    tail = (1 - level) / 2 * 100
    return float(np.percentile(means, tail)), float(np.percentile(means, 100 - tail))
