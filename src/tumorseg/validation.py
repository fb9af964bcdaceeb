"""Patients decoded for training, and the per-patient validation Dice a run is judged by."""

from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from .config import ModelConfig, TrainConfig
from .data.lgg import CaseArrays, add_context, load_case
from .infer import slice_probabilities
from .metrics import Counts, confusion_counts, dice
from .models import UNet


def load_cases(
    cfg: TrainConfig, ids: list[str], cases_by_id: dict, desc: str, native: bool = False, progress: bool = True
) -> list[CaseArrays]:
    """Decode patients once: at the model's size for training, or at their own size (`native`),
    with the neighbouring slices' FLAIR as extra channels when the model takes context."""
    m = cfg.model
    size = None if native else m.image_size
    cases = []
    for i in tqdm(ids, desc=desc, leave=False, disable=not progress):
        case = load_case(cases_by_id[i], size, m.channels, m.intensity)
        case.images = add_context(case.images, m.context, m.channels, case.numbers)
        cases.append(case)
    return cases


def validate_counts(model: UNet, cases: list[CaseArrays], config: ModelConfig, threshold: float = 0.5) -> torch.Tensor:
    """Confusion counts (tp, fp, fn, tn) per patient, int64 (P, 4), at each patient's original size.

    The slices go through the same path as `evaluate` (preprocess the original slice,
    infer, resize the probabilities back), so the validation Dice equals its score.
    """
    counts = torch.zeros(len(cases), 4, dtype=torch.int64)
    for i, case in enumerate(cases):
        probs = slice_probabilities(model, config, case.images)
        counts[i] = torch.tensor(confusion_counts(probs > threshold, case.full_masks))
    return counts


def dice_summary(ids: list[str], counts: torch.Tensor) -> dict:
    per_patient = {pid: dice(Counts(*map(int, c))) for pid, c in zip(ids, counts)}
    values = list(per_patient.values())
    return {
        "val_dice": float(np.mean(values)) if values else float("nan"),
        "val_dice_median": float(np.median(values)) if values else float("nan"),
        "val_per_patient": per_patient,
    }
