"""tumorseg: brain tumor segmentation in MRI with a U-Net.

The names below are imported on first use, so `tumorseg --help` and the CLI's checks of its
options answer without loading PyTorch."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_WHERE = {
    "Checkpoint": "checkpoint",
    "build_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "ModelConfig": "config",
    "TrainConfig": "config",
    "find_cases": "data",
    "load_case": "data",
    "split_cases": "data",
    "CheckpointError": "errors",
    "DataError": "errors",
    "TumorsegError": "errors",
    "Predictor": "infer",
    "UNet": "models",
    "fit": "train",
}

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "DataError",
    "ModelConfig",
    "Predictor",
    "TrainConfig",
    "TumorsegError",
    "UNet",
    "build_model",
    "find_cases",
    "fit",
    "load_case",
    "load_checkpoint",
    "save_checkpoint",
    "split_cases",
    "__version__",
]

if TYPE_CHECKING:
    from .checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
    from .config import ModelConfig, TrainConfig
    from .data import find_cases, load_case, split_cases
    from .errors import CheckpointError, DataError, TumorsegError
    from .infer import Predictor
    from .models import UNet
    from .train import fit


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'tumorseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """The public names and the dunders: not this file's helpers (importlib, TYPE_CHECKING) nor submodules."""
    return sorted({*__all__, *(n for n in globals() if n.startswith("__") and n.endswith("__"))})
