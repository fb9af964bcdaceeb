"""The kaggle_3m layout: `ROOT/<CASE>/<CASE>_<n>.ext` with `<CASE>_<n>_mask.ext` beside it."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np

from ..config import Channels, Intensity, split_problem
from ..errors import DataError, TumorsegError
from ..io import (
    IMAGE_SUFFIXES,
    OUTPUT_ENDINGS,
    binary_masks,
    folder_names,
    is_mask_path,
    is_output_of_predict,
    read_image,
    read_mask,
)
from .transforms import resize_uint8, volume_normalize

SLICE_SUFFIXES = IMAGE_SUFFIXES  # the slice files a patient folder holds: what `io.read_image` reads
_NUMBER = re.compile(r"(\d+)$")


@dataclass(frozen=True)
class Case:
    """One patient: a folder of axial slices, each paired with its mask (in slice order)."""

    id: str
    images: tuple[Path, ...]
    masks: tuple[Path, ...]


@dataclass
class CaseArrays:
    """A patient decoded once and kept in memory.

    images: uint8 (S, C, size, size); masks: uint8 {0, 1} (S, size, size), binarised
    after resizing; full_masks: bool (S, H, W) at the original resolution, for scoring;
    blank_masks: the mask files that hold values but none read as tumor (grey, all under 128);
    numbers: the slices' file numbers, for `Predictor` calls whose notes should name slices as the
    files and the CLI do (None when a file has no number or two share one).
    """

    id: str
    images: np.ndarray
    masks: np.ndarray
    full_masks: np.ndarray
    names: list[str] = field(default_factory=list)
    blank_masks: list[str] = field(default_factory=list)
    numbers: list[int] | None = None  # the files' slice numbers (`X_12.tif`: 12), or None (`slice_numbers`)

    @property
    def tumor_slices(self) -> np.ndarray:
        return np.flatnonzero(self.masks.reshape(len(self.masks), -1).any(1))


def slice_number(path: Path) -> tuple[int, str]:
    """Sort key: the trailing number of the stem (`X_12` -> 12), then the name."""
    stem = path.stem[: -len("_mask")] if is_mask_path(path) else path.stem
    m = _NUMBER.search(stem)
    return (int(m.group(1)) if m else -1, stem)


def slice_numbers(paths: list[Path] | tuple[Path, ...]) -> list[int] | None:
    """The trailing slice numbers of `paths`, for `add_context`; None (use their order) when
    one has no number or two share one."""
    numbers = [slice_number(p)[0] for p in paths]
    return None if min(numbers, default=0) < 0 or len(set(numbers)) < len(numbers) else numbers


def _slice_files(folder: Path) -> list[Path]:
    try:
        return slice_files_in([p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SLICE_SUFFIXES])
    except PermissionError:
        raise DataError(f"{folder}: cannot list folder: permission denied") from None


def slice_files_in(files: list[Path]) -> list[Path]:
    """The slices and masks among one folder's files: not hidden files (macOS writes `._X.png`
    beside `X.png` on some disks), nor what `predict` wrote beside its inputs (`X_pred.png`)."""
    names = folder_names(p.name for p in files)
    return [p for p in files if not p.name.startswith(".") and not is_output_of_predict(p.stem, names)]


def is_run_folder(folder: Path) -> bool:
    """A `tumorseg train` run folder (its config.json beside metrics.jsonl or a checkpoint), which
    holds images (curves.png) but is never a patient: `train --out` may lie inside `--data`; or a
    `tumorseg predict --out` folder, whose images are all `X_pred.png`, `X_prob.png`, `X_overlay.png`."""
    try:
        if (folder / "config.json").is_file() and (
            (folder / "metrics.jsonl").is_file() or any(folder.glob("*.safetensors"))
        ):
            return True
        images = [p.name for p in folder.iterdir() if p.suffix.lower() in SLICE_SUFFIXES]
        return bool(images) and all(n.endswith(OUTPUT_ENDINGS) for n in images)
    except (PermissionError, NotADirectoryError):  # an unlisted folder: said where it is listed
        return False


def _readable_subfolders(root: Path) -> list[Path]:
    """The folders in `root`, sorted, less those that cannot be listed (a root-owned `lost+found`),
    each skipped with a warning naming it, and run folders (`is_run_folder`)."""
    folders = []
    for p in sorted(_listing(root)):
        if p.is_dir() and not is_run_folder(p):
            try:
                next(iter(p.iterdir()), None)
                folders.append(p)
            except PermissionError:
                logging.getLogger(__name__).warning("%s: skipped: cannot list folder: permission denied", p)
    return folders


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except PermissionError:
        raise DataError(f"{folder}: cannot list folder: permission denied") from None


def is_patient(folder: Path) -> bool:
    """`folder` holds slices and is a patient, as `find_cases` decides (a folder of previews is none)."""
    files = _slice_files(folder)
    return bool(files) and not_a_patient(folder, files) is None


def holds_patients(folder: Path) -> bool:
    """`folder` holds patient folders of slices (a kaggle_3m root)."""
    return any(map(is_patient, _readable_subfolders(Path(folder))))


def kaggle_root_hint(root: Path) -> str:
    """When `root` holds no patients but a folder inside it does (`dl/kaggle_3m/TCGA_...`), the
    words that point there; "" otherwise."""
    try:
        for sub in sorted(p for p in Path(root).iterdir() if p.is_dir()):
            if holds_patients(sub):
                return f"; did you mean {sub}? (it holds the patient folders)"
    except OSError:
        pass
    return ""


def same_slice_twice(files: list[Path]) -> list[str]:
    """A message for each file whose name but for its suffix another one has (X.png beside X.jpg):
    which of them is the slice cannot be told, and one would be dropped without a word."""
    first: dict[str, Path] = {}
    said = []
    for p in sorted(files):
        if p.stem in first:
            said.append(f"{p}: {first[p.stem].name} is the same slice in another format; keep one of them")
        first.setdefault(p.stem, p)
    return said


def not_a_patient(folder: Path, files: list[Path]) -> str | None:
    """Why a folder of images inside the data is no patient (a folder of previews or screenshots),
    else None: none of its files is a mask and none is named as its slices are, `<folder>_<n>`."""
    if any(is_mask_path(p) for p in files):
        return None
    if any(p.stem.startswith(f"{folder.name}_") and _NUMBER.search(p.stem) for p in files):
        return None
    return f"{folder}: skipped: {len(files)} image(s) but no mask and none named {folder.name}_<n>, so not a patient"


_SAID: set[str] = set()


def say_skipped(why: str, said_elsewhere: bool = False) -> None:
    """Log a skipped folder's `why` once per process; `check_data`, which lists it in its report,
    marks it `said_elsewhere` so that `train` does not say it twice."""
    if why not in _SAID and not said_elsewhere:
        logging.getLogger(__name__).warning("warning: %s", why)
    _SAID.add(why)


def case_from_folder(folder: Path) -> Case:
    """Pair each image in `folder` with its `_mask`, raising DataError for an orphan."""
    files = _slice_files(folder)
    if twice := same_slice_twice(files):
        raise DataError(twice[0])
    images = {p.stem: p for p in files if not is_mask_path(p)}
    masks = {p.stem[: -len("_mask")]: p for p in files if is_mask_path(p)}
    for stem, path in sorted(images.items()):
        if stem not in masks:
            raise DataError(f"{path}: image has no mask (expected {stem}_mask{path.suffix})")
    for stem, path in sorted(masks.items()):
        if stem not in images:
            raise DataError(f"{path}: mask has no image (expected {stem}{path.suffix})")
    order = sorted(images, key=lambda s: slice_number(images[s]))
    return Case(folder.name, tuple(images[s] for s in order), tuple(masks[s] for s in order))


def find_cases(root: str | Path, limit: int = 0, ids: Collection[str] | None = None) -> list[Case]:
    """Every patient folder under `root` (or `root` itself when it holds slices), sorted by id;
    only the first `limit` (when set) or those named in `ids` (when given) are read, so a broken
    patient that is not used stops nothing."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"{root}: data folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    folders = []
    for p in _readable_subfolders(root):
        if files := _slice_files(p):
            if why := not_a_patient(p, files):
                say_skipped(why)
            else:
                folders.append(p)
    if not folders and _slice_files(root):
        folders = [root]
    if not folders:
        raise DataError(
            f"{root}: no slices found; expected the kaggle_3m layout "
            f"<CASE>/<CASE>_<n>.png|tif|jpg with <CASE>_<n>_mask beside each{kaggle_root_hint(root)}"
        )
    if ids is not None:
        folders = [f for f in folders if f.name in set(ids)]
    cases = []
    for f in folders:
        if limit and len(cases) >= limit:
            break
        case = case_from_folder(f)
        if case.images:
            cases.append(case)
    return cases


def split_cases(
    ids: list[str], seed: int, val_frac: float, test_frac: float, folds: int = 0, fold: int = 0
) -> dict[str, list[str]]:
    """Split patient ids into train/val/test, deterministically from `seed`.

    The ids are sorted first, so the split does not depend on listing order. Each
    non-zero fraction gets at least one patient when there are enough patients. With
    `folds`, the non-test patients are dealt into `folds` disjoint groups and group `fold`
    validates (k-fold cross-validation; the test patients stay those of `folds=0`).
    The arguments follow TrainConfig's rules (a TumorsegError says which one is broken).
    """
    listed = None if isinstance(ids, (str, bytes)) else list(ids)  # a generator is read once
    if listed is None or not all(isinstance(i, str) for i in listed):
        raise TumorsegError(f"ids must be a list of patient ids (strings); got {type(ids).__name__} {ids!r:.60}")
    if problem := split_problem(val_frac, test_frac, folds, fold):
        raise TumorsegError(problem)
    ids = listed
    if folds:
        base = split_cases(ids, seed, 0.0, test_frac)
        rest = base["train"]
        order = np.random.default_rng([seed, folds]).permutation(len(rest))
        val = sorted(rest[i] for i in order[fold::folds])
        return {"train": [i for i in rest if i not in val], "val": val, "test": base["test"]}
    ids = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(ids))
    n = len(ids)
    n_test = max(1, round(n * test_frac)) if test_frac > 0 and n >= 3 else 0
    n_val = max(1, round(n * val_frac)) if val_frac > 0 and n - n_test >= 2 else 0
    shuffled = [ids[i] for i in order]
    test = sorted(shuffled[:n_test])
    val = sorted(shuffled[n_test : n_test + n_val])
    train = sorted(shuffled[n_test + n_val :])
    return {"train": train, "val": val, "test": test}


def load_case(case: Case, size: int | None, channels: Channels = "all", intensity: Intensity = "fixed") -> CaseArrays:
    """Decode a patient once: images resized to `size` (None keeps the original size),
    masks binarised after resizing. `channels` is "all" (pre-contrast T1, FLAIR,
    post-contrast T1) or "flair"; with `intensity` "volume" the images are scaled per volume
    (`volume_normalize`) at their own size, before resizing, as `network_inputs` does
    ("percentile" and "fixed" scale per slice when the network reads them)."""
    if isinstance(case, (str, bytes, os.PathLike)):
        raise TumorsegError(f"load_case takes a Case from find_cases(folder); got {type(case).__name__} {case!r:.60}")
    if channels not in get_args(Channels) or intensity not in get_args(Intensity):
        raise TumorsegError(f"channels {channels!r} / intensity {intensity!r}: use {' or '.join(get_args(Channels))} / "
                            f"{', '.join(get_args(Intensity))}")  # fmt: skip
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise TumorsegError(f"size {size!r}: a whole number of pixels, at least 1 (None keeps each slice's own)")
    size = None if size is None else int(size)
    imgs, full = [], []
    for ip, mp in zip(case.images, case.masks):
        img = read_image(ip)
        mask = read_mask(mp)
        if img.shape[:2] != mask.shape[:2]:
            raise DataError(
                f"{mp}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {img.shape[1]}x{img.shape[0]}"
            )
        imgs.append(select_channels(img, channels, ip))
        full.append(mask)
    read, full = full, binary_masks(full)  # one rule for the patient's masks: 0/1 or 0/255
    blank = [str(mp) for mp, m, t in zip(case.masks, read, full) if m.max() > 1 and not t.any()]  # not stray 1s
    shapes = {m.shape for m in full}
    if len(shapes) > 1:
        raise DataError(f"{case.images[0].parent}: slices of one patient differ in size: {sorted(shapes)}")
    images = np.stack(imgs)
    if intensity == "volume":
        images = volume_normalize(images)
    full_masks = np.stack(full)
    names, numbers = [p.stem for p in case.images], slice_numbers(case.images)
    if size is None:
        return CaseArrays(case.id, images, full_masks.astype(np.uint8), full_masks, names, blank, numbers)
    return CaseArrays(case.id, resize_uint8(images, size), masks_at(full_masks, size), full_masks, names, blank,
                      numbers)  # fmt: skip


def masks_at(full_masks: np.ndarray, size: int) -> np.ndarray:
    """Boolean masks (S, H, W) -> uint8 {0, 1} (S, size, size): resized, then binarised at half."""
    small = resize_uint8(full_masks.astype(np.uint8)[:, None] * 255, size)[:, 0]
    return (small > 127).astype(np.uint8)


def select_channels(img: np.ndarray, channels: str, path: Path | None = None) -> np.ndarray:
    """HxW or HxWxC uint8 -> CxHxW with 3 channels (`all`) or FLAIR alone (`flair`).

    A grayscale image is taken as FLAIR and repeated into 3 channels, as the dataset
    does for a missing sequence.
    """
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] not in (1, 3):
        first = " (channels first? give it as HxWxC: img.transpose(1, 2, 0))" if img.shape[0] in (1, 3) else ""
        raise DataError(f"{path or 'the image'}: expected HxW or HxWxC with 1 or 3 channels, got shape "
                        f"{img.shape}{first}")  # fmt: skip
    if channels == "flair":
        img = img[..., 1:2] if img.shape[-1] == 3 else img
    elif img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


def flair_index(channels: str) -> int:
    """FLAIR's channel in a slice of `channels` (T1, FLAIR, T1c for `all`)."""
    return 1 if channels == "all" else 0


def add_context(
    images: np.ndarray, context: int, channels: str = "all", numbers: list[int] | None = None, volume: bool = True
) -> np.ndarray:
    """Slices (S, C, H, W) -> (S, C + 2 * context, H, W): the FLAIR of the `context` slices
    below, then of those above, as extra channels (2.5D input).

    `volume`: the slices are one volume's, in order, or numbered by `numbers` (slice n's
    neighbours are n - 1 and n + 1). A neighbour that is not there (an edge, a gap, or
    `volume=False` for unrelated single slices) is replaced by the slice's own FLAIR.
    """
    if context == 0:
        return images
    flair = images[:, flair_index(channels)]
    numbers = np.arange(len(images)) if numbers is None else np.asarray(numbers)
    where = {int(n): i for i, n in enumerate(numbers)}
    extra = []
    for d in [*range(-context, 0), *range(1, context + 1)]:
        idx = [where.get(int(n) + d, i) if volume else i for i, n in enumerate(numbers)]
        extra.append(flair[idx])
    return np.ascontiguousarray(np.concatenate([images, np.stack(extra, 1)], 1))
