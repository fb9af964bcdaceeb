"""Score 3D post-processing settings on out-of-fold patients (closing, bridge-split parts, weak parts).

usage: python scripts/cv_3d_rules.py RUN_DIR... --data ../shared/data/lgg [--cache DIR] [--json OUT]
       [--closings 0,3,6] [--parts largest,bridge=0.1,...]

Each RUN_DIR was trained with `--folds K --fold i` (tumorseg train, or scripts/cv_recipes.py's
runs). Its last checkpoint predicts its own validation patients at their own size, once; the
probabilities are cached in --cache (float16, kept out of git: they are derived from the data).
Every setting thresholds at 0.5 and fills 2D holes, as the default does, then:

- close=r: per-slice binary closing with a disk of radius r px, holes filled again;
- parts=largest: the largest 26-connected 3D part (the default);
- parts=bridge=f: 3D parts built from each slice's 2D components, two components of neighbouring
  slices joined only when their overlap is at least f of the smaller one; the largest is kept;
- parts=weak=t: 2D components whose highest probability is under t are dropped, then the largest
  3D part is kept;
- parts=frac=f: every 26-connected 3D part holding at least f of the largest one's voxels is kept;
- parts=all: no 3D step.

Runs are grouped by recipe (the run folder's name without its `-f<fold>` suffix), and each
recipe's settings are compared with its default patient by patient. Rule and outcome:
benchmarks/results/cv/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

from tumorseg.checkpoint import load_checkpoint
from tumorseg.data.lgg import find_cases, load_case, slice_numbers
from tumorseg.infer import Predictor, drop_minor_components_3d, fill_holes, keep_largest_3d
from tumorseg.io import atomic_write_text
from tumorseg.metrics import confusion_counts, dice

CLOSINGS = (0, 3, 6)
PARTS = ("largest", "bridge=0.1", "bridge=0.25", "weak=0.8")
DEFAULT = "close=0 parts=largest"


def disk(radius: int) -> np.ndarray:
    y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def close_slices(mask: np.ndarray, radius: int) -> np.ndarray:
    """Per-slice binary closing with a disk, then 2D holes filled."""
    if radius <= 0:
        return mask
    pad = radius + 1  # so that closing near the border does not erode what touches it
    out = np.zeros_like(mask)
    for i, s in enumerate(mask):
        if s.any():
            p = np.pad(s, pad)
            out[i] = ndimage.binary_closing(p, structure=disk(radius))[pad:-pad, pad:-pad]
    return fill_holes(out | mask)


def slice_components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each slice's 8-connected components with ids unique over the stack (0 = background), and
    every id's pixel count."""
    labels = np.zeros(mask.shape, np.int64)
    offset = 0
    for i, s in enumerate(mask):
        lab, n = ndimage.label(s, structure=np.ones((3, 3)))
        labels[i] = np.where(lab > 0, lab + offset, 0)
        offset += n
    return labels, np.bincount(labels.ravel(), minlength=offset + 1)


def bridge_parts(mask: np.ndarray, fraction: float) -> np.ndarray:
    """Keep the largest 3D part, where 2D components of neighbouring slices belong to one part
    only when their overlap is at least `fraction` of the smaller component's pixels."""
    labels, sizes = slice_components(mask)
    n = len(sizes) - 1
    if n <= 1:
        return mask
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(labels[:-1], labels[1:]):
        both = (a > 0) & (b > 0)
        if not both.any():
            continue
        pairs, counts = np.unique(np.stack([a[both], b[both]]), axis=1, return_counts=True)
        for (i, j), c in zip(pairs.T, counts):
            if c >= fraction * min(sizes[i], sizes[j]):
                parent[root(int(i))] = root(int(j))
    roots = np.array([root(i) for i in range(n + 1)])
    part_sizes = np.bincount(roots[1:], weights=sizes[1:], minlength=n + 1)
    keep = part_sizes[roots] == part_sizes.max()
    keep[0] = False
    return keep[labels]


def drop_weak(mask: np.ndarray, probs: np.ndarray, floor: float) -> np.ndarray:
    """Drop 2D components whose highest probability is under `floor`."""
    labels, sizes = slice_components(mask)
    if len(sizes) <= 1:
        return mask
    peak = ndimage.maximum(probs, labels, index=np.arange(len(sizes)))
    keep = np.asarray(peak) >= floor
    keep[0] = False
    return keep[labels]


def apply(probs: np.ndarray, closing: int, parts: str) -> np.ndarray:
    mask = close_slices(fill_holes(probs > 0.5), closing)
    kind, _, value = parts.partition("=")
    if kind == "bridge":
        return bridge_parts(mask, float(value))
    if kind == "frac":
        return drop_minor_components_3d(mask, float(value))
    if kind == "all":
        return mask
    if kind == "weak":
        mask = drop_weak(mask, probs, float(value))
    return keep_largest_3d(mask)


def settings(closings=CLOSINGS, parts=PARTS) -> list[str]:
    return [f"close={c} parts={p}" for c, p in itertools.product(closings, parts)]


def score(probs: np.ndarray, truth: np.ndarray, closings=CLOSINGS, parts=PARTS) -> dict[str, float]:
    out = {}
    for c, p in itertools.product(closings, parts):
        out[f"close={c} parts={p}"] = dice(confusion_counts(apply(probs, c, p), truth))
    return out


def part_setting(text: str) -> str:
    kind, _, value = text.partition("=")
    if kind in ("largest", "all") and not value:
        return text
    if kind in ("bridge", "weak", "frac"):
        try:
            float(value)
            return text
        except ValueError:
            pass
    raise argparse.ArgumentTypeError(f"unknown parts setting {text!r} (largest, all, bridge=f, weak=t, frac=f)")


def pooled(results: dict[str, dict[str, dict[str, float]]], names: list[str]) -> dict[str, dict]:
    """Every setting against the default over all recipes' patients together (one row per
    recipe and patient)."""
    rows = [scores for per_patient in results.values() for scores in per_patient.values()]
    default = np.array([r[DEFAULT] for r in rows])
    out = {}
    for s in names:
        d = np.array([r[s] for r in rows]) - default
        out[s] = {"mean": float(default.mean() + d.mean()), "gain": float(d.mean()),
                  "better": int((d > 1e-3).sum()), "worse": int((d < -1e-3).sum()), "n": len(rows)}  # fmt: skip
    return out


def recipe_of(run: Path) -> str:
    return re.sub(r"-f\d+$", "", run.name)


def probabilities(run: Path, data: Path, cache: Path, log=print):
    """Yield (patient, truth, probabilities) for the run's validation patients, cached."""
    cases = {c.id: c for c in find_cases(data)}
    weights = run / "last.safetensors"
    ckpt = load_checkpoint(weights)
    predictor = None
    ids = ckpt.meta["split"]["val"]
    log(f"{run}: {len(ids)} validation patients")
    for pid in ids:
        case = load_case(cases[pid], None, ckpt.config.model.channels)
        path = cache / run.name / f"{pid}.npy"
        if path.exists():
            probs = np.load(path).astype(np.float32)
        else:
            predictor = predictor or Predictor.from_checkpoint(weights, "torch")
            numbers = slice_numbers(cases[pid].images)
            probs = predictor.probabilities(case.images, volume=True, numbers=numbers)
            path.parent.mkdir(parents=True, exist_ok=True)
            np.save(path.with_suffix(".tmp.npy"), probs.astype(np.float16))
            path.with_suffix(".tmp.npy").replace(path)
        yield pid, case.full_masks, probs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/cv_3d_rules"))
    ap.add_argument("--json", type=Path)
    ap.add_argument("--closings", type=lambda t: [int(v) for v in t.split(",")], default=list(CLOSINGS))
    ap.add_argument("--parts", type=lambda t: [part_setting(v) for v in t.split(",")], default=list(PARTS))
    args = ap.parse_args()
    names = settings(args.closings, args.parts)
    if DEFAULT not in names:
        ap.error(f"the settings must include the default ({DEFAULT}): --closings with 0, --parts with largest")
    t0 = time.perf_counter()
    results: dict[str, dict[str, dict[str, float]]] = {}
    for run in args.runs:
        rec = results.setdefault(recipe_of(run), {})
        for pid, truth, probs in probabilities(run, args.data, args.cache):
            rec[pid] = score(probs, truth, args.closings, args.parts)
    print(f"{time.perf_counter() - t0:.0f} s")
    summary = {}
    for recipe, per_patient in results.items():
        pids = sorted(per_patient)
        table = {s: np.array([per_patient[p][s] for p in pids]) for s in names}
        default = table[DEFAULT]
        print(f"\n{recipe}: {len(pids)} out-of-fold patients")
        print(f"{'setting':28s} {'mean':>6s} {'median':>6s} {'min':>6s} {'vs default':>10s} {'better/worse':>12s}")
        summary[recipe] = {}
        for s in names:
            v, d = table[s], table[s] - default
            better, worse = int((d > 1e-3).sum()), int((d < -1e-3).sum())
            summary[recipe][s] = {"mean": float(v.mean()), "gain": float(d.mean()), "better": better, "worse": worse}
            line = f"{s:28s} {v.mean():6.4f} {np.median(v):6.4f} {v.min():6.3f} {d.mean():+10.4f}"
            print(f"{line} {better:>5d}/{worse:<5d}")
            moved = [f"{p} {default[i]:.3f}->{v[i]:.3f}" for i, p in enumerate(pids) if abs(d[i]) >= 0.05]
            if moved and s != DEFAULT:
                print(f"    moved by >= 0.05: {', '.join(moved)}")
    together = pooled(results, names)
    if len(results) > 1:
        print(f"\nall recipes together: {together[DEFAULT]['n']} rows")
        for s in names:
            r = together[s]
            print(f"{s:28s} {r['mean']:6.4f} {r['gain']:+10.4f} {r['better']:>5d}/{r['worse']:<5d}")
    passing = [
        s
        for s in names
        if s != DEFAULT and all(r[s]["gain"] >= 0.005 and r[s]["better"] >= r[s]["worse"] for r in summary.values())
    ]
    best = max(passing, key=lambda s: np.mean([r[s]["mean"] for r in summary.values()]), default=None)
    print(f"\nsession 23's rule (each recipe +0.005, better >= worse) passes: {passing or 'none'}; chosen: {best}")
    if args.json:
        out = {"runs": [str(r) for r in args.runs], "summary": summary, "pooled": together, "passing": passing,
               "chosen": best, "per_patient": results}  # fmt: skip
        atomic_write_text(args.json, json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
