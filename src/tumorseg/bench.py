"""`tumorseg bench`: how fast each inference backend segments slices on this machine, and how
closely its probabilities follow the torch backend's."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np

from .config import BACKENDS
from .errors import TumorsegError
from .io import Log

CONCRETE = tuple(b for b in BACKENDS if b != "auto")


def synthetic_slices(n: int, channels: int, size: int, seed: int = 0) -> np.ndarray:
    """`n` uint8 (C, size, size) slices of a bright disc with smooth noise: a stand-in for MRI
    when no files are given (a backend's speed does not depend on what the slice shows)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] / max(size - 1, 1) - 0.5
    head = (xx**2 + yy**2 < 0.16).astype(np.float32)
    noise = rng.normal(0, 1, (n, channels, 8, 8)).astype(np.float32)
    smooth = np.kron(noise, np.ones((1, 1, -(-size // 8), -(-size // 8)), np.float32))[..., :size, :size]
    return np.clip(head * (120 + 40 * smooth), 0, 255).astype(np.uint8)


def file_slices(paths: list[Path], channels: str) -> np.ndarray:
    """The slices in `paths` (PNG, TIFF or JPEG files, or folders of them) as the model reads
    them; they must share one size, as one batch does."""
    from .data.lgg import select_channels
    from .io import IMAGE_SUFFIXES, read_image
    from .predict import collect_inputs

    files = [f for f in collect_inputs(paths) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise TumorsegError(f"{', '.join(map(str, paths))}: no PNG, TIFF or JPEG slice to time")
    slices = [select_channels(read_image(f), channels, f) for f in files]
    sizes = {s.shape[-2:] for s in slices}
    if len(sizes) > 1:
        raise TumorsegError(f"the slices have {len(sizes)} sizes ({', '.join(f'{h}x{w}' for h, w in sorted(sizes))}); "
                            "give slices of one size")  # fmt: skip
    return np.stack(slices)


def time_backend(predictor, images: np.ndarray, repeats: int) -> tuple[np.ndarray, list[float]]:
    """The probabilities of one untimed pass over `images` (graph compilation, allocations: every
    batch shape, the last smaller one too, seen once), then seconds per pass of `repeats` more."""
    probs = predictor.predict(images)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        predictor.predict(images)
        times.append(time.perf_counter() - t)
    return probs, times


def bench(
    weights: str | Path | None = None,
    images: np.ndarray | None = None,
    backends: tuple[str, ...] = CONCRETE,
    batch_size: int = 32,
    repeats: int = 5,
    log: Log = print,
) -> dict:
    """Time `backends` on `images` (uint8 (N, C, H, W); synthetic 256x256 slices when None) with
    the checkpoint `weights` (the shipped model when None). Each row: images/s and ms per slice
    from the median pass, and against the torch backend the largest probability difference, the
    Dice of the 0.5 masks and the pixels they differ in. A backend that cannot run here says why."""
    import torch

    from .hardware import machine
    from .infer import Predictor, default_weights, resolve_backend

    if repeats < 1:
        raise TumorsegError(f"--repeats must be 1 or more, got {repeats}")
    weights = Path(weights) if weights else default_weights()
    reference = Predictor.from_checkpoint(weights, "torch", batch_size=batch_size)
    synthetic = images is None
    if synthetic:
        images = synthetic_slices(64, reference.config.sequence_channels, 256)
    torch_probs = reference.predict(images)
    rows = []
    for backend in backends:
        log(f"timing {backend} ...")
        row: dict = {"backend": backend}
        try:
            if backend == "torch":
                predictor = reference
            else:
                predictor = Predictor.from_checkpoint(weights, backend, batch_size=batch_size)
        except (TumorsegError, ImportError) as exc:
            rows.append({**row, "error": str(exc)})
            continue
        probs, times = time_backend(predictor, images, repeats)
        median = statistics.median(times)
        ours, theirs = probs > 0.5, torch_probs > 0.5
        both = int(ours.sum()) + int(theirs.sum())  # Dice of the masks against torch's, over every slice
        row.update(images_per_s=len(images) / median, ms_per_slice=1000 * median / len(images),
                   max_prob_diff=float(np.abs(probs - torch_probs).max()),
                   mask_dice=2 * int((ours & theirs).sum()) / both if both else 1.0,
                   pixels_differ=int((ours != theirs).sum()))  # fmt: skip
        rows.append(row)
    n, c, h, w = images.shape
    return {
        "weights": str(weights), "synthetic": synthetic, "slices": n, "channels": c, "height": h, "width": w,
        "batch_size": batch_size, "repeats": repeats, "auto": resolve_backend("auto", weights),
        "machine": machine(torch.device("cpu")), "rows": rows,
    }  # fmt: skip


def table(result: dict) -> str:
    """The result as a plain-text table, and which backend `auto` picks."""
    what = "synthetic slices" if result["synthetic"] else "slices"
    lines = [f"{result['slices']} {what} of {result['height']}x{result['width']}, batch {result['batch_size']}, "
             f"median of {result['repeats']}; {result['machine']['cpu']}, {result['machine']['threads']} threads",
             "backend     images/s  ms/slice  max |dp|  mask Dice  px differ"]  # fmt: skip
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"{row['backend']:<10} not available: {row['error']}")
            continue
        lines.append(f"{row['backend']:<10} {row['images_per_s']:>9.1f} {row['ms_per_slice']:>9.2f} "
                     f"{row['max_prob_diff']:>9.1e} {row['mask_dice']:>10.4f} {row['pixels_differ']:>10}")  # fmt: skip
    against = "on synthetic slices, which are not MRI: give real slices to compare" if result["synthetic"] else ""
    lines.append(f"max |dp|, mask Dice (masks at 0.5) and px differ: against the torch backend"
                 f"{', ' + against if against else ''}. "
                 f"auto uses {result['auto']} here.")  # fmt: skip
    return "\n".join(lines)
