"""Copy a run's checkpoint into weights/ as the shipped model: fp16 storage, no optimizer state.

usage: python scripts/ship_model.py runs/ship/last.safetensors weights/tumorseg-lgg-unet.safetensors
"""

from __future__ import annotations

import sys
from pathlib import Path

from tumorseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint


def main(src: str, dst: str) -> None:
    ck = load_checkpoint(src)
    meta = {k: v for k, v in ck.meta.items() if k != "train_state"}
    meta["source"] = Path(src).name
    save_checkpoint(dst, Checkpoint(ck.config, ck.model, meta), half=True)
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB (fp16 storage, fp32 compute)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
