"""Choose post-processing on out-of-fold patients: score a grid of settings with the k-fold runs.

usage: python scripts/cv_postprocess.py runs/cv-0 runs/cv-1 runs/cv-2 --data ../shared/data/lgg [--json OUT]

Each run was trained with `tumorseg train --folds K --fold i`. Its last checkpoint predicts its
own validation patients (never trained on), plain and left-right flipped, at their own size.
Every setting of the grid (flip TTA, threshold, which 3D parts to keep) is then scored per
patient on the same probabilities, so a post-processing default is chosen on the non-test
patients and the test patients are scored once, afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case, slice_numbers
from tumorseg.infer import Predictor, drop_minor_components_3d, keep_largest_3d, largest_3d_noted, postprocess
from tumorseg.io import atomic_write_text
from tumorseg.metrics import confusion_counts, dice

THRESHOLDS = (0.4, 0.5, 0.6)
PARTS = ("all", "largest", "mass", "core", "over_10pct")


def out_of_fold_probabilities(runs: list[Path], data: Path, log=print):
    """Yield (patient, truth, plain probabilities, flip-averaged probabilities) for every
    validation patient of every run, each predicted by the run that never trained on it."""
    cases = {c.id: c for c in find_cases(data)}
    for run in runs:
        weights = run / "last.safetensors"
        ckpt = load_checkpoint(weights)
        ids = ckpt.meta["split"]["val"]
        predictor = Predictor.from_checkpoint(weights, "torch")
        log(f"{run}: {len(ids)} validation patients")
        for pid in ids:
            case = load_case(cases[pid], None, ckpt.config.model.channels)
            numbers = slice_numbers(cases[pid].images)
            plain = predictor.probabilities(case.images, volume=True, numbers=numbers)
            flipped = predictor.probabilities(case.images, flip=True, volume=True, numbers=numbers)
            yield pid, case.full_masks, plain, (plain + flipped) / 2


def keep_heaviest_3d(mask: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Keep the 26-connected 3D part of `mask` with the largest sum of `weight`."""
    labels, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
    if n <= 1:
        return mask
    sums = np.bincount(labels.ravel(), weights=weight.ravel())
    sums[0] = -1
    return labels == int(np.argmax(sums))


def keep_parts(mask: np.ndarray, probs: np.ndarray, parts: str) -> np.ndarray:
    """Which 3D parts stay: all, the largest (voxels), the heaviest by probability mass, the one
    with the most confident (p >= 0.9) voxels, or every part of at least 10 % of the largest."""
    if parts == "largest":
        return keep_largest_3d(mask)
    if parts == "mass":
        return keep_heaviest_3d(mask, probs)
    if parts == "core":
        return keep_heaviest_3d(mask, (probs >= 0.9).astype(np.float64))
    if parts == "over_10pct":
        return drop_minor_components_3d(mask, 0.1)
    return mask


def grid_scores(truth: np.ndarray, plain: np.ndarray, tta: np.ndarray) -> dict[str, float]:
    """Per-patient Dice of every setting of the grid."""
    out = {}
    for use_tta, threshold in itertools.product((False, True), THRESHOLDS):
        probs = tta if use_tta else plain
        filled = postprocess(probs, threshold)  # threshold and hole filling, shared by every parts option
        for parts in PARTS:
            mask = keep_parts(filled, probs, parts)
            out[f"tta={int(use_tta)} thr={threshold} parts={parts}"] = dice(confusion_counts(mask, truth))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    t0 = time.perf_counter()
    per_patient: dict[str, dict[str, float]] = {}
    close_calls: dict[str, dict] = {}
    for pid, truth, plain, tta in out_of_fold_probabilities(args.runs, args.data):
        per_patient[pid] = grid_scores(truth, plain, tta)
        filled = postprocess(plain)
        kept, note = largest_3d_noted(filled)  # the default's close call, if any
        if note:
            gone = filled & ~kept
            close_calls[pid] = {
                "note": note,
                "voxels_dropped": int(gone.sum()),
                "tumor_dropped": int((gone & truth).sum()),
            }
    settings = list(next(iter(per_patient.values())))
    table = {s: np.array([per_patient[p][s] for p in per_patient]) for s in settings}
    default = table["tta=0 thr=0.5 parts=largest"]
    print(f"{len(per_patient)} out-of-fold patients, {time.perf_counter() - t0:.0f} s")
    print(f"{'setting':40s} {'mean':>6s} {'median':>6s} {'min':>6s} {'vs default':>10s} {'better/worse':>12s}")
    for s in sorted(settings, key=lambda k: -table[k].mean()):
        v = table[s]
        d = v - default
        print(f"{s:40s} {v.mean():6.4f} {np.median(v):6.4f} {v.min():6.3f} {d.mean():+10.4f} "
              f"{int((d > 1e-4).sum()):>5d}/{int((d < -1e-4).sum()):<5d}")  # fmt: skip
    print(f"close calls of the largest-region step at the default: {len(close_calls)} of {len(per_patient)} patients")
    for pid, c in close_calls.items():
        print(f"  {pid}: {c['tumor_dropped']} of the {c['voxels_dropped']} voxels dropped are tumor; {c['note']}")
    if args.json:
        means = {s: float(table[s].mean()) for s in settings}
        out = {"means": means, "per_patient": per_patient, "close_calls": close_calls}
        atomic_write_text(args.json, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
