"""Cross-validate several training recipes at once, e.g. on a GPU machine that lacks the data.

usage:
  python scripts/cv_recipes.py pack --data ../shared/data/lgg --out lgg128.npz.xz
  python scripts/cv_recipes.py run --pack lgg128.npz.xz --device cuda --workers 10 --deadline 465 --out DIR
  python scripts/cv_recipes.py run ... --recipes R0-shipped,R5-empty0.25-e128 --folds 0,1,2
  python scripts/cv_recipes.py run ... --recipes R13-r5-size160 --folds 2 --merge earlier.json
  python scripts/cv_recipes.py compare OTHER.json benchmarks/results/cv/R13-r5-size160.json

`pack` writes the non-test patients of the default split as the network sees them in training
(uint8 slices resized to the model's input size) with their masks at their own size, lzma
compressed: about 43 MB for the 62 LGG patients, small enough to carry to a machine without
the data. It is a derived copy of the dataset: keep it out of git.

`run` trains every (recipe, fold) of `tumorseg train --folds 3` with `tumorseg.train.fit`, up to
`--workers` at once (one process each), and scores each fold's validation patients with the
fold's last checkpoint: per-patient Dice at their own size, threshold 0.5 and holes filled,
with and without the largest-3D-part step, plain and with flip TTA. The probabilities come from
the packed inputs and are resized to the masks' size, so they differ slightly from
`tumorseg evaluate`, which resizes the original slices itself. The per-epoch validation of
`fit` is skipped (it only picks best.safetensors). DIR/results.json is rewritten after each job;
a job still running at `--deadline` seconds (default: none) is killed, and none is started
that would not finish by then. Run again with the same `--tmp`, a killed job resumes from its
fold's last complete epoch; a fold trained there with other options is refused, not reused.
A result's train_s sums the time of every epoch (resumed ones too); wall_s is this call's.

`--merge` adds the folds of an earlier results.json (another session's, say) for the recipes run
now, and those folds are not trained again, so a CV can be finished across machines. A fold whose
patients are not this pack's fold, one trained with another `--extra`, or one that two merged files
hold differently is refused. Each result records its device and `--extra`. `compare A B` sets two
recipes side by side on the patients both have scored (pooled over the folds each file holds):
the means, on how many patients B is better or worse than A by more than 0.001, and the paired
difference with its 95 % bootstrap interval. A and B may each be several files, comma separated (one
recipe's folds trained in several runs), pooled. Keep each recipe's results.json in
benchmarks/results/cv/: per-patient scores are ours, and a machine's runs/ do not outlive it.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# each recipe changes BASE (below), the train defaults of R0; all cost about the same CPU time
# (epochs x (1 + empty_ratio) slices per tumor slice)
RECIPES: dict[str, dict] = {
    "R0-shipped": {},
    "R1-seed1": {"member": 1},
    "R2-empty0.5-e106": {"empty_ratio": 0.5, "epochs": 106},
    "R3-bce+dice": {"loss": "bce+dice"},
    "R4-lr2e-3": {"lr": 2e-3},
    "R5-empty0.25-e128": {"empty_ratio": 0.25, "epochs": 128},
    "R6-zoom0.2": {"zoom": 0.2},
    "R7-lr5e-4": {"lr": 5e-4},
    "R8-ema0.995": {"ema": 0.995},
    "R9-empty2-e53": {"empty_ratio": 2.0, "epochs": 53},
    "R10-empty0.1-e145": {"empty_ratio": 0.1, "epochs": 145},
    "R11-r5-zoom0.2": {"empty_ratio": 0.25, "epochs": 128, "zoom": 0.2},
    "R12-r5-tversky-slice": {"empty_ratio": 0.25, "epochs": 128, "loss": "bce+tversky-slice"},
    # 160x160 input; a step costs 1.45x one at 128 here, so 88 epochs keep R5's CPU time (needs a pack at 160)
    "R13-r5-size160": {"empty_ratio": 0.25, "epochs": 88, "model": {"image_size": 160}},
    "R14-r5-lr2e-3": {"empty_ratio": 0.25, "epochs": 128, "lr": 2e-3},
    "R15-missing0.2": {"missing_sequences": 0.2},
    "R16-r5-hard0.5": {"empty_ratio": 0.25, "epochs": 128, "hard_empty": 0.5},
    "R17-r5-seqjitter": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True},
    "R18-r17-dim0.5": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "dim_lesions": 0.5},
    "R19-r17-dim0.2": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "dim_lesions": 0.2},
    "R20-r17-bias0.3": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "bias_field": 0.3},
    # 2.5D: the FLAIR of the slice below and above as two more channels (the first conv only grows)
    "R21-r17-context1": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "model": {"context": 1}},
    # deep supervision: 1x1 heads on the 1/2, 1/4 and 1/8 decoder outputs, trained only (nnU-Net)
    "R22-r17-deepsup": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "deep_supervision": True},
    "R23-deepsup": {"deep_supervision": True},
    # a random monotone intensity curve per sequence in 25 % of cases (MONAI's RandHistogramShift model)
    "R24-r17-histshift0.25": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "histogram_shift": 0.25},
    # R17 with each patient's tumor slices weighted n**-0.5 (n: the patient's tumor slices)
    "R25-r17-balance0.5": {"empty_ratio": 0.25, "epochs": 128, "sequence_jitter": True, "patient_balance": 0.5},
    # the shipped recipe (R0) with R17's per-sequence brightness, contrast and gamma
    "R26-r0-seqjitter": {"sequence_jitter": True},
    # R26 with another seed (an ensemble's member 1 draws its own initial weights and batches)
    "R27-r26-seed1": {"sequence_jitter": True, "member": 1},
    # R26 with deep supervision (R23's heads): the two levers that passed out of fold, together
    "R28-r26-deepsup": {"sequence_jitter": True, "deep_supervision": True},
}
# the train defaults the recipes were written against (R0 is these): pinned, so that each recipe
# keeps its meaning, and its results files stay comparable, when the shipped defaults change
BASE: dict = {
    "epochs": 80, "empty_ratio": 1.0, "loss": "bce+tversky", "lr": 1e-3, "schedule": "cosine", "zoom": 0.1,
    "ema": 0.99, "sequence_jitter": False, "deep_supervision": False,
    "model": {"base": 16, "depth": 4, "image_size": 128, "channels": "all", "intensity": "percentile", "context": 0},
}  # fmt: skip


def recipe_config(recipe: str) -> dict:
    """BASE with the recipe's changes (its "model" entries merged into BASE's)."""
    changes = RECIPES[recipe]
    return {**BASE, **changes, "model": {**BASE["model"], **changes.get("model", {})}}


SCORES = ("plain_all", "plain_largest", "tta_all", "tta_largest")
# scored too since R15 (absent from older files): both T1 sequences replaced by FLAIR, largest part
STRESS = ("flair_largest",)
FOLDS = 3  # as `tumorseg train --folds 3`


def pack(data: Path, out: Path, size: int = 128, seed: int = 0, test_frac: float = 0.2) -> dict:
    """Write the non-test patients of `data` (split by `seed`, `test_frac`) to `out`."""
    from tumorseg.data.lgg import find_cases, load_case, split_cases
    from tumorseg.io import atomic_write_bytes

    cases = find_cases(data)
    by_id = {c.id: c for c in cases}
    keep = split_cases(list(by_id), seed, 0.0, test_frac)["train"]
    arrays: dict[str, np.ndarray] = {}
    for pid in keep:
        case = load_case(by_id[pid], size)
        arrays[f"img_{pid}"] = case.images
        arrays[f"full_{pid}"] = np.packbits(case.full_masks, axis=-1)
        arrays[f"width_{pid}"] = np.array(case.full_masks.shape[-1])
        arrays[f"names_{pid}"] = np.array([p.name for p in by_id[pid].images])
    meta = {"size": size, "seed": seed, "test_frac": test_frac, "all_ids": sorted(by_id), "packed": keep}
    arrays["meta"] = np.array(json.dumps(meta))
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out, lzma.compress(buf.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return meta


def unpacked_path(path: Path, tmp: Path) -> Path:
    """Where `unpack` puts the pack: named by its content's hash, so another pack never reuses it."""
    import hashlib

    return tmp / f"pack-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}.npz"


def unpack(path: Path, tmp: Path) -> Path:
    """Decompress the pack once into `tmp` (shared by the job processes)."""
    dest = unpacked_path(path, tmp)
    if not dest.exists():
        tmp.mkdir(parents=True, exist_ok=True)
        part = tmp / "pack.npz.part"
        part.write_bytes(lzma.decompress(path.read_bytes()))
        part.rename(dest)
    return dest


class PackedData:
    """The packed patients, served to training in place of its folder reader."""

    def __init__(self, npz: Path):
        from tumorseg.data.lgg import Case

        with np.load(npz) as f:
            self.arrays = dict(f)
        self.meta = json.loads(str(self.arrays["meta"]))
        packed = set(self.meta["packed"])
        self.cases = []
        for pid in self.meta["all_ids"]:  # every id, so the split is the one of the real folder
            names = self.arrays[f"names_{pid}"].tolist() if pid in packed else []
            masks = [n.rsplit(".", 1)[0] + "_mask." + n.rsplit(".", 1)[1] for n in names]
            self.cases.append(Case(pid, tuple(Path(pid, n) for n in names), tuple(Path(pid, n) for n in masks)))
        self.by_id = {c.id: c for c in self.cases}

    def load_case(self, case, size=None, channels: str = "all", intensity: str = "fixed"):
        """What `load_case(case, size)` gives for a packed patient (images at the packed size)."""
        from tumorseg.data.lgg import CaseArrays, masks_at

        if f"img_{case.id}" not in self.arrays:
            raise KeyError(f"{case.id} is not in the pack (a test patient?)")
        width = int(self.arrays[f"width_{case.id}"])
        full = np.unpackbits(self.arrays[f"full_{case.id}"], axis=-1, count=width).astype(bool)
        images = self.arrays[f"img_{case.id}"].copy()
        return CaseArrays(case.id, images, masks_at(full, self.meta["size"]), full, [p.stem for p in case.images])


def job(npz: Path, tmp: Path, recipe: str, fold: int, device: str, extra: dict) -> dict:
    """Train one fold of one recipe from the pack and score its validation patients."""
    import torch

    import tumorseg.members as members
    import tumorseg.runs as runs
    import tumorseg.train as train
    import tumorseg.validation as validation
    from tumorseg.checkpoint import build_model, load_checkpoint
    from tumorseg.config import validate_config
    from tumorseg.data.lgg import add_context, slice_numbers
    from tumorseg.data.transforms import resize
    from tumorseg.evaluation import MISSING, without_sequences
    from tumorseg.infer import keep_largest_3d, postprocess, slice_probabilities
    from tumorseg.metrics import confusion_counts, dice

    data = PackedData(npz)
    out = tmp / "runs" / f"{recipe}-f{fold}"
    cfg = {"data": str(npz), "out": str(out), "folds": FOLDS, "fold": fold, "device": device, "threads": 2,
           "seed": data.meta["seed"], "test_frac": data.meta["test_frac"]}  # fmt: skip
    cfg.update(recipe_config(recipe), **extra)
    cfg = validate_config(cfg, f"recipe {recipe}")
    m = cfg.model
    if m.image_size != data.meta["size"] or m.intensity == "volume" or m.channels != "all":
        raise SystemExit(f"recipe {recipe}: the pack holds 3-channel slices at {data.meta['size']}, as read for "
                         "intensity fixed/percentile")  # fmt: skip
    runs.find_cases = lambda root, limit=0, ids=None: data.cases[:limit] if limit else data.cases
    validation.load_case = data.load_case
    train.check_data = lambda root, **_: {"errors": [], "warnings": [], "skipped_folders": []}
    zeros = lambda model, cases, config, threshold=0.5: torch.zeros(len(cases), 4, dtype=torch.int64)  # noqa: E731
    train.validate_counts = members.validate_counts = zeros  # a run's validation, and an ensemble's
    train.plot_curves = lambda history, path: None
    resume = (out / "last.safetensors").exists()
    if resume:  # a fold cut off before; only the same options may continue it
        members.member_state(cfg)  # raises when it was trained with other options
        done = load_checkpoint(out / "last.safetensors").meta["train_state"]["epoch"]
        if done > cfg.epochs:
            raise SystemExit(f"{out}: trained {done} epochs, more than this recipe's {cfg.epochs}; use another --tmp")
    t0 = time.time()
    summary = train.fit(cfg, resume=resume, progress=False, log=lambda *a: None)
    wall_s = time.time() - t0
    ckpt = load_checkpoint(out / "last.safetensors")
    model = build_model(ckpt).to(device).to(memory_format=torch.channels_last)
    scores: dict[str, dict[str, float]] = {k: {} for k in (*SCORES, *STRESS)}
    for pid in ckpt.meta["split"]["val"]:
        case = data.load_case(data.by_id[pid])
        numbers = slice_numbers(data.by_id[pid].images)

        def context(images: np.ndarray) -> np.ndarray:  # 2.5D channels, as `tumorseg evaluate` adds them
            return add_context(images, m.context, m.channels, numbers)  # noqa: B023

        plain = slice_probabilities(model, m, context(case.images))
        flipped = slice_probabilities(model, m, context(case.images), flip=True)
        flair = slice_probabilities(model, m, context(without_sequences(case.images, MISSING["flair_only"])))
        for name, probs in (("plain", plain), ("tta", (plain + flipped) / 2), ("flair", flair)):
            probs = resize(torch.from_numpy(probs)[:, None], case.full_masks.shape[-2:])[:, 0].numpy()
            mask = postprocess(probs, 0.5)
            if f"{name}_all" in scores:
                scores[f"{name}_all"][pid] = dice(confusion_counts(mask, case.full_masks))
            scores[f"{name}_largest"][pid] = dice(confusion_counts(keep_largest_3d(mask), case.full_masks))
    last = summary.get("last", {})
    return {"recipe": recipe, "fold": fold, "device": device, "extra": extra,
            "train_s": summary.get("train_seconds", wall_s), "wall_s": wall_s, "epochs": summary.get("epochs_done"),
            "img_s": last.get("train_images_per_s"), "loss": last.get("train_loss"), "scores": scores,
            "means": {k: float(np.mean(list(v.values()))) for k, v in scores.items()}}  # fmt: skip


def aggregate(results: dict[str, dict], recipes: list[str], folds: int = FOLDS) -> dict:
    """Per recipe: the fold means, and once every fold is in, the pooled per-patient scores."""
    agg = {}
    for recipe in recipes:
        done = [results[k] for f in range(folds) if (k := f"{recipe}-f{f}") in results]
        if not done:
            continue
        entry: dict = {"folds_done": len(done), "fold_means": {r["fold"]: r["means"] for r in done},
                       "train_s": [round(r["train_s"]) for r in done]}  # fmt: skip
        if len(done) == folds:
            for k in (*SCORES, *(k for k in STRESS if all(k in r["scores"] for r in done))):
                pooled = {pid: d for r in done for pid, d in r["scores"][k].items()}
                vals = np.array(list(pooled.values()))
                entry[k] = {"mean": float(vals.mean()), "median": float(np.median(vals)), "min": float(vals.min()),
                            "under_0.5": int((vals < 0.5).sum()), "n": len(vals), "per_patient": pooled}  # fmt: skip
        agg[recipe] = entry
    return agg


def fold_patients(npz: Path, fold: int, folds: int = FOLDS) -> list[str]:
    """The validation patients of `fold`, as `tumorseg train --folds` deals them for this pack."""
    from tumorseg.data.lgg import split_cases

    with np.load(npz) as f:
        meta = json.loads(str(f["meta"]))
    return split_cases(meta["all_ids"], meta["seed"], 0.0, meta["test_frac"], folds=folds, fold=fold)["val"]


def read_results(path: str | Path) -> dict[str, dict]:
    """The fold results of a results.json that `run` wrote, checked so that a bad file names itself."""
    try:
        results = json.loads(Path(path).read_text())["results"]
        for key, r in results.items():
            if key != f"{r['recipe']}-f{r['fold']}":
                raise ValueError(f"{key} holds {r['recipe']} fold {r['fold']}")
            if not all(isinstance(r["scores"][k], dict) for k in SCORES):
                raise ValueError(f"{key} has no per-patient scores")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise SystemExit(f"{path}: not a results.json of this script ({type(e).__name__}: {e})") from e
    return results


def merged(paths: list[str], recipes: list[str], npz: Path, extra: dict) -> dict[str, dict]:
    """The fold results in earlier results.json files for `recipes`, refusing any fold that could not
    have come from this run: other patients, other --extra options, or two files that disagree."""
    found: dict[str, dict] = {}
    source: dict[str, str] = {}
    for path in paths:
        for key, r in read_results(path).items():
            if r["recipe"] not in recipes:
                continue
            if sorted(r["scores"]["plain_largest"]) != fold_patients(npz, r["fold"]):
                raise SystemExit(f"--merge {path}: {key} scored other patients than this pack's fold {r['fold']}")
            if r.get("extra", {}) != extra:  # files written before --extra was recorded ran with none
                raise SystemExit(f"--merge {path}: {key} was trained with --extra {json.dumps(r.get('extra', {}))}, "
                                 f"this run with {json.dumps(extra)}")  # fmt: skip
            if key in found and found[key] != r:
                raise SystemExit(f"--merge {path}: {key} differs from the {key} in {source[key]}; merge one of them")
            found[key], source[key] = r, path
    return found


def scored(path: Path, recipe: str | None, flag: str = "--a") -> tuple[str, dict[str, float]]:
    """One recipe's per-patient Dice (largest part), pooled over the folds in a results.json."""
    results = read_results(path)
    recipes = sorted({r["recipe"] for r in results.values()})
    if recipe is None and len(recipes) == 1:
        recipe = recipes[0]
    if recipe not in recipes:
        raise SystemExit(f"{path}: name one recipe of {recipes} with {flag}")
    pooled = {
        pid: d for r in results.values() if r["recipe"] == recipe for pid, d in r["scores"]["plain_largest"].items()
    }
    return recipe, pooled


def compare(a: dict[str, float], b: dict[str, float], tol: float = 1e-3) -> dict:
    """B against A on the patients both scored."""
    common = sorted(set(a) & set(b))
    if not common:
        raise SystemExit("the two results share no patient")
    diff = {pid: b[pid] - a[pid] for pid in common}
    from tumorseg.metrics import bootstrap_ci

    deltas = np.array(list(diff.values()))
    return {"n": len(common), "mean_a": float(np.mean([a[p] for p in common])),
            "mean_b": float(np.mean([b[p] for p in common])),
            "better": sum(d > tol for d in diff.values()), "worse": sum(d < -tol for d in diff.values()),
            "diff": float(deltas.mean()),
            "diff_ci95": list(bootstrap_ci(deltas)) if len(deltas) > 1 else [np.nan, np.nan],
            "moved": sorted(diff.items(), key=lambda kv: -abs(kv[1]))}  # fmt: skip


def scored_files(paths: str, recipe: str | None, flag: str) -> tuple[str, dict[str, float]]:
    """`scored` pooled over comma-separated results.json files (one recipe's folds from several runs)."""
    names, pooled = set(), {}
    for path in paths.split(","):
        name, scores = scored(Path(path), recipe, flag)
        names.add(name)
        if set(scores) & set(pooled):
            raise SystemExit(f"{path}: scores patients that another file of {paths} scores too")
        pooled.update(scores)
    if len(names) > 1:
        raise SystemExit(f"{paths}: hold different recipes {sorted(names)}; name one with {flag}")
    return names.pop(), pooled


def run(args) -> dict:
    from tumorseg.io import atomic_write_text

    t0 = time.time()
    out, tmp = Path(args.out), Path(args.tmp)
    out.mkdir(parents=True, exist_ok=True)
    try:
        folds = [int(f) for f in args.folds.split(",")]
    except ValueError:
        folds = []
    if not folds or any(f not in range(FOLDS) for f in folds):
        raise SystemExit(f"--folds {args.folds}: give folds of 0..{FOLDS - 1}, comma separated")
    try:
        extra = json.loads(args.extra)
    except ValueError as e:
        raise SystemExit(f"--extra {args.extra}: not JSON ({e})") from e
    recipes = args.recipes.split(",") if args.recipes else list(RECIPES)
    unknown = [r for r in recipes if r not in RECIPES]
    if unknown:
        raise SystemExit(f"unknown recipes {unknown}; known: {', '.join(RECIPES)}")
    npz = unpack(Path(args.pack), tmp)
    results = merged(args.merge, recipes, npz, extra)
    for key in results:
        print(f"merged {key} from --merge (not trained again)", flush=True)
    queue = [(r, f) for r in recipes for f in folds if f"{r}-f{f}" not in results]
    env = {**os.environ, "OMP_NUM_THREADS": "2", "CUBLAS_WORKSPACE_CONFIG": ":4096:8"}
    (tmp / "logs").mkdir(parents=True, exist_ok=True)
    running: dict[subprocess.Popen, tuple[str, int, float]] = {}
    failures: dict[str, str] = {}
    durations: list[float] = []

    def save() -> dict:
        doc = {"elapsed_s": time.time() - t0, "durations": durations, "failures": failures, "results": results,
               "aggregate": aggregate(results, recipes)}  # fmt: skip
        atomic_write_text(out / "results.json", json.dumps(doc, indent=1))
        return doc

    def collect() -> None:
        for p in [p for p in running if p.poll() is not None]:
            r, f, started = running.pop(p)
            key = f"{r}-f{f}"
            result = tmp / "jobs" / f"{key}.json"
            if p.returncode == 0 and result.exists():
                results[key] = json.loads(result.read_text())
                durations.append(time.time() - started)
                m = results[key]["means"]
                flair = f", FLAIR only {m['flair_largest']:.3f}" if "flair_largest" in m else ""
                print(f"{time.time() - t0:6.0f} s: done {key} in {durations[-1]:.0f} s: Dice largest part "
                      f"{m['plain_largest']:.3f}, all parts {m['plain_all']:.3f}, TTA {m['tta_largest']:.3f}{flair}",
                      flush=True)  # fmt: skip
            else:
                failures[key] = (tmp / "logs" / f"{key}.log").read_text()[-3000:]
                print(f"FAILED {key} (exit {p.returncode}):\n{failures[key][-1500:]}", flush=True)
            save()

    while queue or running:
        left = args.deadline - (time.time() - t0)
        typical = float(np.median(durations)) if durations else 0.0
        while queue and len(running) < args.workers and left > typical * 1.1:
            r, f = queue.pop(0)
            with open(tmp / "logs" / f"{r}-f{f}.log", "w") as log:  # the child keeps its own handle
                cmd = [sys.executable, __file__, "job", r, str(f), "--npz", str(npz), "--tmp", args.tmp,
                       "--device", args.device, "--extra", args.extra]  # fmt: skip
                running[subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)] = (r, f, time.time())
            print(f"{time.time() - t0:6.0f} s: start {r} fold {f}", flush=True)
        if left <= 0:
            collect()  # a job that ended in the last second still counts
            for p, (r, f, _) in running.items():
                p.kill()
                p.wait()
                failures[f"{r}-f{f}"] = "killed at the deadline"
            print(f"deadline: killed {len(running)} jobs; {len(queue)} never started", flush=True)
            break
        if not running and queue:
            print(f"{len(queue)} jobs not started: {left:.0f} s left, a job takes {typical:.0f} s", flush=True)
            break
        time.sleep(1)
        collect()
    doc = save()
    for recipe, e in doc["aggregate"].items():
        if "plain_largest" in e:
            s = e["plain_largest"]
            flair = f"  FLAIR only {e['flair_largest']['mean']:.3f}" if "flair_largest" in e else ""
            print(
                f"{recipe:20s} mean {s['mean']:.3f} median {s['median']:.3f} min {s['min']:.3f} "
                f"<0.5: {s['under_0.5']}  TTA {e['tta_largest']['mean']:.3f}  all parts {e['plain_all']['mean']:.3f}"
                f"{flair}"
            )
        else:
            print(f"{recipe:20s} {e['folds_done']} folds done")
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["pack", "run", "job", "compare"])
    ap.add_argument("recipe", nargs="?", help="(job) a recipe; (compare) results.json A (or A1,A2,...: pooled)")
    ap.add_argument("fold", nargs="?", help="(job) a fold; (compare) results.json B (or B1,B2,...: pooled)")
    ap.add_argument("--a", help="(compare) the recipe in A, when it holds several")
    ap.add_argument("--b", help="(compare) the recipe in B, when it holds several")
    ap.add_argument("--merge", action="append", default=[], help="(run) an earlier results.json; repeatable")
    ap.add_argument("--data", default="../shared/data/lgg")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--pack", default="lgg128.npz.xz")
    ap.add_argument("--npz", help="(job) the unpacked pack that `run` made")
    ap.add_argument("--tmp", default=os.environ.get("CV_TMP", "/tmp/cv_recipes"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--extra", default="{}", help="JSON merged into every recipe's config (tests: a tiny model)")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds (default: none)")
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--recipes", default="")
    ap.add_argument("--folds", default="0,1,2")
    ap.add_argument("--out", default=os.environ.get("OUT", "cv_recipes_out"))
    a = ap.parse_args()
    if a.mode == "pack":
        if not a.out.endswith(".npz.xz"):  # also stops a `--pack` meant as the destination writing the default
            ap.error(f"pack writes the file --out names, which must end in .npz.xz (got {a.out})")
        meta = pack(Path(a.data), Path(a.out), a.size, test_frac=a.test_frac)
        size = Path(a.out).stat().st_size / 1e6
        print(f"{a.out}: {len(meta['packed'])} of {len(meta['all_ids'])} patients, {size:.1f} MB")
    elif a.mode == "job":
        tmp = Path(a.tmp)
        fold = int(a.fold)
        res = job(Path(a.npz), tmp, a.recipe, fold, a.device, json.loads(a.extra))
        dest = tmp / "jobs" / f"{a.recipe}-f{fold}.json"
        dest.parent.mkdir(parents=True, exist_ok=True)
        from tumorseg.io import atomic_write_text

        atomic_write_text(dest, json.dumps(res))
    elif a.mode == "compare":
        if not (a.recipe and a.fold):
            ap.error("compare needs two results.json files")
        (ra, sa), (rb, sb) = scored_files(a.recipe, a.a, "--a"), scored_files(a.fold, a.b, "--b")
        c = compare(sa, sb)
        lo, hi = c["diff_ci95"]
        print("per-patient Dice: threshold 0.5, holes filled, largest 3D part, no TTA")
        print(f"{c['n']} patients scored by both: {ra} {c['mean_a']:.3f}, {rb} {c['mean_b']:.3f}; "
              f"{rb} better on {c['better']}, worse on {c['worse']} (by > 0.001)")  # fmt: skip
        print(f"paired difference {c['diff']:+.3f}, 95 % bootstrap interval [{lo:+.3f}, {hi:+.3f}] "
              "(10,000 resamples of the patients, seed 0)")  # fmt: skip
        for pid, d in c["moved"][:8]:
            print(f"  {pid}  {sa[pid]:.3f} -> {sb[pid]:.3f}  ({d:+.3f})")
    else:
        run(a)


if __name__ == "__main__":
    main()
