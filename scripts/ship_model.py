"""Copy a run's checkpoint into weights/ as the shipped model: fp16 storage, no optimizer state,
plus its int8 ONNX graph beside it (calibrated on the checkpoint's own training patients).

usage: python scripts/ship_model.py runs/tv/last.safetensors weights/tumorseg-lgg-unet.safetensors [DATA]
DATA: the kaggle_3m folder it was trained on (default ../shared/data/lgg).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(src: str, dst: str, data: str = "../shared/data/lgg") -> None:
    from tumorseg.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from tumorseg.export import export_int8, int8_path

    ck = load_checkpoint(src)
    meta = {k: v for k, v in ck.meta.items() if k != "train_state"}
    meta["source"] = Path(src).name
    save_checkpoint(dst, Checkpoint(ck.config, ck.model, meta), half=True)
    print(f"{dst}: {Path(dst).stat().st_size / 1e6:.1f} MB (fp16 storage, fp32 compute)")
    graph = export_int8(dst, int8_path(dst), data)
    print(f"{graph}: {graph.stat().st_size / 1e6:.1f} MB (int8 convolutions, for --backend onnx-int8 and auto)")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python scripts/ship_model.py",
        description=(
            "Copy a run's checkpoint to DST as the shipped model: its weights (the EMA weights when EMA is on) "
            "stored in fp16 (they load and compute in fp32), with its config, metrics and split; what only "
            "--resume needs (optimizer state, raw weights, deep-supervision heads, train_state) is left out. "
            "Then write its int8 ONNX graph beside DST (<DST stem>.int8.onnx), calibrated on every 9th of the "
            "checkpoint's training patients in DATA, as `tumorseg export --int8` does."
        ),
        epilog="example: python scripts/ship_model.py runs/tv/last.safetensors weights/tumorseg-lgg-unet.safetensors",
    )
    ap.add_argument("src", metavar="SRC", help="the run's checkpoint, e.g. runs/tv/last.safetensors")
    ap.add_argument(
        "dst", metavar="DST", help="where to write the shipped weights, e.g. weights/tumorseg-lgg-unet.safetensors"
    )
    ap.add_argument(
        "data",
        metavar="DATA",
        nargs="?",
        default="../shared/data/lgg",
        help="the kaggle_3m folder the run was trained on, for the int8 calibration (default: %(default)s)",
    )
    return ap.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    main(args.src, args.dst, args.data)
