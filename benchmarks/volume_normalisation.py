"""Does the volume path's intensity normalisation cost Dice? Test patients as float volumes.

Each test patient's slices are stacked into a volume, given a scanner-like linear intensity
map (x * 3.7 + 100, float32), and segmented through the volume path (percentile clipping
inside the head, 0..255), then compared with the slice path on the original uint8 slices.
usage: python benchmarks/volume_normalisation.py [--data ../shared/data/lgg]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import Predictor, default_weights
from tumorseg.io import atomic_write_text
from tumorseg.metrics import confusion_counts, dice
from tumorseg.volume import Volume, volume_slices


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg")
    args = ap.parse_args()
    weights = default_weights()
    test = load_checkpoint(weights).meta["split"]["test"]
    pred = Predictor.from_checkpoint(weights)
    cases = {c.id: c for c in find_cases(args.data)}
    rows = {}
    for pid in test:
        case = load_case(cases[pid], None, pred.config.channels)
        arr = case.images.transpose(3, 2, 0, 1)[::-1, ::-1].astype(np.float32) * 3.7 + 100  # RAS (X, Y, Z, C)
        vol = Volume(np.ascontiguousarray(arr), np.eye(4), (1.0, 1.0, 1.0))
        slices, _ = volume_slices(vol)
        row = {}
        for path, x in (("slice_path", case.images), ("volume_path", slices)):
            probs = pred.predict(x, volume=True)
            row[path] = dice(confusion_counts(pred.mask(probs), case.full_masks))  # every part kept
            row[f"{path}_largest"] = dice(confusion_counts(pred.mask(probs, volume=True), case.full_masks))
        rows[pid] = row
        print(f"{pid}: slice path {row['slice_path']:.3f}  volume path {row['volume_path']:.3f}  (largest part: "
              f"{row['slice_path_largest']:.3f}, {row['volume_path_largest']:.3f})")  # fmt: skip
    means = {f"{k}_mean": float(np.mean([r[k] for r in rows.values()])) for k in next(iter(rows.values()))}
    diff = max(abs(r["slice_path"] - r["volume_path"]) for r in rows.values())
    print(f"mean per-patient Dice: {means}; largest change for one patient (every part kept): {diff:.3f}")
    out = Path(__file__).parent / "results" / "volume-normalisation.json"
    result = {"weights": str(weights), "backend": pred.backend, "patients": rows, **means, "max_change": diff}
    atomic_write_text(out, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
