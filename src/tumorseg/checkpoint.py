"""Checkpoints: safetensors weights plus the config and metadata in the header.

A checkpoint alone rebuilds its model. Nothing is ever unpickled. Each file records a
SHA-256 of its tensors and the config schema version, both checked on load. Writes
are atomic (temporary file, fsync, rename).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from .config import SCHEMA_VERSION, TrainConfig, validate_config
from .errors import CheckpointError
from .io import atomic_write_bytes
from .models import Ensemble, UNet

FORMAT = "tumorseg-checkpoint"


@dataclass
class Checkpoint:
    """model: the network's state dict (fp32); extra: optimizer/EMA tensors for resuming."""

    config: TrainConfig
    model: dict[str, torch.Tensor]
    meta: dict = field(default_factory=dict)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _digest(tensors: dict[str, torch.Tensor], *texts: str) -> str:
    h = hashlib.sha256()
    for text in texts:
        h.update(text.encode())
    for key in sorted(tensors):
        t = tensors[key].contiguous()
        h.update(key.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_checkpoint(path: str | Path, ckpt: Checkpoint, half: bool = False) -> None:
    """Write `ckpt` to `path`. `half` stores float weights as fp16 (they load as fp32)."""
    tensors = {}
    for k, v in ckpt.model.items():
        v = v.detach().cpu()
        if half and v.is_floating_point():
            v = v.half()
        tensors[f"model.{k}"] = v.contiguous()
    for k, v in ckpt.extra.items():
        tensors[f"extra.{k}"] = v.detach().cpu().contiguous()
    config, meta = ckpt.config.model_dump_json(), json.dumps(ckpt.meta)
    header = {
        "format": FORMAT,
        "schema_version": str(SCHEMA_VERSION),
        "config": config,
        "meta": meta,
        "sha256": _digest(tensors, config, meta),
    }
    atomic_write_bytes(path, st_save(tensors, metadata=header))


IMAGE_SIGNATURES = ((b"\x89PNG", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"))


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and verify a checkpoint, raising CheckpointError naming the file."""
    from safetensors import safe_open  # header metadata

    path = Path(path)
    if path.is_dir():  # a run folder: its checkpoints are inside
        inside = [n for n in ("last.safetensors", "best.safetensors") if (path / n).is_file()]
        hint = f"give {path / inside[0]}" if inside else "give the .safetensors file a run wrote"
        raise CheckpointError(f"{path}: a folder, not a checkpoint; {hint}")
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read checkpoint ({exc.strerror or exc})") from None
    try:  # the header alone first: a large file of another kind is refused before it is read whole
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
        if header.get("format") != FORMAT:
            raise CheckpointError(f"{path}: not a tumorseg checkpoint (format={header.get('format')!r})")
        if header.get("schema_version") != str(SCHEMA_VERSION):
            raise CheckpointError(
                f"{path}: config schema version {header.get('schema_version')} is not the supported {SCHEMA_VERSION}"
            )
        tensors = st_load(path.read_bytes())
    except CheckpointError:
        raise
    except Exception as exc:
        image = next((kind for sig, kind in IMAGE_SIGNATURES if head.startswith(sig)), None)
        if image:
            raise CheckpointError(f"{path}: a {image} image, not a checkpoint (a .safetensors file)") from None
        if head[:2] == b"PK" or head[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
            raise CheckpointError(f"{path}: a pickle/zip checkpoint; only safetensors files are loaded") from None
        if path.suffix.lower() == ".onnx":
            raise CheckpointError(
                f"{path}: an ONNX graph, not a checkpoint; give the .safetensors file beside it (the int8 graph "
                "beside a checkpoint is what --backend onnx-int8 runs)"
            ) from None
        raise CheckpointError(f"{path}: not a valid safetensors checkpoint (truncated or corrupt: {exc})") from None
    if "sha256" not in header:
        raise CheckpointError(f"{path}: no checksum (metadata key sha256): not a tumorseg checkpoint, or edited")
    if header.get("sha256") != _digest(tensors, header.get("config", ""), header.get("meta", "")):
        raise CheckpointError(f"{path}: checksum mismatch; the file was modified or damaged")
    try:
        config = validate_config(json.loads(header["config"]), str(path))
        meta = json.loads(header.get("meta", "{}"))
    except (KeyError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable config in header ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: unreadable metadata in header (a JSON object was expected)")
    model = {k[6:]: v.float() if v.is_floating_point() else v for k, v in tensors.items() if k.startswith("model.")}
    extra = {k[6:]: v for k, v in tensors.items() if k.startswith("extra.")}
    return Checkpoint(config, model, meta, extra)


def build_model(ckpt: Checkpoint, source: str | Path | None = None) -> UNet | Ensemble:
    """The network the checkpoint's config describes (a UNet, or an Ensemble of `members`
    UNets), with its weights, in eval mode; `source` (the file it came from) names it in errors."""
    m = ckpt.config.model
    model = new_model(m.in_channels, m.base, m.depth, m.members)
    try:
        model.load_state_dict(ckpt.model)
    except RuntimeError as exc:
        where = f"{source}: " if source else ""
        raise CheckpointError(f"{where}weights do not match the config's model: {str(exc)[:300]}") from None
    return model.eval()


def new_model(in_channels: int, base: int, depth: int, members: int = 1) -> UNet | Ensemble:
    """An untrained UNet, or an Ensemble of `members` of them when members > 1."""
    if members == 1:
        return UNet(in_channels, 1, base, depth)
    return Ensemble([UNet(in_channels, 1, base, depth) for _ in range(members)])
