"""Losses on logits: BCE, BCE plus soft Dice, and BCE plus soft Tversky."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Tversky weights for false positives and false negatives (Salehi et al. 2017): misses cost more.
TVERSKY_FP, TVERSKY_FN = 0.3, 0.7


def soft_dice(probs: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - soft Dice over the whole batch (one score for all pixels; smooth `eps`)."""
    inter = (probs * target).sum()
    return 1 - (2 * inter + eps) / (probs.sum() + target.sum() + eps)


def soft_tversky(
    probs: torch.Tensor, target: torch.Tensor, fp: float = TVERSKY_FP, fn: float = TVERSKY_FN, eps: float = 1.0
) -> torch.Tensor:
    """1 - soft Tversky index TP / (TP + fp*FP + fn*FN) over the whole batch; fp = fn = 0.5 is soft Dice."""
    tp = (probs * target).sum()
    fps = (probs * (1 - target)).sum()
    fns = ((1 - probs) * target).sum()
    return 1 - (tp + eps) / (tp + fp * fps + fn * fns + eps)


class BCEOverlapLoss(nn.Module):
    """BCE with logits, plus `dice_weight` * an overlap loss (soft Dice, or soft Tversky when `tversky`)."""

    def __init__(self, dice_weight: float = 1.0, tversky: bool = False):
        super().__init__()
        self.dice_weight = dice_weight
        self.tversky = tversky

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = F.binary_cross_entropy_with_logits(logits, target)
        if self.dice_weight:
            overlap = soft_tversky if self.tversky else soft_dice
            loss = loss + self.dice_weight * overlap(torch.sigmoid(logits), target)
        return loss


def make_loss(name: str) -> nn.Module:
    """`bce`, `bce+dice` or `bce+tversky` (FP weight 0.3, FN weight 0.7)."""
    return BCEOverlapLoss(0.0 if name == "bce" else 1.0, tversky=name == "bce+tversky")
