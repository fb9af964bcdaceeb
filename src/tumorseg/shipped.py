"""Where the shipped model lives, found without importing PyTorch: a wheel carries it in the
package (setup.py copies it there), a source checkout in weights/."""

from __future__ import annotations

from pathlib import Path

_PACKAGED = Path(__file__).resolve().parent / "weights"
WEIGHTS_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "weights"
DEFAULT_WEIGHTS = WEIGHTS_DIR / "tumorseg-lgg-unet.safetensors"
MODEL_CARD = WEIGHTS_DIR / "MODEL_CARD.md"
LICENSE = "CC BY-NC-SA 4.0, non-commercial"
