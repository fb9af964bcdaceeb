"""Pool the out-of-fold validation Dice of a k-fold cross-validation (one run per fold).

usage: python scripts/cv_summary.py runs/cv-0 runs/cv-1 runs/cv-2 [--json OUT]

Each run was trained with `tumorseg train --folds K --fold i` (the same K, seed and recipe;
checked, with the runs' split.json: one test set, validation sets apart).
Its last epoch scored its validation patients per patient at their own size; together the
folds score every non-test patient once, with a model that never trained on it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from tumorseg.config import load_config
from tumorseg.io import atomic_write_text

HOW_IT_RAN = {"out", "fold", "data", "workers", "threads", "device", "precision", "schema_version"}


def check_one_cv(runs: list[Path], configs: list) -> None:
    """The runs are folds of one cross-validation: one recipe and seed (all but how each ran), the
    same test patients and pool, validation sets apart. Folds of runs with another seed or
    --max-patients hold other test patients, and pooling them scored test patients as out-of-fold."""
    recipes = [c.model_dump(mode="json", exclude=HOW_IT_RAN) for c in configs]
    differ = sorted(k for k in recipes[0] if any(r[k] != recipes[0][k] for r in recipes))
    if differ:
        raise SystemExit(f"the runs differ in {', '.join(differ)}: pool the folds of one recipe and seed")
    missing = [str(r) for r in runs if not (r / "split.json").is_file()]
    if missing:
        raise SystemExit(f"no split.json in {', '.join(missing)}: not a finished tumorseg training run")
    splits = [json.loads((r / "split.json").read_text()) for r in runs]
    if any(set(s["test"]) != set(splits[0]["test"]) for s in splits):
        raise SystemExit("the runs hold different test patients: pool the folds of one split")
    if any(set(s["train"]) | set(s["val"]) != set(splits[0]["train"]) | set(splits[0]["val"]) for s in splits):
        raise SystemExit("the runs split different patients into folds: pool the folds of one split")
    seen: dict[str, Path] = {}
    for run, s in zip(runs, splits):
        for pid in s["val"]:
            if pid in seen:
                raise SystemExit(f"{pid} is validated by both {seen[pid]} and {run}: folds must not overlap")
            seen[pid] = run


def pool(runs: list[Path]) -> dict:
    configs = [load_config(r / "config.json") for r in runs]
    folds = {c.folds for c in configs}
    if len(folds) != 1 or 0 in folds:
        raise SystemExit(f"runs must share one --folds K > 0; got {sorted(folds)}")
    seen = sorted(c.fold for c in configs)
    if len(set(seen)) != len(seen):
        raise SystemExit(f"a fold is given twice: {seen}")
    check_one_cv(runs, configs)
    per_patient: dict[str, float] = {}
    for run, cfg in zip(runs, configs):
        lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
        last = lines[-1] if lines else {}
        if "val_per_patient" not in last:
            raise SystemExit(f"{run}: no validation scores in metrics.jsonl (trained with --folds?)")
        if last["epoch"] != cfg.epochs:
            raise SystemExit(f"{run}: stopped at epoch {last['epoch']} of {cfg.epochs}")
        per_patient.update(last["val_per_patient"])
    values = np.array(list(per_patient.values()))
    return {
        "folds": folds.pop(),
        "runs_given": seen,
        "patients": len(values),
        "dice_mean": float(values.mean()),
        "dice_median": float(np.median(values)),
        "dice_min": float(values.min()),
        "per_patient": per_patient,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    result = pool(args.runs)
    print(f"folds {result['runs_given']} of {result['folds']}: {result['patients']} out-of-fold patients, "
          f"per-patient Dice mean {result['dice_mean']:.3f}, median {result['dice_median']:.3f}, "
          f"min {result['dice_min']:.3f}")  # fmt: skip
    if args.json:
        atomic_write_text(args.json, json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
