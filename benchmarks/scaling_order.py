"""Inference scales each channel by its 99th percentile at the slice's own size, then resizes to
128; training resizes first (its cache holds 128x128 slices), then scales. How much does the
order change the shipped model's answers? The fp32 weights, three test patients, both orders.

usage: python benchmarks/scaling_order.py [--data ../shared/data/lgg] [--patients ID ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.data.transforms import resize, resize_uint8, scale_intensity
from tumorseg.infer import Predictor, predict_logits
from tumorseg.metrics import confusion_counts, dice

PATIENTS = ["TCGA_CS_5395_19981004", "TCGA_CS_5396_20010302", "TCGA_HT_7855_19951020"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg")
    ap.add_argument("--patients", nargs="+", default=PATIENTS)
    args = ap.parse_args()
    pred = Predictor.from_checkpoint(backend="torch")
    size = pred.config.image_size
    cases = {c.id: c for c in find_cases(args.data)}
    for pid in args.patients:
        case = load_case(cases[pid], None, pred.config.channels)
        images, truth = case.images, case.full_masks.astype(bool)  # size None: the slices as stored
        as_inference = pred.predict(images)  # scaled at the slice's size, then resized
        with torch.inference_mode():
            x = scale_intensity(torch.from_numpy(resize_uint8(images, size)), pred.config.intensity)
            logits = predict_logits(pred.model, x)
            as_training = resize(torch.sigmoid(logits), tuple(images.shape[-2:]))[:, 0].numpy()
        a, b = as_inference > 0.5, as_training > 0.5
        print(
            f"{pid}: probabilities differ by up to {np.abs(as_inference - as_training).max():.3f}; "
            f"{int((a != b).sum())} of {a.size} mask pixels differ; Dice against the truth "
            f"{dice(confusion_counts(a, truth)):.4f} (inference's order) and "
            f"{dice(confusion_counts(b, truth)):.4f} (training's), thresholded only"
        )


if __name__ == "__main__":
    main()
