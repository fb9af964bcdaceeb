"""Training throughput of the default model: images/s, minutes per epoch, fraction of GEMM peak.

Compares plain fp32 (contiguous), channels_last (what `tumorseg train` uses), and bf16
autocast (on a CPU without native bf16 it is far slower; pass --bf16 to measure it).
usage: python benchmarks/bench_train.py [--steps 15] [--bf16] [--epoch-images 1616]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from common import cpu_features, cpu_line, gemm_peak

from tumorseg.config import TrainConfig
from tumorseg.infer import set_threads
from tumorseg.losses import make_loss
from tumorseg.models import UNet


def train_flops(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        loss_fn(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def measure(variant: str, cfg: TrainConfig, steps: int) -> dict:
    m = cfg.model
    torch.manual_seed(0)
    model = UNet(m.in_channels, 1, m.base, m.depth)
    x = torch.rand(cfg.batch_size, m.in_channels, m.image_size, m.image_size)
    y = (torch.rand(cfg.batch_size, 1, m.image_size, m.image_size) > 0.9).float()
    if variant != "fp32 contiguous":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    loss_fn = make_loss(cfg.loss)
    flops = train_flops(model, x, y, loss_fn)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.startswith("bf16")):
            loss = loss_fn(model(x).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t) / steps
    return {"images_per_s": cfg.batch_size / seconds, "gflops": flops / seconds / 1e9}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=15, help="timed training steps per fp32 variant (bf16: 2 steps)")
    ap.add_argument("--bf16", action="store_true", help="also measure bf16 autocast (very slow without native bf16)")
    ap.add_argument(
        "--epoch-images",
        type=int,
        default=1616,
        help="images trained on per epoch, for minutes per epoch (default %(default)s: the shipped recipe's epoch, "
        "815 tumor slices of the 62 training patients plus as many empty ones, in 101 full batches of 16)",
    )
    args = ap.parse_args()
    set_threads()
    cfg = TrainConfig()
    peak = gemm_peak()
    variants = ["fp32 contiguous", "fp32 channels_last"] + (["bf16 autocast channels_last"] if args.bf16 else [])
    rows = {}
    for v in variants:
        r = measure(v, cfg, args.steps if not v.startswith("bf16") else 2)
        r["minutes_per_epoch"] = args.epoch_images / r["images_per_s"] / 60
        r["fraction_of_gemm_peak"] = r["gflops"] / peak
        rows[v] = r
    result = {"machine": platform.processor() or platform.machine(), "cpu": cpu_features(),
              "threads": torch.get_num_threads(), "torch": torch.__version__, "gemm_peak_gflops": peak,
              "batch_size": cfg.batch_size,
              "image_size": cfg.model.image_size, "base": cfg.model.base, "variants": rows}  # fmt: skip
    out = Path(__file__).parent / "results" / f"train-{platform.node() or 'host'}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(cpu_line(result["cpu"]))
    print(f"fp32 GEMM peak {peak:.0f} GFLOP/s, {torch.get_num_threads()} threads, batch {cfg.batch_size}")
    print(f"{'variant':<30}{'img/s':>8}{'min/epoch':>11}{'GFLOP/s':>9}{'% peak':>8}")
    for v, r in rows.items():
        print(f"{v:<30}{r['images_per_s']:>8.1f}{r['minutes_per_epoch']:>11.2f}{r['gflops']:>9.1f}"
              f"{100 * r['fraction_of_gemm_peak']:>8.1f}")  # fmt: skip
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
