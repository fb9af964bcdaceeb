"""`check-data`: validate a kaggle_3m folder without training.

Errors stop training: a slice without its mask (or the reverse), an unreadable file, a mask
whose size differs from its image. Warnings are reported: non-binary masks, duplicate
slices, patients without tumor, folders left out (also listed as `skipped_folders`, which
`train` always shows beside its first 10 other warnings). The class balance is summarised, and so are the patients that
lack a sequence (filled with a copy of FLAIR in every slice, as the LGG dataset does).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..io import Log, binary_masks, is_mask_path, masks_are_labels, read_image, read_mask
from .lgg import (
    SLICE_SUFFIXES,
    holds_patients,
    is_patient,
    is_run_folder,
    kaggle_root_hint,
    not_a_patient,
    same_slice_twice,
    say_skipped,
    slice_files_in,
    slice_number,
    slice_numbers,
)

# the channels of an RGB slice other than FLAIR (channel 1), by name
T1_CHANNELS = {0: "pre-contrast T1", 2: "post-contrast T1"}
FEWER_SEQUENCES = (
    "a model trained on all three sequences scores lower on such input (the shipped one: 0.70 against 0.84 "
    "mean per-patient Dice on its test patients with FLAIR alone; its model card, Missing sequences)"
)


def copied_sequences(images: np.ndarray) -> list[str]:
    """The T1 sequences that equal FLAIR in every slice of a (N, 3, H, W) stack, as the dataset fills
    a missing one and a grayscale image becomes; [] for other shapes."""
    if images.ndim != 4 or images.shape[1] != 3 or not len(images):
        return []
    return [name for c, name in T1_CHANNELS.items() if np.array_equal(images[:, c], images[:, 1])]


def fewer_sequences_note(images: np.ndarray) -> str | None:
    """What to tell the user about a (N, 3, H, W) stack whose T1s are copies of FLAIR, else None."""
    copied = copied_sequences(images)
    if not copied:
        return None
    kind = "a grayscale image or a filled-in sequence"
    return f"{' and '.join(copied)} equal FLAIR in every slice ({kind}): {FEWER_SEQUENCES}"


def _patient_inside(folder: Path) -> bool:
    """`is_patient`, and True for a folder that cannot be listed (said where it is listed)."""
    try:
        return is_patient(folder)
    except (DataError, OSError):
        return True


def check_data(root: str | Path, log: Log | None = None, limit: int = 0) -> dict:
    """Scan every patient folder under `root` (only the first `limit` with slices, in id order,
    when `limit` is set: those `train --max-patients` uses); returns a report (see module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist" if not root.exists() else f"{root}: not a folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not is_run_folder(p))  # `train --out` inside
    if not any(map(_patient_inside, folders)) and any(p.suffix.lower() in SLICE_SUFFIXES for p in root.iterdir()):
        folders = [root]  # slices in the root itself, as `find_cases` reads them
    errors: list[str] = []
    warnings: list[str] = []
    skipped: list[str] = []  # whole folders left out: also in warnings

    def skip(why: str) -> None:
        skipped.append(why)
        warnings.append(why)

    seen: dict[str, str] = {}
    missing: dict[str, list[str]] = {}
    patients, slices, tumor_slices, tumor_px, total_px = 0, 0, 0, 0, 0
    for folder in folders:
        if limit and patients >= limit:
            break
        try:
            listed = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES]
        except PermissionError:
            skip(f"{folder}: cannot list folder (permission denied); it is skipped")
            continue
        files = slice_files_in(listed)
        outputs = sorted(p.name for p in set(listed) - set(files) if not p.name.startswith("."))
        if outputs:
            shown = ", ".join(outputs[:3]) + (", ..." if len(outputs) > 3 else "")
            warnings.append(f"{folder}: {len(outputs)} file(s) that `predict` wrote here ({shown}) are not slices; "
                            "they are skipped")  # fmt: skip
        if not files:
            if not folder.name.startswith("."):
                inside = " but patient folders inside it, which are not searched" if holds_patients(folder) else ""
                skip(f"{folder}: no slices in this folder{inside}; it is skipped")
            continue
        if folder != root and (why := not_a_patient(folder, files)):
            skip(why)
            say_skipped(why, said_elsewhere=True)
            continue
        errors += same_slice_twice(files)
        images = {p.stem: p for p in files if not is_mask_path(p)}
        masks = {p.stem[: -len("_mask")]: p for p in files if is_mask_path(p)}
        errors += [f"{images[s]}: image has no mask" for s in sorted(set(images) - set(masks))]
        errors += [f"{masks[s]}: mask has no image" for s in sorted(set(masks) - set(images))]
        patients += 1
        patient_tumor = 0
        copies = list(T1_CHANNELS.values())  # sequences that equal FLAIR in every slice read so far
        first = slices
        sizes: dict[tuple[int, int], Path] = {}  # each slice size of this patient, and its first slice
        read: list[tuple[Path, np.ndarray]] = []  # each readable slice's mask path and mask
        for stem in sorted(set(images) & set(masks), key=lambda s: slice_number(images[s])):
            try:
                img, mask = read_image(images[stem]), read_mask(masks[stem])
            except DataError as exc:
                errors.append(str(exc))
                continue
            if img.shape[:2] != mask.shape:
                errors.append(f"{masks[stem]}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                              f"{img.shape[1]}x{img.shape[0]}")  # fmt: skip
                continue
            if img.ndim == 3 and img.shape[-1] not in (1, 3):
                errors.append(f"{images[stem]}: expected 1 or 3 channels, got {img.shape[-1]}")
                continue
            sizes.setdefault(img.shape[:2], images[stem])
            if img.ndim == 3 and img.shape[-1] >= 3:
                copies = [c for c in copied_sequences(img[None, ..., :3].transpose(0, 3, 1, 2)) if c in copies]
            digest = hashlib.sha1(img.tobytes()).hexdigest()
            if digest in seen and img.any():
                warnings.append(f"{images[stem]}: duplicate of {seen[digest]}")
            seen.setdefault(digest, str(images[stem]))
            read.append((masks[stem], mask))
        labels = masks_are_labels([m for _, m in read])  # the patient's rule, as training reads it
        for (path, mask), truth in zip(read, binary_masks([m for _, m in read], labels)):
            values = set(np.unique(mask).tolist())
            shown = sorted(values)
            shown = f"{shown[:6]}{'...' if len(shown) > 6 else ''}"
            if values == {0, 1}:
                warnings.append(f"{path}: mask holds 0 and 1, not 0 and 255; " + (
                    "1 is read as tumor" if labels else "its 1s are not tumor: this patient's other masks "
                    "go above 1, so all its masks are binarised at 128"))  # fmt: skip
            elif labels and not values <= {0, 1}:
                warnings.append(f"{path}: mask holds the labels {shown}, not 0 and 255; every value above 0 "
                                "is read as tumor")  # fmt: skip
            elif not labels and not values <= {0, 255}:
                warnings.append(
                    f"{path}: mask is not binary (values {shown}); it is binarised at 128"
                    + ("; none is above 127, so it holds no tumor" * (mask.any() and not truth.any()))
                )
            n = int(truth.sum())
            slices += 1
            tumor_slices += n > 0
            patient_tumor += n
            tumor_px += n
            total_px += mask.size
        if len(sizes) > 1:
            shown = ", ".join(f"{w}x{h} ({p.name})" for (h, w), p in sizes.items())
            errors.append(f"{folder}: slices of one patient differ in size: {shown}")
        if patient_tumor == 0:
            warnings.append(f"{folder}: patient has no tumor in any slice")
        numbers = sorted(slice_numbers(list(images.values())) or [])
        lacking = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers)) if numbers else []
        if lacking:
            shown = ", ".join(map(str, lacking[:5])) + (" ..." if len(lacking) > 5 else "")
            warnings.append(f"{folder}: slices numbered {numbers[0]}-{numbers[-1]} lack {len(lacking)} number(s) "
                            f"({shown}): a tumor that crosses a gap is split there by the largest-3D-part step, "
                            "which then keeps one side")  # fmt: skip
        if copies and slices > first:
            missing[folder.name] = copies
    if patients == 0:
        errors.append(f"{root}: no slices found (expected <CASE>/<CASE>_<n>.png|tif|jpg with _mask beside each)"
                      f"{kaggle_root_hint(Path(root))}")  # fmt: skip
    report = {
        "root": str(root),
        "patients": patients,
        "slices": slices,
        "slices_with_tumor": tumor_slices,
        "tumor_slice_fraction": tumor_slices / slices if slices else 0.0,
        "tumor_pixel_fraction": tumor_px / total_px if total_px else 0.0,
        "missing_sequences": missing,
        "errors": errors,
        "warnings": warnings,
        "skipped_folders": skipped,
    }
    if log:
        share = 100 * report["tumor_slice_fraction"]
        pixels = 100 * report["tumor_pixel_fraction"]
        log(f"{patients} patients, {slices} slices, {tumor_slices} with tumor ({share:.1f} %), "
            f"tumor pixels {pixels:.2f} %")  # fmt: skip
        if missing:
            who = "1 patient lacks" if len(missing) == 1 else f"{len(missing)} patients lack"
            log(f"{who} a sequence (a copy of FLAIR in its place): "
                + "; ".join(f"{pid} ({', '.join(names)})" for pid, names in missing.items()))  # fmt: skip
        for w in warnings:
            log(f"warning: {w}")
        for e in errors:
            log(f"error: {e}")
    return report
