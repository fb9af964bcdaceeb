"""Score inference variants of a fold model on the patients it never trained on.

usage:
  python scripts/oof_variants.py RUN_DIR --data ../shared/data/lgg --out variants.json

RUN_DIR is a fold's run folder (`tumorseg train --folds 3 --fold i`, or a `cv_recipes.py` job under
its `--tmp`/runs). Its last checkpoint predicts each validation patient from the original slices at
7/8, 1 and 9/8 of its input size (112, 128 and 144 for the shipped 128), plain and left-right
flipped; 8 ways of combining them (plain, flip TTA, the mean over sizes 128+144 or 112+128+144
with and without flips, and the probabilities smoothed across neighbouring slices with weights
0.25/0.5/0.25 or 0.15/0.7/0.15) are thresholded at 0.4, 0.5 and 0.6, holes filled and the largest
3D part kept, and scored per patient (Dice at the masks' own size). Prints each variant's mean
and on how many patients it beats plain@0.5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import keep_largest_3d, postprocess, slice_probabilities
from tumorseg.io import atomic_write_text
from tumorseg.metrics import confusion_counts, dice

SCALES = {"112": 7 / 8, "128": 1.0, "144": 9 / 8}  # named by the size for 128 input
THRESHOLDS = (0.4, 0.5, 0.6)


def smooth_slices(probs: np.ndarray, w: float) -> np.ndarray:
    """Each slice's probabilities mixed with its neighbours' (weight `w` each; edges repeated)."""
    q = np.concatenate([probs[:1], probs, probs[-1:]])
    return w * q[:-2] + (1 - 2 * w) * q[1:-1] + w * q[2:]


def input_size(size: int, scale: float, depth: int) -> int:
    """`size` x `scale`, rounded to a multiple of 2**depth so that every pooling divides it."""
    step = 2**depth
    return max(step, round(size * scale / step) * step)


def variants(p: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The combinations scored, from the probabilities at each size (key "128", flipped "128f")."""
    return {
        "plain": p["128"],
        "tta": (p["128"] + p["128f"]) / 2,
        "ms2": (p["128"] + p["144"]) / 2,
        "ms3": (p["112"] + p["128"] + p["144"]) / 3,
        "ms2tta": (p["128"] + p["128f"] + p["144"] + p["144f"]) / 4,
        "ms3tta": sum(p.values()) / len(p),
        "zs25": smooth_slices(p["128"], 0.25),
        "zs15": smooth_slices(p["128"], 0.15),
    }


def score_run(run: Path, data: Path) -> dict[str, dict[str, float]]:
    """Per variant@threshold, per validation patient: Dice."""
    ckpt = load_checkpoint(run / "last.safetensors")
    model = build_model(ckpt).eval().to(memory_format=torch.channels_last)
    config = ckpt.config.model
    cases = {c.id: c for c in find_cases(data)}
    scores: dict[str, dict[str, float]] = {}
    for pid in ckpt.meta["split"]["val"]:
        case = load_case(cases[pid], None)
        probs = {}
        for name, scale in SCALES.items():
            c = config.model_copy(update={"image_size": input_size(config.image_size, scale, config.depth)})
            probs[name] = slice_probabilities(model, c, case.images)
            probs[f"{name}f"] = slice_probabilities(model, c, case.images, flip=True)
        for name, p in variants(probs).items():
            for t in THRESHOLDS:
                mask = keep_largest_3d(postprocess(p, t))
                scores.setdefault(f"{name}@{t}", {})[pid] = dice(confusion_counts(mask, case.full_masks))
        print(pid, f"plain {scores['plain@0.5'][pid]:.3f}", flush=True)
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/lgg"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    scores = score_run(args.run, args.data)
    atomic_write_text(args.out, json.dumps(scores, indent=1))
    base = scores["plain@0.5"]
    for k, d in scores.items():
        diff = np.array([d[p] - base[p] for p in base])
        better, worse = (diff > 1e-3).sum(), (diff < -1e-3).sum()
        print(f"{k:12s} mean {np.mean(list(d.values())):.4f}  better {better:2d}  worse {worse:2d}")


if __name__ == "__main__":
    main()
