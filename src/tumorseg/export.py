"""ONNX export with the preprocessing inside: one file is a complete segmenter.

Contract of the exported graph:
  input  `image`: uint8 (N, C, H, W), what `Predictor.inputs` gives (`network_inputs`): for
                  most models the slice exactly as read from the file (0..255); N, H and W are
                  dynamic, C is the model's `in_channels`: 3, or 1 for FLAIR, plus 2 * context
                  for a 2.5D model, whose neighbouring slices' FLAIR (`add_context`) is put
                  together outside the graph, as is the per-volume scaling of an
                  `intensity="volume"` model (`volume_normalize`).
  inside:         scale to [0, 1] (as the model was trained), resize to the model's size,
                  U-Net (batch norm with its eval-mode statistics), sigmoid, resize back.
  output `probability`: float32 (N, 1, H, W) in [0, 1].
The graph's metadata (`tumorseg.*` keys, `contract_metadata`) records that input contract, so
the file alone says what to feed it, and the SHA-256 of the checkpoint it came from.

`export_int8` writes the same contract with the convolutions quantized to int8 (static,
calibrated on slices of the checkpoint's own training patients); everything else stays fp32.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import build_model, load_checkpoint
from .config import ModelConfig
from .data.transforms import scale_intensity
from .errors import TumorsegError, WriteError
from .infer import default_weights
from .io import Log, atomic_write_bytes
from .models import Ensemble, UNet

if TYPE_CHECKING:
    import onnx


class ShuffleUp(nn.Module):
    """A 2x2, stride-2 transposed convolution as a 1x1 convolution and a pixel shuffle: the
    same function, but made of ops that int8 quantization covers (ONNX Conv + DepthToSpace)."""

    def __init__(self, up: nn.ConvTranspose2d):
        super().__init__()
        cin, cout = up.in_channels, up.out_channels
        self.conv = nn.Conv2d(cin, cout * 4, 1)
        with torch.no_grad():  # out channel o*4 + a*2 + b feeds output pixel (2i + a, 2j + b)
            self.conv.weight.copy_(up.weight.permute(1, 2, 3, 0).reshape(cout * 4, cin, 1, 1))
            self.conv.bias.copy_(up.bias.repeat_interleave(4))
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


def with_shuffle_ups(model: UNet | Ensemble) -> UNet | Ensemble:
    """A copy of `model` (a UNet or each UNet of an Ensemble) whose 2x2 stride-2 transposed
    convolutions are `ShuffleUp`s."""
    import copy

    model = copy.deepcopy(model).eval()
    for net in model.members if isinstance(model, Ensemble) else [model]:
        for i, up in enumerate(net.ups):
            if not isinstance(up, nn.ConvTranspose2d) or up.bias is None:
                continue
            shape = (up.kernel_size, up.stride, up.padding, up.output_padding, up.dilation, up.groups)
            if shape == ((2, 2), (2, 2), (0, 0), (0, 0), (1, 1), 1):
                net.ups[i] = ShuffleUp(up)
    return model


class Segmenter(nn.Module):
    """uint8 slices of any size -> tumor probability at the same size."""

    def __init__(self, model: UNet | Ensemble, config: ModelConfig):
        super().__init__()
        self.model = model.eval()
        self.size = config.image_size
        self.intensity = config.intensity

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        h, w = image.shape[-2], image.shape[-1]
        x = scale_intensity(image, self.intensity)
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        p = torch.sigmoid(self.model(x))
        return F.interpolate(p, size=(h, w), mode="bilinear", align_corners=False)


def check_out(out: str | Path, weights: str | Path) -> Path:
    """Refuse, before any work, an `out` that cannot be written (a folder, a folder that cannot
    be made or written to) or that is the checkpoint `weights` itself, which it would replace.
    Raises WriteError."""
    out = Path(out)
    if out.is_dir():
        raise WriteError(f"{out}: is a folder; give the path of the .onnx file to write")
    if out.exists() and Path(weights).exists() and os.path.samefile(out, weights):
        raise WriteError(f"{out}: is the checkpoint being exported; write the graph to another file")
    nearest = out.parent  # made only when the graph is written, so a refusal leaves no folder behind
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise WriteError(f"{out}: cannot create its folder {out.parent}: {nearest} is a file")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise WriteError(f"{out}: its folder {nearest} is not writable")
    return out


@contextlib.contextmanager
def writing(out: Path, report_as: Path | None = None) -> Iterator[None]:
    """Make `out`'s folder, and turn an OSError while writing `out` (full disk, read-only file
    system) into a WriteError naming `report_as`: the graph asked for, when `out` is a step on the way."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        yield
    except OSError as exc:
        shown = report_as or out
        raise WriteError(f"{shown}: cannot write the graph ({exc.strerror or exc})") from None


def temporary_beside(out: Path, tag: str) -> Path:
    """A hidden temporary name beside `out`, of at most 255 bytes however long the name asked for
    (an int8 export nests two of them)."""
    short = out.name.encode("utf-8", "surrogateescape")[:200].decode("utf-8", "ignore")
    return out.with_name(f".{short}.{os.getpid()}.{tag}")


def discard(path: Path) -> None:
    """Remove a temporary file if it is there; a failure to remove it never hides the real error."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)


def contract_metadata(config: ModelConfig) -> dict[str, str]:
    """The graph's input contract as ONNX metadata: what the `image` input must hold."""
    outside = []
    if config.context:
        outside.append(f"the FLAIR of the {config.context} slice(s) below and above as channels (add_context)")
    if config.intensity == "volume":
        outside.append("each channel scaled per volume (volume_normalize)")
    return {
        "tumorseg.in_channels": str(config.in_channels),
        "tumorseg.channels": config.channels,
        "tumorseg.context": str(config.context),
        "tumorseg.intensity": config.intensity,
        "tumorseg.image_size": str(config.image_size),
        "tumorseg.input": "uint8 (N, C, H, W) slices, 0..255, "
        + ("as read from the files" if not outside else "with outside the graph: " + "; ".join(outside)),
    }


CONTRACT_KEYS = tuple(contract_metadata(ModelConfig()))  # the keys every export writes


def export_onnx(
    weights: str | Path | None,
    out: str | Path,
    opset: int = 18,
    shuffle_ups: bool = False,
    report_as: Path | None = None,
) -> Path:
    """Export a checkpoint (default: the shipped model) to ONNX with the dynamo exporter.

    `shuffle_ups` writes the transposed convolutions as 1x1 convolution + pixel shuffle
    (`ShuffleUp`), which int8 quantization then covers too. The graph's metadata holds
    `contract_metadata`. Raises WriteError for an `out` that cannot be written or that is the
    checkpoint itself, before any work is done; write errors name `report_as` (default `out`)."""
    try:
        import onnx
        import onnxscript  # noqa: F401
    except ImportError:
        raise TumorsegError("ONNX export needs the onnx extra: pip install 'tumorseg[onnx]'") from None
    weights = weights or default_weights()
    out = check_out(out, weights)
    ckpt = load_checkpoint(weights)
    model = build_model(ckpt, weights)
    seg = Segmenter(with_shuffle_ups(model) if shuffle_ups else model, ckpt.config.model).eval()
    c = ckpt.config.model.in_channels
    example = torch.randint(0, 256, (2, c, 256, 256), dtype=torch.uint8)
    n = torch.export.Dim("N", min=1, max=4096)
    h = torch.export.Dim("H", min=16, max=8192)
    w = torch.export.Dim("W", min=16, max=8192)
    tmp = temporary_beside(out, "export")
    import logging
    import warnings

    logging.getLogger("torch.onnx").setLevel(logging.ERROR)

    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            seg,
            (example,),
            dynamo=True,
            input_names=["image"],
            output_names=["probability"],
            dynamic_shapes=({0: n, 2: h, 3: w},),
            opset_version=opset,
            verbose=False,
        )
    try:
        with writing(out, report_as):
            program.save(str(tmp))
            model = onnx.load(str(tmp))
            drop_traces(model)
            props = {p.key: p.value for p in model.metadata_props}
            own = {"tumorseg.source_sha256": file_sha256(weights), "tumorseg.graph_sha256": graph_sha256(model),
                   **contract_metadata(ckpt.config.model)}  # fmt: skip
            onnx.helper.set_model_props(model, {**props, **own})
            atomic_write_bytes(out, model.SerializeToString())
    finally:
        discard(tmp)
    return out


CACHE_KEEP = 20  # graphs; each use marks its graph, and the least recently used go first


def cached_onnx(weights: str | Path | None) -> Path:
    """The ONNX export of `weights`, made once and kept in ~/.cache/tumorseg by content hash;
    beyond CACHE_KEEP graphs there, the least recently used are removed."""
    path = Path(weights or default_weights())
    digest = file_sha256(path)[:16]
    cache = Path(os.environ.get("TUMORSEG_CACHE", Path.home() / ".cache" / "tumorseg"))
    target = cache / f"{path.stem}-{digest}.onnx"
    with contextlib.suppress(OSError):  # missing, or a cache shared read-only
        os.utime(target)  # used now, first: another process prunes the least recently used
    if target.is_file() and not graph_intact(target):  # damaged, edited or made before the digest: made again
        target.unlink(missing_ok=True)
    if not target.is_file():
        try:
            export_onnx(path, target)
        except WriteError as e:
            raise TumorsegError(f"{e}; the fp32 graph is cached in {cache}: set TUMORSEG_CACHE to a folder that "
                                "can be written, or use --backend torch") from None  # fmt: skip
        _prune(cache, keep=target)
    return target


_CACHED = re.compile(r".+-[0-9a-f]{16}\.onnx")  # cached_onnx's names: other files in the folder stay


def _prune(cache: Path, keep: Path) -> None:
    """Remove all but the CACHE_KEEP most recently used graphs in `cache` (never `keep`)."""
    times = {}
    for graph in cache.glob("*.onnx"):
        if _CACHED.fullmatch(graph.name):
            with contextlib.suppress(OSError):  # removed meanwhile by another process
                times[graph] = graph.stat().st_mtime
    for old in sorted(times, key=times.get, reverse=True)[CACHE_KEEP:]:
        if old != keep:
            old.unlink(missing_ok=True)


def int8_path(weights: str | Path) -> Path:
    """Where the int8 graph of a checkpoint lives: beside it, `<stem>.int8.onnx`."""
    weights = Path(weights)
    return weights.with_name(f"{weights.stem}.int8.onnx")


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def drop_traces(model: onnx.ModelProto) -> None:
    """Remove what the exporter records for debugging: each node's source file, line and FX text,
    the graph's export signature. They do not change what the graph computes, but they named the
    builder's absolute paths, and a re-export after an edit elsewhere in the file differed in bytes."""
    del model.graph.metadata_props[:]
    for item in (*model.graph.node, *model.graph.value_info, *model.graph.input, *model.graph.output):
        del item.metadata_props[:]


def graph_sha256(model: onnx.ModelProto) -> str:
    """SHA-256 of an ONNX model's graph (nodes and weights, not the metadata that records it), so
    that a graph damaged or edited since its export can be told (`tumorseg.graph_sha256`)."""
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def graph_intact(path: Path) -> bool:
    """Whether the ONNX file at `path` loads and its graph is the one its export recorded."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf raises its own decode errors for bad files
        return False
    return graph_state(model) == "intact"


def graph_state(model: onnx.ModelProto) -> str:
    """How an ONNX model's graph compares with the digest its export recorded: "intact",
    "unrecorded" (exported before tumorseg recorded one) or "changed" (damaged or edited since)."""
    recorded = {p.key: p.value for p in model.metadata_props}.get("tumorseg.graph_sha256")
    if recorded is None:
        return "unrecorded"
    return "intact" if recorded == graph_sha256(model) else "changed"


def calibration_slices(
    weights: str | Path, data: str | Path, every: int = 9, log: Log | None = None
) -> tuple[np.ndarray, list[str]]:
    """uint8 slices (N, C, H, W) of every `every`-th training patient of the checkpoint's split.

    Only training patients: the validation and test patients stay unseen by every choice.
    """
    from .data.lgg import find_cases, load_case
    from .infer import network_inputs

    ckpt = load_checkpoint(weights)
    train = ckpt.meta.get("split", {}).get("train", [])
    by_id = {c.id: c for c in find_cases(data, ids=train)}
    ids = [i for i in train if i in by_id][::every]
    if not ids:
        raise TumorsegError(f"{data}: none of the checkpoint's training patients are there to calibrate int8 on")
    missing = [i for i in train if i not in by_id]
    if missing and log:
        log(f"warning: {len(missing)} of the checkpoint's {len(train)} training patients are not in {data} "
            f"(such as {missing[0]}): calibrated on {len(ids)} of those found, so the int8 graph differs from "
            "one calibrated with all of them")  # fmt: skip
    m = ckpt.config.model
    cases = (load_case(by_id[i], None, m.channels) for i in ids)
    images = [network_inputs(c.images, m, True, c.numbers) for c in cases]  # each as Predictor shows a volume
    sizes = {im.shape[-2:] for im in images}
    if len(sizes) > 1:
        raise TumorsegError(f"{data}: calibration patients have different slice sizes {sorted(sizes)}")
    return np.concatenate(images), ids


# the network's ops; the input scaling, the resizes and the sigmoid stay fp32
QUANTIZED_OPS = ["Conv", "ConvTranspose", "Relu", "MaxPool", "Concat", "DepthToSpace"]


def quantize_onnx(
    src: str | Path,
    out: str | Path,
    calibration: np.ndarray,
    batch_size: int = 16,
    reduce_range: bool = True,
    report_as: Path | None = None,
) -> Path:
    """Static int8 quantization of an exported graph's network (`QUANTIZED_OPS`; QOperator,
    per-channel 7-bit weights, uint8 activations with ranges from `calibration`, uint8
    (N, C, H, W) slices): the activations stay uint8 from the first convolution to the last.
    Scaling, resizes and the sigmoid stay fp32. A failed write names `report_as` (default `out`).

    7-bit weights (`reduce_range`) keep the uint8 x int8 products from saturating on CPUs
    without VNNI (AVX2-only x86, e.g. AMD Zen 3), so one file gives the same answers there.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    name = "image"

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(range(0, len(calibration), batch_size))

        def get_next(self):
            i = next(self.batches, None)
            return None if i is None else {name: np.ascontiguousarray(calibration[i : i + batch_size])}

    out = Path(out)
    tmp = temporary_beside(out, "quant")
    import io
    import logging

    root = logging.getLogger()  # the quantizer logs advice to the root logger and prints shape protos
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), writing(out, report_as):
            quantize_static(str(src), str(tmp), Reader(), quant_format=QuantFormat.QOperator, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=reduce_range,
                            op_types_to_quantize=QUANTIZED_OPS)  # fmt: skip
            atomic_write_bytes(out, tmp.read_bytes())
    finally:
        root.setLevel(level)
        discard(tmp)
    return out


EXPORT_FORMAT = "1"  # bump when the graph's preprocessing or layout changes: older graphs are refused


def export_int8(weights: str | Path | None, out: str | Path, data: str | Path, log: Log | None = None) -> Path:
    """Export a checkpoint to an int8 ONNX graph with the same contract as `export_onnx`.

    The graph records the SHA-256 of the checkpoint it came from, the export format and the
    calibration patients (metadata `tumorseg.source_sha256`, `tumorseg.export_format`,
    `tumorseg.calibration`), so a stale graph is refused at load time. It is written once,
    atomically, when complete.
    """
    import importlib.util

    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise TumorsegError(f"int8 export needs {', '.join(missing)}: pip install 'tumorseg[onnx]'")
    import onnx
    import onnxruntime.quantization  # noqa: F401  now, not halfway: a signal in its import is a traceback

    weights = Path(weights or default_weights())
    out = check_out(out, weights)
    images, ids = calibration_slices(weights, data, log=log)
    work = None
    try:  # in a hidden folder of its own beside `out`: what the quantizer writes beside its input goes too
        with writing(out):  # its folder made, or a WriteError naming it
            work = Path(tempfile.mkdtemp(prefix=".tumorseg-int8-", dir=out.parent))
        fp32, quant = work / "fp32.onnx", work / "int8.onnx"
        export_onnx(weights, fp32, shuffle_ups=True, report_as=out)  # steps on the way name the graph asked for
        quantize_onnx(fp32, quant, images, report_as=out)
        model = onnx.load(str(quant))
        drop_traces(model)  # and whatever the quantizer recorded
        contract = contract_metadata(load_checkpoint(weights).config.model)
        meta = {"tumorseg.source_sha256": file_sha256(weights), "tumorseg.graph_sha256": graph_sha256(model),
                "tumorseg.export_format": EXPORT_FORMAT, "tumorseg.calibration": " ".join(ids), **contract}  # fmt: skip
        onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **meta})
        with writing(out):
            atomic_write_bytes(out, model.SerializeToString())
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    return out
