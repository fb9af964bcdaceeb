"""The self-contained HTML report of an evaluation."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .data.lgg import CaseArrays
from .evaluation_text import (
    VARIANTS_NOTE,
    counted,
    hd95_header,
    hd95_note,
    interval_text,
    scored_text,
    settings_text,
    slice_dice_note,
    slice_hd95_note,
    tumor_free_note,
    variant_label,
    variant_order,
)
from .metrics import confusion_counts, dice
from .viz import (
    compact_image,
    display_window,
    flair_of,
    histogram_png,
    html_report,
    overlay,
    png_bytes,
    stack_strips,
    titled,
)


def run_curves(weights: Path) -> bytes | None:
    """The training curves of the run `weights` sits in: its curves.png, or for an ensemble each
    member's under its folder's name, member 0 on top (an ensemble's folder has none of its
    own); None outside a run."""
    from PIL import Image

    own = weights.parent / "curves.png"
    if own.is_file():
        return own.read_bytes()
    found = sorted((p for p in weights.parent.glob("member*/curves.png") if p.parent.name[6:].isdigit()),
                   key=lambda p: int(p.parent.name[6:]))  # fmt: skip
    try:
        pictures = [titled(np.asarray(Image.open(p).convert("RGB")), p.parent.name) for p in found]
        return png_bytes(stack_strips(pictures)) if found else None
    except (OSError, ValueError):  # a member's picture unreadable: the report goes without it
        return None


def worst_first_strips(
    case: CaseArrays, pred: np.ndarray, k: int = 4, k_fp: int = 2, dropped: np.ndarray | None = None, k_dropped: int = 1
) -> list[tuple[bytes, str]]:
    """Overlays (image bytes for the page, `compact_image`; alt text) of the `k` slices with the
    most tumor, of the `k_fp` false-positive slices (empty truth, non-empty prediction) with the
    most predicted pixels and of the `k_dropped` slices not shown yet with the most pixels the
    largest-region step removed (`dropped`, outlined), the worst slice (lowest Dice) first. The
    false-positive slices are shown so that a patient's false alarms (all there is to see of a
    patient without tumor) are not hidden; the dropped ones so that a close call can be judged."""
    truth = case.full_masks.reshape(len(pred), -1)
    predicted = np.asarray(pred, bool).reshape(len(pred), -1)
    area = truth.sum(1)
    top = [int(i) for i in np.argsort(-area, kind="stable")[:k] if area[i] > 0]
    fp_area = np.where(area == 0, predicted.sum(1), 0)
    top += [int(i) for i in np.argsort(-fp_area, kind="stable")[:k_fp] if fp_area[i] > 0]
    gone = np.zeros_like(np.asarray(pred, bool)) if dropped is None else np.asarray(dropped, bool)
    gone_area = np.where(np.isin(np.arange(len(pred)), top), 0, gone.reshape(len(pred), -1).sum(1))
    top += [int(i) for i in np.argsort(-gone_area, kind="stable")[:k_dropped] if gone_area[i] > 0]
    dices = {i: dice(confusion_counts(pred[i], case.full_masks[i])) for i in top}
    top.sort(key=lambda i: dices[i])
    window = display_window(flair_of(case.images))  # one window for the patient: its strips stay comparable
    return [(compact_image(overlay(case.images[i], pred[i], case.full_masks[i], title=case.names[i],
                                   dropped=gone[i], window=window)),
             _strip_alt(case.names[i], pred[i], case.full_masks[i], dices[i], int(gone[i].sum())))
            for i in top]  # fmt: skip


def _strip_alt(name: str, pred: np.ndarray, truth: np.ndarray, slice_dice: float, dropped: int = 0) -> str:
    """What a strip shows, for a screen reader: the slice, its Dice and its tumor in pixels."""
    c = confusion_counts(pred, truth)
    gone = f", {dropped} px dropped by the largest-region step (outlined)" if dropped else ""
    return (f"slice {name}: MRI, true mask, predicted mask and overlay; Dice {slice_dice:.3f}, "
            f"{c.tp} px found, {c.fp} px marked in excess, {c.fn} px missed{gone}")  # fmt: skip


def build_report(result: dict, strips_input: dict, weights: Path) -> str:
    rows = result["per_patient"]
    summary = result["summary"]
    hd, shd = hd95_header(result), hd95_header(result, "slice_hd95")
    summary_rows = []
    for name in variant_order(summary):
        s = summary[name]
        summary_rows.append(
            {
                "variant": variant_label(name),
                **{f"{m} mean": s[m]["mean"] for m in ("dice", "iou", "precision", "recall")},
                f"{hd} mean": s["hd95"]["mean"],
                "pixel accuracy mean": s["accuracy"]["mean"],
                "slice_dice mean": s["slice_dice"]["mean"],
                f"{shd} mean": s["slice_hd95"]["mean"],
                "Dice median": s["dice"]["median"],
                "Dice std": s["dice"]["std"],
                "Dice min": s["dice"]["min"],
                "FP slices (total)": s["fp_slices"],
            }  # fmt: skip
        )
    hist = histogram_png(
        [r["dice"] for r in rows], [r["baseline_dice"] for r in rows], counted(result["patients"], "patient")
    )
    curves = run_curves(weights)
    # (case, prediction) or (case, prediction, what the largest-region step removed)
    strips = {pid: worst_first_strips(v[0], v[1], dropped=v[2] if len(v) > 2 else None)
              for pid, v in strips_input.items()}  # fmt: skip
    order = sorted(strips, key=lambda pid: next(r["dice"] for r in rows if r["patient"] == pid))
    d = summary["chosen"]["dice"]
    acc_model, acc_base = summary["chosen"]["accuracy"]["mean"], summary["baseline"]["accuracy"]["mean"]
    notes = [
        f"Weights: {result['weights']}. Data: {result['data']} ({result['split']} split). "
        f"Settings: {settings_text(result)}.",
        f"Mean per-patient Dice (chosen settings) {d['mean']:.3f}; {interval_text(result)}. Pixel accuracy: model "
        f"{acc_model:.3f}, always 'no tumor' baseline {acc_base:.3f}.",
        result["empty_mask_rule"],
        *filter(None, [tumor_free_note(result), hd95_note(result), slice_dice_note(result), slice_hd95_note(result)]),
        VARIANTS_NOTE + ".",
        *(f"{r['patient']}: {n}" for r in rows for n in r.get("notes", [])),
        *(f"Not scored: {f['image']}: {f['error']}" for f in result.get("failed", [])),
    ]
    table_rows = [{**r, hd: r["hd95"], shd: r["slice_hd95"], "pixel accuracy": r["accuracy"],
                   "baseline pixel accuracy": r.get("baseline_accuracy", float("nan"))} for r in rows]  # fmt: skip
    columns = ["patient", "slices", "tumor_slices", "dice", "iou", "precision", "recall", hd, "pixel accuracy",
               "slice_dice", shd, "fp_slices", "baseline_dice", "baseline pixel accuracy"]  # fmt: skip
    return html_report(
        f"tumorseg evaluation: {scored_text(result)}",
        table_rows,
        columns,
        summary_rows,
        notes,
        hist,
        {pid: strips[pid] for pid in order},
        curves,
    )
