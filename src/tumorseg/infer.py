"""Inference: batched, at the model's size, with probabilities resized back to the input's."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .checkpoint import build_model, load_checkpoint
from .config import BACKENDS, ModelConfig
from .data.lgg import add_context
from .data.transforms import preprocess, resize, volume_normalize
from .errors import TumorsegError
from .hardware import available_cores
from .models import Ensemble, UNet
from .shipped import DEFAULT_WEIGHTS

if TYPE_CHECKING:
    import onnxruntime as ort


def default_weights() -> Path:
    """The shipped model: $TUMORSEG_WEIGHTS, else the one installed with the package (weights/ in a checkout)."""
    if os.environ.get("TUMORSEG_WEIGHTS"):
        path = Path(os.environ["TUMORSEG_WEIGHTS"])
        if not path.is_file():
            raise TumorsegError(f"no weights given, and $TUMORSEG_WEIGHTS={path}: no such file")
        return path
    path = DEFAULT_WEIGHTS
    if not path.is_file():
        raise TumorsegError(
            f"no weights given, and the shipped model {path} is missing: reinstall tumorseg, "
            "or give --weights (weights= in Python)"
        )
    return path


def onnx_available() -> bool:
    """True when ONNX Runtime and the exporter (onnxscript) are installed."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("onnxruntime", "onnxscript"))


def onnx_session(weights: str | Path, int8: bool = False) -> ort.InferenceSession:
    """An ONNX Runtime session for `weights` on the machine's cores: the fp32 export (made once,
    cached), or with `int8` the quantized graph beside the checkpoint (`<stem>.int8.onnx`)."""
    try:
        import onnxruntime as ort
    except ImportError:
        backend = "onnx-int8" if int8 else "onnx"
        raise TumorsegError(f"backend {backend} needs the onnx extra: pip install 'tumorseg[onnx]'") from None
    from .export import cached_onnx

    path = int8_graph(weights) if int8 else cached_onnx(weights)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = torch.get_num_threads()
    opts.log_severity_level = 3
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        if int8:
            raise TumorsegError(f"{path}: not a loadable ONNX graph ({str(exc)[:200]})") from None
    path.unlink(missing_ok=True)  # a broken cache entry (a disk filled up, a killed export): made again once
    path = cached_onnx(weights)
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise TumorsegError(f"{path}: not a loadable ONNX graph, even made afresh ({str(exc)[:200]})") from None


def int8_graph(weights: str | Path) -> Path:
    """The int8 graph made from exactly `weights` by this version's export, or a clear error
    saying what is wrong and how to remake it."""
    from .export import CONTRACT_KEYS, EXPORT_FORMAT, file_sha256, graph_state, int8_path

    path = int8_path(weights)
    make = f"tumorseg export --int8 --weights {weights} --data DIR --out {path}"
    if not path.is_file():
        raise TumorsegError(f"{path}: no int8 graph for {weights}; make one with: {make}")
    try:
        import onnx
    except ImportError:
        raise TumorsegError("backend onnx-int8 needs the onnx extra: pip install 'tumorseg[onnx]'") from None
    try:  # parsing the proto is cheap, building a session is not
        model = onnx.load(str(path), load_external_data=False)
        props = {p.key: p.value for p in model.metadata_props}
    except Exception as exc:  # protobuf raises its own decode errors for bad files
        raise TumorsegError(f"{path}: not a loadable ONNX graph ({str(exc)[:200]}); remake it with: {make}") from None
    if "tumorseg.source_sha256" not in props:
        raise TumorsegError(f"{path}: has no tumorseg provenance metadata; remake it with: {make}")
    if props["tumorseg.source_sha256"] != file_sha256(weights):
        raise TumorsegError(f"{path}: made from other weights than {weights}; remake it with: {make}")
    if props.get("tumorseg.export_format") != EXPORT_FORMAT:
        raise TumorsegError(f"{path}: made by another tumorseg export format; remake it with: {make}")
    lacking = [k for k in CONTRACT_KEYS if k not in props]
    if lacking:  # an early export wrote provenance but not the input contract the README promises
        raise TumorsegError(f"{path}: lacks its input contract metadata ({', '.join(lacking)}); remake it with: {make}")
    state = graph_state(model)
    if state == "unrecorded":
        raise TumorsegError(f"{path}: has no digest of its graph (made before tumorseg recorded one); remake it "
                            f"with: {make}")  # fmt: skip
    if state == "changed":
        raise TumorsegError(f"{path}: its graph is not the one its export recorded (damaged or edited since); "
                            f"remake it with: {make}")  # fmt: skip
    return path


def resolve_backend(backend: str, weights: str | Path) -> str:
    """`auto` is onnx-int8, the fastest backend measured here, when ONNX Runtime is installed and
    a valid int8 graph of `weights` lies beside it (the shipped model has one); else torch,
    which needs no export. A stale or broken graph makes `auto` warn and use torch."""
    if backend != "auto":
        return backend
    import importlib.util

    from .export import int8_path

    if importlib.util.find_spec("onnxruntime") is None or not int8_path(weights).is_file():
        return "torch"
    try:
        int8_graph(weights)
    except TumorsegError as exc:  # said plainly on stderr, not as a Python warning with a source line
        import sys

        print(f"warning: using the torch backend: {exc}", file=sys.stderr)
        return "torch"
    return "onnx-int8"


def set_threads(threads: int = 0) -> None:
    """Use `threads` intra-op threads; when 0, $OMP_NUM_THREADS if it is set, else one per available core."""
    if not isinstance(threads, int) or threads < 0:
        raise TumorsegError(f"threads must be 0 (one per core) or more, got {threads!r}")
    env = os.environ.get("OMP_NUM_THREADS", "")
    torch.set_num_threads(threads or (int(env) if env.isdigit() and int(env) > 0 else available_cores()))


@torch.inference_mode()
def predict_logits(model: UNet | Ensemble, x: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Logits for preprocessed float input (N, C, h, w), in batches, in eval mode."""
    was_training = model.training
    model.eval()
    outs = []
    device = next(model.parameters()).device
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        outs.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 1, *x.shape[-2:])


def slice_probabilities(
    model: UNet | Ensemble, config: ModelConfig, images: np.ndarray, flip: bool = False, batch_size: int = 32
) -> np.ndarray:
    """Raw uint8 slices (N, C, H, W) -> probabilities (N, H, W) at H x W: preprocess, infer, resize back."""
    x = torch.from_numpy(np.ascontiguousarray(images))
    if flip:
        x = x.flip(-1)
    size = tuple(x.shape[-2:])
    probs = []
    for i in range(0, len(x), batch_size):
        xb = preprocess(x[i : i + batch_size], config.image_size, config.intensity)
        logits = predict_logits(model, xb, batch_size)
        probs.append(resize(torch.sigmoid(logits), size)[:, 0])
    out = torch.cat(probs) if probs else torch.zeros((0, *size))
    return (out.flip(-1) if flip else out).numpy()


def remove_small_components(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Drop 8-connected components smaller than `min_size` pixels, slice by slice ((S,) H, W)."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    if min_size <= 0:
        return mask
    out = mask.copy()
    for s in out.reshape(-1, *mask.shape[-2:]):
        labels, n = ndimage.label(s, structure=np.ones((3, 3)))
        if n:
            sizes = np.bincount(labels.ravel())
            small = sizes < min_size
            small[0] = False
            s[small[labels]] = False
    return out


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill the enclosed holes of each slice's mask ((S,) H, W).

    The expert masks are solid: in the 62 training patients, 221 of 1.6 M tumor pixels
    (29 of 815 tumor slices) lie in holes, so a hole in a prediction is almost always a miss.
    """
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    out = mask.copy()
    for s in out.reshape(-1, *mask.shape[-2:]):
        if s.any():
            s[:] = ndimage.binary_fill_holes(s)
    return out


def postprocess(probs: np.ndarray, threshold: float = 0.5, min_size: int = 0, holes: bool = True) -> np.ndarray:
    """Probabilities -> binary masks: threshold, fill holes (when `holes`), drop small parts."""
    mask = np.asarray(probs) > threshold
    return remove_small_components(fill_holes(mask) if holes else mask, min_size)


def regions_3d(mask: np.ndarray, numbers: list[int] | None = None) -> tuple[np.ndarray, int, np.ndarray]:
    """The 26-connected 3D components of a stacked mask (S, H, W): (labels, count, voxels per
    label, with 0 for the background). With `numbers` (the slices' numbers), two stacked slices
    whose numbers are not consecutive (a gap, a repeat) are not neighbours."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labels = np.zeros(mask.shape, np.int32)
    if not mask.any():
        return labels, 0, np.zeros(1, np.intp)
    # labelled within the mask's bounding box: a volume's tumor fills a small part of it
    spans = [np.flatnonzero(mask.any(axis=tuple({0, 1, 2} - {d}))) for d in range(3)]
    box = tuple(slice(i[0], i[-1] + 1) for i in spans)
    z0, crop = box[0].start, mask[box]
    breaks = [] if numbers is None else [
        i + 1 for i in range(len(crop) - 1) if numbers[z0 + i + 1] - numbers[z0 + i] != 1
    ]  # fmt: skip
    stack = np.insert(crop, breaks, False, axis=0) if breaks else crop  # an empty slice at each break
    found, n = ndimage.label(stack, structure=np.ones((3, 3, 3)))
    if breaks:
        found = np.delete(found, [b + k for k, b in enumerate(breaks)], axis=0)
    labels[box] = found
    sizes = np.bincount(found.ravel(), minlength=n + 1)
    sizes[0] = 0
    return labels, n, sizes


def drop_minor_components_3d(mask: np.ndarray, fraction: float, numbers: list[int] | None = None) -> np.ndarray:
    """Keep the 26-connected 3D components of a patient's stacked mask (S, H, W) that hold at
    least `fraction` of the largest one's voxels; the rest are taken as false alarms. `numbers`:
    as in `regions_3d`."""
    mask = np.asarray(mask, bool)
    labels, n, sizes = regions_3d(mask, numbers)
    if n <= 1:
        return mask
    keep = sizes >= fraction * sizes.max()
    keep[0] = False
    return keep[labels]


def keep_largest_3d(mask: np.ndarray, numbers: list[int] | None = None) -> np.ndarray:
    """Keep only the largest 26-connected 3D component of a volume's stacked mask (S, H, W), as
    Buda et al.'s published pipeline does: a low-grade glioma is one lesion, and a block of
    slices away from it is taken as a false alarm. Equal largest components are all kept.
    `numbers`: as in `regions_3d`."""
    return drop_minor_components_3d(mask, 1.0, numbers)


CLOSE_CALL = 0.5  # a dropped 3D region this large against the kept one gets a note


INFERIOR_FIRST = "slices counted from 0 at the most inferior"  # a volume's axial slices, as cut
FILE_ORDER = "slices counted from 0 in the file's order"  # a volume that states no orientation


def volume_order(oriented: bool) -> str:
    """How a volume's slices are counted in notes: from the most inferior, or, for a file that
    states no orientation (nibabel guesses one), in the file's own order."""
    return INFERIOR_FIRST if oriented else FILE_ORDER


def largest_3d_noted(
    mask: np.ndarray, numbers: list[int] | None = None, ratio: float = CLOSE_CALL, order: str | None = None
) -> tuple[np.ndarray, str | None]:
    """`keep_largest_3d`, plus a note when it is a close call: a region it drops holds at least
    `ratio` of the kept region's voxels, so both may be tumor (a small lesion beside a block of
    false alarms, or a multifocal tumor). The note names the regions by slice: `numbers` (the
    slice files' numbers) when given, else the stack index counted from 0 (the first slice, the
    most inferior for a volume, which `order` = INFERIOR_FIRST says). It names every region kept
    (equal largest ones are all kept) and every region dropped at or above `ratio`."""
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    labels, n, sizes = regions_3d(mask, numbers)
    if n <= 1:
        return mask, None
    kept = np.flatnonzero(sizes == sizes.max())
    rivals = [
        k for k in np.argsort(-sizes, kind="stable") if 0 < sizes[k] < sizes.max() and sizes[k] >= ratio * sizes.max()
    ]
    keep = np.zeros(n + 1, bool)
    keep[kept] = True
    if not rivals:
        return keep[labels], None
    extents = ndimage.find_objects(labels)
    label = (lambda i: numbers[i]) if numbers is not None else (lambda i: i)

    def region(k: int) -> str:
        z = extents[k - 1][0]
        a, b = label(z.start), label(z.stop - 1)
        voxels = f"{sizes[k]} voxel{'s' if sizes[k] > 1 else ''}"
        return f"{voxels} in slice {a}" if a == b else f"{voxels} in slices {a}-{b}"

    base = "slice numbers" if numbers is not None else order or "slices counted from 0"
    them = "regions" if len(rivals) > 1 else "region"
    note = (
        f"close call of the largest-region step ({base}): kept {'; '.join(map(region, kept))}; "
        f"dropped {'; '.join(map(region, rivals))}. The dropped {them} may be tumor too"
    )
    return keep[labels], note


def close_call(mask: np.ndarray, numbers: list[int] | None = None, ratio: float = CLOSE_CALL) -> str | None:
    """The note of `largest_3d_noted` alone: None unless keeping the largest region is a close call."""
    return largest_3d_noted(mask, numbers, ratio)[1]


def network_inputs(
    images: np.ndarray, config: ModelConfig, volume: bool = False, numbers: list[int] | None = None
) -> np.ndarray:
    """uint8 slices (N, C, H, W) -> what the network (or its ONNX graph) takes: for a model with
    `intensity` "volume", scaled per volume when `volume` (the slices are one volume's), else
    per slice; plus, for a 2.5D model, the neighbouring slices' FLAIR (`add_context`), taken
    from the adjacent slices when `volume` (in order or numbered by `numbers`), else each
    slice's own."""
    if config.intensity == "volume" and len(images):
        images = volume_normalize(images) if volume else np.stack([volume_normalize(s[None])[0] for s in images])
    return add_context(images, config.context, config.channels, numbers, volume)


def as_uint8_slices(images: np.ndarray) -> np.ndarray:
    """The slices as uint8, the form every backend reads (as the image files hold them).

    Integer arrays within 0-255 are converted, booleans to 0/255 as `read_image` does; floats and
    out-of-range integers are refused, since whether 1.0 means white or nearly black cannot be
    told from the array."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    if images.dtype == bool:  # as `tumorseg.io.read_image` reads a 1-bit image: white is 255
        return images.astype(np.uint8) * 255
    if np.issubdtype(images.dtype, np.integer):
        if images.size == 0 or (images.min() >= 0 and images.max() <= 255):
            return images.astype(np.uint8)
        raise TumorsegError(
            f"slices must hold values 0-255 (uint8, as the image files do); got {images.dtype} values "
            f"{images.min()}-{images.max()}"
        )
    raise TumorsegError(
        f"slices must be uint8 (0-255, as the image files hold them); got {images.dtype}. Scale them to "
        "0-255 and convert with .astype(np.uint8), or read the files with tumorseg.io"
    )


def _whole(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, np.integer))


def check_setting(name: str, value: object) -> None:
    """Refuse a bad value of a Predictor setting `name` (`check_settings`; tta, fill_holes and
    largest must be booleans); other names pass."""
    if name in ("tta", "fill_holes", "largest") and not isinstance(value, (bool, np.bool_)):
        raise TumorsegError(f"{name} {value!r}: must be True or False")
    if name in ("threshold", "batch_size", "min_size"):
        check_settings(**{name: value})


def check_numbers(numbers: Sequence[int] | None, count: int) -> None:
    """Refuse slice numbers that are not one distinct whole number per slice."""
    if numbers is None:
        return
    if len(numbers) != count:
        raise TumorsegError(f"{len(numbers)} slice numbers for {count} slices")
    if not all(_whole(n) for n in numbers):
        raise TumorsegError(f"slice numbers must be whole numbers; got {list(numbers)[:5]!r}")
    if len(set(map(int, numbers))) != count:
        raise TumorsegError("slice numbers must differ: each names one slice of the volume")


def check_settings(threshold: float = 0.5, batch_size: int = 32, min_size: int = 0) -> None:
    """Refuse a threshold of 0 or 1 (or outside, or not a number), a batch size under 1 and a
    min_size under 0 (or either not a whole number), with why."""
    if not _whole(batch_size):
        raise TumorsegError(f"batch_size {batch_size!r}: must be a whole number (slices per batch)")
    if not _whole(min_size) or min_size < 0:
        raise TumorsegError(f"min_size {min_size!r}: must be a whole number of pixels, 0 or more (0 keeps every part)")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise TumorsegError(f"threshold {threshold!r}: must be a number between 0 and 1")
    if batch_size < 1:
        raise TumorsegError(f"batch_size {batch_size}: must be at least 1")
    if not 0 < threshold < 1:
        raise TumorsegError(
            f"threshold {threshold}: must lie strictly between 0 and 1 (a pixel is tumor when its probability "
            "is above it, so 1 marks nothing and 0 marks every pixel)"
        )


def check_probabilities(probs: np.ndarray) -> None:
    """Refuse maps that are not probabilities: not numbers, NaN or infinite, or outside [0, 1] (a
    saved X_prob.png holds probability x 255; thresholded as it is, every non-zero pixel was tumor)."""
    if probs.dtype.kind not in "biuf":
        raise TumorsegError(f"probabilities must be numbers in [0, 1]; got dtype {probs.dtype}")
    if not probs.size:
        return
    low, high = probs.min(), probs.max()  # a NaN carries through both, an infinity shows in one
    if not (np.isfinite(low) and np.isfinite(high)):
        raise TumorsegError("probabilities hold NaN or infinite values; they must be numbers in [0, 1]")
    if low < -1e-5 or high > 1 + 1e-5:  # a float's rounding in a resize may pass 1 by an ulp
        hint = " (an X_prob.png holds probability x 255: divide it by 255)" if high <= 255 else ""
        raise TumorsegError(f"probabilities must lie in [0, 1]; got values from {low} to {high}{hint}")


class Predictor:
    """A loaded model plus its preprocessing: `predict` maps raw slices to probabilities,
    `mask` probabilities to masks, `segment` does both.

    Slices are (N, C, H, W) integer arrays with values 0-255 (uint8, or any integer type or
    bool within that range; a list of slices of one size is taken too; floats are refused),
    C = 3 in the order pre-contrast T1, FLAIR, post-contrast T1 (or C = 1, FLAIR, for a
    `channels="flair"` model; see `config`). Outputs are at each input's own H x W: float32
    probabilities (N, H, W), or boolean masks. Defaults: threshold 0.5, holes filled, no
    minimum size, the largest 3D part kept when the slices are one volume (`volume=True`).
    The settings (batch_size, tta, threshold, min_size, fill_holes, largest) may be changed
    on the object; a bad value is refused when set.

    backend `torch` runs the U-Net eagerly (channels_last, inference mode); `onnx` runs
    the exported graph (preprocessing inside) in ONNX Runtime, `onnx-int8` the quantized one.
    """

    def __setattr__(self, name: str, value) -> None:
        check_setting(name, value)
        super().__setattr__(name, value)

    def __init__(
        self,
        model: UNet | Ensemble,
        config: ModelConfig,
        batch_size: int = 32,
        tta: bool = False,
        threshold: float = 0.5,
        min_size: int = 0,
        fill_holes: bool = True,
        largest: bool = True,
        session=None,
        backend: str | None = None,
    ):
        self.batch_size = batch_size  # each setting checked as it is set (__setattr__), before the model
        self.tta = tta
        self.threshold = threshold
        self.min_size = min_size
        self.fill_holes = fill_holes
        self.largest = largest
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = config
        self.session = session
        self.backend = backend or ("onnx" if session is not None else "torch")

    @classmethod
    def from_checkpoint(
        cls, path: str | Path | None = None, backend: str = "auto", threads: int = 0, **kwargs: Any
    ) -> Predictor:
        """Load `path`, or the shipped model when it is None, on `backend`.

        Backends: torch, onnx (the fp32 export), onnx-int8 (the quantized graph beside the
        checkpoint) and auto, the fastest of them measured here that can run
        (benchmarks/bench_inference.py; see `resolve_backend`). `threads` sets PyTorch's
        intra-op threads for the process (`set_threads`: 0 means $OMP_NUM_THREADS, else one per
        core). Other keywords go to `Predictor` (batch_size, tta, threshold, min_size,
        fill_holes, largest). One Predictor may serve several threads at once.
        """
        for name, value in kwargs.items():  # first, before anything loads
            check_setting(name, value)
        path = path or default_weights()
        ckpt = load_checkpoint(path)
        set_threads(threads)
        backend = resolve_backend(backend, path)
        if backend not in BACKENDS:
            raise TumorsegError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        session = onnx_session(path, int8=backend == "onnx-int8") if backend != "torch" else None
        return cls(build_model(ckpt, path), ckpt.config.model, session=session, backend=backend, **kwargs)

    def inputs(self, images: np.ndarray, volume: bool = False, numbers: list[int] | None = None) -> np.ndarray:
        """Slices with the model's `channels` -> the network's input (`network_inputs`)."""
        c = self.config
        try:
            images = np.asarray(images)  # a list of slices too
        except ValueError:
            raise TumorsegError("the slices differ in shape; give slices of one size (N, C, H, W)") from None
        if images.ndim == 0:
            raise TumorsegError(f"give slices as an array (N, C, H, W); got {type(images.item()).__name__} "
                                f"{images.item()!r:.60} (read an image file with tumorseg.io.read_image)")  # fmt: skip
        if images.ndim != 4 or images.shape[1] != c.sequence_channels:
            hint = ""
            if images.ndim == 3 and images.shape[0] == c.sequence_channels:
                hint = "; for one slice (C, H, W), give it as slice[None]"
            elif images.ndim in (2, 3) and (images.ndim == 2 or images.shape[-1] in (1, 3)):
                hint = ("; for one image as read_image returns it (H, W) or (H, W, C), give "
                        "tumorseg.data.lgg.select_channels(image, predictor.config.channels)[None]")  # fmt: skip
            raise TumorsegError(
                f"the model takes slices of {c.sequence_channels} channel(s) (channels={c.channels!r}) as "
                f"(N, C, H, W); got shape {tuple(images.shape)}{hint}"
            )
        if len(images) and min(images.shape[2:]) == 0:
            raise TumorsegError(f"slices of size {images.shape[2]}x{images.shape[3]}: there is nothing to segment")
        check_numbers(numbers, len(images))
        return network_inputs(as_uint8_slices(images), c, volume, numbers)

    def probabilities(
        self, images: np.ndarray, flip: bool = False, volume: bool = False, numbers: list[int] | None = None
    ) -> np.ndarray:
        """uint8 (N, C, H, W) slices of one size -> float32 probabilities (N, H, W) at H x W.

        `flip` runs the left-right mirrored input and mirrors the answer back; `volume` and
        `numbers` say where each slice's neighbours are (see `inputs`).
        """
        return self._run(self.inputs(images, volume, numbers), flip)

    def _run(self, images: np.ndarray, flip: bool) -> np.ndarray:
        if self.session is None:
            return slice_probabilities(self.model, self.config, images, flip, self.batch_size)
        x = np.ascontiguousarray(images[..., ::-1] if flip else images, dtype=np.uint8)
        name = self.session.get_inputs()[0].name
        outs = [
            self.session.run(None, {name: x[i : i + self.batch_size]})[0][:, 0]
            for i in range(0, len(x), self.batch_size)
        ]
        out = np.concatenate(outs) if outs else np.zeros((0, *x.shape[-2:]), np.float32)
        return np.ascontiguousarray(out[..., ::-1]) if flip else out

    def predict(self, images: np.ndarray, volume: bool = False, numbers: list[int] | None = None) -> np.ndarray:
        """uint8 (N, C, H, W) slices of one size (or a list of them) -> float32 probabilities
        (N, H, W) at H x W, averaged over a left-right flip when `tta` is on. `volume` and
        `numbers` say where each slice's neighbours are (see `inputs`)."""
        x = self.inputs(images, volume, numbers)
        p = self._run(x, False)
        if self.tta:
            p = (p + self._run(x, True)) / 2
        return p

    def segment(self, images: np.ndarray, volume: bool = False, numbers: list[int] | None = None) -> np.ndarray:
        """Raw slices -> boolean masks: `predict`, then `mask`, both told whether it is one volume."""
        return self.segment_with_notes(images, volume, numbers)[0]

    def segment_with_notes(
        self, images: np.ndarray, volume: bool = False, numbers: list[int] | None = None, order: str | None = None
    ) -> tuple[np.ndarray, list[str]]:
        """`segment`, plus the notes of `mask_with_notes`."""
        return self.mask_with_notes(self.predict(images, volume, numbers), volume, numbers, order=order)

    def mask(self, probs: np.ndarray, volume: bool = False, numbers: list[int] | None = None) -> np.ndarray:
        """Threshold at `threshold` (0.5 by default), fill holes (unless `fill_holes` is off), drop
        components under `min_size` px; when `volume` (the slices are one volume's, in order) and
        `largest` is on, keep only the volume's largest 3D component (`keep_largest_3d`; `numbers`,
        the slices' numbers, leave gaps between slices not adjacent). A lone slice keeps all its parts."""
        return self.mask_with_notes(probs, volume, numbers)[0]

    def mask_with_notes(
        self,
        probs: np.ndarray,
        volume: bool = False,
        numbers: list[int] | None = None,
        largest: bool | None = None,
        order: str | None = None,
    ) -> tuple[np.ndarray, list[str]]:
        """`mask`, plus a note for the user when keeping the largest region was a close call
        (`largest_3d_noted`; `numbers`: the slices' file numbers, to name them by; else `order`
        says how they are counted, INFERIOR_FIRST for a volume's axial slices). `largest`
        overrides the predictor's own setting for this call."""
        return self.mask_parts(probs, volume, numbers, largest, order)[:2]

    def mask_parts(
        self,
        probs: np.ndarray,
        volume: bool = False,
        numbers: list[int] | None = None,
        largest: bool | None = None,
        order: str | None = None,
    ) -> tuple[np.ndarray, list[str], np.ndarray]:
        """`mask_with_notes`, plus what the largest-region step dropped (empty when it did not run),
        from one post-processing."""
        try:
            probs = np.asarray(probs)
        except ValueError:  # a list of maps of other sizes
            raise TumorsegError("the probability maps differ in shape; mask each size on its own") from None
        if probs.ndim != 3:
            raise TumorsegError(f"probabilities must be (N, H, W), one map per slice; got shape {probs.shape}")
        check_probabilities(probs)
        check_numbers(numbers, len(probs))
        masks = postprocess(probs, self.threshold, self.min_size, self.fill_holes)
        largest = self.largest if largest is None else largest
        if not (volume and largest and len(masks) > 1):
            return masks, [], np.zeros_like(masks)
        kept, note = largest_3d_noted(masks, numbers, order=order)
        return kept, [note] if note else [], masks & ~kept
