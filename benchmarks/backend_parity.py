"""How far the fp32 ONNX graph and the int8 graph are from PyTorch on the shipped model's test patients.

usage: python benchmarks/backend_parity.py [--data ../shared/data/lgg] [--weights CKPT]
Writes benchmarks/results/backend-parity.json and prints, per backend, the largest and the
99.9th-percentile probability difference from torch and how many mask pixels differ.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime
import torch
from common import cpu_features

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import Predictor, default_weights, set_threads


def main(data: str, weights: str | None, out: Path) -> dict:
    weights = weights or str(default_weights())
    ckpt = load_checkpoint(weights)
    ids = ckpt.meta["split"]["test"]
    cfg = ckpt.config.model
    set_threads(0)
    runs = {b: Predictor.from_checkpoint(weights, backend=b) for b in ("torch", "onnx", "onnx-int8")}
    diffs: dict[str, list[np.ndarray]] = {"onnx": [], "onnx-int8": []}
    flips = {"onnx": 0, "onnx-int8": 0}
    pixels, scored = 0, []
    for case in find_cases(data, ids=ids):
        scored.append(case.id)
        images = load_case(case, None, cfg.channels).images
        probs = {b: p.predict(images, volume=True) for b, p in runs.items()}
        masks = {b: runs[b].mask(p, volume=True) for b, p in probs.items()}
        pixels += masks["torch"].size
        for b in diffs:
            diffs[b].append(np.abs(probs[b] - probs["torch"]).ravel())
            flips[b] += int((masks[b] != masks["torch"]).sum())
        print(case.id, {b: f"{diffs[b][-1].max():.2e}" for b in diffs})
    result = {"weights": Path(weights).name, "patients": len(scored), "pixels": pixels, "cpu": cpu_features(),
              "torch": torch.__version__, "onnxruntime": onnxruntime.__version__}  # fmt: skip
    for b, parts in diffs.items():
        d = np.concatenate(parts)
        result[b] = {"max_abs": float(d.max()), "p99_9_abs": float(np.quantile(d, 0.999)),
                     "mask_pixels_differing": flips[b]}  # fmt: skip
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/lgg")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "backend-parity.json")
    a = ap.parse_args()
    main(a.data, a.weights, a.out)
