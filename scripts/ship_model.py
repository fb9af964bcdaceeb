"""Copy a run's checkpoint into weights/ as the shipped model: fp16 storage, no optimizer state,
plus its int8 ONNX graph beside it (calibrated on the checkpoint's own training patients).

usage: python scripts/ship_model.py runs/ship/last.safetensors weights/tumorseg-lgg-unet.safetensors [DATA]
DATA: the kaggle_3m folder it was trained on (default ../shared/data/lgg).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tumorseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from tumorseg.export import export_int8, int8_path


def main(src: str, dst: str, data: str = "../shared/data/lgg") -> None:
    ck = load_checkpoint(src)
    meta = {k: v for k, v in ck.meta.items() if k != "train_state"}
    meta["source"] = Path(src).name
    save_checkpoint(dst, Checkpoint(ck.config, ck.model, meta), half=True)
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB (fp16 storage, fp32 compute)")
    graph = export_int8(dst, int8_path(dst), data)
    print(f"{graph}: {graph.stat().st_size / 1e6:.1f} MB (int8 convolutions, for --backend onnx-int8 and auto)")


if __name__ == "__main__":
    main(*sys.argv[1:4])
