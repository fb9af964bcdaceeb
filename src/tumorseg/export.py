"""ONNX export with the preprocessing inside: one file is a complete segmenter.

Contract of the exported graph:
  input  `image`: uint8 (N, C, H, W), the slice exactly as read from the file (0..255);
                  N, H and W are dynamic, C is the model's channel count (3, or 1 for FLAIR).
  inside:         scale to [0, 1] (as the model was trained), resize to the model's size,
                  U-Net (batch norm with its eval-mode statistics), sigmoid, resize back.
  output `probability`: float32 (N, 1, H, W) in [0, 1].
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import build_model, load_checkpoint
from .config import ModelConfig
from .data.transforms import scale_intensity
from .errors import TumorsegError
from .infer import default_weights
from .io import atomic_write_bytes
from .models import UNet


class Segmenter(nn.Module):
    """uint8 slices of any size -> tumor probability at the same size."""

    def __init__(self, model: UNet, config: ModelConfig):
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


def export_onnx(weights: str | Path | None, out: str | Path, opset: int = 18) -> Path:
    """Export a checkpoint (default: the shipped model) to ONNX with the dynamo exporter."""
    try:
        import onnxscript  # noqa: F401
    except ImportError:
        raise TumorsegError("ONNX export needs the onnx extra: pip install 'tumorseg[onnx]'") from None
    ckpt = load_checkpoint(weights or default_weights())
    seg = Segmenter(build_model(ckpt), ckpt.config.model).eval()
    c = ckpt.config.model.in_channels
    example = torch.randint(0, 256, (2, c, 256, 256), dtype=torch.uint8)
    n = torch.export.Dim("N", min=1, max=4096)
    h = torch.export.Dim("H", min=16, max=8192)
    w = torch.export.Dim("W", min=16, max=8192)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.export")
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
    program.save(str(tmp))
    atomic_write_bytes(out, tmp.read_bytes())
    tmp.unlink(missing_ok=True)
    return out


def cached_onnx(weights: str | Path | None) -> Path:
    """The ONNX export of `weights`, made once and kept in ~/.cache/tumorseg by content hash."""
    path = Path(weights or default_weights())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("TUMORSEG_CACHE", Path.home() / ".cache" / "tumorseg"))
    target = cache / f"{path.stem}-{digest}.onnx"
    if not target.is_file():
        export_onnx(path, target)
    return target
