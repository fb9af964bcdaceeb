"""`evaluate`: score a checkpoint per patient at the original resolution, beside a no-tumor baseline."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .checkpoint import load_checkpoint
from .data.lgg import find_cases, load_case
from .errors import TumorsegError
from .evaluation_text import (
    METRICS,
    counted,
    empty_mask_rule,
    fmt,
    fmt_hd,
    interval_text,
    markdown,
    print_table,
    tumor_free_note,
)
from .infer import (
    Predictor,
    default_weights,
    drop_minor_components_3d,
    keep_largest_3d,
    postprocess,
    remove_small_components,
    volume_order,
)
from .io import Log, atomic_write_text
from .metrics import score_volume, summarize

if TYPE_CHECKING:
    from .volume import Volume

COLUMNS = ["patient", "slices", "tumor_slices", "dice", "iou", "precision", "recall", "hd95", "accuracy",
           "slice_dice", "slice_hd95", "fp_slices", "baseline_dice", "baseline_accuracy"]  # fmt: skip
# channels of an `all` slice replaced by FLAIR (channel 1), as the LGG dataset fills a missing sequence
MISSING = {"no_pre_t1": (0,), "no_post_t1": (2,), "flair_only": (0, 2)}
EMPTY_RULE = empty_mask_rule()


def without_sequences(images: np.ndarray, missing: tuple[int, ...]) -> np.ndarray:
    """uint8 (N, 3, H, W) slices with the channels `missing` replaced by FLAIR."""
    out = images.copy()
    out[:, list(missing)] = images[:, 1:2]
    return out


def select_patients(ckpt_meta: dict, split: str, available: list[str], data: Path, weights: Path) -> list[str]:
    """The patients to score: the checkpoint run's saved split, or every patient for `all`."""
    if split == "all":
        return sorted(available)
    saved = ckpt_meta.get("split")
    if not saved or split not in saved:
        raise TumorsegError(f"{weights}: the checkpoint holds no saved {split!r} split; use --split all")
    ids = saved[split]
    missing = sorted(set(ids) - set(available))
    if missing:
        raise TumorsegError(
            f"{data}: {len(missing)} patients of the checkpoint's {split} split are missing "
            f"(e.g. {missing[0]}); use --split all to score whatever is there"
        )
    if not ids:
        raise TumorsegError(f"{weights}: the checkpoint's {split} split is empty")
    return list(ids)


def gap_note(numbers: list[int]) -> str:
    """Why `predict` on a patient's files with gaps in their numbers gives other masks than those scored."""
    have = set(numbers)
    missing = [n for n in range(min(numbers), max(numbers) + 1) if n not in have]
    shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    return (f"slices {min(numbers)}-{max(numbers)} lack {shown}: scored as one patient, the largest 3D part kept "
            "(never joined across a gap); `tumorseg predict` on these files segments them one by one, since it cannot "
            "tell a gap from unrelated files, so its masks keep every part")  # fmt: skip


def evaluate(
    data: str | Path,
    weights: str | Path | None = None,
    split: str = "test",
    out: str | Path | None = None,
    threshold: float = 0.5,
    tta: bool = False,
    min_size: int = 0,
    report: bool = False,
    fill_holes: bool = True,
    largest: bool = True,
    compare_min_size: int = 50,
    batch_size: int = 32,
    backend: str = "auto",
    missing: bool = False,
    log: Log = print,
) -> dict:
    """Score `weights` on the patients of `split`, per patient and per slice.

    Predictions are made at the model's size and resized back to each slice's own size
    (256x256 here) before scoring. Beside the chosen setting (threshold, `tta`,
    `min_size`, `fill_holes`, `largest`), it scores the plain thresholded model, hole filling,
    flip TTA, removal of small components and keeping the largest 3D component, so each
    step's effect is measured, and an always-empty baseline. `missing` also scores the chosen
    setting with pre-contrast T1, post-contrast T1 or both replaced by FLAIR (`MISSING`).
    """
    data = Path(data)
    weights = Path(weights) if weights else default_weights()
    ckpt = load_checkpoint(weights)
    cfg = ckpt.config.model
    predictor = Predictor.from_checkpoint(weights, backend, batch_size=batch_size, threshold=threshold,
                                          min_size=min_size, fill_holes=fill_holes, largest=largest)  # fmt: skip
    if missing and cfg.channels != "all":
        raise TumorsegError(f"{weights}: --missing-sequences needs a model of all 3 sequences (this one: FLAIR)")
    wanted = None if split == "all" else (ckpt.meta.get("split") or {}).get(split)
    cases = {c.id: c for c in find_cases(data, ids=wanted)}  # a broken patient outside the split stops nothing
    ids = select_patients(ckpt.meta, split, list(cases), data, weights)
    log(f"scoring {counted(len(ids), 'patient')} ({split} split) with {weights} on the {predictor.backend} backend")

    variants = {
        "model": [],
        "fill_holes": [],
        "tta": [],
        f"min_size_{compare_min_size}": [],
        "cc3d_10": [],
        "largest_3d": [],
        "chosen": [],
        "baseline": [],
    }
    if cfg.context:
        variants["single_slices"] = []  # a 2.5D model shown each slice alone, as the web page does
    if missing:
        variants.update({k: [] for k in MISSING})
    rows, strips_input, failed = [], {}, []
    t0 = time.perf_counter()
    for pid in ids:
        try:
            case = load_case(cases[pid], None, cfg.channels)
        except (TumorsegError, OSError) as exc:  # one broken slice: the other patients are still scored
            failed.append({"image": str(cases[pid].images[0].parent), "error": str(exc)})
            log(f"  {pid}: failed: {exc}")
            continue
        if case.blank_masks:
            log(
                f"  warning: {case.blank_masks[0]}"
                + (f" and {len(case.blank_masks) - 1} more of {pid}'s masks" if len(case.blank_masks) > 1 else "")
                + ": not all 0, but no value above 127, so read as no tumor (`tumorseg check-data` lists such masks)"
            )
        truth = case.full_masks
        numbers = case.numbers
        plain = predictor.probabilities(case.images, volume=True, numbers=numbers)
        flipped = (plain + predictor.probabilities(case.images, flip=True, volume=True, numbers=numbers)) / 2
        chosen_probs = flipped if tta else plain
        chosen, notes, dropped = predictor.mask_parts(chosen_probs, volume=True, numbers=numbers)
        if largest and numbers is not None and max(numbers) - min(numbers) + 1 != len(numbers):  # no repeats: a gap
            notes = [gap_note(numbers)] + notes
        filled = postprocess(plain)
        scored = {
            "model": score_volume(plain > 0.5, truth),
            "fill_holes": score_volume(filled, truth),
            "tta": score_volume(flipped > 0.5, truth),
            f"min_size_{compare_min_size}": score_volume(remove_small_components(plain > 0.5, compare_min_size), truth),
            "cc3d_10": score_volume(drop_minor_components_3d(plain > 0.5, 0.1, numbers), truth),
            "largest_3d": score_volume(keep_largest_3d(filled, numbers), truth),
            "chosen": score_volume(chosen, truth),
            "baseline": score_volume(np.zeros_like(truth), truth),
        }
        if cfg.context:
            scored["single_slices"] = score_volume(postprocess(predictor.probabilities(case.images)), truth)
        for name, chans in MISSING.items() if missing else ():
            img = without_sequences(case.images, chans)
            p = predictor.probabilities(img, volume=True, numbers=numbers)
            if tta:
                p = (p + predictor.probabilities(img, flip=True, volume=True, numbers=numbers)) / 2
            scored[name] = score_volume(predictor.mask_with_notes(p, volume=True, numbers=numbers)[0], truth)
        for k, v in scored.items():
            variants[k].append(v)
        s = scored["chosen"]
        row = {"patient": pid, **{k: s[k] for k in COLUMNS if k in s}}
        row["baseline_dice"] = scored["baseline"]["dice"]
        row["baseline_accuracy"] = scored["baseline"]["accuracy"]
        row["notes"] = notes
        rows.append(row)
        if report:
            strips_input[pid] = (case, chosen, dropped)  # the last: what the largest-region step removed
        log(f"  {pid}: Dice {s['dice']:.3f}  HD95 {fmt_hd(s['hd95'], 'px')}  ({counted(len(truth), 'slice')})")
        for note in notes:
            log(f"  {pid}: {note}")
    seconds = time.perf_counter() - t0
    if not rows:
        raise TumorsegError(f"no patient could be scored: {failed[0]['error']}" if failed else "no patients to score")

    summary = {name: {m: summarize([v[m] for v in vals]) for m in METRICS} for name, vals in variants.items()}
    for name, vals in variants.items():
        summary[name]["fp_slices"] = int(sum(v["fp_slices"] for v in vals))
        summary[name]["empty_slices"] = int(sum(v["empty_slices"] for v in vals))
    result = {
        "weights": str(weights),
        "data": str(data),
        "split": split,
        "hd95_unit": "px",
        "patients": len(rows),
        "settings": {
            "threshold": threshold,
            "tta": tta,
            "min_size": min_size,
            "fill_holes": fill_holes,
            "largest": largest,
            "compare_min_size": compare_min_size,
            "missing_sequences": missing,
        },
        "model_config": json.loads(cfg.model_dump_json()),
        "seconds": seconds,
        "backend": predictor.backend,
        "per_patient": rows,
        "summary": summary,
        "empty_mask_rule": EMPTY_RULE,
        "failed": failed,
    }
    print_table(result, log)
    if failed:
        log(f"{len(failed)} of {len(ids)} patients failed (named above): the means are over the other {len(rows)}")
    if out:
        write_outputs(result, Path(out), weights, strips_input if report else None, log)
    return result


def _finite(obj):
    """`obj` with every NaN or infinite float replaced by None (JSON's null)."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    if isinstance(obj, (float, np.floating)):
        return float(obj) if np.isfinite(obj) else None
    return obj


def write_outputs(result: dict, out: Path, weights: Path, strips_input: dict | None, log: Log = print) -> None:
    """evaluation.json, evaluation.md and (with `strips_input`) report.html in `out`. Each is tried
    even when one fails (a full disk, a folder in its place); then a TumorsegError names them all."""
    failed = []

    def write(name: str, text) -> None:
        try:
            atomic_write_text(out / name, text())
        except OSError as exc:
            failed.append(f"{out / name}: cannot write ({exc.strerror or exc})")

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TumorsegError(f"{out}: cannot create the output folder ({exc.strerror or exc}); "
                            "the scores above were printed but not saved") from None  # fmt: skip
    # strict JSON: an undefined value (n/a, NaN here) is written as null
    write("evaluation.json", lambda: json.dumps(_finite(result), indent=2, allow_nan=False))
    write("evaluation.md", lambda: markdown(result))
    if strips_input is not None:
        from .report import build_report

        write("report.html", lambda: build_report(result, strips_input, weights))
    elif (out / "report.html").exists():
        log(f"warning: {out / 'report.html'} is from an earlier evaluation, not this one (add --report to redo it)")
    if failed:
        raise TumorsegError("; ".join(failed) + ". The scores above were printed; the files not named were written")
    names = ["evaluation.json", "evaluation.md"] + (["report.html"] if strips_input is not None else [])
    log(f"wrote {', '.join(names)} in {out}")


def mask_values_notes(mask: np.ndarray, path: Path) -> list[str]:
    """What to say of a truth mask volume that is not 0 and one other value: a label map (BraTS's
    1, 2, 4) or, with many values, an image given as the mask. Every voxel above 0 is tumor."""
    mask = np.asarray(mask)
    values = np.unique(mask[mask != 0])
    if len(values) <= 1 and not (values < 0).any():
        return []
    rule = "every voxel above 0 is read as tumor"
    if len(values) > 16 and values.min() > 0 and values.max() <= 1:
        return [f"{path}: the mask holds {len(values)} values between 0 and 1, as a mask resampled with "
                f"interpolation does: {rule}; resample masks with nearest neighbour"]  # fmt: skip
    if (values < 0).any() or len(values) > 16:
        return [f"{path}: the mask holds {len(values)} values other than 0, from {values.min():g} to "
                f"{values.max():g}, like an image: were --image and --mask swapped? {rule}"]  # fmt: skip
    return [f"{path}: the mask holds the values {', '.join(f'{v:g}' for v in values)} (labels?): {rule}"]


def read_pairs_csv(path: str | Path) -> list[tuple[Path, Path]]:
    """A CSV with columns `image,mask` (paths relative to the CSV's folder; a byte-order mark, blank
    lines, other columns and spaces around names are allowed). Every row is checked before any
    volume is scored: a blank cell, a cell beyond the header's or a path that does not exist is
    refused, naming its line in the file."""
    import csv

    path = Path(path)
    header, rows = None, []
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            end = 0  # the line the last row ended on: a quoted cell may hold line breaks
            for cells in reader:
                start, end = end + 1, reader.line_num
                cells = [c.strip() for c in cells]
                if not any(cells):
                    continue
                if header is None:
                    header = cells
                else:
                    rows.append((start, cells))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise TumorsegError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None
    if not rows or header is None or not {"image", "mask"} <= set(header):
        raise TumorsegError(f"{path}: expected a header line 'image,mask' and one row per volume")
    col = {name: header.index(name) for name in ("image", "mask")}
    pairs, problems = [], []
    for line, cells in rows:
        if any(cells[len(header) :]):
            problems.append(f"line {line}: {len(cells)} cells, the header names {len(header)}")
            continue
        r = {name: cells[i] if i < len(cells) else "" for name, i in col.items()}
        for name in ("image", "mask"):
            if not r[name]:
                problems.append(f"line {line}: no {name}")
            elif not (path.parent / r[name]).exists():
                problems.append(f"line {line}: {name} {path.parent / r[name]} does not exist")
        pairs.append((path.parent / r["image"], path.parent / r["mask"]))
    if problems:
        raise TumorsegError(f"{path}: {'; '.join(problems[:5])}{' ...' if len(problems) > 5 else ''}")
    return pairs


def align_mask(mask: Volume, image: Volume, log: Log = print) -> Volume:
    """The truth `mask` (a Volume) in the `image`'s voxel order: a mask stored in another orientation
    (LPS beside RAS, axes swapped) is reoriented by its affine, with a note; one whose affine differs
    otherwise (a shift, other spacing) is scored voxel by voxel, with a warning."""
    from .volume import in_voxel_order_of

    mask, said = in_voxel_order_of(mask, image)
    if said:
        log(f"  {said}")
    if not np.allclose(mask.affine, image.affine, atol=1e-3):
        log(
            f"  warning: {mask.source}: its affine differs from the image's (position or spacing); "
            "scored voxel by voxel, as if they were aligned"
        )
    return mask


def evaluate_volumes(
    pairs: list[tuple[Path, Path]],
    weights: str | Path | None = None,
    out: str | Path | None = None,
    threshold: float = 0.5,
    tta: bool = False,
    min_size: int = 0,
    backend: str = "auto",
    fill_holes: bool = True,
    largest: bool = True,
    log: Log = print,
    batch_size: int = 32,
) -> dict:
    """Score image volumes (NIfTI or DICOM series) against NIfTI masks, one row per volume,
    HD95 in mm from the voxel spacing."""
    from .volume import mask_slices, read_nifti, read_volume, slice_spacing, volume_slices

    weights = Path(weights) if weights else default_weights()
    predictor = Predictor.from_checkpoint(weights, backend, batch_size=batch_size, threshold=threshold,
                                          min_size=min_size, tta=tta, fill_holes=fill_holes,
                                          largest=largest)  # fmt: skip
    rows, failed = [], []
    for image_path, mask_path in pairs:
        try:
            vol = read_volume(image_path)
            truth_vol = read_nifti(mask_path)
            if truth_vol.array.ndim != 3:
                raise TumorsegError(f"{mask_path}: a mask is one 3D volume; this one has shape {truth_vol.array.shape}")
            truth_vol = align_mask(truth_vol, vol, log)
            if truth_vol.array.shape[:3] != vol.array.shape[:3]:
                raise TumorsegError(f"{mask_path}: mask shape {truth_vol.array.shape} differs from image "
                                    f"{vol.array.shape}")  # fmt: skip
            slices, said = volume_slices(vol, predictor.config.channels)
            pred, notes = predictor.segment_with_notes(slices, volume=True, order=volume_order(vol.oriented))
        except (TumorsegError, OSError) as exc:  # the others are still scored and written
            failed.append({"image": str(image_path), "mask": str(mask_path), "error": str(exc)})
            log(f"  failed: {exc}")
            continue
        notes = [*said, *notes, *mask_values_notes(truth_vol.array, mask_path)]
        truth = mask_slices(truth_vol.array, vol)
        s = score_volume(pred, truth, slice_spacing(vol))
        base = score_volume(np.zeros_like(truth), truth)
        rows.append({"patient": str(image_path), **{k: s[k] for k in COLUMNS if k in s}, "hd95_unit": "mm",
                     "baseline_dice": base["dice"], "baseline_accuracy": base["accuracy"], "notes": notes})  # fmt: skip
        log(f"  {image_path}: Dice {s['dice']:.3f}  HD95 {fmt_hd(s['hd95'], 'mm')}")
        for note in notes:
            log(f"  {image_path}: {note}")
    if not rows:
        raise TumorsegError(f"no volume could be scored: {failed[0]['error']}" if failed else "no volumes given")
    summary = {"chosen": {m: summarize([r[m] for r in rows]) for m in METRICS}}
    summary["chosen"]["fp_slices"] = int(sum(r["fp_slices"] for r in rows))
    result = {"weights": str(weights), "backend": predictor.backend, "volumes": len(rows), "per_patient": rows,
              "summary": summary,
              "settings": {"threshold": threshold, "tta": tta, "min_size": min_size, "fill_holes": fill_holes,
                           "largest": largest},
              "empty_mask_rule": empty_mask_rule("mm"),
              "hd95_unit": "mm", "failed": failed}  # fmt: skip
    d = summary["chosen"]["dice"]
    log(f"per-volume Dice: mean {fmt(d['mean'])}; {interval_text(result, 'volume')}; "
        f"median {fmt(d['median'])}, std {fmt(d['std'])}")  # fmt: skip
    if note := tumor_free_note(result, "volume"):
        log(note)
    if failed:
        log(f"{len(failed)} of {len(pairs)} volumes failed (named above); the others are scored")
    if out:
        write_outputs(result, Path(out), weights, None, log)
    return result
