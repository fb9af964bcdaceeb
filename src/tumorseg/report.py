"""The self-contained HTML report of an evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .metrics import confusion_counts, dice
from .viz import histogram_png, html_report, overlay, png_bytes


def worst_first_strips(case, pred: np.ndarray, k: int = 4) -> list[bytes]:
    """Overlays of the `k` slices with the most tumor, the worst slice (lowest Dice) first."""
    area = case.full_masks.reshape(len(pred), -1).sum(1)
    top = [int(i) for i in np.argsort(-area)[:k] if area[i] > 0]
    dices = {i: dice(confusion_counts(pred[i], case.full_masks[i])) for i in top}
    top.sort(key=lambda i: dices[i])
    return [png_bytes(overlay(case.images[i], pred[i], case.full_masks[i], title=case.names[i])) for i in top]


def build_report(result: dict, strips_input: dict, weights: Path) -> str:
    rows = result["per_patient"]
    summary = result["summary"]
    summary_rows = []
    for name, s in summary.items():
        summary_rows.append(
            {
                "variant": name,
                **{f"{m} mean": s[m]["mean"] for m in ("dice", "iou", "precision", "recall", "hd95")},
                "Dice median": s["dice"]["median"],
                "Dice std": s["dice"]["std"],
                "Dice min": s["dice"]["min"],
                "FP slices": s["fp_slices"],
            }  # fmt: skip
        )
    hist = histogram_png(
        [r["dice"] for r in rows], [r["baseline_dice"] for r in rows], f"{result['patients']} patients"
    )
    curves_path = weights.parent / "curves.png"
    curves = curves_path.read_bytes() if curves_path.is_file() else None
    strips = {pid: worst_first_strips(case, pred) for pid, (case, pred) in strips_input.items()}
    order = sorted(strips, key=lambda pid: next(r["dice"] for r in rows if r["patient"] == pid))
    notes = [
        f"Weights: {result['weights']}. Data: {result['data']} ({result['split']} split). "
        f"Settings: {result['settings']}.",
        result["empty_mask_rule"],
        *(f"{r['patient']}: {n}" for r in rows for n in r.get("notes", [])),
    ]
    columns = ["patient", "slices", "tumor_slices", "dice", "iou", "precision", "recall", "hd95", "slice_dice",
               "fp_slices", "baseline_dice"]  # fmt: skip
    return html_report(
        f"tumorseg evaluation: {result['patients']} patients",
        rows,
        columns,
        summary_rows,
        notes,
        hist,
        {pid: strips[pid] for pid in order},
        curves,
    )
