"""`predict`: masks (and probabilities, overlays) for image files, written at each input's own size."""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from shlex import quote

import numpy as np

from .data.check import fewer_sequences_note
from .data.lgg import holds_patients, kaggle_root_hint, select_channels, slice_number, slice_numbers
from .dicom import is_dicom_series, looks_dicom, write_dicom_seg
from .errors import DataError, TumorsegError
from .infer import Predictor, volume_order
from .io import (
    IMAGE_SUFFIXES,
    OUTPUT_ENDINGS,
    VOLUME_SUFFIXES,
    Log,
    binary_masks,
    folder_names,
    image_pixels,
    is_mask_path,
    is_output_of_predict,
    masks_are_labels,
    read_image,
    read_mask,
    write_png,
)
from .viz import AXIAL_RADIOLOGICAL, display_window, flair_of, overlay, stack_strips
from .volume import (
    Volume,
    is_volume_path,
    mask_summary,
    mask_to_volume,
    millilitres,
    read_volume,
    stack_channels,
    volume_slices,
    volume_stem,
    write_nifti,
    write_summary,
)


@dataclass
class PredictResult:
    written: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)
    inputs: int = 0
    notes: list[str] = field(default_factory=list)  # e.g. close calls of the largest-part step
    warnings: list[str] = field(default_factory=list)  # outputs written without something, e.g. an overlay's truth


_ALL_SUFFIXES = (*IMAGE_SUFFIXES, *VOLUME_SUFFIXES)  # slices and volumes: what predict reads


def collect_inputs(inputs: list[str | Path], empty: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Image files and NIfTI volumes named directly or found in the given folders (not
    recursive); ground-truth masks (`_mask`) and an earlier run's outputs beside their inputs
    (`X_pred.png` next to `X.png`) left out.

    Raises TumorsegError when nothing is found. Otherwise a named folder with nothing to segment
    is added to `empty`, with the reason, when it is given.
    """
    files: list[Path] = []
    why: list[str] = []  # what the user may have meant, when nothing is found
    for item in map(Path, inputs):
        if is_dicom_series(item):
            files.append(item)
        elif item.is_dir():
            said = len(why)
            try:
                listing = list(item.iterdir())
            except PermissionError:
                raise TumorsegError(f"{item}: cannot list folder: permission denied") from None
            found = [p for p in listing if p.is_file() and not p.name.startswith(".")  # not macOS's `._X.png`
                     and (p.suffix.lower() in IMAGE_SUFFIXES or is_volume_path(p))]  # fmt: skip
            names = folder_names((p.name for p in found), _ALL_SUFFIXES)
            inputs_here = [p for p in found if not _is_truth(p) and not _is_output(p, names)]
            outputs = [p for p in inputs_here if p.name.endswith(OUTPUT_ENDINGS)]
            if outputs == inputs_here:  # a `predict --out` folder (or its masks/): never segmented as MRI
                inputs_here = []
            files += sorted(inputs_here, key=slice_number)
            if found and not inputs_here:  # say what is there and why none of it is read
                masks = len(found) - len(outputs)
                kinds = [f"{masks} truth mask(s) (`_mask`), which are never segmented"] * bool(masks) + [
                    f"{len(outputs)} output(s) of an earlier `tumorseg predict` (`_pred`, `_prob`, `_overlay`)"
                ] * bool(outputs)  # fmt: skip
                why.append(f"{item} holds only {' and '.join(kinds)}; the MRI slices they belong to are not there")
            if not found and any(p.is_dir() for p in listing):
                score = (f", or score them as a kaggle_3m folder with `tumorseg evaluate --data {quote(str(item))}`"
                         if holds_patients(item) else kaggle_root_hint(item))  # fmt: skip
                why.append(f"{item} holds folders, which are not searched: name the patient folders "
                           f"({quote(str(item))}/*){score}")  # fmt: skip
            if not found:  # nothing predict reads; a folder of masks or of an earlier run's outputs is skipped
                if len(why) == said:
                    why.append(_nothing_here(item, listing))
                if empty is not None:
                    empty.append((item, why[-1]))
        elif item.exists() or item.is_symlink():
            if _is_truth(item):
                why.append(
                    f"{item} is named as a truth mask (`_mask`), which is never segmented; rename it to segment it"
                )
                continue
            if looks_dicom(item):
                raise TumorsegError(f"{item}: a DICOM slice alone is not read; pass its series folder ({item.parent})")
            files.append(item)
        else:
            raise TumorsegError(f"{item}: no such file or folder")
    if not files:
        raise TumorsegError(f"no input images found in {', '.join(map(str, inputs))}" + "".join(f"; {w}" for w in why))
    unique: dict[str, Path] = {}  # a file named twice (itself and in its folder, or by a link) is read once
    for f in files:
        unique.setdefault(os.path.realpath(f), f)
    return list(unique.values())


def _nothing_here(folder: Path, listing: list[Path]) -> str:
    """Why a folder holding none of the files predict reads gave no input."""
    bare = sorted(p.name for p in listing if p.is_file() and not p.suffix and not p.name.startswith("."))
    dicom = (f"; its files without a suffix ({', '.join(bare[:2])}{', ...' * (len(bare) > 2)}) are read as "
             "DICOM only with DICOM's 128-byte preamble and 'DICM' marker: rewrite them as DICOM files "
             "(e.g. with dcmconv, or pydicom's save_as)") if bare else ""  # fmt: skip
    return (f"{folder} holds no MRI slices ({', '.join(IMAGE_SUFFIXES)}), NIfTI volumes "
            f"({', '.join(VOLUME_SUFFIXES)}) or DICOM series{dicom}")  # fmt: skip


def _is_truth(path: Path) -> bool:
    """A ground-truth file: `X_mask.png`, and `X_mask.nii.gz` for a volume."""
    return is_mask_path(path) or (is_volume_path(path) and volume_stem(path).endswith("_mask"))


def _is_output(path: Path, names: frozenset[str]) -> bool:
    """What an earlier `predict` with this folder as --out wrote beside its input: `X_pred.png`,
    `X_prob.png`, `X_overlay.png` (or `X_pred.nii.gz`) next to `X.<image or volume suffix>`
    (`names`: the folder's `folder_names` over `_ALL_SUFFIXES`)."""
    if is_volume_path(path):
        return is_output_of_predict(volume_stem(path), names, _ALL_SUFFIXES)
    return is_output_of_predict(path.stem, names)


def _output_stem(path: Path) -> str:
    return volume_stem(path) if is_volume_path(path) or path.is_dir() else path.stem


def volume_output_stems(inputs: list[str | Path]) -> list[str]:
    """The names the volume inputs among `inputs` write their outputs under (`X` of `X_pred.nii.gz`)."""
    return [_output_stem(f) for f in collect_inputs(inputs) if is_volume_path(f) or f.is_dir()]


def find_truth(path: Path) -> Path | None:
    for suffix in (path.suffix, *IMAGE_SUFFIXES):
        cand = path.with_name(f"{path.stem}_mask{suffix}")
        if cand.is_file():
            return cand
    return None


def predict_files(
    inputs: list[str | Path],
    out: str | Path,
    predictor: Predictor,
    probabilities: bool = False,
    overlays: bool = False,
    batch_size: int = 32,
    log: Log = print,
    err: Log | None = None,
) -> PredictResult:
    """Segment every input; a failing file is reported and the others are still written.

    Progress and notes go to `log`; each failure and warning to `err` (default: stderr), once.

    Writes `OUT/X_pred.png` (uint8 {0, 255}, the input's height and width) for each input
    `X.ext`; with `probabilities`, `X_prob.png` (0..255); with `overlays`, `X_overlay.png`.
    """
    out = Path(out)
    err = err or (lambda msg: print(msg, file=sys.stderr))
    empty: list[tuple[Path, str]] = []
    files = collect_inputs(inputs, empty)
    volumes = [f for f in files if is_volume_path(f) or f.is_dir()]
    files = [f for f in files if f not in volumes]
    readable = [f for f in files if f.suffix.lower() in IMAGE_SUFFIXES]  # the others fail alone, named
    for group in (volumes, readable):  # checked before anything is written
        stems = [_output_stem(f) for f in group]
        if len(set(stems)) != len(stems):
            dup = next(s for s in stems if stems.count(s) > 1)
            names = ", ".join(str(f) for f, s in zip(group, stems) if s == dup)
            raise TumorsegError(f"two inputs share the name {dup!r} ({names}); their outputs would collide")
    make_out_dir(out)
    result = PredictResult(inputs=len(files) + len(volumes) + len(empty))
    for folder, why in empty:  # named, so counted: the others are still segmented
        result.failed.append((folder, why))
        err(f"failed: {why}")
    if volumes and probabilities:  # a volume gets its mask, summary and (asked for) overlay
        result.warnings.append(f"--probabilities: written for 2D slices only, not for the {len(volumes)} NIfTI or "
                               "DICOM volume(s), which get X_pred.nii.gz and X_summary.json")  # fmt: skip
        err(f"warning: {result.warnings[-1]}")
    for path in volumes:
        try:
            vol = read_volume(path)
            result.written += predict_volume(vol, out / volume_stem(path), predictor, log=log, found=result.notes,
                                             overlays=overlays)  # fmt: skip
        except (OSError, DataError) as exc:
            result.written += getattr(exc, "written", [])  # a mask written before its summary failed
            result.failed.append((path, str(exc)))
            err(f"failed: {exc}" if isinstance(exc, DataError) else f"failed: {path}: {exc}")
    channels = predictor.config.channels
    chunks, notes = _chunks(files, batch_size)
    for note in notes:
        result.notes.append(note)
        log(note)
    for chunk, series in chunks:
        loaded: dict[tuple[int, int], list[tuple[Path, np.ndarray]]] = {}
        for path in chunk:
            try:
                img = select_channels(read_image(path), channels, path)
            except DataError as exc:
                result.failed.append((path, str(exc)))
                err(f"failed: {exc}")
                continue
            loaded.setdefault(img.shape[-2:], []).append((path, img))
        read = sum(len(g) for g in loaded.values())
        if series and (read < len(chunk) or len(loaded) > 1):  # not the gap-free volume its names promised
            why = "a slice could not be read" if read < len(chunk) else "slices of different sizes"
            note = (f"{chunk[0].parent / series_key(chunk[0])[1]}*: {len(chunk)} numbered slices ({why}) "
                    "segmented one by one, not as one volume: no largest-3D-part step")  # fmt: skip
            result.notes.append(note)
            log(note)
            series = False
        for group in loaded.values():
            images = np.stack([img for _, img in group])
            numbers = slice_numbers([p for p, _ in group]) if series else None
            probs = predictor.predict(images, volume=series, numbers=numbers)
            # dropped: what the largest-region step removed, outlined on the overlays for a reader to judge
            masks, notes, dropped = predictor.mask_parts(probs, volume=series, numbers=numbers)
            said = [f"{group[0][0].parent / series_key(group[0][0])[1]}*: {note}" for note in notes]
            if series and (note := fewer_sequences_note(images)):
                said.append(f"{group[0][0].parent / series_key(group[0][0])[1]}*: {note}")
            elif not series:  # lone slices: each one judged alone, and named
                alone = [(p, note) for (p, _), img in zip(group, images) if (note := fewer_sequences_note(img[None]))]
                if alone:
                    names = ", ".join(p.name for p, _ in alone[:3]) + (f" and {len(alone) - 3} more" * (len(alone) > 3))
                    said.append(f"{alone[0][0].parent}: {names}: {alone[0][1]}")
            for note in said:
                result.notes.append(note)
                log(note)
            labels = _truths_are_labels([p for p, _ in group]) if overlays and series else None
            for (path, img), prob, mask, gone in zip(group, probs, masks, dropped):
                seen = len(result.warnings)
                try:
                    _write_one(out, path, img, prob, mask, probabilities, overlays, result.warnings, result.written,
                               labels, gone)  # fmt: skip
                except (OSError, DataError) as exc:
                    result.failed.append((path, str(exc)))
                    err(f"failed: {path}: {exc}")
                for w in result.warnings[seen:]:
                    err(f"warning: {w}")
    stale = _stale_outputs(out, files, probabilities, overlays)
    if stale:  # not removed: they are the user's files
        more = f" and {len(stale) - 1} more" if len(stale) > 1 else ""
        result.warnings.append(f"{stale[0]}{more}: from an earlier run, not this one (they no longer match the "
                               "new _pred.png files; remove them or add the option that writes them)")  # fmt: skip
        err(f"warning: {result.warnings[-1]}")
    return result


def _stale_outputs(out: Path, files: list[Path], probabilities: bool, overlays: bool) -> list[Path]:
    """The `_prob.png` and `_overlay.png` files in `out`, for inputs of this run, that this run did not write."""
    kinds = [k for k, on in (("_prob.png", probabilities), ("_overlay.png", overlays)) if not on]
    return [out / f"{f.stem}{k}" for f in files for k in kinds if (out / f"{f.stem}{k}").is_file()]


SERIES_NUMBER = re.compile(r"[_\-. ](\d+)$")  # `X_12`, `X-12`, `X.12`, `X 12`; not `scan12`
MIN_SERIES = 3


def series_key(path: Path) -> tuple[str, str, bool]:
    """Slices of one series share a folder and a name up to a trailing number set off by `_`,
    `-`, `.` or a space (`TCGA_CS_4941_19960909_12.tif` -> `TCGA_CS_4941_19960909_`); any other
    name is a series of its own."""
    stem = slice_number(path)[1]
    m = SERIES_NUMBER.search(stem)
    return str(path.parent), stem[: m.start(1)] if m else stem, m is not None


def _chunks(files: list[Path], size: int) -> tuple[list[tuple[list[Path], bool]], list[str]]:
    """(files, is_series) chunks and notes. Each numbered series (`series_key`) of at least
    MIN_SERIES slices numbered without gaps is one chunk, whole and in slice order, taken as one
    volume (per-volume scaling, 2.5D neighbours, the largest 3D component). Every other file
    goes in chunks of `size`, each slice on its own; a numbered group left out of a series is
    named in a note, since its slices then keep every part they have."""
    groups: dict[tuple[str, str, bool], list[Path]] = {}
    lone, notes, chunks = [], [], []
    for f in files:
        key = series_key(f)
        (groups.setdefault(key, []) if key[2] else lone).append(f)
    for (folder, prefix, _), group in groups.items():
        numbers = sorted(int(SERIES_NUMBER.search(slice_number(f)[1]).group(1)) for f in group)
        gaps = len(set(numbers)) != len(numbers) or numbers[-1] - numbers[0] + 1 != len(numbers)
        if len(group) >= MIN_SERIES and not gaps:
            chunks.append((sorted(group, key=slice_number), True))
            continue
        lone.extend(group)
        if len(group) > 1:
            why = (
                f"fewer than {MIN_SERIES}"
                if len(group) < MIN_SERIES
                else f"numbers {numbers[0]}-{numbers[-1]} with gaps or repeats"
            )
            notes.append(f"{Path(folder) / prefix}*: {len(group)} numbered slices ({why}) segmented one by one, "
                         "not as one volume: no largest-3D-part step")  # fmt: skip
    return chunks + [(c, False) for c in _budgeted(lone, size)], notes


PIXEL_BUDGET = 16 * 1024 * 1024  # pixels of lone slices held at once (an 8000x8000 slice needs ~3 GB)


def _budgeted(files: list[Path], size: int, budget: int = PIXEL_BUDGET) -> list[list[Path]]:
    """`files` in chunks of at most `size` files and `budget` pixels (read from the headers), so
    that a folder of large images is not all held in memory at full size at once."""
    chunks: list[list[Path]] = []
    pixels = 0
    for f in files:
        n = image_pixels(f)
        if not chunks or len(chunks[-1]) >= size or (pixels + n > budget and chunks[-1]):
            chunks.append([])
            pixels = 0
        chunks[-1].append(f)
        pixels += n
    return chunks


def make_out_dir(out: Path) -> None:
    """Create the output folder, refusing a path that is a file."""
    if out.exists() and not out.is_dir():
        raise TumorsegError(f"{out}: --out must be a folder, and this is a file")
    out.mkdir(parents=True, exist_ok=True)


def _write_one(
    out: Path, path: Path, img, prob, mask, probabilities: bool, overlays: bool, warnings: list[str],
    written: list[Path], labels: bool | None = None, dropped: np.ndarray | None = None,
) -> None:  # fmt: skip
    """A slice's outputs, each added to `written` once it is on disk (a full disk may stop the
    next one: what was written is still counted). `dropped`: what the largest-region step removed
    from this slice, outlined on its overlay."""
    target = out / f"{path.stem}_pred.png"
    write_png(target, (mask * 255).astype(np.uint8))
    written.append(target)
    if probabilities:
        target = out / f"{path.stem}_prob.png"
        write_png(target, np.round(prob * 255).astype(np.uint8))
        written.append(target)
    if overlays:
        truth = _overlay_truth(find_truth(path), mask.shape, warnings, labels)
        target = out / f"{path.stem}_overlay.png"
        write_png(target, overlay(img, mask, truth, title=path.name, dropped=dropped))
        written.append(target)


def _truths_are_labels(paths: list[Path]) -> bool:
    """Whether the readable truth masks beside one series' slices are labels, tumor above 0: the
    rule its masks are binarised by, as `binary_masks` decides for a patient (unreadable ones are
    said when their overlay is drawn)."""
    values = []  # each mask's values: enough to decide, without holding the masks
    for truth_path in filter(None, map(find_truth, paths)):
        try:
            values.append(np.unique(read_mask(truth_path)))
        except DataError:
            pass
    return masks_are_labels(values)


def _overlay_truth(
    truth_path: Path | None, shape: tuple[int, ...], warnings: list[str], labels: bool | None = None
) -> np.ndarray | None:
    """The truth mask beside a slice, for its overlay, binarised by its series' rule (`labels`: above 0,
    else above 127) or, for a lone slice (None), by its own values; None, with a warning, when it
    cannot be read or its size differs (the prediction stands either way)."""
    if truth_path is None:
        return None
    try:
        t = read_mask(truth_path)
    except DataError as exc:
        warnings.append(f"{exc}; overlay drawn without it")
        return None
    if t.shape != shape:
        warnings.append(f"{truth_path}: mask is {t.shape[1]}x{t.shape[0]} but its image is "
                        f"{shape[1]}x{shape[0]}; overlay drawn without it")  # fmt: skip
        return None
    return binary_masks([t], labels)[0]


def volume_overlay(
    slices: np.ndarray, masks: np.ndarray, dropped: np.ndarray, name: str, most: int = 6, oriented: bool = True
) -> np.ndarray:
    """Up to `most` axial slices of a volume, inferior to superior, each as MRI | prediction |
    overlay (`overlay`, what the largest-region step dropped outlined): spread over the slices
    with tumor, or with a dropped region, or the middle slice when there is neither. Drawn as
    `volume_slices` cuts them: radiological view, the patient's right on the image's left, with
    R/L/A/P letters at the edges, unless the file stated no orientation (`oriented` False)."""
    areas = (masks | dropped).reshape(len(masks), -1).sum(1)
    shown = np.flatnonzero(areas) if areas.any() else np.array([len(masks) // 2])
    if len(shown) > most:  # spread over the tumor's extent, its largest slice among them
        picks = shown[np.round(np.linspace(0, len(shown) - 1, most)).astype(int)]
        largest = int(np.argmax(areas))
        picks[np.argmin(abs(picks - largest))] = largest  # in place of its nearest pick
        shown = np.unique(picks)
    last = len(masks) - 1
    window = display_window(flair_of(slices))  # one display window for the volume: its slices stay comparable
    letters, view = (AXIAL_RADIOLOGICAL, "0 the most inferior; the patient's right on the left") if oriented else (
        None, "in the file's order; its orientation is not stated")  # fmt: skip
    strips = [overlay(slices[i], masks[i], None, dropped=dropped[i], window=window, letters=letters,
                      title=f"{name}  slice {i} of 0-{last}, {view}")
              for i in shown]  # fmt: skip
    return stack_strips(strips)


def predict_volume(
    vol: Volume,
    prefix: Path,
    predictor: Predictor,
    notes: Sequence[str] = (),
    log: Log = print,
    found: list[str] | None = None,
    overlays: bool = False,
) -> list[Path]:
    """Segment a volume slice by slice; write PREFIX_pred.nii.gz (uint8 {0, 1}, the input's
    shape and affine), PREFIX_summary.json (tumor volume in mL, slices, largest section,
    notes) and, with `overlays`, PREFIX_overlay.png (`volume_overlay`). The model's notes (a
    close call of the largest-part step) are also added to `found`."""
    slices, more = volume_slices(vol, predictor.config.channels)
    notes = [*notes, *more]
    probs = predictor.predict(slices, volume=True)
    masks, said, dropped = predictor.mask_parts(probs, volume=True, order=volume_order(vol.oriented))
    notes += said
    if found is not None:
        found += [f"{vol.source}: {n}" for n in said]
    for n in notes:
        log(f"{vol.source}: {n}")
    mask_path = prefix.parent / f"{prefix.name}_pred.nii.gz"
    mask_vol = mask_to_volume(masks, vol)
    write_nifti(mask_path, mask_vol, vol)
    written = [mask_path]
    if vol.dicom_sources:
        try:
            seg_path = prefix.parent / f"{prefix.name}_seg.dcm"
            write_dicom_seg(seg_path, mask_vol, vol)
            written.append(seg_path)
        except OSError as exc:  # a full disk: a failure, as for the summary; the mask on disk is counted
            failed = OSError(f"cannot write {seg_path}: {exc.strerror or exc}; written before it: {mask_path.name}")
            failed.written = written
            raise failed from exc
        except Exception as exc:  # what highdicom refuses: the NIfTI mask stands; say why there is no SEG
            tag = getattr(exc, "name", None) if isinstance(exc, AttributeError) else None
            why = f"the series lacks the DICOM attribute {tag}, which a SEG needs" if tag else (
                f"{type(exc).__name__}: {str(exc)[:200]}")  # fmt: skip
            notes.append(f"no DICOM SEG written: {why}")
            log(f"{vol.source}: {notes[-1]}")
    if overlays:
        target = prefix.parent / f"{prefix.name}_overlay.png"
        try:
            write_png(target, volume_overlay(slices, masks, dropped, prefix.name, oriented=vol.oriented))
            written.append(target)
        except OSError as exc:  # the mask stands, and is counted: say why there is no overlay
            notes.append(f"no overlay written: {target}: {exc.strerror or exc}")
            log(f"{vol.source}: {notes[-1]}")
    summary = {"input": vol.source, "mask": str(mask_path), "notes": notes, **mask_summary(masks, vol),
               "disclaimer": "Not a medical device. For research use only."}  # fmt: skip
    summary_path = prefix.parent / f"{prefix.name}_summary.json"
    summary["outputs"] = [str(p) for p in written]
    try:
        write_summary(summary_path, summary)
    except OSError as exc:  # the mask on disk stays, and is counted and named by the caller
        names = ", ".join(p.name for p in written)
        failed = OSError(f"cannot write {summary_path}: {exc.strerror or exc}; written before it: {names}")
        failed.written = written
        raise failed from exc
    log(
        f"{vol.source}: tumor {millilitres(summary['tumor_volume_ml'])} in {len(summary['slices_with_tumor'])} "
        f"of {summary['axial_slices']} axial slices -> {mask_path}"
    )
    return [*written, summary_path]


def predict_stacked(
    flair: Path,
    t1: Path | None,
    t1c: Path | None,
    out: Path,
    predictor: Predictor,
    overlays: bool = False,
    inputs: Sequence[str | Path] = (),
    probabilities: bool = False,
    err: Log | None = None,
) -> PredictResult:
    """Segment the volume stacked from separate sequence files (`predict --flair`, with `--t1` and
    `--t1c` where given; a missing one is filled with FLAIR, said in a note) into OUT/<FLAIR's
    name>_pred.nii.gz and its summary. A name shared with one of `inputs` is refused before
    anything is written; a write that fails is counted in the result, and the others go on."""
    err = err or (lambda msg: print(msg, file=sys.stderr))
    stem = volume_stem(flair)
    if inputs and stem in volume_output_stems(list(inputs)):  # checked before anything is written
        raise TumorsegError(f"--flair {flair} and an INPUT volume share the name {stem!r}; their outputs would collide")
    if probabilities:  # asked for the other inputs, perhaps
        err("warning: --probabilities: written for 2D slices only, not for the --flair volume")
    vol, notes = stack_channels(read_volume(t1) if t1 else None, read_volume(flair), read_volume(t1c) if t1c else None)
    make_out_dir(out)
    result = PredictResult(inputs=1)
    try:
        result.written = predict_volume(vol, out / stem, predictor, notes, found=result.notes, overlays=overlays)
    except OSError as exc:  # the other inputs are still segmented
        result.written = getattr(exc, "written", [])  # a mask written before its summary failed
        result.failed = [(flair, f"{exc.strerror or exc}")]
        err(f"failed: {flair}: cannot write its outputs in {out}: {exc.strerror or exc}")
    return result
