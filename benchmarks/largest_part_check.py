"""Is keeping each volume's largest 3D part safe? Checked on the TRAINING patients only.

For the shipped model's training patients: the share of each expert mask's tumor in its
largest 26-connected 3D part, and the model's per-patient Dice with holes filled, without and
with only the largest part kept (the `--largest` default). No test patient is read.
usage: python benchmarks/largest_part_check.py [--data ../shared/data/lgg]
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import ndimage

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case, slice_numbers
from tumorseg.infer import Predictor, default_weights, keep_largest_3d, postprocess
from tumorseg.metrics import score_volume


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg")
    args = ap.parse_args()
    weights = default_weights()
    train = load_checkpoint(weights).meta["split"]["train"]
    cases = {c.id: c for c in find_cases(args.data)}
    pred = Predictor.from_checkpoint(weights, "torch")
    shares, parts, plain, largest = [], [], [], []
    for pid in train:
        case = load_case(cases[pid], None, pred.config.channels)
        truth = case.full_masks > 0
        labels, n = ndimage.label(truth, structure=np.ones((3, 3, 3)))
        if n:
            sizes = np.bincount(labels.ravel())[1:]
            shares.append(sizes.max() / sizes.sum())
            parts.append(n)
        probs = pred.probabilities(case.images, volume=True, numbers=slice_numbers(cases[pid].images))
        mask = postprocess(probs)
        plain.append(score_volume(mask, truth)["dice"])
        largest.append(score_volume(keep_largest_3d(mask), truth)["dice"])
        print(f"{pid}: {n} truth part(s), Dice {plain[-1]:.4f} -> {largest[-1]:.4f} with the largest part")
    print(f"{len(train)} training patients; {sum(p == 1 for p in parts)} of {len(parts)} with tumor are one part")
    print(f"share of the tumor in the largest part: mean {np.mean(shares):.4f}, min {np.min(shares):.4f}")
    print(f"mean Dice, holes filled: {np.mean(plain):.4f}; + largest 3D part: {np.mean(largest):.4f}")


if __name__ == "__main__":
    main()
