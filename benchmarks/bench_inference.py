"""Inference speed of every backend on the same real slices, against the machine's fp32 GEMM peak.

usage: python benchmarks/bench_inference.py [--data ../shared/data/lgg] [--weights CKPT] [--patient ID]
Writes benchmarks/results/inference-<host>.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
from common import cpu_features, cpu_line, gemm_peak

from tumorseg.checkpoint import build_model, load_checkpoint
from tumorseg.data.lgg import add_context, find_cases, load_case, select_channels, slice_number
from tumorseg.export import int8_path
from tumorseg.infer import Predictor, default_weights, onnx_available, resolve_backend, set_threads
from tumorseg.io import read_image, write_png
from tumorseg.metrics import confusion_counts, dice
from tumorseg.models import UNet


def model_flops(model: torch.nn.Module, channels: int, size: int) -> int:
    """FLOPs of one forward pass of one image (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, channels, size, size))
    return counter.get_total_flops()


def timed(fn, reps: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def eager_baseline(weights):
    """Plain eager PyTorch fp32: contiguous memory, no_grad, same preprocessing."""
    from tumorseg.data.transforms import preprocess, resize

    ckpt = load_checkpoint(weights)
    model, cfg = build_model(ckpt), ckpt.config.model

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(add_context(images, cfg.context, cfg.channels))
            p = torch.sigmoid(model(preprocess(x, cfg.image_size, cfg.intensity)))
            return resize(p, tuple(x.shape[-2:]))[:, 0].numpy()

    return run


def buda_unet():
    """Buda et al. 2019's 2D U-Net as their paper describes it: 4 poolings, 32 filters in the
    first block doubling per level, batch norm, 3 input channels at 256x256, no resizing.
    Random weights: only its speed is measured."""
    from tumorseg.data.transforms import scale_intensity

    model = UNet(3, 1, base=32, depth=4).eval().to(memory_format=torch.channels_last)

    def run(images: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            x = scale_intensity(torch.from_numpy(images[:, :3])).contiguous(memory_format=torch.channels_last)
            return torch.sigmoid(model(x))[:, 0].numpy()

    return run, model


def end_to_end(predict, case_dir: Path, channels: str, out_dir: Path) -> float:
    """Read every slice of a patient, preprocess, infer, resize back, write the masks."""
    t = time.perf_counter()
    files = sorted((p for p in case_dir.iterdir() if p.suffix in (".png", ".tif") and not p.stem.endswith("_mask")),
                   key=slice_number)  # fmt: skip
    images = np.stack([select_channels(read_image(p), channels, p) for p in files])
    probs = predict(images)
    for p, prob in zip(files, probs):
        write_png(out_dir / f"{p.stem}_pred.png", ((prob > 0.5) * 255).astype(np.uint8))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/lgg")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--patient", default="TCGA_CS_5395_19981004")
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    set_threads()
    weights = Path(args.weights or default_weights())
    ckpt = load_checkpoint(weights)
    channels = ckpt.config.model.channels
    case_dir = Path(args.data) / args.patient
    case = load_case(find_cases(case_dir)[0], None, channels)
    slices = case.images[: max(16, min(len(case.images), 32))]
    peak = gemm_peak()
    m = ckpt.config.model
    flops = model_flops(build_model(ckpt), m.in_channels, m.image_size)
    buda_run, buda_model = buda_unet()
    buda_flops = model_flops(buda_model, 3, 256)
    backends = {"eager fp32 (baseline)": (eager_baseline(weights), flops)}
    backends["torch (channels_last, inference_mode)"] = (
        partial(Predictor.from_checkpoint(weights, "torch").probabilities, volume=True),
        flops,
    )
    if onnx_available():
        onnx_fp32 = partial(Predictor.from_checkpoint(weights, "onnx").probabilities, volume=True)
        backends["onnx (ONNX Runtime, fp32)"] = (onnx_fp32, flops)
        if int8_path(weights).is_file():
            backends["onnx-int8 (ONNX Runtime, int8 convolutions)"] = (
                partial(Predictor.from_checkpoint(weights, "onnx-int8").probabilities, volume=True),
                flops,
            )
    backends["anchor: Buda et al. U-Net, base 32 at 256x256 (torch)"] = (buda_run, buda_flops)
    rows = {}
    reference = backends["eager fp32 (baseline)"][0](slices) > 0.5
    for name, (fn, flops) in backends.items():
        b1 = timed(lambda fn=fn: fn(slices[:1]), args.reps)
        b16 = timed(lambda fn=fn: fn(slices[:16]), max(3, args.reps // 6))
        with tempfile.TemporaryDirectory() as tmp:
            e2e = min(end_to_end(fn, case_dir, channels, Path(tmp)) for _ in range(3))
        ips16 = 16 / float(np.median(b16))
        rows[name] = {
            "images_per_s_batch1": 1 / float(np.median(b1)),
            "images_per_s_batch16": ips16,
            "latency_p50_ms": float(np.percentile(b1, 50) * 1e3),
            "latency_p99_ms": float(np.percentile(b1, 99) * 1e3),
            "patient_end_to_end_s": e2e,
            "gflops_batch16": ips16 * flops / 1e9,
            "fraction_of_gemm_peak": ips16 * flops / 1e9 / peak,
        }
        if not name.startswith("anchor"):  # how far its masks are from eager fp32's on the same slices
            rows[name]["mask_dice_vs_eager"] = dice(confusion_counts(fn(slices) > 0.5, reference))
    base = rows["eager fp32 (baseline)"]["images_per_s_batch16"]
    for r in rows.values():
        r["speedup_vs_eager"] = r["images_per_s_batch16"] / base
    result = {
        "machine": platform.processor() or platform.machine(),
        "cpu": cpu_features(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "gemm_peak_gflops": peak,
        "model_gflops_per_image": model_flops(build_model(ckpt), m.in_channels, m.image_size) / 1e9,
        "buda_gflops_per_image": buda_flops / 1e9,
        "weights": str(weights),
        "patient": args.patient,
        "patient_slices": len(case.images),
        "backends": rows,
        "default_backend": resolve_backend("auto", weights),
    }
    out = Path(__file__).parent / "results" / f"inference-{platform.node() or 'host'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(cpu_line(result["cpu"]))
    print(f"fp32 GEMM peak {peak:.0f} GFLOP/s; model {result['model_gflops_per_image']:.2f} GFLOP per 128x128 image; "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    head = f"{'backend':<56}{'img/s b1':>9}{'img/s b16':>10}{'p50 ms':>8}{'p99 ms':>8}{'patient s':>10}"
    head += f"{'x eager':>8}{'% peak':>7}{'mask Dice':>10}"
    print(head)
    for name, r in rows.items():
        print(f"{name:<56}{r['images_per_s_batch1']:>9.1f}{r['images_per_s_batch16']:>10.1f}{r['latency_p50_ms']:>8.1f}"
              f"{r['latency_p99_ms']:>8.1f}{r['patient_end_to_end_s']:>10.2f}{r['speedup_vs_eager']:>8.2f}"
              f"{100 * r['fraction_of_gemm_peak']:>7.1f}{r.get('mask_dice_vs_eager', np.nan):>10.4f}")  # fmt: skip
    print(f"default backend (auto): {result['default_backend']}; mask Dice: agreement with eager fp32's masks")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
