"""Read and write 2D slices by suffix: PNG/JPEG via Pillow, TIFF via tifffile (LZW and JPEG TIFFs via Pillow)."""

from __future__ import annotations

import errno
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .errors import DataError, TooLargeError

Log = Callable[[str], None]  # where progress and notes go: `print`, a list's append, a logger's method
IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")
VOLUME_SUFFIXES = (".nii", ".nii.gz")  # NIfTI, read by tumorseg.volume
MAX_PIXELS = 8192 * 8192  # larger images are refused (decompression bombs)
MAX_SAMPLES = 4  # samples per TIFF pixel (RGBA); more are refused from the header
MAX_PAGES = 64  # a TIFF with more pages is refused from 65 page headers (at most 3 are ever read)
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_mask_path(path: Path) -> bool:
    """True for ground-truth files: `X_mask.ext`."""
    return path.stem.endswith("_mask")


OUTPUT_TAGS = ("_pred", "_prob", "_overlay")  # what `predict` writes for an input X: X_pred.png, ...


OUTPUT_ENDINGS = ("_pred.png", "_prob.png", "_overlay.png", "_pred.nii.gz")  # the files predict writes


def folder_names(names: Iterable[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> frozenset[str]:
    """A folder's file names with their image suffix in lower case (`X.TIF` -> `X.tif`), built once
    per folder for `is_output_of_predict`."""
    return frozenset(n[: len(n) - len(suf)] + suf for n in names for suf in suffixes if n.lower().endswith(suf))


def is_output_of_predict(stem: str, names: frozenset[str], suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> bool:
    """`stem` (`X_pred`, `X_prob`, `X_overlay`) names what `predict` wrote for an input `X.<suffix>`
    that is in `names` (its folder's `folder_names`): an output, not an input or a slice."""

    def beside(name: str) -> bool:  # `X.Tif` and `X.TIF` as well as `X.tif`
        return any(f"{name}{suf}" in names for suf in suffixes)

    if beside(f"{stem}_mask"):  # a slice with its truth: predict writes no `X_pred_mask`
        return False
    return any(stem.endswith(tag) and beside(stem.removesuffix(tag)) for tag in OUTPUT_TAGS)


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a slice as uint8, HxW or HxWxC.

    16-bit and float images are scaled to 0..255 from their minimum to their 99.9th percentile
    (their maximum when that is the minimum), brighter pixels clipped. Raises
    `DataError` naming the file for anything unreadable, too large or empty.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if path.name.lower().endswith(VOLUME_SUFFIXES):
        raise DataError(f"{path}: a NIfTI volume, not a 2D slice: read it with tumorseg.volume.read_volume "
                        "(`tumorseg predict` takes both)")  # fmt: skip
    try:
        if suffix in (".tif", ".tiff"):
            import tifffile

            with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:  # its log lines name no file; ours do
                if not len(tif.pages):
                    raise DataError(f"{path}: not a complete TIFF file (no image in it; truncated or corrupt?)")
                if _more_pages(tif, MAX_PAGES):  # before `series`, whose time grows as the pages squared
                    raise DataError(
                        f"{path}: holds more than {MAX_PAGES} pages (a stack), not one slice: "
                        "expected 1 page (grayscale or RGB) or exactly 3 pages (one per MRI sequence)"
                    )
                arr = _read_tiff_slice(tif, path, max_pixels)
        else:
            _refuse_deep_colour_png(path)
            with _open_pil(path, max_pixels) as im:
                if im.width * im.height == 0:
                    raise DataError(f"{path}: image is empty ({im.width}x{im.height} pixels)")
                if im.width * im.height > max_pixels:
                    raise TooLargeError(f"{path}: image of {im.width}x{im.height} pixels is too large")
                if im.format == "PNG" and getattr(im, "n_frames", 1) > 1:  # as a TIFF of 2 pages is
                    raise DataError(f"{path}: an animated PNG of {im.n_frames} frames, not one slice: "
                                    "save one slice per file")  # fmt: skip
                im = ImageOps.exif_transpose(im)  # the orientation viewers show a JPEG in
                im.load()
                if im.mode in ("I;16", "I;16B", "I", "F"):
                    arr = np.asarray(im)
                else:
                    arr = np.asarray(im.convert("RGB" if im.mode not in ("L", "1") else "L"))
    except DataError:
        raise
    except PermissionError:
        raise DataError(f"{path}: cannot read image: permission denied") from None
    except Exception as exc:  # Pillow and tifffile raise many kinds for corrupt files
        if "imagecodecs" in str(exc):  # a valid file whose compression neither tifffile alone nor Pillow reads
            raise DataError(f"{path}: cannot read image: {exc}: pip install imagecodecs") from None
        if "MAX_TEXT_CHUNK" in str(exc):  # Pillow's guard against a text chunk that inflates to megabytes
            raise DataError(f"{path}: cannot read image: a compressed text (metadata) chunk inflates beyond what "
                            "Pillow reads safely; save the image without its text chunks") from None  # fmt: skip
        if suffix in (".hdr", ".img"):  # half of an Analyze / NIfTI pair
            raise DataError(f"{path}: a NIfTI or Analyze pair (.hdr and .img) is not read: save it as one .nii.gz "
                            f"(nibabel: nib.save(nib.load({str(path.with_suffix('.hdr'))!r}), "
                            f"{str(path.with_suffix('.nii.gz'))!r}))") from None  # fmt: skip
        if suffix not in IMAGE_SUFFIXES:  # a .txt, .pdf or .docx: say what we read, not "not a valid TXT"
            images, volumes = " ".join(IMAGE_SUFFIXES), " ".join(VOLUME_SUFFIXES)
            raise DataError(f"{path}: not an image tumorseg reads: expected {images} slices, NIfTI volumes "
                            f"({volumes}) or DICOM series folders") from None  # fmt: skip
        kind = "TIFF" if suffix in (".tif", ".tiff") else suffix.lstrip(".").upper()
        raise DataError(
            f"{path}: cannot read image: not a valid {kind} file, or truncated ({type(exc).__name__}: {exc})"
        ) from None
    return _to_uint8(arr, path)


def read_mask(path: str | Path) -> np.ndarray:
    """Read a truth mask as 2D uint8. A colour mask (RGB, or a palette whose tumor colour is green,
    say) counts a pixel by its brightest channel, so a coloured tumor on black is never read as empty."""
    mask = read_image(path)
    return mask.max(axis=-1) if mask.ndim == 3 else mask


@contextmanager
def quiet_logger(logger: str) -> Iterator[None]:
    """Silence a library's logger for a block; the DataError we raise names the file instead."""
    log = logging.getLogger(logger)
    level = log.level
    log.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        log.setLevel(level)


def _refuse_deep_colour_png(path: Path) -> None:
    """Pillow decodes a 16-bit colour PNG (RGB, RGBA or grey with alpha) to 8 bits per channel
    without a word, leaving a few grey levels of a dark MRI: refused, from its IHDR header."""
    with open(path, "rb") as f:
        head = f.read(26)
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and head[24] == 16 and head[25] in (2, 4, 6):
        kind = {2: "RGB", 4: "grey with alpha", 6: "RGBA"}[head[25]]
        raise DataError(
            f"{path}: a 16-bit {kind} PNG, which would be read with only its top 8 bits per channel; "
            "save it as 16-bit grayscale (one sequence) or 8-bit RGB"
        )


def _open_pil(path: Path, max_pixels: int = MAX_PIXELS) -> Image.Image:
    try:
        return Image.open(path)
    except Image.DecompressionBombError:
        raise TooLargeError(f"{path}: image is too large (over {max_pixels} pixels)") from None


def _more_pages(tif, n: int) -> bool:
    """`tif` has more than `n` pages, read from the first n + 1 page headers only (`len(tif.pages)`
    would walk them all)."""
    try:
        tif.pages[n]
    except IndexError:
        return False
    return True


def _read_tiff_slice(tif, path: Path, max_pixels: int) -> np.ndarray:
    """The first image series of an open TIFF as (H, W) or (H, W, C), its size and shape
    checked from the header before any pixel is decoded. The samples axis (up to 4 samples
    per pixel), or exactly 3 pages (one per MRI sequence), become the channels; pages written as
    separate images are read so too, and any other set of images is refused."""
    if len(tif.series) > 1:
        shapes = [tuple(int(n) for n in s.shape) for s in tif.series]
        if len(shapes) == 3 and len(set(shapes)) == 1 and len(shapes[0]) == 2:
            h, w = shapes[0]
            if h * w == 0:
                raise DataError(f"{path}: image is empty ({w}x{h} pixels)")
            if h * w > max_pixels:
                raise TooLargeError(f"{path}: image of {w}x{h} pixels is too large")
            return np.stack(_decode_tiff(tif.series, path), axis=-1)
        sizes = ", ".join("x".join(map(str, s)) for s in shapes[:5]) + (", ..." if len(shapes) > 5 else "")
        raise DataError(
            f"{path}: holds {len(shapes)} separate images ({sizes}), not one slice: expected 1 page "
            "(grayscale or RGB) or exactly 3 pages of one size (one per MRI sequence)"
        )
    series = tif.series[0]
    shape, axes = tuple(series.shape), series.axes
    dims = "x".join(map(str, shape))
    if "Y" not in axes or "X" not in axes:
        raise DataError(f"{path}: not a 2D image (TIFF axes {axes}, shape {shape})")
    h, w = shape[axes.index("Y")], shape[axes.index("X")]
    if h * w == 0:
        raise DataError(f"{path}: image is empty ({w}x{h} pixels)")
    if h * w > max_pixels:
        raise TooLargeError(f"{path}: image of {w}x{h} pixels is too large")
    samples = shape[axes.index("S")] if "S" in axes else 1
    if samples > MAX_SAMPLES:  # refused before decoding: 2000 samples of 256x256 is 131 M values
        raise DataError(
            f"{path}: {samples} samples per pixel (TIFF axes {axes}, shape {dims}), not one slice: "
            f"at most {MAX_SAMPLES} are read (1 grayscale, 3 RGB, 4 RGBA)"
        )
    if samples == 2 and not {1, 2} & {int(e) for e in tif.pages[0].extrasamples}:  # 1, 2: (un)associated alpha
        raise DataError(
            f"{path}: 2 samples per pixel (TIFF axes {axes}, shape {dims}), the second not marked as alpha: "
            "expected grayscale, grey with alpha, RGB, RGBA, or 3 planes (one per MRI sequence)"
        )
    extra = [i for i, (a, n) in enumerate(zip(axes, shape)) if a not in "YX" and n > 1]
    if len(extra) > 1:
        raise DataError(
            f"{path}: holds {dims} values (TIFF axes {axes}), not one slice: "
            "expected a grayscale or RGB image, or 3 planes (one per MRI sequence)"
        )
    if extra and axes[extra[0]] != "S" and shape[extra[0]] != 3:
        n = shape[extra[0]]
        kind = "pages" if len(series.pages) == n else f"planes along TIFF axis {axes[extra[0]]}"
        raise DataError(
            f"{path}: holds {dims} values (TIFF axes {axes}): {n} {kind} of {w}x{h} pixels, not one slice: "
            "expected 1 page (grayscale or RGB) or exactly 3 pages (one per MRI sequence)"
        )
    (arr,) = _decode_tiff([series], path)
    arr = arr.reshape([n for a, n in zip(axes, shape) if a in "YX" or n > 1])
    if extra:
        channel = sum(1 for i, (a, n) in enumerate(zip(axes, shape)) if i < extra[0] and (a in "YX" or n > 1))
        arr = np.moveaxis(arr, channel, -1)
    return arr


def _decode_tiff(series: list, path: Path) -> list[np.ndarray]:
    """The pixels of TIFF series. tifffile needs the imagecodecs package for LZW, JPEG and other
    compressions; without it, Pillow (always installed) decodes each page, unless it would change
    the pixels' type (16-bit colour it reads as 8-bit), which is refused."""
    try:
        return [s.asarray() for s in series]
    except ValueError as exc:
        if "imagecodecs" not in str(exc):
            raise
        needs = exc
    turned = [p.tags["Orientation"].value for s in series for p in s.pages if "Orientation" in p.tags]
    if any(v != 1 for v in turned):  # Pillow would turn it (and a tall one would come out scrambled)
        raise DataError(f"{path}: a compressed TIFF with an Orientation tag ({turned[0]}) is read only with the "
                        "imagecodecs package, as stored: pip install imagecodecs")  # fmt: skip
    out = []
    try:
        with Image.open(path) as im:
            for s in series:
                pages = []
                for page in s.pages:
                    im.seek(page.index)
                    arr = np.asarray(im)
                    shape = tuple(page.shape)
                    if arr.dtype != s.dtype:
                        raise DataError(f"{path}: its compression needs the imagecodecs package to keep its "
                                        f"{s.dtype} pixels: pip install imagecodecs")  # fmt: skip
                    if arr.shape != shape and arr.shape == (*shape[1:], shape[0]):  # bands stored one by one
                        arr = np.moveaxis(arr, -1, 0)
                    pages.append(arr)
                out.append((pages[0] if len(pages) == 1 else np.stack(pages)).reshape(s.shape))
    except DataError:
        raise
    except Exception:  # noqa: BLE001 - Pillow cannot either: the reason is tifffile's
        raise needs from None
    return out


def image_pixels(path: str | Path) -> int:
    """Pixels (width x height) of an image from its header alone, whatever its channels or pages:
    every slice is held as 3 channels once read (0 when it cannot be read: reading it later says why)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with quiet_logger("tifffile"), tifffile.TiffFile(path) as tif:
                if _more_pages(tif, MAX_PAGES):
                    return 0
                series = tif.series[0]
                return math.prod(int(n) for a, n in zip(series.axes, series.shape) if a in "YX")
        with Image.open(path) as im:
            return im.width * im.height
    except Exception:  # noqa: BLE001 - any unreadable file is reported when it is read
        return 0


LABEL_VALUES = 8  # a patient's masks holding at most this many values, 255 not among them, are labels


def masks_are_labels(masks: list[np.ndarray]) -> bool:
    """Whether a patient's masks are read with tumor above 0 rather than above 127 (the rule
    `binary_masks` reads them by): when each holds only 0 and 1, or all of them together hold at
    most LABEL_VALUES values and no 255 (labels such as 0/2, 0/100 or 0/1/2/4). The dataset's 0/255
    masks, and grey or JPEG-compressed ones (many values), are read above 127. A mask may be given as
    its values alone (`np.unique`). Faint values beside bright ones (0, 1, 3, 250, 253) are a JPEG's
    ringing around a small bright tumor, not labels."""
    if all(m.max(initial=0) <= 1 for m in masks):
        return True
    values = np.unique(np.concatenate([np.unique(m) for m in masks]))
    ringing = bool(((values > 0) & (values < 64)).any() and (values > 192).any())
    return len(values) <= LABEL_VALUES and values[-1] < 255 and not ringing


def binary_masks(masks: list[np.ndarray], labels: bool | None = None) -> list[np.ndarray]:
    """One patient's truth masks as bool, under one rule for them all: above 0 when they are labels
    (`masks_are_labels`, decided here when None), else above 127. Decided slice by slice, stray 1s in
    the tumor-free slices of a 0/255 patient were read as tumor."""
    labels = masks_are_labels(masks) if labels is None else labels
    return [m > (0 if labels else 127) for m in masks]


def _to_uint8(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise DataError(f"{path}: expected a 2D image, got shape {arr.shape}")
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[-1] == 2:  # grey + alpha (`_read_tiff_slice` refuses any other pair): the grey
        arr = arr[..., 0]
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if arr.dtype.kind not in "iuf":
        raise DataError(f"{path}: pixels of type {arr.dtype} (complex or other) are not supported; "
                        "give one real grey value per pixel and channel")  # fmt: skip
    arr = arr.astype(np.float64)  # one copy, scaled in place below
    if not np.isfinite(arr).all():
        raise DataError(f"{path}: image holds NaN or Inf values")
    lo, hi = float(arr.min()), float(np.percentile(arr, 99.9))
    if hi <= lo:  # a few bright pixels only (a small mask): their own maximum
        hi = float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    # up to the 99.9th percentile: one hot pixel no longer squeezes the brain into a few grey levels
    arr -= lo
    arr *= 255 / (hi - lo)
    np.clip(arr, 0, 255, out=arr)
    return np.round(arr, out=arr).astype(np.uint8)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename over it."""
    path = Path(path)
    if path.exists() and not path.is_file():  # a device or FIFO (`--out /dev/null`) would be replaced by a file
        raise FileExistsError(errno.EEXIST, "exists and is not a regular file, so it is not replaced", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # named before the try and created inside it: a Ctrl-C at any point leaves no temporary file
    short = path.name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")  # 255 bytes at most
    tmp = path.parent / f".{short}.{os.urandom(6).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename is not None and exc.filename != str(tmp):
            raise
        raise type(exc)(exc.errno, exc.strerror, str(path)) from None  # the output, not its temporary file
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` as UTF-8, atomically. A file name that is not UTF-8 (a Latin-1 folder name,
    which Python holds as lone surrogates) is written escaped, `M\\xfcller`, never a crash."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        try:
            data = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace").encode("utf-8")
        except UnicodeEncodeError:  # a surrogate that no undecodable byte made
            data = text.encode("utf-8", "backslashreplace")
    atomic_write_bytes(path, data)


def write_png(path: str | Path, arr: np.ndarray) -> None:
    """Write a uint8 array (HxW or HxWx3) as PNG, atomically."""
    import io as _io

    buf = _io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())
