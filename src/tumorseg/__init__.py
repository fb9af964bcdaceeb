"""tumorseg: brain tumor segmentation in MRI with a U-Net."""

from .checkpoint import Checkpoint, build_model, load_checkpoint, save_checkpoint
from .config import ModelConfig, TrainConfig
from .data import find_cases, load_case, split_cases
from .errors import CheckpointError, DataError, TumorsegError
from .infer import Predictor
from .models import UNet
from .train import fit

__version__ = "0.1.0"

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
