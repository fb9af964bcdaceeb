"""Draw weights/failure_modes.png: for the worst test patients, the slices the model gets most
wrong (the most pixels marked in excess or missed), so that each patient's failure is shown.

usage: python scripts/failure_figure.py runs/ship-eval/evaluation.json ../shared/data/lgg weights/failure_modes.png
"""

from __future__ import annotations

import json
import sys

import numpy as np

from tumorseg.data.lgg import find_cases, load_case
from tumorseg.infer import Predictor
from tumorseg.io import write_png
from tumorseg.viz import display_window, flair_of, overlay, stack_strips


def main(evaluation: str, data: str, out: str, worst: int = 3, per_patient: int = 2) -> None:
    result = json.loads(open(evaluation).read())
    rows = sorted(result["per_patient"], key=lambda r: r["dice"])[:worst]
    predictor = Predictor.from_checkpoint(result["weights"])
    cases = {c.id: c for c in find_cases(data)}
    strips = []
    for row in rows:
        case = load_case(cases[row["patient"]], None, predictor.config.channels)
        mask = predictor.segment(case.images, volume=True)
        wrong = (mask != case.full_masks.astype(bool)).reshape(len(mask), -1).sum(1)
        window = display_window(flair_of(case.images))  # one window per patient, as in report.html
        for i in sorted(np.argsort(-wrong, kind="stable")[:per_patient]):
            title = f"{row['patient']} (patient Dice {row['dice']:.2f}) slice {case.names[i].rsplit('_', 1)[-1]}"
            strips.append(overlay(case.images[i], mask[i], case.full_masks[i], title=title, window=window))
    write_png(out, stack_strips(strips))
    print(f"wrote {out}")


if __name__ == "__main__":
    main(*sys.argv[1:4])
