"""Inference: batched, at the model's size, with probabilities resized back to the input's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .checkpoint import build_model, load_checkpoint
from .config import ModelConfig
from .data.transforms import preprocess, resize
from .models import UNet


def set_threads(threads: int = 0) -> None:
    """Use `threads` intra-op threads, or one per available core when 0."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(threads or cores)


@torch.inference_mode()
def predict_logits(model: UNet, x: torch.Tensor, batch_size: int = 32, tta: bool = False) -> torch.Tensor:
    """Logits for preprocessed float input (N, C, h, w), in batches; `tta` averages a left-right flip."""
    was_training = model.training
    model.eval()
    outs = []
    device = next(model.parameters()).device
    for i in range(0, len(x), batch_size):
        xb = x[i : i + batch_size].to(device).contiguous(memory_format=torch.channels_last)
        logits = model(xb)
        if tta:
            logits = (logits + model(xb.flip(-1)).flip(-1)) / 2
        outs.append(logits.float().cpu())
    model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0, 1, *x.shape[-2:])


class Predictor:
    """A loaded model plus its preprocessing. `predict` maps raw slices to probabilities."""

    def __init__(self, model: UNet, config: ModelConfig, batch_size: int = 32, tta: bool = False):
        self.model = model.eval().to(memory_format=torch.channels_last)
        self.config = config
        self.batch_size = batch_size
        self.tta = tta

    @classmethod
    def from_checkpoint(cls, path: str | Path, **kwargs) -> Predictor:
        ckpt = load_checkpoint(path)
        return cls(build_model(ckpt), ckpt.config.model, **kwargs)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """uint8 (N, C, H, W) slices of one size -> float32 probabilities (N, H, W) at H x W."""
        x = torch.from_numpy(np.ascontiguousarray(images))
        size = tuple(x.shape[-2:])
        probs = []
        for i in range(0, len(x), self.batch_size):
            xb = preprocess(x[i : i + self.batch_size], self.config.image_size, self.config.intensity)
            logits = predict_logits(self.model, xb, self.batch_size, self.tta)
            probs.append(resize(torch.sigmoid(logits), size)[:, 0])
        return torch.cat(probs).numpy() if probs else np.zeros((0, *size), np.float32)
