"""The text of an evaluation's results: the printed table, its notes and summary lines, evaluation.md.

Pure functions of an `evaluate` or `evaluate_volumes` result dict; nothing here computes a score."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .io import Log

METRICS = ["dice", "iou", "precision", "recall", "hd95", "accuracy", "slice_dice", "slice_hd95"]


def empty_mask_rule(unit: str = "px") -> str:
    """The written rule for empty masks, with HD95's unit (pixels for slices, mm for volumes)."""
    slices = unit == "px"
    hd = (
        "pixels over the stacked volume (one slice step = one pixel, so a miss in one slice is measured to the "
        "next slice's edge and this HD95 runs low)"
        if slices
        else "mm, from the voxel spacing"
    )
    who = "patient" if slices else "volume"
    how = ("Per patient, the slices are stacked and scored as one volume (headline). " if slices
           else "Each volume is scored as one 3D mask (headline). ")  # fmt: skip
    return (
        how + "Both masks empty counts as "
        "Dice, IoU, precision and recall 1. Nothing predicted where there is tumor: precision 0, recall 0. "
        "Something predicted where there is none: Dice, IoU and precision 0, recall 1 (nothing was missed). "
        f"Per slice (slice_dice), each {who}'s mean Dice over its slices whose truth has tumor; the summary "
        f"averages it over {who}s. Slices with empty truth and a non-empty prediction are counted as "
        f"false-positive slices. HD95 is in {hd}; 0 when both masks are empty, undefined (n/a, left out of "
        f"the mean) when exactly one is. slice_hd95 is each {who}'s mean in-plane (2D) HD95 over its slices "
        "where truth and prediction both have tumor, as per-slice HD95 is usually reported; n/a with no such slice."
    )


def _row_line(values: list[str]) -> str:
    """One row of the printed table; a name over 24 characters keeps its start and end (the files
    written give it whole), so the columns stay in line."""
    name = values[0] if len(values[0]) <= 24 else f"{values[0][:11]}…{values[0][-12:]}"
    return " ".join([f"{name:<24}", *(f"{v:>10}" for v in values[1:])])


def scored_text(result: dict) -> str:
    """`15 patients`, or `14 of 15 patients scored` when some failed."""
    n, failed = result["patients"], len(result.get("failed", []))
    return f"{n} of {counted(n + failed, 'patient')} scored" if failed else counted(n, "patient")


def counted(count: int, noun: str) -> str:
    """`1 patient`, `2 patients`."""
    return f"{count} {noun}{'s' * (count != 1)}"


def fmt(v: float) -> str:
    """Three decimals, or n/a."""
    return "n/a" if not np.isfinite(v) else f"{v:.3f}"


def fmt_hd(v: float, unit: str) -> str:
    """An HD95 with its unit, or n/a (never "n/a px")."""
    return f"{v:.1f} {unit}" if np.isfinite(v) else "n/a"


VARIANT_LABELS = {
    "chosen": "model (chosen settings)",
    "model": "model, threshold 0.5",
    "fill_holes": "+ fill holes",
    "tta": "+ flip TTA",
    "cc3d_10": "+ drop 3D parts <10% of largest",
    "largest_3d": "+ fill holes, largest 3D part",
    "single_slices": "+ fill holes, each slice alone",
    "no_pre_t1": "chosen, FLAIR for pre-contrast T1",
    "no_post_t1": "chosen, FLAIR for post-contrast T1",
    "flair_only": "chosen, FLAIR for both T1s",
    "baseline": 'always "no tumor" baseline',
}


VARIANTS_NOTE = (
    'Each variant is scored on its own: "+" adds its steps to the plain model at threshold 0.5, not to the row above'
)


def has_variants(result: dict) -> bool:
    """Whether the result scores variants beside the chosen settings and the baseline (volumes do not)."""
    return bool(set(result["summary"]) - {"chosen", "baseline"})


def variant_label(name: str) -> str:
    """How tables name a variant of `evaluate` (`min_size_50`: "+ drop <50 px")."""
    if name.startswith("min_size_"):
        return f"+ drop <{name.removeprefix('min_size_')} px"
    return VARIANT_LABELS.get(name, name)


def variant_order(summary: dict) -> list[str]:
    """The chosen settings first, the variants in the order above, the baseline last."""
    rank = {k: i for i, k in enumerate(VARIANT_LABELS)}

    def place(k: str) -> float:  # `min_size_N` comes right after the flip TTA, as it is computed
        return rank["tta"] + 0.5 if k.startswith("min_size_") else rank.get(k, len(rank))

    return sorted(summary, key=lambda k: (k == "baseline", k != "chosen", place(k)))


def hd95_header(result: dict, key: str = "hd95") -> str:
    return f"{key} ({result.get('hd95_unit', 'px')})"


def _head(result: dict, key: str) -> str:
    """A column's name, with its unit for the HD95s."""
    return hd95_header(result, key) if key in ("hd95", "slice_hd95") else key


def print_table(result: dict, log: Log = print) -> None:
    cols = ["dice", "iou", "precision", "recall", "hd95", "fp_slices", "baseline_dice"]
    log(_row_line(["patient", *(hd95_header(result) if c == "hd95" else c for c in cols)]))
    for r in result["per_patient"]:
        log(_row_line([r["patient"], *(fmt(r[c]) if isinstance(r[c], float) else str(r[c]) for c in cols)]))
    ch = result["summary"]["chosen"]
    n = max(len(result["per_patient"]), 1)
    for stat in ("mean", "median", "std"):
        vals = [fmt(ch[m][stat]) for m in ("dice", "iou", "precision", "recall", "hd95")]
        log(_row_line([stat, *vals, f"{ch['fp_slices'] / n:.1f}" if stat == "mean" else "", ""]))
    log(_row_line(["total", "", "", "", "", "", str(ch["fp_slices"]), ""]))  # fp_slices over all patients
    for note in filter(None, (tumor_free_note(result), hd95_note(result))):
        log(note)
    sh, fewer = ch["slice_hd95"], slice_hd95_note(result)
    unit = f" {result.get('hd95_unit', 'px')}" if np.isfinite(sh["mean"]) else ""
    log(f"in-plane HD95 per slice (slice_hd95, over slices where both masks have tumor): mean {fmt(sh['mean'])}, "
        f"median {fmt(sh['median'])}{unit}" + (f"; {fewer}" if fewer else ""))  # fmt: skip
    log("")
    if has_variants(result):
        log(VARIANTS_NOTE)
    log(f"{'per-patient Dice':<34}{'mean':>8}{'median':>8}{'min':>8}")
    for key in variant_order(result["summary"]):
        d = result["summary"][key]["dice"]
        log(f"{variant_label(key):<34}{fmt(d['mean']):>8}{fmt(d['median']):>8}{fmt(d['min']):>8}")
    log(f"mean per-patient Dice {fmt(result['summary']['chosen']['dice']['mean'])}, {interval_text(result)}")
    acc = result["summary"]["baseline"]["accuracy"]["mean"]
    log(f"pixel accuracy: model {fmt(result['summary']['chosen']['accuracy']['mean'])}, baseline {fmt(acc)}")


def hd95_note(result: dict, what: str = "patient") -> str | None:
    """How many rows each HD95 mean is over, when some are n/a (exactly one mask empty); else None."""
    parts = []
    for key, name in (("chosen", "the model's"), ("baseline", "the baseline's")):
        h = result["summary"].get(key, {}).get("hd95")
        if h and h.get("undefined"):
            parts.append(f"{name} over {h['n']} of {h['n'] + h['undefined']} {what}s")
    if not parts:
        return None
    return (f"HD95 is n/a for a {what} whose masks are one empty and one not, and its means leave such {what}s "
            f"out: {', '.join(parts)}")  # fmt: skip


def tumor_free_note(result: dict, what: str = "patient") -> str | None:
    """Said when some rows' truth has no tumor: the empty-mask rule scores the always "no tumor"
    baseline perfectly there, so means over all rows can favour it; the means over rows with tumor."""
    rows = result["per_patient"]
    free = [r for r in rows if r.get("tumor_slices") == 0]
    if not free:
        return None
    tumor = [r["dice"] for r in rows if r.get("tumor_slices")]
    over = (f"; over the {len(tumor)} with tumor the model's mean Dice is {np.mean(tumor):.3f}, the baseline's 0.000"
            if tumor else "")  # fmt: skip
    return (f"{len(free)} of {len(rows)} {what}s have no tumor in their truth: by the empty-mask rule each scores "
            "Dice 1 and HD95 0 when nothing is marked, as the always \"no tumor\" baseline does, and Dice 0 when "
            f"anything is, so means over every {what} favour the baseline{over}")  # fmt: skip


def slice_dice_note(result: dict, what: str = "patient") -> str | None:
    """How many rows the slice_dice means are over, when some have no tumor slice (n/a); else None."""
    s = result["summary"].get("chosen", {}).get("slice_dice")
    if not s or not s.get("undefined"):
        return None
    return (f"slice_dice means are over the {s['n']} of {s['n'] + s['undefined']} {what}s with a tumor slice "
            f"(n/a for the {s['undefined']} without one)")  # fmt: skip


def slice_hd95_note(result: dict, what: str = "patient") -> str | None:
    """How many rows the slice_hd95 means are over, when some have no slice where both masks have
    tumor (n/a); else None."""
    s = result["summary"].get("chosen", {}).get("slice_hd95")
    if not s or not s.get("undefined"):
        return None
    return (f"slice_hd95 means are over the {s['n']} of {s['n'] + s['undefined']} {what}s with a slice where "
            "truth and prediction both have tumor")  # fmt: skip


def interval_text(result: dict, what: str = "patient") -> str:
    """The 95 % bootstrap interval of the mean per-patient Dice, or why there is none."""
    d = result["summary"]["chosen"]["dice"]
    n = d.get("n", result.get("patients", 0))
    lo, hi = d["mean_ci95"]
    if n < 2 or not (np.isfinite(lo) and np.isfinite(hi)):
        return f"no bootstrap interval ({n} {what}{'' if n == 1 else 's'} scored: too few to resample)"
    return f"95 % bootstrap interval over these {n} {what}s (10,000 resamples, seed 0) [{fmt(lo)}, {fmt(hi)}]"


def settings_text(result: dict) -> str:
    """The settings scored with, as words: "backend onnx-int8, threshold 0.5, tta off, ..."."""
    words = {True: "on", False: "off"}
    parts = [f"backend {result['backend']}"] if result.get("backend") else []
    parts += [f"{k} {words.get(v, v) if isinstance(v, bool) else v}" for k, v in result["settings"].items()]
    return ", ".join(parts)


def _one_line(text: str) -> str:
    """A name on one line: its line breaks written out."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _md(text: str) -> str:
    """Text as Markdown shows it, letter for letter: no raw HTML, link, image or emphasis made of a
    file name, and a | that does not split a table's cell. An _ between letters (TCGA_CS) makes no
    emphasis, so it stays as it is."""
    text = _one_line(text)
    text = re.sub(r"([\\`*\[\]|~<>&])", r"\\\1", text)
    return re.sub(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])", r"\\_", text)


def _md_code(text: str, in_table: bool = False) -> str:
    """A name as a Markdown code span, shown as it is (in a table, a | is escaped to stay in its
    cell; GFM takes the backslash away there)."""
    text = _one_line(text)
    if in_table:
        text = text.replace("|", "\\|")
    fence = "`" * (max((len(m) for m in re.findall("`+", text)), default=0) + 1)
    pad = " " if text[:1] in ("`", " ") or text[-1:] in ("`", " ") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def markdown(result: dict) -> str:
    cols = ["patient", "slices", "tumor_slices", "dice", "iou", "precision", "recall", "hd95", "accuracy",
            "slice_dice", "slice_hd95", "fp_slices", "baseline_dice"]  # fmt: skip
    what = "patient" if "split" in result else "volume"
    if "split" in result:
        lines = [f"# Evaluation: {result['split']} split, {scored_text(result)}", ""]
    else:
        n = result["volumes"]
        lines = [f"# Evaluation: {n} volume{'s' * (n != 1)} (HD95 in mm)", ""]
        cols[0] = "volume"
    lines += [
        f"Weights: {_md_code(str(result['weights']))}. Settings: {settings_text(result)}.",
        "",
        result["empty_mask_rule"],
        "",
    ]
    lines += [
        "| " + " | ".join(_head(result, c) for c in cols) + " |",
        "|" + "---|" * len(cols),
    ]
    for r in result["per_patient"]:
        cells = [_md_code(str(r["patient"]), in_table=True)]
        cells += [fmt(r[c]) if isinstance(r.get(c), float) else _md(str(r.get(c, ""))) for c in cols[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    heads = [f"{_head(result, m)} mean" for m in METRICS]
    if has_variants(result):
        lines += ["", VARIANTS_NOTE + "."]
    lines += ["", "| variant | " + " | ".join(heads) + " | Dice median | Dice std | Dice min | FP slices (total) |"]
    lines.append("|" + "---|" * (len(METRICS) + 5))
    for name in variant_order(result["summary"]):
        s = result["summary"][name]
        vals = [fmt(s[m]["mean"]) for m in METRICS] + [fmt(s["dice"][k]) for k in ("median", "std", "min")]
        vals.append(str(s.get("fp_slices", "n/a")))
        lines.append(f"| {variant_label(name)} | " + " | ".join(vals) + " |")
    notes = (tumor_free_note(result, what), hd95_note(result, what), slice_dice_note(result, what),
             slice_hd95_note(result, what))  # fmt: skip
    for note in notes:
        if note:
            lines += ["", note + "."]
    noted = [f"- {_md_code(r['patient'])}: {_md(n)}" for r in result["per_patient"] for n in r.get("notes", [])]
    if noted:
        lines += ["", "Notes:", *noted]
        if any("close call" in n for n in noted):
            lines += ["", "`--all-parts` keeps every region the largest-region step would drop."]
    if result.get("failed"):
        lines += ["", "Not scored:", *(f"- {_md(f['image'])}: {_md(f['error'])}" for f in result["failed"])]
    mean = fmt(result["summary"]["chosen"]["dice"]["mean"])
    lines += ["", f"Mean per-{what} Dice {mean}; {interval_text(result, what)}."]
    return "\n".join(lines) + "\n"
